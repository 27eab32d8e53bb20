//! The Sentinel port: enough of Redis Sentinel's protocol that unmodified client
//! libraries discover each group's master through the daemon, and learn of failovers.
//!
//! Every major client (redis-py, Jedis, Lettuce, go-redis, redis-rs) already speaks
//! Sentinel, so after a failover applications find the new master with no change of
//! configuration: point their Sentinel list at the daemons' `sentinel_addr`. The port
//! answers `SENTINEL get-master-addr-by-name / masters / master / replicas / slaves /
//! sentinels / ckquorum / myid`, `PING`, `INFO`, `ROLE`, `HELLO`, `AUTH`, `CLIENT ...`,
//! `COMMAND`, and `SUBSCRIBE`/`PSUBSCRIBE` to events such as `+switch-master`.
//!
//! One thread per connection, like the HTTP API: Sentinel clients keep a few long-lived
//! connections. A malformed request closes that connection only; an unknown command gets
//! an error reply, as Redis does.

mod client;
mod commands;
mod protocol;

use super::auth::ApiAccess;
use crate::address::Addr;
use crate::clock::fnv1a;
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::sync::lock;
use client::Client;
use commands::Context;
use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connections served at once; more are refused with an error reply.
pub const MAX_CONNECTIONS: usize = 1024;
/// Open connections by serial number, so a shutdown can close them all.
type Connections = Arc<Mutex<HashMap<u64, TcpStream>>>;

/// The running Sentinel listener.
pub struct SentinelPort {
    local_addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl SentinelPort {
    /// Binds `addr` and serves Sentinel clients from `daemon` until `shutdown`.
    pub fn start(
        addr: &Addr,
        daemon: Arc<Daemon>,
        access: ApiAccess,
        down_after_ms: u64,
        shutdown: &Shutdown,
    ) -> Result<SentinelPort> {
        let listener = TcpListener::bind(addr.to_string())
            .map_err(|e| Error::Io(format!("sentinel_addr: cannot listen on {addr}: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Io(format!("sentinel_addr: {e}")))?;
        let ctx = Arc::new(Context {
            daemon,
            access,
            run_id: run_id(local_addr),
            port: local_addr.port(),
            started: Instant::now(),
            down_after_ms,
        });
        let connections: Connections = Arc::default();
        // A shutdown wakes the acceptor with a connection of its own and closes every
        // client's connection, which ends its thread.
        let open = connections.clone();
        shutdown.on_trigger(move || {
            let _ = TcpStream::connect_timeout(&local_addr, Duration::from_millis(500));
            for (_, stream) in lock(&open).drain() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        let acceptor = {
            let shutdown = shutdown.clone();
            std::thread::Builder::new()
                .name("sentinel-accept".into())
                .spawn(move || accept(listener, ctx, shutdown, connections))
                .map_err(|e| Error::Io(format!("cannot start the sentinel listener: {e}")))?
        };
        log::info!("Sentinel-compatible port listening on {local_addr}");
        Ok(SentinelPort {
            local_addr,
            acceptor: Some(acceptor),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Joins the listener and the connection threads once the shutdown is triggered.
    pub fn join(&mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
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

fn accept(listener: TcpListener, ctx: Arc<Context>, shutdown: Shutdown, connections: Connections) {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut serial = 0u64;
    for stream in listener.incoming() {
        if shutdown.is_triggered() {
            break;
        }
        let Ok(mut stream) = stream else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        threads.retain(|t| !t.is_finished());
        if threads.len() >= MAX_CONNECTIONS {
            let _ = stream.write_all(b"-ERR max number of clients reached\r\n");
            continue;
        }
        serial += 1;
        crate::net::keep_alive(&stream);
        if let Ok(clone) = stream.try_clone() {
            lock(&connections).insert(serial, clone);
        }
        let client = Client::new(ctx.clone(), serial, connections.clone());
        match std::thread::Builder::new()
            .name("sentinel-conn".into())
            .spawn(move || client.serve(stream))
        {
            Ok(thread) => threads.push(thread),
            Err(e) => log::error!("sentinel: cannot start a connection thread: {e}"),
        }
    }
    for (_, stream) in lock(&connections).drain() {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    for thread in threads {
        let _ = thread.join();
    }
}
