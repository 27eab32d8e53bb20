//! [`Servers`]: everything the failover worker's failover, promotion, fencing and
//! bounded-loss steps do to servers, behind one narrow trait.
//!
//! It exists so that those steps can run against real servers ([`RedisServers`]) or
//! against simulated ones: a deterministic simulation drives the real failover code
//! with fake servers and a fake [`Clock`](crate::clock::Clock). So the trait holds I/O
//! only, one command (or one round of commands) per call; the sequences around it (the
//! promotion's deadline and `ROLE` polling, what counts as promoted, the election) are
//! the worker's, and a fake never has to reimplement them.
//!
//! The planned switchover (`switchover.rs`) uses it too, with the steps only it has
//! (`CLIENT PAUSE`, `CLIENT UNPAUSE`, the old master's demotion).

use crate::address::Addr;
use crate::config::MinReplicas;
use crate::error::{Error, Result};
use crate::redis::{NodeOptions, RedisNode, ReplicaReport, Reply, Role};

/// What the worker does to servers. Each call opens its own connections, so a slow
/// server costs only its own timeout.
pub trait Servers: Send + Sync {
    /// `INFO server` and `INFO replication` on every address at once: one report per
    /// address, in the order given.
    fn infos(&self, addrs: &[Addr]) -> Vec<ReplicaReport>;

    /// `ROLE`.
    fn role(&self, addr: &Addr) -> Result<Role>;

    /// `SLAVEOF NO ONE`, once: how the server answered. Whether it became master is
    /// for the caller to find out with [`Servers::role`].
    fn promote_once(&self, addr: &Addr) -> PromoteReply;

    /// Best effort, once `addr` reports master after a promotion: keeps its new role
    /// across a restart (real servers: `CONFIG REWRITE`, whose failure is only logged).
    /// A simulation may leave it out.
    fn keep_promotion(&self, addr: &Addr) {
        let _ = addr;
    }

    /// `SLAVEOF <to>` on every address at once (and keeps it across a restart, as best
    /// effort); returns the failures, each naming its address.
    fn repoint(&self, addrs: &[Addr], to: &Addr) -> Vec<String>;

    /// Fencing: makes `addr`, which claims master, a replica of `master`, discarding
    /// what it holds (LedisDB must be told `RESTART`; see [`RedisNode::follow_afresh`]).
    fn follow_afresh(&self, addr: &Addr, master: &Addr) -> Result<()>;

    /// Bounded write loss: sets `min-replicas-to-write` and `min-replicas-max-lag` on a
    /// master (and keeps them across a restart, as best effort).
    fn bound_write_loss(&self, master: &Addr, settings: &MinReplicas) -> Result<()>;

    /// A switchover's pause: `CLIENT PAUSE <ms> WRITE` on the old master. `Ok(Err(text))`
    /// when the server refused it (before Redis 6.2), `Err` when it did not answer.
    fn pause_writes(&self, master: &Addr, ms: u64) -> Result<std::result::Result<(), String>>;

    /// `CLIENT UNPAUSE`: writes resume on the old master.
    fn unpause_writes(&self, master: &Addr) -> Result<()>;

    /// A switchover's demotion: `SLAVEOF <to>` on the old master, tried once more on
    /// failure (and kept across a restart, as best effort).
    fn demote(&self, master: &Addr, to: &Addr) -> Result<()>;
}

/// How a server answered `SLAVEOF NO ONE`.
#[derive(Debug)]
pub enum PromoteReply {
    /// It said OK.
    Accepted,
    /// It answered with an error: the server's text.
    Refused(String),
    /// No answer (unreachable, timed out, connection closed): it may or may not have
    /// been promoted.
    NoReply(Error),
}

/// The real servers, spoken to with the worker's connection options.
pub struct RedisServers {
    options: NodeOptions,
}

impl RedisServers {
    pub fn new(options: NodeOptions) -> RedisServers {
        RedisServers { options }
    }

    fn node(&self, addr: &Addr) -> RedisNode {
        RedisNode::new(addr.clone(), self.options.clone())
    }
}

