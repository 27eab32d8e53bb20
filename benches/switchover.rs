//! Planned switchover with a writer running: `cargo bench --bench switchover`.
//!
//! One master with two replicas, watched by the daemon. A writer does `RPUSH log <seq>`
//! with increasing sequence numbers, as an application would: it asks the daemon for the
//! master (`GET /master`), writes there, and on any error (READONLY from a demoted
//! master, a dropped connection) asks again and retries after `BENCH_RETRY_MS`. Each
//! round asks for a switchover (`POST /api/v1/groups/bench/switchover`, the best
//! replica), waits until the daemon watches the new master with both replicas and the
//! writer has written there for a while, and goes on.
//!
//! Per round it measures the writer's **unavailability window**: from the last write the
//! old master acknowledged to the first write the new master acknowledged, as the writer
//! saw them. It also prints what the daemon reports (writes paused, duration). At the end
//! it counts the **acknowledged writes lost**: sequence numbers acknowledged by any
//! master that the final master does not hold (must be 0). It prints figures and asserts
//! nothing.
//!
//! Knobs: `BENCH_ROUNDS` (20), `BENCH_RETRY_MS` (1), `BENCH_SETTLE_MS` (300: how long the
//! writer runs against each new master before the next round), `BENCH_VERBOSE=1` (print
//! the daemon's log at the end).

#[path = "../tests/support/mod.rs"]
mod support;

use support::env_or;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use support::{Daemon, RedisServer, http_request, wait_until};

const GROUP: &str = "bench";
/// How long a round may take to settle before it is reported as failed.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// One acknowledged write: its sequence number, when the reply came, and from which
/// master.
struct Ack {
    seq: u64,
    at: Instant,
    master: String,
}

/// What the writer did.
#[derive(Default)]
struct WriterLog {
    acks: Vec<Ack>,
    errors: u64,
    rediscoveries: u64,
}

/// The application: writes to whatever `GET /master` names, retrying on errors.
fn writer(http_port: u16, retry: Duration, stop: Arc<AtomicBool>) -> WriterLog {
    let mut log = WriterLog::default();
    let mut conn: Option<(String, redis::Connection)> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some((master, c)) = conn.as_mut() else {
            log.rediscoveries += 1;
            match discover(http_port) {
                Ok(found) => conn = Some(found),
                Err(_) => {
                    log.errors += 1;
                    thread::sleep(retry);
                }
            }
            continue;
        };
        seq += 1;
        match redis::cmd("RPUSH").arg("log").arg(seq).query::<i64>(c) {
            Ok(_) => log.acks.push(Ack {
                seq,
                at: Instant::now(),
                master: master.clone(),
            }),
            Err(_) => {
                log.errors += 1;
                conn = None;
                thread::sleep(retry);
            }
        }
    }
    log
}

fn discover(http_port: u16) -> Result<(String, redis::Connection), String> {
    let (status, addr) = http_request(http_port, "GET", "/master", "")?;
    if status != 200 {
        return Err(format!("GET /master: {status}"));
    }
    let client = redis::Client::open(format!("redis://{addr}/")).map_err(|e| e.to_string())?;
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    Ok((addr, conn))
}

/// A switchover as the daemon reported it.
struct Round {
    old: String,
    new: String,
    paused_ms: Option<u64>,
    duration_ms: Option<u64>,
    error: Option<String>,
}

fn switch_over(daemon: &Daemon) -> Round {
    let path = format!("/api/v1/groups/{GROUP}/switchover");
    let mut round = Round {
        old: String::new(),
        new: String::new(),
        paused_ms: None,
        duration_ms: None,
        error: None,
    };
    match daemon.http("POST", &path, "") {
        Ok((200, body)) => match serde_json::from_str::<serde_json::Value>(&body) {
            Ok(report) => {
                round.old = report["old_master"].as_str().unwrap_or("").to_string();
                round.new = report["new_master"].as_str().unwrap_or("").to_string();
                round.paused_ms = report["paused_ms"].as_u64();
                round.duration_ms = report["duration_ms"].as_u64();
            }
            Err(e) => round.error = Some(format!("bad JSON ({e}): {body}")),
        },
        Ok((status, body)) => round.error = Some(format!("{status}: {}", body.trim())),
        Err(e) => round.error = Some(e),
    }
    round
}

/// Waits until the daemon watches `master` with both replicas, and the writer has
/// written there for `settle`.
fn settle(daemon: &Daemon, master: &str, settle: Duration) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let g = daemon.group(GROUP);
        let replicas = g["replicas"].as_array().map_or(0, |r| r.len());
        if g["master"] == master && g["state"] == "ok" && replicas == 2 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("not settled: {g}"));
        }
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(settle);
    Ok(())
}

/// The unavailability window of each master change in the writer's log, in order: from
/// the last ack of one master to the first ack of the next.
fn windows(acks: &[Ack]) -> Vec<(String, String, Duration)> {
    acks.windows(2)
        .filter(|pair| pair[0].master != pair[1].master)
        .map(|pair| {
            (
                pair[0].master.clone(),
                pair[1].master.clone(),
                pair[1].at.duration_since(pair[0].at),
            )
        })
        .collect()
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}

