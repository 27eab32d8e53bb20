//! [`Attempt`]: the record and step log of one failover or switchover attempt.
//!
//! Both kinds of attempt log one line per step (`group g: failover step elect: 0.4 ms
//! (at 1.2 ms): chose ...`), end in a [`FailoverRecord`] kept in the replicated history,
//! and, once recorded, count in the metrics, tell event subscribers, log a summary and
//! run the after-failover hooks on success. This module is the one place those things
//! are written; `failover.rs` and `switchover.rs` only say what their steps do.

use super::WorkerContext;
use crate::address::Addr;
use crate::broker::{Action, AttemptKind, FailoverRecord, Outcome, Step};
use crate::clock::{Clock, millis};
use crate::error::Result;
use crate::observe::events::Event;
use crate::observe::metrics::OUTCOMES;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Steps kept in a record: enough for an election through several candidates, bounded
/// so that the replicated history stays small.
pub const MAX_STEPS: usize = 24;

/// What an attempt is, as its log lines name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A dead master replaced by its best replica.
    Failover,
    /// The same, asked for by a person.
    ManualFailover,
    /// A live master handed over to a replica (planned).
    Switchover,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Failover => "failover",
            Kind::ManualFailover => "manual failover",
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
                kind: match kind {
                    Kind::Failover => AttemptKind::Failover,
                    Kind::ManualFailover => AttemptKind::ManualFailover,
                    Kind::Switchover => AttemptKind::Switchover,
                },
                steps: Vec::new(),
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
        let prefix = self.take_step(name, detail.to_string());
        log::info!("{prefix}: {detail}");
    }

    /// Logs a step that went wrong without ending the attempt (a candidate passed over),
    /// with its duration.
    pub fn setback(&mut self, name: &str, detail: &str) {
        let prefix = self.take_step(name, detail.to_string());
        log::warn!("{prefix}: {detail}");
    }

    /// Logs a step that ends the attempt (`verdict`: aborted, failed, refused,
    /// abandoned) with its duration.
    pub fn end_step(&mut self, name: &str, verdict: &str, reason: &str) {
        let prefix = self.take_step(name, format!("{verdict}: {reason}"));
        log::warn!("{prefix}: {verdict}: {reason}");
    }

    /// Ends a step: kept in the record (at most [`MAX_STEPS`]; the `record` step
    /// itself is only logged, the record being written by then), and the log line's
    /// prefix returned.
    fn take_step(&mut self, name: &str, detail: String) -> String {
        let took = self.since(self.step_started);
        let at = self.since(self.started);
        let prefix = format!(
            "group {}: {} step {name}: {} ms (at {} ms)",
            self.record.group,
            self.kind.name(),
            millis(took),
            millis(at)
        );
        if self.record.steps.len() < MAX_STEPS {
            let round = |d: Duration| (d.as_secs_f64() * 10_000.0).round() / 10.0;
            self.record.steps.push(Step {
                name: name.to_string(),
                at_ms: round(at),
                took_ms: round(took),
                detail,
            });
        }
        self.step_started = self.clock.now();
        prefix
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