impl Servers for RedisServers {
    fn infos(&self, addrs: &[Addr]) -> Vec<ReplicaReport> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = addrs
                .iter()
                .map(|addr| {
                    scope.spawn(move || ReplicaReport {
                        addr: addr.clone(),
                        info: self.node(addr).replication_info(),
                    })
                })
                .collect();
            handles
                .into_iter()
                .zip(addrs)
                .map(|(h, addr)| {
                    h.join().unwrap_or_else(|_| ReplicaReport {
                        addr: addr.clone(),
                        info: Err(Error::Server(format!("{addr}: INFO thread panicked"))),
                    })
                })
                .collect()
        })
    }

    fn role(&self, addr: &Addr) -> Result<Role> {
        self.node(addr).role()
    }

    fn promote_once(&self, addr: &Addr) -> PromoteReply {
        match self.node(addr).pipeline_raw(&[&["SLAVEOF", "NO", "ONE"]]) {
            Ok(replies) => match replies.into_iter().next() {
                Some(Reply::Error(refusal)) => PromoteReply::Refused(refusal),
                _ => PromoteReply::Accepted,
            },
            Err(e) => PromoteReply::NoReply(e),
        }
    }

    fn keep_promotion(&self, addr: &Addr) {
        if let Err(e) = self.node(addr).config_rewrite() {
            log::debug!("{addr}: CONFIG REWRITE after promotion: {e}");
        }
    }

    fn repoint(&self, addrs: &[Addr], to: &Addr) -> Vec<String> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = addrs
                .iter()
                .map(|addr| {
                    scope.spawn(move || {
                        let mut node = self.node(addr);
                        node.slave_of(Some(to))?;
                        if let Err(e) = node.config_rewrite() {
                            log::debug!("{addr}: CONFIG REWRITE after SLAVEOF: {e}");
                        }
                        Ok::<(), Error>(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .zip(addrs)
                .filter_map(|(h, addr)| match h.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some(format!("{addr}: SLAVEOF thread panicked")),
                })
                .collect()
        })
    }

    fn follow_afresh(&self, addr: &Addr, master: &Addr) -> Result<()> {
        let mut node = self.node(addr);
        // LedisDB must drop its own log to follow (see `RedisNode::follow_afresh`).
        let ledisdb = node
            .replication_info()
            .is_ok_and(|info| info.ledisdb_version.is_some());
        node.follow_afresh(master, ledisdb)
    }

    fn pause_writes(&self, master: &Addr, ms: u64) -> Result<std::result::Result<(), String>> {
        let ms = ms.to_string();
        let replies = self
            .node(master)
            .pipeline_raw(&[&["CLIENT", "PAUSE", &ms, "WRITE"]])?;
        Ok(match replies.into_iter().next() {
            Some(Reply::Error(refusal)) => Err(refusal),
            _ => Ok(()),
        })
    }

    fn unpause_writes(&self, master: &Addr) -> Result<()> {
        self.node(master).call(&["CLIENT", "UNPAUSE"]).map(|_| ())
    }

    fn demote(&self, master: &Addr, to: &Addr) -> Result<()> {
        let mut node = self.node(master);
        if let Err(first) = node.slave_of(Some(to)) {
            log::warn!("{master}: SLAVEOF {to}: {first}; trying once more");
            node = self.node(master);
            node.slave_of(Some(to))?;
        }
        if let Err(e) = node.config_rewrite() {
            log::debug!("{master}: CONFIG REWRITE after SLAVEOF: {e}");
        }
        Ok(())
    }

    fn bound_write_loss(&self, master: &Addr, settings: &MinReplicas) -> Result<()> {
        let mut node = self.node(master);
        let to_write = settings.to_write.to_string();
        let max_lag = settings.max_lag_secs.to_string();
        node.call(&[
            "CONFIG",
            "SET",
            "min-replicas-to-write",
            &to_write,
            "min-replicas-max-lag",
            &max_lag,
        ])?;
        if let Err(e) = node.config_rewrite() {
            log::debug!("{master}: CONFIG REWRITE: {e}");
        }
        Ok(())
    }
}
