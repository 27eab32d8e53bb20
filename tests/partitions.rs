//! Real network partitions (iptables rules in a network namespace the test makes, see
//! `support/lab.rs`) against three daemons in a Raft cluster watching one master and two
//! replicas: the cluster fails an isolated master over within the window plus two
//! seconds, never fails over a master that only the leader cannot reach, and fences the
//! old master as soon as the partition heals.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::groups::str_of;
use support::lab::{self, LabDaemon, LabRedis};
use support::wait_until;

const WINDOW: Duration = Duration::from_secs(1);

/// Three daemons (check every 100 ms, down after 1 s) watching a master with two
/// replicas at Redis's defaults; returns once every daemon sees the group ok.
fn lab_cluster(extra: &[&str]) -> (Vec<LabDaemon>, LabRedis, LabRedis, LabRedis) {
    lab_cluster_of(3, extra)
}

/// [`lab_cluster`] with `size` daemons.
fn lab_cluster_of(size: u8, extra: &[&str]) -> (Vec<LabDaemon>, LabRedis, LabRedis, LabRedis) {
    let master = LabRedis::start("127.0.1.1", None, &[]);
    let a = LabRedis::start("127.0.1.2", Some(&master), &[]);
    let b = LabRedis::start("127.0.1.3", Some(&master), &[]);
    let mut flags = vec!["-check_interval=100", "-max_down_time=1"];
    flags.extend(extra);
    let daemons: Vec<LabDaemon> = (1..=size)
        .map(|i| LabDaemon::start(i, size, &flags))
        .collect();
    let leader = leader_of(&daemons);
    let (status, body) = daemons[leader]
        .http("POST", &format!("/master?masters=g={}", master.addr()))
        .expect("POST /master");
    assert_eq!(status, 200, "{body}");
    for daemon in &daemons {
        wait_group(daemon, "the group ok with both replicas", |g| {
            g["state"] == "ok" && g["replicas"].as_array().is_some_and(|r| r.len() == 2)
        });
    }
    (daemons, master, a, b)
}

fn leader_of(daemons: &[LabDaemon]) -> usize {
    wait_until(Duration::from_secs(20), "an acting leader", || {
        daemons
            .iter()
            .position(LabDaemon::acting)
            .ok_or_else(|| "none acts".to_string())
    })
}

fn wait_group(daemon: &LabDaemon, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    wait_until(Duration::from_secs(20), what, || {
        let g = daemon.group("g")?;
        if wanted(&g) {
            Ok(g)
        } else {
            Err(g.to_string())
        }
    })
}

#[test]
fn a_leader_cut_off_from_the_master_alone_never_begins_a_failover() {
    if !lab::enter("a_leader_cut_off_from_the_master_alone_never_begins_a_failover") {
        return;
    }
    let (daemons, master, _a, _b) = lab_cluster(&[]);
    let leader = leader_of(&daemons);
    lab::cut_daemon_from(&daemons[leader], &master.ip);
    // The leader finds the master down; the two others do not.
    wait_group(
        &daemons[leader],
        "the leader to find the master down",
        |g| g["state"] == "down" && g["down_votes"] == 1,
    );
    std::thread::sleep(WINDOW * 4);
    for daemon in &daemons {
        let g = daemon.group("g").expect("group");
        assert!(
            g["last_failover"].is_null(),
            "daemon {} recorded an attempt: {g}",
            daemon.index
        );
    }
    assert_eq!(master.role().unwrap(), "master");
    assert!(
        daemons[leader]
            .log()
            .contains("no failover until enough do"),
        "{}",
        daemons[leader].log()
    );
    // Sentinel clients see the leader's own verdict (s_down) but no agreement (o_down),
    // and the others' view: the master is fine.
    let flags = daemons[leader]
        .sentinel_flags("g")
        .expect("the leader's SENTINEL MASTER");
    assert!(
        flags.contains("s_down") && !flags.contains("o_down"),
        "the leader's flags: {flags}"
    );
    for daemon in daemons.iter().filter(|d| d.index != daemons[leader].index) {
        let flags = daemon.sentinel_flags("g").expect("SENTINEL MASTER");
        assert_eq!(flags, "master", "daemon {}", daemon.index);
    }
    lab::heal();
    wait_group(
        &daemons[leader],
        "the leader to see the master again",
        |g| g["state"] == "ok",
    );
}

#[test]
fn ckquorum_counts_the_daemons_that_report() {
    if !lab::enter("ckquorum_counts_the_daemons_that_report") {
        return;
    }
    let (mut daemons, _master, _a, _b) = lab_cluster(&[]);
    let ok = daemons[0].sentinel(&["SENTINEL", "CKQUORUM", "g"]);
    assert!(
        matches!(
            &ok,
            Ok(redis::Value::Okay) | Ok(redis::Value::SimpleString(_))
        ) && format!("{ok:?}").contains("3 usable"),
        "CKQUORUM with three daemons: {ok:?}"
    );
    let leader = leader_of(&daemons);
    let survivor = (leader + 1) % 3;
    for (i, daemon) in daemons.iter_mut().enumerate() {
        if i != survivor {
            daemon.kill9();
        }
    }
    wait_until(
        Duration::from_secs(20),
        "CKQUORUM to refuse on the survivor",
        || match daemons[survivor].sentinel(&["SENTINEL", "CKQUORUM", "g"]) {
            Err(e)
                if e.contains("NOQUORUM")
                    && e.contains("1 usable")
                    && e.contains("reach the specified quorum")
                    && e.contains("authorize a failover") =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        },
    );
}

