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
use crate::broker::{Action, Broker, ClusterStatus, GroupSpec, ReplicatedState};
use crate::error::Result;
use crate::observe::events::Events;
use crate::observe::metrics::Metrics;
use crate::observe::status::{GroupStatus, Observations, WatchState};
use crate::worker::hooks::Hooks;
use crate::worker::switchover_request::Switchovers;
use std::sync::Arc;

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

    /// Every group with what this daemon sees of it.
    pub fn groups(&self) -> Vec<GroupStatus> {
        let tilt = self.metrics.tilt_since_ms().is_some();
        group_statuses(&self.broker.state(), &self.observed, tilt)
    }

    /// This daemon's view of its cluster.
    pub fn cluster(&self) -> ClusterStatus {
        self.broker.cluster()
    }
}

/// Joins the replicated state with this daemon's observations.
pub fn group_statuses(
    state: &ReplicatedState,
    observed: &Observations,
    tilt: bool,
) -> Vec<GroupStatus> {
    let observed = observed.lock();
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
            }
        })
        .collect()
}
