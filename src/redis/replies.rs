//! Reading what servers answer on the failover path: `ROLE` and `INFO`, as Redis,
//! Valkey, KeyDB and LedisDB send them.
//!
//! LedisDB's shapes were captured from a real server (commit d35789e, see the tests): its
//! `ROLE` sends the master's offset and a slave's port as integers but each listed
//! slave's port and offset as bulk strings; its `INFO` names the master as
//! `slaveof:HOST:PORT` (no `master_host`/`master_port`), lists a master's slaves on one
//! `slaves:HOST:PORT,...` line with no offsets, and has no `run_id` and no
//! `master_link_down_since_seconds`. A missing field takes its documented default. A
//! reply that cannot be understood is an error ("treat as down"), never a panic. These
//! functions are pure, so they are tested (and property-tested) on bytes alone.

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

/// What a server reports about its replication, from `INFO` (the `server` and
/// `replication` sections). Each field says where it comes from and its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicationInfo {
    /// `role`: `master` or `slave`. Required: INFO without it is an error.
    pub role: String,
    /// The master it replicates from, `host:port`: Redis's `master_host` and
    /// `master_port`, or LedisDB's `slaveof:HOST:PORT` (empty on a master). None when
    /// absent or empty.
    pub master: Option<String>,
    /// `master_link_status` is `up`; false when absent.
    pub link_up: bool,
    /// `master_link_down_since_seconds` (Redis, while the link is down). LedisDB never
    /// sends it: None means "unknown", and the election then never counts the replica
    /// as stale.
    pub link_down_secs: Option<u64>,
    /// `master_last_io_seconds_ago` (Redis, while the link is up): how long since the
    /// replica last heard from its master. None where the server does not say
    /// (LedisDB).
    pub last_io_secs: Option<u64>,
    /// `slave_priority` (or `replica_priority`); 100 when absent or unreadable, 0 =
    /// never promote. LedisDB always sends 100.
    pub priority: u32,
    /// `slave_repl_offset`. When absent, LedisDB's own definition of it: `last_log_id`
    /// when above 0, else `commit_log_id`. 0 when none is there. LedisDB counts log
    /// entries, Redis bytes; both only ever compare with the same server kind.
    pub offset: i64,
    /// `run_id` from the server section (Redis). LedisDB has none: None sorts last.
    pub run_id: Option<String>,
    /// The replicas a master lists: LedisDB's `slaves:HOST:PORT,...`, Redis's
    /// `slaveN:ip=...,port=...`. Unreadable entries are skipped. Only addresses:
    /// LedisDB's INFO has no per-slave offsets, so offsets come from `ROLE`.
    pub replicas: Vec<Addr>,
    /// `ledisdb_version` from LedisDB's server section: Some means the server is
    /// LedisDB, which lacks commands a switchover needs (`CLIENT PAUSE`).
    pub ledisdb_version: Option<String>,
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
                master: join_host_port(&host, &port.to_string()),
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
    let mut fields = InfoFields::default();
    for line in text.lines() {
        if let Some((key, value)) = line.trim().split_once(':') {
            fields.take(key, value.trim());
        }
    }
    fields.finish()
}

/// The `INFO` fields read so far, before defaults are applied.
#[derive(Default)]
struct InfoFields {
    role: Option<String>,
    master_host: Option<String>,
    master_port: Option<String>,
    slaveof: Option<String>,
    link_up: bool,
    link_down_secs: Option<u64>,
    last_io_secs: Option<u64>,
    priority: Option<u32>,
    offset: Option<i64>,
    last_log_id: Option<i64>,
    commit_log_id: Option<i64>,
    run_id: Option<String>,
    replicas: Vec<Addr>,
    ledisdb_version: Option<String>,
}

