//! Promotion in election order: a failover whose elected replica cannot be promoted
//! tries the next candidate, within the same attempt, before it gives up.
//!
//! A candidate is passed over when it answers `SLAVEOF NO ONE` with an error, or when
//! its `ROLE` does not say master within the promotion timeout ([`promotion_timeout`]).
//! Before the next candidate is promoted, the attempt records through the broker that
//! it moves on to it: a failover-begin with the same start that names the new candidate
//! and lists those passed over (`Action::FailoverBegin`). A leader that takes over
//! mid-way therefore resumes with the replica actually being promoted, and never
//! promotes one the attempt has not named.
//!
//! A candidate passed over might still become master later (a lost reply, a slow
//! server). It stays among the replicas to re-point, so it is told to follow the winner
//! once there is one, and fencing converts it should it claim master afterwards.
//!
//! The promotion of one replica ([`promote`]: `SLAVEOF NO ONE`, then `ROLE` until it
//! says master) is here too, not in the I/O code: it runs on the worker's [`Servers`]
//! and [`Clock`], so a simulation runs the same deadline and polling.

use super::WorkerContext;
use super::attempt::Attempt;
use super::failover_request::{FailoverRequest, Stop};
use super::servers::{PromoteReply, Servers};
use crate::address::Addr;
use crate::broker::{Action, Outcome, PassedOver};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::redis::Role;
use std::time::Duration;

/// The longest a promoted replica may take before `ROLE` says master. The worker waits
/// less when the down window is short ([`promotion_timeout`] derives the timeout it
/// passes to [`promote`] from `max_down_time`); this bounds it, and the write pause of a
/// switchover counts on it.
pub const PROMOTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a promoted replica is asked `ROLE` until it says master.
const ROLE_POLL: Duration = Duration::from_millis(20);

/// The shortest promotion timeout: a worker's `ROLE` may itself wait 2 s (its I/O
/// timeout) on a busy server, so less would give a slow server no second look.
pub const PROMOTION_TIMEOUT_FLOOR: Duration = Duration::from_secs(2);

/// How long a promoted replica may take before its `ROLE` says master: one down window
/// (`max_down_time`), within [`PROMOTION_TIMEOUT_FLOOR`] and [`PROMOTION_TIMEOUT`]. Each
/// candidate passed over for being slow then delays the failover by about one more
/// window, never by more than 10 s. A refusal costs no waiting at all.
pub fn promotion_timeout(max_down_time: Duration) -> Duration {
    max_down_time.clamp(PROMOTION_TIMEOUT_FLOOR, PROMOTION_TIMEOUT)
}

/// `SLAVEOF NO ONE` on `addr`, then `ROLE` every 20 ms until it says master, for at most
/// `timeout` of `clock` time; once it does, the promotion is kept across a restart as
/// best effort ([`Servers::keep_promotion`]).
///
/// A server that answers `SLAVEOF NO ONE` with an error refused it: unless its `ROLE`
/// says master all the same, that is an error at once, with no polling. A lost reply
/// (timeout, closed connection) may hide a promotion that worked, so `ROLE` decides.
pub fn promote(
    servers: &dyn Servers,
    clock: &dyn Clock,
    addr: &Addr,
    timeout: Duration,
) -> Result<()> {
    let deadline = clock.now() + timeout;
    match servers.promote_once(addr) {
        PromoteReply::Accepted => {}
        PromoteReply::Refused(refusal) => {
            return match servers.role(addr) {
                Ok(Role::Master { .. }) => {
                    servers.keep_promotion(addr);
                    Ok(())
                }
                _ => Err(Error::Server(format!(
                    "{addr}: refused SLAVEOF NO ONE: {refusal}"
                ))),
            };
        }
        PromoteReply::NoReply(e) => {
            log::warn!("{addr}: SLAVEOF NO ONE: {e}; checking ROLE before giving up")
        }
    }
    loop {
        let last = match servers.role(addr) {
            Ok(Role::Master { .. }) => break,
            Ok(other) => format!("{other:?}"),
            Err(e) => e.to_string(),
        };
        if clock.now() >= deadline {
            return Err(Error::Server(format!(
                "{addr}: ROLE still not master after {} ms: {last}",
                timeout.as_millis()
            )));
        }
        clock.sleep(ROLE_POLL);
    }
    servers.keep_promotion(addr);
    Ok(())
}

