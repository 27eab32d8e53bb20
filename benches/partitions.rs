//! Network partitions, redis-failover (3 daemons in a Raft cluster) against Redis
//! Sentinel (3 Sentinels, quorum 2), side by side in one run:
//! `cargo bench --bench partitions` (as root: it runs inside a network namespace of its
//! own and cuts links with iptables, see `tests/support/lab.rs`).
//!
//! Every round starts a fresh master with two replicas at Redis's defaults
//! (`repl-timeout 60`), checked every 100 ms with a 1 s window (Sentinel:
//! down-after-milliseconds 1000), then cuts for `PARTITION_CUT_SECS` (10) and heals:
//!
//! - **leader cut off from the master only** (ours: the acting daemon; Sentinel: one of
//!   the three): failovers, and for ours attempts recorded in the history;
//! - **master cut off from everything but one writing client** (1 write a ms, going on
//!   after the heal until the old master is fenced): time from the cut to a replica
//!   reporting master, acknowledged writes lost, time from the heal to the old master
//!   being fenced (a replica again);
//! - **the same with bounded loss** (ours with `min_replicas_to_write=1`,
//!   `min_replicas_max_lag=1`; Sentinel as it is).
//!
//! `PARTITION_ROUNDS` (3) rounds each; prints every round and the medians; asserts
//! nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::lab::{self, LabDaemon, LabRedis, LabSentinel};
use support::wait_until;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The watchers under test.
enum Watchers {
    Ours(Vec<LabDaemon>),
    Sentinels(Vec<LabSentinel>),
}

impl Watchers {
    fn start(ours: bool, master: &LabRedis, extra: &[&str]) -> Watchers {
        if !ours {
            let sentinels: Vec<LabSentinel> = (1..=3)
                .map(|i| LabSentinel::start(i, master, 2, 1000))
                .collect();
            wait_until(Duration::from_secs(30), "the sentinels ready", || {
                for s in &sentinels {
                    let fields = flat(s.cmd(&["SENTINEL", "MASTER", "g"])?);
                    let field = |k: &str| {
                        fields
                            .iter()
                            .position(|f| f == k)
                            .map(|i| fields[i + 1].clone())
                    };
                    if field("num-slaves").as_deref() != Some("2")
                        || field("num-other-sentinels").as_deref() != Some("2")
                    {
                        return Err(format!("sentinel {}: {fields:?}", s.index));
                    }
                }
                Ok(())
            });
            return Watchers::Sentinels(sentinels);
        }
        let mut flags = vec!["-check_interval=100", "-max_down_time=1"];
        flags.extend(extra);
        let daemons: Vec<LabDaemon> = (1..=3).map(|i| LabDaemon::start(i, 3, &flags)).collect();
        let leader = leader(&daemons);
        let (status, body) = daemons[leader]
            .http("POST", &format!("/master?masters=g={}", master.addr()))
            .expect("POST /master");
        assert_eq!(status, 200, "{body}");
        wait_until(Duration::from_secs(20), "the daemons ready", || {
            for d in &daemons {
                let g = d.group("g")?;
                if g["state"] != "ok" || g["replicas"].as_array().is_none_or(|r| r.len() != 2) {
                    return Err(g.to_string());
                }
            }
            Ok(())
        });
        Watchers::Ours(daemons)
    }

    /// The uid of the watcher to cut off from the master alone.
    fn one_uid(&self) -> u32 {
        match self {
            Watchers::Ours(daemons) => daemons[leader(daemons)].uid,
            Watchers::Sentinels(sentinels) => sentinels[0].uid,
        }
    }

    /// Attempts recorded in the history (ours only).
    fn attempts(&self) -> Option<u64> {
        match self {
            Watchers::Ours(daemons) => Some(
                daemons
                    .iter()
                    .filter_map(|d| d.group("g").ok())
                    .map(|g| g["last_failover"]["count"].as_u64().unwrap_or(0))
                    .max()
                    .unwrap_or(0),
            ),
            Watchers::Sentinels(_) => None,
        }
    }
}

