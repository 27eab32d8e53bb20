//! Planned switchover: move a group's master to one of its replicas while the old master
//! is alive, losing no acknowledged write (`POST /api/v1/groups/<name>/switchover`).
//!
//! A failover promotes a replica of a dead master and accepts losing what the replica
//! had not received. A switchover can do better because the master still answers: it
//! stops the writes, lets the replica catch up, and only then swaps the roles. The
//! steps, each logged on one line with its duration:
//!
//! 1. `role`, `elect`: the master must answer `ROLE` master. The target is the replica
//!    named by `to=` (it must be listed by the master, with its link up), else the best
//!    replica with its link up by the failover's own rules (`failover::elect`).
//! 2. `begin`: failover-begin is recorded through the broker, as for a failover, so a
//!    new leader finds an unfinished switchover and finishes or aborts it. The old master
//!    is among the replicas to re-point in that record.
//! 3. `pause`: `CLIENT PAUSE <ms> WRITE` (Redis 6.2 and later) on the master. A server
//!    that refuses it gets a clear error, unless `force=true`: then the switchover goes
//!    on with writes flowing, and writes acknowledged meanwhile may be lost. The pause
//!    runs out by itself after `switchover_timeout` plus [`PAUSE_BEYOND_CATCH_UP`], so a
//!    daemon that dies mid-way does not stop writes for good.
//! 4. `catch-up`: wait until the target's `slave_repl_offset` reaches the master's
//!    offset read after the pause: every acknowledged write is then on the target. At
//!    `switchover_timeout` the writes resume on the old master, and the attempt is
//!    recorded as aborted.
//! 5. `promote`: `SLAVEOF NO ONE` on the target, then `ROLE` until it says master.
//! 6. `demote`: `SLAVEOF <target>` on the old master, and the other replicas re-pointed,
//!    in parallel. Writes that were waiting in the pause now get `READONLY`, which tells
//!    clients to look for the new master; none of them was acknowledged.
//! 7. `record`: failover-end, outcome succeeded. Every daemon's monitor then watches the
//!    new master and publishes `+switch-master`.
//! 8. `unpause`: `CLIENT UNPAUSE` on the old master. This comes after the record, not
//!    before: a client whose write was held by the pause gets `READONLY` and asks for
//!    the master again, and by then it is told the new one. Unpausing first would only
//!    have it ask while the old answer still stands.
//!
//! Plumbing: the switchover runs on the single failover worker, so it never interleaves
//! with a failover, and goes through the monitor first, which refuses a group that is
//! failing over or not watched and keeps the group's checks (hence its down detector)
//! off until the worker is done. The HTTP handler waits for the result on a reply
//! channel, for a bounded time. Only the acting daemon runs it; a follower answers 503
//! naming the leader's HTTP address (a redirect would make clients re-send the API
//! token to another host, which careful HTTP clients refuse to do).

use crate::address::Addr;
use crate::broker::{Action, Broker, FailoverRecord, Outcome};
use crate::events::Event;
use crate::failover::{
    FailoverContext, PROMOTION_TIMEOUT, ReplicaReport, ask_replicas, elect, is_same_server,
    promote, repoint,
};
use crate::redis_node::{NodeOptions, RedisNode, ReplicationInfo, Role};
use crate::resp::Reply;
use crate::status::{WatchState, now_ms};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Serialize;
use std::fmt;
use std::time::{Duration, Instant};

/// How much longer than `switchover_timeout` the pause is asked for: room for the
/// promotion (at most [`PROMOTION_TIMEOUT`]), the demotion and the record. The worker
/// ends the pause itself as soon as it is done; this only bounds a pause whose daemon
/// died mid-way.
pub const PAUSE_BEYOND_CATCH_UP: Duration = Duration::from_secs(PROMOTION_TIMEOUT.as_secs() + 5);
/// How often the target's offset is read while it catches up.
const CATCH_UP_POLL: Duration = Duration::from_millis(1);
/// How long an HTTP request waits beyond the switchover's own bounds: the worker may be
/// busy failing over another group first.
const REPLY_MARGIN: Duration = Duration::from_secs(30);

/// What the API asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchoverRequest {
    /// The group's name (or its master's address).
    pub group: String,
    /// The replica to promote; the best one when None.
    pub to: Option<Addr>,
    /// Go on without pausing writes when the master has no `CLIENT PAUSE WRITE`.
    pub force: bool,
}