#[test]
fn an_isolated_master_is_failed_over_and_fenced_when_the_partition_heals() {
    if !lab::enter("an_isolated_master_is_failed_over_and_fenced_when_the_partition_heals") {
        return;
    }
    let (daemons, master, a, b) = lab_cluster(&[]);
    // Cut from everything: the replicas keep their links up (repl-timeout is 60 s), but
    // stop hearing from it.
    let cut = Instant::now();
    lab::isolate(&master.ip, &[]);
    let new = wait_until(
        WINDOW + Duration::from_secs(10),
        "a replica promoted",
        || {
            for replica in [&a, &b] {
                if replica.role()? == "master" {
                    return Ok(replica.addr());
                }
            }
            Err("both replicas are still replicas".to_string())
        },
    );
    let took = cut.elapsed();
    println!(
        "isolated master failed over {} ms after the cut",
        took.as_millis()
    );
    assert!(
        took <= WINDOW + Duration::from_secs(3),
        "took {took:?}: more than the window plus 2 s (and a second of slack)"
    );
    lab::heal();
    let healed = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "the old master fenced",
        || match master.role()?.as_str() {
            "slave" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    println!(
        "old master fenced {} ms after the heal",
        healed.elapsed().as_millis()
    );
    for daemon in &daemons {
        wait_group(daemon, "every daemon to follow the new master", |g| {
            g["master"] == new.as_str()
        });
    }
}

#[test]
fn with_bounded_loss_an_isolated_master_stops_taking_writes() {
    if !lab::enter("with_bounded_loss_an_isolated_master_stops_taking_writes") {
        return;
    }
    let (daemons, master, _a, _b) =
        lab_cluster(&["-min_replicas_to_write=1", "-min_replicas_max_lag=1"]);
    wait_until(
        Duration::from_secs(10),
        "the master configured",
        || match master.cmd(&["CONFIG", "GET", "min-replicas-to-write"])? {
            redis::Value::Array(items) if items.len() == 2 => {
                let value = match &items[1] {
                    redis::Value::BulkString(b) => String::from_utf8_lossy(b).to_string(),
                    other => format!("{other:?}"),
                };
                if value == "1" { Ok(()) } else { Err(value) }
            }
            other => Err(format!("{other:?}")),
        },
    );
    // Cut from its replicas and the daemons, but not from this test's client (whose
    // packets, like the daemons', leave from 127.0.0.1: the daemons are cut by owner).
    for daemon in &daemons {
        lab::cut_daemon_from(daemon, &master.ip);
    }
    lab::isolate(&master.ip, &["127.0.0.1"]);
    let cut = Instant::now();
    let refused = wait_until(Duration::from_secs(10), "writes refused", || {
        match master.cmd(&["SET", "k", "v"]) {
            Err(e) if e.contains("NOREPLICAS") => Ok(e),
            other => Err(format!("{other:?}")),
        }
    });
    println!(
        "the isolated master refused writes {} ms after the cut: {refused}",
        cut.elapsed().as_millis()
    );
    lab::heal();
}

/// The master dies while the daemon cannot reach its replicas (they can: they see it go
/// at once). Each attempt stops on the unreachable replicas and is tried again after the
/// window; once the cut heals, long after the window, a replica is promoted. Its link has
/// been down as long as the master has: that is not stale data (Sentinel's rule measures
/// a replica's link against the master's whole outage, not the last window).
#[test]
fn replicas_unreachable_for_a_while_are_promoted_once_reachable() {
    if !lab::enter("replicas_unreachable_for_a_while_are_promoted_once_reachable") {
        return;
    }
    let (daemons, mut master, a, b) = lab_cluster_of(1, &[]);
    let daemon = &daemons[0];
    lab::cut_daemon_from(daemon, &a.ip);
    lab::cut_daemon_from(daemon, &b.ip);
    master.kill();
    let g = wait_group(
        daemon,
        "an attempt stopped on the unreachable replicas",
        |g| g["last_failover"]["outcome"] == "aborted",
    );
    assert_ne!(g["state"], "failed", "{g}");
    // Longer than the staleness allowance of one window (10 windows and the window).
    std::thread::sleep(WINDOW * 13);
    lab::heal();
    let g = wait_group(daemon, "a failover once the replicas are reachable", |g| {
        g["last_failover"]["outcome"] == "succeeded" || g["state"] == "failed"
    });
    assert_eq!(g["last_failover"]["outcome"], "succeeded", "{g}");
    let new = str_of(&g["master"]);
    assert!(new == a.addr() || new == b.addr(), "{g}");
    let down_for = g["last_failover"]["down_for_ms"].as_u64().unwrap_or(0);
    assert!(
        down_for >= 13_000,
        "the record should count the whole outage, not the last window: {g}"
    );
}
