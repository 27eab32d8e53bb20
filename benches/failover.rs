//! Failover latency and data loss, redis-failover vs. Redis Sentinel:
//! `cargo bench --bench failover`.
//!
//! Each round starts a fresh master with two replicas, a watcher (the daemon, or ONE
//! `redis-server --sentinel` with quorum 1) and a writer doing `RPUSH log <seq>` with
//! increasing sequence numbers. Once the watcher sees both replicas, the master gets
//! `kill -9`. From that instant it measures:
//!
//! - (a) a replica reports `ROLE` master (both replicas polled about every millisecond);
//! - (b) the writer's first accepted write on that replica (after the kill the writer
//!   tries both replicas; a READONLY error is not a success);
//! - (c) the other replica reports `master_link_status:up` with `master_port` = the new
//!   master's port (`INFO replication`);
//!
//! and then counts the writes the old master acknowledged that the new master lacks.
//! A round that does not get there within 30 s is printed as failed with what was seen.
//! It also prints the resident memory of the daemon and of Sentinel watching one group
//! and the size of the daemon binary. It prints figures and asserts nothing.
//!
//! **Cluster mode**, `BENCH_CLUSTER=3`: the watcher is 3 daemons forming one Raft cluster
//! (`-broker=raft`, default raft settings, all with the same `-masters` and settings),
//! against 3 Sentinels monitoring the master with quorum 2 and the same down-after. The
//! daemons are ready when one of them is acting (the leader, having applied an entry of
//! its term) and sees the master "ok" with both replicas; the Sentinels when each sees
//! both replicas and the 2 other Sentinels. Memory is the sum over the 3 processes.
//!
//! Knobs: `BENCH_ROUNDS` (5), `BENCH_CHECK_INTERVAL_MS` (100), `BENCH_MAX_DOWN_TIME`
//! (seconds, 1; also Sentinel's down-after-milliseconds), `BENCH_CLUSTER` (1: one
//! standalone daemon against one Sentinel with quorum 1; N > 1: N daemons in a Raft
//! cluster against N Sentinels with a majority quorum), `BENCH_VERBOSE=1` (print the
//! watcher's logs after each round). Failover over TLS is `benches/tls.rs`.

#[path = "../tests/support/mod.rs"]
mod support;

use support::env_or;

use redis::Value;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{Daemon, RaftCluster, RedisServer, Sentinel, memory_kb, redis_cmd};

const GROUP: &str = "bench";
/// How long each round waits for (a), (b) and (c) after the kill.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long the watcher may take to see the master and both replicas.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two polls of the replicas (and two write attempts after the kill).
const POLL: Duration = Duration::from_millis(1);
/// How long the writer runs against the healthy master before the kill.
const WRITE_BEFORE_KILL: Duration = Duration::from_millis(500);
/// Memory is read once the watcher has been running this long.
const MEMORY_AFTER: Duration = Duration::from_secs(3);

struct Settings {
    rounds: usize,
    check_interval_ms: u64,
    /// As given to `-max_down_time` (seconds).
    max_down_time: f64,
    verbose: bool,
    /// Daemons in one Raft cluster, and Sentinels (quorum: a majority); 1 = standalone.
    cluster: usize,
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            rounds: env_or("BENCH_ROUNDS", 5usize).max(1),
            check_interval_ms: env_or("BENCH_CHECK_INTERVAL_MS", 100u64),
            max_down_time: env_or("BENCH_MAX_DOWN_TIME", 1.0f64),
            verbose: std::env::var("BENCH_VERBOSE").is_ok_and(|v| v == "1"),
            cluster: env_or("BENCH_CLUSTER", 1usize).max(1),
        }
    }

    fn down_after_ms(&self) -> u64 {
        (self.max_down_time * 1000.0).round().max(1.0) as u64
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum System {
    Daemon,
    Sentinel,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Daemon => "redis-failover",
            System::Sentinel => "Sentinel",
        }
    }
}

// ---- a persistent connection that reconnects ------------------------------------------

/// One connection with short timeouts, reopened after any error that is not a server
/// error reply (a dropped, killed or timed-out connection).
struct Conn {
    port: u16,
    timeout: Duration,
    conn: Option<redis::Connection>,
}

impl Conn {
    fn new(port: u16, timeout: Duration) -> Conn {
        Conn {
            port,
            timeout,
            conn: None,
        }
    }

