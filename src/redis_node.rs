//! One monitored server, spoken to with the few commands every Redis-compatible server
//! has on the failover path: `ROLE`, `INFO`, `SLAVEOF` (LedisDB has no `REPLICAOF`).
//!
//! A [`RedisNode`] keeps one connection open and reuses it for every check, reconnecting
//! after any error: a reply that timed out may still arrive later and would otherwise be
//! read as the answer to the next command. Replies are parsed leniently: LedisDB sends
//! offsets as bulk strings and omits fields Redis has, and a missing field takes its
//! default. A reply that cannot be understood is an error ("treat as down"), never a panic.

use crate::address::Addr;
use crate::error::{Error, Result};
use crate::resp::{Connection, PendingConnect, Reply};
use crate::secret::Secret;
use serde::Serialize;
use std::time::Duration;

/// Timeouts and credentials for connections to monitored servers. `Debug` shows the
/// password as `<redacted>`.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    /// ACL user: `AUTH <username> <password>`; without one, `AUTH <password>`.
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl Default for NodeOptions {
    fn default() -> NodeOptions {
        NodeOptions {
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_millis(500),
            username: None,
            password: None,
        }
    }
}

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

/// One server and the connection to it, opened on first use.
pub struct RedisNode {
    addr: Addr,
    options: NodeOptions,
    conn: Option<Connection>,
    /// A connect started by [`RedisNode::start_check`] and not finished yet.
    connecting: Option<PendingConnect>,
}

/// What a check started with [`RedisNode::start_check`] waits for on its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// The connect to finish (socket writable): then call [`RedisNode::connected`].
    Connect(std::os::fd::RawFd),
    /// The `ROLE` reply (socket readable): then call [`RedisNode::receive_role`].
    Reply(std::os::fd::RawFd),
}

impl RedisNode {
    pub fn new(addr: Addr, options: NodeOptions) -> RedisNode {
        RedisNode {
            addr,
            options,
            conn: None,
            connecting: None,
        }
    }

    /// Asks the server for its role.
    pub fn role(&mut self) -> Result<Role> {
        let reply = self.call(&["ROLE"])?;
        parse_role(&reply).map_err(|e| self.error(&e))
    }

    /// Reads `INFO server` and `INFO replication` in one round trip.
    ///
    /// Only the replication section is required: a server that refuses `INFO server`
    /// (the run id is only a tie-break) is still usable.
    pub fn replication_info(&mut self) -> Result<ReplicationInfo> {
        let replies = self.pipeline_raw(&[&["INFO", "server"], &["INFO", "replication"]])?;
        let (server, replication) = match replies.as_slice() {
            [server, replication] => (server, replication),
            _ => return Err(self.error("INFO: wrong number of replies")),
        };
        if let Reply::Error(e) = replication {
            return Err(self.error(&format!("INFO replication: {e}")));
        }
        let text = format!(
            "{}\n{}",
            server.text().unwrap_or_default(),
            replication.text().unwrap_or_default()
        );
        parse_replication_info(&text).map_err(|e| self.error(&e))
    }

    /// `SLAVEOF host port`, or `SLAVEOF NO ONE` when `master` is None.
    pub fn slave_of(&mut self, master: Option<&Addr>) -> Result<()> {
        match master {
            Some(m) => self.call(&["SLAVEOF", &m.host, &m.port.to_string()]),
            None => self.call(&["SLAVEOF", "NO", "ONE"]),
        }
        .map(|_| ())
    }

    /// `CONFIG REWRITE`, so a restarted server keeps its new role. Servers without a
    /// config file (or without the command, such as LedisDB) refuse it; that is reported
    /// to the caller, who treats it as a warning.
    pub fn config_rewrite(&mut self) -> Result<()> {
        self.call(&["CONFIG", "REWRITE"]).map(|_| ())
    }

    /// Runs one command; an error reply becomes an [`Error::Server`].
    pub fn call(&mut self, args: &[&str]) -> Result<Reply> {
        let mut replies = self.pipeline(&[args])?;
        replies.pop().ok_or_else(|| self.error("no reply"))
    }

