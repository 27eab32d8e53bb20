//! The session thread: one ZooKeeper session at a time, the election, the state watch,
//! and the leader's lease.
//!
//! What the thread does with each connection state the crate reports:
//!
//! - `Connected`: probe (list the election znodes) and re-arm the watches: the crate does
//!   not restore watches after a reconnect. If this daemon's election znode is gone, the
//!   session was replaced behind our back (after a server reported it expired, the crate
//!   silently opens a new one), so the client is closed and a new one joins again.
//! - `Connecting`, `NotConnected` (the crate reports both on a mere disconnect, and the
//!   latter also on expiry): stop acting at once, before the session could expire.
//! - `Closed`, `AuthFailed`: the crate's io loop is gone for good; a new client is built,
//!   a new election znode created, and the daemon rejoins behind the others.
//!
//! Every `probe_interval` the thread lists the election znodes. A reply proves the
//! session alive when the request was sent; the leader's lease runs from then for half
//! a session timeout. Without a reply for a whole session timeout the session is
//! written off and a new client built. A new client is built only once some server
//! accepts a TCP connection: the crate's reconnect loop spins without pause while no
//! server listens.

use super::client::{CallError, Client};
use super::election::{self, Position};
use super::{Shared, ZkOptions, lock, parse_state};
use crate::broker::PeerStatus;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zookeeper::{CreateMode, WatchedEvent, ZkError, ZkState};

/// What wakes the session thread. `generation` names the client an event came from;
/// events of replaced clients are ignored.
pub enum Event {
    /// The crate reported a connection state.
    Session {
        generation: u64,
        state: ZkState,
    },
    /// The watched predecessor znode changed (deleted, most likely).
    Predecessor {
        generation: u64,
    },
    /// The state znode changed.
    State {
        generation: u64,
    },
    Shutdown,
}

/// Why the thread stopped what it was doing.
enum Lost {
    /// A call failed, but within the session timeout: keep the client, probe again.
    Retry(String),
    /// The session has ended or cannot be trusted: close it and build a new one.
    Session(String),
    /// The daemon is stopping.
    Shutdown,
}

pub struct Session {
    shared: Arc<Shared>,
    events_tx: Sender<Event>,
    events: Receiver<Event>,
    client: Option<Client>,
    generation: u64,
    /// This daemon's election znode (name under the election path).
    node: Option<String>,
    /// The election znode of the session given up last, removed once a new session is
    /// open (see [`Session::remove_previous_node`]).
    previous_node: Option<String>,
    /// The crate's last reported state is `Connected` (or a call has just succeeded).
    connected: bool,
    /// The current client reported its connection lost: its next `Connected` is a
    /// new connection to the same session. (Its first `Connected` may come before the
    /// listener is in place, so `Connected` reports are not counted.)
    dropped: bool,
    /// Why the last session refused the tree (its ACLs), logged once.
    refused: Option<String>,
    /// This daemon is the lowest znode and has read the state since it became so.
    leading: bool,
    /// Whether subscribers were last told this daemon acts.
    announced_acting: bool,
    /// When the last reply from ZooKeeper arrived.
    last_reply: Instant,
    next_probe: Instant,
    /// No new client before this (backoff while ZooKeeper is unreachable).
    retry_at: Instant,
    failures_in_a_row: u32,
    /// The predecessor watched, so it is not watched twice.
    watching: Option<String>,
    /// The predecessor last logged (watches are set again after each reconnect).
    followed: Option<String>,
    /// HTTP addresses of election znodes, by name (their data never changes).
    addresses: BTreeMap<String, Option<String>>,
}

impl Session {
    pub fn new(shared: Arc<Shared>, events_tx: Sender<Event>, events: Receiver<Event>) -> Session {
        let now = Instant::now();
        Session {
            shared,
            events_tx,
            events,
            client: None,
            generation: 0,
            node: None,
            previous_node: None,
            connected: false,
            dropped: false,
            refused: None,
            leading: false,
            announced_acting: false,
            last_reply: now,
            next_probe: now,
            retry_at: now,
            failures_in_a_row: 0,
            watching: None,
            followed: None,
            addresses: BTreeMap::new(),
        }
    }

    fn options(&self) -> &ZkOptions {
        &self.shared.options
    }

    fn probe_interval(&self) -> Duration {
        (self.options().session_timeout / 5).max(Duration::from_millis(20))
    }

