//! The ZooKeeper cluster beside the Raft cluster: `cargo bench --bench zk`.
//!
//! Starts one ZooKeeper server (Debian's `zookeeper` package, 250 ms ticks) and, for each
//! broker, 3 daemons on free loopback ports (`-check_interval=100 -max_down_time=1`;
//! Raft at its default 100 ms tick), and measures:
//!
//! - **Leader hand-over after `kill -9` of the leader**, `BENCH_ROUNDS` rounds: from the
//!   kill, the survivors' `GET /api/v1/cluster` is polled every ~5 ms until one says
//!   `acting`. The killed daemon is then restarted and the next round waits until all
//!   three agree on one leader again. For ZooKeeper this is bounded below by the session
//!   timeout (the killed leader's election znode goes when its session expires), so it
//!   runs once per timeout in `BENCH_ZK_SESSION_TIMEOUTS` (ms, `2000,5000`; 5000 is the
//!   daemon's default).
//! - **End-to-end failover through the cluster**, `BENCH_ROUNDS` rounds: each round gives
//!   the cluster a fresh Redis master with two replicas (`PUT /master`), waits until the
//!   leader sees both replicas, kills the master with `kill -9`, and measures until (a) a
//!   replica's `ROLE` says master (polled every ms) and (b) a follower's `GET /master`
//!   names it (the record went through the broker and back to another daemon).
//!
//! - **Failover when the leader daemon and the master die together**, `BENCH_ROUNDS`
//!   rounds (at least 5) with the ZooKeeper cluster (2 s sessions): each round gives it
//!   a fresh master with two replicas, waits until the state znode (and every daemon's
//!   copy) holds the replicas, kills the leader daemon and the master with `kill -9`
//!   back to back, and measures until a replica's `ROLE` says master. The killed
//!   leader's session must expire before another daemon acts.
//!
//! - **ZooKeeper restart**, `BENCH_ROUNDS` rounds with the ZooKeeper cluster (2 s
//!   sessions): `kill -9` of the ZooKeeper server, then (c) until no daemon acts, and,
//!   once the server answers `ruok` again on the same data dir, (d) until one daemon acts.
//!
//! Prints figures; asserts nothing. Knobs: `BENCH_ROUNDS` (5),
//! `BENCH_ZK_SESSION_TIMEOUTS`, `BENCH_VERBOSE=1` (print the daemons' logs at the end).

#[path = "../tests/support/mod.rs"]
mod support;

use support::env_or;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::liveness::{Round, known_replicas_zk, leader_and_master_round};
use support::{Daemon, RaftCluster, RedisServer, ZkCluster, ZooKeeper, wait_until};

const FAST: [&str; 2] = ["-check_interval=100", "-max_down_time=1"];
const DEADLINE: Duration = Duration::from_secs(30);

/// `GET /api/v1/cluster` of a daemon, or `Null`.
fn status(node: &Daemon) -> Value {
    node.http("GET", "/api/v1/cluster", "")
        .ok()
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null)
}

/// The one acting node all running nodes agree on.
fn wait_for_one_leader(nodes: &mut [Daemon]) -> usize {
    wait_until(DEADLINE, "one acting leader", || {
        let running: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].is_running())
            .collect();
        let statuses: Vec<(usize, Value)> =
            running.iter().map(|&i| (i, status(&nodes[i]))).collect();
        let acting: Vec<usize> = statuses
            .iter()
            .filter(|(_, s)| s["acting"] == true)
            .map(|(i, _)| *i)
            .collect();
        let [leader] = acting[..] else {
            return Err(format!("{} acting", acting.len()));
        };
        let addr = format!("127.0.0.1:{}", nodes[leader].port);
        if statuses
            .iter()
            .all(|(_, s)| s["leader"]["http_addr"] == addr.as_str())
        {
            Ok(leader)
        } else {
            Err("not all agree".into())
        }
    })
}