    /// Runs commands in one round trip. Any error reply fails the whole call; a
    /// transport error (timeout, EOF, garbage) also drops the connection, since a late
    /// reply would otherwise be read as the answer to the next command.
    fn pipeline(&mut self, commands: &[&[&str]]) -> Result<Vec<Reply>> {
        let replies = self.pipeline_raw(commands)?;
        if let Some(Reply::Error(e)) = replies.iter().find(|r| matches!(r, Reply::Error(_))) {
            return Err(self.error(e));
        }
        Ok(replies)
    }

    /// Like [`RedisNode::pipeline`], but error replies are returned as replies (to tell
    /// a server that refuses a command from one that cannot be reached).
    pub fn pipeline_raw(&mut self, commands: &[&[&str]]) -> Result<Vec<Reply>> {
        self.ensure_connected()?;
        let Some(conn) = self.conn.as_mut() else {
            return Err(self.error("no connection"));
        };
        conn.pipeline(commands).map_err(|e| {
            self.conn = None;
            self.error(&e.to_string())
        })
    }

    /// Opens the connection (and authenticates) unless it is open.
    fn ensure_connected(&mut self) -> Result<()> {
        if self.conn.is_none() {
            let mut conn = Connection::open(
                &self.addr,
                self.options.connect_timeout,
                self.options.io_timeout,
            )?;
            self.authenticate(&mut conn)?;
            self.conn = Some(conn);
        }
        Ok(())
    }

    /// `AUTH [<username>] <password>` on a new connection, when a password is set. The
    /// server's refusal (`WRONGPASS ...`) never echoes the credentials, and neither do
    /// the errors made here.
    fn authenticate(&self, conn: &mut Connection) -> Result<()> {
        let Some(password) = &self.options.password else {
            return Ok(());
        };
        let reply = match &self.options.username {
            Some(user) => conn.command(&["AUTH", user, password.expose()]),
            None => conn.command(&["AUTH", password.expose()]),
        };
        match reply {
            Ok(Reply::Error(e)) => Err(self.error(&format!("AUTH: {e}"))),
            Err(e) => Err(self.error(&format!("AUTH: {e}"))),
            Ok(_) => Ok(()),
        }
    }

    /// Starts a check without blocking: sends `ROLE` on the open connection, or starts
    /// connecting. Says which socket to wait on, and for what.
    pub fn start_check(&mut self) -> Result<Waiting> {
        if self.conn.is_some() {
            return self.send_role().map(Waiting::Reply);
        }
        let pending = PendingConnect::start(&self.addr)?;
        let fd = pending.raw_fd();
        self.connecting = Some(pending);
        Ok(Waiting::Connect(fd))
    }

    /// Finishes the connect started by [`RedisNode::start_check`], authenticates and
    /// sends `ROLE`; returns the socket to wait on for the reply.
    pub fn connected(&mut self) -> Result<std::os::fd::RawFd> {
        let Some(pending) = self.connecting.take() else {
            return Err(self.error("no connect under way"));
        };
        let mut conn = pending.finish(self.options.io_timeout)?;
        self.authenticate(&mut conn)?;
        self.conn = Some(conn);
        self.send_role()
    }

    pub fn connect_timeout(&self) -> Duration {
        self.options.connect_timeout
    }

    /// Sends `ROLE` on the open connection without waiting for the reply; returns the
    /// socket to wait on. [`RedisNode::receive_role`] then reads the reply.
    fn send_role(&mut self) -> Result<std::os::fd::RawFd> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(self.error("no connection"));
        };
        match conn.send(&[&["ROLE"]]) {
            Ok(()) => Ok(conn.raw_fd()),
            Err(e) => {
                self.conn = None;
                Err(self.error(&e.to_string()))
            }
        }
    }

    /// Reads the reply to [`RedisNode::send_role`].
    pub fn receive_role(&mut self) -> Result<Role> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(self.error("no connection"));
        };
        match conn.receive() {
            Ok(Reply::Error(e)) => Err(self.error(&e)),
            Ok(reply) => parse_role(&reply).map_err(|e| self.error(&e)),
            Err(e) => {
                self.conn = None;
                Err(self.error(&e.to_string()))
            }
        }
    }

    /// Gives up on a reply that did not come in time: the connection is out of step.
    pub fn abandon(&mut self, why: &str) -> Error {
        self.conn = None;
        self.connecting = None;
        self.error(why)
    }

    pub fn io_timeout(&self) -> Duration {
        self.options.io_timeout
    }

    fn error(&self, msg: &str) -> Error {
        Error::Server(format!("{}: {msg}", self.addr))
    }
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