    pub fn run(mut self) {
        loop {
            if self.client.is_none() && Instant::now() >= self.retry_at {
                match self.open() {
                    Ok(()) => self.failures_in_a_row = 0,
                    Err(Lost::Shutdown) => break,
                    Err(Lost::Session(why) | Lost::Retry(why)) => self.give_up(&why),
                }
            }
            let now = Instant::now();
            let wake = if self.client.is_some() {
                self.next_probe
            } else {
                self.retry_at
            };
            // Wake up in time to notice a lease running out, too.
            let wait = wake
                .saturating_duration_since(now)
                .min(self.probe_interval());
            let event = match self.events.recv_timeout(wait) {
                Ok(event) => Some(event),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let result = match event {
                Some(Event::Shutdown) => break,
                Some(Event::Session { generation, state }) if generation == self.generation => {
                    self.on_state(state)
                }
                Some(Event::Predecessor { generation }) if generation == self.generation => {
                    self.probe()
                }
                Some(Event::State { generation }) if generation == self.generation => {
                    self.read_state()
                }
                Some(_) | None => Ok(()),
            };
            if !self.settle(result) {
                break;
            }
            // Due probes run even while events keep coming (a busy state znode must not
            // starve the lease).
            if self.client.is_some() && Instant::now() >= self.next_probe {
                let result = self.probe();
                if !self.settle(result) {
                    break;
                }
            }
            self.publish_acting();
        }
        self.stop_acting("the daemon is stopping");
        if let Some(client) = self.client.take() {
            // A clean stop ends the session now, so the election znode goes at once.
            if !client.close(Duration::from_secs(2)) {
                log::warn!(
                    "zk: the session could not be closed; its election znode goes when it expires"
                );
            }
        }
        lock(&self.shared.client).take();
    }

    /// Acts on the outcome of a step; returns false when the thread must stop.
    fn settle(&mut self, result: Result<(), Lost>) -> bool {
        match result {
            Ok(()) => {}
            Err(Lost::Shutdown) => return false,
            Err(Lost::Retry(why)) => {
                log::debug!("zk: {why}; probing again");
                self.next_probe = Instant::now() + self.probe_interval();
            }
            Err(Lost::Session(why)) => self.give_up(&why),
        }
        true
    }

    /// Connects, creates the paths, joins the election and reads the state.
    fn open(&mut self) -> Result<(), Lost> {
        let servers = self.options().servers.clone();
        if !any_server_listens(&servers) {
            return Err(Lost::Session(format!(
                "no ZooKeeper server accepts connections at {}",
                servers.join(",")
            )));
        }
        self.generation += 1;
        let generation = self.generation;
        let tx = self.events_tx.clone();
        let client = Client::connect(
            &servers.join(","),
            self.options().session_timeout,
            move |state| {
                let _ = tx.send(Event::Session { generation, state });
            },
        )
        .map_err(Lost::Session)?;
        self.client = Some(client.clone());
        self.dropped = false;
        self.node = None;
        self.watching = None;
        self.set_session("connecting", None);
        self.log_in(&client)?;
        let options = self.options().clone();
        let (guard, paths) = (self.shared.guard.clone(), options.guarded_paths());
        if let Err(why) = self.call(&client, move |zk| guard.check_tree(zk, &paths))? {
            // Refused again at every retry: logged when it changes.
            if self.refused.as_ref() != Some(&why) {
                log::error!("zk: {why}");
                self.refused = Some(why.clone());
            }
            return Err(Lost::Session(format!("not joining: {why}")));
        }
        for path in ancestors(&options.base)
            .into_iter()
            .chain([options.election_path()])
        {
            self.ensure(&client, &path, Vec::new())?;
        }
        // A missing state znode gets this daemon's copy (empty on a first start), so an
        // ensemble that lost its data does not make the cluster forget its groups.
        let known = serde_json::to_vec(&*self.shared.state()).unwrap_or_default();
        self.ensure(&client, &options.state_path(), known)?;
        let prefix = format!("{}/{}", options.election_path(), election::PREFIX);
        let data = match &options.sentinel_addr {
            Some(sentinel) => format!("{} {sentinel}", options.http_addr),
            None => options.http_addr.clone(),
        }
        .into_bytes();
        let acl = self.shared.guard.for_new_znodes();
        let created = self.call(&client, move |zk| {
            zk.create(&prefix, data, acl, CreateMode::EphemeralSequential)
        })?;
        let name = created.rsplit('/').next().unwrap_or_default().to_string();
        log::info!(
            "zk: session open; this daemon is {name} in {}",
            options.election_path()
        );
        *lock(&self.shared.client) = Some((client.clone(), created));
        self.node = Some(name);
        self.connected = true;
        self.set_session("connected", None);
        self.remove_previous_node(&client);
        self.read_state()?;
        self.probe()
    }

    /// Deletes the election znode of this daemon's previous session, if it is still
    /// there. The crate declares a session lost at the first disconnect when it has not
    /// pinged for a session timeout (it pings only when idle, and the probes keep it
    /// busy), while ZooKeeper keeps the session, and its znode at the head of the
    /// election, until it expires. That client is given up and this daemon no longer
    /// acts through it, so its znode only delays the next leader: remove it now.
    fn remove_previous_node(&mut self, client: &Client) {
        let Some(name) = self.previous_node.take() else {
            return;
        };
        let path = format!("{}/{name}", self.options().election_path());
        let owned = path.clone();
        match client.call(self.options().call_timeout(), move |zk| {
            zk.delete(&owned, None)
        }) {
            Ok(()) => log::info!("zk: removed {path}, left by this daemon's previous session"),
            Err(CallError::Zk(ZkError::NoNode)) => {}
            Err(e) => log::warn!("zk: cannot remove {path} of the previous session: {e}"),
        }
    }

    /// Creates a persistent znode unless it exists.
    fn ensure(&mut self, client: &Client, path: &str, data: Vec<u8>) -> Result<(), Lost> {
        if self.shared.stopping.is_triggered() {
            return Err(Lost::Shutdown);
        }
        let owned = path.to_string();
        let acl = self.shared.guard.for_new_znodes();
        let result = client.call(self.options().call_timeout(), move |zk| {
            zk.create(&owned, data, acl, CreateMode::Persistent)
        });
        match result {
            Ok(_) => {
                log::info!("zk: created {path}");
                self.last_reply = Instant::now();
                Ok(())
            }
            Err(CallError::Zk(ZkError::NodeExists)) => {
                self.last_reply = Instant::now();
                Ok(())
            }
            Err(e) => Err(Lost::Session(format!("cannot create {path}: {e}"))),
        }
    }

    /// Logs a new client in with `zk_auth` (nothing without it), before any other
    /// request. ZooKeeper keeps logins per connection and the crate does not send them
    /// again when it reconnects, so a reconnect costs the session (see `on_state`).
    fn log_in(&mut self, client: &Client) -> Result<(), Lost> {
        if !self.shared.guard.logs_in() {
            return Ok(());
        }
        let guard = self.shared.guard.clone();
        self.call(client, move |zk| guard.log_in(zk))
    }

    /// One call with the usual deadline; any failure loses the session's trust.
    fn call<T: Send + 'static>(
        &mut self,
        client: &Client,
        call: impl FnOnce(&zookeeper::ZooKeeper) -> zookeeper::ZkResult<T> + Send + 'static,
    ) -> Result<T, Lost> {
        if self.shared.stopping.is_triggered() {
            return Err(Lost::Shutdown);
        }
        match client.call(self.options().call_timeout(), call) {
            Ok(value) => {
                self.last_reply = Instant::now();
                Ok(value)
            }
            Err(e) => Err(self.call_failed(e)),
        }
    }