    fn query(&mut self, args: &[&str]) -> redis::RedisResult<Value> {
        if self.conn.is_none() {
            let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?;
            let conn = client.get_connection_with_timeout(self.timeout)?;
            conn.set_read_timeout(Some(self.timeout))?;
            conn.set_write_timeout(Some(self.timeout))?;
            self.conn = Some(conn);
        }
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let reply = cmd.query::<Value>(conn);
        if reply.as_ref().is_err_and(|e| e.code().is_none()) {
            self.conn = None;
        }
        reply
    }
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// The first element of a `ROLE` reply: "master", "slave", "sentinel".
fn role_of(value: &Value) -> Option<String> {
    match value {
        Value::Array(items) => items.first().and_then(text_of),
        _ => None,
    }
}

fn info_field(text: &str, field: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---- the writer -----------------------------------------------------------------------

/// What the writer saw after the master died; read by the main thread while it runs.
#[derive(Default)]
struct WriterSeen {
    /// A failed write on the old master while it was still alive.
    failed_before_kill: Option<String>,
    /// First accepted write on each replica after the kill.
    accepted: [Option<Instant>; 2],
    readonly: [u64; 2],
    last_error: [String; 2],
}

/// Writes `RPUSH log <seq>` to the master until it fails after the kill, then tries both
/// replicas until told to stop. Returns the sequence numbers the old master acknowledged.
fn writer(
    master: u16,
    replicas: [u16; 2],
    killed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<WriterSeen>>,
) -> Vec<u64> {
    let mut acked = Vec::new();
    let mut seq = 0u64;
    let mut conn = Conn::new(master, Duration::from_secs(1));
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        match conn.query(&["RPUSH", "log", &seq.to_string()]) {
            Ok(_) => acked.push(seq),
            Err(_) if killed.load(Ordering::SeqCst) => {
                break;
            }
            Err(e) => {
                let mut seen = seen.lock().unwrap();
                seen.failed_before_kill.get_or_insert(e.to_string());
            }
        }
    }
    let mut conns = replicas.map(|port| Conn::new(port, Duration::from_millis(200)));
    while !stop.load(Ordering::Relaxed) {
        for (i, conn) in conns.iter_mut().enumerate() {
            if seen.lock().unwrap().accepted[i].is_some() {
                continue;
            }
            seq += 1;
            let reply = conn.query(&["RPUSH", "log", &seq.to_string()]);
            let now = Instant::now();
            let mut seen = seen.lock().unwrap();
            match reply {
                Ok(_) => seen.accepted[i] = Some(now),
                Err(e) if e.kind() == redis::ErrorKind::ReadOnly => seen.readonly[i] += 1,
                Err(e) => seen.last_error[i] = e.to_string(),
            }
        }
        thread::sleep(POLL);
    }
    acked
}

// ---- the watchers ---------------------------------------------------------------------

/// What watches the master: `BENCH_CLUSTER` processes of one system.
enum Watcher {
    /// One standalone daemon, or the nodes of one Raft cluster.
    Daemons(Vec<Daemon>),
    /// One Sentinel, or several monitoring the same master with a majority quorum.
    Sentinels(Vec<Sentinel>),
}

impl Watcher {
    fn start(system: System, settings: &Settings, master_port: u16) -> Watcher {
        let n = settings.cluster;
        match system {
            System::Daemon => {
                let masters = format!("-masters={GROUP}=127.0.0.1:{master_port}");
                let interval = format!("-check_interval={}", settings.check_interval_ms);
                let down = format!("-max_down_time={}", settings.max_down_time);
                let args = [masters.as_str(), &interval, &down];
                if n == 1 {
                    Watcher::Daemons(vec![Daemon::start(&args)])
                } else {
                    Watcher::Daemons(RaftCluster::start(n, &args, &[]).nodes)
                }
            }
            System::Sentinel => Watcher::Sentinels(
                (0..n)
                    .map(|_| {
                        Sentinel::start(master_port, GROUP, settings.down_after_ms(), quorum(n))
                    })
                    .collect(),
            ),
        }
    }

    /// The daemon that checks and fails over: the only one, or the cluster's acting
    /// leader (`Err` says what each node says instead).
    fn acting(daemons: &[Daemon]) -> Result<(usize, &Daemon), String> {
        if let [daemon] = daemons {
            return Ok((0, daemon));
        }
        let mut seen = Vec::new();
        for (i, daemon) in daemons.iter().enumerate() {
            match daemon.http("GET", "/api/v1/cluster", "") {
                Ok((200, body)) => {
                    let status: serde_json::Value = serde_json::from_str(&body)
                        .map_err(|e| format!("node {i}: {e}: {body}"))?;
                    if status["role"] == "leader" && status["acting"] == true {
                        return Ok((i, daemon));
                    }
                    seen.push(format!(
                        "node {i}: role {} acting {} term {}",
                        status["role"], status["acting"], status["term"]
                    ));
                }
                Ok((code, body)) => seen.push(format!("node {i}: {code} {body}")),
                Err(e) => seen.push(format!("node {i}: {e}")),
            }
        }
        Err(format!("no acting daemon: {}", seen.join("; ")))
    }

