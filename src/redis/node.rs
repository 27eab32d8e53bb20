//! One monitored server, spoken to with the few commands every Redis-compatible server
//! has on the failover path: `ROLE`, `INFO`, `SLAVEOF` (LedisDB has no `REPLICAOF`).
//!
//! A [`RedisNode`] keeps one connection open and reuses it for every check, reconnecting
//! after any error: a reply that timed out may still arrive later and would otherwise be
//! read as the answer to the next command. What the replies mean is `replies.rs`.

use super::replies::{ReplicationInfo, Role, parse_replication_info, parse_role};
use super::resp::{Connection, PendingConnect, Reply};
use crate::address::Addr;
use crate::error::{Error, Result};
use crate::secret::Secret;
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
