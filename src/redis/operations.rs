//! What the failover path does to servers: read every replica's `INFO` at once, promote
//! one with `SLAVEOF NO ONE` (LedisDB has no `REPLICAOF`), re-point the others.
//!
//! Each function opens its own connections with the given options, so a slow server
//! costs only its own timeout, and reports failures as values for the attempt's record.

use super::node::{NodeOptions, RedisNode};
use super::replies::{ReplicationInfo, Role};
use crate::address::Addr;
use crate::error::{Error, Result};
use std::time::{Duration, Instant};

/// How long a promoted replica may take before `ROLE` says master.
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

/// `SLAVEOF NO ONE`, then poll `ROLE` until it says master.
pub fn promote(addr: &Addr, options: &NodeOptions) -> Result<()> {
    let mut node = RedisNode::new(addr.clone(), options.clone());
    // A SLAVEOF whose reply was lost may still have worked: ROLE decides.
    if let Err(e) = node.slave_of(None) {
        log::warn!("{addr}: SLAVEOF NO ONE: {e}; checking ROLE before giving up");
    }
    let deadline = Instant::now() + PROMOTION_TIMEOUT;
    loop {
        let last = match node.role() {
            Ok(Role::Master { .. }) => break,
            Ok(other) => format!("{other:?}"),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(Error::Server(format!(
                "{addr}: ROLE still not master after {} s: {last}",
                PROMOTION_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
