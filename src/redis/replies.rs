//! Reading what servers answer on the failover path: `ROLE` and `INFO replication`, as
//! Redis, Valkey, KeyDB and LedisDB send them.
//!
//! Replies are parsed leniently: LedisDB sends offsets as bulk strings and omits fields
//! Redis has, and a missing field takes its default. A reply that cannot be understood
//! is an error ("treat as down"), never a panic. These functions are pure, so they are
//! tested (and property-tested) on bytes alone.

use super::resp::Reply;
use crate::address::Addr;
use serde::Serialize;

/// A replica as listed in its master's `ROLE` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedReplica {
    pub addr: Addr,
    pub offset: i64,
}

/// What a server says it is, from `ROLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Master {
        offset: i64,
        replicas: Vec<ListedReplica>,
    },
    Replica {
        /// `host:port` of the master it replicates from, as it reports it.
        master: String,
        /// connect, connecting, sync, connected, ...
        state: String,
    },
    /// A Sentinel or anything else that is not a data node.
    Other(String),
}

/// What a replica reports about its replication, from `INFO`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicationInfo {
    /// `master` or `slave`.
    pub role: String,
    /// `master_host:master_port`, when it is a replica.
    pub master: Option<String>,
    /// `master_link_status` is `up`.
    pub link_up: bool,
    /// `master_link_down_since_seconds`, when the link is down.
    pub link_down_secs: Option<u64>,
    /// `slave_priority` (or `replica_priority`); 100 when missing, 0 = never promote.
    pub priority: u32,
    /// `slave_repl_offset`; 0 when missing.
    pub offset: i64,
    /// `run_id` from the server section; None sorts last in the election.
    pub run_id: Option<String>,
}

/// Parses a `ROLE` reply of Redis, Valkey, KeyDB or LedisDB.
pub fn parse_role(reply: &Reply) -> std::result::Result<Role, String> {
    let Reply::Array(items) = reply else {
        return Err(format!("ROLE: expected an array, got {reply:?}"));
    };
    let kind = items
        .first()
        .and_then(Reply::text)
        .ok_or("ROLE: empty or non-text role")?;
    match kind.as_str() {
        "master" => {
            let offset = items.get(1).and_then(Reply::int).unwrap_or(0);
            let mut replicas = Vec::new();
            if let Some(Reply::Array(list)) = items.get(2) {
                // An entry we cannot read (a replica on a unix socket reports port 0)
                // is skipped: the master itself answered, so it is up.
                replicas.extend(list.iter().filter_map(|entry| match parse_listed(entry) {
                    Ok(listed) => Some(listed),
                    Err(e) => {
                        log::debug!("ROLE: skipping replica entry: {e}");
                        None
                    }
                }));
            }
            Ok(Role::Master { offset, replicas })
        }
        "slave" | "replica" => {
            let host = items.get(1).and_then(Reply::text).unwrap_or_default();
            let port = items.get(2).and_then(Reply::int).unwrap_or(0);
            let state = items.get(3).and_then(Reply::text).unwrap_or_default();
            Ok(Role::Replica {
                master: format!("{host}:{port}"),
                state,
            })
        }
        other => Ok(Role::Other(other.to_string())),
    }
}

/// One `[host, port, offset]` entry of a master's `ROLE` reply.
fn parse_listed(entry: &Reply) -> std::result::Result<ListedReplica, String> {
    let Reply::Array(fields) = entry else {
        return Err(format!("not an array: {entry:?}"));
    };
    let host = fields.first().and_then(Reply::text);
    let port = fields.get(1).and_then(Reply::text);
    let (Some(host), Some(port)) = (host, port) else {
        return Err(format!("no host and port: {entry:?}"));
    };
    let addr = Addr::from_reported(&host, &port).map_err(|e| e.to_string())?;
    let offset = fields.get(2).and_then(Reply::int).unwrap_or(0);
    Ok(ListedReplica { addr, offset })
}

