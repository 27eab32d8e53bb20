//! One monitored server, spoken to with the few commands every Redis-compatible server
//! has on the failover path: `ROLE`, `INFO`, `SLAVEOF` (LedisDB has no `REPLICAOF`).
//!
//! A [`RedisNode`] keeps one connection open and reuses it for every check, reconnecting
//! after any error: a reply that timed out may still arrive later and would otherwise be
//! read as the answer to the next command. What the replies mean is `replies.rs`.
//!
//! This is the blocking path, for the failover worker (a few commands per failover). The
//! monitor's checks run on the checker's own non-blocking connections
//! (`monitor/checker/`), which share [`INFO_COMMANDS`] and [`read_replication_info`].

use super::replies::{ReplicationInfo, Role, parse_replication_info, parse_role};
use super::resp::{Connection, Reply};
use crate::address::Addr;
use crate::error::{Error, Result};
use crate::net::tls::Tls;
use crate::secret::Secret;
use std::sync::Arc;
use std::time::Duration;

/// Timeouts, credentials and TLS for connections to monitored servers. `Debug` shows
/// the password as `<redacted>`.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    /// ACL user: `AUTH <username> <password>`; without one, `AUTH <password>`.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// With `tls = true`: every connection is TLS, with the material current when it
    /// opens (see `net::tls`).
    pub tls: Option<Arc<Tls>>,
}

impl NodeOptions {
    /// The `AUTH` command a new connection starts with, when a password is set.
    pub fn auth_command(&self) -> Option<Vec<&str>> {
        let password = self.password.as_ref()?.expose();
        Some(match &self.username {
            Some(user) => vec!["AUTH", user, password],
            None => vec!["AUTH", password],
        })
    }
}

impl Default for NodeOptions {
    fn default() -> NodeOptions {
        NodeOptions {
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_millis(500),
            username: None,
            password: None,
            tls: None,
        }
    }
}

/// One server and the connection to it, opened on first use.
pub struct RedisNode {
    addr: Addr,
    options: NodeOptions,
    conn: Option<Connection>,
}

impl RedisNode {
    pub fn new(addr: Addr, options: NodeOptions) -> RedisNode {
        RedisNode {
            addr,
            options,
            conn: None,
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
        let replies = self.pipeline_raw(INFO_COMMANDS)?;
        read_replication_info(&replies).map_err(|e| self.error(&e))
    }

    /// `SLAVEOF host port`, or `SLAVEOF NO ONE` when `master` is None.
    pub fn slave_of(&mut self, master: Option<&Addr>) -> Result<()> {
        match master {
            Some(m) => self.call(&["SLAVEOF", &m.host, &m.port.to_string()]),
            None => self.call(&["SLAVEOF", "NO", "ONE"]),
        }
        .map(|_| ())
    }

    /// Makes the server a replica of `master` discarding what it holds: `SLAVEOF host
    /// port RESTART` on LedisDB (plain `SLAVEOF` would resume from its own last log id,
    /// keeping writes no replica saw and skipping the new master's entries with the same
    /// ids), plain `SLAVEOF` on Redis (which always resynchronises what differs).
    pub fn follow_afresh(&mut self, master: &Addr, ledisdb: bool) -> Result<()> {
        let port = master.port.to_string();
        let mut args = vec!["SLAVEOF", master.host.as_str(), port.as_str()];
        if ledisdb {
            args.push("RESTART");
        }
        self.call(&args).map(|_| ())
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

    /// Like `RedisNode::pipeline`, but error replies are returned as replies (to tell
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
                self.options.tls.as_deref(),
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
        let Some(auth) = self.options.auth_command() else {
            return Ok(());
        };
        let reply = conn.command(&auth);
        match reply {
            Ok(Reply::Error(e)) => Err(self.error(&format!("AUTH: {e}"))),
            Err(e) => Err(self.error(&format!("AUTH: {e}"))),
            Ok(_) => Ok(()),
        }
    }

    fn error(&self, msg: &str) -> Error {
        Error::Server(format!("{}: {msg}", self.addr))
    }
}

/// The commands that read a server's replication state: the run id is in `INFO
/// server`, the rest in `INFO replication`.
pub const INFO_COMMANDS: &[&[&str]] = &[&["INFO", "server"], &["INFO", "replication"]];

/// What the replies to [`INFO_COMMANDS`] say. Only the replication section is
/// required: a server that refuses `INFO server` (the run id is only a tie-break) is
/// still usable.
pub fn read_replication_info(replies: &[Reply]) -> std::result::Result<ReplicationInfo, String> {
    let [server, replication] = replies else {
        return Err("INFO: wrong number of replies".into());
    };
    if let Reply::Error(e) = replication {
        return Err(format!("INFO replication: {e}"));
    }
    let text = format!(
        "{}\n{}",
        server.text().unwrap_or_default(),
        replication.text().unwrap_or_default()
    );
    parse_replication_info(&text)
}