impl InfoFields {
    fn take(&mut self, key: &str, value: &str) {
        let text = || Some(value.to_string()).filter(|v| !v.is_empty());
        match key {
            "role" => self.role = text(),
            "master_host" => self.master_host = text(),
            "master_port" => self.master_port = text(),
            "slaveof" => self.slaveof = text(),
            "master_link_status" => self.link_up = value == "up",
            "master_link_down_since_seconds" => self.link_down_secs = value.parse().ok(),
            "master_last_io_seconds_ago" => self.last_io_secs = value.parse().ok(),
            "slave_priority" | "replica_priority" => self.priority = value.parse().ok(),
            "slave_repl_offset" => self.offset = value.parse().ok(),
            "last_log_id" => self.last_log_id = value.parse().ok(),
            "commit_log_id" => self.commit_log_id = value.parse().ok(),
            "run_id" => self.run_id = text(),
            "ledisdb_version" => self.ledisdb_version = text(),
            "slaves" => self
                .replicas
                .extend(value.split(',').filter_map(ledis_slave)),
            _ if is_redis_slave_line(key) => self.replicas.extend(redis_slave(value)),
            _ => {}
        }
    }

    fn finish(self) -> std::result::Result<ReplicationInfo, String> {
        let role = self.role.ok_or("INFO: no role field")?;
        let master = match (self.master_host, self.master_port, self.slaveof) {
            (Some(host), Some(port), _) => Some(join_host_port(&host, &port)),
            (_, _, Some(slaveof)) => Some(match slaveof.rsplit_once(':') {
                Some((host, port)) => join_host_port(host, port),
                None => slaveof,
            }),
            _ => None,
        };
        let ledis_offset = match (self.last_log_id, self.commit_log_id) {
            (Some(last), _) if last > 0 => Some(last),
            (_, commit @ Some(_)) => commit,
            (last, None) => last,
        };
        Ok(ReplicationInfo {
            role,
            master,
            link_up: self.link_up,
            link_down_secs: self.link_down_secs,
            last_io_secs: self.last_io_secs,
            priority: self.priority.unwrap_or(100),
            offset: self.offset.or(ledis_offset).unwrap_or(0),
            run_id: self.run_id,
            replicas: self.replicas,
            ledisdb_version: self.ledisdb_version,
        })
    }
}

/// `host:port`, with an IPv6 host in brackets so that [`Addr::parse`] reads it.
fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// One `HOST:PORT` of LedisDB's `slaves:` line.
fn ledis_slave(item: &str) -> Option<Addr> {
    let (host, port) = item.trim().rsplit_once(':')?;
    Addr::from_reported(host, port).ok()
}

