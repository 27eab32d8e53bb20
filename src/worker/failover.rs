//! A failover: elect the best replica of a down master, promote it, re-point the others.
//!
//! The steps follow Redis Sentinel's rules, keeping to commands LedisDB also has:
//!
//! 1. `hooks`: run the before-failover hooks (a veto aborts);
//! 2. `info`: ask every replica for `INFO` in parallel;
//! 3. `elect`: if a replica still has its link to the master up, the master may be
//!    alive (stalled, or cut off only from us): abort. Else choose by Sentinel's rules
//!    (`redis/election.rs`);
//! 4. `begin`: record failover-begin through the broker, so a new leader knows;
//! 5. `promote`: `SLAVEOF NO ONE` on the elected replica, then `ROLE` until it says
//!    master. A replica that refuses, or is not master within the promotion timeout, is
//!    passed over for the next in election order, recorded first with another `begin`
//!    (`promotion.rs`);
//! 6. `repoint`: `SLAVEOF <new master>` on every other replica (those passed over
//!    included), in parallel;
//! 7. `record`: failover-end (the group's master is now the new one), then the
//!    after-failover hooks.
//!
//! Every attempt ends in a [`FailoverRecord`] that the API and the log show, with one
//! log line per step (see `attempt.rs`). A new leader that finds a failover-begin with
//! no end finishes that failover with the replica it names ([`Resume`]), and moves on
//! to the next candidates only if that one answers and cannot be promoted.

use super::WorkerContext;
use super::attempt::{Attempt, Kind};
use super::failover_request::Stop;
use super::fault;
use super::promotion::{describe, promote_in_order, promoted, try_candidate};
use crate::address::Addr;
use crate::broker::{Action, FailoverRecord, Outcome, PassedOver};
use crate::observe::status::WatchState;
use crate::redis::{ReplicaReport, Role, elect, is_same_server, master_seen_alive};

pub use super::failover_request::{FailoverRequest, Resume};

type Steps = std::result::Result<(), Stop>;

/// Runs one failover attempt from start to end and records it through the broker.
pub fn run(ctx: &WorkerContext, req: &FailoverRequest) -> FailoverRecord {
    let down_for_ms = down_for(ctx, req).as_millis() as u64;
    let kind = if req.manual {
        Kind::ManualFailover
    } else {
        Kind::Failover
    };
    let mut at = Attempt::start(ctx, kind, &req.group, &req.master, down_for_ms);
    log::warn!(
        "group {}: failover of master {} begins ({down_for_ms} ms without a successful check; replicas: {})",
        req.group,
        req.master,
        list(&req.replicas)
    );
    ctx.observed
        .update(&req.group, |o| o.state = WatchState::FailingOver);
    let steps = match &req.resume {
        Some(resume) => {
            at.record.started_at_ms = resume.started_at_ms;
            at.record.begun = true;
            resume_steps(ctx, req, &resume.new_master, &mut at)
        }
        None => fresh_steps(ctx, req, &mut at),
    };
    match steps {
        Ok(()) => {}
        Err(Stop::End(outcome, reason)) => {
            at.record.outcome = outcome;
            at.record.reason = Some(reason);
        }
        Err(Stop::Abandon(reason)) => {
            log::warn!(
                "group {}: failover abandoned after {} ms: {reason}",
                req.group,
                at.elapsed_ms()
            );
            at.record.reason = Some(reason);
            return at.record;
        }
    }
    // Whether or not the record reached the broker, the servers are in their new roles.
    let _ = at.record_end(ctx);
    at.announce(ctx);
    at.record
}