/// A request on its way from the API to the monitor, with where to send the answer.
pub struct SwitchoverCommand {
    pub request: SwitchoverRequest,
    pub catch_up_timeout: Duration,
    pub reply: Sender<SwitchoverResult>,
}

impl SwitchoverCommand {
    /// Answers the caller without running anything.
    pub fn refuse(self, error: SwitchoverError) {
        log::warn!("group {}: switchover refused: {error}", self.request.group);
        // The caller may have given up waiting.
        let _ = self.reply.send(Err(error));
    }
}

/// A switchover the monitor handed to the failover worker.
pub struct SwitchoverJob {
    pub command: SwitchoverCommand,
    /// The group's master when the monitor accepted the request.
    pub master: Addr,
    pub watch_id: u64,
}

/// The answer to a switchover request.
pub type SwitchoverResult = std::result::Result<SwitchoverReport, SwitchoverError>;

/// What a successful switchover did (the body of the 200 answer).
#[derive(Debug, Clone, Serialize)]
pub struct SwitchoverReport {
    /// The record kept in the group's history.
    #[serde(flatten)]
    pub record: FailoverRecord,
    /// How long writes were paused on the old master, until `CLIENT UNPAUSE`; None when
    /// `force=true` went on without a pause.
    pub paused_ms: Option<u64>,
    /// The replication offset the new master had reached when it was promoted.
    pub offset: i64,
}

/// Why a switchover did not happen, with the HTTP status that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchoverError {
    /// No such group (404).
    NotFound(String),
    /// A bad parameter, such as `to=` naming a server that is not a replica (400).
    Invalid(String),
    /// The group cannot be switched over now: busy, master not answering, no usable
    /// replica, no `CLIENT PAUSE WRITE` (409).
    Conflict(String),
    /// The cluster or a server did not do its part in time (503).
    Unavailable(String),
    /// This daemon does not act; the leader's HTTP address when known (503).
    NotLeader { leader: Option<String> },
}

impl SwitchoverError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            SwitchoverError::NotFound(_) => 404,
            SwitchoverError::Invalid(_) => 400,
            SwitchoverError::Conflict(_) => 409,
            SwitchoverError::Unavailable(_) | SwitchoverError::NotLeader { .. } => 503,
        }
    }
}

impl fmt::Display for SwitchoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchoverError::NotFound(m)
            | SwitchoverError::Invalid(m)
            | SwitchoverError::Conflict(m)
            | SwitchoverError::Unavailable(m) => f.write_str(m),
            SwitchoverError::NotLeader { leader: Some(addr) } => write!(
                f,
                "this daemon is not the cluster's acting leader; send the switchover to the leader, whose HTTP API is at http://{addr}"
            ),
            SwitchoverError::NotLeader { leader: None } => f.write_str(
                "this daemon is not the cluster's acting leader and knows no leader now; try again",
            ),
        }
    }
}

/// The API's handle for switchovers: sends requests to the monitor and waits.
pub struct Switchovers {
    commands: Sender<SwitchoverCommand>,
    catch_up_timeout: Duration,
}

impl Default for Switchovers {
    /// A handle with no monitor behind it: every request is refused.
    fn default() -> Switchovers {
        Switchovers {
            commands: crossbeam_channel::bounded(1).0,
            catch_up_timeout: Duration::from_secs(5),
        }
    }
}

impl Switchovers {
    /// A handle and the receiver the monitor listens on.
    pub fn new(catch_up_timeout: Duration) -> (Switchovers, Receiver<SwitchoverCommand>) {
        let (commands, receiver) = crossbeam_channel::unbounded();
        let handle = Switchovers {
            commands,
            catch_up_timeout,
        };
        (handle, receiver)
    }