/// Kills the leader, times until another node acts, restarts the killed one.
fn hand_over_round(nodes: &mut [Daemon]) -> Result<f64, String> {
    let old = wait_for_one_leader(nodes);
    nodes[old].kill9();
    let killed = Instant::now();
    let result = loop {
        if killed.elapsed() > DEADLINE {
            break Err(format!("no new leader within {DEADLINE:?}"));
        }
        let acting = (0..nodes.len())
            .filter(|&i| i != old)
            .any(|i| status(&nodes[i])["acting"] == true);
        if acting {
            break Ok(killed.elapsed().as_secs_f64() * 1000.0);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    nodes[old].restart();
    wait_for_one_leader(nodes);
    result
}

struct FailoverTimes {
    promoted_ms: f64,
    recorded_ms: f64,
}

/// A fresh master and two replicas for the cluster's group; kill -9 of the master.
fn failover_round(nodes: &mut [Daemon]) -> Result<FailoverTimes, String> {
    let mut master = RedisServer::master();
    let a = RedisServer::replica_of(master.port, 100);
    let b = RedisServer::replica_of(master.port, 100);
    master.wait_for_replicas(2);
    let leader = wait_for_one_leader(nodes);
    let follower = (leader + 1) % nodes.len();
    let put = format!("/master?masters=bench={}", master.addr());
    match nodes[follower].http("PUT", &put, "") {
        Ok((200, _)) => {}
        other => return Err(format!("PUT {put}: {other:?}")),
    }
    wait_until(DEADLINE, "the leader to see both replicas", || {
        let (_, body) = nodes[leader].http("GET", "/api/v1/groups", "")?;
        let groups: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let g = groups
            .as_array()
            .and_then(|list| list.iter().find(|g| g["name"] == "bench"))
            .cloned()
            .unwrap_or(Value::Null);
        if g["state"] == "ok" && g["replicas"].as_array().map(Vec::len) == Some(2) {
            Ok(())
        } else {
            Err(g.to_string())
        }
    });
    master.kill();
    let killed = Instant::now();
    let (promoted_ms, new_master) = loop {
        if killed.elapsed() > DEADLINE {
            return Err("no replica became master".into());
        }
        let found = [&a, &b]
            .into_iter()
            .find(|r| r.role().is_ok_and(|role| role == "master"));
        if let Some(r) = found {
            break (killed.elapsed().as_secs_f64() * 1000.0, r.addr());
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let recorded_ms = loop {
        if killed.elapsed() > DEADLINE {
            return Err("the follower never showed the new master".into());
        }
        if nodes[follower]
            .http("GET", "/master", "")
            .is_ok_and(|(_, body)| body.trim() == new_master)
        {
            break killed.elapsed().as_secs_f64() * 1000.0;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Ok(FailoverTimes {
        promoted_ms,
        recorded_ms,
    })
}

struct ZkRestartTimes {
    stopped_ms: f64,
    recovered_ms: f64,
}

fn zk_restart_round(zk: &mut ZooKeeper, nodes: &mut [Daemon]) -> Result<ZkRestartTimes, String> {
    wait_for_one_leader(nodes);
    zk.kill();
    let killed = Instant::now();
    let stopped_ms = loop {
        if killed.elapsed() > DEADLINE {
            return Err("a daemon kept acting without ZooKeeper".into());
        }
        if nodes.iter().all(|n| status(n)["acting"] == false) {
            break killed.elapsed().as_secs_f64() * 1000.0;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    zk.restart();
    let back = Instant::now();
    loop {
        if back.elapsed() > DEADLINE {
            return Err("no leader after ZooKeeper came back".into());
        }
        if nodes.iter().any(|n| status(n)["acting"] == true) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let recovered_ms = back.elapsed().as_secs_f64() * 1000.0;
    wait_for_one_leader(nodes);
    Ok(ZkRestartTimes {
        stopped_ms,
        recovered_ms,
    })
}

fn summary(values: &[f64]) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    format!("{median:.0} ({:.0}–{:.0})", v[0], v[n - 1])
}

fn report<T>(label: &str, results: &[Result<T, String>], value: impl Fn(&T) -> f64) {
    let ok: Vec<f64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(value)
        .collect();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    println!(
        "| {label} | {} | {}/{} |",
        summary(&ok),
        ok.len(),
        results.len()
    );
    for why in failed {
        println!("|   failed round: {why} | | |");
    }
}

fn main() {
    support::require_redis();
    let rounds = env_or("BENCH_ROUNDS", 5usize).max(1);
    let timeouts: Vec<u64> = std::env::var("BENCH_ZK_SESSION_TIMEOUTS")
        .unwrap_or_else(|_| "2000,5000".into())
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
        .collect();
    let verbose = std::env::var("BENCH_VERBOSE").is_ok_and(|v| v == "1");
    let mut zk = ZooKeeper::start();
    println!(
        "ZooKeeper {} (standalone, 250 ms ticks); {rounds} rounds each; ms after kill -9, median (min–max)\n",
        zk.addr()
    );
    println!("| measure | ms | rounds |");
    println!("|---|---|---|");

    for (n, timeout) in timeouts.iter().enumerate() {
        let session = format!("-zk_session_timeout={timeout}");
        let mut args = FAST.to_vec();
        args.push(&session);
        let mut cluster = ZkCluster::start(3, &zk.addr(), &format!("/zk/bench/handover{n}"), &args);
        let results: Vec<Result<f64, String>> = (0..rounds)
            .map(|_| hand_over_round(&mut cluster.nodes))
            .collect();
        report(
            &format!("zk: leader hand-over, session timeout {timeout} ms"),
            &results,
            |ms| *ms,
        );
        if verbose {
            for node in &cluster.nodes {
                eprintln!("--- zk node log ---\n{}", node.log());
            }
        }
    }

    let mut raft = RaftCluster::start(3, &FAST, &[]);
    let results: Vec<Result<f64, String>> = (0..rounds)
        .map(|_| hand_over_round(&mut raft.nodes))
        .collect();
    report("raft: leader hand-over, 100 ms ticks", &results, |ms| *ms);

    let session = "-zk_session_timeout=2000";
    let mut args = FAST.to_vec();
    args.push(session);
    let mut cluster = ZkCluster::start(3, &zk.addr(), "/zk/bench/failover", &args);

    let zk_failovers: Vec<Result<FailoverTimes, String>> = (0..rounds)
        .map(|_| failover_round(&mut cluster.nodes))
        .collect();
    report(
        "zk: failover, (a) replica reports master",
        &zk_failovers,
        |t| t.promoted_ms,
    );
    report(
        "zk: failover, (b) a follower shows it",
        &zk_failovers,
        |t| t.recorded_ms,
    );
    let raft_failovers: Vec<Result<FailoverTimes, String>> = (0..rounds)
        .map(|_| failover_round(&mut raft.nodes))
        .collect();
    report(
        "raft: failover, (a) replica reports master",
        &raft_failovers,
        |t| t.promoted_ms,
    );
    report(
        "raft: failover, (b) a follower shows it",
        &raft_failovers,
        |t| t.recorded_ms,
    );
    let path = "/zk/bench/failover";
    let zk_addr = zk.addr();
    let known = |nodes: &mut [Daemon], _leader: usize, master: &str| {
        known_replicas_zk(nodes, &zk_addr, path, "bench", master, 2)
    };
    let together: Vec<Result<Round, String>> = (0..rounds.max(5))
        .map(|_| leader_and_master_round(&mut cluster.nodes, &known))
        .collect();
    report(
        "zk: leader daemon and master killed together, replica reports master",
        &together,
        |r| r.promoted_after.as_secs_f64() * 1000.0,
    );
    report(
        "zk: leader daemon and master killed together, a daemon acts again",
        &together,
        |r| {
            r.acting_after
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
        },
    );
    let restarts: Vec<Result<ZkRestartTimes, String>> = (0..rounds)
        .map(|_| zk_restart_round(&mut zk, &mut cluster.nodes))
        .collect();
    report("zk: ZooKeeper killed, (c) no daemon acts", &restarts, |t| {
        t.stopped_ms
    });
    report(
        "zk: ZooKeeper back, (d) until one daemon acts",
        &restarts,
        |t| t.recovered_ms,
    );
    if verbose {
        for node in cluster.nodes.iter().chain(raft.nodes.iter()) {
            eprintln!("--- node log ---\n{}", node.log());
        }
    }
}
