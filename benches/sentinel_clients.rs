//! How soon a real client writes again after its master dies, when it finds masters
//! through Sentinel: redis-py's `redis.sentinel.Sentinel` and node-redis v5's
//! `createSentinel`, each pointed at the daemon's Sentinel-compatible port and at
//! `redis-server --sentinel`. Run with `cargo bench --bench sentinel_clients`.
//!
//! Each round starts a master with two replicas and the watcher (the daemon with
//! `-check_interval=100 -max_down_time=1 -sentinel_addr=...`, or one Sentinel with
//! quorum 1 and `down-after-milliseconds 1000`). The client process discovers the
//! master through the watcher, writes, kills the master with `kill -9` itself and keeps
//! writing through the same client object, retrying every 10 ms, until a write succeeds.
//! It prints the time from the kill to that write. redis-py's script is below;
//! node-redis's is `tests/node/failover.js` (installed by `test-cluster/install-deps.sh`;
//! skipped when Node.js is missing). The bench prints per-round figures and the median,
//! and asserts nothing.
//!
//! Knobs: `BENCH_ROUNDS` (5), `BENCH_CLIENTS` (`redis-py,node-redis`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Duration;
use support::node::{Availability, availability, run_failover};
use support::{Daemon, RedisServer, Sentinel, free_port, wait_until};

const GROUP: &str = "bench";

/// The client: prints `ms <kill-to-write ms> tries <failed writes> on <port>`.
const CLIENT: &str = r#"
import os, sys, time
from redis.sentinel import Sentinel
port, master_pid = int(sys.argv[1]), int(sys.argv[2])
sentinel = Sentinel([("127.0.0.1", port)], socket_timeout=0.3)
master = sentinel.master_for("bench", socket_timeout=0.3, socket_connect_timeout=0.3)
for i in range(50):
    master.set("k", i)
old = sentinel.discover_master("bench")
os.kill(master_pid, 9)
killed = time.monotonic()
tries = 0
while time.monotonic() - killed < 30:
    try:
        master.set("k", "after")
        break
    except Exception:
        tries += 1
        time.sleep(0.01)
else:
    sys.exit("no write within 30 s")
ms = (time.monotonic() - killed) * 1000
new = sentinel.discover_master("bench")
print("ms %.0f tries %d from %d to %d" % (ms, tries, old[1], new[1]))
"#;

fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5usize)
        .max(1)
}

/// A Sentinel client library, run in its own process.
#[derive(Clone, Copy, PartialEq)]
enum Client {
    RedisPy,
    NodeRedis,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::RedisPy => "redis-py",
            Client::NodeRedis => "node-redis",
        }
    }

    /// One round against whatever listens on `watcher_port`: ms and the client's line.
    fn round(self, watcher_port: u16, master: &RedisServer) -> Result<(f64, String), String> {
        match self {
            Client::RedisPy => redis_py_round(watcher_port, master),
            Client::NodeRedis => {
                let pid = master.pid().ok_or("no master pid")?;
                let run = run_failover(watcher_port, GROUP, pid, 30_000)?;
                Ok((run.ms, run.line))
            }
        }
    }
}

/// The clients to run: `BENCH_CLIENTS`, without node-redis when Node.js is missing.
fn clients() -> Vec<Client> {
    let wanted = std::env::var("BENCH_CLIENTS").unwrap_or_else(|_| "redis-py,node-redis".into());
    let mut clients = Vec::new();
    for client in [Client::RedisPy, Client::NodeRedis] {
        if !wanted.split(',').any(|w| w.trim() == client.name()) {
            continue;
        }
        if client == Client::NodeRedis {
            match availability() {
                Availability::Ready => {}
                Availability::NoNode(why) | Availability::NoPackage(why) => {
                    println!("node-redis skipped: {why}");
                    continue;
                }
            }
        }
        clients.push(client);
    }
    clients
}

/// One redis-py round; returns the client's line.
fn redis_py_round(watcher_port: u16, master: &RedisServer) -> Result<(f64, String), String> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(CLIENT)
        .arg(watcher_port.to_string())
        .arg(master.pid().ok_or("no master pid")?.to_string())
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        return Err(format!(
            "client failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    let ms = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or(format!("odd output {text:?}"))?;
    Ok((ms, text))
}

fn topology() -> (RedisServer, RedisServer, RedisServer) {
    let master = RedisServer::master();
    let a = RedisServer::replica_of(master.port, 100);
    let b = RedisServer::replica_of(master.port, 100);
    master.wait_for_replicas(2);
    (master, a, b)
}

fn ours(client: Client) -> Result<(f64, String), String> {
    let (master, _a, _b) = topology();
    let port = free_port();
    let daemon = Daemon::start(&[
        &format!("-masters={GROUP}={}", master.addr()),
        &format!("-sentinel_addr=127.0.0.1:{port}"),
        "-check_interval=100",
        "-max_down_time=1",
    ]);
    daemon.wait_group_ok(GROUP, 2);
    client.round(port, &master)
}

fn sentinel(client: Client) -> Result<(f64, String), String> {
    let (master, _a, _b) = topology();
    let sentinel = Sentinel::start(master.port, GROUP, 1000, 1);
    wait_until(
        Duration::from_secs(30),
        "Sentinel to see 2 replicas",
        || {
            let reply = support::redis_cmd(sentinel.port, &["SENTINEL", "replicas", GROUP])?;
            let text = format!("{reply:?}");
            (text.matches("master-link-status").count() == 2 && !text.contains("\"err\""))
                .then_some(())
                .ok_or(text)
        },
    );
    client.round(sentinel.port, &master)
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    Some(values[values.len() / 2])
}

fn main() {
    let n = rounds();
    println!(
        "Sentinel clients: ms from kill -9 of the master to the client's next successful write"
    );
    println!(
        "settings: check_interval 100 ms, max_down_time 1 s; Sentinel down-after 1000 ms, quorum 1\n"
    );
    type Watcher = fn(Client) -> Result<(f64, String), String>;
    let watchers: [(&str, Watcher); 2] = [("redis-failover", ours), ("Sentinel", sentinel)];
    let mut results: Vec<(String, Vec<f64>)> = Vec::new();
    for client in clients() {
        for (watcher, run) in watchers {
            let name = format!("{} via {watcher}", client.name());
            let mut times = Vec::new();
            for i in 1..=n {
                match run(client) {
                    Ok((ms, line)) => {
                        println!("{name:>26} round {i}: {line}");
                        times.push(ms);
                    }
                    Err(e) => println!("{name:>26} round {i}: FAILED: {e}"),
                }
            }
            results.push((name, times));
        }
    }
    println!("\n| | median ms | min–max ms | rounds ok |\n|---|---|---|---|");
    for (name, mut times) in results {
        let ok = times.len();
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        let max = times.iter().copied().fold(0.0, f64::max);
        match median(&mut times) {
            Some(m) => println!("| {name} | {m:.0} | {min:.0}–{max:.0} | {ok}/{n} |"),
            None => println!("| {name} | – | – | 0/{n} |"),
        }
    }
}
