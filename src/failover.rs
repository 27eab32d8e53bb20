//! The failover worker: elects the best replica of a down master, promotes it and
//! re-points the others.
//!
//! One worker thread consumes [`FailoverRequest`]s from a channel, so two failovers of a
//! group can never interleave and the log reads in order. The steps follow Redis
//! Sentinel's rules (see `REFERENCE.md`), keeping to commands LedisDB also has:
//!
//! 1. run the before-failover hooks (a veto aborts);
//! 2. ask every replica for `INFO` in parallel; if one still has its link to the master
//!    up, the master may be alive (stalled, or cut off only from us): abort;
//! 3. elect: skip unreachable, priority-0 and stale replicas; prefer the LOWER non-zero
//!    priority, then the larger offset, then the smaller run id;
//! 4. record failover-begin through the broker;
//! 5. `SLAVEOF NO ONE` on the elected replica and wait until `ROLE` says master;
//! 6. `SLAVEOF <new master>` on every other replica, in parallel;
//! 7. record failover-end (the group's master is now the new one) and run the
//!    after-failover hooks.
//!
//! Every attempt ends in a [`FailoverRecord`] that the API and the log show. The log
//! has one line per step (`hooks`, `info`, `elect`, `begin`, `promote`, `repoint`,
//! `record`) with how long it took and when it ended since the attempt began; a step
//! that ends the attempt logs why, and a last line sums the attempt up.

use crate::address::Addr;
use crate::broker::{Action, Broker, FailoverRecord, Outcome};
use crate::error::Result;
use crate::events::{Event, Events};
use crate::hooks::Hooks;
use crate::metrics::Metrics;
use crate::redis_node::{NodeOptions, RedisNode, ReplicationInfo, Role};
use crate::status::{Observations, WatchState, now_ms};
use crossbeam_channel::{Receiver, Sender};
use std::cmp::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a promoted replica may take before `ROLE` says master.
pub const PROMOTION_TIMEOUT: Duration = Duration::from_secs(10);
/// A replica whose link has been down this many down windows longer than the master's
/// outage holds data too old to promote (Sentinel's rule).
pub const STALE_FACTOR: u32 = 10;

/// A master that the detector found down.
#[derive(Debug, Clone)]
pub struct FailoverRequest {
    pub group: String,
    pub master: Addr,
    /// Replicas from the master's last `ROLE` reply.
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

/// Sent back to the monitor when a request has been handled.
#[derive(Debug, Clone)]
pub struct FailoverDone {
    pub group: String,
    pub watch_id: u64,
    pub outcome: Outcome,
}

/// What the worker needs to act.
pub struct FailoverContext {
    pub broker: Arc<dyn Broker>,
    pub hooks: Arc<Hooks>,
    pub observed: Arc<Observations>,
    pub metrics: Arc<Metrics>,
    pub events: Arc<Events>,
    pub node_options: NodeOptions,
    pub max_down_time: Duration,
}

/// A replica's answer to `INFO`, or why there was none.
#[derive(Debug, Clone)]
pub struct ReplicaReport {
    pub addr: Addr,
    pub info: Result<ReplicationInfo>,
}

/// What the worker does: a failover of a down master, or a planned switchover
/// (`switchover.rs`). One queue for both, so they never interleave.
pub enum WorkerJob {
    Failover(FailoverRequest),
    Switchover(crate::switchover::SwitchoverJob),
}

/// Starts the single failover worker thread.
pub fn spawn_worker(
    ctx: FailoverContext,
    jobs: Receiver<WorkerJob>,
    done: Sender<FailoverDone>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("failover".into())
        .spawn(move || {
            for job in jobs {
                let (group, watch_id) = match &job {
                    WorkerJob::Failover(r) => (r.group.clone(), r.watch_id),
                    WorkerJob::Switchover(s) => (s.command.request.group.clone(), s.watch_id),
                };
                // A bug here must not end failovers for every group: log it, carry on.
                let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match job {
                    WorkerJob::Failover(request) => fail_over(&ctx, &request).outcome,
                    WorkerJob::Switchover(job) => crate::switchover::run(&ctx, job),
                }));
                let outcome = attempt.unwrap_or_else(|_| {
                    log::error!(
                        "group {group}: the failover or switchover attempt panicked; it is treated as aborted"
                    );
                    Outcome::Aborted
                });
                let finished = FailoverDone {
                    group,
                    watch_id,
                    outcome,
                };
                if done.send(finished).is_err() {
                    break;
                }
            }
        })
}

