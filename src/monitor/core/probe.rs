//! What the monitor asks of servers and what comes back: [`Probe`]s the core hands out
//! and the [`CheckerReport`]s the checker threads (or a simulator) answer with. Plain
//! data, shared by the decisions (`core/`) and the I/O (`checker/`), so that neither
//! depends on the other.

use crate::address::Addr;
use crate::error::Result;
use crate::redis::{ReplicationInfo, Role};
use std::time::{Duration, Instant};

/// The channel the beacons are published on (Sentinel uses `__sentinel__:hello`).
pub const BEACON_CHANNEL: &str = "__redis-failover__:beacon";

/// What a probe asks a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// A master check: `ROLE`, with a beacon (`PUBLISH` on [`BEACON_CHANNEL`]) that the
    /// master replicates, so its replicas' last I/O shows that it lives (see
    /// `redis::master_seen_alive`). A server that refuses the beacon gets `ROLE` alone.
    Master,
    /// `ROLE` alone: a look at a server fencing may have to convert.
    Role,
    /// `INFO server` and `INFO replication`: a replica's view of its replication.
    Info,
}

/// One check of one server, due at `due`.
#[derive(Debug, Clone)]
pub struct Probe {
    pub watch_id: u64,
    pub addr: Addr,
    pub kind: ProbeKind,
    /// When the monitor wanted it to run (for the check-lag histogram).
    pub due: Instant,
}

/// What a server answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Role(Role),
    Info(ReplicationInfo),
}

/// The outcome of one probe.
#[derive(Debug)]
pub struct ProbeResult {
    pub probe: Probe,
    /// When the probe was sent (or its connect started).
    pub started: Instant,
    pub finished: Instant,
    pub answer: Result<Answer>,
}

/// A kept connection that the server closed (or broke) between two probes.
#[derive(Debug, Clone)]
pub struct LinkClosed {
    pub watch_id: u64,
    pub addr: Addr,
    pub why: String,
}

/// What one turn of a checker thread's loop produced.
#[derive(Debug, Default)]
pub struct CheckerReport {
    pub results: Vec<ProbeResult>,
    pub closed: Vec<LinkClosed>,
    /// The most the thread ran late in one turn since its last report (see `shard.rs`).
    pub late: Duration,
}

impl CheckerReport {
    pub fn is_empty(&self) -> bool {
        self.results.is_empty() && self.closed.is_empty() && self.late.is_zero()
    }
}