    /// A call failed: stop acting; decide whether the session is still worth waiting for.
    fn call_failed(&mut self, error: CallError) -> Lost {
        self.stop_acting(&format!("ZooKeeper did not answer: {error}"));
        let why = error.to_string();
        self.set_session(
            if self.connected {
                "connected"
            } else {
                "disconnected"
            },
            Some(why.clone()),
        );
        let silent = self.last_reply.elapsed();
        match error {
            CallError::Zk(ZkError::SessionExpired) => {
                Lost::Session("ZooKeeper expired the session".into())
            }
            _ if silent >= self.options().session_timeout => Lost::Session(format!(
                "no answer from ZooKeeper for {} ms: {why}",
                silent.as_millis()
            )),
            // Still within the session timeout: keep the client, try again later.
            _ => Lost::Retry(why),
        }
    }

    /// Lists the election znodes: proves the session alive, finds the leader, watches
    /// the predecessor, refreshes the peers; extends or starts the lease when leading.
    fn probe(&mut self) -> Result<(), Lost> {
        self.next_probe = Instant::now() + self.probe_interval();
        let (Some(client), Some(mine)) = (self.client.clone(), self.node.clone()) else {
            return Ok(());
        };
        loop {
            let sent = Instant::now();
            let path = self.options().election_path();
            let children = self.call(&client, move |zk| zk.get_children(&path, false))?;
            self.connected = true;
            let order = election::ordered(&children);
            self.refresh_peers(&client, &order, &mine);
            match election::position(&order, &mine) {
                Position::Absent => {
                    return Err(Lost::Session(format!(
                        "this daemon's election znode {mine} is gone: its session has ended"
                    )));
                }
                Position::Leader => {
                    if !self.leading {
                        // Read every change made before this daemon led, so a failover
                        // begun by the previous leader is seen before acting.
                        self.read_state()?;
                        self.leading = true;
                        log::warn!("zk: this daemon ({mine}) leads the cluster; acting");
                    }
                    self.watching = None;
                    *lock(&self.shared.lease) = Some(sent + self.options().lease());
                    self.set_role("leader");
                    return Ok(());
                }
                Position::Behind { predecessor } => {
                    if self.leading {
                        // Cannot happen while the znode lives; be safe anyway.
                        self.stop_acting("another daemon's znode is ahead");
                    }
                    self.set_role("follower");
                    if self.watching.as_deref() == Some(&predecessor) {
                        return Ok(());
                    }
                    let generation = self.generation;
                    let tx = self.events_tx.clone();
                    let path = format!("{}/{predecessor}", self.options().election_path());
                    let watched = self.call(&client, move |zk| {
                        zk.exists_w(&path, move |_event: WatchedEvent| {
                            let _ = tx.send(Event::Predecessor { generation });
                        })
                    })?;
                    if watched.is_some() {
                        if self.followed.as_deref() != Some(&predecessor) {
                            log::info!("zk: {mine} follows; watching {predecessor}");
                            self.followed = Some(predecessor.clone());
                        }
                        self.watching = Some(predecessor);
                        return Ok(());
                    }
                    // Gone between the listing and the watch: look again.
                }
            }
        }
    }

