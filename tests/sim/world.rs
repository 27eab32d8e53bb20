//! Simulated Redis servers and the network between everything: roles, `SLAVEOF`,
//! replication offsets that advance with writes and beacons, the link status and
//! `master_last_io_seconds_ago` a replica reports, a restart with the data and role the
//! server had, priority 0, a replica that refuses promotion, and
//! `min-replicas-to-write` refusing a client's writes (`NOREPLICAS`).
//!
//! The rules are Redis's where they matter to a failover: a replica whose master's
//! process dies sees its link drop at once (the connection is reset), one cut off from
//! a live master keeps reporting the link up until `repl-timeout` (60 s) has passed
//! without hearing from it, and a live master is heard at least every
//! `repl-ping-replica-period` (10 s) and at every write (the daemons' beacons are
//! writes). A replica's `REPLCONF ACK` reaches its master while it hears its master and
//! its master hears it; `min-replicas-to-write` counts the replicas acknowledged within
//! `min-replicas-max-lag`. The setting is lost when the server restarts (a server with
//! no config file, as in a container: the harder case).

use redis_failover::Addr;
use redis_failover::redis::{ListedReplica, ReplicationInfo, Role};
use std::collections::{BTreeSet, HashMap};

/// Simulated time, in milliseconds since the run began.
pub type Ms = u64;

/// Redis's `repl-timeout`.
pub const REPL_TIMEOUT: Ms = 60_000;
/// Redis's `repl-ping-replica-period`.
pub const REPL_PING: Ms = 10_000;

/// Something on the simulated network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Node {
    Daemon(usize),
    Server(usize),
    /// The cluster's coordinator (see `cluster.rs`).
    Coordinator,
}

/// Links cut, each one way: `(from, to)` means nothing sent by `from` reaches `to`.
#[derive(Debug, Default)]
pub struct Net {
    cut: BTreeSet<(Node, Node)>,
}

impl Net {
    /// Whether `to` hears what `from` sends.
    pub fn hears(&self, from: Node, to: Node) -> bool {
        !self.cut.contains(&(from, to))
    }

    /// Whether a request and its reply get through (TCP needs both ways).
    pub fn connected(&self, a: Node, b: Node) -> bool {
        self.hears(a, b) && self.hears(b, a)
    }

    pub fn cut(&mut self, from: Node, to: Node) {
        self.cut.insert((from, to));
    }

    pub fn heal_all(&mut self) {
        self.cut.clear();
    }
}

/// What a simulated server is.
#[derive(Debug, Clone, PartialEq)]
pub enum SimRole {
    Master,
    Replica {
        master: Addr,
        link_up: bool,
        /// When it last heard from its master.
        last_io: Ms,
        /// When its link went down (meaningful while it is down).
        down_since: Ms,
    },
}

/// One simulated Redis server.
#[derive(Debug, Clone)]
pub struct Server {
    pub addr: Addr,
    pub group: usize,
    pub up: bool,
    pub role: SimRole,
    pub offset: i64,
    pub priority: u32,
    /// Answers `SLAVEOF NO ONE` with an error (a server where the command is renamed).
    pub refuses_promotion: bool,
    pub run_id: String,
    /// Writes paused (`CLIENT PAUSE ... WRITE`) until then.
    pub paused_until: Ms,
    /// Stopped (`SIGSTOP`, a long fork, swapping) until then: connections stay open,
    /// nothing is answered, nothing is sent to its replicas.
    pub frozen_until: Ms,
    /// `min-replicas-to-write` and `min-replicas-max-lag` (in ms), set by `CONFIG SET`.
    pub min_replicas: Option<(usize, Ms)>,
    /// The client's writes it holds, oldest first (ids; beacons are not kept).
    pub data: Vec<u64>,
    /// A replica's last `REPLCONF ACK` that reached its master.
    pub last_ack: Ms,
    /// When it last became master or restarted (a setting is owed since then).
    pub since: Ms,
}

/// Why a client's write was not acknowledged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WriteError {
    /// Down, frozen or unreachable: the client's connection fails or hangs.
    NoAnswer,
    /// `READONLY`: a replica.
    ReadOnly,
    /// `CLIENT PAUSE ... WRITE`: the client waits (and gives up at its timeout).
    Paused,
    /// `NOREPLICAS`: too few replicas acknowledged lately.
    NoReplicas,
}

impl Server {
    /// Whether it answers now.
    pub fn answers(&self, now: Ms) -> bool {
        self.up && self.frozen_until <= now
    }
}

