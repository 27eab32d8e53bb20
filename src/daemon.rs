//! [`Daemon`]: what the daemon's API surfaces share (the library's [`App`], the HTTP
//! API, the `/metrics` page, the Sentinel port, the systemd status line).
//!
//! It holds handles, not threads: the broker (replicated groups and leadership), this
//! daemon's observations, the counters, the event fan-out, the hooks and the switchover
//! handle. `app.rs` creates it and starts the threads that write to it; the surfaces
//! above only read it and propose changes through the broker.
//!
//! [`App`]: crate::App

use crate::address::{Addr, MasterSpec};
use crate::broker::{Action, Broker, ClusterStatus, GroupSpec, Pause, ReplicatedState, holds};
use crate::error::Result;
use crate::observe::events::Events;
use crate::observe::metrics::Metrics;
use crate::observe::status::{GroupStatus, Observations, WatchState};
use crate::worker::hooks::Hooks;
use crate::worker::manual_failover::ManualFailovers;
use crate::worker::switchover_request::Switchovers;
use std::sync::Arc;
use std::time::Duration;

/// The shared parts of a running daemon.
pub struct Daemon {
    pub broker: Arc<dyn Broker>,
    pub observed: Arc<Observations>,
    pub hooks: Arc<Hooks>,
    /// Counters for `/metrics` and the monitor's heartbeat (for the systemd watchdog).
    pub metrics: Arc<Metrics>,
    /// Sentinel-style events, for the Sentinel port and the notification script.
    pub events: Arc<Events>,
    /// Planned switchovers, run by the monitor and the failover worker.
    pub switchovers: Switchovers,
    /// Failovers asked for by a person.
    pub manual_failovers: ManualFailovers,
    /// The anti-flapping block (`failover_block`), to show which groups it holds.
    pub failover_block: Duration,
}

impl Daemon {
    /// Current master addresses, in group-name order.
    pub fn masters(&self) -> Vec<Addr> {
        self.broker
            .state()
            .groups
            .values()
            .map(|g| g.master.clone())
            .collect()
    }

    /// Watches these groups (or updates them, clearing a failed state).
    pub fn add(&self, specs: Vec<MasterSpec>) -> Result<()> {
        self.broker.propose(Action::Add(
            specs.into_iter().map(GroupSpec::from).collect(),
        ))
    }

    /// Stops watching the groups with these names or master addresses.
    pub fn remove(&self, keys: Vec<String>) -> Result<()> {
        self.broker.propose(Action::Delete(keys))
    }

    /// Watches exactly these groups.
    pub fn set(&self, specs: Vec<MasterSpec>) -> Result<()> {
        self.broker.propose(Action::Set(
            specs.into_iter().map(GroupSpec::from).collect(),
        ))
    }

    /// Pauses automatic failover of `group` (every group when None) for `lasts` (until
    /// resumed when None). Replicated: every daemon, and the next leader, holds it.
    pub fn pause(&self, group: Option<&str>, lasts: Option<Duration>) -> Result<Pause> {
        let since_ms = crate::clock::now_ms();
        let pause = Pause {
            since_ms,
            until_ms: lasts.map(|d| since_ms.saturating_add(d.as_millis() as u64)),
        };
        let group = group.map(|g| self.group_name(g)).transpose()?;
        self.broker.propose(Action::Pause {
            group: group.clone(),
            pause,
        })?;
        let until = lasts.map_or("until resumed".to_string(), |d| {
            format!("for {} s", d.as_secs_f64())
        });
        match group {
            Some(name) => log::warn!("group {name}: automatic failover paused {until}"),
            None => log::warn!("every group: automatic failover paused {until}"),
        }
        Ok(pause)
    }

    /// Ends the pause of `group` (every pause when None).
    pub fn resume(&self, group: Option<&str>) -> Result<()> {
        let group = group.map(|g| self.group_name(g)).transpose()?;
        self.broker.propose(Action::Resume {
            group: group.clone(),
        })?;
        match group {
            Some(name) => log::warn!("group {name}: automatic failover resumed"),
            None => log::warn!("every group: automatic failover resumed"),
        }
        Ok(())
    }

    /// Acknowledges the group's failovers: the anti-flapping block is lifted.
    pub fn acknowledge(&self, group: &str) -> Result<()> {
        let group = self.group_name(group)?;
        let at_ms = crate::clock::now_ms();
        self.broker.propose(Action::Acknowledge {
            group: group.clone(),
            at_ms,
        })?;
        log::warn!("group {group}: failovers acknowledged; the anti-flapping block is lifted");
        Ok(())
    }

    /// The name of the group `key` names (by name or current master), or a 404 reason.
    fn group_name(&self, key: &str) -> Result<String> {
        self.broker
            .state()
            .find(key)
            .ok_or_else(|| crate::invalid_input!("no monitored group {key:?}"))
    }

    /// Every group with what this daemon sees of it.
    pub fn groups(&self) -> Vec<GroupStatus> {
        let tilt = self.metrics.tilt_since_ms().is_some();
        let holds = (self.failover_block, crate::clock::now_ms());
        group_statuses(&self.broker.state(), &self.observed, tilt, holds)
    }

    /// This daemon's view of its cluster.
    pub fn cluster(&self) -> ClusterStatus {
        self.broker.cluster()
    }
}

/// Joins the replicated state with this daemon's observations.
///
/// `failover_block` and the wall clock's `now_ms` say which groups are paused or blocked
/// now (see `broker::holds`); `state` stays what the checks find.
pub fn group_statuses(
    state: &ReplicatedState,
    observed: &Observations,
    tilt: bool,
    (failover_block, now_ms): (Duration, u64),
) -> Vec<GroupStatus> {
    let observed = observed.lock();
    let paused_all = state.paused_all.filter(|p| p.active(now_ms));
    state
        .groups
        .values()
        .map(|group| {
            let seen = observed.get(&group.name).cloned().unwrap_or_default();
            let (watch, reason) = match (&group.failed, seen.state) {
                (Some(reason), _) => (WatchState::Failed, Some(reason.clone())),
                (None, WatchState::NotMaster) => (
                    WatchState::NotMaster,
                    seen.replicating_from
                        .as_ref()
                        .map(|m| format!("reports role slave of {m}; not watched")),
                ),
                (None, other) => (other, None),
            };
            GroupStatus {
                name: group.name.clone(),
                master: group.master.clone(),
                state: watch,
                disconnected: seen.disconnected,
                down_votes: seen.down_votes,
                down_since_ms: seen.failing_since_ms,
                last_ok_ms: seen.last_ok_ms,
                reason,
                last_error: seen.last_error,
                replicas: seen.replicas,
                last_failover: state.last_failover(&group.name).cloned(),
                tilt,
                paused: group.paused.filter(|p| p.active(now_ms)).or(paused_all),
                blocked: holds::blocked(group, failover_block, now_ms),
            }
        })
        .collect()
}
