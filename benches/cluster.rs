//! The Raft cluster on its own: `cargo bench --bench cluster`.
//!
//! Starts 3 daemons as one Raft cluster on free loopback ports, each in its own temp
//! dir (`-broker=raft -raft_addr -raft_data_dir -raft_cluster`, default raft settings:
//! 100 ms ticks, so elections after 1–2 s), and measures:
//!
//! - **Leader election after `kill -9` of the leader**, `BENCH_ROUNDS` rounds: from the
//!   kill, both survivors' `GET /api/v1/cluster` are polled every ~5 ms until one says
//!   `role` leader, then until it is `acting` (it has applied an entry of its term). The
//!   killed node is then restarted on the same ports and data dir, and the next round
//!   starts once it follows the new leader and has applied what the leader committed.
//! - **Commit latency of a master add**: `BENCH_COMMITS` sequential
//!   `POST /master?masters=gI=host:port` to the leader, then to a follower (which passes
//!   it to the leader through Raft), each with one HTTP/1.0 connection per request and
//!   with one kept-alive HTTP/1.1 connection. A request answers once the add is committed
//!   and applied on the node asked, so a figure includes the HTTP round trip, the
//!   leader's and a follower's fsync of the entry, and the apply. Each series' groups are
//!   deleted (one request) before the next series, so the daemons always watch few.
//! - **Memory and disk**: VmRSS (VmHWM) of each daemon and the size of its `raft.wal`
//!   and `raft.snapshot`, with a few groups and again at the end.
//! - **Failover when the leader daemon and the master die together**, `BENCH_ROUNDS`
//!   rounds (at least 5) on a second cluster with `-check_interval=100
//!   -max_down_time=1`: each round gives it a fresh master with two replicas, waits
//!   until every daemon has the replicas in its replicated state, kills the leader
//!   daemon and the master with `kill -9` back to back, and measures until a replica's
//!   `ROLE` says master (`tests/support/liveness.rs`). The new leader never saw that
//!   master alive.
//!
//! The groups point at addresses where nothing listens (127.1.x.y on a port probed
//! closed: a master address must be unique to its group), and the daemons run with
//! `-max_down_time=86400`, so no group ever goes down: no failover, and no failover
//! record, is committed behind the measured ones. Checks of a closed port are refused at
//! once, so they cost little. The daemons log at the default level (info).
//!
//! Prints figures; asserts nothing. Knobs: `BENCH_ROUNDS` (7), `BENCH_COMMITS` (500),
//! `BENCH_VERBOSE=1` (print the nodes' logs at the end).

#[path = "../tests/support/mod.rs"]
mod support;

use support::env_or;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::liveness::{Round, known_replicas_raft, leader_and_master_round};
use support::{Daemon, RaftCluster, free_port, http_request, memory_kb};

/// Pause between two polls of the survivors after a kill.
const POLL: Duration = Duration::from_millis(5);
/// How long a round waits for a new acting leader after the kill.
const ELECTION_DEADLINE: Duration = Duration::from_secs(30);
/// How long the restarted node may take to follow the new leader again.
const REJOIN_DEADLINE: Duration = Duration::from_secs(30);
/// The target for the median time to a new leader.
const ELECTION_TARGET_MS: f64 = 2000.0;
/// Requests sent before each commit series and not counted.
const WARM_UP: usize = 5;
/// Groups added before the first memory reading.
const FEW_GROUPS: usize = 3;
/// Memory is read once the daemons have been running this long.
const MEMORY_AFTER: Duration = Duration::from_secs(3);
/// Daemon flags besides the raft ones: no group ever goes down (see the module doc).
const DAEMON_ARGS: &[&str] = &["-max_down_time=86400"];
/// Daemon flags of the cluster that fails masters over.
const FAILOVER_ARGS: [&str; 2] = ["-check_interval=100", "-max_down_time=1"];
/// The daemons' log level: the default one, not the tests' debug.
const DAEMON_ENV: &[(&str, &str)] = &[("RUST_LOG", "info")];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---- figures --------------------------------------------------------------------------

