//! The load balancers' health checks and the failover history, against real
//! redis-server processes: what HAProxy's `option httpchk` sees before and after a
//! `kill -9` of a master, and what `GET /api/v1/history` tells an operator afterwards.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::groups::topology;
use support::{Daemon, RedisServer, wait_until};

/// Failovers take a whole down window plus the attempt; CI machines are slow.
const LONG: Duration = Duration::from_secs(30);

/// Waits until `GET path` answers `status`; returns the body.
fn wait_for_status(daemon: &Daemon, path: &str, status: u16) -> String {
    wait_until(LONG, &format!("GET {path} -> {status}"), || {
        match daemon.http("GET", path, "") {
            Ok((got, body)) if got == status => Ok(body),
            Ok((got, body)) => Err(format!("{got} {body}")),
            Err(e) => Err(e),
        }
    })
}

fn get(daemon: &Daemon, path: &str) -> (u16, String) {
    daemon
        .http("GET", path, "")
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Waits until group `name` has a master other than `old` and is ok again.
fn wait_for_new_master(daemon: &Daemon, name: &str, old: &str) -> String {
    wait_until(LONG, &format!("{name} failed over from {old}"), || {
        let g = daemon.group(name);
        match g["master"].as_str() {
            Some(master) if master != old && g["state"] == "ok" => Ok(master.to_string()),
            _ => Err(g.to_string()),
        }
    })
}

#[test]
fn health_checks_follow_the_master_through_a_failover() {
    let (mut master, a, b) = topology(10, 20);
    let masters = format!("-masters=cache={}", master.addr());
    let daemon = Daemon::start(&[&masters, "-check_interval=100", "-max_down_time=1"]);
    daemon.wait_group_ok("cache", 2);

    // Before: the master's address is the master, a linked replica is a replica.
    let body = wait_for_status(&daemon, "/api/v1/groups/cache/master", 200);
    assert_eq!(body, format!("{}\n", master.addr()));
    let master_check = format!("/health/master?addr={}", master.addr());
    wait_for_status(&daemon, &master_check, 200);
    wait_for_status(&daemon, &format!("/health/replica?addr={}", a.addr()), 200);
    wait_for_status(
        &daemon,
        &format!("/health/replica?addr={}&max_lag=1000000", b.addr()),
        200,
    );
    // A replica is not the master, the master is not a replica.
    let (status, body) = get(&daemon, &format!("/health/master?addr={}", a.addr()));
    assert_eq!(status, 503, "{body}");
    let (status, body) = get(&daemon, &format!("/health/replica?addr={}", master.addr()));
    assert_eq!(status, 503, "{body}");

    // Bad input: a reason, and the daemon keeps answering.
    for (path, status, says) in [
        ("/health/master", 400, "missing parameter: addr"),
        ("/health/master?addr=nohost", 400, "addr:"),
        (
            "/health/replica?addr=127.0.0.1:1&max_lag=lots",
            400,
            "max_lag",
        ),
        ("/api/v1/groups/nosuch/master", 404, "no group named nosuch"),
    ] {
        let (got, body) = get(&daemon, path);
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    let (status, body) = daemon
        .http("POST", "/health/master?addr=127.0.0.1:1", "")
        .expect("POST /health/master");
    assert_eq!(status, 405, "{body}");

    // kill -9 of the master: its address stops being the master, the promoted replica
    // (priority 10) becomes it, and the group's master endpoint names it.
    let old = master.addr();
    master.kill();
    let body = wait_for_status(&daemon, &master_check, 503);
    assert!(body.contains(&old), "{body}");
    let new = wait_for_new_master(&daemon, "cache", &old);
    assert_eq!(
        new,
        a.addr(),
        "the replica with the best priority is promoted"
    );
    wait_for_status(&daemon, &format!("/health/master?addr={new}"), 200);
    let body = wait_for_status(&daemon, "/api/v1/groups/cache/master", 200);
    assert_eq!(body, format!("{new}\n"));
    let (status, body) = get(&daemon, &master_check);
    assert_eq!(status, 503, "the old master after the failover: {body}");
    // The other replica follows the new master and is healthy again.
    wait_for_status(&daemon, &format!("/health/replica?addr={}", b.addr()), 200);
    // A load balancer's routine 503s do not fill the log; bad requests still show.
    let log = daemon.log();
    assert!(
        !log.contains("-> 503"),
        "503s of health checks logged:\n{log}"
    );
    assert!(log.contains("/health/master?addr=nohost -> 400"), "{log}");
}

fn history(daemon: &Daemon, query: &str) -> Vec<Value> {
    let path = format!("/api/v1/history{query}");
    let (status, body) = get(daemon, &path);
    assert_eq!(status, 200, "{path}: {body}");
    match serde_json::from_str::<Value>(&body) {
        Ok(Value::Array(records)) => records,
        other => panic!("{path}: not a JSON array: {other:?} in {body}"),
    }
}

fn summary(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            format!(
                "{} {} -> {} {}",
                r["group"].as_str().unwrap_or("?"),
                r["old_master"].as_str().unwrap_or("?"),
                r["new_master"].as_str().unwrap_or("-"),
                r["outcome"].as_str().unwrap_or("?"),
            )
        })
        .collect()
}

