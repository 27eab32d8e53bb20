//! Health checks for load balancers: plain-text answers whose status code alone says
//! whether an address should take traffic, so HAProxy's `option httpchk` (or any
//! checker that looks at the status) can send writes to the master of a group and reads
//! to its replicas without asking Redis or Sentinel itself.
//!
//! - `GET /api/v1/groups/<name>/master`: `200` and `host:port` when the group's master
//!   answers, `503` with why not, `404` for a group that is not watched.
//! - `GET /health/master?addr=HOST:PORT`: `200` when that address is the current master
//!   of a group whose master answers, else `503`.
//! - `GET /health/replica?addr=HOST:PORT[&max_lag=BYTES]`: `200` for a replica its
//!   group's current master lists with its link up (and, with `max_lag`, no more than
//!   that many bytes behind the most advanced replica the master lists), else `503`.
//!
//! "Answers" means this daemon's last check of the master succeeded: the group's state
//! is not `starting`, `suspect`, `down`, `failing_over`, `switching_over`, `failed`,
//! `not_master` or `follower`, and the link is not down. Every daemon of a Raft or
//! ZooKeeper cluster checks the masters itself, so a load balancer may ask any of them.

use crate::address::Addr;
use crate::daemon::Daemon;
use crate::observe::status::{GroupStatus, WatchState};

use super::params::{form_value, path_segment};

/// A plain-text answer: status and body.
pub type Reply = (u16, String);

/// Answers the health endpoints; `None` for any other path.
pub fn route(daemon: &Daemon, method: &str, path: &str, query: &str) -> Option<Reply> {
    let endpoint = if let Some(name) = group_master_path(path) {
        Endpoint::GroupMaster(name)
    } else {
        match path {
            "/health/master" => Endpoint::Master,
            "/health/replica" => Endpoint::Replica,
            _ => return None,
        }
    };
    if !matches!(method, "GET" | "HEAD") {
        return Some(text(405, format!("only GET is allowed on {path}")));
    }
    Some(match endpoint {
        Endpoint::GroupMaster(name) => match path_segment(name) {
            Ok(group) => group_master(daemon, &group),
            Err(reason) => text(400, reason),
        },
        Endpoint::Master => match addr_param(query) {
            Ok(addr) => master(daemon, &addr),
            Err(reply) => reply,
        },
        Endpoint::Replica => match addr_param(query).and_then(|addr| {
            let max_lag = max_lag_param(query)?;
            Ok((addr, max_lag))
        }) {
            Ok((addr, max_lag)) => replica(daemon, &addr, max_lag),
            Err(reply) => reply,
        },
    })
}

/// Whether a health answer is routine (a load balancer asks every few seconds, and a
/// replica asked whether it is the master answers 503 each time): such answers are not
/// logged as errors.
pub fn is_health_check(target: &str) -> bool {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    path.starts_with("/health/") || group_master_path(path).is_some()
}

enum Endpoint<'a> {
    GroupMaster(&'a str),
    Master,
    Replica,
}

/// The `<name>` of `/api/v1/groups/<name>/master`, still percent-encoded.
fn group_master_path(path: &str) -> Option<&str> {
    path.strip_prefix("/api/v1/groups/")?
        .strip_suffix("/master")
        .filter(|name| !name.is_empty() && !name.contains('/'))
}

fn text(status: u16, body: impl Into<String>) -> Reply {
    let mut body = body.into();
    body.push('\n');
    (status, body)
}

fn addr_param(query: &str) -> Result<Addr, Reply> {
    match form_value(query.as_bytes(), "addr") {
        Ok(Some(value)) => Addr::parse(&value).map_err(|e| text(400, format!("addr: {e}"))),
        Ok(None) => Err(text(400, "missing parameter: addr (host:port)")),
        Err(reason) => Err(text(400, reason)),
    }
}

fn max_lag_param(query: &str) -> Result<Option<u64>, Reply> {
    match form_value(query.as_bytes(), "max_lag") {
        Ok(None) => Ok(None),
        Ok(Some(value)) => value.trim().parse().map(Some).map_err(|_| {
            text(
                400,
                format!("max_lag: {value:?} is not a number of bytes (0 or more)"),
            )
        }),
        Err(reason) => Err(text(400, reason)),
    }
}