    /// Whether the watcher is ready to fail over: `Err` says what it sees instead.
    fn ready(&self) -> Result<(), String> {
        match self {
            Watcher::Daemons(daemons) => {
                let (_, daemon) = Watcher::acting(daemons)?;
                let (status, body) = daemon.http("GET", "/api/v1/groups", "")?;
                let groups: serde_json::Value =
                    serde_json::from_str(&body).map_err(|e| format!("{status} {body}: {e}"))?;
                let group = groups
                    .as_array()
                    .and_then(|gs| gs.iter().find(|g| g["name"] == GROUP))
                    .ok_or_else(|| format!("no group {GROUP}: {body}"))?;
                let replicas = group["replicas"].as_array().map_or(0, |r| r.len());
                if group["state"] == "ok" && replicas == 2 {
                    Ok(())
                } else {
                    Err(group.to_string())
                }
            }
            Watcher::Sentinels(sentinels) => {
                for sentinel in sentinels {
                    let entries = sentinel_list(sentinel.port, "replicas")?;
                    // Two entries, each seen by Sentinel's own INFO: not disconnected or
                    // down, with its link to the master up (else Sentinel would not elect
                    // it yet).
                    let usable = entries
                        .iter()
                        .filter(|e| {
                            field(e, "flags") == Some("slave")
                                && field(e, "master-link-status") == Some("ok")
                        })
                        .count();
                    if entries.len() != 2 || usable != 2 {
                        return Err(format!(
                            "port {}: SENTINEL replicas {GROUP}: {entries:?}",
                            sentinel.port
                        ));
                    }
                    // With several, each must know the others (found through the
                    // master's hello channel) to reach the quorum and elect a leader.
                    if sentinels.len() > 1 {
                        let others = sentinel_list(sentinel.port, "sentinels")?;
                        let up = others
                            .iter()
                            .filter(|e| field(e, "flags") == Some("sentinel"))
                            .count();
                        if up != sentinels.len() - 1 {
                            return Err(format!(
                                "port {}: SENTINEL sentinels {GROUP}: {others:?}",
                                sentinel.port
                            ));
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn pids(&self) -> Result<Vec<u32>, String> {
        match self {
            Watcher::Daemons(daemons) => daemons
                .iter()
                .map(|d| d.pid().ok_or_else(|| "no daemon pid".to_string()))
                .collect(),
            Watcher::Sentinels(sentinels) => sentinels
                .iter()
                .map(|sentinel| {
                    let info = redis_cmd(sentinel.port, &["INFO", "server"])?;
                    text_of(&info)
                        .and_then(|t| info_field(&t, "process_id"))
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| format!("no process_id in {info:?}"))
                })
                .collect(),
        }
    }

    /// Each process's log, with a label when there are several.
    fn logs(&self) -> Vec<(String, String)> {
        let label = |i: usize| match self {
            Watcher::Daemons(d) if d.len() > 1 => format!(" node {i}"),
            Watcher::Sentinels(s) if s.len() > 1 => format!(" {i}"),
            _ => String::new(),
        };
        match self {
            Watcher::Daemons(daemons) => daemons
                .iter()
                .enumerate()
                .map(|(i, d)| (label(i), d.log()))
                .collect(),
            Watcher::Sentinels(sentinels) => sentinels
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let path = s.dir.path().join("sentinel.log");
                    (label(i), std::fs::read_to_string(path).unwrap_or_default())
                })
                .collect(),
        }
    }

    /// What the watcher itself says after the failover (for the notes column).
    fn afterwards(&self, killed_at: Instant, killed_wall_ms: u64, new_master: u16) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        match self {
            Watcher::Daemons(daemons) => loop {
                // The record is written after re-pointing, a moment after (c); then the
                // monitor checks the new master.
                let acting = Watcher::acting(daemons);
                let group = match &acting {
                    Ok((_, daemon)) => daemon.group(GROUP),
                    Err(_) => serde_json::Value::Null,
                };
                let record = &group["last_failover"];
                if record.is_object() && group["state"] == "ok" {
                    let node = match (&acting, daemons.len()) {
                        (Ok((i, _)), n) if n > 1 => format!(" node {i}"),
                        _ => String::new(),
                    };
                    let began = record["started_at_ms"].as_u64().unwrap_or(0);
                    let mut note = format!(
                        "daemon{node}: {} began +{} ms ({} ms after the last successful check), took {} ms; ok again +{:.0} ms with {} replica(s)",
                        record["outcome"].as_str().unwrap_or("?"),
                        began as i64 - killed_wall_ms as i64,
                        record["down_for_ms"],
                        record["duration_ms"],
                        ms(killed_at.elapsed()),
                        group["replicas"].as_array().map_or(0, |r| r.len())
                    );
                    let master = group["master"].as_str().unwrap_or("");
                    if !master.ends_with(&format!(":{new_master}")) {
                        note += &format!("; MASTER IS {master}, not port {new_master}");
                    }
                    if let Some(reason) = record["reason"].as_str() {
                        note += &format!("; reason: {reason}");
                    }
                    // The other nodes apply the same record through Raft.
                    for (i, daemon) in daemons.iter().enumerate() {
                        let mut theirs = daemon.group(GROUP);
                        while theirs["master"] != master && Instant::now() < deadline {
                            thread::sleep(Duration::from_millis(20));
                            theirs = daemon.group(GROUP);
                        }
                        if theirs["master"] != master {
                            note += &format!("; node {i} says master {}", theirs["master"]);
                        }
                    }
                    return note;
                }
                if Instant::now() >= deadline {
                    return match acting {
                        Ok(_) => {
                            format!("daemon: not ok with a failover record 5 s after (c): {group}")
                        }
                        Err(e) => format!("daemon: 5 s after (c): {e}"),
                    };
                }
                thread::sleep(Duration::from_millis(20));
            },
            Watcher::Sentinels(sentinels) => {
                // Sentinels other than the one that led the failover learn the new master
                // from its hello messages, within a couple of seconds.
                let mut notes = Vec::new();
                for (i, sentinel) in sentinels.iter().enumerate() {
                    let label = if sentinels.len() > 1 {
                        format!("sentinel {i}")
                    } else {
                        "sentinel".to_string()
                    };
                    loop {
                        let reply = redis_cmd(
                            sentinel.port,
                            &["SENTINEL", "get-master-addr-by-name", GROUP],
                        );
                        let wrong = match reply {
                            Ok(Value::Array(items)) => {
                                let port = items.get(1).and_then(text_of).unwrap_or_default();
                                (port != new_master.to_string()).then(|| {
                                    format!("{label}: master is port {port}, not {new_master}")
                                })
                            }
                            other => Some(format!("{label}: get-master-addr-by-name: {other:?}")),
                        };
                        match wrong {
                            None => break,
                            Some(note) if Instant::now() >= deadline => {
                                notes.push(note);
                                break;
                            }
                            Some(_) => thread::sleep(Duration::from_millis(20)),
                        }
                    }
                }
                notes.join("; ")
            }
        }
    }
}

/// The majority of `n` Sentinels.
fn quorum(n: usize) -> u32 {
    (n / 2 + 1) as u32
}

fn field<'a>(entry: &'a [(String, String)], name: &str) -> Option<&'a str> {
    entry
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `SENTINEL replicas|sentinels <group>` as a list of field/value pairs per entry.
fn sentinel_list(port: u16, what: &str) -> Result<Vec<Vec<(String, String)>>, String> {
    match redis_cmd(port, &["SENTINEL", what, GROUP])? {
        Value::Array(entries) => Ok(entries
            .iter()
            .map(|entry| match entry {
                Value::Array(fields) => fields
                    .chunks(2)
                    .filter_map(|kv| Some((text_of(&kv[0])?, text_of(kv.get(1)?)?)))
                    .collect(),
                Value::Map(pairs) => pairs
                    .iter()
                    .filter_map(|(k, v)| Some((text_of(k)?, text_of(v)?)))
                    .collect(),
                _ => Vec::new(),
            })
            .collect()),
        other => Err(format!("odd SENTINEL {what} reply {other:?}")),
    }
}

fn wait_ready(watcher: &Watcher) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match watcher.ready() {
            Ok(()) => return Ok(()),
            Err(seen) if Instant::now() >= deadline => {
                return Err(format!(
                    "not ready after {READY_TIMEOUT:?}; last seen: {seen}"
                ));
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

// ---- one round ------------------------------------------------------------------------

struct Round {
    a_ms: f64,
    b_ms: f64,
    c_ms: f64,
    acked: usize,
    lost: usize,
    /// 0 or 1: which replica was promoted.
    promoted: usize,
    notes: String,
}

/// Resident memory read during a round (kB), summed over the watcher's processes.
struct Memory {
    rss_kb: u64,
    hwm_kb: u64,
    after: Duration,
}

/// The replica that reported ROLE master first, if any.
fn first_master(became_master: &[Option<Instant>; 2]) -> Option<usize> {
    match became_master {
        [Some(x), Some(y)] => Some(if x <= y { 0 } else { 1 }),
        [Some(_), None] => Some(0),
        [None, Some(_)] => Some(1),
        [None, None] => None,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn run_round(
    system: System,
    settings: &Settings,
    memory: &mut Option<Result<Memory, String>>,
) -> Result<Round, String> {
    let mut master = RedisServer::master();
    let replica_a = RedisServer::replica_of(master.port, 100);
    let replica_b = RedisServer::replica_of(master.port, 100);
    master.wait_for_replicas(2);
    // ROLE lists a replica as online before the master streams to it: after a diskless
    // sync Redis 7.0 waits for the replica's first REPLCONF ACK (up to a second) first.
    // Writes before that sit in the master's buffers, and a kill then loses all of them.
    // WAIT returns once both replicas acknowledged a write, so the stream flows.
    // (On one connection: WAIT waits for that connection's own last write.)
    let mut conn = Conn::new(master.port, Duration::from_secs(15));
    conn.query(&["SET", "bench:ready", "1"])
        .map_err(|e| format!("SET on the master: {e}"))?;
    match conn.query(&["WAIT", "2", "10000"]) {
        Ok(Value::Int(2)) => {}
        other => return Err(format!("WAIT 2 10000 on the master: {other:?}")),
    }
    drop(conn);
    let replicas = [replica_a.port, replica_b.port];

    let started = Instant::now();
    let watcher = Watcher::start(system, settings, master.port);
    let outcome = measure(memory, &mut master, replicas, &watcher, started);
    if settings.verbose || outcome.as_ref().map_or(true, |r| r.lost > 0) {
        for (label, log) in watcher.logs() {
            eprintln!(
                "--- {}{label} log (last 40 lines) ---\n{}\n---",
                system.name(),
                tail(&log, 40)
            );
        }
        for (name, server) in [
            ("old master", &master),
            ("replica A", &replica_a),
            ("replica B", &replica_b),
        ] {
            let log =
                std::fs::read_to_string(server.dir.path().join("redis.log")).unwrap_or_default();
            eprintln!(
                "--- {name} (port {}) redis.log (last 30 lines) ---\n{}\n---",
                server.port,
                tail(&log, 30)
            );
        }
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
fn measure(
    memory: &mut Option<Result<Memory, String>>,
    master: &mut RedisServer,
    replicas: [u16; 2],
    watcher: &Watcher,
    started: Instant,
) -> Result<Round, String> {
    wait_ready(watcher)?;
    if memory.is_none() {
        thread::sleep(MEMORY_AFTER.saturating_sub(started.elapsed()));
        *memory = Some(watcher.pids().and_then(|pids| {
            let mut sum = Memory {
                rss_kb: 0,
                hwm_kb: 0,
                after: started.elapsed(),
            };
            for pid in pids {
                let (rss_kb, hwm_kb) = memory_kb(pid)?;
                sum.rss_kb += rss_kb;
                sum.hwm_kb += hwm_kb;
            }
            Ok(sum)
        }));
        // Memory reading may have taken a while: make sure it still sees everything.
        wait_ready(watcher)?;
    }

    let killed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(WriterSeen::default()));
    let writer_thread = {
        let (killed, stop, seen) = (killed.clone(), stop.clone(), seen.clone());
        let port = master.port;
        thread::spawn(move || writer(port, replicas, killed, stop, seen))
    };
    // Stops the writer however this function returns.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let _stop_guard = StopOnDrop(stop.clone());
    thread::sleep(WRITE_BEFORE_KILL);

    let killed_wall_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    killed.store(true, Ordering::SeqCst);
    let killed_at = Instant::now();
    master.kill();

    // (a) and (c): poll both replicas.
    let deadline = killed_at + DEADLINE;
    let mut role_conns = replicas.map(|port| Conn::new(port, Duration::from_millis(200)));
    let mut info_conns = replicas.map(|port| Conn::new(port, Duration::from_millis(200)));
    let mut became_master: [Option<Instant>; 2] = [None, None];
    let mut last_role = [String::new(), String::new()];
    let mut last_info = String::new();
    let mut followed: Option<Instant> = None;
    let mut notes = Vec::new();
    while followed.is_none() {
        if Instant::now() >= deadline {
            let promoted = became_master.iter().position(Option::is_some);
            let seen = seen.lock().unwrap();
            return Err(format!(
                "{} within {DEADLINE:?}; ROLE of the replicas: [{}, {}]; {}writer: accepted {:?}, READONLY {:?}, errors {:?}",
                match promoted {
                    None => "(a) no replica reported ROLE master".to_string(),
                    Some(i) => format!(
                        "(c) the other replica did not follow port {}; its INFO: {last_info}",
                        replicas[i]
                    ),
                },
                last_role[0],
                last_role[1],
                match promoted {
                    Some(i) => format!(
                        "(a) was at {:.0} ms; ",
                        ms(became_master[i].unwrap() - killed_at)
                    ),
                    None => String::new(),
                },
                seen.accepted
                    .map(|a| a.map(|t| format!("{:.0} ms", ms(t - killed_at)))),
                seen.readonly,
                seen.last_error,
            ));
        }
        for i in 0..2 {
            if became_master[i].is_some() {
                continue;
            }
            match role_conns[i].query(&["ROLE"]) {
                Ok(reply) => {
                    let role = role_of(&reply).unwrap_or_else(|| format!("{reply:?}"));
                    if role == "master" {
                        became_master[i] = Some(Instant::now());
                    }
                    last_role[i] = role;
                }
                Err(e) => last_role[i] = format!("error: {e}"),
            }
        }
        if became_master[0].is_some() && became_master[1].is_some() {
            notes.push("BOTH replicas reported ROLE master".to_string());
        }
        let first = first_master(&became_master);
        if let Some(p) = first {
            let other = 1 - p;
            match info_conns[other].query(&["INFO", "replication"]) {
                Ok(reply) => {
                    let text = text_of(&reply).unwrap_or_default();
                    let link = info_field(&text, "master_link_status");
                    let port = info_field(&text, "master_port");
                    if link.as_deref() == Some("up")
                        && port.as_deref() == Some(&replicas[p].to_string())
                    {
                        followed = Some(Instant::now());
                    }
                    last_info = format!(
                        "role:{} master_port:{} master_link_status:{}",
                        info_field(&text, "role").unwrap_or_default(),
                        port.unwrap_or_default(),
                        link.unwrap_or_default()
                    );
                }
                Err(e) => last_info = format!("error: {e}"),
            }
        }
        if followed.is_none() {
            thread::sleep(POLL);
        }
    }
    let followed = followed.expect("loop ends with (c)");
    let promoted = first_master(&became_master).expect("(c) needs a new master");
    let a_at = became_master[promoted].expect("promoted replica reported master");

    // (b): the writer's first accepted write on the promoted replica.
    let b_at = loop {
        let accepted = seen.lock().unwrap().accepted;
        if let Some(at) = accepted[promoted] {
            if accepted[1 - promoted].is_some() {
                notes.push("a write was ALSO accepted by the other replica".to_string());
            }
            break at;
        }
        if Instant::now() >= deadline {
            let seen = seen.lock().unwrap();
            return Err(format!(
                "(b) no write accepted by port {} within {DEADLINE:?}; (a) {:.0} ms, (c) {:.0} ms; READONLY {:?}, errors {:?}",
                replicas[promoted],
                ms(a_at - killed_at),
                ms(followed - killed_at),
                seen.readonly,
                seen.last_error
            ));
        }
        thread::sleep(POLL);
    };
    stop.store(true, Ordering::SeqCst);
    let acked = writer_thread
        .join()
        .map_err(|_| "the writer panicked".to_string())?;
    {
        let seen = seen.lock().unwrap();
        if let Some(e) = &seen.failed_before_kill {
            notes.push(format!("a write failed BEFORE the kill: {e}"));
        }
    }

    // Acknowledged writes missing on the new master.
    let list = redis_cmd(replicas[promoted], &["LRANGE", "log", "0", "-1"])
        .map_err(|e| format!("LRANGE on the new master: {e}"))?;
    let present: HashSet<u64> = match list {
        Value::Array(items) => items
            .iter()
            .filter_map(|v| text_of(v).and_then(|t| t.parse().ok()))
            .collect(),
        other => return Err(format!("odd LRANGE reply {other:?}")),
    };
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|seq| !present.contains(seq))
        .collect();
    let lost = missing.len();
    if lost > 0 {
        let info = redis_cmd(replicas[promoted], &["INFO", "replication"])
            .ok()
            .and_then(|v| text_of(&v))
            .unwrap_or_default();
        notes.push(format!(
            "LOST seq {}..{} (acked 1..{}); new master holds {} entries ({:?}..{:?}); its {}",
            missing[0],
            missing[lost - 1],
            acked.last().copied().unwrap_or(0),
            present.len(),
            present.iter().min(),
            present.iter().max(),
            [
                "role",
                "master_replid",
                "master_repl_offset",
                "second_repl_offset"
            ]
            .iter()
            .map(|f| format!("{f}:{}", info_field(&info, f).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(" ")
        ));
    }

    let note = watcher.afterwards(killed_at, killed_wall_ms, replicas[promoted]);
    if !note.is_empty() {
        notes.insert(0, note);
    }
    Ok(Round {
        a_ms: ms(a_at - killed_at),
        b_ms: ms(b_at - killed_at),
        c_ms: ms(followed - killed_at),
        acked: acked.len(),
        lost,
        promoted,
        notes: notes.join("; "),
    })
}

// ---- the report -----------------------------------------------------------------------

struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn ok(run: &Run) -> Vec<&Round> {
    run.rounds.iter().filter_map(|r| r.as_ref().ok()).collect()
}

fn stats(values: &[f64]) -> Option<Stats> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stats {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

fn stats_cells(values: &[f64]) -> String {
    match stats(values) {
        Some(s) => format!("{:>7.0} {:>7.0} {:>7.0}", s.median, s.min, s.max),
        None => format!("{:>7} {:>7} {:>7}", "-", "-", "-"),
    }
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

struct Run {
    system: System,
    rounds: Vec<Result<Round, String>>,
    memory: Option<Result<Memory, String>>,
}

fn run_system(system: System, settings: &Settings) -> Run {
    let mut rounds = Vec::new();
    let mut memory = None;
    for round in 1..=settings.rounds {
        let t = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            run_round(system, settings, &mut memory)
        }))
        .unwrap_or_else(|panic| {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            Err(format!("panicked: {text}"))
        });
        match &result {
            Ok(r) => eprintln!(
                "{} round {round}: (a) {:.0} ms (b) {:.0} ms (c) {:.0} ms, lost {}/{} [{:.1} s]",
                system.name(),
                r.a_ms,
                r.b_ms,
                r.c_ms,
                r.lost,
                r.acked,
                t.elapsed().as_secs_f64()
            ),
            Err(e) => eprintln!("{} round {round}: FAILED: {e}", system.name()),
        }
        rounds.push(result);
    }
    Run {
        system,
        rounds,
        memory,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    support::require_redis();
    let settings = Settings::from_env();
    let began = Instant::now();
    let runs = [
        run_system(System::Daemon, &settings),
        run_system(System::Sentinel, &settings),
    ];

    println!();
    println!(
        "Failover after kill -9 of a master with 2 replicas and a writer: {} round(s) each",
        settings.rounds
    );
    let n = settings.cluster;
    let (ours, theirs) = if n == 1 {
        (
            "redis-failover".to_string(),
            "Sentinel (1 instance, quorum 1)".to_string(),
        )
    } else {
        (
            format!("{n} x redis-failover (one Raft cluster, default raft settings)"),
            format!("{n} Sentinels (quorum {})", quorum(n)),
        )
    };
    println!(
        "settings: {ours} -check_interval={} -max_down_time={} | {theirs} \
         down-after-milliseconds {} failover-timeout 10000 parallel-syncs 1",
        settings.check_interval_ms,
        settings.max_down_time,
        settings.down_after_ms()
    );
    println!(
        "          writer: RPUSH log <seq> back to back for {} ms before the kill; replicas polled every ~{} ms; deadline {} s",
        WRITE_BEFORE_KILL.as_millis(),
        POLL.as_millis(),
        DEADLINE.as_secs()
    );
    println!();
    println!("per round, ms after kill -9:");
    println!(
        "{:<15} {:>5} {:>8} {:>8} {:>8} {:>7} {:>5} {:>8}  notes",
        "system", "round", "(a)", "(b)", "(c)", "acked", "lost", "promoted"
    );
    for run in &runs {
        for (i, round) in run.rounds.iter().enumerate() {
            match round {
                Ok(r) => println!(
                    "{:<15} {:>5} {:>8.0} {:>8.0} {:>8.0} {:>7} {:>5} {:>8}  {}",
                    run.system.name(),
                    i + 1,
                    r.a_ms,
                    r.b_ms,
                    r.c_ms,
                    r.acked,
                    r.lost,
                    if r.promoted == 0 { "A" } else { "B" },
                    r.notes
                ),
                Err(e) => println!("{:<15} {:>5}  FAILED: {e}", run.system.name(), i + 1),
            }
        }
    }

    let column =
        |run: &Run, f: fn(&Round) -> f64| -> Vec<f64> { ok(run).iter().map(|r| f(r)).collect() };
    println!();
    println!(
        "{:<40} {:^23}   {:^23}",
        "ms after kill -9", "redis-failover", "Sentinel"
    );
    println!(
        "{:<40} {:>7} {:>7} {:>7}   {:>7} {:>7} {:>7}",
        "", "median", "min", "max", "median", "min", "max"
    );
    type Row = (&'static str, fn(&Round) -> f64);
    let rows: [Row; 3] = [
        ("(a) a replica reports ROLE master", |r| r.a_ms),
        ("(b) first write accepted on it", |r| r.b_ms),
        ("(c) other replica linked to it", |r| r.c_ms),
    ];
    for (label, f) in rows {
        println!(
            "{:<40} {}   {}",
            label,
            stats_cells(&column(&runs[0], f)),
            stats_cells(&column(&runs[1], f))
        );
    }
    let lost = |run: &Run| {
        let rounds = ok(run);
        format!(
            "{} of {}",
            rounds.iter().map(|r| r.lost).sum::<usize>(),
            rounds.iter().map(|r| r.acked).sum::<usize>()
        )
    };
    println!(
        "{:<40} {:>23}   {:>23}",
        "acknowledged writes lost (total)",
        lost(&runs[0]),
        lost(&runs[1])
    );
    let rounds_ok = |run: &Run| format!("{}/{}", ok(run).len(), run.rounds.len());
    println!(
        "{:<40} {:>23}   {:>23}",
        "rounds completed",
        rounds_ok(&runs[0]),
        rounds_ok(&runs[1])
    );
    let memory = |run: &Run| match &run.memory {
        Some(Ok(m)) => format!(
            "{} (peak {}) @{:.1}s",
            mb(m.rss_kb),
            mb(m.hwm_kb),
            m.after.as_secs_f64()
        ),
        Some(Err(e)) => format!("unknown: {e}"),
        None => "not measured".into(),
    };
    println!(
        "{:<40} {:>23}   {:>23}",
        if n == 1 {
            "VmRSS (VmHWM) watching 1 group".to_string()
        } else {
            format!("VmRSS (VmHWM), sum of {n} processes")
        },
        memory(&runs[0]),
        memory(&runs[1])
    );
    if n > 1 {
        // Issue 3: our median within max_down_time + 250 ms, and below Sentinel's.
        let bound = settings.max_down_time * 1000.0 + 250.0;
        let verdicts: Vec<String> = rows
            .iter()
            .map(|(label, f)| {
                let ours = stats(&column(&runs[0], *f)).map(|s| s.median);
                let theirs = stats(&column(&runs[1], *f)).map(|s| s.median);
                let within = |o: f64| {
                    if o <= bound {
                        format!("{o:.0} within {bound:.0}")
                    } else {
                        format!("{o:.0} NOT within {bound:.0}")
                    }
                };
                let verdict = match (ours, theirs) {
                    (Some(o), Some(t)) => format!(
                        "{}, {} Sentinel's {t:.0}",
                        within(o),
                        if o < t { "below" } else { "NOT below" }
                    ),
                    (Some(o), None) => format!("{}; no Sentinel figure", within(o)),
                    _ => "no figure".to_string(),
                };
                format!("{} {verdict}", &label[..3])
            })
            .collect();
        println!(
            "issue 3 target (our median within max_down_time + 250 ms and below Sentinel's): {}",
            verdicts.join("; ")
        );
    }
    let binary = env!("CARGO_BIN_EXE_redis-failover");
    match std::fs::metadata(binary) {
        Ok(meta) => println!(
            "daemon binary: {} bytes ({:.2} MB) at {binary}",
            meta.len(),
            meta.len() as f64 / (1024.0 * 1024.0)
        ),
        Err(e) => println!("daemon binary: cannot stat {binary}: {e}"),
    }
    println!(
        "(a) and (b) are seen by separate threads, so (b) may read a millisecond before (a). \
         lost = acknowledged by the old master, absent on the new one."
    );
    println!("whole bench: {:.0} s", began.elapsed().as_secs_f64());
}