#[test]
fn history_lists_failovers_newest_first_by_group_and_limit() {
    let (mut m, mut a, b) = topology(10, 20);
    let mut n = RedisServer::master();
    let c = RedisServer::replica_of(n.port, 10);
    n.wait_for_replicas(1);
    let masters = format!("-masters=g={},h={}", m.addr(), n.addr());
    let daemon = Daemon::start(&[&masters, "-check_interval=100", "-max_down_time=1"]);
    daemon.wait_group_ok("g", 2);
    daemon.wait_group_ok("h", 1);
    assert!(history(&daemon, "").is_empty());

    // Three failovers, one after the other: g (m -> a), h (n -> c), g again (a -> b).
    m.kill();
    assert_eq!(wait_for_new_master(&daemon, "g", &m.addr()), a.addr());
    n.kill();
    assert_eq!(wait_for_new_master(&daemon, "h", &n.addr()), c.addr());
    daemon.wait_group_ok("g", 1);
    a.kill();
    assert_eq!(wait_for_new_master(&daemon, "g", &a.addr()), b.addr());

    let all = summary(&history(&daemon, ""));
    let expected = vec![
        format!("g {} -> {} succeeded", a.addr(), b.addr()),
        format!("h {} -> {} succeeded", n.addr(), c.addr()),
        format!("g {} -> {} succeeded", m.addr(), a.addr()),
    ];
    assert_eq!(all, expected, "newest first");
    assert_eq!(
        summary(&history(&daemon, "?group=g")),
        vec![expected[0].clone(), expected[2].clone()]
    );
    assert_eq!(
        summary(&history(&daemon, "?group=h")),
        vec![expected[1].clone()]
    );
    assert!(history(&daemon, "?group=nosuch").is_empty());
    assert_eq!(
        summary(&history(&daemon, "?limit=1")),
        vec![expected[0].clone()]
    );
    assert_eq!(
        summary(&history(&daemon, "?group=g&limit=1")),
        vec![expected[0].clone()]
    );
    // Each record says when it began and how long it took.
    for record in history(&daemon, "") {
        assert!(record["started_at_ms"].as_u64().is_some(), "{record}");
        assert!(record["duration_ms"].as_u64().is_some(), "{record}");
    }
    for bad in ["?limit=0", "?limit=x", "?limit=-1"] {
        let (status, body) = get(&daemon, &format!("/api/v1/history{bad}"));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("limit"), "{bad}: {body}");
    }
}