/// Why this daemon does not count the group's master as answering, or None when it does.
fn not_answering(group: &GroupStatus) -> Option<String> {
    let state = match group.state {
        WatchState::Starting => "not checked yet",
        WatchState::Suspect => "suspect: its checks fail",
        WatchState::Down => "down",
        WatchState::FailingOver => "being failed over",
        WatchState::SwitchingOver => "being switched over",
        WatchState::Failed => "failed: its failover failed",
        WatchState::NotMaster => "not a master: it reports itself a replica",
        WatchState::Follower => "not checked by this daemon (follower)",
        // Ok, and any state that only says what automatic failover may do (paused,
        // blocked): the master answers when the link is up.
        _ if group.disconnected => "unreachable: the last check got no answer",
        _ => return None,
    };
    let why = match &group.last_error {
        Some(error) => format!("{state} ({error})"),
        _ => state.to_string(),
    };
    Some(why)
}

fn group_master(daemon: &Daemon, name: &str) -> Reply {
    let groups = daemon.groups();
    let Some(group) = groups.iter().find(|g| g.name == name) else {
        return text(404, format!("no group named {name} is watched"));
    };
    match not_answering(group) {
        None => text(200, group.master.to_string()),
        Some(why) => text(503, format!("master {} of {name} is {why}", group.master)),
    }
}

fn master(daemon: &Daemon, addr: &Addr) -> Reply {
    let groups = daemon.groups();
    let Some(group) = groups.iter().find(|g| &g.master == addr) else {
        return text(
            503,
            format!("{addr} is not the master of any watched group"),
        );
    };
    match not_answering(group) {
        None => text(200, format!("{addr} is the master of {}", group.name)),
        Some(why) => text(503, format!("{addr}, master of {}, is {why}", group.name)),
    }
}

fn replica(daemon: &Daemon, addr: &Addr, max_lag: Option<u64>) -> Reply {
    let groups = daemon.groups();
    let found = groups
        .iter()
        .find_map(|g| g.replicas.iter().find(|r| &r.addr == addr).map(|r| (g, r)));
    let Some((group, replica)) = found else {
        return text(
            503,
            format!("{addr} is not a replica the master of any watched group lists"),
        );
    };
    if let Some(why) = not_answering(group) {
        return text(
            503,
            format!("{addr} replicates from {}, which is {why}", group.master),
        );
    }
    if replica.link != "up" {
        return text(
            503,
            format!("{addr}: its link to {} is {}", group.master, replica.link),
        );
    }
    let ahead = group.replicas.iter().map(|r| r.offset).max().unwrap_or(0);
    let lag = ahead.saturating_sub(replica.offset).max(0) as u64;
    if let Some(max_lag) = max_lag
        && lag > max_lag
    {
        return text(
            503,
            format!(
                "{addr} is {lag} bytes behind the most advanced replica of {} (max_lag {max_lag})",
                group.name
            ),
        );
    }
    text(
        200,
        format!(
            "{addr} is a replica of {} ({}), link up, {lag} bytes behind",
            group.name, group.master
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_paths_are_told_apart_from_the_other_group_endpoints() {
        assert_eq!(
            group_master_path("/api/v1/groups/cache/master"),
            Some("cache")
        );
        assert_eq!(group_master_path("/api/v1/groups//master"), None);
        assert_eq!(group_master_path("/api/v1/groups/a/b/master"), None);
        assert_eq!(group_master_path("/api/v1/groups/cache/switchover"), None);
        assert!(is_health_check("/health/master?addr=a:1"));
        assert!(is_health_check("/api/v1/groups/cache/master"));
        assert!(!is_health_check("/api/v1/groups"));
        assert!(!is_health_check("/master"));
    }

    #[test]
    fn bad_parameters_get_a_reason() {
        assert_eq!(addr_param("addr=h:1").map(|a| a.port), Ok(1));
        for bad in ["", "addr=", "addr=h", "addr=h:99999", "addr=%FF"] {
            let Err((status, reason)) = addr_param(bad) else {
                panic!("{bad} accepted");
            };
            assert_eq!(status, 400, "{bad}");
            assert!(!reason.trim().is_empty(), "{bad}");
        }
        assert_eq!(max_lag_param("max_lag=10"), Ok(Some(10)));
        assert_eq!(max_lag_param(""), Ok(None));
        assert!(max_lag_param("max_lag=-1").is_err());
    }
}
