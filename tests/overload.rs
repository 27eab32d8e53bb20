//! Overload and starvation: the daemon's own slowness is not its masters' death.
//!
//! A daemon starved of CPU (stopped 900 ms of every second) must fail over no healthy
//! master, say that it is in tilt while it lasts, and still fail over a master that
//! really died meanwhile once the tilt ends. A burst of new groups (more connects than
//! the checker runs at once) must end with every group ok, with no failover attempt.
//! The 10,000-master case is a bench: `SCALE_TOPOLOGY=spread cargo bench --bench scale`.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::{Daemon, RedisServer, free_port, wait_until};

/// Groups of the starvation test, each a master with two replicas.
const GROUPS: usize = 50;
/// The group whose master really dies during the starvation.
const VICTIM: usize = 7;

/// A master and its two replicas, linked.
struct Trio {
    master: RedisServer,
    _replicas: [RedisServer; 2],
}

fn start_trios(n: usize) -> Vec<Trio> {
    // Started on a few threads: 150 servers one after the other take a while.
    let threads: Vec<_> = (0..n)
        .map(|_| {
            std::thread::spawn(|| {
                let master = RedisServer::master();
                let replicas = [
                    RedisServer::replica_of(master.port, 100),
                    RedisServer::replica_of(master.port, 100),
                ];
                master.wait_for_replicas(2);
                Trio {
                    master,
                    _replicas: replicas,
                }
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("start a master and two replicas"))
        .collect()
}

/// Every group's name and state.
fn states(daemon: &Daemon) -> Vec<(String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    daemon
        .groups()
        .as_array()
        .map(|groups| {
            groups
                .iter()
                .map(|g| (text(&g["name"]), text(&g["state"])))
                .collect()
        })
        .unwrap_or_default()
}

/// The groups not `ok`, but `except`.
fn not_ok(daemon: &Daemon, except: &str) -> Vec<(String, String)> {
    states(daemon)
        .into_iter()
        .filter(|(name, state)| name != except && state != "ok")
        .collect()
}

#[test]
fn a_starved_daemon_fails_over_no_healthy_master_and_a_dead_one_after_its_tilt() {
    let trios = start_trios(GROUPS);
    let masters: Vec<String> = trios
        .iter()
        .enumerate()
        .map(|(i, t)| format!("g{i}={}", t.master.addr()))
        .collect();
    let masters = format!("-masters={}", masters.join(","));
    let sentinel_port = free_port();
    let sentinel = format!("-sentinel_addr=127.0.0.1:{sentinel_port}");
    let daemon = Daemon::start(&[
        "-check_interval=100",
        "-max_down_time=1",
        &masters,
        &sentinel,
    ]);
    for i in 0..GROUPS {
        daemon.wait_group_ok(&format!("g{i}"), 2);
    }
    let victim = format!("g{VICTIM}");
    let victim = victim.as_str();
    let mut trios = trios;

    // Starved: stopped 900 ms of every second for 12 s; a master really dies at 4 s.
    let start = Instant::now();
    let mut killed_at = None;
    loop {
        daemon.signal("STOP");
        std::thread::sleep(Duration::from_millis(900));
        if killed_at.is_none() && start.elapsed() >= Duration::from_secs(4) {
            trios[VICTIM].master.kill();
            killed_at = Some(Instant::now());
        }
        daemon.signal("CONT");
        if start.elapsed() >= Duration::from_secs(12) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ended = Instant::now();

    // Still in tilt just after (it ends once the daemon was on time for 1.1 s), and it
    // says so on every surface.
    let (_, metrics) = daemon.http("GET", "/metrics", "").expect("GET /metrics");
    assert!(
        metrics.contains("\nredis_failover_tilt 1\n"),
        "tilt not shown in /metrics:\n{metrics}"
    );
    let groups = daemon.groups();
    let tilted = groups
        .as_array()
        .is_some_and(|gs| gs.iter().all(|g| g["tilt"] == Value::Bool(true)));
    assert!(tilted, "tilt not shown in /api/v1/groups: {groups}");
    let info = support::redis_cmd(sentinel_port, &["INFO", "sentinel"]).expect("INFO sentinel");
    let info = match info {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).to_string(),
        other => panic!("INFO sentinel: {other:?}"),
    };
    assert!(info.contains("sentinel_tilt:1"), "{info}");

    // Every healthy group answers as ok soon after.
    wait_until(Duration::from_secs(10), "every healthy group ok", || {
        let bad = not_ok(&daemon, victim);
        if bad.is_empty() {
            Ok(())
        } else {
            Err(format!("{bad:?}"))
        }
    });
    eprintln!(
        "every healthy group ok {} ms after the starvation ended",
        ended.elapsed().as_millis()
    );

    // The dead master is failed over, after the tilt.
    let old = trios[VICTIM].master.addr();
    let g = wait_until(
        Duration::from_secs(20),
        "the dead master failed over",
        || {
            let g = daemon.group(victim);
            let moved = g["master"].as_str().is_some_and(|m| m != old);
            if moved && g["state"] == "ok" {
                Ok(g)
            } else {
                Err(g.to_string())
            }
        },
    );
    let killed_at = killed_at.expect("the master was killed");
    eprintln!(
        "{victim} failed over {} ms after its master was killed, {} ms after the starvation ended",
        killed_at.elapsed().as_millis(),
        ended.elapsed().as_millis()
    );
    assert_eq!(g["last_failover"]["outcome"], "succeeded", "{g}");
    let log = daemon.log_of_this_run();
    let tilt_ends = log.find("tilt ends").expect("the log says when tilt ends");
    let begins = log
        .find(&format!("group {victim}: failover of master"))
        .expect("the log says when the failover begins");
    assert!(
        tilt_ends < begins,
        "the failover began before the tilt ended:\n{log}"
    );
    assert_eq!(
        log.matches("tilt: ").count(),
        1,
        "one tilt, entered once, for the whole starvation:\n{}",
        log.lines()
            .filter(|l| l.contains("tilt"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // No healthy master was failed over, or even tried.
    for (i, trio) in trios.iter().enumerate() {
        let name = format!("g{i}");
        if name == victim {
            continue;
        }
        let g = daemon.group(&name);
        assert_eq!(g["master"], trio.master.addr().as_str(), "{g}");
        assert!(g["last_failover"].is_null(), "{name} was failed over: {g}");
        assert!(
            !log.contains(&format!("group {name}: failover of master")),
            "a failover of {name} began"
        );
    }
}

#[test]
fn a_burst_of_new_groups_ends_with_every_group_ok_and_no_failover() {
    // 2,000 groups on one server: eight times more connects than the checker runs at
    // once, all asked for in the same instant.
    let server = RedisServer::start(&["--maxclients".into(), "5000".into()]);
    let daemon = Daemon::start(&["-check_interval=200", "-max_down_time=1"]);
    let masters: Vec<String> = (0..2000)
        .map(|i| format!("b{i}={}", server.addr()))
        .collect();
    let (status, body) = daemon
        .http("POST", "/master", &format!("masters={}", masters.join(",")))
        .expect("POST /master");
    assert_eq!(status, 200, "{body}");
    let asked = Instant::now();
    wait_until(Duration::from_secs(30), "all 2,000 groups ok", || {
        let states = states(&daemon);
        let ok = states.iter().filter(|(_, s)| s == "ok").count();
        if ok == 2000 {
            Ok(())
        } else {
            Err(format!("{ok} of {} ok", states.len()))
        }
    });
    eprintln!(
        "2,000 new groups ok {} ms after they were added",
        asked.elapsed().as_millis()
    );
    // And they stay ok: two whole windows later, no failover was attempted.
    std::thread::sleep(Duration::from_secs(2));
    let bad = not_ok(&daemon, "");
    assert!(bad.is_empty(), "groups not ok: {bad:?}");
    let log = daemon.log_of_this_run();
    assert!(
        !log.contains("failover of master"),
        "a failover began:\n{}",
        log.lines()
            .filter(|l| l.contains("failover"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Three daemons (Raft) that must all find a master down (`-quorum=3`). The master dies
/// and, meanwhile, one follower is starved: in tilt, its view counts no master down, so
/// no failover begins while it is starved (without tilt, its view in each 100 ms it ran
/// named the dead master, and the quorum was met). Once it is on time again, all three
/// agree and the master is failed over.
#[test]
fn a_daemon_in_tilt_casts_no_down_vote() {
    let master = RedisServer::master();
    let replicas = [
        RedisServer::replica_of(master.port, 100),
        RedisServer::replica_of(master.port, 100),
    ];
    master.wait_for_replicas(2);
    let masters = format!("-masters=g={}", master.addr());
    let args = [
        "-check_interval=100",
        "-max_down_time=1",
        "-quorum=3",
        &masters,
    ];
    let mut cluster = support::RaftCluster::start(3, &args, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], Duration::from_secs(15));
    let starved = (leader + 1) % 3;
    for i in 0..3 {
        wait_until(
            Duration::from_secs(20),
            "g ok with 2 replicas everywhere",
            || {
                let g = cluster.nodes[i].group("g");
                let listed = g["replicas"].as_array().map_or(0, Vec::len);
                if g["state"] == "ok" && listed == 2 {
                    Ok(())
                } else {
                    Err(g.to_string())
                }
            },
        );
    }

    let mut master = master;
    master.kill();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        cluster.nodes[starved].signal("STOP");
        std::thread::sleep(Duration::from_millis(900));
        cluster.nodes[starved].signal("CONT");
        std::thread::sleep(Duration::from_millis(100));
    }
    let g = cluster.nodes[leader].group("g");
    assert!(
        g["last_failover"].is_null(),
        "a failover began while one of the three daemons needed was in tilt: {g}"
    );
    let (_, metrics) = cluster.nodes[starved]
        .http("GET", "/metrics", "")
        .expect("GET /metrics");
    assert!(
        metrics.contains("\nredis_failover_tilt_entries_total 1\n"),
        "the starved daemon did not enter tilt once:\n{metrics}"
    );

    let g = wait_until(
        Duration::from_secs(20),
        "the dead master failed over",
        || {
            let g = cluster.nodes[leader].group("g");
            if g["last_failover"]["outcome"] == "succeeded" && g["state"] == "ok" {
                Ok(g)
            } else {
                Err(g.to_string())
            }
        },
    );
    let new = g["master"].as_str().unwrap_or_default().to_string();
    assert!(
        replicas.iter().any(|r| r.addr() == new),
        "the new master {new} is not one of the replicas"
    );
}
