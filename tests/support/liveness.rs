//! A cluster that loses its leader daemon and the Redis master at (about) the same
//! instant must still fail the master over: shared by the Raft and ZooKeeper tests and
//! their benchmarks.
//!
//! [`known_replicas_raft`] and [`known_replicas_zk`] wait until every daemon holds the
//! group's replicas in its replicated state (so any of them can fail over a master it
//! never saw alive); [`kill_leader_and_master`] kills both with `kill -9` and times the
//! failover; [`assert_taken_over`] is the tests' whole scenario after the set-up, and
//! [`leader_and_master_round`] is one benchmark round of all that, on a fresh master.

use super::groups::{
    LONG, failover_ended, others_of, try_group, wait_for_group, wait_replicating_from,
};
use super::{Daemon, RedisServer, cluster_status, redis_cmd, wait_until};
use serde_json::Value;
use std::time::{Duration, Instant};

/// What one round measured. Times are from the later of the two kills, except
/// `acting_after`, which is from the leader's kill.
#[derive(Debug, Clone)]
pub struct Round {
    /// Until a replica's `ROLE` said master.
    pub promoted_after: Duration,
    /// Until a surviving daemon said it acts (None if not seen before the promotion).
    pub acting_after: Option<Duration>,
    /// The port of the replica that became master.
    pub new_master: u16,
}