fn logged(server: &RedisServer) -> Result<HashSet<u64>, String> {
    match server.cmd(&["LRANGE", "log", "0", "-1"])? {
        redis::Value::Array(items) => Ok(items
            .iter()
            .filter_map(|v| match v {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).parse().ok(),
                _ => None,
            })
            .collect()),
        other => Err(format!("LRANGE: {other:?}")),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter this bench ignores.
    let rounds: usize = env_or("BENCH_ROUNDS", 20usize).max(1);
    let retry = Duration::from_millis(env_or("BENCH_RETRY_MS", 1u64));
    let settle_for = Duration::from_millis(env_or("BENCH_SETTLE_MS", 300u64));
    let verbose = std::env::var("BENCH_VERBOSE").is_ok_and(|v| v == "1");

    let master = RedisServer::master();
    let a = RedisServer::replica_of(master.port, 100);
    let b = RedisServer::replica_of(master.port, 100);
    master.wait_for_replicas(2);
    let servers = [&master, &a, &b];
    let masters = format!("-masters={GROUP}={}", master.addr());
    let daemon = Daemon::start(&[&masters, "-check_interval=100", "-max_down_time=1"]);
    if let Err(e) = settle(&daemon, &master.addr(), Duration::ZERO) {
        println!("the daemon never watched the master with both replicas: {e}");
        return;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let writer_thread = {
        let stop = stop.clone();
        let port = daemon.port;
        thread::spawn(move || writer(port, retry, stop))
    };
    wait_until(
        Duration::from_secs(10),
        "the writer's first writes",
        || match master.cmd(&["LLEN", "log"])? {
            redis::Value::Int(n) if n > 0 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    thread::sleep(settle_for);

    println!(
        "planned switchover, {rounds} rounds: master + 2 replicas (redis-server), writer RPUSH log <seq> \
         via GET /master, retry after {} ms on errors; {} ms of writes between rounds",
        retry.as_millis(),
        settle_for.as_millis()
    );
    let mut reports = Vec::new();
    for round in 1..=rounds {
        let report = switch_over(&daemon);
        if let Some(e) = &report.error {
            println!("round {round}: switchover failed: {e}");
            reports.push(report);
            continue;
        }
        if let Err(e) = settle(&daemon, &report.new, settle_for) {
            println!("round {round}: {e}");
        }
        reports.push(report);
    }
    stop.store(true, Ordering::Relaxed);
    let log = match writer_thread.join() {
        Ok(log) => log,
        Err(_) => {
            println!("the writer thread panicked");
            return;
        }
    };

    let changes = windows(&log.acks);
    println!();
    println!(
        "{:>5}  {:<21} {:<21} {:>10} {:>12} {:>10}",
        "round", "old master", "new master", "paused ms", "duration ms", "window ms"
    );
    let mut window_ms = Vec::new();
    for (i, report) in reports.iter().enumerate() {
        if report.error.is_some() {
            continue;
        }
        // The writer's k-th change of master is the k-th successful switchover.
        let k = reports[..i].iter().filter(|r| r.error.is_none()).count();
        let window = changes
            .get(k)
            .filter(|(old, new, _)| *old == report.old && *new == report.new)
            .map(|(_, _, w)| w.as_secs_f64() * 1000.0);
        if let Some(w) = window {
            window_ms.push(w);
        }
        println!(
            "{:>5}  {:<21} {:<21} {:>10} {:>12} {:>10}",
            i + 1,
            report.old,
            report.new,
            report
                .paused_ms
                .map_or("-".to_string(), |ms| ms.to_string()),
            report
                .duration_ms
                .map_or("-".to_string(), |ms| ms.to_string()),
            window.map_or("?".to_string(), |w| format!("{w:.2}"))
        );
    }

    let final_master = daemon
        .http("GET", "/master", "")
        .map(|(_, m)| m)
        .unwrap_or_default();
    let lost = match servers.iter().find(|s| s.addr() == final_master) {
        Some(server) => match logged(server) {
            Ok(present) => {
                let lost: Vec<u64> = log
                    .acks
                    .iter()
                    .map(|ack| ack.seq)
                    .filter(|seq| !present.contains(seq))
                    .collect();
                format!(
                    "{}{}",
                    lost.len(),
                    if lost.is_empty() {
                        String::new()
                    } else {
                        format!(" (first {:?})", &lost[..lost.len().min(10)])
                    }
                )
            }
            Err(e) => format!("unknown ({e})"),
        },
        None => format!("unknown (final master {final_master:?} is none of ours)"),
    };
    let succeeded = reports.iter().filter(|r| r.error.is_none()).count();
    let paused: Vec<f64> = reports
        .iter()
        .filter_map(|r| r.paused_ms.map(|ms| ms as f64))
        .collect();
    println!();
    println!("switchovers: {succeeded} of {rounds} succeeded");
    println!(
        "write unavailability window (last ack on the old master -> first ack on the new): \
         p50 {:.2} ms, max {:.2} ms over {} rounds",
        percentile(&window_ms, 50.0),
        percentile(&window_ms, 100.0),
        window_ms.len()
    );
    println!(
        "writes paused on the old master (daemon's report): p50 {:.0} ms, max {:.0} ms",
        percentile(&paused, 50.0),
        percentile(&paused, 100.0)
    );
    println!(
        "acknowledged writes: {}, lost: {lost}; writer errors (READONLY, retried): {}, lookups of the master: {}",
        log.acks.len(),
        log.errors,
        log.rediscoveries
    );
    if verbose {
        println!("\n--- daemon log ---\n{}", daemon.log());
    }
}