/// Runs one failover attempt from start to end and records it through the broker.
pub fn fail_over(ctx: &FailoverContext, req: &FailoverRequest) -> FailoverRecord {
    let started = Instant::now();
    let mut attempt = Attempt {
        group: &req.group,
        record: FailoverRecord {
            group: req.group.clone(),
            old_master: req.master.clone(),
            new_master: None,
            started_at_ms: now_ms(),
            down_for_ms: req.last_success.elapsed().as_millis() as u64,
            duration_ms: 0,
            outcome: Outcome::Aborted,
            reason: None,
            begun: false,
        },
        started,
        step_started: started,
        abandoned: false,
    };
    log::warn!(
        "group {}: failover of master {} begins ({} ms without a successful check; replicas: {})",
        req.group,
        req.master,
        attempt.record.down_for_ms,
        list(&req.replicas)
    );
    ctx.observed
        .update(&req.group, |o| o.state = WatchState::FailingOver);
    let result = match &req.resume {
        Some(resume) => {
            attempt.record.started_at_ms = resume.started_at_ms;
            attempt.record.begun = true;
            resume_steps(ctx, req, &resume.new_master, &mut attempt)
        }
        None => run_steps(ctx, req, &mut attempt),
    };
    if let Err((outcome, reason)) = result {
        attempt.record.outcome = outcome;
        attempt.record.reason = Some(reason);
    }
    if attempt.abandoned {
        log::warn!(
            "group {}: failover abandoned after {} ms: {}",
            req.group,
            started.elapsed().as_millis(),
            attempt.record.reason.as_deref().unwrap_or("")
        );
        return attempt.record;
    }
    // The attempt's duration: until the servers are in their new roles.
    attempt.record.duration_ms = started.elapsed().as_millis() as u64;
    let record = attempt.record.clone();
    match ctx.broker.propose(Action::FailoverEnd(record.clone())) {
        Ok(()) => attempt.step(
            "record",
            &format!("outcome {} recorded", outcome_name(record.outcome)),
        ),
        Err(e) => {
            attempt.fail(
                "record",
                record.outcome,
                format!("cannot record the end of the failover: {e}"),
            );
        }
    }
    ctx.metrics.on_failover(&record.group, record.outcome);
    ctx.events.publish(Event::FailoverEnded {
        group: record.group.clone(),
        master: record
            .new_master
            .clone()
            .unwrap_or(record.old_master.clone()),
        succeeded: record.outcome == Outcome::Succeeded,
        reason: record.reason.clone(),
    });
    match record.outcome {
        Outcome::Succeeded => log::warn!(
            "group {}: failover succeeded in {} ms: {} -> {}{}",
            record.group,
            record.duration_ms,
            record.old_master,
            record
                .new_master
                .as_ref()
                .map(|a| a.to_string())
                .unwrap_or_default(),
            record
                .reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        Outcome::Aborted => log::warn!(
            "group {}: failover aborted after {} ms: {}",
            record.group,
            record.duration_ms,
            record.reason.as_deref().unwrap_or("")
        ),
        Outcome::Failed => log::error!(
            "group {}: failover FAILED after {} ms: {}; automatic failover is off for this group until it is added again",
            record.group,
            record.duration_ms,
            record.reason.as_deref().unwrap_or("")
        ),
    }
    if let (Outcome::Succeeded, Some(new)) = (record.outcome, &record.new_master) {
        ctx.hooks.run_after(&record.group, &record.old_master, new);
    }
    record
}

/// Timing and the record of one attempt, for step-by-step logging.
struct Attempt<'a> {
    group: &'a str,
    record: FailoverRecord,
    started: Instant,
    step_started: Instant,
    /// Leadership was lost after failover-begin and before promotion: nothing is
    /// recorded, so the new leader finishes the attempt.
    abandoned: bool,
}

impl Attempt<'_> {
    /// Logs the end of a step with its duration.
    fn step(&mut self, name: &str, detail: &str) {
        log::info!(
            "group {}: failover step {name}: {} ms (at {} ms): {detail}",
            self.group,
            millis(self.step_started.elapsed()),
            millis(self.started.elapsed())
        );
        self.step_started = Instant::now();
    }

    /// Logs a step that ends the attempt, with its duration, and returns the outcome.
    fn fail(&mut self, name: &str, outcome: Outcome, reason: String) -> (Outcome, String) {
        log::warn!(
            "group {}: failover step {name}: {} ms (at {} ms): {}: {reason}",
            self.group,
            millis(self.step_started.elapsed()),
            millis(self.started.elapsed()),
            outcome_name(outcome)
        );
        self.step_started = Instant::now();
        (outcome, reason)
    }
}

