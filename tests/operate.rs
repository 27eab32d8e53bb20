//! The operator's controls, with real `redis-server`s and daemons: a maintenance pause
//! holds automatic failover back (and is recorded), a resume lets it run, a manual
//! failover runs on a dead master whatever the pause and is refused on a live one, the
//! anti-flapping block (`failover_block`) holds a second failover until acknowledged,
//! and a pause survives a leader change in a Raft and a ZooKeeper cluster.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::groups::*;
use support::{Daemon, RaftCluster, RedisServer, ZkCluster, ZooKeeper, wait_until};

const FAST: [&str; 2] = ["-check_interval=100", "-max_down_time=1"];
const ELECTION: Duration = Duration::from_secs(15);

fn watch(master: &RedisServer, extra: &[&str]) -> Daemon {
    let masters = format!("-masters=g={}", master.addr());
    let mut args = vec![masters.as_str()];
    args.extend(FAST);
    args.extend(extra);
    let daemon = Daemon::start(&args);
    wait_for_group(&daemon, "g", "g watched", |g| g["state"] == "ok");
    daemon
}

fn post(daemon: &Daemon, path: &str) -> (u16, String) {
    request(daemon, "POST", path)
}

/// Waits for a held-back attempt of g whose reason has `why`; returns the group.
fn wait_held_back(daemon: &Daemon, why: &str) -> Value {
    wait_for_group(daemon, "g", &format!("a held-back attempt ({why})"), |g| {
        let last = &g["last_failover"];
        last["kind"] == "held_back" && last["reason"].as_str().is_some_and(|r| r.contains(why))
    })
}

#[test]
fn a_paused_group_is_not_failed_over_until_resumed() {
    let (mut master, a, b) = topology(100, 100);
    let daemon = watch(&master, &[]);
    let (status, body) = post(&daemon, "/api/v1/groups/g/pause");
    assert_eq!(status, 200, "{body}");
    let g = daemon.group("g");
    assert!(g["paused"]["since_ms"].is_u64(), "{g}");
    assert!(g["paused"]["until_ms"].is_null(), "{g}");
    master.kill();
    let g = wait_held_back(&daemon, "the group is paused");
    assert_eq!(g["master"], master.addr(), "{g}");
    assert_eq!(role(&a), "slave");
    assert_eq!(role(&b), "slave");
    let metrics = request(&daemon, "GET", "/metrics").1;
    assert!(
        metrics.contains("redis_failover_paused{group=\"g\"} 1"),
        "{metrics}"
    );
    assert!(
        daemon
            .log()
            .contains("group g: automatic failover paused until resumed"),
        "the log says nothing of the pause"
    );

    let (status, body) = request(&daemon, "DELETE", "/api/v1/groups/g/pause");
    assert_eq!(status, 200, "{body}");
    let g = wait_for_group(&daemon, "g", "the failover after the resume", |g| {
        failover_ended(g, "succeeded")
    });
    assert!(g["paused"].is_null(), "{g}");
    let port = port_of(&g["master"]);
    assert!(port == a.port || port == b.port, "{g}");
    // The history keeps the held-back attempt before the failover.
    assert_eq!(g["last_failover"]["kind"], "failover", "{g}");
}

#[test]
fn a_pause_of_every_group_with_an_end_expires_by_itself() {
    let (mut master, a, b) = topology(100, 100);
    let daemon = watch(&master, &[]);
    let (status, body) = post(&daemon, "/api/v1/pause?for=3");
    assert_eq!(status, 200, "{body}");
    assert_eq!(post(&daemon, "/api/v1/pause?for=-1").0, 400);
    assert_eq!(post(&daemon, "/api/v1/pause?for=soon").0, 400);
    master.kill();
    wait_held_back(&daemon, "every group is paused");
    let g = wait_for_group(&daemon, "g", "the failover once the pause ran out", |g| {
        failover_ended(g, "succeeded")
    });
    let port = port_of(&g["master"]);
    assert!(port == a.port || port == b.port, "{g}");
}

#[test]
fn a_manual_failover_is_refused_on_a_live_master_and_runs_on_a_dead_one() {
    let (mut master, a, b) = topology(100, 100);
    let daemon = watch(&master, &[]);
    let (status, body) = post(&daemon, "/api/v1/groups/g/failover");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("switchover"), "{body}");
    assert_eq!(post(&daemon, "/api/v1/groups/nope/failover").0, 404);
    assert_eq!(request(&daemon, "GET", "/api/v1/groups/g/failover").0, 405);

    // Paused, so only the person's failover runs.
    assert_eq!(post(&daemon, "/api/v1/groups/g/pause").0, 200);
    master.kill();
    wait_for_group(&daemon, "g", "the master seen failing", |g| {
        g["state"] == "suspect" || g["state"] == "down"
    });
    let (status, body) = post(&daemon, "/api/v1/groups/g/failover");
    assert_eq!(status, 202, "{body}");
    let g = wait_for_group(&daemon, "g", "the manual failover", |g| {
        failover_ended(g, "succeeded")
    });
    assert_eq!(g["last_failover"]["kind"], "manual_failover", "{g}");
    let steps = g["last_failover"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        steps.iter().any(|s| s["name"] == "promote"),
        "the record keeps its steps: {g}"
    );
    let port = port_of(&g["master"]);
    assert!(port == a.port || port == b.port, "{g}");
}

