//! Failover of real LedisDB servers (`ledis-server -rpl`, master and two slaves) by the
//! daemon binary: `kill -9` of the master, the election, re-pointing, fencing of a
//! returning old master, and the switchover LedisDB cannot do.
//!
//! The server binary comes from `LEDIS_SERVER` (CI: `../shared/ledisdb/ledis-server`);
//! without it every test prints that it was skipped and passes.

mod support;

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::ledis::{LedisServer, ScriptedSlave, ledis_or_skip};
use support::{Daemon, wait_until};

const FAST: [&str; 2] = ["-check_interval=100", "-max_down_time=1"];

/// A master with two linked slaves, each listed by the master.
fn trio(binary: &Path) -> (LedisServer, LedisServer, LedisServer) {
    let master = LedisServer::master(binary);
    let a = LedisServer::slave_of(binary, &master);
    let b = LedisServer::slave_of(binary, &master);
    master.wait_for_slaves(&[a.port, b.port]);
    (master, a, b)
}

/// A daemon watching `master` as group `g`, once it lists `replicas` replicas of which
/// `linked` report their link up (read from their LedisDB `INFO`).
fn watch(master: &LedisServer, replicas: usize, linked: usize) -> Daemon {
    let masters = format!("-masters=g={}", master.addr());
    let mut args = vec![masters.as_str()];
    args.extend(FAST);
    let daemon = Daemon::start(&args);
    wait_until(
        Duration::from_secs(20),
        &format!("group g ok with {replicas} replicas, {linked} linked"),
        || {
            let g = daemon.group("g");
            let list = g["replicas"].as_array().cloned().unwrap_or_default();
            let up = list.iter().filter(|r| r["link"] == "up").count();
            if g["state"] == "ok" && list.len() == replicas && up == linked {
                Ok(())
            } else {
                Err(g.to_string())
            }
        },
    );
    daemon
}

/// Waits for a succeeded failover record; a failed one ends the test at once.
fn wait_for_failover(daemon: &Daemon) -> Value {
    wait_until(Duration::from_secs(20), "a succeeded failover", || {
        let g = daemon.group("g");
        let outcome = &g["last_failover"]["outcome"];
        if outcome == "failed" {
            return Ok(Err(format!("the failover failed: {g}")));
        }
        if outcome == "succeeded" && g["state"] != "failing_over" {
            Ok(Ok(g))
        } else {
            Err(g.to_string())
        }
    })
    .unwrap_or_else(|e: String| panic!("{e}\n--- daemon log ---\n{}", daemon.log()))
}

fn new_master(g: &Value) -> String {
    g["master"].as_str().unwrap_or_default().to_string()
}

#[test]
fn kill9_fails_over_and_the_other_slave_follows() {
    let Some(binary) = ledis_or_skip("kill9_fails_over_and_the_other_slave_follows") else {
        return;
    };
    let (mut master, a, b) = trio(&binary);
    let daemon = watch(&master, 2, 2);
    master
        .cmd(&["SET", "before", "1"])
        .expect("SET on the master");
    a.wait_for_key("before", "1");
    b.wait_for_key("before", "1");
    master.kill();
    let g = wait_for_failover(&daemon);
    let (new, other) = if new_master(&g) == a.addr() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(new_master(&g), new.addr(), "{g}");
    assert_eq!(new.role().expect("ROLE").0, "master");
    new.wait_for_key("before", "1");
    // The other slave follows the new master: a write there reaches it.
    other.wait_linked_to(new.port);
    new.cmd(&["SET", "after", "2"])
        .expect("SET on the new master");
    other.wait_for_key("after", "2");
    wait_until(
        Duration::from_secs(20),
        "the new master watched with its one linked slave",
        || {
            let g = daemon.group("g");
            let linked = g["replicas"][0]["link"] == "up";
            if g["state"] == "ok" && g["replicas"].as_array().map(Vec::len) == Some(1) && linked {
                Ok(())
            } else {
                Err(g.to_string())
            }
        },
    );
    let log = daemon.log();
    for step in [
        "failover step elect",
        "failover step promote",
        "failover step repoint",
    ] {
        assert!(log.contains(step), "no {step:?} in the log:\n{log}");
    }
}

#[test]
fn the_slave_with_the_larger_offset_wins() {
    let Some(binary) = ledis_or_skip("the_slave_with_the_larger_offset_wins") else {
        return;
    };
    let (mut master, a, b) = trio(&binary);
    let daemon = watch(&master, 2, 2);
    // `a` stops reading: at most the reply to the SYNC it already sent (one batch of log
    // entries) reaches it. `b` gets every write.
    a.signal("STOP");
    for i in 1..=5 {
        let (key, value) = (format!("k{i}"), i.to_string());
        master
            .cmd(&["SET", &key, &value])
            .expect("SET on the master");
        b.wait_for_key(&key, &value);
    }
    let master_offset = master.role().expect("ROLE").1[1].clone();
    assert_eq!(b.info_field("slave_repl_offset").unwrap(), master_offset);
    master.kill();
    a.signal("CONT");
    let g = wait_for_failover(&daemon);
    assert_eq!(new_master(&g), b.addr(), "b had the larger offset: {g}");
    // What the election saw, from the `info` step of the log.
    let log = daemon.log();
    let b_offset: i64 = master_offset.parse().expect("master offset");
    let seen = format!("{} (priority 100, offset {b_offset}, link down)", b.addr());
    assert!(log.contains(&seen), "no {seen:?} in the log:\n{log}");
    let a_offset = offset_in_log(&log, &a.addr());
    assert!(a_offset < b_offset, "a at {a_offset}, b at {b_offset}");
    // `a` then catches up from `b`.
    a.wait_linked_to(b.port);
    a.wait_for_key("k5", "5");
}

