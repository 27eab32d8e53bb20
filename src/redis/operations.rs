//! What the failover path does to servers: read every replica's `INFO` at once, promote
//! one with `SLAVEOF NO ONE` (LedisDB has no `REPLICAOF`), re-point the others.
//!
//! Each function opens its own connections with the given options, so a slow server
//! costs only its own timeout, and reports failures as values for the attempt's record.

use super::node::{NodeOptions, RedisNode};
use super::replies::{ReplicationInfo, Role};
use super::resp::Reply;
use crate::address::Addr;
use crate::error::{Error, Result};
use std::time::{Duration, Instant};

/// The longest a promoted replica may take before `ROLE` says master. The worker waits
/// less when the down window is short (`worker/promotion.rs` derives the timeout it
/// passes to [`promote`] from `max_down_time`); this bounds it, and the write pause of a
/// switchover counts on it.
pub const PROMOTION_TIMEOUT: Duration = Duration::from_secs(10);
/// A replica's answer to `INFO`, or why there was none.
#[derive(Debug, Clone)]
pub struct ReplicaReport {
    pub addr: Addr,
    pub info: Result<ReplicationInfo>,
}

/// `INFO` on every replica at once, each with its own timeouts.
pub fn ask_replicas(replicas: &[Addr], options: &NodeOptions) -> Vec<ReplicaReport> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = replicas
            .iter()
            .map(|addr| {
                scope.spawn(move || ReplicaReport {
                    addr: addr.clone(),
                    info: RedisNode::new(addr.clone(), options.clone()).replication_info(),
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(replicas)
            .map(|(h, addr)| {
                h.join().unwrap_or_else(|_| ReplicaReport {
                    addr: addr.clone(),
                    info: Err(Error::Server(format!("{addr}: INFO thread panicked"))),
                })
            })
            .collect()
    })
}

/// `SLAVEOF NO ONE`, then poll `ROLE` until it says master, for at most `timeout`.
///
/// A server that answers `SLAVEOF NO ONE` with an error refused it: unless its `ROLE`
/// says master all the same, that is an error at once, with no polling. A lost reply
/// (timeout, closed connection) may hide a promotion that worked, so `ROLE` decides.
pub fn promote(addr: &Addr, options: &NodeOptions, timeout: Duration) -> Result<()> {
    let mut node = RedisNode::new(addr.clone(), options.clone());
    let deadline = Instant::now() + timeout;
    match node.pipeline_raw(&[&["SLAVEOF", "NO", "ONE"]]) {
        Ok(replies) => {
            if let Some(Reply::Error(refusal)) = replies.first() {
                return match node.role() {
                    Ok(Role::Master { .. }) => finish_promotion(&mut node, addr),
                    _ => Err(Error::Server(format!(
                        "{addr}: refused SLAVEOF NO ONE: {refusal}"
                    ))),
                };
            }
        }
        Err(e) => log::warn!("{addr}: SLAVEOF NO ONE: {e}; checking ROLE before giving up"),
    }
    loop {
        let last = match node.role() {
            Ok(Role::Master { .. }) => break,
            Ok(other) => format!("{other:?}"),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(Error::Server(format!(
                "{addr}: ROLE still not master after {} ms: {last}",
                timeout.as_millis()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    finish_promotion(&mut node, addr)
}

/// `CONFIG REWRITE` after a promotion, as best effort.
fn finish_promotion(node: &mut RedisNode, addr: &Addr) -> Result<()> {
    if let Err(e) = node.config_rewrite() {
        log::debug!("{addr}: CONFIG REWRITE after promotion: {e}");
    }
    Ok(())
}

/// `SLAVEOF new_master` on every replica at once; returns the failures.
pub fn repoint(replicas: &[Addr], new_master: &Addr, options: &NodeOptions) -> Vec<String> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = replicas
            .iter()
            .map(|addr| {
                scope.spawn(move || {
                    let mut node = RedisNode::new(addr.clone(), options.clone());
                    node.slave_of(Some(new_master))?;
                    if let Err(e) = node.config_rewrite() {
                        log::debug!("{addr}: CONFIG REWRITE after SLAVEOF: {e}");
                    }
                    Ok::<(), Error>(())
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(replicas)
            .filter_map(|(h, addr)| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("{addr}: SLAVEOF thread panicked")),
            })
            .collect()
    })
}