    /// Runs a switchover and waits for its outcome (for a bounded time).
    pub fn request(&self, broker: &dyn Broker, mut request: SwitchoverRequest) -> SwitchoverResult {
        if !broker.is_leader() {
            let leader = broker
                .cluster()
                .leader
                .filter(|l| !l.this_node)
                .and_then(|l| l.http_addr);
            return Err(SwitchoverError::NotLeader { leader });
        }
        request.group = broker.state().find(&request.group).ok_or_else(|| {
            SwitchoverError::NotFound(format!("no monitored group {:?}", request.group))
        })?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        let command = SwitchoverCommand {
            request,
            catch_up_timeout: self.catch_up_timeout,
            reply,
        };
        if self.commands.send(command).is_err() {
            return Err(SwitchoverError::Unavailable(
                "the monitor is not running (the daemon is stopping)".into(),
            ));
        }
        let bound = self.catch_up_timeout + PAUSE_BEYOND_CATCH_UP + REPLY_MARGIN;
        match answer.recv_timeout(bound) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(SwitchoverError::Unavailable(format!(
                "the switchover did not finish within {} s; it may still be under way: GET /api/v1/groups shows its outcome",
                bound.as_secs()
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(SwitchoverError::Unavailable(
                "the failover worker dropped the switchover (it stopped, or a bug); GET /api/v1/groups shows the group's state".into(),
            )),
        }
    }
}

/// Runs a switchover on the failover worker and answers the caller; returns how it
/// ended for the monitor.
pub fn run(ctx: &FailoverContext, job: SwitchoverJob) -> Outcome {
    let SwitchoverJob {
        command, master, ..
    } = job;
    let result = switch_over(ctx, &command, &master);
    let outcome = match &result {
        Ok(report) => report.record.outcome,
        Err(_) => Outcome::Aborted,
    };
    // The caller may have given up waiting; the record and the log tell the story.
    let _ = command.reply.send(result);
    outcome
}

/// Chooses the replica to promote: the one named (listed by the master, link up), or
/// the best one with its link up by the failover's rules.
pub fn choose_target(
    master: &Addr,
    reports: &[ReplicaReport],
    to: Option<&Addr>,
    max_down_time: Duration,
) -> std::result::Result<Addr, SwitchoverError> {
    let linked = |info: &ReplicationInfo| {
        info.link_up
            && info
                .master
                .as_deref()
                .is_some_and(|m| is_same_server(m, master))
    };
    let Some(to) = to else {
        let candidates: Vec<ReplicaReport> = reports
            .iter()
            .filter(|r| r.info.as_ref().is_ok_and(linked))
            .cloned()
            .collect();
        if candidates.is_empty() {
            return Err(SwitchoverError::Conflict(format!(
                "no replica of {master} has its link up: {}",
                describe(reports)
            )));
        }
        return elect(master, &candidates, Duration::ZERO, max_down_time)
            .map_err(|why| SwitchoverError::Conflict(format!("no replica can take over: {why}")));
    };
    let report = reports
        .iter()
        .find(|r| r.addr == *to || is_same_server(&r.addr.to_string(), to))
        .ok_or_else(|| {
            SwitchoverError::Invalid(format!(
                "to={to} is not a replica of {master} (its replicas: {})",
                if reports.is_empty() {
                    "none".to_string()
                } else {
                    reports
                        .iter()
                        .map(|r| r.addr.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))
        })?;
    match &report.info {
        Ok(info) if linked(info) => Ok(report.addr.clone()),
        Ok(info) => Err(SwitchoverError::Conflict(format!(
            "{} cannot take over now: its link to {master} is not up (role {}, master {}, link {})",
            report.addr,
            info.role,
            info.master.as_deref().unwrap_or("none"),
            if info.link_up { "up" } else { "down" }
        ))),
        Err(e) => Err(SwitchoverError::Conflict(format!(
            "{} cannot take over now: it does not answer INFO ({e})",
            report.addr
        ))),
    }
}

fn describe(reports: &[ReplicaReport]) -> String {
    if reports.is_empty() {
        return "it lists no replicas".into();
    }
    reports
        .iter()
        .map(|r| match &r.info {
            Ok(i) => format!("{} link {}", r.addr, if i.link_up { "up" } else { "down" }),
            Err(e) => format!("{} unreachable ({e})", r.addr),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One switchover attempt: its step log, its record, and whether writes may be paused.
struct Attempt<'a> {
    ctx: &'a FailoverContext,
    record: FailoverRecord,
    started: Instant,
    step_started: Instant,
    /// The old master may hold a pause of ours (set from the moment it was asked for).
    paused_on: Option<Addr>,
}

impl Attempt<'_> {
    fn step(&mut self, name: &str, detail: &str) {
        log::info!(
            "group {}: switchover step {name}: {} ms (at {} ms): {detail}",
            self.record.group,
            millis(self.step_started.elapsed()),
            millis(self.started.elapsed())
        );
        self.step_started = Instant::now();
    }

    /// Logs a step that ends the attempt before anything was recorded.
    fn refuse(&mut self, name: &str, error: SwitchoverError) -> SwitchoverError {
        log::warn!(
            "group {}: switchover step {name}: {} ms (at {} ms): refused: {error}",
            self.record.group,
            millis(self.step_started.elapsed()),
            millis(self.started.elapsed())
        );
        error
    }

    /// Ends an attempt after failover-begin: writes resume on the old master, and the
    /// attempt is recorded as aborted (so no leader resumes it).
    fn abort(&mut self, name: &str, error: SwitchoverError) -> SwitchoverError {
        let mut reason = error.to_string();
        if let Some(master) = self.paused_on.take() {
            match unpause(&master, &self.ctx.node_options) {
                Ok(()) => reason.push_str(&format!("; writes resumed on {master}")),
                Err(e) => reason.push_str(&format!(
                    "; CLIENT UNPAUSE failed ({e}): writes resume on {master} when the pause runs out"
                )),
            }
        }
        log::warn!(
            "group {}: switchover step {name}: {} ms (at {} ms): aborted: {reason}",
            self.record.group,
            millis(self.step_started.elapsed()),
            millis(self.started.elapsed())
        );
        self.record.outcome = Outcome::Aborted;
        self.record.new_master = None;
        self.record.reason = Some(format!("switchover aborted: {reason}"));
        self.record.duration_ms = self.started.elapsed().as_millis() as u64;
        let recorded = match self
            .ctx
            .broker
            .propose(Action::FailoverEnd(self.record.clone()))
        {
            Ok(()) => "the attempt is recorded as aborted".to_string(),
            Err(e) => {
                log::error!(
                    "group {}: cannot record the aborted switchover: {e}",
                    self.record.group
                );
                format!("the attempt could not be recorded: {e}")
            }
        };
        self.ctx
            .metrics
            .on_failover(&self.record.group, Outcome::Aborted);
        self.ctx.events.publish(Event::FailoverEnded {
            group: self.record.group.clone(),
            master: self.record.old_master.clone(),
            succeeded: false,
            reason: self.record.reason.clone(),
        });
        let reason = format!("switchover aborted: {reason}; {recorded}");
        match error {
            SwitchoverError::Conflict(_) => SwitchoverError::Conflict(reason),
            SwitchoverError::Invalid(_) => SwitchoverError::Invalid(reason),
            _ => SwitchoverError::Unavailable(reason),
        }
    }

    /// Leadership was lost after failover-begin: record nothing (the new leader finishes
    /// or aborts the attempt), only let the writes go.
    fn abandon(&mut self, name: &str) -> SwitchoverError {
        if let Some(master) = self.paused_on.take()
            && let Err(e) = unpause(&master, &self.ctx.node_options)
        {
            log::warn!("{master}: CLIENT UNPAUSE failed: {e}");
        }
        let error = SwitchoverError::Unavailable(
            "this daemon lost the cluster's leadership during the switchover, before the promotion; the new leader finishes the record (the old master stays master)"
                .into(),
        );
        log::warn!(
            "group {}: switchover step {name}: {} ms (at {} ms): abandoned: {error}",
            self.record.group,
            millis(self.step_started.elapsed()),
            millis(self.started.elapsed())
        );
        error
    }
}

fn switch_over(
    ctx: &FailoverContext,
    command: &SwitchoverCommand,
    master: &Addr,
) -> SwitchoverResult {
    let request = &command.request;
    let group = request.group.as_str();
    let options = &ctx.node_options;
    let started = Instant::now();
    let mut at = Attempt {
        ctx,
        record: FailoverRecord {
            group: group.to_string(),
            old_master: master.clone(),
            new_master: None,
            started_at_ms: now_ms(),
            down_for_ms: 0,
            duration_ms: 0,
            outcome: Outcome::Aborted,
            reason: None,
            begun: false,
        },
        started,
        step_started: started,
        paused_on: None,
    };
    log::warn!(
        "group {group}: switchover of master {master} begins (to {}{})",
        request
            .to
            .as_ref()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "the best replica".into()),
        if request.force { ", force" } else { "" }
    );
    ctx.observed
        .update(group, |o| o.state = WatchState::SwitchingOver);

    // 1. The master is alive and master; the target is one of its linked replicas.
    let mut old = RedisNode::new(master.clone(), options.clone());
    let listed = match old.role() {
        Ok(Role::Master { replicas, .. }) => replicas,
        Ok(other) => {
            return Err(at.refuse(
                "role",
                SwitchoverError::Conflict(format!(
                    "{master} reports {other:?}, not master: nothing to switch over"
                )),
            ));
        }
        Err(e) => {
            return Err(at.refuse(
                "role",
                SwitchoverError::Conflict(format!(
                    "the master {master} does not answer ROLE ({e}); a switchover needs a live master (a dead one is failed over)"
                )),
            ));
        }
    };
    let replicas: Vec<Addr> = listed.iter().map(|r| r.addr.clone()).collect();
    at.step(
        "role",
        &format!("{master} is master with {} replica(s)", replicas.len()),
    );
    let reports = ask_replicas(&replicas, options);
    let target = choose_target(master, &reports, request.to.as_ref(), ctx.max_down_time)
        .map_err(|e| at.refuse("elect", e))?;
    at.step("elect", &format!("chose {target}"));

    // 2. The cluster learns of it before anything changes.
    let others: Vec<Addr> = replicas.iter().filter(|a| **a != target).cloned().collect();
    let mut to_repoint = others.clone();
    to_repoint.push(master.clone());
    ctx.broker
        .propose(Action::FailoverBegin {
            group: group.to_string(),
            old_master: master.clone(),
            new_master: target.clone(),
            replicas: to_repoint,
            started_at_ms: at.record.started_at_ms,
        })
        .map_err(|e| {
            at.refuse(
                "begin",
                SwitchoverError::Unavailable(format!("cannot record failover-begin: {e}")),
            )
        })?;
    at.record.begun = true;
    at.step("begin", "recorded");
    if !ctx.broker.is_leader() {
        return Err(at.abandon("begin"));
    }

    // 3. Stop the writes.
    let catch_up = command.catch_up_timeout;
    let pause_ms = (catch_up + PAUSE_BEYOND_CATCH_UP).as_millis().to_string();
    at.paused_on = Some(master.clone());
    let mut notes = Vec::new();
    let paused = match old.pipeline_raw(&[&["CLIENT", "PAUSE", &pause_ms, "WRITE"]]) {
        Ok(replies) => match replies.first() {
            Some(Reply::Error(e)) => {
                at.paused_on = None;
                if !request.force {
                    return Err(at.abort(
                        "pause",
                        SwitchoverError::Conflict(format!(
                            "{master} refused CLIENT PAUSE WRITE ({e}); it needs Redis 6.2 or later. With force=true the switchover goes on without pausing writes, and writes acknowledged during it may be lost"
                        )),
                    ));
                }
                notes.push(format!(
                    "forced: writes were not paused ({master} refused CLIENT PAUSE WRITE: {e}), so writes acknowledged during the switchover may be lost"
                ));
                at.step(
                    "pause",
                    &format!("{master} refused CLIENT PAUSE WRITE ({e}); force=true: going on with writes flowing"),
                );
                false
            }
            _ => {
                at.step(
                    "pause",
                    &format!("writes paused on {master} (for at most {pause_ms} ms)"),
                );
                true
            }
        },
        Err(e) => {
            return Err(at.abort(
                "pause",
                SwitchoverError::Unavailable(format!("CLIENT PAUSE on {master} failed: {e}")),
            ));
        }
    };
    let paused_at = Instant::now();
    hold_after_pause();

    // 4. Every acknowledged write reaches the target.
    let goal = match old.role() {
        Ok(Role::Master { offset, .. }) => offset,
        Ok(other) => {
            return Err(at.abort(
                "catch-up",
                SwitchoverError::Conflict(format!("{master} is no longer master: {other:?}")),
            ));
        }
        Err(e) => {
            return Err(at.abort(
                "catch-up",
                SwitchoverError::Unavailable(format!("cannot read the offset of {master}: {e}")),
            ));
        }
    };
    let reached = wait_for_offset(&target, goal, paused_at + catch_up, options).map_err(|seen| {
        at.abort(
            "catch-up",
            SwitchoverError::Unavailable(format!(
                "{target} did not catch up with {master} within the switchover_timeout of {} ms: {seen}",
                catch_up.as_millis()
            )),
        )
    })?;
    at.step(
        "catch-up",
        &format!("{target} reached offset {reached} (master at {goal})"),
    );
    if !ctx.broker.is_leader() {
        return Err(at.abandon("catch-up"));
    }

    // 5. The target becomes master.
    if let Err(e) = promote(&target, options) {
        // The old master never stopped being master: put the target back under it.
        let back = RedisNode::new(target.clone(), options.clone())
            .slave_of(Some(master))
            .map(|()| format!("{target} is a replica of {master} again"))
            .unwrap_or_else(|e| format!("{target} could not be made a replica again: {e}"));
        return Err(at.abort(
            "promote",
            SwitchoverError::Unavailable(format!("promotion of {target} failed: {e}; {back}")),
        ));
    }
    at.record.new_master = Some(target.clone());
    at.step("promote", &format!("{target} reports role master"));

    // 6. The old master follows it, and so do the others.
    let (demoted, failures) = std::thread::scope(|scope| {
        let repointing = scope.spawn(|| repoint(&others, &target, options));
        let demoted = demote(&mut old, master, &target, options);
        let failures = repointing
            .join()
            .unwrap_or_else(|_| vec!["the re-pointing thread panicked".into()]);
        (demoted, failures)
    });
    match &demoted {
        Ok(()) => at.step(
            "demote",
            &format!(
                "{master} and {} other replica(s) now replicate from {target}{}",
                others.len() - failures.len(),
                if failures.is_empty() {
                    String::new()
                } else {
                    format!("; not re-pointed: {}", failures.join("; "))
                }
            ),
        ),
        Err(e) => {
            log::error!(
                "group {group}: the old master {master} could not be made a replica of {target}: {e}; its writes stay paused until the pause runs out"
            );
            at.step("demote", &format!("{master} NOT demoted: {e}"));
            // Writes stay paused on it: letting them go now would make two masters.
            at.paused_on = None;
            notes.push(format!(
                "the old master could not be made a replica ({e}); its writes stay paused until the pause runs out"
            ));
        }
    }
    if !failures.is_empty() {
        notes.push(format!("not re-pointed: {}", failures.join("; ")));
    }

    // 7. The new master is the group's master, for every daemon and client.
    at.record.outcome = Outcome::Succeeded;
    let pause_note = if paused {
        format!(
            "writes paused for {} ms until this record",
            paused_at.elapsed().as_millis()
        )
    } else {
        "writes not paused".into()
    };
    at.record.reason = Some(
        std::iter::once(format!("planned switchover; {pause_note}"))
            .chain(notes)
            .collect::<Vec<_>>()
            .join("; "),
    );
    at.record.duration_ms = started.elapsed().as_millis() as u64;
    let recorded = ctx.broker.propose(Action::FailoverEnd(at.record.clone()));
    match &recorded {
        Ok(()) => at.step("record", "outcome succeeded recorded"),
        Err(e) => at.step("record", &format!("FAILED: {e}")),
    }

    // 8. Writes resume; those held by the pause get READONLY from the old master.
    let unpaused = match at.paused_on.take() {
        Some(old_master) => match old.call(&["CLIENT", "UNPAUSE"]) {
            Ok(_) => true,
            Err(e) => {
                log::warn!(
                    "group {group}: CLIENT UNPAUSE on {old_master} failed ({e}); the pause runs out by itself"
                );
                false
            }
        },
        None => false,
    };
    let paused_ms = paused.then(|| paused_at.elapsed().as_millis() as u64);
    if let (true, Some(ms)) = (unpaused, paused_ms) {
        at.step(
            "unpause",
            &format!("writes resumed after a pause of {ms} ms"),
        );
    }
    if let Err(e) = recorded {
        return Err(SwitchoverError::Unavailable(format!(
            "{target} is the new master of {group}, but the switchover could not be recorded ({e}); the cluster's next leader finishes the record"
        )));
    }
    ctx.metrics.on_failover(group, Outcome::Succeeded);
    ctx.events.publish(Event::FailoverEnded {
        group: group.to_string(),
        master: target.clone(),
        succeeded: true,
        reason: at.record.reason.clone(),
    });
    log::warn!(
        "group {group}: switchover succeeded in {} ms: {master} -> {target} ({})",
        at.record.duration_ms,
        at.record.reason.as_deref().unwrap_or_default()
    );
    ctx.hooks.run_after(group, master, &target);
    Ok(SwitchoverReport {
        record: at.record,
        paused_ms,
        offset: reached,
    })
}

/// Polls the target's `slave_repl_offset` until it reaches `goal`; on the deadline,
/// returns what it saw last.
fn wait_for_offset(
    target: &Addr,
    goal: i64,
    deadline: Instant,
    options: &NodeOptions,
) -> std::result::Result<i64, String> {
    let mut node = RedisNode::new(target.clone(), options.clone());
    loop {
        let seen = match node.replication_info() {
            Ok(info) if info.offset >= goal => return Ok(info.offset),
            Ok(info) => format!(
                "offset {} of {goal}, link {}",
                info.offset,
                if info.link_up { "up" } else { "down" }
            ),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(seen);
        }
        std::thread::sleep(CATCH_UP_POLL);
    }
}

/// `SLAVEOF <target>` on the old master, on the connection at hand and then once more
/// on a fresh one; `CONFIG REWRITE` as best effort.
fn demote(
    old: &mut RedisNode,
    master: &Addr,
    target: &Addr,
    options: &NodeOptions,
) -> crate::error::Result<()> {
    if let Err(first) = old.slave_of(Some(target)) {
        log::warn!("{master}: SLAVEOF {target}: {first}; trying once more");
        *old = RedisNode::new(master.clone(), options.clone());
        old.slave_of(Some(target))?;
    }
    if let Err(e) = old.config_rewrite() {
        log::debug!("{master}: CONFIG REWRITE after SLAVEOF: {e}");
    }
    Ok(())
}

/// Fault injection for tests of the catch-up deadline: with
/// `REDIS_FAILOVER_SWITCHOVER_HOLD_MS` set, the worker waits that long after pausing the
/// writes, so a test can stop the target there.
fn hold_after_pause() {
    let hold = std::env::var("REDIS_FAILOVER_SWITCHOVER_HOLD_MS")
        .ok()
        .and_then(|ms| ms.parse::<u64>().ok());
    if let Some(ms) = hold {
        log::warn!("holding {ms} ms after the pause (REDIS_FAILOVER_SWITCHOVER_HOLD_MS)");
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// `CLIENT UNPAUSE` on a fresh connection.
fn unpause(master: &Addr, options: &NodeOptions) -> crate::error::Result<()> {
    RedisNode::new(master.clone(), options.clone())
        .call(&["CLIENT", "UNPAUSE"])
        .map(|_| ())
}

fn millis(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "127.0.0.1:6379";

    fn report(port: u16, priority: u32, offset: i64, link_up: bool) -> ReplicaReport {
        ReplicaReport {
            addr: Addr::parse(&format!("127.0.0.1:{port}")).unwrap(),
            info: Ok(ReplicationInfo {
                role: "slave".into(),
                master: Some(MASTER.into()),
                link_up,
                link_down_secs: None,
                priority,
                offset,
                run_id: None,
            }),
        }
    }

    fn choose(reports: &[ReplicaReport], to: Option<&str>) -> Result<u16, SwitchoverError> {
        let to = to.map(|t| Addr::parse(t).unwrap());
        choose_target(
            &Addr::parse(MASTER).unwrap(),
            reports,
            to.as_ref(),
            Duration::from_secs(1),
        )
        .map(|a| a.port)
    }

    #[test]
    fn the_best_linked_replica_by_the_failover_rules() {
        let reports = [
            report(1, 10, 5, false),
            report(2, 100, 9, true),
            report(3, 50, 1, true),
            report(4, 0, 99, true),
        ];
        assert_eq!(choose(&reports, None), Ok(3));
        let down = [report(1, 10, 5, false)];
        let err = choose(&down, None).unwrap_err();
        assert_eq!(err.status(), 409, "{err}");
        assert_eq!(choose(&[], None).unwrap_err().status(), 409);
    }

    #[test]
    fn a_named_target_must_be_a_linked_replica() {
        let reports = [report(1, 100, 5, true), report(2, 100, 9, false)];
        assert_eq!(choose(&reports, Some("127.0.0.1:1")), Ok(1));
        assert_eq!(choose(&reports, Some("localhost:1")), Ok(1));
        let err = choose(&reports, Some("127.0.0.1:7")).unwrap_err();
        assert_eq!(err.status(), 400, "{err}");
        assert!(err.to_string().contains("not a replica"), "{err}");
        let err = choose(&reports, Some("127.0.0.1:2")).unwrap_err();
        assert_eq!(err.status(), 409, "{err}");
    }

    #[test]
    fn a_follower_names_the_leader() {
        let err = SwitchoverError::NotLeader {
            leader: Some("10.0.0.2:11000".into()),
        };
        assert_eq!(err.status(), 503);
        assert!(err.to_string().contains("http://10.0.0.2:11000"), "{err}");
    }
}