/// A failover this daemon starts: elect, record the begin, promote (in election order),
/// re-point.
fn fresh_steps(ctx: &WorkerContext, req: &FailoverRequest, at: &mut Attempt) -> Steps {
    ctx.hooks
        .run_before(&req.group, &req.master)
        .map_err(|reason| {
            at.fail(
                "hooks",
                Outcome::Aborted,
                format!("vetoed by a before-failover hook: {reason}"),
            )
        })?;
    at.step("hooks", "no veto");
    if req.replicas.is_empty() {
        // Perhaps this daemon started while the master was down: nothing is known yet,
        // so nothing is given up either; tried again after another window.
        return Err(at
            .fail(
                "info",
                Outcome::Aborted,
                "no replicas known: the master listed none in its last ROLE reply (or never answered)"
                    .into(),
            )
            .into());
    }
    let (order, reports) = rank(ctx, req, &req.replicas, at)?;
    let Some(first) = order.first() else {
        return Err(at
            .fail("elect", Outcome::Failed, "no candidate".into())
            .into());
    };
    let vetoed = |reason: String| format!("vetoed before promoting {first}: {reason}");
    match ctx.hooks.run_before_promote(&req.group, &req.master, first) {
        Ok(false) => {}
        Ok(true) => at.step("veto", &format!("no veto of {first}")),
        Err(reason) => return Err(at.fail("veto", Outcome::Aborted, vetoed(reason)).into()),
    }
    begin(ctx, req, first, at)?;
    let chosen = promote_in_order(ctx, req, at, &order, Vec::new(), true)?;
    at.record.new_master = Some(chosen.clone());
    note_lag(req, &reports, &chosen, at);
    repoint_step(ctx, req, &reports, &chosen, at);
    at.record.outcome = Outcome::Succeeded;
    Ok(())
}

/// The `repoint` step, the same for a fresh failover and one a new leader finishes:
/// `SLAVEOF <chosen>` on the replicas [`repoint_targets`] names.
fn repoint_step(
    ctx: &WorkerContext,
    req: &FailoverRequest,
    reports: &[ReplicaReport],
    chosen: &Addr,
    at: &mut Attempt,
) {
    let others = repoint_targets(req, reports, chosen);
    let failures = ctx.servers.repoint(&others, chosen);
    let detail = if failures.is_empty() {
        format!("{} replica(s) now replicate from {chosen}", others.len())
    } else {
        failures.join("; ")
    };
    at.step("repoint", &detail);
    if !failures.is_empty() {
        at.note(format!("not re-pointed: {}", failures.join("; ")));
    }
}

/// Asks `replicas` for `INFO` and ranks them by Sentinel's rules (the `info` and
/// `elect` steps): the candidates, best first, with the reports.
fn rank(
    ctx: &WorkerContext,
    req: &FailoverRequest,
    replicas: &[Addr],
    at: &mut Attempt,
) -> Result<(Vec<Addr>, Vec<ReplicaReport>), Stop> {
    let reports = ctx.servers.infos(replicas);
    at.step("info", &describe_reports(&reports));
    if let Some(witness) = master_seen_alive(&req.master, &reports, ctx.fresh_io) {
        let reason = format!(
            "replica {witness} still reports master_link_status:up to {}, and heard from it within {} s",
            req.master,
            ctx.fresh_io.as_secs()
        );
        return Err(at.fail("elect", Outcome::Aborted, reason).into());
    }
    let order =
        elect(&req.master, &reports, down_for(ctx, req), ctx.max_down_time).map_err(|why| {
            // Replicas this daemon cannot reach at all (down too, a network or certificate
            // problem) may be reachable after the next window, and nothing has changed:
            // stop and try again. Replicas that answer and do not qualify need a person.
            let outcome = if reports.iter().all(|r| r.info.is_err()) {
                Outcome::Aborted
            } else {
                Outcome::Failed
            };
            at.fail(
                "elect",
                outcome,
                format!("no replica can be promoted: {why}"),
            )
        })?;
    let chosen = order.first().map(Addr::to_string).unwrap_or_default();
    at.step(
        "elect",
        &format!("candidates in order: {}; chose {chosen}", list(&order)),
    );
    Ok((order, reports))
}

/// Warns when the promoted replica had not received everything the master last
/// reported.
fn note_lag(req: &FailoverRequest, reports: &[ReplicaReport], chosen: &Addr, at: &mut Attempt) {
    let behind = reports
        .iter()
        .find(|r| r.addr == *chosen)
        .and_then(|r| r.info.as_ref().ok())
        .map_or(0, |info| req.master_offset.saturating_sub(info.offset));
    if behind > 0 {
        log::warn!(
            "group {}: {chosen} is {behind} bytes behind the master's last known offset; writes acknowledged since may be lost",
            req.group
        );
        at.note(format!(
            "promoted replica was {behind} bytes behind the master's last known offset"
        ));
    }
}

