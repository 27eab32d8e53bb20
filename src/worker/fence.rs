//! Fencing: a server that should be a replica of the group's master but claims to be
//! master itself (an old master back after a failover, a known replica missing from the
//! master's list) is made a replica of the current master, as Sentinel's
//! `+convert-to-slave` does. Never let two masters of one group take writes for long.
//!
//! The monitor finds the candidates (known replicas the master does not list) and hands
//! them here, so that only the worker ever changes a server's role.

use super::WorkerContext;
use crate::address::Addr;
use crate::redis::Role;

/// Servers to look at, and the master they should follow.
#[derive(Debug, Clone)]
pub struct FenceJob {
    pub group: String,
    /// The monitor's watch that asked (results for an older watch are ignored).
    pub watch_id: u64,
    pub master: Addr,
    pub targets: Vec<Addr>,
}

/// What fencing found at one address.
#[derive(Debug)]
pub enum FenceResult {
    /// It claimed to be master and now replicates from the group's master.
    Converted,
    /// It is a replica (of whatever it names), or not a data node: left alone.
    NotMaster,
    /// It does not answer (still down); tried again later.
    Unreachable(String),
    /// It claims master and `SLAVEOF` failed.
    Failed(String),
}

/// `ROLE` on each target; any that claims master gets `SLAVEOF <master>` (with
/// `RESTART` on LedisDB: [`Servers::follow_afresh`](super::Servers::follow_afresh)). Only while
/// this daemon acts: fencing changes a server's role without the cluster's say.
pub fn run(ctx: &WorkerContext, job: &FenceJob) -> Vec<(Addr, FenceResult)> {
    if !ctx.broker.is_acting() {
        return Vec::new();
    }
    job.targets
        .iter()
        .map(|addr| {
            let result = match ctx.servers.role(addr) {
                Err(e) => FenceResult::Unreachable(e.to_string()),
                Ok(Role::Master { .. }) => match ctx.servers.follow_afresh(addr, &job.master) {
                    Ok(()) => FenceResult::Converted,
                    Err(e) => FenceResult::Failed(e.to_string()),
                },
                Ok(_) => FenceResult::NotMaster,
            };
            (addr.clone(), result)
        })
        .collect()
}