/// Sorted copy of `values`.
fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn median(values: &[f64]) -> Option<f64> {
    let v = sorted(values);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of a non-empty slice.
fn percentile(values: &[f64], p: f64) -> f64 {
    let v = sorted(values);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn median_min_max(values: &[f64]) -> String {
    match median(values) {
        Some(m) => {
            let v = sorted(values);
            format!("median {m:.0}, min {:.0}, max {:.0}", v[0], v[v.len() - 1])
        }
        None => "no figures".to_string(),
    }
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

fn size(bytes: Option<u64>) -> String {
    match bytes {
        None => "-".to_string(),
        Some(b) if b < 10 * 1024 => format!("{b} B"),
        Some(b) if b < 10 * 1024 * 1024 => format!("{:.1} KB", b as f64 / 1024.0),
        Some(b) => format!("{:.1} MB", b as f64 / (1024.0 * 1024.0)),
    }
}

// ---- HTTP -----------------------------------------------------------------------------

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// One HTTP/1.1 connection kept alive across requests (reopened after an error or a
/// `Connection: close`). Requests have no body; replies must carry a Content-Length.
struct KeepAlive {
    port: u16,
    conn: Option<BufReader<TcpStream>>,
    /// Connections opened, the first included.
    opened: usize,
}

impl KeepAlive {
    fn new(port: u16) -> KeepAlive {
        KeepAlive {
            port,
            conn: None,
            opened: 0,
        }
    }

    fn request(&mut self, method: &str, path: &str) -> Result<(u16, String), String> {
        let reply = self.try_request(method, path);
        if reply.is_err() {
            self.conn = None;
        }
        reply
    }

    fn try_request(&mut self, method: &str, path: &str) -> Result<(u16, String), String> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            self.conn = Some(BufReader::new(stream));
            self.opened += 1;
        }
        let conn = self.conn.as_mut().expect("connected above");
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
        conn.get_mut()
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        conn.read_line(&mut line).map_err(|e| e.to_string())?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status line in {line:?}"))?;
        let mut length = None;
        let mut close = false;
        loop {
            line.clear();
            conn.read_line(&mut line).map_err(|e| e.to_string())?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse::<usize>().ok();
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                }
            }
        }
        let length = length.ok_or("a reply without Content-Length")?;
        let mut body = vec![0; length];
        conn.read_exact(&mut body).map_err(|e| e.to_string())?;
        if close {
            self.conn = None;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

// ---- the cluster ----------------------------------------------------------------------

/// Waits until every running node follows one acting leader; returns its index.
fn leader(cluster: &mut RaftCluster) -> usize {
    let all: Vec<usize> = (0..cluster.nodes.len()).collect();
    cluster.wait_for_leader(&all, Duration::from_secs(30))
}

/// One line per node: role, term, indexes, memory, files.
fn print_nodes(cluster: &mut RaftCluster, when: &str) {
    println!("{when}:");
    println!(
        "  {:<4} {:<9} {:>5} {:>7} {:>7} {:>9} {:>9} {:>10} {:>13}",
        "node", "role", "term", "commit", "applied", "VmRSS", "VmHWM", "raft.wal", "raft.snapshot"
    );
    let mut rss_total = 0;
    for i in 0..cluster.nodes.len() {
        let (role, term, commit, applied) = match cluster.status(i) {
            Ok(s) => (
                text(&s["role"]),
                text(&s["term"]),
                text(&s["commit_index"]),
                text(&s["applied_index"]),
            ),
            Err(e) => (format!("? {e}"), "-".into(), "-".into(), "-".into()),
        };
        let (rss, hwm) = match cluster.nodes[i].pid().map(memory_kb) {
            Some(Ok((rss, hwm))) => {
                rss_total += rss;
                (mb(rss), mb(hwm))
            }
            Some(Err(e)) => (e, String::new()),
            None => ("not running".into(), String::new()),
        };
        let dir = cluster.data_dir(i);
        let file = |name: &str| std::fs::metadata(dir.join(name)).ok().map(|m| m.len());
        println!(
            "  {:<4} {:<9} {:>5} {:>7} {:>7} {:>9} {:>9} {:>10} {:>13}",
            i,
            role,
            term,
            commit,
            applied,
            rss,
            hwm,
            size(file("raft.wal")),
            size(file("raft.snapshot"))
        );
    }
    println!("  VmRSS of the 3 daemons together: {}", mb(rss_total));
}

/// Group addresses handed out so far: each group gets its own, as the daemon takes a
/// group with the master of another for the same group.
static ADDRS: AtomicUsize = AtomicUsize::new(0);

/// A new group address where nothing listens: `port` is closed on 127.0.0.1, so no
/// wildcard listener has it, and only the bench uses 127.1.x.y.
fn group_addr(port: u16) -> String {
    let i = ADDRS.fetch_add(1, Ordering::Relaxed);
    format!("127.1.{}.{}:{port}", i / 250, i % 250 + 1)
}

/// Adds `n` groups named `prefix0..` with one request each, all to `node`.
fn add_groups(node: &Daemon, prefix: &str, n: usize, port: u16) -> Result<(), String> {
    for i in 0..n {
        let path = format!("/master?masters={prefix}{i}={}", group_addr(port));
        match node.http("POST", &path, "")? {
            (200, _) => {}
            (status, body) => return Err(format!("POST {path}: {status} {}", body.trim())),
        }
    }
    Ok(())
}

/// Deletes the groups `prefix0..prefix{n-1}` with one request.
fn delete_groups(node: &Daemon, prefix: &str, n: usize) -> Result<(), String> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let body = format!("masters={}", names.join(","));
    match node.http("DELETE", "/master", &body)? {
        (200, _) => Ok(()),
        (status, body) => Err(format!("DELETE {n} groups: {status} {}", body.trim())),
    }
}

// ---- leader election ------------------------------------------------------------------

struct Election {
    killed: usize,
    /// The survivor that became leader first.
    elected: Option<usize>,
    leader_ms: Option<f64>,
    acting_ms: Option<f64>,
    term_before: u64,
    term_after: u64,
    /// From the restart until the restarted node follows the new leader and caught up.
    rejoin_ms: Option<f64>,
    /// Each change of a survivor's role or term after the kill, as seen by the polls:
    /// `n1 pre_candidate/t3@1105` (node, role, term, ms after the kill).
    path: Vec<String>,
    notes: Vec<String>,
}

fn election_round(cluster: &mut RaftCluster) -> Election {
    let killed = leader(cluster);
    let term_before = cluster
        .status(killed)
        .map(|s| s["term"].as_u64().unwrap_or(0))
        .unwrap_or(0);
    let survivors: Vec<usize> = (0..cluster.nodes.len()).filter(|&i| i != killed).collect();
    let mut round = Election {
        killed,
        elected: None,
        leader_ms: None,
        acting_ms: None,
        term_before,
        term_after: 0,
        rejoin_ms: None,
        path: Vec::new(),
        notes: Vec::new(),
    };

    let killed_at = Instant::now();
    cluster.nodes[killed].kill9();
    let mut last_seen = vec![String::new(); cluster.nodes.len()];
    let mut role_term = vec![("follower".to_string(), term_before); cluster.nodes.len()];
    while round.acting_ms.is_none() {
        if killed_at.elapsed() >= ELECTION_DEADLINE {
            round.notes.push(format!(
                "no acting leader within {ELECTION_DEADLINE:?}; last seen: {}",
                survivors
                    .iter()
                    .map(|&i| format!("node {i}: {}", last_seen[i]))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
            break;
        }
        for &i in &survivors {
            match cluster.status(i) {
                Ok(s) => {
                    let at = ms(killed_at.elapsed());
                    last_seen[i] = format!(
                        "role {} acting {} term {} leader {}",
                        s["role"], s["acting"], s["term"], s["leader"]["raft_addr"]
                    );
                    let now = (text(&s["role"]), s["term"].as_u64().unwrap_or(0));
                    if now != role_term[i] {
                        round
                            .path
                            .push(format!("n{i} {}/t{}@{at:.0}", now.0, now.1));
                        role_term[i] = now;
                    }
                    if s["role"] != "leader" {
                        continue;
                    }
                    if round.elected.is_some_and(|e| e != i) {
                        round.notes.push(format!(
                            "node {i} also reported leader at {at:.0} ms (term {})",
                            s["term"]
                        ));
                    }
                    if round.elected.is_none() {
                        round.elected = Some(i);
                        round.leader_ms = Some(at);
                    }
                    if s["acting"] == true && round.acting_ms.is_none() {
                        round.acting_ms = Some(at);
                        round.term_after = s["term"].as_u64().unwrap_or(0);
                        if round.elected != Some(i) {
                            round
                                .notes
                                .push(format!("node {i} acts, not the first leader"));
                        }
                    }
                }
                Err(e) => last_seen[i] = format!("error: {e}"),
            }
        }
        if round.acting_ms.is_none() {
            std::thread::sleep(POLL);
        }
    }

    // Bring the killed node back on the same ports and data dir.
    let restarted_at = Instant::now();
    cluster.nodes[killed].restart();
    let Some(new_leader) = round.elected.filter(|_| round.acting_ms.is_some()) else {
        return round;
    };
    let leader_addr = cluster.raft_addr(new_leader);
    let rejoined = wait_until_ok(REJOIN_DEADLINE, || {
        let lead = cluster.status(new_leader)?;
        let node = cluster.status(killed)?;
        let commit = lead["commit_index"].as_u64().unwrap_or(u64::MAX);
        let applied = node["applied_index"].as_u64().unwrap_or(0);
        if node["role"] == "follower"
            && node["leader"]["raft_addr"] == leader_addr.as_str()
            && applied >= commit
        {
            return Ok(());
        }
        Err(format!(
            "restarted node {killed}: role {} term {} leader {} applied {applied}; leader commit {commit}",
            node["role"], node["term"], node["leader"]["raft_addr"]
        ))
    });
    match rejoined {
        Ok(()) => round.rejoin_ms = Some(ms(restarted_at.elapsed())),
        Err(e) => round.notes.push(format!("did not rejoin: {e}")),
    }
    // The restarted node must not have disturbed the leader (pre-vote).
    match cluster.status(new_leader) {
        Ok(s) if s["role"] == "leader" && s["term"].as_u64() == Some(round.term_after) => {}
        Ok(s) => round.notes.push(format!(
            "after the rejoin node {new_leader} is {} in term {} (was leader in term {})",
            s["role"], s["term"], round.term_after
        )),
        Err(e) => round.notes.push(format!("node {new_leader}: {e}")),
    }
    round
}

/// Like `support::wait_until`, returning the last error instead of panicking.
fn wait_until_ok(
    timeout: Duration,
    mut probe: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(()) => return Ok(()),
            Err(seen) if Instant::now() >= deadline => return Err(seen),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

// ---- commit latency -------------------------------------------------------------------

struct Series {
    label: String,
    latencies: Vec<f64>,
    errors: usize,
    first_error: Option<String>,
    connections: Option<usize>,
    took: Duration,
}

/// `n` sequential adds of new groups named `prefix0..` on `node`, timed one by one.
fn commit_series(
    cluster: &RaftCluster,
    node: usize,
    label: &str,
    prefix: &str,
    keep_alive: bool,
    n: usize,
    port: u16,
) -> Series {
    let daemon = &cluster.nodes[node];
    let mut kept = KeepAlive::new(daemon.port);
    let mut series = Series {
        label: label.to_string(),
        latencies: Vec::with_capacity(n),
        errors: 0,
        first_error: None,
        connections: None,
        took: Duration::ZERO,
    };
    let mut began = Instant::now();
    for i in 0..WARM_UP + n {
        if i == WARM_UP {
            began = Instant::now();
        }
        let path = format!("/master?masters={prefix}{i}={}", group_addr(port));
        let sent = Instant::now();
        let reply = if keep_alive {
            kept.request("POST", &path)
        } else {
            http_request(daemon.port, "POST", &path, "")
        };
        let took = ms(sent.elapsed());
        match reply {
            Ok((200, _)) if i >= WARM_UP => series.latencies.push(took),
            Ok((200, _)) => {}
            Ok((status, body)) => {
                series.errors += 1;
                series
                    .first_error
                    .get_or_insert(format!("{status} {}", body.trim()));
            }
            Err(e) => {
                series.errors += 1;
                series.first_error.get_or_insert(e);
            }
        }
    }
    series.took = began.elapsed();
    if keep_alive {
        series.connections = Some(kept.opened);
    }
    if let Err(e) = delete_groups(daemon, prefix, WARM_UP + n) {
        series
            .first_error
            .get_or_insert(format!("cleaning up: {e}"));
    }
    series
}

fn print_series(series: &[Series]) {
    println!(
        "  {:<44} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8}",
        "", "n", "p50", "p90", "p99", "max", "mean", "adds/s"
    );
    for s in series {
        let v = &s.latencies;
        if v.is_empty() {
            println!("  {:<44} no successful request", s.label);
        } else {
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            println!(
                "  {:<44} {:>6} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>8.0}",
                s.label,
                v.len(),
                percentile(v, 50.0),
                percentile(v, 90.0),
                percentile(v, 99.0),
                percentile(v, 100.0),
                mean,
                1000.0 / mean
            );
        }
        let mut extra = Vec::new();
        if s.errors > 0 {
            extra.push(format!(
                "{} failed requests, first: {}",
                s.errors,
                s.first_error.as_deref().unwrap_or("?")
            ));
        } else if let Some(e) = &s.first_error {
            extra.push(e.clone());
        }
        if let Some(c) = s.connections.filter(|&c| c != 1) {
            extra.push(format!("{c} connections opened"));
        }
        if !extra.is_empty() {
            println!("  {:<44} ({})", "", extra.join("; "));
        }
    }
}

// ---- main -----------------------------------------------------------------------------

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let rounds: usize = env_or("BENCH_ROUNDS", 7usize).max(1);
    let commits: usize = env_or("BENCH_COMMITS", 500usize).max(1);
    let verbose = std::env::var("BENCH_VERBOSE").is_ok_and(|v| v == "1");
    let began = Instant::now();
    // The port every bench group points at: closed on 127.0.0.1, so no wildcard listener.
    let closed_port = free_port();

    let started = Instant::now();
    let mut cluster = RaftCluster::start(3, DAEMON_ARGS, DAEMON_ENV);
    let first = leader(&mut cluster);
    let formed = started.elapsed();
    eprintln!(
        "cluster formed: node {first} leads, {:.0} ms after starting the first daemon",
        ms(formed)
    );
    if let Err(e) = add_groups(&cluster.nodes[first], "few", FEW_GROUPS, closed_port) {
        eprintln!("adding {FEW_GROUPS} groups: {e}");
    }
    std::thread::sleep(MEMORY_AFTER.saturating_sub(started.elapsed()));

    println!();
    println!("3 daemons, one Raft cluster on loopback, default raft settings (tick 100 ms, ");
    println!("heartbeat 2 ticks, election after 10-20 ticks, pre-vote and check-quorum);");
    println!(
        "daemon flags {} and RUST_LOG=info; groups point at closed ports.",
        DAEMON_ARGS.join(" ")
    );
    println!(
        "Started 3 daemons one after the other; a leader all agree on after {:.0} ms.",
        ms(formed)
    );
    println!();
    print_nodes(&mut cluster, &format!("with {FEW_GROUPS} groups"));

    // Leader election.
    let mut elections = Vec::new();
    for round in 1..=rounds {
        let t = Instant::now();
        let e = election_round(&mut cluster);
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
        eprintln!(
            "election round {round}: killed node {}, node {} leader after {}, acting after {}; rejoined in {} {}[{:.1} s]",
            e.killed,
            e.elected.map_or("-".into(), |n| n.to_string()),
            fmt(e.leader_ms),
            fmt(e.acting_ms),
            fmt(e.rejoin_ms),
            if e.notes.is_empty() {
                String::new()
            } else {
                format!("({}) ", e.notes.join("; "))
            },
            t.elapsed().as_secs_f64()
        );
        elections.push(e);
    }
    println!();
    println!(
        "Leader election after kill -9 of the leader ({rounds} rounds; survivors polled every ~{} ms):",
        POLL.as_millis()
    );
    println!(
        "  {:>5} {:>6} {:>7} {:>10} {:>10} {:>11} {:>11}  survivors' role/term changes @ms; notes",
        "round", "killed", "elected", "leader ms", "acting ms", "term", "rejoin ms"
    );
    for (i, e) in elections.iter().enumerate() {
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        println!(
            "  {:>5} {:>6} {:>7} {:>10} {:>10} {:>11} {:>11}  {}",
            i + 1,
            e.killed,
            e.elected.map_or("-".into(), |n| n.to_string()),
            cell(e.leader_ms),
            cell(e.acting_ms),
            format!("{} -> {}", e.term_before, e.term_after),
            cell(e.rejoin_ms),
            e.path
                .iter()
                .chain(&e.notes)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    let leader_ms: Vec<f64> = elections.iter().filter_map(|e| e.leader_ms).collect();
    let acting_ms: Vec<f64> = elections.iter().filter_map(|e| e.acting_ms).collect();
    let rejoin_ms: Vec<f64> = elections.iter().filter_map(|e| e.rejoin_ms).collect();
    println!("  to a leader: {} ms", median_min_max(&leader_ms));
    println!("  to acting:   {} ms", median_min_max(&acting_ms));
    println!(
        "  rejoin (restart to following, caught up): {} ms",
        median_min_max(&rejoin_ms)
    );
    match median(&leader_ms) {
        Some(m) => println!(
            "  issue 3 target, a new leader within {ELECTION_TARGET_MS:.0} ms (median): {m:.0} ms, {}{}",
            if m <= ELECTION_TARGET_MS {
                "met"
            } else {
                "NOT met"
            },
            if leader_ms.len() < rounds {
                format!(
                    " ({} of {rounds} rounds elected no one)",
                    rounds - leader_ms.len()
                )
            } else {
                String::new()
            }
        ),
        None => println!("  issue 3 target: no round elected a leader"),
    }

    // Commit latency.
    let lead = leader(&mut cluster);
    let follower = (0..cluster.nodes.len())
        .find(|&i| i != lead)
        .expect("3 nodes");
    let mut series = Vec::new();
    for (node, to, prefix) in [(lead, "leader", "l"), (follower, "follower", "f")] {
        for keep_alive in [false, true] {
            let label = format!(
                "to the {to} (node {node}), {}",
                if keep_alive {
                    "one kept-alive conn"
                } else {
                    "a conn per request"
                }
            );
            let prefix = format!("{prefix}{}", if keep_alive { "k" } else { "c" });
            let s = commit_series(
                &cluster,
                node,
                &label,
                &prefix,
                keep_alive,
                commits,
                closed_port,
            );
            eprintln!(
                "commits {label}: {} ok, {} failed, p50 {:.2} ms [{:.1} s]",
                s.latencies.len(),
                s.errors,
                if s.latencies.is_empty() {
                    f64::NAN
                } else {
                    percentile(&s.latencies, 50.0)
                },
                s.took.as_secs_f64()
            );
            series.push(s);
        }
    }
    let lead_after = leader(&mut cluster);
    println!();
    println!(
        "Commit latency of a master add, ms: {commits} sequential POST /master?masters=gI=addr \
         (after {WARM_UP} not counted)"
    );
    println!(
        "  Each figure includes the HTTP round trip, the fsync of the entry on the leader and"
    );
    println!(
        "  a follower, and the apply on the node asked; to a follower it adds the forwarding."
    );
    print_series(&series);
    if lead_after != lead {
        println!("  NOTE: the leader changed during the series: node {lead} -> node {lead_after}");
    }
    println!();
    print_nodes(
        &mut cluster,
        &format!(
            "at the end ({} groups added and deleted again; a snapshot every 1,000 entries)",
            4 * (commits + WARM_UP) + FEW_GROUPS
        ),
    );

    if verbose {
        for (i, node) in cluster.nodes.iter().enumerate() {
            eprintln!("--- node {i} log ---\n{}\n---", node.log());
        }
    }
    drop(cluster);
    leader_and_master_rounds(rounds.max(5), verbose);
    println!();
    println!("whole bench: {:.0} s", began.elapsed().as_secs_f64());
}

// ---- leader and master killed together -------------------------------------------------

/// A cluster that fails over: `kill -9` of the leader daemon and of the master, back to
/// back, until a replica reports master.
fn leader_and_master_rounds(rounds: usize, verbose: bool) {
    support::require_redis();
    let mut cluster = RaftCluster::start(3, &FAILOVER_ARGS, DAEMON_ENV);
    leader(&mut cluster);
    let known = |nodes: &mut [Daemon], leader: usize, master: &str| {
        known_replicas_raft(nodes, leader, "bench", master)
    };
    let mut results: Vec<Result<Round, String>> = Vec::new();
    for round in 1..=rounds {
        let result = leader_and_master_round(&mut cluster.nodes, &known);
        match &result {
            Ok(r) => eprintln!(
                "leader+master round {round}: a replica master after {:.0} ms (a survivor acting after {})",
                ms(r.promoted_after),
                r.acting_after
                    .map_or("-".to_string(), |d| format!("{:.0} ms", ms(d)))
            ),
            Err(e) => eprintln!("leader+master round {round}: {e}"),
        }
        results.push(result);
    }
    let promoted: Vec<f64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| ms(r.promoted_after))
        .collect();
    let acting: Vec<f64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok()?.acting_after.map(ms))
        .collect();
    println!();
    println!(
        "Failover after kill -9 of the leader daemon and the master together ({rounds} rounds; {}):",
        FAILOVER_ARGS.join(" ")
    );
    println!(
        "  to a replica reporting master: {} ms",
        median_min_max(&promoted)
    );
    println!(
        "  to a surviving daemon acting:  {} ms",
        median_min_max(&acting)
    );
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        println!("  failed round: {e}");
    }
    if verbose {
        for (i, node) in cluster.nodes.iter().enumerate() {
            eprintln!("--- failover cluster node {i} log ---\n{}\n---", node.log());
        }
    }
}