fn leader(daemons: &[LabDaemon]) -> usize {
    wait_until(Duration::from_secs(20), "an acting leader", || {
        daemons
            .iter()
            .position(LabDaemon::acting)
            .ok_or_else(|| "none acts".to_string())
    })
}

fn flat(value: redis::Value) -> Vec<String> {
    match value {
        redis::Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                other => format!("{other:?}"),
            })
            .collect(),
        other => vec![format!("{other:?}")],
    }
}

/// Writes `SET w:<n> 1` to `target` from 127.0.4.1 (never cut), one write a
/// millisecond (the same load for every watcher), until stopped; the acknowledged
/// numbers are collected. Refused writes (`NOREPLICAS`, `READONLY`) are not.
fn writer(
    target: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut n = 0u64;
        let began = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            let Ok(mut conn) = connect_from("127.0.4.1", &target) else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let mut buf = [0u8; 256];
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let due = began + Duration::from_millis(n);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let key = format!("w:{n}");
                let cmd = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\n1\r\n", key.len());
                if conn.write_all(cmd.as_bytes()).is_err() {
                    break;
                }
                match conn.read(&mut buf) {
                    Ok(len) if buf[..len].starts_with(b"+OK") => {
                        if let Ok(mut list) = acked.lock() {
                            list.push(n);
                        }
                    }
                    Ok(len) if len > 0 => {}
                    _ => break,
                }
            }
        }
    })
}

fn connect_from(source: &str, target: &str) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let from: std::net::SocketAddr = format!("{source}:0")
        .parse()
        .map_err(std::io::Error::other)?;
    socket.bind(&from.into())?;
    let to: std::net::SocketAddr = target.parse().map_err(std::io::Error::other)?;
    socket.connect_timeout(&to.into(), Duration::from_millis(500))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    Ok(stream)
}

/// Acknowledged writes the new master lacks.
fn lost(new: &LabRedis, acked: &[u64]) -> usize {
    let mut missing = 0;
    for chunk in acked.chunks(500) {
        let keys: Vec<String> = chunk.iter().map(|n| format!("w:{n}")).collect();
        let mut args = vec!["MGET"];
        args.extend(keys.iter().map(String::as_str));
        match new.cmd(&args) {
            Ok(redis::Value::Array(values)) => {
                missing += values
                    .iter()
                    .filter(|v| matches!(v, redis::Value::Nil))
                    .count();
            }
            _ => missing += chunk.len(),
        }
    }
    missing
}

#[derive(Default, Debug)]
struct Round {
    failed_over_ms: Option<u128>,
    lost: usize,
    acked: usize,
    fenced_ms: Option<u128>,
    attempts: Option<u64>,
}