#[test]
fn a_second_failover_within_the_block_waits_for_an_acknowledgement() {
    let (mut master, a, b) = topology(100, 100);
    let daemon = watch(&master, &["-failover_block=3600"]);
    master.kill();
    let g = wait_for_group(&daemon, "g", "the first failover", |g| {
        failover_ended(g, "succeeded") && g["replicas"].as_array().is_some_and(|r| !r.is_empty())
    });
    let blocked = g["blocked"].as_str().unwrap_or_default().to_string();
    assert!(blocked.contains("/api/v1/groups/g/ack"), "{g}");
    let (mut first, mut second) = if port_of(&g["master"]) == a.port {
        (a, b)
    } else {
        (b, a)
    };
    wait_replicating_from(&second, first.port, "the other replica to follow");
    wait_for_group(&daemon, "g", "the new master watched", |g| {
        g["state"] == "ok"
    });

    first.kill();
    let g = wait_held_back(&daemon, "blocked");
    assert_eq!(port_of(&g["master"]), first.port, "{g}");
    assert_eq!(role(&second), "slave");

    assert_eq!(post(&daemon, "/api/v1/groups/g/ack").0, 200);
    let g = wait_for_group(
        &daemon,
        "g",
        "the failover after the acknowledgement",
        |g| port_of(&g["master"]) == second.port && failover_ended(g, "succeeded"),
    );
    assert!(
        g["blocked"].is_string(),
        "blocked again after this failover: {g}"
    );
    second.kill();
    first.kill();
}

/// A pause asked of a follower: every node shows it.
fn pause_through_a_follower(nodes: &[Daemon], leader: usize) {
    let follower = (leader + 1) % nodes.len();
    let (status, body) = post(&nodes[follower], "/api/v1/groups/g/pause");
    assert_eq!(status, 200, "{body}");
    for (i, node) in nodes.iter().enumerate() {
        wait_for_group(node, "g", &format!("node {i} to show the pause"), |g| {
            g["paused"].is_object()
        });
    }
}

/// The leader elected after the pause holds the failover of the dead master back; a
/// manual failover asked of it runs; every running node lists both in its history and
/// answers the load balancers' health check for the new master.
fn the_new_leader_holds_the_failover_back(
    nodes: &[Daemon],
    leader: usize,
    mut master: RedisServer,
) {
    let running: Vec<&Daemon> = nodes
        .iter()
        .filter(|n| n.http("GET", "/master", "").is_ok())
        .collect();
    wait_for_group(&nodes[leader], "g", "g watched by the new leader", |g| {
        watched_with_replicas(g, 2)
    });
    master.kill();
    wait_held_back(&nodes[leader], "the group is paused");
    let (status, body) = post(&nodes[leader], "/api/v1/groups/g/failover");
    assert_eq!(status, 202, "{body}");
    let g = wait_for_group(&nodes[leader], "g", "the manual failover", |g| {
        failover_ended(g, "succeeded")
    });
    assert_eq!(g["last_failover"]["kind"], "manual_failover", "{g}");
    let new_master = str_of(&g["master"]);
    for node in running {
        let (status, body) = request(node, "GET", "/api/v1/history?group=g&limit=2");
        assert_eq!(status, 200, "{body}");
        let kinds: Vec<String> = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|r| str_of(&r["kind"]))
            .collect();
        assert_eq!(
            kinds,
            ["manual_failover", "held_back"],
            "history on port {}: {body}",
            node.port
        );
        wait_until(
            Duration::from_secs(20),
            "the health check of the new master",
            || match node.http("GET", "/api/v1/groups/g/master", "") {
                Ok((200, body)) if body.trim() == new_master => Ok(()),
                other => Err(format!("port {}: {other:?}", node.port)),
            },
        );
    }
    let (status, body) = request(&nodes[leader], "DELETE", "/api/v1/groups/g/pause");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_pause_survives_a_raft_leader_change() {
    let (master, _a, _b) = topology(100, 100);
    let masters = format!("-masters=g={}", master.addr());
    let mut args = FAST.to_vec();
    args.push(&masters);
    let mut cluster = RaftCluster::start(3, &args, &[]);
    let old = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    wait_for_group(&cluster.nodes[old], "g", "g watched", |g| {
        watched_with_replicas(g, 2)
    });
    pause_through_a_follower(&cluster.nodes, old);
    cluster.nodes[old].kill9();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let leader = cluster.wait_for_leader(&survivors, ELECTION);
    the_new_leader_holds_the_failover_back(&cluster.nodes, leader, master);
}