/// Records failover-begin; afterwards only a daemon that still acts may promote.
fn begin(ctx: &WorkerContext, req: &FailoverRequest, chosen: &Addr, at: &mut Attempt) -> Steps {
    ctx.broker
        .propose(Action::FailoverBegin {
            group: req.group.clone(),
            old_master: req.master.clone(),
            new_master: chosen.clone(),
            replicas: req.replicas.clone(),
            started_at_ms: at.record.started_at_ms,
            passed_over: Vec::new(),
        })
        .map_err(|e| {
            at.fail(
                "begin",
                Outcome::Aborted,
                format!("cannot record failover-begin: {e}"),
            )
        })?;
    at.record.begun = true;
    at.step("begin", "recorded");
    fault::pause_if_set(fault::PAUSE_AFTER_BEGIN, ctx.clock.as_ref());
    if !ctx.broker.is_acting() {
        return Err(Stop::Abandon(format!(
            "this daemon lost the cluster's leadership after failover-begin and did not promote {chosen}; the new leader finishes the failover"
        )));
    }
    Ok(())
}

/// The replicas of the request to point at `chosen`: all but `chosen`, except those
/// that reported replicating from a server other than the old master (the replicated
/// state remembers every replica a master ever listed; one an operator has moved to
/// another master since is not taken back). Replicas that could not be asked, or claim
/// master (a candidate passed over), are re-pointed.
fn repoint_targets(req: &FailoverRequest, reports: &[ReplicaReport], chosen: &Addr) -> Vec<Addr> {
    let elsewhere = |addr: &Addr| {
        reports.iter().any(|r| {
            r.addr == *addr
                && r.info.as_ref().is_ok_and(|info| {
                    info.role != "master"
                        && info
                            .master
                            .as_deref()
                            .is_some_and(|m| !is_same_server(m, &req.master))
                })
        })
    };
    req.replicas
        .iter()
        .filter(|a| *a != chosen && !elsewhere(a))
        .cloned()
        .collect()
}

/// Finishes a failover that an earlier leader began (its failover-begin is committed,
/// its failover-end is not). The replica it names is the only one that may become
/// master now: promoted already, it is kept; still a replica while the old master is
/// down, it is promoted now; silent, nothing is promoted and the group is marked failed,
/// since another replica could make two masters. Only when it answers and cannot be
/// promoted does the attempt move on to the next candidates, as a fresh one would.
fn resume_steps(
    ctx: &WorkerContext,
    req: &FailoverRequest,
    chosen: &Addr,
    at: &mut Attempt,
) -> Steps {
    at.step(
        "resume",
        &format!("an earlier leader began this failover to {chosen} and did not finish it"),
    );
    let passed = passed_so_far(ctx, req, at.record.started_at_ms);
    let winner = match ctx.servers.role(chosen) {
        Ok(Role::Master { .. }) => {
            at.step("promote", &format!("{chosen} is master already"));
            at.record.passed_over = passed;
            chosen.clone()
        }
        Ok(_) => {
            if let Ok(Role::Master { .. }) = ctx.servers.role(&req.master) {
                let reason = format!(
                    "an earlier leader chose {chosen} but never promoted it, and the old master {} is up again",
                    req.master
                );
                at.record.passed_over = passed;
                return Err(at.fail("promote", Outcome::Aborted, reason).into());
            }
            resume_promotion(ctx, req, chosen, passed, at)?
        }
        Err(e) => {
            let reason = format!(
                "an earlier leader chose {chosen}, which does not answer ({e}): it may or may not be master, so no other replica is promoted"
            );
            at.record.passed_over = passed;
            return Err(at.fail("promote", Outcome::Failed, reason).into());
        }
    };
    at.record.new_master = Some(winner.clone());
    // Asked afresh, so that a replica an operator moved to another master is left
    // there, as a fresh failover leaves it (this path re-pointed every replica before).
    let others: Vec<Addr> = req
        .replicas
        .iter()
        .filter(|a| **a != winner)
        .cloned()
        .collect();
    let reports = ctx.servers.infos(&others);
    repoint_step(ctx, req, &reports, &winner, at);
    at.record.outcome = Outcome::Succeeded;
    at.note("finished by a new leader after the earlier one stopped mid-failover".into());
    Ok(())
}

