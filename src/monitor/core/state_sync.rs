//! The monitor's watches kept in line with the broker's replicated state: a watch made
//! for each new group (or a group whose master changed), dropped for a removed one,
//! subscribers told when a failover moved a master, and failovers an earlier leader
//! began finished by this one.

use super::watch::{Phase, Watch};
use super::{MonitorCore, Output, Timer};
use crate::address::Addr;
use crate::broker::{Action, Group, Outcome, ReplicatedState};
use crate::observe::events::Event;
use crate::redis::ListedReplica;
use crate::worker::WorkerJob;
use crate::worker::failover::Resume;

use std::sync::Arc;

impl MonitorCore {
    /// Brings the watches in line with the broker's groups: a new watch for a new group
    /// or a new master, none for a removed group, and (when acting) the failovers an
    /// earlier leader left unfinished taken up.
    pub(super) fn sync_groups(&mut self, state: &ReplicatedState) {
        // Watches whose group is still there, counted on the way: only when some are
        // not is there anything to drop (no search through the groups by name).
        let watched_before = self.watches.len();
        let mut kept = 0;
        for group in state.groups.values() {
            let mut switched_from = None;
            let existing = self.watches.get_mut(&group.name);
            kept += usize::from(existing.is_some());
            let fresh = match existing {
                None => true,
                Some(w) if w.phase() == Phase::FailingOver => false,
                Some(w) if w.revision() != group.revision => {
                    if *w.master() != group.master {
                        switched_from = Some(w.master().clone());
                    }
                    true
                }
                Some(w) => {
                    w.follow_state(group);
                    false
                }
            };
            if let Some(old) = switched_from {
                self.announce_switch(state, group, &old);
            }
            if fresh {
                self.watch(group);
            }
        }
        if kept < watched_before {
            self.drop_removed(state);
        }
        if self.acting {
            self.resume_unfinished(state);
        }
    }

    /// Stops watching the groups that are no longer in the replicated state.
    fn drop_removed(&mut self, state: &ReplicatedState) {
        let removed: Vec<String> = self
            .watches
            .keys()
            .filter(|name| !state.groups.contains_key(*name))
            .cloned()
            .collect();
        for name in removed {
            log::info!("group {name}: no longer monitored");
            if let Some(watch) = self.watches.remove(&name) {
                self.forget(watch.watch_id());
            }
            self.sinks.observed.lock().remove(&name);
        }
    }

    /// Every daemon tells its subscribers when a failover moved a group's master, from
    /// the replicated state: a follower announces it as soon as it applies the change.
    fn announce_switch(&self, state: &ReplicatedState, group: &Group, old: &Addr) {
        let by_failover = state.last_failover(&group.name).is_some_and(|r| {
            r.outcome == Outcome::Succeeded
                && r.old_master == *old
                && r.new_master.as_ref() == Some(&group.master)
        });
        if by_failover {
            self.sinks.events.publish(Event::SwitchMaster {
                group: group.name.clone(),
                old: old.clone(),
                new: group.master.clone(),
                performed_here: self.acting,
            });
        }
    }

    /// A new leader finishes the failovers an earlier one began and did not end.
    fn resume_unfinished(&mut self, state: &ReplicatedState) {
        for (name, begun) in &state.in_progress {
            let Action::FailoverBegin {
                old_master,
                new_master,
                replicas,
                started_at_ms,
                ..
            } = begun
            else {
                continue;
            };
            let Some(watch) = self.watches.get_mut(name) else {
                continue;
            };
            // Our own failover under way, or a master changed since: nothing to finish.
            if watch.phase() == Phase::FailingOver || watch.master() != old_master {
                continue;
            }
            log::warn!(
                "group {name}: failover to {new_master} was begun by an earlier leader and not ended; finishing it"
            );
            let resume = Resume {
                new_master: new_master.clone(),
                started_at_ms: *started_at_ms,
            };
            let request = watch.hand_over_failover(name, replicas.clone(), Some(resume));
            self.send_to_worker(WorkerJob::Failover(request));
        }
    }

    pub(super) fn watch(&mut self, group: &Group) {
        let now = self.now.mono;
        // Same master (a failed group added again): keep the replicas it listed, so a
        // master that is still down can be failed over without a fresh ROLE reply.
        // Else start from the replicas recorded in the replicated state: a daemon that
        // takes over can then fail over a master it never saw alive.
        let listed = self
            .watches
            .get(&group.name)
            .filter(|w| *w.master() == group.master)
            .map(|w| w.listed().to_vec())
            .unwrap_or_else(|| {
                group
                    .known_replicas
                    .iter()
                    .map(|addr| ListedReplica {
                        addr: addr.clone(),
                        offset: 0,
                    })
                    .collect()
            });
        let watch_id = self.next_watch_id;
        self.next_watch_id += 1;
        if let Some(old) = self.watches.get(&group.name).map(|w| w.watch_id()) {
            self.forget(old);
        }
        self.by_id.insert(watch_id, Arc::from(group.name.as_str()));
        match &group.failed {
            Some(why) => log::info!(
                "group {}: watching master {}; automatic failover is off: {why}",
                group.name,
                group.master
            ),
            None => log::info!("group {}: watching master {}", group.name, group.master),
        }
        let counts = self.sinks.metrics.check_counts(&group.name);
        let max_down_time = self.settings.max_down_time;
        let watch = Watch::new(group, watch_id, listed, counts, max_down_time, now);
        self.watches.insert(group.name.clone(), Box::new(watch));
        self.sinks.observed.update(&group.name, |o| {
            *o = Default::default();
        });
        let first = self.next_check(watch_id, now);
        self.schedule(first, Timer::Check, watch_id);
    }

    /// A watch ended: its id no longer names a group, and its connections close.
    pub(super) fn forget(&mut self, watch_id: u64) {
        self.by_id.remove(&watch_id);
        self.outputs.push(Output::Forget(watch_id));
    }
}
