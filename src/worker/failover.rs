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
//! 5. `promote`: `SLAVEOF NO ONE` on the elected replica, then `ROLE` until it says master;
//! 6. `repoint`: `SLAVEOF <new master>` on every other replica, in parallel;
//! 7. `record`: failover-end (the group's master is now the new one), then the
//!    after-failover hooks.
//!
//! Every attempt ends in a [`FailoverRecord`] that the API and the log show, with one
//! log line per step (see `attempt.rs`). A new leader that finds a failover-begin with
//! no end finishes that failover with the replica it names ([`Resume`]).

use super::WorkerContext;
use super::attempt::{Attempt, Kind};
use super::fault;
use crate::address::Addr;
use crate::broker::{Action, FailoverRecord, Outcome};
use crate::observe::status::WatchState;
use crate::redis::{
    RedisNode, ReplicaReport, Role, ask_replicas, elect, master_seen_alive, promote, repoint,
};
use std::time::Instant;

/// A master that the detector found down.
#[derive(Debug, Clone)]
pub struct FailoverRequest {
    pub group: String,
    pub master: Addr,
    /// The replicas to elect from and re-point: the ones the replicated state records
    /// for the group (listed by the master, or added by fencing and failovers).
    pub replicas: Vec<Addr>,
    /// When the master last answered a check.
    pub last_success: Instant,
    /// The master's replication offset when it last answered.
    pub master_offset: i64,
    /// Which watch of the monitor asked (answers to an older watch are ignored).
    pub watch_id: u64,
    /// Set when an earlier leader recorded failover-begin and stopped before
    /// failover-end: finish that failover, never choose another replica.
    pub resume: Option<Resume>,
}

/// A failover begun by an earlier leader: the replica it chose and when it began (which
/// names the attempt in the replicated state).
#[derive(Debug, Clone)]
pub struct Resume {
    pub new_master: Addr,
    pub started_at_ms: u64,
}

/// How the steps ended when they did not run to the end.
enum Stop {
    /// Recorded with this outcome and reason.
    End(Outcome, String),
    /// Leadership was lost after failover-begin and before promotion: nothing is
    /// recorded, so the new leader finishes the attempt.
    Abandon(String),
}

impl From<(Outcome, String)> for Stop {
    fn from((outcome, reason): (Outcome, String)) -> Stop {
        Stop::End(outcome, reason)
    }
}

type Steps = std::result::Result<(), Stop>;

/// Runs one failover attempt from start to end and records it through the broker.
pub fn run(ctx: &WorkerContext, req: &FailoverRequest) -> FailoverRecord {
    let down_for_ms = req.last_success.elapsed().as_millis() as u64;
    let mut at = Attempt::start(Kind::Failover, &req.group, &req.master, down_for_ms);
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

/// A failover this daemon starts: elect, record the begin, promote, re-point.
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
    let chosen = choose(ctx, req, at)?;
    begin(ctx, req, &chosen, at)?;
    promote(&chosen, &ctx.node_options).map_err(|e| {
        at.fail(
            "promote",
            Outcome::Failed,
            format!("promotion of {chosen} failed: {e}"),
        )
    })?;
    at.record.new_master = Some(chosen.clone());
    at.step("promote", &format!("{chosen} reports role master"));
    let failures = repoint_others(ctx, req, &chosen);
    let others = req.replicas.iter().filter(|a| **a != chosen).count();
    let detail = if failures.is_empty() {
        format!("{others} replica(s) now replicate from {chosen}")
    } else {
        failures.join("; ")
    };
    at.step("repoint", &detail);
    at.record.outcome = Outcome::Succeeded;
    if !failures.is_empty() {
        at.note(format!("not re-pointed: {}", failures.join("; ")));
    }
    Ok(())
}

/// Asks the replicas and elects one (the `info` and `elect` steps).
fn choose(ctx: &WorkerContext, req: &FailoverRequest, at: &mut Attempt) -> Result<Addr, Stop> {
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
    let reports = ask_replicas(&req.replicas, &ctx.node_options);
    at.step("info", &describe_reports(&reports));
    if let Some(witness) = master_seen_alive(&req.master, &reports) {
        let reason = format!(
            "replica {witness} still reports master_link_status:up to {}",
            req.master
        );
        return Err(at.fail("elect", Outcome::Aborted, reason).into());
    }
    let down_for = req.last_success.elapsed();
    let chosen = elect(&req.master, &reports, down_for, ctx.max_down_time).map_err(|why| {
        at.fail(
            "elect",
            Outcome::Failed,
            format!("no replica can be promoted: {why}"),
        )
    })?;
    let behind = reports
        .iter()
        .find(|r| r.addr == chosen)
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
    at.step("elect", &format!("chose {chosen}"));
    Ok(chosen)
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
    fault::pause_if_set(fault::PAUSE_AFTER_BEGIN);
    if !ctx.broker.is_acting() {
        return Err(Stop::Abandon(format!(
            "this daemon lost the cluster's leadership after failover-begin and did not promote {chosen}; the new leader finishes the failover"
        )));
    }
    Ok(())
}

/// `SLAVEOF <chosen>` on every replica of the request but `chosen`; the failures.
fn repoint_others(ctx: &WorkerContext, req: &FailoverRequest, chosen: &Addr) -> Vec<String> {
    let others: Vec<Addr> = req
        .replicas
        .iter()
        .filter(|a| *a != chosen)
        .cloned()
        .collect();
    repoint(&others, chosen, &ctx.node_options)
}

/// Finishes a failover that an earlier leader began (its failover-begin is committed,
/// its failover-end is not). The replica it chose is the only one that may become
/// master: promoted already, it is kept; still a replica while the old master is down,
/// it is promoted now; silent, nothing is promoted and the group is marked failed, since
/// another replica could make two masters.
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
    let role = RedisNode::new(chosen.clone(), ctx.node_options.clone()).role();
    match role {
        Ok(Role::Master { .. }) => at.step("promote", &format!("{chosen} is master already")),
        Ok(_) => {
            let old = RedisNode::new(req.master.clone(), ctx.node_options.clone()).role();
            if let Ok(Role::Master { .. }) = old {
                let reason = format!(
                    "an earlier leader chose {chosen} but never promoted it, and the old master {} is up again",
                    req.master
                );
                return Err(at.fail("promote", Outcome::Aborted, reason).into());
            }
            promote(chosen, &ctx.node_options).map_err(|e| {
                at.fail(
                    "promote",
                    Outcome::Failed,
                    format!("promotion of {chosen} (chosen by an earlier leader) failed: {e}"),
                )
            })?;
            at.step("promote", &format!("{chosen} reports role master"));
        }
        Err(e) => {
            let reason = format!(
                "an earlier leader chose {chosen}, which does not answer ({e}): it may or may not be master, so no other replica is promoted"
            );
            return Err(at.fail("promote", Outcome::Failed, reason).into());
        }
    }
    at.record.new_master = Some(chosen.clone());
    let failures = repoint_others(ctx, req, chosen);
    at.step(
        "repoint",
        &format!(
            "{} other replica(s), {} failed",
            req.replicas.iter().filter(|a| *a != chosen).count(),
            failures.len()
        ),
    );
    at.record.outcome = Outcome::Succeeded;
    at.note("finished by a new leader after the earlier one stopped mid-failover".into());
    if !failures.is_empty() {
        at.note(format!("not re-pointed: {}", failures.join("; ")));
    }
    Ok(())
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