    /// Reads the state znode and watches it for the next change.
    fn read_state(&mut self) -> Result<(), Lost> {
        let Some(client) = self.client.clone() else {
            return Ok(());
        };
        if self.shared.stopping.is_triggered() {
            return Err(Lost::Shutdown);
        }
        let generation = self.generation;
        let tx = self.events_tx.clone();
        let path = self.options().state_path();
        let watched_path = path.clone();
        let result = client.call(self.options().call_timeout(), move |zk| {
            zk.get_data_w(&watched_path, move |_event: WatchedEvent| {
                let _ = tx.send(Event::State { generation });
            })
        });
        let (data, stat) = match result {
            Ok(found) => {
                self.last_reply = Instant::now();
                found
            }
            Err(CallError::Zk(ZkError::NoNode)) => {
                // Deleted by hand: put back the last known state, then read it again.
                log::warn!("zk: {path} was deleted; writing back the last known state");
                let known = serde_json::to_vec(&*self.shared.state()).unwrap_or_default();
                self.ensure(&client, &path, known)?;
                return self.read_state();
            }
            Err(e) => return Err(self.call_failed(e)),
        };
        match parse_state(&data) {
            Ok(state) => {
                if self.shared.store(state, &stat) {
                    self.shared.subscribers.notify();
                }
                let mut status = lock(&self.shared.status);
                if status
                    .error
                    .as_deref()
                    .is_some_and(|e| e.starts_with(&path))
                {
                    status.error = None;
                }
            }
            Err(e) => {
                let why = format!("{path} holds {e}");
                log::error!("zk: {why}");
                self.shared.update_status(|s| s.error = Some(why));
            }
        }
        Ok(())
    }

    /// Updates the peers (one per election znode) and the leader in the status.
    fn refresh_peers(&mut self, client: &Client, order: &[String], mine: &str) {
        self.addresses.retain(|name, _| order.contains(name));
        for name in order {
            if self.addresses.contains_key(name) {
                continue;
            }
            let path = format!("{}/{name}", self.options().election_path());
            let address = match client.call(self.options().call_timeout(), move |zk| {
                zk.get_data(&path, false)
            }) {
                Ok((data, _)) => String::from_utf8(data).ok(),
                Err(CallError::Zk(ZkError::NoNode)) => continue,
                Err(_) => None,
            };
            self.addresses.insert(name.clone(), address);
        }
        let peers: Vec<PeerStatus> = order
            .iter()
            .filter(|name| self.addresses.contains_key(*name))
            .map(|name| {
                // The znode's data: the HTTP address, then the Sentinel port if any.
                let data = self
                    .addresses
                    .get(name)
                    .cloned()
                    .flatten()
                    .unwrap_or_default();
                let mut words = data.split_whitespace().map(String::from);
                (name, words.next(), words.next())
            })
            .map(|(name, http_addr, sentinel_addr)| PeerStatus {
                id: name.clone(),
                raft_addr: None,
                http_addr,
                sentinel_addr,
                voter: true,
                match_index: None,
                this_node: name == mine,
            })
            .collect();
        let leader_seq = order.first().and_then(|name| election::sequence(name));
        self.shared.update_status(|status| {
            status.id = Some(mine.to_string());
            status.leader = peers.first().cloned();
            status.term = leader_seq;
            status.peers = peers;
        });
    }

