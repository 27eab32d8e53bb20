//! [`Attempt`]: the record and step log of one failover or switchover attempt.
//!
//! Both kinds of attempt log one line per step (`group g: failover step elect: 0.4 ms
//! (at 1.2 ms): chose ...`), end in a [`FailoverRecord`] kept in the replicated history,
//! and, once recorded, count in the metrics, tell event subscribers, log a summary and
//! run the after-failover hooks on success. This module is the one place those things
//! are written; `failover.rs` and `switchover.rs` only say what their steps do.

use super::WorkerContext;
use crate::address::Addr;
use crate::broker::{Action, FailoverRecord, Outcome};
use crate::clock::{Clock, millis};
use crate::error::Result;
use crate::observe::events::Event;
use crate::observe::metrics::OUTCOMES;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What an attempt is, as its log lines name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A dead master replaced by its best replica.
    Failover,
    /// A live master handed over to a replica (planned).
    Switchover,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Failover => "failover",
            Kind::Switchover => "switchover",
        }
    }
}

/// One attempt: its record and the timing of its steps (on the worker's clock).
pub struct Attempt {
    kind: Kind,
    pub record: FailoverRecord,
    clock: Arc<dyn Clock>,
    started: Instant,
    step_started: Instant,
}

impl Attempt {
    /// Starts an attempt on `old_master`, which had not answered for `down_for_ms`
    /// (0 for a switchover). Its outcome is `aborted` until a step says otherwise.
    pub fn start(
        ctx: &WorkerContext,
        kind: Kind,
        group: &str,
        old_master: &Addr,
        down_for_ms: u64,
    ) -> Attempt {
        let started = ctx.clock.now();
        Attempt {
            kind,
            record: FailoverRecord {
                group: group.to_string(),
                old_master: old_master.clone(),
                new_master: None,
                started_at_ms: ctx.clock.wall_ms(),
                down_for_ms,
                duration_ms: 0,
                outcome: Outcome::Aborted,
                reason: None,
                begun: false,
                passed_over: Vec::new(),
                count: 1,
                first_started_at_ms: None,
            },
            clock: ctx.clock.clone(),
            started,
            step_started: started,
        }
    }

    pub fn group(&self) -> &str {
        &self.record.group
    }

    /// Milliseconds since the attempt started.
    pub fn elapsed_ms(&self) -> u64 {
        self.since(self.started).as_millis() as u64
    }

    /// How long ago `then` was, on the worker's clock.
    fn since(&self, then: Instant) -> Duration {
        self.clock.now().saturating_duration_since(then)
    }

    /// Logs the end of a step with its duration.
    pub fn step(&mut self, name: &str, detail: &str) {
        log::info!("{}: {detail}", self.step_prefix(name));
        self.step_started = self.clock.now();
    }

    /// Logs a step that went wrong without ending the attempt (a candidate passed over),
    /// with its duration.
    pub fn setback(&mut self, name: &str, detail: &str) {
        log::warn!("{}: {detail}", self.step_prefix(name));
        self.step_started = self.clock.now();
    }

    /// Logs a step that ends the attempt (`verdict`: aborted, failed, refused,
    /// abandoned) with its duration.
    pub fn end_step(&mut self, name: &str, verdict: &str, reason: &str) {
        log::warn!("{}: {verdict}: {reason}", self.step_prefix(name));
        self.step_started = self.clock.now();
    }

    /// Logs a step that ends the attempt with `outcome`, and returns the outcome with
    /// the reason for the record.
    pub fn fail(&mut self, name: &str, outcome: Outcome, reason: String) -> (Outcome, String) {
        self.end_step(name, outcome_name(outcome), &reason);
        (outcome, reason)
    }

    /// Adds a note to the record's reason (`; `-separated).
    pub fn note(&mut self, note: String) {
        self.record.reason = Some(match self.record.reason.take() {
            Some(earlier) => format!("{earlier}; {note}"),
            None => note,
        });
    }

    fn step_prefix(&self, name: &str) -> String {
        format!(
            "group {}: {} step {name}: {} ms (at {} ms)",
            self.record.group,
            self.kind.name(),
            millis(self.since(self.step_started)),
            millis(self.since(self.started))
        )
    }

    /// Records the attempt's end through the broker (the `record` step).
    pub fn record_end(&mut self, ctx: &WorkerContext) -> Result<()> {
        self.record.duration_ms = self.elapsed_ms();
        let recorded = ctx.broker.propose(Action::FailoverEnd(self.record.clone()));
        match &recorded {
            Ok(()) => self.step(
                "record",
                &format!("outcome {} recorded", outcome_name(self.record.outcome)),
            ),
            Err(e) => self.end_step(
                "record",
                outcome_name(self.record.outcome),
                &format!("cannot record the end of the {}: {e}", self.kind.name()),
            ),
        }
        recorded
    }

    /// After the record: counts the attempt, tells event subscribers, logs a summary
    /// and, on success, runs the after-failover hooks.
    pub fn announce(&self, ctx: &WorkerContext) {
        let record = &self.record;
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
        let kind = self.kind.name();
        let reason = record.reason.as_deref().unwrap_or("");
        match (record.outcome, &record.new_master) {
            (Outcome::Succeeded, Some(new)) => {
                log::warn!(
                    "group {}: {kind} succeeded in {} ms: {} -> {new}{}",
                    record.group,
                    record.duration_ms,
                    record.old_master,
                    if reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({reason})")
                    }
                );
                ctx.hooks.run_after(&record.group, &record.old_master, new);
            }
            (Outcome::Failed, _) => log::error!(
                "group {}: {kind} FAILED after {} ms: {reason}; automatic failover is off for this group until it is added again",
                record.group,
                record.duration_ms,
            ),
            _ => log::warn!(
                "group {}: {kind} aborted after {} ms: {reason}",
                record.group,
                record.duration_ms,
            ),
        }
    }
}

/// `succeeded`, `aborted` or `failed`, as the API spells it.
pub fn outcome_name(outcome: Outcome) -> &'static str {
    OUTCOMES
        .iter()
        .find(|(o, _)| *o == outcome)
        .map_or("aborted", |(_, name)| name)
}