/// The offset the failover's `info` step logged for `addr`.
fn offset_in_log(log: &str, addr: &str) -> i64 {
    let prefix = format!("{addr} (priority 100, offset ");
    log.split(&prefix)
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset of {addr} in the log:\n{log}"))
}

#[test]
fn priority_decides_over_offset() {
    let Some(binary) = ledis_or_skip("priority_decides_over_offset") else {
        return;
    };
    // A real LedisDB slave always reports slave_priority:100, so the slave with the
    // better priority is a stand-in speaking LedisDB's captured shapes, beside a real
    // master and a real slave that is further ahead.
    let mut master = LedisServer::master(&binary);
    let real = LedisServer::slave_of(&binary, &master);
    let preferred = ScriptedSlave::start(&master, 10, 1);
    master.wait_for_slaves(&[real.port, preferred.port]);
    for i in 1..=3 {
        master.cmd(&["SET", &format!("k{i}"), "v"]).expect("SET");
    }
    real.wait_for_key("k3", "v");
    assert_eq!(real.info_field("slave_priority").unwrap(), "100");
    let real_offset: i64 = real
        .info_field("slave_repl_offset")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        real_offset > 1,
        "the real slave is ahead: offset {real_offset}"
    );
    let daemon = watch(&master, 2, 1);
    master.kill();
    let g = wait_for_failover(&daemon);
    assert_eq!(
        new_master(&g),
        preferred.addr(),
        "priority 10 beats 100: {g}"
    );
    // The real slave was re-pointed at the chosen one.
    wait_until(
        Duration::from_secs(10),
        "the real slave re-pointed",
        || match real.info_field("slaveof")? {
            m if m == preferred.addr() => Ok(()),
            m => Err(m),
        },
    );
    let log = daemon.log();
    assert!(log.contains("priority 10, offset 1"), "{log}");
}

#[test]
fn a_returning_old_master_is_fenced() {
    let Some(binary) = ledis_or_skip("a_returning_old_master_is_fenced") else {
        return;
    };
    let (mut master, a, b) = trio(&binary);
    let daemon = watch(&master, 2, 2);
    master
        .cmd(&["SET", "before", "1"])
        .expect("SET on the master");
    a.wait_for_key("before", "1");
    b.wait_for_key("before", "1");
    master.kill();
    let g = wait_for_failover(&daemon);
    let new = if new_master(&g) == a.addr() { &a } else { &b };
    new.cmd(&["SET", "after", "2"])
        .expect("SET on the new master");
    // Back with its old data, it claims master until the daemon fences it.
    master.restart();
    master.wait_linked_to(new.port);
    master.wait_for_key("after", "2");
    let refused = master.cmd(&["SET", "x", "y"]);
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("readonly")),
        "a fenced old master must refuse writes: {refused:?}"
    );
    wait_until(Duration::from_secs(10), "the fencing in the log", || {
        let log = daemon.log();
        let line = format!("{} claimed to be master; made it a replica", master.addr());
        if log.contains(&line) {
            Ok(())
        } else {
            Err(log)
        }
    });
}

#[test]
fn switchover_is_refused_naming_ledisdb() {
    let Some(binary) = ledis_or_skip("switchover_is_refused_naming_ledisdb") else {
        return;
    };
    let (master, a, b) = trio(&binary);
    let daemon = watch(&master, 2, 2);
    for query in ["", "?force=true", &format!("?to={}", a.addr())] {
        let path = format!("/api/v1/groups/g/switchover{query}");
        let (status, body) = daemon.http("POST", &path, "").expect("POST switchover");
        assert_eq!(status, 409, "{query}: {body}");
        for needle in ["LedisDB", "CLIENT PAUSE", &master.addr()] {
            assert!(body.contains(needle), "{query}: {needle} not in {body}");
        }
    }
    // Nothing changed: the same master, both slaves still on it, nothing recorded.
    assert_eq!(master.role().expect("ROLE").0, "master");
    master.wait_for_slaves(&[a.port, b.port]);
    for slave in [&a, &b] {
        assert_eq!(slave.info_field("slaveof").unwrap(), master.addr());
    }
    let g = wait_until(Duration::from_secs(10), "group g ok again", || {
        let g = daemon.group("g");
        if g["state"] == "ok" {
            Ok(g)
        } else {
            Err(g.to_string())
        }
    });
    assert_eq!(new_master(&g), master.addr(), "{g}");
    assert!(g["last_failover"].is_null(), "{g}");
}
