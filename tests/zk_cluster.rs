//! ZooKeeper-coordinated clusters (`-broker=zk`) of real `redis-failover` processes, with
//! a real ZooKeeper server (Debian's `zookeeper` package) and real `redis-server`s: the
//! election, writes on any node, kill -9 of the leader (also mid-failover), a failover
//! through the cluster, restarts of every daemon, a ZooKeeper restart, and bad paths.
//!
//! Each test starts its own ZooKeeper on a free port in its own temp dir, so tests run
//! in parallel. The daemons use a 2 s session timeout: a killed leader's session, and
//! so its election znode, is gone after about that long.

mod support;

use support::groups::*;
use support::liveness::{assert_taken_over, known_replicas_zk};

use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{TempDir, ZkCluster, ZooKeeper, free_port, wait_until};

const SESSION: &str = "-zk_session_timeout=2000";
const FAST: [&str; 3] = ["-check_interval=100", "-max_down_time=1", SESSION];
/// A hand-over takes about one session timeout (2 s); CI machines are slow.
const ELECTION: Duration = Duration::from_secs(15);

fn others(cluster: &ZkCluster, except: usize) -> Vec<usize> {
    (0..cluster.nodes.len()).filter(|&i| i != except).collect()
}

/// The election znodes node `i` lists, as `id=http_addr`.
fn peers(cluster: &ZkCluster, i: usize) -> Result<Vec<String>, String> {
    let status = cluster.status(i)?;
    Ok(status["peers"]
        .as_array()
        .ok_or_else(|| format!("no peers: {status}"))?
        .iter()
        .map(|p| format!("{}={}", str_of(&p["id"]), str_of(&p["http_addr"])))
        .collect())
}

/// No node of `nodes` acts, and each says why.
fn wait_for_nobody_acting(cluster: &ZkCluster, nodes: &[usize], what: &str) {
    wait_until(LONG, what, || {
        let mut seen = Vec::new();
        for &i in nodes {
            let s = cluster.status(i)?;
            if s["acting"] != false {
                return Err(format!("node {i} acts: {s}"));
            }
            seen.push(format!("node {i}: {} {}", s["zk_session"], s["error"]));
        }
        Ok(seen)
    });
}

#[test]
fn one_node_leads_serves_writes_and_a_clean_stop_removes_its_znode() {
    let zk = ZooKeeper::start();
    let path = "/zk/tests/one";
    let mut cluster = ZkCluster::start(1, &zk.addr(), path, &["-zk_session_timeout=5000"]);
    let leader = cluster.wait_for_leader(&[0], ELECTION);
    assert_eq!(leader, 0);
    let status = cluster.status(0).unwrap();
    assert_eq!(status["broker"], "zk", "{status}");
    assert_eq!(status["zk_session"], "connected", "{status}");
    assert_eq!(
        status["leader"]["http_addr"],
        cluster.http_addr(0).as_str(),
        "{status}"
    );
    assert_eq!(peers(&cluster, 0).unwrap().len(), 1, "{status}");
    write_ok(
        &cluster.nodes[0],
        "POST",
        "/master?masters=cache=127.0.0.1:1",
    );
    write_ok(
        &cluster.nodes[0],
        "PUT",
        "/master?masters=a=127.0.0.1:2,b=127.0.0.1:3",
    );
    write_ok(&cluster.nodes[0], "DELETE", "/master?masters=a");
    assert_eq!(group_list(&cluster.nodes[0]).unwrap(), "b=127.0.0.1:3");
    let (status, body) = cluster.nodes[0]
        .http("DELETE", "/master?masters=nope", "")
        .unwrap();
    assert_eq!(status, 400, "an unknown group is refused: {body}");

    // SIGTERM closes the session: the election znode goes at once, not after the 5 s
    // session timeout, so a daemon started next finds itself alone and leads at once.
    let exit = cluster.nodes[0].terminate();
    assert_eq!(exit.and_then(|s| s.code()), Some(0), "clean exit");
    let log = cluster.nodes[0].log_of_this_run();
    assert!(!log.contains("could not be closed"), "{log}");
    let started = Instant::now();
    let next = cluster.add_node(&["-zk_session_timeout=5000"], &[]);
    let leader = cluster.wait_for_leader(&[next], ELECTION);
    assert_eq!(leader, next);
    assert_eq!(
        peers(&cluster, next).unwrap().len(),
        1,
        "the stopped daemon's znode is gone"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the next daemon waited {:?}, as long as the stopped one's session timeout",
        started.elapsed()
    );
    assert_eq!(
        group_list(&cluster.nodes[next]).unwrap(),
        "b=127.0.0.1:3",
        "the state lives in ZooKeeper"
    );
}

