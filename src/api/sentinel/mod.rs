//! The Sentinel port: enough of Redis Sentinel's protocol that unmodified client
//! libraries discover each group's master through the daemon, and learn of failovers.
//!
//! Every major client (redis-py, Jedis, Lettuce, go-redis, redis-rs) already speaks
//! Sentinel, so after a failover applications find the new master with no change of
//! configuration: point their Sentinel list at the daemons' `sentinel_addr`. The port
//! answers `SENTINEL get-master-addr-by-name / masters / master / replicas / slaves /
//! sentinels / ckquorum / myid / is-master-down-by-addr`, `PING`, `INFO`, `ROLE`,
//! `HELLO`, `AUTH`, `CLIENT ...`, `COMMAND`, and `SUBSCRIBE`/`PSUBSCRIBE` to events such
//! as `+switch-master`. `commands.rs` dispatches; `instances.rs` describes masters,
//! replicas and other daemons with Sentinel's fields and flags (`disconnected`,
//! `s_down`, `o_down`, `failover_in_progress`), which clients such as node-redis read to
//! decide whether a master is usable.
//!
//! The port runs on the connection server (`net/server.rs`): one event-loop thread
//! answers every connection (the commands are cheap reads of the daemon's state) and
//! pushes pub/sub events to subscribers as soon as they are published (each
//! subscription wakes the loop). A malformed request closes that connection only; an
//! unknown command gets an error reply, as Redis does.
//!
//! Bounds: at most [`MAX_CONNECTIONS`] connections. A connection beyond evicts the one
//! idle (or stuck mid-command) the longest, if that is at least [`EVICT_AFTER`], with
//! subscribers evicted last; else it is told `-ERR max number of clients reached` and
//! closed. So idle connections can never lock real clients out. A connection that is
//! neither subscribed nor mid-command is closed after [`IDLE_TIMEOUT`] (five minutes:
//! client libraries that keep a connection open reconnect when they find it closed,
//! as they do with Redis's `timeout`); subscribers are kept, with TCP keepalive to find
//! vanished peers. A command sent halfway must be whole within [`REQUEST_TIMEOUT`].

mod auth_limit;
mod client;
mod commands;
mod instances;
mod protocol;
mod reader;

use super::auth::ApiAccess;
use crate::address::Addr;
use crate::clock::fnv1a;
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::net::server::{Bound, Limits, Running};
use crate::net::tls::Tls;
use crate::shutdown::Shutdown;
use client::{Sentinel, Wake};
use commands::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Connections served at once from one address (a quarter of the cap).
pub const MAX_CONNECTIONS_PER_SOURCE: usize = MAX_CONNECTIONS / 4;
/// A connection neither subscribed nor mid-command is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A command begun must be whole within this long.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Replies (or events) the client does not read close its connection after this long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// At the connection cap, a connection that made no progress for this long may be
/// closed to let a new one in.
pub const EVICT_AFTER: Duration = Duration::from_secs(2);

/// The bounds of the Sentinel port.
pub fn limits() -> Limits {
    Limits {
        max_connections: MAX_CONNECTIONS,
        max_per_source: MAX_CONNECTIONS_PER_SOURCE,
        max_input: protocol::MAX_REQUEST + 1,
        idle_timeout: Some(IDLE_TIMEOUT),
        request_timeout: REQUEST_TIMEOUT,
        write_timeout: WRITE_TIMEOUT,
        evict_after: EVICT_AFTER,
    }
}

/// The running Sentinel listener.
pub struct SentinelPort {
    local_addr: SocketAddr,
    running: Running,
}

impl SentinelPort {
    /// Binds `addr` and serves Sentinel clients from `daemon` until `shutdown`; over
    /// TLS with the current material of `tls`, when given.
    pub fn start(
        addr: &Addr,
        daemon: Arc<Daemon>,
        access: ApiAccess,
        down_after_ms: u64,
        quorum: usize,
        tls: Option<&Arc<Tls>>,
        shutdown: &Shutdown,
    ) -> Result<SentinelPort> {
        let mut bound = Bound::<Wake>::bind(&addr.to_string())
            .map_err(|e| Error::Io(format!("sentinel_addr: cannot listen on {addr}: {e}")))?;
        if let Some(tls) = tls {
            bound = bound.with_transport(tls.server_wrap());
        }
        let local_addr = bound.local_addr();
        let ctx = Arc::new(Context {
            daemon,
            access,
            run_id: run_id(local_addr),
            port: local_addr.port(),
            started: Instant::now(),
            down_after_ms,
            quorum,
        });
        let protocol = Sentinel::new(ctx, bound.remote());
        let running = bound
            .start("sentinel", limits(), protocol, shutdown)
            .map_err(|e| Error::Io(format!("cannot start the sentinel port: {e}")))?;
        let over = if tls.is_some() { " (TLS)" } else { "" };
        log::info!("Sentinel-compatible port listening on {local_addr}{over}");
        Ok(SentinelPort {
            local_addr,
            running,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Joins the port's loop once the shutdown is triggered.
    pub fn join(&mut self) {
        self.running.join();
    }
}

/// A Sentinel run id: 40 hex digits, stable for one listening address.
fn run_id(addr: SocketAddr) -> String {
    let seed = fnv1a(&format!("sentinel {addr} {}", std::process::id()));
    format!(
        "{seed:016x}{:016x}{:08x}",
        seed.rotate_left(17) ^ 0x5a5a,
        seed as u32
    )
}
