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
use crate::redis::RedisNode;

/// A master to configure.
#[derive(Debug, Clone)]
pub struct ConfigureJob {
    pub group: String,
    pub master: Addr,
    pub settings: MinReplicas,
}

/// `CONFIG SET min-replicas-to-write ... min-replicas-max-lag ...` on the master.
pub fn run(ctx: &WorkerContext, job: &ConfigureJob) {
    let mut node = RedisNode::new(job.master.clone(), ctx.node_options.clone());
    let to_write = job.settings.to_write.to_string();
    let max_lag = job.settings.max_lag_secs.to_string();
    let set = node.call(&[
        "CONFIG",
        "SET",
        "min-replicas-to-write",
        &to_write,
        "min-replicas-max-lag",
        &max_lag,
    ]);
    match set {
        Ok(_) => {
            log::info!(
                "group {}: master {} refuses writes unless {to_write} replica(s) acknowledged within {max_lag} s",
                job.group,
                job.master
            );
            if let Err(e) = node.config_rewrite() {
                log::debug!("{}: CONFIG REWRITE: {e}", job.master);
            }
        }
        Err(e) => log::warn!(
            "group {}: cannot bound write loss on {} ({e}); it takes writes without replicas",
            job.group,
            job.master
        ),
    }
}