/// Milliseconds with one decimal: most steps take well under one.
fn millis(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// `succeeded`, `aborted` or `failed`, as the API spells it.
fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::Aborted => "aborted",
        Outcome::Failed => "failed",
    }
}

type StepResult = std::result::Result<(), (Outcome, String)>;

fn run_steps(ctx: &FailoverContext, req: &FailoverRequest, at: &mut Attempt) -> StepResult {
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
        return Err(at.fail(
            "info",
            Outcome::Aborted,
            "no replicas known: the master listed none in its last ROLE reply (or never answered)"
                .into(),
        ));
    }
    let reports = ask_replicas(&req.replicas, &ctx.node_options);
    at.step("info", &describe_reports(&reports));

    if let Some(witness) = master_seen_alive(&req.master, &reports) {
        return Err(at.fail(
            "elect",
            Outcome::Aborted,
            format!(
                "replica {witness} still reports master_link_status:up to {}",
                req.master
            ),
        ));
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
        at.record.reason = Some(format!(
            "promoted replica was {behind} bytes behind the master's last known offset"
        ));
    }
    at.step("elect", &format!("chose {chosen}"));

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
    pause_after_begin();
    if !ctx.broker.is_leader() {
        at.abandoned = true;
        return Err((
            Outcome::Aborted,
            format!(
                "this daemon lost the cluster's leadership after failover-begin and did not promote {chosen}; the new leader finishes the failover"
            ),
        ));
    }

    promote(&chosen, &ctx.node_options).map_err(|e| {
        at.fail(
            "promote",
            Outcome::Failed,
            format!("promotion of {chosen} failed: {e}"),
        )
    })?;
    at.record.new_master = Some(chosen.clone());
    at.step("promote", &format!("{chosen} reports role master"));

    let others: Vec<Addr> = req
        .replicas
        .iter()
        .filter(|a| **a != chosen)
        .cloned()
        .collect();
    let failures = repoint(&others, &chosen, &ctx.node_options);
    let detail = if failures.is_empty() {
        format!("{} replica(s) now replicate from {chosen}", others.len())
    } else {
        failures.join("; ")
    };
    at.step("repoint", &detail);
    at.record.outcome = Outcome::Succeeded;
    if !failures.is_empty() {
        let note = format!("not re-pointed: {}", failures.join("; "));
        at.record.reason = Some(match at.record.reason.take() {
            Some(earlier) => format!("{earlier}; {note}"),
            None => note,
        });
    }
    Ok(())
}

/// Finishes a failover that an earlier leader began (its failover-begin is committed,
/// its failover-end is not). The replica it chose is the only one that may become
/// master: promoted already, it is kept; still a replica while the old master is down,
/// it is promoted now; silent, nothing is promoted and the group is marked failed, since
/// another replica could make two masters.
fn resume_steps(
    ctx: &FailoverContext,
    req: &FailoverRequest,
    chosen: &Addr,
    at: &mut Attempt,
) -> StepResult {
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
                return Err((
                    Outcome::Aborted,
                    format!(
                        "an earlier leader chose {chosen} but never promoted it, and the old master {} is up again",
                        req.master
                    ),
                ));
            }
            promote(chosen, &ctx.node_options).map_err(|e| {
                (
                    Outcome::Failed,
                    format!("promotion of {chosen} (chosen by an earlier leader) failed: {e}"),
                )
            })?;
            at.step("promote", &format!("{chosen} reports role master"));
        }
        Err(e) => {
            return Err((
                Outcome::Failed,
                format!(
                    "an earlier leader chose {chosen}, which does not answer ({e}): it may or may not be master, so no other replica is promoted"
                ),
            ));
        }
    }
    at.record.new_master = Some(chosen.clone());
    let others: Vec<Addr> = req
        .replicas
        .iter()
        .filter(|a| *a != chosen)
        .cloned()
        .collect();
    let failures = repoint(&others, chosen, &ctx.node_options);
    at.step(
        "repoint",
        &format!(
            "{} other replica(s), {} failed",
            others.len(),
            failures.len()
        ),
    );
    at.record.outcome = Outcome::Succeeded;
    let mut reason =
        "finished by a new leader after the earlier one stopped mid-failover".to_string();
    if !failures.is_empty() {
        reason.push_str(&format!("; not re-pointed: {}", failures.join("; ")));
    }
    at.record.reason = Some(reason);
    Ok(())
}