#[test]
fn a_pause_survives_a_zookeeper_leader_change() {
    let (master, _a, _b) = topology(100, 100);
    let zk = ZooKeeper::start();
    let masters = format!("-masters=g={}", master.addr());
    let args = [
        FAST[0],
        FAST[1],
        "-zk_session_timeout=2000",
        masters.as_str(),
    ];
    let mut cluster = ZkCluster::start(3, &zk.addr(), "/zk/operate", &args);
    let old = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    wait_for_group(&cluster.nodes[old], "g", "g watched", |g| {
        watched_with_replicas(g, 2)
    });
    pause_through_a_follower(&cluster.nodes, old);
    cluster.nodes[old].kill9();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let leader = cluster.wait_for_leader(&survivors, ELECTION);
    the_new_leader_holds_the_failover_back(&cluster.nodes, leader, master);
}

/// A script in `dir` that records its arguments, and vetoes unless `allow` exists.
fn veto_script(dir: &std::path::Path, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("veto.sh");
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho \"$@\" >> {}/args\n{body}\n", dir.display()),
    )
    .expect("write the script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    format!("-pre_failover_script={}", path.display())
}

#[test]
fn a_pre_failover_script_vetoes_a_failover_until_it_exits_0() {
    let dir = support::TempDir::new("veto");
    let allow = dir.path().join("allow");
    let script = veto_script(
        dir.path(),
        &format!(
            "[ -e {} ] && exit 0\necho 'not now: maintenance window'\nexit 1",
            allow.display()
        ),
    );
    let (mut master, a, b) = topology(100, 100);
    let daemon = watch(&master, &[script.as_str()]);
    master.kill();
    let g = wait_for_group(&daemon, "g", "a vetoed attempt", |g| {
        let r = g["last_failover"]["reason"].as_str().unwrap_or_default();
        r.contains("vetoed before promoting") && r.contains("not now: maintenance window")
    });
    assert_eq!(g["master"], master.addr(), "{g}");
    assert_eq!(g["last_failover"]["outcome"], "aborted", "{g}");
    assert_eq!(role(&a), "slave");
    assert_eq!(role(&b), "slave");
    let args = std::fs::read_to_string(dir.path().join("args")).unwrap_or_default();
    let first = args.lines().next().unwrap_or_default().to_string();
    let (host, port) = master
        .addr()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap_or_default();
    assert!(
        first.starts_with(&format!("g {host} {port} 127.0.0.1 ")),
        "the script's arguments: {first:?}"
    );

    std::fs::write(&allow, "").expect("allow");
    let g = wait_for_group(
        &daemon,
        "g",
        "the failover once the script allows it",
        |g| failover_ended(g, "succeeded"),
    );
    let port = port_of(&g["master"]);
    assert!(port == a.port || port == b.port, "{g}");
    let steps = g["last_failover"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(steps.iter().any(|s| s["name"] == "veto"), "{g}");
}

#[test]
fn a_pre_failover_script_that_hangs_is_killed_and_counts_as_a_veto() {
    let dir = support::TempDir::new("veto");
    let script = veto_script(dir.path(), "sleep 60");
    let (mut master, _a, _b) = topology(100, 100);
    let daemon = watch(
        &master,
        &[script.as_str(), "-pre_failover_script_timeout=0.3"],
    );
    master.kill();
    let g = wait_for_group(&daemon, "g", "an attempt stopped by the timeout", |g| {
        let r = g["last_failover"]["reason"].as_str().unwrap_or_default();
        r.contains("pre_failover_script timed out after 300 ms")
    });
    assert_eq!(g["master"], master.addr(), "{g}");
}

#[test]
fn a_pause_survives_a_restart_of_a_raft_node() {
    let (master, _a, _b) = topology(100, 100);
    let masters = format!("-masters=g={}", master.addr());
    let mut args = FAST.to_vec();
    args.push(&masters);
    let mut cluster = RaftCluster::start(1, &args, &[]);
    cluster.wait_for_leader(&[0], ELECTION);
    wait_for_group(&cluster.nodes[0], "g", "g watched", |g| g["state"] == "ok");
    assert_eq!(
        post(&cluster.nodes[0], "/api/v1/groups/g/pause?for=3600").0,
        200
    );
    let before = cluster.nodes[0].group("g")["paused"].clone();
    cluster.nodes[0].restart();
    cluster.wait_for_leader(&[0], ELECTION);
    let g = wait_for_group(&cluster.nodes[0], "g", "the pause after the restart", |g| {
        g["paused"].is_object()
    });
    assert_eq!(g["paused"], before, "{g}");
}