/// HAProxy, configured as docs/operations.md shows, in front of the servers.
struct HaProxy {
    child: std::process::Child,
    port: u16,
    _dir: support::TempDir,
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const HAPROXY: &str = "/usr/sbin/haproxy";

fn haproxy(daemon_port: u16, servers: &[&RedisServer]) -> HaProxy {
    let dir = support::TempDir::new("haproxy");
    let port = support::free_port();
    let lines: Vec<String> = servers
        .iter()
        .map(|s| format!("    server {0} {0}\n", s.addr()))
        .collect();
    let config = format!(
        "defaults\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    timeout check 2s\n\
         frontend redis_cache_write\n    mode tcp\n    bind 127.0.0.1:{port}\n    default_backend redis_cache_master\n\
         backend redis_cache_master\n    mode tcp\n    option httpchk\n\
         \x20   http-check send meth GET uri-lf /health/master?addr=%[srv_name]\n\
         \x20   default-server check addr 127.0.0.1 port {daemon_port} inter 200ms fall 1 rise 1 on-marked-down shutdown-sessions\n{}",
        lines.concat()
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config).expect("write haproxy.cfg");
    let child = std::process::Command::new(HAPROXY)
        .arg("-f")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start haproxy");
    HaProxy {
        child,
        port,
        _dir: dir,
    }
}

/// The port of the server behind HAProxy's frontend, as that server reports it.
fn port_behind(front: u16) -> Result<String, String> {
    match support::redis_cmd(front, &["CONFIG", "GET", "port"])? {
        redis::Value::Array(items) => match items.get(1) {
            Some(redis::Value::BulkString(port)) => Ok(String::from_utf8_lossy(port).into()),
            other => Err(format!("{other:?}")),
        },
        other => Err(format!("{other:?}")),
    }
}

#[test]
fn haproxy_as_documented_sends_writes_to_the_master_through_a_failover() {
    if !std::path::Path::new(HAPROXY).exists() {
        eprintln!("SKIPPED: HAProxy is not installed at {HAPROXY} (apt-get install haproxy)");
        return;
    }
    let mut master = RedisServer::master();
    let replica = RedisServer::replica_of(master.port, 10);
    master.wait_for_replicas(1);
    let masters = format!("-masters=cache={}", master.addr());
    let daemon = Daemon::start(&[&masters, "-check_interval=100", "-max_down_time=1"]);
    daemon.wait_group_ok("cache", 1);
    let proxy = haproxy(daemon.port, &[&master, &replica]);

    let wait_for_port = |port: u16| {
        wait_until(LONG, &format!("HAProxy sending to port {port}"), || {
            let behind = port_behind(proxy.port)?;
            support::redis_cmd(proxy.port, &["SET", "through", "haproxy"])?;
            if behind == port.to_string() {
                Ok(())
            } else {
                Err(format!("behind the frontend: port {behind}"))
            }
        })
    };
    wait_for_port(master.port);
    master.kill();
    wait_for_port(replica.port);
}

#[test]
fn every_daemon_of_a_raft_cluster_answers_the_health_checks_and_the_history() {
    let mut master = RedisServer::master();
    let replica = RedisServer::replica_of(master.port, 10);
    master.wait_for_replicas(1);
    let mut cluster =
        support::RaftCluster::start(3, &["-check_interval=100", "-max_down_time=1"], &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], LONG);
    let (status, body) = cluster.nodes[leader]
        .http(
            "POST",
            &format!("/master?masters=cache={}", master.addr()),
            "",
        )
        .expect("POST /master");
    assert_eq!(status, 200, "{body}");
    for node in &cluster.nodes {
        node.wait_group_ok("cache", 1);
        let body = wait_for_status(node, "/api/v1/groups/cache/master", 200);
        assert_eq!(body, format!("{}\n", master.addr()));
        wait_for_status(
            node,
            &format!("/health/replica?addr={}", replica.addr()),
            200,
        );
    }
    let old = master.addr();
    master.kill();
    for (i, node) in cluster.nodes.iter().enumerate() {
        wait_for_status(
            node,
            &format!("/health/master?addr={}", replica.addr()),
            200,
        );
        let (status, body) = get(node, &format!("/health/master?addr={old}"));
        assert_eq!(status, 503, "node {i} (leader {leader}): {body}");
        // The history is replicated: followers list the failover too.
        let records = wait_until(LONG, &format!("the failover in node {i}'s history"), || {
            let records = summary(&history(node, "?group=cache"));
            if records.is_empty() {
                Err("no record yet".into())
            } else {
                Ok(records)
            }
        });
        assert_eq!(
            records,
            vec![format!("cache {old} -> {} succeeded", replica.addr())],
            "node {i} (leader {leader})"
        );
    }
}
