//! What the outcome of one master check leads to: a master that answers refreshes its
//! replicas (and may reveal servers to fence), one that says it is a replica stops being
//! watched, and failures feed the down detector until it calls the master down and the
//! failover worker gets the group.

use super::detector::Verdict;
use super::probe::Probe;
use super::{MonitorCore, Output, Timer};
use crate::broker::Action;
use crate::error::Result;
use crate::observe::events::Event;
use crate::observe::status::WatchState;
use crate::redis::{ListedReplica, Role};
use crate::worker::WorkerJob;
use crate::worker::bounded_loss::ConfigureJob;
use std::time::Instant;

impl MonitorCore {
    pub(super) fn on_master_checked(
        &mut self,
        group: &str,
        probe: &Probe,
        started: Instant,
        finished: Instant,
        role: Result<Role>,
    ) {
        let due = probe.due;
        let Some(watch) = self
            .watches
            .get_mut(group)
            .filter(|w| w.watch_id() == probe.watch_id)
        else {
            return;
        };
        let watched = watch.check_returned();
        let ok = matches!(role, Ok(Role::Master { .. }));
        let took = finished.saturating_duration_since(started);
        self.sinks
            .metrics
            .on_check_counted(watch.counts(), took, ok);
        self.mark_link(group, ok, None);
        if !watched {
            return;
        }
        let failure = match role {
            Ok(Role::Master { replicas, offset }) => {
                return self.master_answered(group, due, finished, offset, replicas);
            }
            Ok(Role::Replica { master, state }) => {
                return self.master_is_replica(group, master, state);
            }
            Ok(Role::Other(role)) => {
                let master = self.watches.get(group).map(|w| w.master().to_string());
                format!(
                    "{} reports role {role}, not master",
                    master.unwrap_or_default()
                )
            }
            Err(e) => e.to_string(),
        };
        self.check_failed(group, due, finished, failure);
    }

    /// The master answered as master: the window restarts, its replicas are recorded,
    /// and known replicas it does not list are probed for fencing.
    fn master_answered(
        &mut self,
        group: &str,
        due: Instant,
        finished: Instant,
        offset: i64,
        replicas: Vec<ListedReplica>,
    ) {
        let interval = self.settings.check_interval;
        let acting = self.acting;
        let Some(watch) = self.watches.get_mut(group) else {
            return;
        };
        let watch_id = watch.watch_id();
        let answered = watch.answered(finished, offset, replicas);
        if answered.failures_before > 0 {
            log::info!(
                "group {group}: master {} answers again after {} failed check(s)",
                watch.master(),
                answered.failures_before
            );
        }
        // Only the acting daemon records what it sees in the replicated state, fences
        // (a server's role changed without the cluster's say: only while this daemon
        // still acts, its lease may have run out since the check) and configures.
        let fence = if acting {
            watch.take_fence_targets()
        } else {
            Vec::new()
        };
        let configure = acting && watch.take_configure(self.now.mono);
        let master = watch.master().clone();
        if let (true, Some(known)) = (acting, answered.known_grew) {
            self.outputs.push(Output::Propose(Action::KnownReplicas {
                group: group.to_string(),
                master: master.clone(),
                replicas: known,
            }));
        }
        self.up_again(group);
        if answered.observe_ok {
            let last_ok_ms = self.now.unix_ms(finished);
            self.sinks.observed.update(group, |o| {
                o.state = WatchState::Ok;
                o.failing_since_ms = None;
                o.last_ok_ms = Some(last_ok_ms);
                o.last_error = None;
            });
        }
        if let (true, Some(settings)) = (configure, self.settings.min_replicas) {
            let job = ConfigureJob {
                group: group.to_string(),
                master,
                settings,
            };
            self.send_to_worker(WorkerJob::Configure(job));
        }
        if !fence.is_empty() {
            self.fence_probes(watch_id, fence);
        }
        if answered.refresh {
            self.schedule(self.now.mono, Timer::RefreshReplicas, watch_id);
        }
        self.publish_replicas(group);
        let next = self.next_check(watch_id, due + interval / 2);
        self.schedule(next, Timer::Check, watch_id);
    }

    /// The configured master says it replicates from another server: the group is no
    /// longer watched (a user must say which master is right).
    fn master_is_replica(&mut self, group: &str, master: String, state: String) {
        let Some(watch) = self.watches.get_mut(group) else {
            return;
        };
        log::warn!(
            "group {group}: {} reports role slave of {master} (link {state}), not master; it is no longer watched",
            watch.master()
        );
        watch.stop();
        self.sinks.observed.update(group, |o| {
            o.state = WatchState::NotMaster;
            o.replicating_from = Some(master);
        });
    }

    /// A failed check: suspect until the detector calls the master down.
    fn check_failed(&mut self, group: &str, due: Instant, finished: Instant, failure: String) {
        let interval = self.settings.check_interval;
        let Some(watch) = self.watches.get_mut(group) else {
            return;
        };
        let watch_id = watch.watch_id();
        let verdict = watch.failed(finished);
        let failures = watch.detector().failures_in_a_row();
        if failures == 1 {
            log::warn!("group {group}: check of master failed: {failure}");
        } else {
            log::debug!("group {group}: check {failures} of master failed: {failure}");
        }
        let failing_since = watch
            .detector()
            .first_failure()
            .map(|at| self.now.unix_ms(at));
        let last_ok = self.now.unix_ms(watch.detector().last_success());
        let state = if verdict == Verdict::Down {
            WatchState::Down
        } else {
            WatchState::Suspect
        };
        self.sinks.observed.update(group, |o| {
            if o.failing_since_ms.is_none() {
                // The run of failures begins: the last success is the detector's.
                o.last_ok_ms = Some(last_ok);
            }
            o.state = state;
            o.failing_since_ms = failing_since;
            o.last_error = Some(failure);
        });
        match verdict {
            Verdict::Suspect { recheck_at } => {
                let at = self
                    .next_check(watch_id, due + interval / 2)
                    .min(recheck_at);
                self.schedule(at, Timer::Check, watch_id);
            }
            Verdict::Down => self.on_down(group, due),
        }
    }

    /// Enough daemons find the master down: hand the group to the worker, unless a
    /// pause or the anti-flapping block holds the failover back (see `holds.rs`).
    pub(super) fn declare_down(&mut self, group: &str) {
        if let Some(why) = self.held_back(group) {
            return self.hold_back(group, why);
        }
        let Some(watch) = self.watches.get_mut(group) else {
            return;
        };
        log::error!(
            "group {group}: master {} is down: no successful check for {} ms, {} failed checks in a row",
            watch.master(),
            self.now.since(watch.detector().last_success()).as_millis(),
            watch.detector().failures_in_a_row()
        );
        let master = watch.master().clone();
        let replicas = watch.failover_replicas();
        let request = watch.hand_over_failover(group, replicas, None);
        self.sinks.events.publish(Event::FailoverNeeded {
            group: group.to_string(),
            master,
        });
        self.send_to_worker(WorkerJob::Failover(request));
    }
}