/// Parses the text of `INFO` (any sections); missing fields take their defaults.
pub fn parse_replication_info(text: &str) -> std::result::Result<ReplicationInfo, String> {
    let mut info = ReplicationInfo {
        role: String::new(),
        master: None,
        link_up: false,
        link_down_secs: None,
        priority: 100,
        offset: 0,
        run_id: None,
    };
    let mut host = None;
    let mut port = None;
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "role" => info.role = value.to_string(),
            "master_host" => host = Some(value.to_string()),
            "master_port" => port = Some(value.to_string()),
            "master_link_status" => info.link_up = value == "up",
            "master_link_down_since_seconds" => info.link_down_secs = value.parse().ok(),
            "slave_priority" | "replica_priority" => {
                info.priority = value.parse().unwrap_or(100);
            }
            "slave_repl_offset" => info.offset = value.parse().unwrap_or(0),
            "run_id" if !value.is_empty() => info.run_id = Some(value.to_string()),
            _ => {}
        }
    }
    if info.role.is_empty() {
        return Err("INFO: no role field".into());
    }
    if let (Some(h), Some(p)) = (host, port) {
        info.master = Some(format!("{h}:{p}"));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_redis_master_role() {
        let reply = Reply::Array(vec![
            bulk("master"),
            Reply::Int(3129659),
            Reply::Array(vec![
                Reply::Array(vec![bulk("127.0.0.1"), bulk("9001"), bulk("3129242")]),
                Reply::Array(vec![bulk("127.0.0.1"), bulk("9002"), bulk("3129543")]),
            ]),
        ]);
        let Role::Master { offset, replicas } = parse_role(&reply).unwrap() else {
            panic!("not a master")
        };
        assert_eq!(offset, 3129659);
        assert_eq!(replicas[1].addr.port, 9002);
        assert_eq!(replicas[1].offset, 3129543);
    }

    #[test]
    fn parses_ledisdb_roles_with_string_offsets() {
        let master = Reply::Array(vec![bulk("master"), bulk("42"), Reply::Array(vec![])]);
        assert_eq!(
            parse_role(&master).unwrap(),
            Role::Master {
                offset: 42,
                replicas: vec![]
            }
        );
        let replica = Reply::Array(vec![
            bulk("slave"),
            bulk("127.0.0.1"),
            bulk("6379"),
            bulk("connected"),
            bulk("42"),
        ]);
        assert_eq!(
            parse_role(&replica).unwrap(),
            Role::Replica {
                master: "127.0.0.1:6379".into(),
                state: "connected".into()
            }
        );
    }

    #[test]
    fn garbage_roles_are_errors_not_panics() {
        for reply in [
            Reply::Nil,
            Reply::Int(1),
            Reply::Array(vec![]),
            Reply::Array(vec![Reply::Nil]),
        ] {
            assert!(parse_role(&reply).is_err(), "{reply:?}");
        }
        assert_eq!(
            parse_role(&Reply::Array(vec![bulk("sentinel")])).unwrap(),
            Role::Other("sentinel".into())
        );
    }

    #[test]
    fn unreadable_replica_entries_are_skipped_not_fatal() {
        let reply = Reply::Array(vec![
            bulk("master"),
            Reply::Int(1),
            Reply::Array(vec![
                Reply::Int(5),
                Reply::Array(vec![bulk("h")]),
                Reply::Array(vec![bulk("h"), bulk("x")]),
                Reply::Array(vec![bulk("/tmp/redis.sock"), bulk("0"), bulk("1")]),
                Reply::Array(vec![bulk("127.0.0.1"), bulk("6380"), bulk("1")]),
            ]),
        ]);
        let Role::Master { replicas, .. } = parse_role(&reply).unwrap() else {
            panic!("not a master")
        };
        assert_eq!(replicas.len(), 1);
        assert_eq!(replicas[0].addr.port, 6380);
    }

    #[test]
    fn parses_info_with_defaults_for_missing_fields() {
        let redis = "# Server\r\nrun_id:abc\r\n# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:6379\r\nmaster_link_status:down\r\nmaster_link_down_since_seconds:7\r\nslave_repl_offset:99\r\nslave_priority:10\r\n";
        let info = parse_replication_info(redis).unwrap();
        assert_eq!(info.master.as_deref(), Some("127.0.0.1:6379"));
        assert!(!info.link_up);
        assert_eq!(
            (info.priority, info.offset, info.link_down_secs),
            (10, 99, Some(7))
        );
        assert_eq!(info.run_id.as_deref(), Some("abc"));
        let sparse = parse_replication_info("role:slave\nmaster_link_status:up\n").unwrap();
        assert_eq!(
            (sparse.priority, sparse.offset, sparse.link_up),
            (100, 0, true)
        );
        assert!(parse_replication_info("hello").is_err());
        assert_eq!(
            parse_replication_info("role:slave\nslave_priority:x")
                .unwrap()
                .priority,
            100
        );
    }
}