/// Promotes the first of `order` that lets itself be promoted, and returns it.
///
/// `passed` holds the candidates this attempt passed over already; `first_named` says
/// whether the replicated failover-begin names `order[0]` already (else it is recorded
/// before the promotion, as for every later candidate). The record's `passed_over` is
/// set in every case; when no candidate can be promoted the attempt fails.
pub(super) fn promote_in_order(
    ctx: &WorkerContext,
    req: &FailoverRequest,
    at: &mut Attempt,
    order: &[Addr],
    mut passed: Vec<PassedOver>,
    first_named: bool,
) -> std::result::Result<Addr, Stop> {
    for (i, candidate) in order.iter().enumerate() {
        if (i > 0 || !first_named)
            && let Err(stop) = name_next(ctx, req, at, candidate, &passed)
        {
            at.record.passed_over = passed;
            return Err(stop);
        }
        match try_candidate(ctx, at, candidate, i + 1 < order.len()) {
            Ok(()) => return Ok(promoted(at, candidate, passed)),
            Err(passed_over) => passed.push(passed_over),
        }
    }
    let reason = if passed.is_empty() {
        "no candidate to promote".to_string()
    } else {
        format!("no candidate could be promoted: {}", describe(&passed))
    };
    at.record.passed_over = passed;
    Err(at.fail("promote", Outcome::Failed, reason).into())
}

/// `SLAVEOF NO ONE` on one candidate and `ROLE` until it says master; when that fails,
/// logs it and says why it is passed over (`more`: whether a candidate is left).
pub(super) fn try_candidate(
    ctx: &WorkerContext,
    at: &mut Attempt,
    candidate: &Addr,
    more: bool,
) -> std::result::Result<(), PassedOver> {
    let timeout = promotion_timeout(ctx.max_down_time);
    let promoted = promote(ctx.servers.as_ref(), ctx.clock.as_ref(), candidate, timeout);
    let Err(e) = promoted else {
        at.step("promote", &format!("{candidate} reports role master"));
        return Ok(());
    };
    let reason = e.to_string();
    let reason = reason
        .strip_prefix(&format!("{candidate}: "))
        .unwrap_or(&reason)
        .to_string();
    let next = if more {
        "trying the next candidate"
    } else {
        "no candidate left"
    };
    at.setback(
        "promote",
        &format!("{candidate} passed over: {reason}; {next}"),
    );
    Err(PassedOver {
        addr: candidate.clone(),
        reason,
    })
}

/// `candidate` is master: the record names those passed over before it.
pub(super) fn promoted(at: &mut Attempt, candidate: &Addr, passed: Vec<PassedOver>) -> Addr {
    if !passed.is_empty() {
        at.note(format!(
            "promoted {candidate} after passing over {}",
            describe(&passed)
        ));
    }
    at.record.passed_over = passed;
    candidate.clone()
}

/// Records that the attempt moves on to `next`, having passed over `passed` (whose
/// last entry is the candidate named until now). Only a daemon that still acts may
/// then promote it; if the record cannot be made, nothing is promoted and the attempt
/// is left to whoever acts next, who resumes it from the candidate still named.
fn name_next(
    ctx: &WorkerContext,
    req: &FailoverRequest,
    at: &mut Attempt,
    next: &Addr,
    passed: &[PassedOver],
) -> std::result::Result<(), Stop> {
    let named = passed
        .last()
        .map_or_else(|| "the candidate named".to_string(), |p| p.addr.to_string());
    ctx.broker
        .propose(Action::FailoverBegin {
            group: req.group.clone(),
            old_master: req.master.clone(),
            new_master: next.clone(),
            replicas: req.replicas.clone(),
            started_at_ms: at.record.started_at_ms,
            passed_over: passed.to_vec(),
        })
        .map_err(|e| {
            Stop::Abandon(format!(
                "cannot record the move from {named} to the next candidate {next} ({e}); {next} was not promoted, and whoever acts next resumes the failover from {named}"
            ))
        })?;
    at.step("begin", &format!("recorded: moving on to {next}"));
    if !ctx.broker.is_acting() {
        return Err(Stop::Abandon(format!(
            "this daemon lost the cluster's leadership before promoting {next}; the new leader finishes the failover"
        )));
    }
    Ok(())
}

/// `a (why); b (why)`.
pub(super) fn describe(passed: &[PassedOver]) -> String {
    passed
        .iter()
        .map(|p| format!("{} ({})", p.addr, p.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_promotion_timeout_follows_the_window_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(promotion_timeout(Duration::from_millis(100)), s(2));
        assert_eq!(promotion_timeout(s(1)), s(2));
        assert_eq!(promotion_timeout(s(3)), s(3));
        assert_eq!(
            promotion_timeout(Duration::from_millis(4500)),
            Duration::from_millis(4500)
        );
        assert_eq!(promotion_timeout(s(60)), PROMOTION_TIMEOUT);
    }
}
