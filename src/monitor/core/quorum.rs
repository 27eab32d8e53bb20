//! Down for whom: this daemon's own verdict (Sentinel's `s_down`) and the cluster's
//! agreement (`o_down`), from the views the daemons share (see `broker/views.rs`).
//!
//! Every daemon checks every master and tells the others, once a check interval, which
//! masters it finds down. The acting daemon fails a master over only when at least
//! `quorum` daemons, itself included, find it down in views renewed within
//! [`VIEW_MAX_AGE_INTERVALS`] check intervals. Until then the master is `s_down` here
//! and checked on as usual; the failover starts as soon as the quorum is there, at the
//! next check or the next exchange of views, whichever comes first.

use super::watch::Phase;
use super::{MonitorCore, Output, Timer};
use crate::broker::views::{DownMaster, MastersView};
use crate::observe::events::Event;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// A peer's view counts while it was renewed within this many check intervals.
pub const VIEW_MAX_AGE_INTERVALS: u32 = 3;

impl MonitorCore {
    /// The detector finds the master down here (`s_down`): tell subscribers the first
    /// time, fail over when the cluster agrees, else keep checking.
    pub(super) fn on_down(&mut self, group: &str, due: Instant) {
        let interval = self.settings.check_interval;
        let Some(watch) = self.watches.get_mut(group) else {
            return;
        };
        let watch_id = watch.watch_id();
        if self.tilt.is_on() {
            // This daemon's checks cannot be trusted now (see `tilt.rs`): no verdict.
            log::debug!("group {group}: master looks down, but this daemon is in tilt");
            let next = self.next_check(watch_id, due + interval / 2);
            return self.schedule(next, Timer::Check, watch_id);
        }
        if watch.report_down() {
            log::warn!(
                "group {group}: master {} is down as this daemon sees it: no successful check for {} ms, {} failed checks in a row",
                watch.master(),
                self.now.since(watch.detector().last_success()).as_millis(),
                watch.detector().failures_in_a_row()
            );
            self.sinks.events.publish(Event::MasterDown {
                group: group.to_string(),
                master: watch.master().clone(),
            });
        }
        if let Some(why) = watch.failover_off() {
            // Checks and fencing go on; the failover waits for a person.
            log::debug!("group {group}: master is down, and automatic failover is off: {why}");
        } else if self.acting && self.agreed(group) {
            return self.declare_down(group);
        }
        let next = self.next_check(watch_id, due + interval / 2);
        self.schedule(next, Timer::Check, watch_id);
    }

    /// Whether enough daemons find the group's master down; records the count.
    fn agreed(&mut self, group: &str) -> bool {
        let needed = self.needed;
        let views = &self.peer_views;
        let Some(watch) = self.watches.get_mut(group) else {
            return false;
        };
        // One vote per daemon, however many views carry its name (the broker keys them
        // by member: see `broker/views.rs`).
        let peers = views
            .iter()
            .filter(|v| v.finds_down(group, watch.master()))
            .map(|v| v.daemon.as_str())
            .collect::<HashSet<_>>()
            .len();
        let votes = peers + usize::from(watch.detector().is_down(self.now.mono));
        let agreed = votes >= needed;
        if watch.waiting_for(votes, agreed) {
            log::warn!(
                "group {group}: {votes} of the {needed} daemons needed find master {} down; no failover until enough do",
                watch.master()
            );
        }
        agreed
    }

    /// How old a peer's view may be and still count.
    pub(super) fn view_max_age(&self) -> Duration {
        (self.settings.check_interval * VIEW_MAX_AGE_INTERVALS).max(Duration::from_millis(300))
    }

    /// Once a check interval: shares this daemon's view, shows how many daemons find
    /// each master down, and fails over the masters that have just reached the quorum.
    pub(super) fn exchange_views(&mut self) {
        let now = self.now.mono;
        self.view_seq += 1;
        // A daemon in tilt counts no master down (see `tilt.rs`).
        let tilt = self.tilt.is_on();
        let view = MastersView {
            daemon: self.settings.daemon.clone(),
            seq: self.view_seq,
            down: self
                .watches
                .values()
                .filter(|w| !tilt && w.phase() != Phase::Stopped && w.detector().is_down(now))
                .filter_map(|w| {
                    let group = self.by_id.get(&w.watch_id())?;
                    Some(DownMaster {
                        group: group.to_string(),
                        master: w.master().clone(),
                    })
                })
                .collect(),
        };
        self.outputs.push(Output::ShareView(view));
        let views = self.peer_views.clone();
        self.sinks.metrics.set_daemons_reporting(views.len() + 1);
        // The daemons that find each group's master down: each once, however often it
        // lists the group.
        let mut peers: HashMap<&str, HashSet<&str>> = HashMap::new();
        for view in &views {
            for down in &view.down {
                let current = self
                    .watches
                    .get(&down.group)
                    .is_some_and(|w| *w.master() == down.master);
                if current {
                    peers
                        .entry(down.group.as_str())
                        .or_default()
                        .insert(view.daemon.as_str());
                }
            }
        }
        let acting = self.acting;
        let mut ready = Vec::new();
        for (name, watch) in self.watches.iter_mut() {
            let down_here = !tilt && watch.detector().is_down(now);
            let votes = peers.get(name.as_str()).map_or(0, HashSet::len) + usize::from(down_here);
            if watch.set_down_votes(votes) {
                let shown = votes as u32;
                self.sinks.observed.update(name, |o| o.down_votes = shown);
            }
            if acting && down_here && watch.may_fail_over() {
                ready.push(name.clone());
            }
        }
        for group in ready {
            if self.agreed(&group) {
                self.declare_down(&group);
            }
        }
    }

    /// Marks a master seen up again after `s_down` (`-sdown`).
    pub(super) fn up_again(&mut self, group: &str) {
        let Some(watch) = self.watches.get_mut(group) else {
            return;
        };
        if watch.report_up() {
            self.sinks.events.publish(Event::MasterUp {
                group: group.to_string(),
                master: watch.master().clone(),
            });
        }
    }
}
