//! Bounded write loss, opt-in: Redis's own `min-replicas-to-write` and
//! `min-replicas-max-lag`, set on every master the daemon watches.
//!
//! A master cut off from its replicas keeps taking writes that no replica receives;
//! they are lost when a replica is promoted. With these settings the master refuses
//! writes (`NOREPLICAS`) once fewer than `min_replicas_to_write` replicas have
//! acknowledged within `min_replicas_max_lag` seconds: an isolated master stops taking
//! writes soon after it loses its replicas. The trade-off: a master with no live replica
//! refuses writes too. The acting daemon sets them with `CONFIG SET` on each master it
//! watches, and on each new master after a failover (its watch is new); `CONFIG REWRITE`
//! keeps them across a restart where the server has a config file.

use super::WorkerContext;
use crate::address::Addr;
use crate::config::MinReplicas;

/// A master to configure.
#[derive(Debug, Clone)]
pub struct ConfigureJob {
    pub group: String,
    pub master: Addr,
    pub settings: MinReplicas,
}

/// `CONFIG SET min-replicas-to-write ... min-replicas-max-lag ...` on the master;
/// whether it took.
pub fn run(ctx: &WorkerContext, job: &ConfigureJob) -> bool {
    let result = ctx.servers.bound_write_loss(&job.master, &job.settings);
    match &result {
        Ok(()) => log::info!(
            "group {}: master {} refuses writes unless {} replica(s) acknowledged within {} s",
            job.group,
            job.master,
            job.settings.to_write,
            job.settings.max_lag_secs
        ),
        Err(e) => log::warn!(
            "group {}: cannot bound write loss on {} ({e}); it takes writes without replicas",
            job.group,
            job.master
        ),
    }
    result.is_ok()
}