/// Kills the daemon `nodes[leader]` and `master` with `kill -9`, the master
/// `master_after_ms` after the daemon (negative: before; 0: back to back), then polls
/// the replicas' `ROLE` (and the survivors' `acting`) every few ms until one replica
/// says master, or `deadline` passes.
pub fn kill_leader_and_master(
    nodes: &mut [Daemon],
    leader: usize,
    master: &mut RedisServer,
    replicas: &[u16],
    master_after_ms: i64,
    deadline: Duration,
) -> Result<Round, String> {
    let gap = Duration::from_millis(master_after_ms.unsigned_abs());
    let (leader_killed, master_killed) = if master_after_ms < 0 {
        master.kill();
        let master_killed = Instant::now();
        std::thread::sleep(gap);
        nodes[leader].kill9();
        (Instant::now(), master_killed)
    } else {
        nodes[leader].kill9();
        let leader_killed = Instant::now();
        std::thread::sleep(gap);
        master.kill();
        (leader_killed, Instant::now())
    };
    let later = leader_killed.max(master_killed);
    let survivors: Vec<usize> = (0..nodes.len()).filter(|&i| i != leader).collect();
    let mut acting_after = None;
    loop {
        if acting_after.is_none()
            && survivors
                .iter()
                .any(|&i| cluster_status(&nodes[i]).is_ok_and(|s| s["acting"] == true))
        {
            acting_after = Some(leader_killed.elapsed());
        }
        let roles: Vec<(u16, String)> = replicas.iter().map(|&p| (p, role_of(p))).collect();
        if let Some((port, _)) = roles.iter().find(|(_, role)| role == "master") {
            return Ok(Round {
                promoted_after: later.elapsed(),
                acting_after,
                new_master: *port,
            });
        }
        if later.elapsed() > deadline {
            return Err(format!(
                "no replica became master within {deadline:?} of the kills; last seen: replica roles {roles:?}; a survivor acting after {acting_after:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `ROLE` of the server on `port` ("master", "slave"), or the error.
fn role_of(port: u16) -> String {
    match redis_cmd(port, &["ROLE"]) {
        Ok(redis::Value::Array(items)) => match items.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            other => format!("odd ROLE reply {other:?}"),
        },
        Ok(other) => format!("odd ROLE reply {other:?}"),
        Err(e) => format!("error: {e}"),
    }
}

/// Waits until every running node of a Raft cluster has applied the leader's record of
/// group `name`'s replicas. The leader records them (through its raft thread's command
/// queue) before its API shows them; a write sent to the leader afterwards goes through
/// the same queue, so once every node has applied that write it has the replicas too.
/// The write re-adds the group unchanged, which changes nothing.
pub fn known_replicas_raft(nodes: &mut [Daemon], leader: usize, name: &str, master: &str) {
    wait_until(LONG, "the leader to see the group's replicas", || {
        let g = try_group(&nodes[leader], name)?;
        if g["state"] == "ok" && g["replicas"].as_array().is_some_and(|r| r.len() >= 2) {
            Ok(())
        } else {
            Err(g.to_string())
        }
    });
    let path = format!("/master?masters={name}={master}");
    match nodes[leader].http("POST", &path, "") {
        Ok((200, _)) => {}
        other => panic!("POST {path} on the leader: {other:?}"),
    }
    let commit = cluster_status(&nodes[leader])
        .ok()
        .and_then(|s| s["commit_index"].as_u64())
        .unwrap_or_else(|| panic!("no commit_index from the leader"));
    for (i, node) in nodes.iter_mut().enumerate() {
        if !node.is_running() {
            continue;
        }
        wait_until(
            LONG,
            &format!("node {i} to apply up to index {commit}"),
            || {
                let s = cluster_status(node)?;
                match s["applied_index"].as_u64() {
                    Some(applied) if applied >= commit => Ok(()),
                    _ => Err(s.to_string()),
                }
            },
        );
    }
}

/// Waits until the state znode under `zk_path` records `replicas` known replicas for
/// group `name`, then has every daemon re-read it (a write that changes nothing makes a
/// daemon read the znode and keep what it read), so each one's copy holds them.
pub fn known_replicas_zk(
    nodes: &[Daemon],
    zk_addr: &str,
    zk_path: &str,
    name: &str,
    master: &str,
    replicas: usize,
) {
    let operator = zookeeper::ZooKeeper::connect(zk_addr, Duration::from_secs(5), |_| {})
        .unwrap_or_else(|e| panic!("connect to ZooKeeper at {zk_addr}: {e:?}"));
    let state = format!("{zk_path}/state");
    wait_until(LONG, "the state znode to list the known replicas", || {
        let (data, _) = operator
            .get_data(&state, false)
            .map_err(|e| format!("{e:?}"))?;
        let value: Value = serde_json::from_slice(&data).map_err(|e| format!("{e}: {data:?}"))?;
        let known = &value["groups"][name]["known_replicas"];
        if known.as_array().map(Vec::len) == Some(replicas) {
            Ok(())
        } else {
            Err(format!("known_replicas {known}"))
        }
    });
    let _ = operator.close();
    let path = format!("/master?masters={name}={master}");
    for (i, node) in nodes.iter().enumerate() {
        match node.http("POST", &path, "") {
            Ok((200, _)) => {}
            other => panic!("POST {path} on node {i}: {other:?}"),
        }
    }
}

/// One benchmark round on a running cluster: a fresh master with two replicas becomes
/// the cluster's only group (`bench`, with `PUT /master`), `known` waits until every
/// daemon has its replicas (see [`known_replicas_raft`], [`known_replicas_zk`]), then
/// the leader daemon and the master are killed together. The killed daemon is started
/// again, and the round ends once the cluster agrees on a leader.
pub fn leader_and_master_round(
    nodes: &mut [Daemon],
    known: &dyn Fn(&mut [Daemon], usize, &str),
) -> Result<Round, String> {
    let mut master = RedisServer::master();
    let a = RedisServer::replica_of(master.port, 100);
    let b = RedisServer::replica_of(master.port, 100);
    master.wait_for_replicas(2);
    let leader = one_leader(nodes)?;
    let put = format!("/master?masters=bench={}", master.addr());
    match nodes[leader].http("PUT", &put, "") {
        Ok((200, _)) => {}
        other => return Err(format!("PUT {put}: {other:?}")),
    }
    known(nodes, leader, &master.addr());
    let round = kill_leader_and_master(nodes, leader, &mut master, &[a.port, b.port], 0, LONG);
    nodes[leader].restart();
    one_leader(nodes)?;
    round
}

/// The one daemon that acts, once every running daemon names it as the leader.
fn one_leader(nodes: &mut [Daemon]) -> Result<usize, String> {
    let deadline = Instant::now() + LONG;
    loop {
        let running: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].is_running())
            .collect();
        let statuses: Vec<(usize, Value)> = running
            .iter()
            .map(|&i| (i, cluster_status(&nodes[i]).unwrap_or(Value::Null)))
            .collect();
        let acting: Vec<usize> = statuses
            .iter()
            .filter(|(_, s)| s["acting"] == true)
            .map(|(i, _)| *i)
            .collect();
        if let [leader] = acting[..] {
            let addr = format!("127.0.0.1:{}", nodes[leader].port);
            if statuses
                .iter()
                .all(|(_, s)| s["leader"]["http_addr"] == addr.as_str())
            {
                return Ok(leader);
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("no one leader within {LONG:?}: {statuses:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The tests' scenario once every daemon knows the replicas `a` and `b`: kills the
/// leader `nodes[old]` and `master` ([`kill_leader_and_master`]), then asserts that a
/// replica was master within `bound`, that the other replica follows it, and that a
/// surviving daemon recorded the failover.
pub fn assert_taken_over(
    nodes: &mut [Daemon],
    old: usize,
    master: &mut RedisServer,
    (a, b): (&RedisServer, &RedisServer),
    master_after_ms: i64,
    bound: Duration,
) {
    let round =
        kill_leader_and_master(nodes, old, master, &[a.port, b.port], master_after_ms, LONG)
            .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "master killed {master_after_ms} ms after the leader: a replica is master {} ms after the later kill (a survivor acted {:?} after the leader's kill)",
        round.promoted_after.as_millis(),
        round.acting_after
    );
    assert!(
        round.promoted_after <= bound,
        "promoted {:?} after the kills, more than {bound:?}",
        round.promoted_after
    );
    let (new, other) = if round.new_master == a.port {
        (a, b)
    } else {
        (b, a)
    };
    wait_replicating_from(
        other,
        new.port,
        "the other replica to follow the new master",
    );
    let survivor = others_of(nodes.len(), old)[0];
    let g = wait_for_group(&nodes[survivor], "g", "the failover's record", |g| {
        failover_ended(g, "succeeded")
    });
    assert_eq!(g["master"], new.addr().as_str(), "{g}");
    assert_eq!(g["last_failover"]["old_master"], master.addr(), "{g}");
}