/// Redis's `slave0`, `slave1`, ... keys.
fn is_redis_slave_line(key: &str) -> bool {
    key.strip_prefix("slave")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The address in Redis's `slaveN:ip=...,port=...,state=...,offset=...,lag=...`.
fn redis_slave(value: &str) -> Option<Addr> {
    let field = |name: &str| {
        value
            .split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    Addr::from_reported(field("ip")?, field("port")?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::resp::parse;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    /// One whole reply from raw RESP bytes.
    fn reply(raw: &[u8]) -> Reply {
        match parse(raw) {
            Ok(Some((reply, used))) if used == raw.len() => reply,
            other => panic!("not one whole reply: {other:?}"),
        }
    }

    fn port(addr: &str) -> Addr {
        Addr::parse(addr).unwrap()
    }

    // ---- Captured from LedisDB at commit d35789e -----------------------------------
    //
    // `ledis-server -addr=127.0.0.1:782N -data_dir=... -db_name=goleveldb -rpl`, no config
    // file; 7821 and 7822 got `SLAVEOF 127.0.0.1 7820`; a few SETs on 7820; then
    // `kill -9` of 7820, `SLAVEOF NO ONE` on 7821, `SLAVEOF 127.0.0.1 7821` on 7822.
    // The bytes are exactly what the server sent (read from a raw socket).

    /// `ROLE` on the master 7820, both slaves linked, 6 log entries written.
    const LEDIS_ROLE_MASTER: &[u8] = b"*3\r\n$6\r\nmaster\r\n:6\r\n*2\r\n*3\r\n$9\r\n127.0.0.1\r\n$4\r\n7821\r\n$1\r\n6\r\n*3\r\n$9\r\n127.0.0.1\r\n$4\r\n7822\r\n$1\r\n6\r\n";
    /// `ROLE` on the slave 7821 with its link up.
    const LEDIS_ROLE_SLAVE: &[u8] =
        b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:7820\r\n$9\r\nconnected\r\n:6\r\n";
    /// `ROLE` on the slave 7821 right after `kill -9` of its master (it retries every 3 s).
    const LEDIS_ROLE_SLAVE_MASTER_KILLED: &[u8] =
        b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:7820\r\n$7\r\nconnect\r\n:6\r\n";
    /// `ROLE` on 7821 after `SLAVEOF NO ONE`, before 7822 was re-pointed.
    const LEDIS_ROLE_PROMOTED: &[u8] = b"*3\r\n$6\r\nmaster\r\n:6\r\n*0\r\n";
    /// `INFO replication` on the master 7820, both slaves linked, 1 log entry.
    const LEDIS_INFO_REPLICATION_MASTER: &str = "# Replication\r\nrole:master\r\npub_log_num:0\r\npub_log_ack_per_time:0\r\nslaveof:\r\nslaves:127.0.0.1:7821,127.0.0.1:7822\r\nlast_log_id:1\r\nfirst_log_id:1\r\ncommit_log_id:1\r\nmaster_last_log_id:0\r\n\r\n";
    /// `INFO` (every section) on the slave 7821, link up.
    const LEDIS_INFO_ALL_SLAVE: &str = "# Server\r\nos:linux\r\nprocess_id:24105\r\naddr:127.0.0.1:7821\r\nhttp_addr:\r\nreadonly:true\r\ngoroutine_num:17\r\ncgo_call_num:1\r\nresp_client_num:1\r\nledisdb_version:0.5\r\n\r\n# Store\r\nname:goleveldb\r\nget:0\r\nget_missing:0\r\nput:1\r\ndelete:0\r\nget_total_time:0s\r\niter:1\r\niter_seek:1\r\niter_close:1\r\nbatch_commit:1\r\nbatch_commit_total_time:23.656\u{b5}s\r\n\r\n# Mem\r\nmem_alloc:5.025M\r\nmem_sys:18.044M\r\nmem_looksups:0\r\nmem_mallocs:24.155K\r\nmem_frees:10.859K\r\nmem_total:5.195M\r\nmem_heap_alloc:5.025M\r\nmem_heap_sys:7.531M\r\nmem_head_idle:1.727M\r\nmem_head_inuse:5.805M\r\nmem_head_released:1.727M\r\nmem_head_objects:13615\r\n\r\n# GC\r\ngc_last_time:2026/11/30 13:38:07.599\r\ngc_num:1\r\ngc_pause_total:107.19\u{b5}s\r\ngc_pause_history:107.19\u{b5}s\r\n\r\n# Replication\r\nrole:slave\r\npub_log_num:0\r\npub_log_ack_per_time:0\r\nslaveof:127.0.0.1:7820\r\nlast_log_id:1\r\nfirst_log_id:1\r\ncommit_log_id:1\r\nmaster_last_log_id:1\r\nmaster_link_status:up\r\nslave_priority:100\r\nslave_repl_offset:1\r\n\r\n";
    /// `INFO server` on the master 7820 (the slave's differs in pid, addr, readonly).
    const LEDIS_INFO_SERVER: &str = "# Server\r\nos:linux\r\nprocess_id:24104\r\naddr:127.0.0.1:7820\r\nhttp_addr:\r\nreadonly:false\r\ngoroutine_num:18\r\ncgo_call_num:1\r\nresp_client_num:3\r\nledisdb_version:0.5\r\n\r\n";
    /// `INFO replication` on the slave 7821 after `kill -9` of its master: link down,
    /// no `master_link_down_since_seconds`.
    const LEDIS_INFO_REPLICATION_MASTER_KILLED: &str = "# Replication\r\nrole:slave\r\npub_log_num:0\r\npub_log_ack_per_time:0\r\nslaveof:127.0.0.1:7820\r\nlast_log_id:6\r\nfirst_log_id:1\r\ncommit_log_id:6\r\nmaster_last_log_id:6\r\nmaster_link_status:down\r\nslave_priority:100\r\nslave_repl_offset:6\r\n\r\n";
    /// `INFO replication` on 7821 after `SLAVEOF NO ONE`: no `slaves:` line yet.
    const LEDIS_INFO_REPLICATION_PROMOTED: &str = "# Replication\r\nrole:master\r\npub_log_num:0\r\npub_log_ack_per_time:0\r\nslaveof:\r\nlast_log_id:6\r\nfirst_log_id:1\r\ncommit_log_id:6\r\nmaster_last_log_id:6\r\n\r\n";
    /// Replies to the commands a failover or switchover may send.
    const LEDIS_SLAVEOF_OK: &[u8] = b"+OK\r\n";
    const LEDIS_CONFIG_REWRITE: &[u8] = b"-Running without a config file\r\n";
    const LEDIS_CLIENT_PAUSE: &[u8] = b"-command not found\r\n";
    const LEDIS_REPLICAOF: &[u8] = b"-command not found\r\n";
    /// `SLAVEOF 127.0.0.1 40000`: LedisDB reads the port as a 16-bit signed integer.
    const LEDIS_SLAVEOF_HIGH_PORT: &[u8] =
        b"-strconv.ParseInt: parsing \"40000\": value out of range\r\n";

    #[test]
    fn ledisdb_master_role_lists_slaves_with_string_ports_and_offsets() {
        let Role::Master { offset, replicas } = parse_role(&reply(LEDIS_ROLE_MASTER)).unwrap()
        else {
            panic!("not a master")
        };
        assert_eq!(offset, 6);
        let listed: Vec<(Addr, i64)> = replicas.into_iter().map(|r| (r.addr, r.offset)).collect();
        assert_eq!(
            listed,
            [(port("127.0.0.1:7821"), 6), (port("127.0.0.1:7822"), 6)]
        );
        assert_eq!(
            parse_role(&reply(LEDIS_ROLE_PROMOTED)).unwrap(),
            Role::Master {
                offset: 6,
                replicas: vec![]
            }
        );
    }

    #[test]
    fn ledisdb_slave_role_sends_the_port_as_an_integer() {
        for (raw, state) in [
            (LEDIS_ROLE_SLAVE, "connected"),
            (LEDIS_ROLE_SLAVE_MASTER_KILLED, "connect"),
        ] {
            assert_eq!(
                parse_role(&reply(raw)).unwrap(),
                Role::Replica {
                    master: "127.0.0.1:7820".into(),
                    state: state.into()
                }
            );
        }
    }

    #[test]
    fn ledisdb_slave_info_names_its_master_with_slaveof() {
        let info = parse_replication_info(LEDIS_INFO_ALL_SLAVE).unwrap();
        assert_eq!(info.role, "slave");
        assert_eq!(info.master.as_deref(), Some("127.0.0.1:7820"));
        assert!(info.link_up);
        assert_eq!((info.priority, info.offset), (100, 1));
        assert_eq!((info.link_down_secs, info.run_id), (None, None));
        assert_eq!(info.ledisdb_version.as_deref(), Some("0.5"));
        assert!(info.replicas.is_empty());
        // What the daemon reads: `INFO server` and `INFO replication`, joined.
        let joined = format!("{LEDIS_INFO_SERVER}\n{LEDIS_INFO_REPLICATION_MASTER_KILLED}");
        let info = parse_replication_info(&joined).unwrap();
        assert_eq!(info.master.as_deref(), Some("127.0.0.1:7820"));
        assert!(!info.link_up);
        // No master_link_down_since_seconds: unknown, never stale.
        assert_eq!((info.offset, info.link_down_secs), (6, None));
    }

    #[test]
    fn ledisdb_master_info_lists_slaves_on_one_line_without_offsets() {
        let info = parse_replication_info(LEDIS_INFO_REPLICATION_MASTER).unwrap();
        assert_eq!(info.role, "master");
        assert_eq!(info.master, None, "slaveof: is empty on a master");
        assert_eq!(
            info.replicas,
            [port("127.0.0.1:7821"), port("127.0.0.1:7822")]
        );
        assert!(!info.link_up);
        // No slave_repl_offset on a master: its last_log_id.
        assert_eq!(info.offset, 1);
        let promoted = parse_replication_info(LEDIS_INFO_REPLICATION_PROMOTED).unwrap();
        assert_eq!((promoted.role.as_str(), promoted.master), ("master", None));
        assert!(promoted.replicas.is_empty());
        let server = parse_replication_info(&format!(
            "{LEDIS_INFO_SERVER}\n{LEDIS_INFO_REPLICATION_MASTER}"
        ))
        .unwrap();
        assert_eq!(server.ledisdb_version.as_deref(), Some("0.5"));
    }

    #[test]
    fn ledisdb_offset_falls_back_to_its_log_ids() {
        // The captured slave INFO minus slave_repl_offset (older LedisDB has none): the
        // server's own definition, last_log_id when above 0, else commit_log_id.
        let without = LEDIS_INFO_REPLICATION_MASTER_KILLED.replace("slave_repl_offset:6\r\n", "");
        assert_eq!(parse_replication_info(&without).unwrap().offset, 6);
        let fresh = without.replace("last_log_id:6", "last_log_id:0");
        let fresh = fresh.replace("commit_log_id:6", "commit_log_id:4");
        assert_eq!(parse_replication_info(&fresh).unwrap().offset, 4);
    }

    #[test]
    fn ledisdb_command_replies_on_the_failover_path() {
        assert_eq!(reply(LEDIS_SLAVEOF_OK), Reply::Simple("OK".into()));
        for (raw, text) in [
            (LEDIS_CONFIG_REWRITE, "Running without a config file"),
            (LEDIS_CLIENT_PAUSE, "command not found"),
            (LEDIS_REPLICAOF, "command not found"),
        ] {
            assert_eq!(reply(raw), Reply::Error(text.into()));
        }
        assert!(
            matches!(reply(LEDIS_SLAVEOF_HIGH_PORT), Reply::Error(e) if e.contains("out of range"))
        );
    }

    // ---- Redis shapes ----------------------------------------------------------------

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
    fn parses_redis_info_with_defaults_for_missing_fields() {
        let redis = "# Server\r\nrun_id:abc\r\n# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:6379\r\nmaster_link_status:down\r\nmaster_link_down_since_seconds:7\r\nslave_repl_offset:99\r\nslave_priority:10\r\n";
        let info = parse_replication_info(redis).unwrap();
        assert_eq!(info.master.as_deref(), Some("127.0.0.1:6379"));
        assert!(!info.link_up);
        assert_eq!(
            (info.priority, info.offset, info.link_down_secs),
            (10, 99, Some(7))
        );
        assert_eq!(info.run_id.as_deref(), Some("abc"));
        assert_eq!(info.ledisdb_version, None);
        let sparse = parse_replication_info("role:slave\nmaster_link_status:up\n").unwrap();
        assert_eq!(
            (sparse.priority, sparse.offset, sparse.link_up),
            (100, 0, true)
        );
        assert!(parse_replication_info("hello").is_err());
        assert!(parse_replication_info("role:\r\n").is_err());
        assert_eq!(
            parse_replication_info("role:slave\nslave_priority:x")
                .unwrap()
                .priority,
            100
        );
    }

    #[test]
    fn redis_master_info_lists_its_replicas_and_skips_bad_entries() {
        let redis = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=127.0.0.1,port=6380,state=online,offset=42,lag=0\r\nslave1:ip=::1,port=6381,state=online,offset=42,lag=1\r\nslave2:ip=h,port=x\r\nslave_read_only:1\r\nslaves:nonsense,127.0.0.1:0\r\n";
        let info = parse_replication_info(redis).unwrap();
        assert_eq!(info.replicas, [port("127.0.0.1:6380"), port("[::1]:6381")]);
        let ipv6 = parse_replication_info("role:slave\r\nslaveof:::1:7820\r\n").unwrap();
        assert_eq!(ipv6.master.as_deref(), Some("[::1]:7820"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 2_000,
            failure_persistence: None,
            ..Default::default()
        })]

        /// LedisDB's keys with odd values, and broken lines: never a panic, and an
        /// accepted INFO always has a role and only valid replica addresses.
        #[test]
        fn ledisdb_info_never_panics(lines in proptest::collection::vec(
            (
                proptest::sample::select(vec![
                    "role", "slaveof", "slaves", "last_log_id", "commit_log_id",
                    "slave_repl_offset", "slave_priority", "master_link_status",
                    "ledisdb_version", "slave0", "x",
                ]),
                "[ -~]{0,24}",
            ),
            0..12,
        )) {
            let text: String = lines.iter().map(|(k, v)| format!("{k}:{v}\r\n")).collect();
            if let Ok(info) = parse_replication_info(&text) {
                proptest::prop_assert!(!info.role.is_empty());
                for addr in &info.replicas {
                    proptest::prop_assert_eq!(Addr::parse(&addr.to_string()).ok(), Some(addr.clone()));
                }
            }
        }
    }
}
