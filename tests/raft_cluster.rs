//! Raft clusters of real `redis-failover` processes (`-broker=raft`) watching real
//! `redis-server`s: leader election, replication of the groups, kill -9 of the leader (also
//! mid-failover), restarts with the data directory, writes on followers, garbage on the
//! raft port, membership changes at runtime, and damaged data directories.
//!
//! Every test uses its own free ports and temp dirs, so they run in parallel. Only the
//! acting leader checks masters and fails them over; every node answers reads from its
//! own replicated state.

mod support;

use support::groups::*;
use support::liveness::{assert_taken_over, known_replicas_raft};
use support::raft_wire::{self, frame, send_raw};

use serde_json::Value;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{RaftCluster, RedisServer, TempDir, free_port, wait_until};

const FAST: [&str; 2] = ["-check_interval=100", "-max_down_time=1"];
/// A new leader takes 1–2 s at the default tick; CI machines are slow.
const ELECTION: Duration = Duration::from_secs(15);

/// The nodes of a cluster other than `except`.
fn others(cluster: &RaftCluster, except: usize) -> Vec<usize> {
    (0..cluster.nodes.len()).filter(|&i| i != except).collect()
}

/// The number of peers node `i` reports, with their raft addresses.
fn peers(cluster: &RaftCluster, i: usize) -> Result<Vec<String>, String> {
    let status = cluster.status(i)?;
    let mut addrs: Vec<String> = status["peers"]
        .as_array()
        .ok_or_else(|| format!("no peers: {status}"))?
        .iter()
        .map(|p| str_of(&p["raft_addr"]))
        .collect();
    addrs.sort();
    Ok(addrs)
}

