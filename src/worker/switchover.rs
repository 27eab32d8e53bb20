//! Planned switchover: move a group's master to one of its replicas while the old master
//! is alive, losing no acknowledged write (`POST /api/v1/groups/<name>/switchover`).
//!
//! A failover promotes a replica of a dead master and accepts losing what the replica
//! had not received. A switchover can do better because the master still answers: it
//! stops the writes, lets the replica catch up, and only then swaps the roles. The
//! steps, each logged on one line with its duration:
//!
//! 1. `role`, `elect`: the master must answer `ROLE` master and must not be LedisDB,
//!    which has no `CLIENT PAUSE` (refused with 409, even with `force=true`: see
//!    [`ledisdb_refusal`]). The target is the replica
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
//! 5. `promote`: `SLAVEOF NO ONE` on the target, then `ROLE` until it says master, for
//!    at most the promotion timeout the failover uses (`promotion.rs`). A switchover
//!    tries no other replica: the old master is alive and takes its writes back.
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
//! channel, for a bounded time (`switchover_request.rs`).
//!
//! Servers and time: every command goes through the worker's
//! [`Servers`](super::Servers) (each on a connection of its own: the pause is the
//! server's, not a connection's), and every wait through its clock, so a simulation
//! runs a switchover as it runs a failover.

use super::WorkerContext;
use super::attempt::{Attempt, Kind};
use super::fault;
use super::promotion::{PROMOTION_TIMEOUT, promote, promotion_timeout};
use super::servers::Servers;
use super::switchover_request::{
    SwitchoverCommand, SwitchoverError, SwitchoverReport, SwitchoverRequest, SwitchoverResult,
    choose_target, ledisdb_refusal,
};
use crate::address::Addr;
use crate::broker::{Action, Outcome};
use crate::clock::Clock;
use crate::observe::status::WatchState;
use crate::redis::Role;
use std::time::{Duration, Instant};

/// How much longer than `switchover_timeout` the pause is asked for: room for the
/// promotion (at most [`PROMOTION_TIMEOUT`], the ceiling of `promotion_timeout`), the
/// demotion and the record. The worker ends the pause itself as soon as it is done;
/// this only bounds a pause whose daemon died mid-way.
pub const PAUSE_BEYOND_CATCH_UP: Duration = Duration::from_secs(PROMOTION_TIMEOUT.as_secs() + 5);
/// How often the target's offset is read while it catches up.
const CATCH_UP_POLL: Duration = Duration::from_millis(1);

/// A switchover the monitor handed to the failover worker.
pub struct SwitchoverJob {
    pub command: SwitchoverCommand,
    /// The group's master when the monitor accepted the request.
    pub master: Addr,
    pub watch_id: u64,
}

/// Runs a switchover on the failover worker and answers the caller; returns how it
/// ended for the monitor.
pub fn run(ctx: &WorkerContext, job: SwitchoverJob) -> Outcome {
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

/// A switchover under way: the attempt, the connection to the old master, and whether
/// writes may be paused on it.
struct Switch<'a> {
    ctx: &'a WorkerContext,
    at: Attempt,
    master: Addr,
    /// The old master may hold a pause of ours (set from the moment it was asked for).
    paused_on: Option<Addr>,
    /// When the writes were paused, if they were.
    paused_at: Option<Instant>,
    /// Notes for the record's reason.
    notes: Vec<String>,
}

fn switch_over(
    ctx: &WorkerContext,
    command: &SwitchoverCommand,
    master: &Addr,
) -> SwitchoverResult {
    let request = &command.request;
    let mut sw = Switch {
        ctx,
        at: Attempt::start(ctx, Kind::Switchover, &request.group, master, 0),
        master: master.clone(),
        paused_on: None,
        paused_at: None,
        notes: Vec::new(),
    };
    log::warn!(
        "group {}: switchover of master {master} begins (to {}{})",
        request.group,
        request
            .to
            .as_ref()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "the best replica".into()),
        if request.force { ", force" } else { "" }
    );
    ctx.observed
        .update(&request.group, |o| o.state = WatchState::SwitchingOver);
    let replicas = sw.master_replicas()?;
    sw.refuse_ledisdb()?;
    let target = sw.choose(&replicas, request)?;
    let others: Vec<Addr> = replicas.iter().filter(|a| **a != target).cloned().collect();
    sw.begin(&others, &target)?;
    sw.pause(command, request.force)?;
    fault::pause_if_set(fault::HOLD_AFTER_PAUSE, ctx.clock.as_ref());
    let reached = sw.catch_up(&target, command.catch_up_timeout)?;
    sw.promote(&target)?;
    sw.demote(&others, &target);
    sw.finish(&target, reached)
}