#[test]
fn three_nodes_elect_one_leader_and_accept_writes_on_every_node() {
    let zk = ZooKeeper::start();
    let mut cluster = ZkCluster::start(3, &zk.addr(), "/zk/tests/three", &[SESSION]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    // Every node lists the same three election znodes, the leader's first (each node
    // refreshes its list every fifth of a session timeout).
    let expected = wait_until(LONG, "every node to list the same 3 znodes", || {
        let lists: Vec<Vec<String>> = (0..3)
            .map(|i| peers(&cluster, i))
            .collect::<Result<_, _>>()?;
        if lists[0].len() == 3 && lists.iter().all(|l| *l == lists[0]) {
            Ok(lists[0].clone())
        } else {
            Err(format!("{lists:?}"))
        }
    });
    assert!(
        expected[0].ends_with(&cluster.http_addr(leader)),
        "{expected:?}"
    );
    // Writes on followers and on the leader, some at the same time: none is lost.
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let port = cluster.nodes[i].port;
            std::thread::spawn(move || {
                for k in 0..10 {
                    let path = format!("/master?masters=g{i}x{k}=127.0.{i}.{k}:6379");
                    let (status, body) =
                        support::http_request(port, "POST", &path, "").expect("POST");
                    assert_eq!(status, 200, "{path} on node {i}: {body}");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer thread");
    }
    let mut all: Vec<String> = (0..3)
        .flat_map(|i| (0..10).map(move |k| format!("g{i}x{k}=127.0.{i}.{k}:6379")))
        .collect();
    all.sort();
    wait_for_groups(
        &cluster.nodes,
        &[0, 1, 2],
        &all.join(","),
        "30 concurrent adds",
    );
    // Followers check too (their views count towards the quorum): nothing listens
    // at these addresses, so each follower finds the master failing.
    for i in others(&cluster, leader) {
        wait_for_group(&cluster.nodes[i], "g0x0", "a follower checking", |g| {
            g["last_error"].is_string() && g["state"] != "follower"
        });
    }
}

#[test]
fn killing_the_leader_hands_over_within_the_session_timeout() {
    let zk = ZooKeeper::start();
    let mut cluster = ZkCluster::start(3, &zk.addr(), "/zk/tests/kill", &[SESSION]);
    let old = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    let old_id = str_of(&cluster.status(old).unwrap()["id"]);
    cluster.nodes[old].kill9();
    let killed = Instant::now();
    let survivors = others(&cluster, old);
    let leader = cluster.wait_for_leader(&survivors, ELECTION);
    let took = killed.elapsed();
    eprintln!(
        "hand-over after kill -9 of the leader: {} ms",
        took.as_millis()
    );
    assert_ne!(leader, old);
    for &i in &survivors {
        let list = peers(&cluster, i).unwrap();
        assert_eq!(list.len(), 2, "node {i}: {list:?}");
        assert!(
            !list.iter().any(|p| p.starts_with(&format!("{old_id}="))),
            "node {i} still lists the killed leader's znode: {list:?}"
        );
    }
    // The killed daemon comes back behind the others and follows.
    cluster.nodes[old].restart();
    let again = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    assert_eq!(again, leader, "a returning daemon does not take over");
    assert_eq!(cluster.status(old).unwrap()["role"], "follower");
}

#[test]
fn a_killed_redis_master_is_failed_over_through_the_zk_cluster() {
    let zk = ZooKeeper::start();
    let (mut master, a, b) = topology(10, 100);
    let masters = format!("-masters=g={}", master.addr());
    let mut args = FAST.to_vec();
    args.push(&masters);
    let mut cluster = ZkCluster::start(3, &zk.addr(), "/zk/tests/failover", &args);
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    wait_for_group(
        &cluster.nodes[leader],
        "g",
        "g watched by the leader",
        |g| watched_with_replicas(g, 2),
    );
    master.kill();
    let g = wait_for_group(
        &cluster.nodes[leader],
        "g",
        "the failover to succeed",
        |g| g["last_failover"]["outcome"] == "succeeded" && g["state"] == "ok",
    );
    assert_eq!(g["master"], a.addr().as_str(), "priority 10 wins: {g}");
    assert_eq!(role(&a), "master");
    wait_replicating_from(&b, a.port, "the other replica to follow the new master");
    // Every node has the new master and the record, from the state znode.
    for i in 0..3 {
        wait_for_group(
            &cluster.nodes[i],
            "g",
            "every node to see the failover",
            |g| g["master"] == a.addr().as_str() && g["last_failover"]["outcome"] == "succeeded",
        );
    }
    // Exactly one failover: the followers did not act.
    for i in others(&cluster, leader) {
        let log = cluster.nodes[i].log();
        assert!(
            !log.contains("failover step"),
            "follower {i} took part in a failover:\n{log}"
        );
    }
}

#[test]
fn the_state_survives_a_restart_of_every_daemon() {
    let zk = ZooKeeper::start();
    let (mut master, a, _b) = topology(10, 100);
    let masters = format!("-masters=g={}", master.addr());
    let mut args = FAST.to_vec();
    args.push(&masters);
    let mut cluster = ZkCluster::start(3, &zk.addr(), "/zk/tests/restart", &args);
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    let follower = others(&cluster, leader)[0];
    write_ok(
        &cluster.nodes[follower],
        "POST",
        "/master?masters=x=127.0.0.1:1,y=127.0.0.1:2",
    );
    write_ok(&cluster.nodes[follower], "DELETE", "/master?masters=x");
    wait_for_group(
        &cluster.nodes[leader],
        "g",
        "g watched by the leader",
        |g| watched_with_replicas(g, 2),
    );
    master.kill();
    wait_for_group(&cluster.nodes[leader], "g", "the failover", |g| {
        g["last_failover"]["outcome"] == "succeeded"
    });
    let expected = format!("g={},y=127.0.0.1:2", a.addr());
    wait_for_groups(&cluster.nodes, &[0, 1, 2], &expected, "before the restarts");

    for node in &mut cluster.nodes {
        node.kill9();
    }
    for node in &mut cluster.nodes {
        node.restart();
    }
    // Restarted with their original -masters=g=<old master>: the failover stays.
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    wait_for_groups(
        &cluster.nodes,
        &[0, 1, 2],
        &expected,
        "after restarting every daemon",
    );
    let g = try_group(&cluster.nodes[leader], "g").unwrap();
    assert_eq!(g["last_failover"]["outcome"], "succeeded", "{g}");
    assert_eq!(g["last_failover"]["new_master"], a.addr().as_str(), "{g}");
}

#[test]
fn zookeeper_restarted_mid_run_the_cluster_recovers_with_one_leader() {
    let mut zk = ZooKeeper::start();
    let mut cluster = ZkCluster::start(3, &zk.addr(), "/zk/tests/zk-restart", &[SESSION]);
    cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    write_ok(
        &cluster.nodes[0],
        "POST",
        "/master?masters=before=127.0.0.1:1",
    );
    wait_for_groups(
        &cluster.nodes,
        &[0, 1, 2],
        "before=127.0.0.1:1",
        "the first write",
    );

    zk.kill();
    // An outage stops every daemon from acting, and writes answer 503 with a reason.
    wait_for_nobody_acting(&cluster, &[0, 1, 2], "no daemon acting without ZooKeeper");
    let started = Instant::now();
    let (status, body) = cluster.nodes[1]
        .http("POST", "/master?masters=during=127.0.0.1:2", "")
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ZooKeeper"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the 503 took {:?}",
        started.elapsed()
    );
    // Reads still answer from each daemon's copy.
    assert_eq!(group_list(&cluster.nodes[2]).unwrap(), "before=127.0.0.1:1");

    zk.restart();
    let leader = cluster.wait_for_leader(&[0, 1, 2], Duration::from_secs(30));
    write_ok(
        &cluster.nodes[leader],
        "POST",
        "/master?masters=after=127.0.0.1:3",
    );
    wait_for_groups(
        &cluster.nodes,
        &[0, 1, 2],
        "after=127.0.0.1:3,before=127.0.0.1:1",
        "a write after the restart",
    );
    // And it stays at one leader (stale sessions of the outage have expired by now).
    std::thread::sleep(Duration::from_secs(3));
    cluster.wait_for_leader(&[0, 1, 2], ELECTION);
}

#[test]
fn a_frozen_zookeeper_stops_the_leader_and_the_cluster_recovers() {
    // SIGSTOP keeps the server's connections open and unanswered: the client library
    // never notices (its calls have no timeout), so only the leader's lease stops it.
    let zk = ZooKeeper::start();
    let mut cluster = ZkCluster::start(3, &zk.addr(), "/zk/tests/frozen", &[SESSION]);
    let old = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    zk.signal("STOP");
    let frozen = Instant::now();
    wait_for_nobody_acting(
        &cluster,
        &[0, 1, 2],
        "no daemon acting while ZooKeeper is frozen",
    );
    eprintln!(
        "the leader stopped acting {} ms after ZooKeeper froze",
        frozen.elapsed().as_millis()
    );
    let started = Instant::now();
    let (status, body) = cluster.nodes[old]
        .http("POST", "/master?masters=frozen=127.0.0.1:1", "")
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the 503 took {:?}",
        started.elapsed()
    );
    zk.signal("CONT");
    let leader = cluster.wait_for_leader(&[0, 1, 2], Duration::from_secs(30));
    write_ok(
        &cluster.nodes[leader],
        "POST",
        "/master?masters=thawed=127.0.0.1:2",
    );
    // The write that got 503 may still have been applied: it sat in the frozen server's
    // socket (a timed-out write is undecided, as with any store). Every node agrees.
    let list = group_list(&cluster.nodes[leader]).unwrap();
    assert!(
        list == "thawed=127.0.0.1:2" || list == "frozen=127.0.0.1:1,thawed=127.0.0.1:2",
        "{list}"
    );
    wait_for_groups(&cluster.nodes, &[0, 1, 2], &list, "a write after the thaw");
}

#[test]
fn a_damaged_state_znode_changes_nothing_and_a_deleted_one_is_put_back() {
    let zk = ZooKeeper::start();
    let path = "/zk/tests/damaged";
    let state = format!("{path}/state");
    let mut cluster = ZkCluster::start(2, &zk.addr(), path, &[SESSION]);
    cluster.wait_for_leader(&[0, 1], ELECTION);
    write_ok(&cluster.nodes[1], "POST", "/master?masters=g=127.0.0.1:1");
    wait_for_groups(&cluster.nodes, &[0, 1], "g=127.0.0.1:1", "the first write");
    // Another ZooKeeper client (an operator) writes garbage into the state znode.
    let operator = zookeeper::ZooKeeper::connect(&zk.addr(), Duration::from_secs(5), |_| {})
        .expect("connect to ZooKeeper");
    operator
        .set_data(&state, b"{garbage".to_vec(), None)
        .expect("set_data");
    wait_until(LONG, "the daemons to report the damaged znode", || {
        for i in 0..2 {
            let s = cluster.status(i)?;
            if !str_of(&s["error"]).contains("not a redis-failover state") {
                return Err(format!("node {i}: {s}"));
            }
        }
        Ok(())
    });
    // Reads keep the last good copy; writes are refused and overwrite nothing.
    assert_eq!(group_list(&cluster.nodes[0]).unwrap(), "g=127.0.0.1:1");
    let (status, body) = cluster.nodes[0]
        .http("POST", "/master?masters=h=127.0.0.1:2", "")
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not a redis-failover state"), "{body}");
    let (data, _) = operator.get_data(&state, false).expect("get_data");
    assert_eq!(data, b"{garbage");
    // Deleted: a daemon puts back its copy.
    operator.delete(&state, None).expect("delete");
    let restored = wait_until(LONG, "the state znode to be put back", || {
        let (data, _) = operator
            .get_data(&state, false)
            .map_err(|e| format!("{e:?}"))?;
        let value: Value = serde_json::from_slice(&data).map_err(|e| format!("{e}: {data:?}"))?;
        Ok(value)
    });
    assert_eq!(
        restored["groups"]["g"]["master"], "127.0.0.1:1",
        "{restored}"
    );
    write_ok(&cluster.nodes[0], "POST", "/master?masters=h=127.0.0.1:2");
    wait_for_groups(
        &cluster.nodes,
        &[0, 1],
        "g=127.0.0.1:1,h=127.0.0.1:2",
        "a write after the repair",
    );
    let _ = operator.close();
}

#[test]
fn leader_killed_mid_failover_the_new_leader_finishes_with_the_same_replica() {
    let zk = ZooKeeper::start();
    let (mut master, a, b) = topology(10, 100);
    let masters = format!("-masters=g={}", master.addr());
    let mut args = FAST.to_vec();
    args.push(&masters);
    let mut cluster = ZkCluster::start(0, &zk.addr(), "/zk/tests/mid", &[]);
    let pause = [("REDIS_FAILOVER_PAUSE_AFTER_BEGIN_MS", "8000")];
    for _ in 0..3 {
        cluster.add_node(&args, &pause);
    }
    let old = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    wait_for_group(&cluster.nodes[old], "g", "g watched by the leader", |g| {
        watched_with_replicas(g, 2)
    });
    master.kill();
    wait_until(LONG, "the leader to pause after failover-begin", || {
        let log = cluster.nodes[old].log();
        if log.contains("failover step begin") && log.contains("pausing 8000 ms") {
            Ok(())
        } else {
            Err(log.lines().rev().take(5).collect::<Vec<_>>().join(" | "))
        }
    });
    cluster.nodes[old].kill9();
    assert_eq!(role(&a), "slave", "promoted before the pause ended");
    let survivors = others(&cluster, old);
    let leader = cluster.wait_for_leader(&survivors, ELECTION);
    let g = wait_for_group(
        &cluster.nodes[leader],
        "g",
        "the new leader to finish the failover",
        |g| g["last_failover"]["outcome"].is_string() && g["state"] != "failing_over",
    );
    assert_eq!(g["last_failover"]["outcome"], "succeeded", "{g}");
    assert_eq!(
        g["master"],
        a.addr().as_str(),
        "the replica failover-begin named: {g}"
    );
    let log = cluster.nodes[leader].log();
    assert!(log.contains("finishing it"), "{log}");
    assert_eq!(role(&a), "master");
    wait_replicating_from(&b, a.port, "the other replica to follow the chosen one");
}

/// Runs the daemon with `args`; returns its exit code and stderr.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let out = TempDir::new("refused");
    let log = out.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-failover"))
        .arg(format!("-addr=127.0.0.1:{}", free_port()))
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("stderr file"))
        .spawn()
        .expect("start redis-failover");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return (
                status.code(),
                std::fs::read_to_string(&log).unwrap_or_default(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the daemon kept running with {args:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_bad_zk_path_or_missing_zk_addr_is_refused() {
    for (args, key) in [
        (
            vec![
                "-broker=zk",
                "-zk_addr=127.0.0.1:2181",
                "-zk_path=/redis/failover",
            ],
            "zk_path",
        ),
        (
            vec!["-broker=zk", "-zk_addr=127.0.0.1:2181", "-zk_path=/zk/a//b"],
            "zk_path",
        ),
        (
            vec!["-broker=zk", "-zk_addr=127.0.0.1:2181", "-zk_path=/zk/a/"],
            "zk_path",
        ),
        (vec!["-broker=zk", "-zk_path=/zk/a"], "zk_addr"),
        (
            vec!["-broker=zk", "-zk_addr=127.0.0.1", "-zk_path=/zk/a"],
            "zk_addr",
        ),
        (
            vec![
                "-broker=zk",
                "-zk_addr=127.0.0.1:2181",
                "-zk_session_timeout=0",
            ],
            "zk_session_timeout",
        ),
    ] {
        let (code, stderr) = run_to_exit(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(key), "{args:?} should name {key}: {stderr}");
    }
}

#[test]
fn a_daemon_started_before_zookeeper_joins_once_it_is_up() {
    // Nothing listens on the ZooKeeper port yet: the daemon starts, answers 503 to
    // writes, and joins as soon as the server is there.
    let mut zk = ZooKeeper::start();
    let addr = zk.addr();
    zk.kill();
    let mut cluster = ZkCluster::start(1, &addr, "/zk/tests/late", &[SESSION]);
    let (status, body) = cluster.nodes[0]
        .http("POST", "/master?masters=g=127.0.0.1:1", "")
        .unwrap();
    assert_eq!(status, 503, "{body}");
    wait_until(LONG, "the daemon to say why it has no session", || {
        let s = cluster.status(0)?;
        if s["acting"] == false && s["error"].is_string() {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    zk.restart();
    cluster.wait_for_leader(&[0], Duration::from_secs(30));
    write_ok(&cluster.nodes[0], "POST", "/master?masters=g=127.0.0.1:1");
}

/// kill -9 of the leader daemon and of the Redis master, the master `master_after_ms`
/// after the daemon: once the killed leader's session expires, the new leader, which
/// never saw the master alive, fails it over with the replicas from the state znode.
fn leader_and_master_killed(tag: &str, master_after_ms: i64) {
    let zk = ZooKeeper::start();
    let (mut master, a, b) = topology(100, 100);
    let masters = format!("-masters=g={}", master.addr());
    let mut args = FAST.to_vec();
    args.push(&masters);
    let path = format!("/zk/tests/{tag}");
    let mut cluster = ZkCluster::start(3, &zk.addr(), &path, &args);
    let old = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    wait_for_group(&cluster.nodes[old], "g", "g watched by the leader", |g| {
        watched_with_replicas(g, 2)
    });
    known_replicas_zk(&cluster.nodes, &zk.addr(), &path, "g", &master.addr(), 2);
    // max_down_time (1 s) + the session timeout (2 s) + 1 s; generous here, for loaded
    // machines.
    let bound = Duration::from_secs(1) + Duration::from_secs(2 + 4) + Duration::from_secs(1);
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
    leader_and_master_killed("together", 0);
}