    fn on_state(&mut self, state: ZkState) -> Result<(), Lost> {
        #[allow(deprecated)]
        match state {
            ZkState::Connected => {
                if self.dropped && self.shared.guard.logs_in() {
                    // ZooKeeper forgets a login with its connection, and logging in
                    // again here would race the other threads' requests: the crate
                    // pairs replies with requests in order, and ZooKeeper answers a
                    // login at once, ahead of requests still in its pipeline. A new
                    // session logs in before anyone else uses it.
                    return Err(Lost::Session(
                        "connected again, without the zk_auth login (ZooKeeper keeps logins per connection)".into(),
                    ));
                }
                if !self.connected {
                    log::info!("zk: connected again; checking the session");
                }
                self.connected = true;
                self.set_session("connected", None);
                // The crate does not restore watches on a new connection: set them again.
                self.watching = None;
                self.read_state()?;
                self.probe()
            }
            ZkState::Connecting | ZkState::NotConnected | ZkState::ConnectedReadOnly => {
                self.dropped = true;
                if self.connected {
                    log::warn!("zk: connection to ZooKeeper lost ({state:?}); reconnecting");
                }
                self.connected = false;
                self.stop_acting("the connection to ZooKeeper dropped");
                self.set_session("disconnected", None);
                Ok(())
            }
            ZkState::Closed | ZkState::AuthFailed | ZkState::Associating => Err(Lost::Session(
                format!("the ZooKeeper client reports {state:?}"),
            )),
        }
    }

    /// Gives up the current client and plans the next one.
    fn give_up(&mut self, why: &str) {
        self.stop_acting(why);
        self.failures_in_a_row += 1;
        if self.failures_in_a_row == 1 || self.failures_in_a_row.is_multiple_of(30) {
            log::warn!("zk: {why}; opening a new session");
        } else {
            log::debug!("zk: {why}; opening a new session");
        }
        lock(&self.shared.client).take();
        // The client given up reports `Closed` once closed: that is no news.
        self.generation += 1;
        if let Some(client) = self.client.take() {
            // Best effort: if the session still lives, end it so its znode goes now.
            client.close(Duration::from_millis(200));
        }
        if let Some(name) = self.node.take() {
            self.previous_node = Some(name);
        }
        self.watching = None;
        self.connected = false;
        self.set_session(
            if why.contains("expired") || why.contains("gone") {
                "expired"
            } else {
                "disconnected"
            },
            Some(why.to_string()),
        );
        self.set_role("connecting");
        let backoff = Duration::from_millis(100 << self.failures_in_a_row.min(4))
            .min(self.options().session_timeout);
        self.retry_at = Instant::now() + backoff;
    }

    /// Stops acting at once (the lease is dropped, not left to run out).
    fn stop_acting(&mut self, why: &str) {
        let was = lock(&self.shared.lease).take().is_some();
        if self.leading || was {
            log::warn!("zk: this daemon stops acting: {why}");
        }
        self.leading = false;
        self.publish_acting();
    }

    /// Tells subscribers when acting starts or stops (also when a lease runs out).
    fn publish_acting(&mut self) {
        let acting = self.shared.acting();
        if acting != self.announced_acting {
            if !acting && self.leading {
                log::warn!("zk: the leader's lease ran out (no timely answer from ZooKeeper)");
            }
            self.announced_acting = acting;
            self.shared.subscribers.notify();
        }
    }

    fn set_session(&self, session: &str, error: Option<String>) {
        self.shared.update_status(|status| {
            status.zk_session = Some(session.to_string());
            if error.is_some() || session == "connected" {
                status.error = error;
            }
            if session != "connected" {
                status.role = "connecting".into();
            }
        });
    }

    fn set_role(&self, role: &str) {
        self.shared
            .update_status(|status| status.role = role.to_string());
    }
}

/// `/zk`, `/zk/redis`, `/zk/redis/failover` for `/zk/redis/failover`.
fn ancestors(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        out.push(at.clone());
    }
    out
}

/// Whether any server accepts a TCP connection (within a short timeout each).
pub(super) fn any_server_listens(servers: &[String]) -> bool {
    servers.iter().any(|server| {
        server.to_socket_addrs().is_ok_and(|mut addrs| {
            addrs.any(|addr| TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_of_the_base_path() {
        assert_eq!(
            ancestors("/zk/redis/failover"),
            vec!["/zk", "/zk/redis", "/zk/redis/failover"]
        );
    }
}