/// Promotes the replica an earlier leader named; should it refuse (or stay a replica),
/// ranks the replicas not tried yet and goes on with them.
fn resume_promotion(
    ctx: &WorkerContext,
    req: &FailoverRequest,
    chosen: &Addr,
    mut passed: Vec<PassedOver>,
    at: &mut Attempt,
) -> Result<Addr, Stop> {
    match try_candidate(ctx, at, chosen, true) {
        Ok(()) => return Ok(promoted(at, chosen, passed)),
        Err(passed_over) => passed.push(passed_over),
    }
    let rest: Vec<Addr> = req
        .replicas
        .iter()
        .filter(|a| !passed.iter().any(|p| p.addr == **a))
        .cloned()
        .collect();
    let ranked = rank(ctx, req, &rest, at).map_err(|stop| match stop {
        Stop::End(outcome, reason) => Stop::End(
            outcome,
            format!(
                "{chosen}, chosen by an earlier leader, could not be promoted, and {reason}; passed over: {}",
                describe(&passed)
            ),
        ),
        abandon => abandon,
    });
    let order = match ranked {
        Ok((order, _)) => order,
        Err(stop) => {
            at.record.passed_over = passed;
            return Err(stop);
        }
    };
    promote_in_order(ctx, req, at, &order, passed, false)
}

/// The candidates this attempt passed over before this daemon took it up, as its
/// replicated failover-begin lists them.
fn passed_so_far(
    ctx: &WorkerContext,
    req: &FailoverRequest,
    started_at_ms: u64,
) -> Vec<PassedOver> {
    match ctx.broker.state().in_progress.get(&req.group) {
        Some(Action::FailoverBegin {
            started_at_ms: at,
            passed_over,
            ..
        }) if *at == started_at_ms => passed_over.clone(),
        _ => Vec::new(),
    }
}

/// How long the master has gone without a successful check, on the worker's clock.
fn down_for(ctx: &WorkerContext, req: &FailoverRequest) -> std::time::Duration {
    ctx.clock.now().saturating_duration_since(req.last_success)
}

fn describe_reports(reports: &[ReplicaReport]) -> String {
    reports
        .iter()
        .map(|r| match &r.info {
            Ok(i) => format!(
                "{} (priority {}, offset {}, link {})",
                r.addr,
                i.priority,
                i.offset,
                if i.link_up { "up" } else { "down" }
            ),
            Err(e) => format!("{} unreachable: {e}", r.addr),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn list(addrs: &[Addr]) -> String {
    if addrs.is_empty() {
        return "none".into();
    }
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::redis::ReplicationInfo;
    use std::time::Instant;

    fn addr(port: u16) -> Addr {
        Addr::parse(&format!("127.0.0.1:{port}")).unwrap()
    }

    fn report(port: u16, role: &str, master: Option<&str>) -> ReplicaReport {
        ReplicaReport {
            addr: addr(port),
            info: Ok(ReplicationInfo {
                role: role.into(),
                master: master.map(String::from),
                link_up: false,
                link_down_secs: Some(1),
                last_io_secs: None,
                priority: 100,
                offset: 0,
                run_id: None,
                replicas: Vec::new(),
                ledisdb_version: None,
            }),
        }
    }

    #[test]
    fn replicas_moved_to_another_master_are_not_repointed() {
        let req = FailoverRequest {
            group: "g".into(),
            master: addr(1),
            replicas: (2..=6).map(addr).collect(),
            last_success: Instant::now(),
            master_offset: 0,
            watch_id: 0,
            resume: None,
            manual: false,
        };
        let reports = [
            report(2, "slave", Some("127.0.0.1:1")),
            report(3, "slave", Some("localhost:1")),
            report(4, "slave", Some("127.0.0.1:9")),
            report(5, "master", None),
            ReplicaReport {
                addr: addr(6),
                info: Err(Error::Server("refused".into())),
            },
        ];
        let ports: Vec<u16> = repoint_targets(&req, &reports, &addr(2))
            .iter()
            .map(|a| a.port)
            .collect();
        assert_eq!(ports, vec![3, 5, 6]);
    }
}
