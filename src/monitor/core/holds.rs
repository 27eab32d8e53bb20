//! Failovers a person steers: an automatic failover held back by a maintenance pause or
//! the anti-flapping block (the rule is `broker::holds`), and a manual failover asked
//! through the API. A held-back failover is recorded in the history like a stopped
//! attempt (repeats join one record) and tried again after another whole window, so
//! it begins within a window of the pause's end or the acknowledgement.

use super::watch::Phase;
use super::{MonitorCore, Output, Timer};
use crate::broker::holds::held_back;
use crate::broker::{Action, AttemptKind, FailoverRecord, Outcome};
use crate::observe::events::Event;
use crate::worker::WorkerJob;
use crate::worker::manual_failover::ManualFailoverCommand;
use crate::worker::switchover_request::SwitchoverError;

impl MonitorCore {
    /// Why an automatic failover of `group` must wait now, if it must.
    pub(super) fn held_back(&self, group: &str) -> Option<String> {
        let state = self.latest.as_ref()?;
        let g = state.groups.get(group)?;
        let now_ms = self.now.unix_ms(self.now.mono);
        held_back(
            g,
            state.paused_all.as_ref(),
            self.settings.failover_block,
            now_ms,
        )
    }

    /// The cluster agrees the master is down, and `why` holds the failover back: the
    /// attempt is recorded as held back and the group watched with a new window.
    pub(super) fn hold_back(&mut self, group: &str, why: String) {
        let now = self.now.mono;
        let started_at_ms = self.now.unix_ms(now);
        let Some(watch) = self.watches.get_mut(group) else {
            return;
        };
        if watch.set_held(Some(why.clone())) {
            log::warn!(
                "group {group}: master {} is down; automatic failover {why}",
                watch.master()
            );
        }
        let record = FailoverRecord {
            group: group.to_string(),
            kind: AttemptKind::HeldBack,
            old_master: watch.master().clone(),
            new_master: None,
            started_at_ms,
            down_for_ms: self.now.since(watch.detector().last_success()).as_millis() as u64,
            duration_ms: 0,
            outcome: Outcome::Aborted,
            reason: Some(why),
            begun: false,
            passed_over: Vec::new(),
            count: 1,
            first_started_at_ms: None,
            steps: Vec::new(),
        };
        watch.attempt_ended(now);
        let watch_id = watch.watch_id();
        self.outputs
            .push(Output::Propose(Action::FailoverEnd(record)));
        let next = self.next_check(watch_id, now + self.settings.check_interval / 2);
        self.schedule(next, Timer::Check, watch_id);
    }

    /// A person asks to fail a group over: begun at once when this daemon acts, the
    /// master does not answer and no failover or switchover is under way.
    pub(super) fn on_manual_failover(&mut self, command: ManualFailoverCommand) {
        if !self.acting {
            return command.refuse(SwitchoverError::NotLeader { leader: None });
        }
        let group = command.group.clone();
        let Some(watch) = self.watches.get_mut(&*group) else {
            return command.refuse(SwitchoverError::NotFound(format!(
                "no monitored group {group:?}"
            )));
        };
        let busy = match watch.phase() {
            Phase::Watching => None,
            Phase::FailingOver => Some("a failover or switchover of the group is under way".into()),
            Phase::Stopped => Some(
                "the group is not watched (its master reports being a replica); add it again first"
                    .to_string(),
            ),
        };
        // Answers: its last check succeeded, lately. (A held-back attempt restarts the
        // window and the failure count; the last answer stays as it was.)
        let detector = watch.detector();
        let answers = detector.failures_in_a_row() == 0
            && self.now.since(detector.last_answer()) <= self.settings.check_interval * 2;
        let busy = busy.or_else(|| {
            answers.then(|| {
                format!(
                    "master {} answers its checks; a live master is moved with POST /api/v1/groups/{group}/switchover",
                    watch.master()
                )
            })
        });
        if let Some(why) = busy {
            return command.refuse(SwitchoverError::Conflict(why));
        }
        let master = watch.master().clone();
        let replicas = watch.failover_replicas();
        let mut request = watch.hand_over_failover(&group, replicas, None);
        request.manual = true;
        log::warn!("group {group}: manual failover of master {master} asked for; begun");
        self.sinks.events.publish(Event::FailoverNeeded {
            group: group.clone(),
            master: master.clone(),
        });
        self.send_to_worker(WorkerJob::Failover(request));
        let _ = command.reply.send(Ok(master.to_string()));
    }
}