fn leader_cut(ours: bool, cut: Duration) -> Round {
    let master = LabRedis::start("127.0.1.1", None, &[]);
    let a = LabRedis::start("127.0.1.2", Some(&master), &[]);
    let b = LabRedis::start("127.0.1.3", Some(&master), &[]);
    let watchers = Watchers::start(ours, &master, &[]);
    lab::cut_user_from(watchers.one_uid(), &master.ip);
    let start = Instant::now();
    let mut round = Round::default();
    while start.elapsed() < cut {
        if [&a, &b]
            .iter()
            .any(|r| r.role().is_ok_and(|role| role == "master"))
        {
            round
                .failed_over_ms
                .get_or_insert(start.elapsed().as_millis());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    round.attempts = watchers.attempts();
    lab::heal();
    round
}

fn isolated_master(ours: bool, cut: Duration, bounded: bool) -> Round {
    let master = LabRedis::start("127.0.1.1", None, &[]);
    let a = LabRedis::start("127.0.1.2", Some(&master), &[]);
    let b = LabRedis::start("127.0.1.3", Some(&master), &[]);
    let extra: &[&str] = if bounded {
        &["-min_replicas_to_write=1", "-min_replicas_max_lag=1"]
    } else {
        &[]
    };
    let _watchers = Watchers::start(ours, &master, extra);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut writing = Some(writer(master.addr(), stop.clone(), acked.clone()));
    std::thread::sleep(Duration::from_secs(1));
    lab::isolate(&master.ip, &["127.0.4.1"]);
    let start = Instant::now();
    let mut round = Round::default();
    let mut new = None;
    while start.elapsed() < cut {
        if new.is_none() {
            new = [&a, &b]
                .into_iter()
                .find(|r| r.role().is_ok_and(|role| role == "master"));
            if new.is_some() {
                round.failed_over_ms = Some(start.elapsed().as_millis());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    lab::heal();
    let healed = Instant::now();
    // The client keeps writing to the old master until it is fenced (then its writes
    // are refused): what a client that does not ask the watchers would do.
    if let Some(new) = new {
        let fenced = wait_until(
            Duration::from_secs(30),
            "the old master fenced",
            || match master.role()?.as_str() {
                "slave" => Ok(healed.elapsed().as_millis()),
                other => Err(other.to_string()),
            },
        );
        round.fenced_ms = Some(fenced);
        stop.store(true, Ordering::SeqCst);
        writing.take().map(std::thread::JoinHandle::join);
        std::thread::sleep(Duration::from_millis(500));
        let acked = acked.lock().map(|l| l.clone()).unwrap_or_default();
        round.acked = acked.len();
        round.lost = lost(new, &acked);
    }
    stop.store(true, Ordering::SeqCst);
    writing.take().map(std::thread::JoinHandle::join);
    round
}

fn median(mut values: Vec<u128>) -> String {
    if values.is_empty() {
        return "-".into();
    }
    values.sort_unstable();
    values[values.len() / 2].to_string()
}

fn main() {
    if !lab::enter_bench() {
        return;
    }
    let rounds: usize = env_or("PARTITION_ROUNDS", 3);
    let cut = Duration::from_secs(env_or("PARTITION_CUT_SECS", 10));
    println!(
        "partitions: {rounds} rounds, {} s cuts, check 100 ms, down after 1 s",
        cut.as_secs()
    );
    let mut lost_by = Vec::new();
    for (name, ours) in [
        ("ours (3 daemons)", true),
        ("sentinel (3, quorum 2)", false),
    ] {
        let leader: Vec<Round> = (0..rounds).map(|_| leader_cut(ours, cut)).collect();
        let failovers = leader.iter().filter(|r| r.failed_over_ms.is_some()).count();
        let attempts: u64 = leader.iter().filter_map(|r| r.attempts).sum();
        println!(
            "{name}: leader cut off from the master only: {failovers} failovers in {rounds} rounds{}",
            if ours {
                format!(", {attempts} attempts recorded")
            } else {
                String::new()
            }
        );
        for bounded in [false, true] {
            if bounded && !ours {
                continue;
            }
            let isolated: Vec<Round> = (0..rounds)
                .map(|_| isolated_master(ours, cut, bounded))
                .collect();
            for (i, r) in isolated.iter().enumerate() {
                println!("  round {i}: {r:?}");
            }
            let label = if bounded {
                "master isolated, bounded loss"
            } else {
                "master isolated"
            };
            let lost: usize = isolated.iter().map(|r| r.lost).sum();
            println!(
                "{name}: {label}: failover median {} ms after the cut ({} of {rounds} rounds); lost {lost} of {} acknowledged writes; fenced median {} ms after the heal",
                median(isolated.iter().filter_map(|r| r.failed_over_ms).collect()),
                isolated
                    .iter()
                    .filter(|r| r.failed_over_ms.is_some())
                    .count(),
                isolated.iter().map(|r| r.acked).sum::<usize>(),
                median(isolated.iter().filter_map(|r| r.fenced_ms).collect()),
            );
            lost_by.push((format!("{name}, {label}"), lost));
        }
    }
    if let Some((_, sentinel)) = lost_by.last() {
        for (label, lost) in &lost_by {
            println!(
                "lost writes, {label}: {:.1} % of Sentinel's",
                100.0 * *lost as f64 / (*sentinel).max(1) as f64
            );
        }
    }
}