/// Fault injection for tests of leader loss mid-failover: with
/// `REDIS_FAILOVER_PAUSE_AFTER_BEGIN_MS` set, the worker waits that long between
/// recording failover-begin and promoting, so a test can kill this daemon there.
fn pause_after_begin() {
    let pause = std::env::var("REDIS_FAILOVER_PAUSE_AFTER_BEGIN_MS")
        .ok()
        .and_then(|ms| ms.parse::<u64>().ok());
    if let Some(ms) = pause {
        log::warn!("pausing {ms} ms after failover-begin (REDIS_FAILOVER_PAUSE_AFTER_BEGIN_MS)");
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// `INFO` on every replica at once, each with its own timeouts.
pub fn ask_replicas(replicas: &[Addr], options: &NodeOptions) -> Vec<ReplicaReport> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = replicas
            .iter()
            .map(|addr| {
                scope.spawn(move || ReplicaReport {
                    addr: addr.clone(),
                    info: RedisNode::new(addr.clone(), options.clone()).replication_info(),
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(replicas)
            .map(|(h, addr)| {
                h.join().unwrap_or_else(|_| ReplicaReport {
                    addr: addr.clone(),
                    info: Err(crate::error::Error::Server(format!(
                        "{addr}: INFO thread panicked"
                    ))),
                })
            })
            .collect()
    })
}

/// Whether a reported `master_host:master_port` names `addr`: the same text, or names
/// that resolve to a common address (a master added as `redis-a:6379` whose replicas
/// report `10.0.0.5`).
pub fn is_same_server(reported: &str, addr: &Addr) -> bool {
    let Ok(reported) = Addr::parse(reported) else {
        return false;
    };
    if reported.port != addr.port {
        return false;
    }
    if reported.host == addr.host {
        return true;
    }
    let resolve = |a: &Addr| -> Vec<std::net::IpAddr> {
        std::net::ToSocketAddrs::to_socket_addrs(&(a.host.as_str(), a.port))
            .map(|addrs| addrs.map(|s| s.ip()).collect())
            .unwrap_or_default()
    };
    let mine = resolve(addr);
    resolve(&reported).iter().any(|ip| mine.contains(ip))
}

/// A replica that still has an up link to `master`, if any: then the master is alive.
pub fn master_seen_alive<'a>(master: &Addr, reports: &'a [ReplicaReport]) -> Option<&'a Addr> {
    reports.iter().find_map(|r| match &r.info {
        Ok(info)
            if info.link_up
                && info
                    .master
                    .as_deref()
                    .is_some_and(|m| is_same_server(m, master)) =>
        {
            Some(&r.addr)
        }
        _ => None,
    })
}

/// Chooses the replica to promote, or says why none qualifies.
pub fn elect(
    master: &Addr,
    reports: &[ReplicaReport],
    down_for: Duration,
    max_down_time: Duration,
) -> std::result::Result<Addr, String> {
    let stale_after = down_for + max_down_time * STALE_FACTOR;
    let mut rejected = Vec::new();
    let mut eligible: Vec<(&Addr, &ReplicationInfo)> = Vec::new();
    for report in reports {
        let why = match &report.info {
            Err(e) => Some(format!("unreachable ({e})")),
            Ok(info) if info.role != "slave" && info.role != "replica" => {
                Some(format!("reports role {}", info.role))
            }
            Ok(info)
                if !info
                    .master
                    .as_deref()
                    .is_some_and(|m| is_same_server(m, master)) =>
            {
                Some(format!(
                    "replicates from {} instead",
                    info.master.as_deref().unwrap_or("nothing")
                ))
            }
            Ok(info) if info.priority == 0 => Some("slave_priority is 0".into()),
            Ok(info)
                if info
                    .link_down_secs
                    .is_some_and(|s| Duration::from_secs(s) > stale_after) =>
            {
                Some(format!(
                    "stale: link down for {} s",
                    info.link_down_secs.unwrap_or(0)
                ))
            }
            Ok(info) => {
                eligible.push((&report.addr, info));
                None
            }
        };
        if let Some(why) = why {
            rejected.push(format!("{} {why}", report.addr));
        }
    }
    eligible.sort_by(|(_, a), (_, b)| compare_for_promotion(a, b));
    eligible
        .first()
        .map(|(addr, _)| (*addr).clone())
        .ok_or_else(|| {
            if rejected.is_empty() {
                "no replicas".to_string()
            } else {
                rejected.join("; ")
            }
        })
}

/// Sentinel's order: lower priority, larger offset, smaller run id (none sorts last).
fn compare_for_promotion(a: &ReplicationInfo, b: &ReplicationInfo) -> Ordering {
    a.priority
        .cmp(&b.priority)
        .then(b.offset.cmp(&a.offset))
        .then_with(|| match (&a.run_id, &b.run_id) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
}

/// `SLAVEOF NO ONE`, then poll `ROLE` until it says master.
pub(crate) fn promote(addr: &Addr, options: &NodeOptions) -> Result<()> {
    let mut node = RedisNode::new(addr.clone(), options.clone());
    // A SLAVEOF whose reply was lost may still have worked: ROLE decides.
    if let Err(e) = node.slave_of(None) {
        log::warn!("{addr}: SLAVEOF NO ONE: {e}; checking ROLE before giving up");
    }
    let deadline = Instant::now() + PROMOTION_TIMEOUT;
    loop {
        let last = match node.role() {
            Ok(Role::Master { .. }) => break,
            Ok(other) => format!("{other:?}"),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(crate::error::Error::Server(format!(
                "{addr}: ROLE still not master after {} s: {last}",
                PROMOTION_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Err(e) = node.config_rewrite() {
        log::debug!("{addr}: CONFIG REWRITE after promotion: {e}");
    }
    Ok(())
}

/// `SLAVEOF new_master` on every replica at once; returns the failures.
pub(crate) fn repoint(replicas: &[Addr], new_master: &Addr, options: &NodeOptions) -> Vec<String> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = replicas
            .iter()
            .map(|addr| {
                scope.spawn(move || {
                    let mut node = RedisNode::new(addr.clone(), options.clone());
                    node.slave_of(Some(new_master))?;
                    if let Err(e) = node.config_rewrite() {
                        log::debug!("{addr}: CONFIG REWRITE after SLAVEOF: {e}");
                    }
                    Ok::<(), crate::error::Error>(())
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(replicas)
            .filter_map(|(h, addr)| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("{addr}: SLAVEOF thread panicked")),
            })
            .collect()
    })
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

    const MASTER: &str = "127.0.0.1:6379";

    fn report(port: u16, priority: u32, offset: i64, run_id: Option<&str>) -> ReplicaReport {
        ReplicaReport {
            addr: Addr::parse(&format!("127.0.0.1:{port}")).unwrap(),
            info: Ok(ReplicationInfo {
                role: "slave".into(),
                master: Some(MASTER.into()),
                link_up: false,
                link_down_secs: Some(1),
                priority,
                offset,
                run_id: run_id.map(String::from),
            }),
        }
    }

    fn elect_port(reports: &[ReplicaReport]) -> std::result::Result<u16, String> {
        elect(
            &Addr::parse(MASTER).unwrap(),
            reports,
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .map(|a| a.port)
    }

    #[test]
    fn lower_nonzero_priority_wins_over_offset() {
        let r = [
            report(1, 100, 500, None),
            report(2, 10, 1, None),
            report(3, 0, 900, None),
        ];
        assert_eq!(elect_port(&r), Ok(2));
    }

    #[test]
    fn larger_offset_then_smaller_run_id() {
        let r = [report(1, 100, 5, Some("b")), report(2, 100, 9, Some("z"))];
        assert_eq!(elect_port(&r), Ok(2));
        let r = [
            report(1, 100, 9, Some("b")),
            report(2, 100, 9, Some("a")),
            report(3, 100, 9, None),
        ];
        assert_eq!(elect_port(&r), Ok(2));
    }

    #[test]
    fn unreachable_priority_zero_and_stale_are_skipped_with_reasons() {
        let mut stale = report(3, 1, 999, None);
        if let Ok(info) = &mut stale.info {
            info.link_down_secs = Some(3600);
        }
        let unreachable = ReplicaReport {
            addr: Addr::parse("127.0.0.1:4").unwrap(),
            info: Err(crate::error::Error::Server("refused".into())),
        };
        let err = elect_port(&[report(2, 0, 5, None), stale, unreachable]).unwrap_err();
        assert!(
            err.contains("slave_priority is 0")
                && err.contains("stale")
                && err.contains("unreachable"),
            "{err}"
        );
    }

    #[test]
    fn a_replica_with_its_link_up_means_the_master_is_alive() {
        let mut r = report(1, 100, 5, None);
        if let Ok(info) = &mut r.info {
            info.link_up = true;
            info.master = Some("localhost:6379".into());
        }
        let master = Addr::parse(MASTER).unwrap();
        assert_eq!(master_seen_alive(&master, &[r]).map(|a| a.port), Some(1));
        assert_eq!(master_seen_alive(&master, &[report(2, 1, 1, None)]), None);
    }
}
