//! node-redis v5's Sentinel client (`createSentinel`) follows a failover through the
//! daemon's Sentinel-compatible port, and, in the same run for comparison, through a
//! real `redis-server --sentinel`.
//!
//! node-redis asks `SENTINEL MASTER` and `SENTINEL REPLICAS` every second while it has
//! no usable master, and refuses a master whose `flags` hold `s_down`, `disconnected` or
//! `failover_in_progress`: a port that kept saying `master` for a dead master would
//! leave it hanging on the dead address. The script (`tests/node/failover.js`) writes,
//! kills the master with SIGKILL and writes with the same client until a write lands.
//! It needs Node.js and the node-redis that `test-cluster/install-deps.sh` installs in
//! `tests/node`; without Node.js the test says it was skipped.

mod support;

use std::time::Duration;
use support::node::{Availability, NodeRun, availability, run_failover};
use support::{Daemon, RedisServer, Sentinel, free_port, redis_cmd, wait_until};

const GROUP: &str = "cache";

/// A master with two replicas, the first preferred, both linked.
fn topology() -> (RedisServer, RedisServer, RedisServer) {
    let master = RedisServer::master();
    let a = RedisServer::replica_of(master.port, 10);
    let b = RedisServer::replica_of(master.port, 100);
    master.wait_for_replicas(2);
    (master, a, b)
}

/// False (with a message) when node-redis cannot run because Node.js is missing.
fn node_redis_present() -> bool {
    match availability() {
        Availability::Ready => true,
        Availability::NoNode(why) => {
            println!("SKIPPED: node-redis tests need Node.js ({why})");
            false
        }
        Availability::NoPackage(why) => panic!("{why}"),
    }
}

/// The key the script wrote last, read from `server`.
fn value_on(server: &RedisServer) -> Result<String, String> {
    match server.cmd(&["GET", "k"])? {
        redis::Value::BulkString(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        other => Err(format!("GET k: {other:?}")),
    }
}

/// Checks that the run went from `master` to `a`, and the write is on `a`.
fn check_run(run: &NodeRun, master: &RedisServer, a: &RedisServer) {
    assert_eq!(run.before, master.port, "{}", run.output);
    assert_eq!(run.after, a.port, "the new master is a:\n{}", run.output);
    assert_eq!(run.value, "after", "{}", run.output);
    assert_eq!(value_on(a).as_deref(), Ok("after"), "{}", run.output);
}

fn through_the_daemon() -> NodeRun {
    let (master, a, _b) = topology();
    let port = free_port();
    let daemon = Daemon::start(&[
        &format!("-masters={GROUP}={}", master.addr()),
        &format!("-sentinel_addr=127.0.0.1:{port}"),
        "-check_interval=100",
        "-max_down_time=1",
    ]);
    daemon.wait_group_ok(GROUP, 2);
    let pid = master.pid().expect("master pid");
    let run = run_failover(port, GROUP, pid, 20_000)
        .unwrap_or_else(|e| panic!("through the daemon: {e}\ndaemon log:\n{}", daemon.log()));
    check_run(&run, &master, &a);
    run
}

fn through_sentinel() -> NodeRun {
    let (master, a, _b) = topology();
    let sentinel = Sentinel::start(master.port, GROUP, 1000, 1);
    wait_until(
        Duration::from_secs(30),
        "Sentinel to see 2 linked replicas",
        || {
            let text = format!(
                "{:?}",
                redis_cmd(sentinel.port, &["SENTINEL", "replicas", GROUP])?
            );
            (text.matches("master-link-status").count() == 2 && !text.contains("\"err\""))
                .then_some(())
                .ok_or(text)
        },
    );
    let pid = master.pid().expect("master pid");
    let run = run_failover(sentinel.port, GROUP, pid, 30_000)
        .unwrap_or_else(|e| panic!("through redis-server --sentinel: {e}"));
    check_run(&run, &master, &a);
    run
}

#[test]
fn node_redis_follows_a_failover_through_the_sentinel_port() {
    if !node_redis_present() {
        return;
    }
    let ours = through_the_daemon();
    let theirs = through_sentinel();
    println!(
        "node-redis: kill -9 of the master to the first write on the new master: \
         {:.0} ms through redis-failover's Sentinel port (check_interval 100 ms, \
         max_down_time 1 s; {} failed attempts), {:.0} ms through redis-server --sentinel \
         (down-after 1000 ms; {} failed attempts)",
        ours.ms, ours.tries, theirs.ms, theirs.tries
    );
}