/// Every simulated server, by index and by address.
#[derive(Debug, Default)]
pub struct World {
    pub servers: Vec<Server>,
    by_addr: HashMap<Addr, usize>,
}

impl World {
    pub fn add(&mut self, server: Server) -> usize {
        let index = self.servers.len();
        self.by_addr.insert(server.addr.clone(), index);
        self.servers.push(server);
        index
    }

    pub fn index(&self, addr: &Addr) -> Option<usize> {
        self.by_addr.get(addr).copied()
    }

    /// Replication moves on: every replica that hears its master catches up with it.
    pub fn replicate(&mut self, net: &Net, now: Ms) {
        for i in 0..self.servers.len() {
            let SimRole::Replica {
                master,
                link_up,
                last_io,
                down_since,
            } = self.servers[i].role.clone()
            else {
                continue;
            };
            if !self.servers[i].answers(now) {
                continue;
            }
            let source = self.index(&master).filter(|&m| m != i);
            let (mut link_up, mut last_io, mut down_since) = (link_up, last_io, down_since);
            match source {
                Some(m) if self.servers[m].up => {
                    let frozen = !self.servers[m].answers(now);
                    if !frozen && net.connected(Node::Server(m), Node::Server(i))
                        || (!frozen && link_up && net.hears(Node::Server(m), Node::Server(i)))
                    {
                        let master_offset = self.servers[m].offset;
                        if !link_up || master_offset != self.servers[i].offset {
                            // A (re)sync or new writes: the replica now has exactly
                            // what its master has (divergent writes are dropped).
                            self.servers[i].offset = master_offset;
                            self.sync_data(m, i);
                            last_io = now;
                        } else if now.saturating_sub(last_io) >= REPL_PING {
                            last_io = now;
                        }
                        link_up = true;
                        if net.hears(Node::Server(i), Node::Server(m)) {
                            self.servers[i].last_ack = now;
                        }
                    } else if link_up && now.saturating_sub(last_io) > REPL_TIMEOUT {
                        link_up = false;
                        down_since = now;
                    }
                }
                _ => {
                    // The master's process is gone (the connection was reset) or the
                    // address names nothing: the link is down at once.
                    if link_up {
                        link_up = false;
                        down_since = now;
                    }
                }
            }
            self.servers[i].role = SimRole::Replica {
                master,
                link_up,
                last_io,
                down_since,
            };
        }
    }

    /// A beacon (`PUBLISH`) on a master whose writes are not paused. `PUBLISH` is no
    /// write command: `min-replicas-to-write` does not refuse it.
    pub fn write(&mut self, index: usize, bytes: i64, now: Ms) {
        let server = &mut self.servers[index];
        if server.up && server.role == SimRole::Master && server.paused_until <= now {
            server.offset += bytes;
        }
    }

    /// A client's write `id` (100 bytes), acknowledged or refused as Redis would.
    pub fn client_write(&mut self, index: usize, id: u64, now: Ms) -> Result<(), WriteError> {
        let good = self.good_replicas(index, now);
        let server = &mut self.servers[index];
        if !server.up {
            return Err(WriteError::NoAnswer);
        }
        if server.role != SimRole::Master {
            return Err(WriteError::ReadOnly);
        }
        if server.paused_until > now {
            return Err(WriteError::Paused);
        }
        if let Some((to_write, _)) = server.min_replicas
            && good < to_write
        {
            return Err(WriteError::NoReplicas);
        }
        server.offset += 100;
        if server.frozen_until > now {
            // Taken when it runs again; the client has given up by then (not counted).
            return Err(WriteError::NoAnswer);
        }
        server.data.push(id);
        Ok(())
    }

    /// The replicas whose last `REPLCONF ACK` to `index` is within its
    /// `min-replicas-max-lag` (Redis's `repl_good_slaves_count`).
    pub fn good_replicas(&self, index: usize, now: Ms) -> usize {
        let master = &self.servers[index];
        let max_lag = master.min_replicas.map_or(0, |(_, lag)| lag);
        self.servers
            .iter()
            .filter(|r| {
                r.up && now.saturating_sub(r.last_ack) <= max_lag
                    && matches!(&r.role, SimRole::Replica { master: m, link_up: true, .. } if *m == master.addr)
            })
            .count()
    }

    /// The process stops: a `CONFIG SET` not written to a config file is gone.
    pub fn kill(&mut self, index: usize) {
        let server = &mut self.servers[index];
        server.up = false;
        server.min_replicas = None;
    }