impl Switch<'_> {
    /// Step 1, `role`: the master is alive and master; its replicas.
    fn master_replicas(&mut self) -> Result<Vec<Addr>, SwitchoverError> {
        let master = self.master.clone();
        let listed = match self.ctx.servers.role(&master) {
            Ok(Role::Master { replicas, .. }) => replicas,
            Ok(other) => {
                return Err(self.refuse(
                    "role",
                    SwitchoverError::Conflict(format!(
                        "{master} reports {other:?}, not master: nothing to switch over"
                    )),
                ));
            }
            Err(e) => {
                return Err(self.refuse(
                    "role",
                    SwitchoverError::Conflict(format!(
                        "the master {master} does not answer ROLE ({e}); a switchover needs a live master (a dead one is failed over)"
                    )),
                ));
            }
        };
        let replicas: Vec<Addr> = listed.into_iter().map(|r| r.addr).collect();
        self.at.step(
            "role",
            &format!("{master} is master with {} replica(s)", replicas.len()),
        );
        Ok(replicas)
    }

    /// Step 1, `role`: a LedisDB master (its `INFO server` has `ledisdb_version`) is
    /// refused before anything changes. A master whose `INFO` fails goes on: the `pause`
    /// step still refuses a server without `CLIENT PAUSE`.
    fn refuse_ledisdb(&mut self) -> Result<(), SwitchoverError> {
        let report = self.ctx.servers.infos(std::slice::from_ref(&self.master));
        let info = match report.into_iter().next() {
            Some(report) => report.info,
            None => return Ok(()),
        };
        match info {
            Ok(info) => match info.ledisdb_version {
                Some(version) => Err(self.refuse("role", ledisdb_refusal(&self.master, &version))),
                None => Ok(()),
            },
            Err(e) => {
                log::debug!("{}: INFO before the switchover: {e}", self.master);
                Ok(())
            }
        }
    }

    /// Step 1, `elect`: the target is one of the master's linked replicas.
    fn choose(
        &mut self,
        replicas: &[Addr],
        request: &SwitchoverRequest,
    ) -> Result<Addr, SwitchoverError> {
        let reports = self.ctx.servers.infos(replicas);
        let chosen = choose_target(
            &self.master,
            &reports,
            request.to.as_ref(),
            self.ctx.max_down_time,
        );
        let target = chosen.map_err(|e| self.refuse("elect", e))?;
        self.at.step("elect", &format!("chose {target}"));
        Ok(target)
    }

    /// Step 2, `begin`: the cluster learns of it before anything changes. The old master is
    /// among the replicas to re-point in the record.
    fn begin(&mut self, others: &[Addr], target: &Addr) -> Result<(), SwitchoverError> {
        let mut to_repoint = others.to_vec();
        to_repoint.push(self.master.clone());
        let begun = self.ctx.broker.propose(Action::FailoverBegin {
            group: self.at.group().to_string(),
            old_master: self.master.clone(),
            new_master: target.clone(),
            replicas: to_repoint,
            started_at_ms: self.at.record.started_at_ms,
            passed_over: Vec::new(),
        });
        if let Err(e) = begun {
            return Err(self.refuse(
                "begin",
                SwitchoverError::Unavailable(format!("cannot record failover-begin: {e}")),
            ));
        }
        self.at.record.begun = true;
        self.at.step("begin", "recorded");
        if !self.ctx.broker.is_acting() {
            return Err(self.abandon("begin"));
        }
        Ok(())
    }

    /// Step 3, `pause`: `CLIENT PAUSE <ms> WRITE`; a server without it is refused unless
    /// `force`.
    fn pause(&mut self, command: &SwitchoverCommand, force: bool) -> Result<(), SwitchoverError> {
        let master = self.master.clone();
        let pause_ms = (command.catch_up_timeout + PAUSE_BEYOND_CATCH_UP).as_millis() as u64;
        self.paused_on = Some(master.clone());
        match self.ctx.servers.pause_writes(&master, pause_ms) {
            Ok(Err(e)) => {
                self.paused_on = None;
                if !force {
                    return Err(self.abort(
                        "pause",
                        SwitchoverError::Conflict(format!(
                            "{master} refused CLIENT PAUSE WRITE ({e}); it needs Redis 6.2 or later. With force=true the switchover goes on without pausing writes, and writes acknowledged during it may be lost"
                        )),
                    ));
                }
                self.notes.push(format!(
                    "forced: writes were not paused ({master} refused CLIENT PAUSE WRITE: {e}), so writes acknowledged during the switchover may be lost"
                ));
                self.at.step(
                    "pause",
                    &format!("{master} refused CLIENT PAUSE WRITE ({e}); force=true: going on with writes flowing"),
                );
            }
            Ok(_) => {
                self.paused_at = Some(self.ctx.clock.now());
                self.at.step(
                    "pause",
                    &format!("writes paused on {master} (for at most {pause_ms} ms)"),
                );
            }
            Err(e) => {
                let error =
                    SwitchoverError::Unavailable(format!("CLIENT PAUSE on {master} failed: {e}"));
                return Err(self.abort("pause", error));
            }
        }
        Ok(())
    }

    /// Step 4, `catch-up`: every acknowledged write reaches the target; returns the offset
    /// it reached.
    fn catch_up(&mut self, target: &Addr, timeout: Duration) -> Result<i64, SwitchoverError> {
        let master = self.master.clone();
        let goal = match self.ctx.servers.role(&master) {
            Ok(Role::Master { offset, .. }) => offset,
            Ok(other) => {
                let error =
                    SwitchoverError::Conflict(format!("{master} is no longer master: {other:?}"));
                return Err(self.abort("catch-up", error));
            }
            Err(e) => {
                let error = SwitchoverError::Unavailable(format!(
                    "cannot read the offset of {master}: {e}"
                ));
                return Err(self.abort("catch-up", error));
            }
        };
        let clock = self.ctx.clock.as_ref();
        let deadline = self.paused_at.unwrap_or_else(|| clock.now()) + timeout;
        let servers = self.ctx.servers.as_ref();
        let reached = match wait_for_offset(target, goal, deadline, servers, clock) {
            Ok(reached) => reached,
            Err(seen) => {
                let error = SwitchoverError::Unavailable(format!(
                    "{target} did not catch up with {master} within the switchover_timeout of {} ms: {seen}",
                    timeout.as_millis()
                ));
                return Err(self.abort("catch-up", error));
            }
        };
        self.at.step(
            "catch-up",
            &format!("{target} reached offset {reached} (master at {goal})"),
        );
        if !self.ctx.broker.is_acting() {
            return Err(self.abandon("catch-up"));
        }
        Ok(reached)
    }

    /// Step 5, `promote`: the target becomes master; should that fail, it is put back under
    /// the old master, which never stopped being master.
    fn promote(&mut self, target: &Addr) -> Result<(), SwitchoverError> {
        if let Err(e) = promote(
            self.ctx.servers.as_ref(),
            self.ctx.clock.as_ref(),
            target,
            promotion_timeout(self.ctx.max_down_time),
        ) {
            let failures = self
                .ctx
                .servers
                .repoint(std::slice::from_ref(target), &self.master);
            let back = match failures.first() {
                None => format!("{target} is a replica of {} again", self.master),
                Some(e) => format!("{target} could not be made a replica again: {e}"),
            };
            let error =
                SwitchoverError::Unavailable(format!("promotion of {target} failed: {e}; {back}"));
            return Err(self.abort("promote", error));
        }
        self.at.record.new_master = Some(target.clone());
        self.at
            .step("promote", &format!("{target} reports role master"));
        Ok(())
    }

    /// Step 6, `demote`: the old master follows the target, and so do the others.
    fn demote(&mut self, others: &[Addr], target: &Addr) {
        let master = self.master.clone();
        let servers = self.ctx.servers.as_ref();
        let demoted = servers.demote(&master, target);
        let failures = servers.repoint(others, target);
        match &demoted {
            Ok(()) => self.at.step(
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
                    "group {}: the old master {master} could not be made a replica of {target}: {e}; its writes stay paused until the pause runs out",
                    self.at.group()
                );
                self.at
                    .step("demote", &format!("{master} NOT demoted: {e}"));
                // Writes stay paused on it: letting them go now would make two masters.
                self.paused_on = None;
                self.notes.push(format!(
                    "the old master could not be made a replica ({e}); its writes stay paused until the pause runs out"
                ));
            }
        }
        if !failures.is_empty() {
            self.notes
                .push(format!("not re-pointed: {}", failures.join("; ")));
        }
    }

    /// Steps 7, `record`, and 8, `unpause`: the new master is the group's master for every
    /// daemon and client, then writes resume; those held by the pause get `READONLY`
    /// from the old master and ask for the master again, and are told the new one.
    fn finish(mut self, target: &Addr, reached: i64) -> SwitchoverResult {
        self.at.record.outcome = Outcome::Succeeded;
        let pause_note = match self.paused_at {
            Some(at) => format!(
                "writes paused for {} ms until this record",
                self.since(at).as_millis()
            ),
            None => "writes not paused".into(),
        };
        self.at.note(format!("planned switchover; {pause_note}"));
        for note in std::mem::take(&mut self.notes) {
            self.at.note(note);
        }
        let recorded = self.at.record_end(self.ctx);
        let unpaused = match self.paused_on.take() {
            Some(old_master) => match self.ctx.servers.unpause_writes(&old_master) {
                Ok(_) => true,
                Err(e) => {
                    log::warn!(
                        "group {}: CLIENT UNPAUSE on {old_master} failed ({e}); the pause runs out by itself",
                        self.at.group()
                    );
                    false
                }
            },
            None => false,
        };
        let paused_ms = self.paused_at.map(|at| self.since(at).as_millis() as u64);
        if let (true, Some(ms)) = (unpaused, paused_ms) {
            self.at.step(
                "unpause",
                &format!("writes resumed after a pause of {ms} ms"),
            );
        }
        if let Err(e) = recorded {
            return Err(SwitchoverError::Unavailable(format!(
                "{target} is the new master of {}, but the switchover could not be recorded ({e}); the cluster's next leader finishes the record",
                self.at.group()
            )));
        }
        self.at.announce(self.ctx);
        Ok(SwitchoverReport {
            record: self.at.record,
            paused_ms,
            offset: reached,
        })
    }

    /// How long ago `then` was, on the worker's clock.
    fn since(&self, then: Instant) -> Duration {
        self.ctx.clock.now().saturating_duration_since(then)
    }

    /// Logs a step that ends the attempt before anything was recorded.
    fn refuse(&mut self, name: &str, error: SwitchoverError) -> SwitchoverError {
        self.at.end_step(name, "refused", &error.to_string());
        error
    }

    /// Ends an attempt after failover-begin: writes resume on the old master, and the
    /// attempt is recorded as aborted (so no leader resumes it).
    fn abort(&mut self, name: &str, error: SwitchoverError) -> SwitchoverError {
        let mut reason = error.to_string();
        if let Some(master) = self.paused_on.take() {
            match self.ctx.servers.unpause_writes(&master) {
                Ok(()) => reason.push_str(&format!("; writes resumed on {master}")),
                Err(e) => reason.push_str(&format!(
                    "; CLIENT UNPAUSE failed ({e}): writes resume on {master} when the pause runs out"
                )),
            }
        }
        self.at.end_step(name, "aborted", &reason);
        self.at.record.outcome = Outcome::Aborted;
        self.at.record.new_master = None;
        self.at.record.reason = Some(format!("switchover aborted: {reason}"));
        let recorded = match self.at.record_end(self.ctx) {
            Ok(()) => "the attempt is recorded as aborted".to_string(),
            Err(e) => format!("the attempt could not be recorded: {e}"),
        };
        self.at.announce(self.ctx);
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
            && let Err(e) = self.ctx.servers.unpause_writes(&master)
        {
            log::warn!("{master}: CLIENT UNPAUSE failed: {e}");
        }
        let error = SwitchoverError::Unavailable(
            "this daemon lost the cluster's leadership during the switchover, before the promotion; the new leader finishes the record (the old master stays master)"
                .into(),
        );
        self.at.end_step(name, "abandoned", &error.to_string());
        error
    }
}

/// Polls the target's `slave_repl_offset` until it reaches `goal`; on the deadline,
/// returns what it saw last.
fn wait_for_offset(
    target: &Addr,
    goal: i64,
    deadline: Instant,
    servers: &dyn Servers,
    clock: &dyn Clock,
) -> std::result::Result<i64, String> {
    loop {
        let report = servers.infos(std::slice::from_ref(target));
        let info = report.into_iter().next().map(|r| r.info);
        let seen = match info {
            Some(Ok(info)) if info.offset >= goal => return Ok(info.offset),
            Some(Ok(info)) => format!(
                "offset {} of {goal}, link {}",
                info.offset,
                if info.link_up { "up" } else { "down" }
            ),
            Some(Err(e)) => e.to_string(),
            None => "no INFO".into(),
        };
        if clock.now() >= deadline {
            return Err(seen);
        }
        clock.sleep(CATCH_UP_POLL);
    }
}
