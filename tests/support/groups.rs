//! Helpers shared by the cluster tests (Raft and ZooKeeper): a master with replicas, and
//! what a daemon's HTTP API says of its groups, read without panicking so that
//! `wait_until` can show what it saw.

use super::{Daemon, RedisServer, wait_until};
use serde_json::Value;
use std::time::Duration;

/// Replication, checks and failovers; CI machines are slow.
pub const LONG: Duration = Duration::from_secs(20);

/// A master with two replicas of the given priorities (lower is preferred), all linked.
pub fn topology(priority_a: u32, priority_b: u32) -> (RedisServer, RedisServer, RedisServer) {
    let master = RedisServer::master();
    let a = RedisServer::replica_of(master.port, priority_a);
    let b = RedisServer::replica_of(master.port, priority_b);
    master.wait_for_replicas(2);
    (master, a, b)
}

/// `GET /api/v1/groups` of a daemon, without panicking.
pub fn try_groups(daemon: &Daemon) -> Result<Vec<Value>, String> {
    let (status, body) = daemon.http("GET", "/api/v1/groups", "")?;
    if status != 200 {
        return Err(format!("GET /api/v1/groups: {status} {body}"));
    }
    let groups: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    groups
        .as_array()
        .cloned()
        .ok_or_else(|| format!("not an array: {body}"))
}

/// The groups a daemon knows, as sorted `name=master` text.
pub fn group_list(daemon: &Daemon) -> Result<String, String> {
    let mut list: Vec<String> = try_groups(daemon)?
        .iter()
        .map(|g| format!("{}={}", str_of(&g["name"]), str_of(&g["master"])))
        .collect();
    list.sort();
    Ok(list.join(","))
}

/// A JSON string's text, or the value as JSON.
pub fn str_of(value: &Value) -> String {
    value
        .as_str()
        .map(String::from)
        .unwrap_or(value.to_string())
}

/// The group `name` of a daemon, or `Null`.
pub fn try_group(daemon: &Daemon, name: &str) -> Result<Value, String> {
    Ok(try_groups(daemon)?
        .into_iter()
        .find(|g| g["name"] == name)
        .unwrap_or(Value::Null))
}

/// Waits until every daemon `nodes[i]` for `i` in `which` lists exactly the groups
/// `expected` (sorted `name=master` text).
pub fn wait_for_groups(nodes: &[Daemon], which: &[usize], expected: &str, what: &str) {
    for &i in which {
        wait_until(
            LONG,
            &format!("node {i} to list {expected} ({what})"),
            || {
                let seen = group_list(&nodes[i])?;
                if seen == expected { Ok(()) } else { Err(seen) }
            },
        );
    }
}

/// Adds groups `spec` (`name=host:port,...`) through `nodes[via]` and waits until every
/// daemon lists exactly those (`what` names the moment in a failure).
pub fn add_everywhere(nodes: &[Daemon], via: usize, spec: &str, what: &str) {
    write_ok(&nodes[via], "POST", &format!("/master?masters={spec}"));
    let all: Vec<usize> = (0..nodes.len()).collect();
    wait_for_groups(nodes, &all, spec, what);
}

/// Waits until group `name` on `daemon` satisfies `ok`; returns it.
pub fn wait_for_group(
    daemon: &Daemon,
    name: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    wait_until(LONG, what, || {
        let g = try_group(daemon, name)?;
        if ok(&g) { Ok(g) } else { Err(g.to_string()) }
    })
}

/// The acting daemon is watching the group's master with `replicas` replicas seen, so a
/// failover knows whom to promote.
pub fn watched_with_replicas(g: &Value, replicas: usize) -> bool {
    g["state"] == "ok" && g["replicas"].as_array().map(Vec::len) == Some(replicas)
}

/// The port of an address in a JSON answer (`"host:port"`).
pub fn port_of(addr: &Value) -> u16 {
    addr.as_str()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("not an address: {addr}"))
}

/// The group's failover has ended with `outcome`.
pub fn failover_ended(g: &Value, outcome: &str) -> bool {
    g["last_failover"]["outcome"] == outcome && g["state"] != "failing_over"
}

/// One HTTP request that must get an answer.
pub fn request(daemon: &Daemon, method: &str, path: &str) -> (u16, String) {
    daemon
        .http(method, path, "")
        .unwrap_or_else(|e| panic!("{method} {path} on port {}: {e}", daemon.port))
}

/// A write that must succeed on this node.
pub fn write_ok(daemon: &Daemon, method: &str, path: &str) {
    let (status, body) = request(daemon, method, path);
    assert_eq!(
        status, 200,
        "{method} {path} on port {}: {body}",
        daemon.port
    );
}

/// `ROLE` of a server ("master", "slave"), or why it cannot tell.
pub fn role(server: &RedisServer) -> String {
    server.role().unwrap_or_else(|e| format!("error: {e}"))
}

/// The indexes `0..n` other than `except`.
pub fn others_of(n: usize, except: usize) -> Vec<usize> {
    (0..n).filter(|&i| i != except).collect()
}

/// Waits for the replica `server` to replicate from `master_port` with its link up.
pub fn wait_replicating_from(server: &RedisServer, master_port: u16, what: &str) {
    wait_until(LONG, what, || {
        let port = server.info_field("master_port")?;
        let link = server.info_field("master_link_status")?;
        if port == master_port.to_string() && link == "up" {
            Ok(())
        } else {
            Err(format!(
                "{}: role {}, master_port {port}, master_link_status {link}",
                server.addr(),
                role(server)
            ))
        }
    });
}