#[test]
fn one_node_cluster_watches_and_fails_over() {
    let (mut master, a, b) = topology(100, 100);
    let mut cluster = RaftCluster::start(1, &FAST, &[]);
    let leader = cluster.wait_for_leader(&[0], ELECTION);
    let node = &cluster.nodes[leader];
    let log = node.log();
    assert!(
        log.contains("one-node cluster"),
        "no one-node cluster warning in the log:\n{log}"
    );

    write_ok(
        node,
        "POST",
        &format!("/master?masters=g={}", master.addr()),
    );
    let (_, masters) = request(node, "GET", "/master");
    assert_eq!(masters, master.addr(), "GET /master right after the POST");
    wait_for_group(node, "g", "g watched with 2 replicas", |g| {
        watched_with_replicas(g, 2)
    });

    master.kill();
    let g = wait_for_group(node, "g", "the failover of g", |g| {
        failover_ended(g, "succeeded")
    });
    let new_port = port_of(&g["master"]);
    assert!(
        new_port == a.port || new_port == b.port,
        "g's master is not a replica after the failover: {g}"
    );
    assert_eq!(g["last_failover"]["old_master"], master.addr(), "{g}");
    let (new, other) = if new_port == a.port {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(role(new), "master");
    wait_replicating_from(
        other,
        new.port,
        "the other replica to follow the new master",
    );
}

#[test]
fn three_nodes_elect_one_leader_and_replicate_a_master_add() {
    let master = RedisServer::master();
    let mut cluster = RaftCluster::start(3, &FAST, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);

    // Everyone names the same leader, with its HTTP address, and lists the 3 members.
    let leader_status = cluster.status(leader).unwrap();
    assert_eq!(leader_status["broker"], "raft");
    assert_eq!(
        leader_status["http_addr"],
        format!("127.0.0.1:{}", cluster.nodes[leader].port)
    );
    for i in 0..3 {
        let status = cluster.status(i).unwrap();
        assert_eq!(
            status["leader"]["http_addr"], leader_status["http_addr"],
            "node {i}: {status}"
        );
        assert_eq!(status["id"].as_str().map(str::len), Some(16), "{status}");
        if i != leader {
            assert_eq!(status["role"], "follower", "node {i}: {status}");
            assert_eq!(status["acting"], false, "node {i}: {status}");
        }
        let mut expected: Vec<String> = (0..3).map(|n| cluster.raft_addr(n)).collect();
        expected.sort();
        assert_eq!(peers(&cluster, i).unwrap(), expected, "node {i}: {status}");
    }

    // A master added on node 0 (leader or not) shows on all three.
    write_ok(
        &cluster.nodes[0],
        "POST",
        &format!("/master?masters=g={}", master.addr()),
    );
    let expected = format!("g={}", master.addr());
    wait_for_groups(&cluster.nodes, &[0, 1, 2], &expected, "the POST on node 0");
    for i in 0..3 {
        let (_, masters) = request(&cluster.nodes[i], "GET", "/master");
        assert_eq!(masters, master.addr(), "GET /master on node {i}");
    }
    // Every daemon checks it (followers too: their views count towards the quorum).
    for i in 0..3 {
        wait_for_group(&cluster.nodes[i], "g", &format!("g ok on node {i}"), |g| {
            g["state"] == "ok"
        });
    }
    // Prometheus sees who leads and where the log stands, on every node.
    for i in 0..3 {
        let (status, page) = request(&cluster.nodes[i], "GET", "/metrics");
        assert_eq!(status, 200, "{page}");
        let leads = if i == leader { 1 } else { 0 };
        assert!(
            page.contains(&format!("\nredis_failover_is_leader {leads}\n")),
            "node {i}: {page}"
        );
        for series in ["raft_term", "raft_commit_index", "raft_applied_index"] {
            assert!(
                page.contains(&format!("\nredis_failover_{series} ")),
                "node {i} lacks {series}: {page}"
            );
        }
        assert!(
            page.contains("\nredis_failover_raft_peers 3\n"),
            "node {i}: {page}"
        );
    }
}

#[test]
fn a_new_leader_keeps_watching_after_the_leader_is_killed() {
    let (mut master, a, b) = topology(100, 100);
    let masters = format!("-masters=g={}", master.addr());
    let mut args = FAST.to_vec();
    args.push(&masters);
    let mut cluster = RaftCluster::start(3, &args, &[]);
    let old = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    // The configured master is seeded once there is a leader, on every node.
    wait_for_groups(
        &cluster.nodes,
        &[0, 1, 2],
        &format!("g={}", master.addr()),
        "the -masters seed",
    );
    wait_for_group(
        &cluster.nodes[old],
        "g",
        "g watched by the first leader",
        |g| watched_with_replicas(g, 2),
    );

    let killed_at = Instant::now();
    cluster.nodes[old].kill9();
    let survivors = others(&cluster, old);
    let leader = cluster.wait_for_leader(&survivors, ELECTION);
    eprintln!(
        "new leader {} after {:?}",
        cluster.raft_addr(leader),
        killed_at.elapsed()
    );
    assert_ne!(leader, old);
    wait_for_group(
        &cluster.nodes[leader],
        "g",
        "g watched by the new leader",
        |g| watched_with_replicas(g, 2),
    );

    master.kill();
    let g = wait_for_group(
        &cluster.nodes[leader],
        "g",
        "the new leader's failover of g",
        |g| failover_ended(g, "succeeded"),
    );
    let new_port = port_of(&g["master"]);
    assert!(new_port == a.port || new_port == b.port, "{g}");
    // The follower that survived has the same record.
    for &i in &survivors {
        let seen = wait_for_group(
            &cluster.nodes[i],
            "g",
            &format!("node {i} to show the failover"),
            |seen| seen["master"] == g["master"] && seen["last_failover"]["outcome"] == "succeeded",
        );
        assert_eq!(seen["last_failover"]["old_master"], master.addr(), "{seen}");
    }
    let (new, other) = if new_port == a.port {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(role(new), "master");
    wait_replicating_from(
        other,
        new.port,
        "the other replica to follow the new master",
    );
}

#[test]
fn a_killed_follower_restarts_and_catches_up() {
    let m1 = RedisServer::master();
    let m2 = RedisServer::master();
    let mut cluster = RaftCluster::start(3, &FAST, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    let follower = others(&cluster, leader)[0];
    add_everywhere(
        &cluster.nodes,
        leader,
        &format!("one={}", m1.addr()),
        "the first add",
    );

    cluster.nodes[follower].kill9();
    // Two of three still commit. Enough writes that the leader snapshots and drops the
    // log the follower would need (every 1000 entries): it catches up by snapshot.
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let port = cluster.nodes[leader].port;
            let path = format!("/master?masters=w{t}={}", m2.addr());
            std::thread::spawn(move || {
                for n in 0..300 {
                    let method = if n % 2 == 0 { "POST" } else { "DELETE" };
                    let path = if n % 2 == 0 {
                        path.clone()
                    } else {
                        format!("/master?masters=w{t}")
                    };
                    match support::http_request(port, method, &path, "") {
                        Ok((200, _)) => {}
                        seen => panic!("write {n} of writer {t}: {seen:?}"),
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("a writer failed");
    }
    write_ok(
        &cluster.nodes[leader],
        "POST",
        &format!("/master?masters=two={}", m2.addr()),
    );
    write_ok(&cluster.nodes[leader], "DELETE", "/master?masters=one");
    let expected = format!("two={}", m2.addr());
    wait_for_groups(
        &cluster.nodes,
        &others(&cluster, follower),
        &expected,
        "while down",
    );
    let commit = cluster.status(leader).unwrap()["commit_index"]
        .as_u64()
        .unwrap();

    cluster.nodes[follower].restart();
    wait_for_groups(&cluster.nodes, &[follower], &expected, "after its restart");
    let leader_addr = cluster.raft_addr(leader);
    wait_until(LONG, "the restarted node to follow the leader", || {
        let status = cluster.status(follower)?;
        let applied = status["applied_index"].as_u64().unwrap_or(0);
        if status["role"] == "follower"
            && status["leader"]["raft_addr"] == leader_addr
            && applied >= commit
        {
            Ok(())
        } else {
            Err(format!("(leader {leader_addr}, commit {commit}) {status}"))
        }
    });
    let log = cluster.nodes[follower].log_of_this_run();
    assert!(
        log.contains("installed a snapshot"),
        "the restarted follower did not catch up by snapshot (did the leader compact its log after 1,200 writes?):\n{log}"
    );
    // Caught up, it is a full member again: a write needs it once another node is down.
    let third = others(&cluster, leader)
        .into_iter()
        .find(|&i| i != follower)
        .unwrap();
    cluster.nodes[third].kill9();
    write_ok(
        &cluster.nodes[follower],
        "POST",
        &format!("/master?masters=three={}", m1.addr()),
    );
    let expected = format!("three={},two={}", m1.addr(), m2.addr());
    wait_for_groups(
        &cluster.nodes,
        &[leader, follower],
        &expected,
        "a write with the third node down",
    );
    // Restarted alone (no leader to catch up from), it serves what it stored.
    cluster.nodes[leader].kill9();
    cluster.nodes[follower].restart();
    wait_for_groups(&cluster.nodes, &[follower], &expected, "a restart alone");
}

#[test]
fn all_nodes_restarted_keep_the_groups_and_the_failover() {
    let (mut master, a, b) = topology(100, 100);
    let masters = format!("-masters=g={}", master.addr());
    let mut args = FAST.to_vec();
    args.push(&masters);
    let mut cluster = RaftCluster::start(3, &args, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    wait_for_group(
        &cluster.nodes[leader],
        "g",
        "g watched by the leader",
        |g| watched_with_replicas(g, 2),
    );
    master.kill();
    let g = wait_for_group(&cluster.nodes[leader], "g", "the failover of g", |g| {
        failover_ended(g, "succeeded")
    });
    let new_master = str_of(&g["master"]);
    assert_ne!(new_master, master.addr());
    let expected = format!("g={new_master}");
    wait_for_groups(&cluster.nodes, &[0, 1, 2], &expected, "the failover");

    for node in &mut cluster.nodes {
        node.kill9();
    }
    for node in &mut cluster.nodes {
        node.restart();
    }
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    // The -masters seed (naming the old, dead master) runs again at start and must not
    // undo the failover.
    for (i, node) in cluster.nodes.iter().enumerate() {
        wait_until(LONG, &format!("node {i} to re-propose -masters"), || {
            let log = node.log_of_this_run();
            if log.contains("the configured masters are in the cluster's state") {
                Ok(())
            } else {
                Err(log.lines().rev().take(5).collect::<Vec<_>>().join(" | "))
            }
        });
    }
    wait_for_groups(
        &cluster.nodes,
        &[0, 1, 2],
        &expected,
        "after restarting all",
    );
    for i in 0..3 {
        let g = try_group(&cluster.nodes[i], "g").unwrap();
        assert_eq!(g["master"], new_master.as_str(), "node {i}: {g}");
        assert_eq!(
            g["last_failover"]["outcome"], "succeeded",
            "node {i} forgot the failover record: {g}"
        );
    }
    wait_for_group(&cluster.nodes[leader], "g", "g's new master watched", |g| {
        g["state"] == "ok" && g["master"] == new_master.as_str()
    });
    let new = if port_of(&g["master"]) == a.port {
        &a
    } else {
        &b
    };
    assert_eq!(role(new), "master");
}

/// The surviving daemons once `old` is gone, their new leader, and group g as that
/// leader shows it once the failover `old` began has an outcome.
fn ended_by_new_leader(
    cluster: &mut RaftCluster,
    old: usize,
    what: &str,
) -> (Vec<usize>, usize, Value) {
    let survivors = others(cluster, old);
    let leader = cluster.wait_for_leader(&survivors, ELECTION);
    let g = wait_for_group(&cluster.nodes[leader], "g", what, |g| {
        g["last_failover"]["outcome"].is_string() && g["state"] != "failing_over"
    });
    (survivors, leader, g)
}

/// A master with replicas a (priority 10, so elected) and b, watched by three daemons
/// that pause 5 s after failover-begin; the master is killed and the leader is caught
/// in that pause (not killed yet).
struct MidFailover {
    master: RedisServer,
    a: RedisServer,
    b: RedisServer,
    cluster: RaftCluster,
    /// The paused leader.
    old: usize,
    /// The replica its failover-begin named.
    chosen: String,
}

fn pause_mid_failover() -> MidFailover {
    let (mut master, a, b) = topology(10, 100);
    let masters = format!("-masters=g={}", master.addr());
    let mut args = FAST.to_vec();
    args.push(&masters);
    let pause = [("REDIS_FAILOVER_PAUSE_AFTER_BEGIN_MS", "5000")];
    let mut cluster = RaftCluster::start(3, &args, &pause);
    let old = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    wait_for_group(&cluster.nodes[old], "g", "g watched by the leader", |g| {
        watched_with_replicas(g, 2)
    });
    master.kill();
    let chosen = wait_until(LONG, "the leader to pause after failover-begin", || {
        let log = cluster.nodes[old].log();
        if !(log.contains("failover step begin")
            && log.contains("pausing 5000 ms after failover-begin"))
        {
            return Err(log.lines().rev().take(5).collect::<Vec<_>>().join(" | "));
        }
        log.lines()
            .find_map(|l| l.split_once("failover step elect").map(|(_, rest)| rest))
            .and_then(|rest| rest.rsplit_once("chose "))
            .map(|(_, addr)| addr.trim().to_string())
            .ok_or_else(|| "no 'failover step elect ... chose' line".to_string())
    });
    MidFailover {
        master,
        a,
        b,
        cluster,
        old,
        chosen,
    }
}

#[test]
fn leader_killed_mid_failover_the_new_leader_finishes_with_the_same_replica() {
    let MidFailover {
        master: _master,
        a,
        b,
        mut cluster,
        old,
        chosen,
    } = pause_mid_failover();
    // Killed while it sleeps between failover-begin and the promotion.
    cluster.nodes[old].kill9();
    assert_eq!(
        chosen,
        a.addr(),
        "the leader chose the replica with priority 10"
    );
    assert_eq!(
        role(&a),
        "slave",
        "promoted before failover-begin's pause ended"
    );

    let (survivors, leader, g) =
        ended_by_new_leader(&mut cluster, old, "the new leader to finish the failover");
    let log = cluster.nodes[leader].log();
    assert!(
        log.contains("finishing it") && log.contains("an earlier leader began"),
        "the new leader's log does not say it finished the earlier failover:\n{log}"
    );
    assert_eq!(g["last_failover"]["outcome"], "succeeded", "{g}");
    assert_eq!(g["master"], chosen.as_str(), "{g}");
    assert_eq!(g["last_failover"]["new_master"], chosen.as_str(), "{g}");
    let reason = str_of(&g["last_failover"]["reason"]);
    assert!(
        reason.contains("finished by a new leader"),
        "reason: {reason}; {g}"
    );
    for &i in &survivors {
        wait_for_group(
            &cluster.nodes[i],
            "g",
            &format!("node {i} to record the finished failover"),
            |seen| {
                seen["master"] == chosen.as_str() && seen["last_failover"]["outcome"] == "succeeded"
            },
        );
    }

    // Exactly one replica is master: the chosen one; the other replicates from it.
    assert_eq!(role(&a), "master");
    wait_replicating_from(&b, a.port, "the other replica to follow the chosen one");
    assert_eq!(role(&b), "slave");
    a.cmd(&["SET", "after", "1"]).unwrap();
    wait_until(
        LONG,
        "a write on the new master to reach the other replica",
        || match b.cmd(&["GET", "after"]) {
            Ok(redis::Value::BulkString(v)) if v == b"1" => Ok(()),
            seen => Err(format!("{seen:?}")),
        },
    );
    // And it stays so: the new leader watches the new master, no second failover.
    wait_for_group(
        &cluster.nodes[leader],
        "g",
        "g ok with its new master",
        |g| g["state"] == "ok" && g["master"] == chosen.as_str(),
    );
    assert_eq!(role(&b), "slave");
}

/// A replica an operator moved to another master while the failover was under way is
/// left there by the new leader that finishes it, as a fresh failover leaves it.
#[test]
fn a_new_leader_finishing_a_failover_leaves_a_replica_moved_elsewhere() {
    let MidFailover {
        master: _master,
        a,
        b,
        mut cluster,
        old,
        chosen,
    } = pause_mid_failover();
    assert_eq!(
        chosen,
        a.addr(),
        "the leader chose the replica with priority 10"
    );
    // While the leader pauses: b moves to another master, then the leader dies.
    let elsewhere = RedisServer::master();
    b.cmd(&["REPLICAOF", "127.0.0.1", &elsewhere.port.to_string()])
        .unwrap();
    wait_replicating_from(&b, elsewhere.port, "b to replicate from the other master");
    cluster.nodes[old].kill9();

    let (_, _, g) = ended_by_new_leader(&mut cluster, old, "the new leader to finish the failover");
    assert_eq!(g["last_failover"]["outcome"], "succeeded", "{g}");
    assert_eq!(g["master"], chosen.as_str(), "{g}");
    assert_eq!(role(&a), "master");
    // b was not taken back (the repoint step ends before the outcome is recorded): it
    // still replicates from the other master.
    assert_eq!(
        b.info_field("master_port").as_deref(),
        Ok(elsewhere.port.to_string().as_str()),
        "the moved replica was re-pointed to {chosen}"
    );
}

#[test]
fn leader_killed_mid_failover_with_the_chosen_replica_gone_promotes_no_other() {
    let MidFailover {
        master,
        mut a,
        b,
        mut cluster,
        old,
        chosen,
    } = pause_mid_failover();
    cluster.nodes[old].kill9();
    assert_eq!(
        chosen,
        a.addr(),
        "the leader chose the replica with priority 10"
    );
    // The chosen replica dies too: it may or may not have been promoted, so promoting b
    // could make two masters. The new leader must not.
    a.kill();
    let (survivors, leader, g) = ended_by_new_leader(
        &mut cluster,
        old,
        "the new leader to end the earlier failover",
    );
    let log = cluster.nodes[leader].log();
    assert!(
        log.contains("finishing it"),
        "the new leader's log does not say it took up the earlier failover:\n{log}"
    );
    assert_eq!(g["last_failover"]["outcome"], "failed", "{g}");
    assert_eq!(g["state"], "failed", "{g}");
    assert_eq!(g["master"], master.addr(), "{g}");
    let reason = str_of(&g["last_failover"]["reason"]);
    assert!(reason.contains(&chosen), "reason: {reason}; {g}");
    for &i in &survivors {
        wait_for_group(
            &cluster.nodes[i],
            "g",
            &format!("node {i} to record the failed failover"),
            |seen| seen["last_failover"]["outcome"] == "failed",
        );
    }
    assert_eq!(role(&b), "slave", "the other replica was promoted");
    assert_eq!(
        b.info_field("master_port").unwrap(),
        master.port.to_string()
    );
}

#[test]
fn a_leader_frozen_mid_failover_does_not_act_after_it_wakes() {
    let MidFailover {
        mut master,
        a,
        b,
        mut cluster,
        old,
        chosen,
    } = pause_mid_failover();
    // Frozen (a VM pause, a stopped process) between failover-begin and promotion.
    cluster.nodes[old].signal("STOP");
    assert_eq!(
        chosen,
        a.addr(),
        "the leader chose the replica with priority 10"
    );
    // The old master comes back meanwhile, so the new leader aborts the failover.
    master.restart();
    let (_, leader, g) = ended_by_new_leader(
        &mut cluster,
        old,
        "the new leader to end the earlier failover",
    );
    assert_eq!(g["last_failover"]["outcome"], "aborted", "{g}");
    assert_eq!(g["master"], master.addr(), "{g}");
    wait_replicating_from(&a, master.port, "a to replicate from the returned master");

    // The frozen leader wakes up: it is no longer the leader, so it must neither promote
    // the replica it chose nor overwrite the cluster's record.
    cluster.nodes[old].signal("CONT");
    wait_until(LONG, "the woken node to follow the new leader", || {
        let status = cluster.status(old)?;
        if status["acting"] == false && status["leader"]["raft_addr"] == cluster.raft_addr(leader) {
            Ok(())
        } else {
            Err(status.to_string())
        }
    });
    wait_until(LONG, "the woken node's failover worker to finish", || {
        let log = cluster.nodes[old].log();
        let after = log
            .split("pausing 5000 ms after failover-begin")
            .nth(1)
            .unwrap_or("");
        if after.contains("group g: failover ") {
            Ok(())
        } else {
            Err(after.lines().rev().take(5).collect::<Vec<_>>().join(" | "))
        }
    });
    assert_eq!(
        role(&a),
        "slave",
        "the leader that was frozen promoted {chosen} after the cluster had aborted that failover; log:\n{}",
        cluster.nodes[old].log_of_this_run()
    );
    for i in 0..3 {
        wait_for_group(
            &cluster.nodes[i],
            "g",
            &format!("node {i} to keep the returned master"),
            |seen| seen["master"] == master.addr() && seen["last_failover"]["outcome"] == "aborted",
        );
    }
    assert_eq!(role(&b), "slave");
}

#[test]
fn writes_on_a_follower_commit_and_without_quorum_get_503() {
    let m1 = RedisServer::master();
    let m2 = RedisServer::master();
    let mut cluster = RaftCluster::start(3, &FAST, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    let follower = others(&cluster, leader)[0];
    let node = &cluster.nodes[follower];

    // Answered only once committed and applied here: visible at once on this node.
    write_ok(node, "POST", &format!("/master?masters=one={}", m1.addr()));
    assert_eq!(
        group_list(node).unwrap(),
        format!("one={}", m1.addr()),
        "the follower answered 200 before applying its write"
    );
    write_ok(
        node,
        "PUT",
        &format!("/master?masters=one={},two={}", m1.addr(), m2.addr()),
    );
    write_ok(node, "DELETE", "/master?masters=one");
    let expected = format!("two={}", m2.addr());
    assert_eq!(group_list(node).unwrap(), expected);
    wait_for_groups(
        &cluster.nodes,
        &[0, 1, 2],
        &expected,
        "writes on a follower",
    );

    // Two of three down: no quorum, so a write fails with a reason, in bounded time.
    for i in others(&cluster, follower) {
        cluster.nodes[i].kill9();
    }
    let node = &cluster.nodes[follower];
    let started = Instant::now();
    let (status, body) = request(node, "POST", &format!("/master?masters=one={}", m1.addr()));
    let took = started.elapsed();
    assert_eq!(status, 503, "a write without quorum: {body}");
    assert!(!body.trim().is_empty(), "503 without a reason");
    assert!(took < Duration::from_secs(10), "503 took {took:?}: {body}");
    eprintln!("503 after {took:?}: {}", body.trim());
    // Reads still answer from the node's own state.
    assert_eq!(group_list(node).unwrap(), expected);
    // A membership change cannot commit either.
    let started = Instant::now();
    let (status, body) = request(
        node,
        "POST",
        &format!("/api/v1/cluster/peers?addr=127.0.0.1:{}", free_port()),
    );
    let took = started.elapsed();
    assert_eq!(status, 503, "a peer change without quorum: {body}");
    assert!(!body.trim().is_empty(), "503 without a reason");
    assert!(took < Duration::from_secs(10), "503 took {took:?}: {body}");
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn garbage_on_the_raft_port_leaves_the_cluster_working() {
    let m1 = RedisServer::master();
    let mut cluster = RaftCluster::start(3, &FAST, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    let term = cluster.status(leader).unwrap()["term"].as_u64().unwrap();

    let hello = raft_wire::hello("127.0.0.1:1");
    let forged = br#"{"id":1,"raft_addr":"127.0.0.1:1","http_addr":"127.0.0.1:2"}"#;
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", noise(64 * 1024, 0x9e37_79b9_7f4a_7c15)),
        ("a huge length prefix", {
            let mut b = vec![0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0, 1];
            b.extend(noise(100, 7));
            b
        }),
        ("a half record", frame(1, &noise(1000, 3))[..500].to_vec()),
        ("a bad checksum", {
            let mut b = frame(1, &hello);
            b[5] ^= 0xff;
            b
        }),
        ("a hello that is not JSON", frame(1, &noise(200, 11))),
        ("a hello with a forged id", frame(1, forged)),
        ("a hello then a message that is not protobuf", {
            let mut b = frame(1, &hello);
            b.extend(frame(2, &noise(300, 5)));
            b
        }),
    ];
    for (what, bytes) in &attacks {
        for i in 0..3 {
            // The half record is left hanging for a while before the close.
            let hold = if *what == "a half record" {
                Duration::from_millis(300)
            } else {
                Duration::ZERO
            };
            eprintln!("sending {what} to node {i}");
            send_raw(cluster.raft_ports[i], bytes, hold);
        }
    }
    for i in 0..3 {
        wait_until(
            LONG,
            &format!("node {i} to log dropped connections"),
            || {
                let log = cluster.nodes[i].log();
                let dropped = log.matches("dropped the connection from").count();
                if dropped >= 3 {
                    Ok(())
                } else {
                    Err(format!("{dropped} 'dropped the connection' lines"))
                }
            },
        );
        assert!(cluster.nodes[i].is_running(), "node {i} exited");
    }

    // Still one leader; a write on a follower commits and shows everywhere.
    let now = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    let now_term = cluster.status(now).unwrap()["term"].as_u64().unwrap();
    eprintln!("leader before: node {leader} term {term}; after: node {now} term {now_term}");
    let follower = others(&cluster, now)[0];
    add_everywhere(
        &cluster.nodes,
        follower,
        &format!("g={}", m1.addr()),
        "a write after the garbage",
    );
}

#[test]
fn a_fourth_node_is_added_at_runtime_catches_up_and_is_removed() {
    let m1 = RedisServer::master();
    let m2 = RedisServer::master();
    let mut cluster = RaftCluster::start(3, &FAST, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    write_ok(
        &cluster.nodes[leader],
        "POST",
        &format!("/master?masters=one={}", m1.addr()),
    );
    let expected = format!("one={}", m1.addr());
    wait_for_groups(&cluster.nodes, &[0, 1, 2], &expected, "the first add");

    let fourth = cluster.start_joining(&FAST);
    let addr4 = cluster.raft_addr(fourth);
    let log = cluster.nodes[fourth].log();
    assert!(
        log.contains("waiting to be added"),
        "the new node does not say it waits to be added:\n{log}"
    );
    assert_eq!(
        group_list(&cluster.nodes[fourth]).unwrap(),
        "",
        "a node not yet added has groups"
    );

    write_ok(
        &cluster.nodes[leader],
        "POST",
        &format!("/api/v1/cluster/peers?addr={addr4}"),
    );
    wait_for_groups(
        &cluster.nodes,
        &[fourth],
        &expected,
        "the added node's catch-up",
    );
    let mut all: Vec<String> = (0..4).map(|i| cluster.raft_addr(i)).collect();
    all.sort();
    for i in 0..4 {
        wait_until(LONG, &format!("node {i} to list 4 peers"), || {
            let seen = peers(&cluster, i)?;
            if seen == all {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        });
    }
    let leader_addr = cluster.raft_addr(leader);
    wait_until(LONG, "the fourth node to follow the leader", || {
        let status = cluster.status(fourth)?;
        if status["role"] == "follower" && status["leader"]["raft_addr"] == leader_addr {
            Ok(())
        } else {
            Err(status.to_string())
        }
    });
    // It takes part: a write on it commits and reaches everyone.
    write_ok(
        &cluster.nodes[fourth],
        "POST",
        &format!("/master?masters=two={}", m2.addr()),
    );
    let expected = format!("one={},two={}", m1.addr(), m2.addr());
    wait_for_groups(
        &cluster.nodes,
        &[0, 1, 2, 3],
        &expected,
        "a write on the fourth node",
    );

    // Bad membership requests are refused with a reason.
    let follower = others(&cluster, leader)[0];
    for (method, addr, says) in [
        ("POST", addr4.as_str(), "already a member"),
        ("POST", "not-an-address", ""),
        ("DELETE", "127.0.0.1:1", "not a member"),
    ] {
        let (status, body) = request(
            &cluster.nodes[follower],
            method,
            &format!("/api/v1/cluster/peers?addr={addr}"),
        );
        assert_eq!(status, 400, "{method} {addr}: {body}");
        assert!(body.contains(says), "{method} {addr}: {body}");
    }

    // Removed through a follower; the three list three peers again and keep working.
    write_ok(
        &cluster.nodes[follower],
        "DELETE",
        &format!("/api/v1/cluster/peers?addr={addr4}"),
    );
    all.retain(|a| *a != addr4);
    for i in 0..3 {
        wait_until(LONG, &format!("node {i} to list 3 peers"), || {
            let seen = peers(&cluster, i)?;
            if seen == all {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        });
    }
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    write_ok(&cluster.nodes[leader], "DELETE", "/master?masters=one");
    wait_for_groups(
        &cluster.nodes,
        &[0, 1, 2],
        &format!("two={}", m2.addr()),
        "a write after the removal",
    );
}

#[test]
fn a_restart_with_existing_state_adds_new_addresses_from_raft_cluster() {
    let m1 = RedisServer::master();
    let mut cluster = RaftCluster::start(3, &FAST, &[]);
    cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    write_ok(
        &cluster.nodes[0],
        "POST",
        &format!("/master?masters=g={}", m1.addr()),
    );
    let fourth = cluster.start_joining(&FAST);
    // Node 1 restarts (raft_cluster_state=existing, the default) with the fourth
    // address added to its -raft_cluster: it keeps the stored membership and adds it.
    let members = cluster.members();
    let args: Vec<String> = cluster.nodes[1]
        .args()
        .iter()
        .map(|a| {
            if a.starts_with("-raft_cluster=") {
                format!("-raft_cluster={members}")
            } else {
                a.clone()
            }
        })
        .collect();
    cluster.nodes[1].restart_with(&args);
    let mut all: Vec<String> = (0..4).map(|i| cluster.raft_addr(i)).collect();
    all.sort();
    for i in 0..4 {
        wait_until(LONG, &format!("node {i} to list 4 peers"), || {
            let seen = peers(&cluster, i)?;
            if seen == all {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        });
    }
    wait_for_groups(
        &cluster.nodes,
        &[fourth],
        &format!("g={}", m1.addr()),
        "the added node's catch-up",
    );
    cluster.wait_for_leader(&[0, 1, 2, 3], ELECTION);
}

/// Runs the daemon on a data dir it should refuse; returns its exit code and stderr.
fn run_to_exit(args: &[String]) -> (Option<i32>, String) {
    let out = TempDir::new("refused");
    let log = out.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-failover"))
        .arg(format!("-addr=127.0.0.1:{}", free_port()))
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start redis-failover");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), std::fs::read_to_string(&log).unwrap());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the daemon kept running on a data dir it should refuse:\n{}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wal_of(dir: &Path) -> std::path::PathBuf {
    let wal = dir.join("raft.wal");
    assert!(wal.exists(), "no {}", wal.display());
    wal
}

#[test]
fn damaged_or_reused_data_dirs_are_refused_and_a_torn_tail_is_dropped() {
    let m1 = RedisServer::master();
    let m2 = RedisServer::master();
    let mut cluster = RaftCluster::start(1, &FAST, &[]);
    cluster.wait_for_leader(&[0], ELECTION);
    write_ok(
        &cluster.nodes[0],
        "POST",
        &format!("/master?masters=one={}", m1.addr()),
    );
    write_ok(
        &cluster.nodes[0],
        "POST",
        &format!("/master?masters=two={}", m2.addr()),
    );
    cluster.nodes[0].kill9();
    let data = cluster.data_dir(0);
    let raft_args: Vec<String> = vec![
        "-broker=raft".into(),
        format!("-raft_addr={}", cluster.raft_addr(0)),
        format!("-raft_data_dir={}", data.display()),
        format!("-raft_cluster={}", cluster.raft_addr(0)),
    ];

    // A data dir that holds a cluster is not silently reused as a new one.
    let mut args = raft_args.clone();
    args.push("-raft_cluster_state=new".into());
    let (code, stderr) = run_to_exit(&args);
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {stderr}");
    assert!(stderr.contains("raft_cluster_state"), "{stderr}");

    // A torn last record (a crash mid-write) is dropped; the rest is kept.
    let wal = wal_of(&data);
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    cluster.nodes[0].restart();
    cluster.wait_for_leader(&[0], ELECTION);
    let log = cluster.nodes[0].log_of_this_run();
    assert!(log.contains("torn last record"), "{log}");
    // The first add is older than the torn record, so it is kept.
    wait_until(LONG, "group one after the restart", || {
        let seen = group_list(&cluster.nodes[0])?;
        if seen.contains(&format!("one={}", m1.addr())) {
            Ok(())
        } else {
            Err(seen)
        }
    });
    // It keeps working and later restarts are clean (the torn bytes are gone).
    write_ok(
        &cluster.nodes[0],
        "PUT",
        &format!("/master?masters=one={},two={}", m1.addr(), m2.addr()),
    );
    cluster.nodes[0].restart();
    cluster.wait_for_leader(&[0], ELECTION);
    let expected = format!("one={},two={}", m1.addr(), m2.addr());
    wait_for_groups(&cluster.nodes, &[0], &expected, "a second restart");
    cluster.nodes[0].kill9();

    // A damaged byte with records after it is corruption: refuse, naming the file.
    let mut bytes = std::fs::read(&wal).unwrap();
    assert!(bytes.len() > 200, "a short WAL: {} bytes", bytes.len());
    bytes[10] ^= 0x5a;
    std::fs::write(&wal, &bytes).unwrap();
    let (code, stderr) = run_to_exit(&raft_args);
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {stderr}");
    assert!(
        stderr.contains("raft.wal") && stderr.contains("corrupt"),
        "{stderr}"
    );
}

#[test]
fn removing_the_leader_hands_leadership_to_the_remaining_members() {
    let m1 = RedisServer::master();
    let mut cluster = RaftCluster::start(3, &FAST, &[]);
    let old = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    let old_addr = cluster.raft_addr(old);
    let remaining = others(&cluster, old);
    write_ok(
        &cluster.nodes[remaining[0]],
        "DELETE",
        &format!("/api/v1/cluster/peers?addr={old_addr}"),
    );
    let mut expected: Vec<String> = remaining.iter().map(|&i| cluster.raft_addr(i)).collect();
    expected.sort();
    for &i in &remaining {
        wait_until(LONG, &format!("node {i} to list 2 peers"), || {
            let seen = peers(&cluster, i)?;
            if seen == expected {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        });
    }
    // The removed node no longer takes part: it must stop acting (checking and failing
    // over), and the two members elect a leader among themselves.
    wait_until(ELECTION, "the removed leader to stop acting", || {
        let status = cluster.status(old)?;
        if status["acting"] == false {
            Ok(())
        } else {
            Err(format!(
                "removed node {old_addr}: role {} acting {} term {}",
                status["role"], status["acting"], status["term"]
            ))
        }
    });
    let leader = cluster.wait_for_leader(&remaining, ELECTION);
    write_ok(
        &cluster.nodes[leader],
        "POST",
        &format!("/master?masters=g={}", m1.addr()),
    );
    wait_for_groups(
        &cluster.nodes,
        &remaining,
        &format!("g={}", m1.addr()),
        "a write after removing the leader",
    );
}

/// The peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    support::memory_kb(pid).map_or(0, |(_, peak)| peak)
}

#[test]
fn length_prefixes_claiming_huge_records_do_not_make_a_node_allocate_them() {
    let m1 = RedisServer::master();
    let mut cluster = RaftCluster::start(1, &FAST, &[]);
    cluster.wait_for_leader(&[0], ELECTION);
    let pid = cluster.nodes[0].pid().unwrap();
    let before = peak_rss_kib(pid);
    // Each connection claims a record of 64 MiB (the transport's limit) and sends a few
    // bytes of it, first as the hello, then as a message after a well-formed hello. A
    // node that sizes its buffer by the claim holds 64 MiB for each.
    let claim = |prefix: Vec<u8>| {
        let mut b = prefix;
        b.extend_from_slice(&(64u32 * 1024 * 1024).to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0, 2, 1, 2, 3]);
        b
    };
    let hello = frame(1, &raft_wire::hello("127.0.0.1:1"));
    let mut held = Vec::new();
    for n in 0..8 {
        let bytes = if n % 2 == 0 {
            claim(Vec::new())
        } else {
            claim(hello.clone())
        };
        let mut stream = TcpStream::connect(("127.0.0.1", cluster.raft_ports[0])).expect("connect");
        stream.write_all(&bytes).expect("send");
        held.push(stream);
    }
    // Watch the peak for 4 s (the connections stay open, as a slow sender's would).
    let limit_kib = before + 48 * 1024;
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        let peak = peak_rss_kib(pid);
        assert!(
            peak < limit_kib,
            "8 connections that sent 16-80 bytes each raised the node's peak RSS from {before} KiB to {peak} KiB"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(held);
    assert!(cluster.nodes[0].is_running(), "the node exited");
    write_ok(
        &cluster.nodes[0],
        "POST",
        &format!("/master?masters=g={}", m1.addr()),
    );
}

/// kill -9 of the leader daemon and of the Redis master, the master `master_after_ms`
/// after the daemon: the new leader, which never saw the master alive, fails it over
/// with the replicas from the replicated state, and the other replica follows.
fn leader_and_master_killed(master_after_ms: i64) {
    let (mut master, a, b) = topology(100, 100);
    let masters = format!("-masters=g={}", master.addr());
    let mut args = FAST.to_vec();
    args.push(&masters);
    let mut cluster = RaftCluster::start(3, &args, &[]);
    let old = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    known_replicas_raft(&mut cluster.nodes, old, "g", &master.addr());
    // max_down_time (1 s) + an election (1-2 s at 100 ms ticks) + 1 s; generous here,
    // for loaded machines.
    let bound = Duration::from_secs(1) + Duration::from_secs(5) + Duration::from_secs(1);
    assert_taken_over(
        &mut cluster.nodes,
        old,
        &mut master,
        (&a, &b),
        master_after_ms,
        bound,
    );
}

#[test]
fn leader_and_master_killed_together_a_replica_takes_over() {
    leader_and_master_killed(0);
}