    /// The process starts again with the data and role it had.
    pub fn restart(&mut self, index: usize, now: Ms) {
        let server = &mut self.servers[index];
        if !server.up {
            server.up = true;
            server.since = now;
        }
    }

    /// Replica `i` now holds what master `m` holds: the new tail when it had a prefix
    /// of it (ids are unique, so a matching last id means a matching prefix), a full
    /// copy otherwise.
    fn sync_data(&mut self, m: usize, i: usize) {
        let held = &self.servers[i].data;
        let master = &self.servers[m].data;
        let prefix = held.len() <= master.len()
            && held
                .last()
                .is_none_or(|last| master[held.len() - 1] == *last);
        let data = if prefix {
            let tail = master[held.len()..].to_vec();
            let mut data = std::mem::take(&mut self.servers[i].data);
            data.extend(tail);
            data
        } else {
            master.clone()
        };
        self.servers[i].data = data;
    }

    /// `ROLE`, as a real server answers it.
    pub fn role(&self, index: usize, net: &Net) -> Role {
        let server = &self.servers[index];
        match &server.role {
            SimRole::Master => Role::Master {
                offset: server.offset,
                replicas: self
                    .servers
                    .iter()
                    .enumerate()
                    .filter(|(j, r)| {
                        r.up && net.connected(Node::Server(index), Node::Server(*j))
                            && matches!(&r.role, SimRole::Replica { master, link_up: true, .. } if *master == server.addr)
                    })
                    .map(|(_, r)| ListedReplica {
                        addr: r.addr.clone(),
                        offset: r.offset,
                    })
                    .collect(),
            },
            SimRole::Replica {
                master, link_up, ..
            } => Role::Replica {
                master: master.to_string(),
                state: if *link_up { "connected" } else { "connect" }.into(),
            },
        }
    }

    /// `INFO replication` (and the run id), as a real server answers it.
    pub fn info(&self, index: usize, net: &Net, now: Ms) -> ReplicationInfo {
        let server = &self.servers[index];
        let secs = |since: Ms| now.saturating_sub(since) / 1000;
        let (role, master, link_up, link_down_secs, last_io_secs, replicas) = match &server.role {
            SimRole::Master => {
                let replicas = match self.role(index, net) {
                    Role::Master { replicas, .. } => replicas.into_iter().map(|r| r.addr).collect(),
                    _ => Vec::new(),
                };
                ("master", None, false, None, None, replicas)
            }
            SimRole::Replica {
                master,
                link_up,
                last_io,
                down_since,
            } => (
                "slave",
                Some(master.to_string()),
                *link_up,
                (!link_up).then(|| secs(*down_since)),
                link_up.then(|| secs(*last_io)),
                Vec::new(),
            ),
        };
        ReplicationInfo {
            role: role.into(),
            master,
            link_up,
            link_down_secs,
            last_io_secs,
            priority: server.priority,
            offset: server.offset,
            run_id: Some(server.run_id.clone()),
            replicas,
            ledisdb_version: None,
        }
    }

    /// `SLAVEOF NO ONE`: `Err(text)` when the server refuses it.
    pub fn promote(&mut self, index: usize, now: Ms) -> Result<(), String> {
        let server = &mut self.servers[index];
        if server.refuses_promotion && server.role != SimRole::Master {
            return Err("ERR unknown command 'SLAVEOF'".into());
        }
        if server.role != SimRole::Master {
            server.role = SimRole::Master;
            server.since = now;
        }
        Ok(())
    }

    /// `SLAVEOF host port`: the link is down until the next replication step syncs it.
    pub fn follow(&mut self, index: usize, master: &Addr, now: Ms) {
        let server = &mut self.servers[index];
        if matches!(&server.role, SimRole::Replica { master: m, .. } if m == master) {
            return;
        }
        server.role = SimRole::Replica {
            master: master.clone(),
            link_up: false,
            last_io: now,
            down_since: now,
        };
    }

    /// The servers of `group` that say they are master and have answered for at least
    /// `settled` (time enough to be fenced).
    pub fn masters_up(&self, group: usize, now: Ms, settled: Ms) -> Vec<usize> {
        (0..self.servers.len())
            .filter(|&i| {
                let s = &self.servers[i];
                s.group == group
                    && s.up
                    && s.frozen_until + settled <= now
                    && s.role == SimRole::Master
            })
            .collect()
    }
}
