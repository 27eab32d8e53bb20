//! The ZooKeeper broker: the daemons of a cluster coordinate through an existing
//! ZooKeeper ensemble instead of a consensus group of their own.
//!
//! ```text
//!  <zk_path>/election/n_0000000007   ephemeral sequential, data = the daemon's HTTP address;
//!                                    the lowest number leads (election.rs)
//!  <zk_path>/state                   the whole ReplicatedState as JSON
//!  <zk_path>/views/<http address>     ephemeral, each daemon's view of the masters
//! ```
//!
//! - **Access.** With `zk_auth`, only the daemons' identity may change these znodes
//!   (acl.rs); without it, anyone who can reach ZooKeeper can.
//!
//! - **State.** Any daemon accepts a write: [`ZkBroker::propose`] reads the state znode
//!   with its version, applies the [`Action`] with [`ReplicatedState::apply`], and writes
//!   the result back on the condition that the version is unchanged. A concurrent writer
//!   makes it read again and retry, so no update is ever lost. Every daemon keeps a copy,
//!   refreshed by a data watch and after its own writes, and answers reads from it.
//! - **Acting.** Only the leader checks masters and fails them over, and only while it
//!   can prove its session is alive (session.rs): a reply to a request sent at `t` proves
//!   ZooKeeper heard the session at `t` or later, so it cannot expire (and nobody else
//!   can lead) before `t` + session timeout. The leader acts until `t` + half of that,
//!   and stops at once when the connection drops. A ZooKeeper outage stops failovers; it
//!   cannot make two daemons act.
//! - **Failover records.** Failover-begin is written only while this daemon acts, after
//!   checking that its election znode still exists; a leader that takes over finds a
//!   begin without an end in the state and finishes it with the same replica.
//! - **Blocking.** The crate's calls have no timeout (client.rs), so no caller here waits
//!   longer than a deadline, and the monitor only reads cached values.
//!
//! [`Action`]: crate::broker::Action

mod acl;
mod client;
mod election;
mod session;
mod views;

use crate::broker::PROPOSAL_TIMEOUT;
use crate::broker::views::{MastersView, Views};
use crate::broker::{Action, Broker, ClusterStatus, ReplicatedState, Subscribers};
use crate::config::ZkAuth;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::sync::lock;
use client::{CallError, Client};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use session::Event;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use zookeeper::{Stat, ZkError};

/// ZooKeeper refuses znodes larger than this (its default `jute.maxbuffer`).
pub const MAX_STATE_BYTES: usize = 1024 * 1024 - 1024;
/// Detached proposals (from the monitor) waiting for the writer thread.
const DETACHED_QUEUE: usize = 1024;

/// What the ZooKeeper broker needs from the configuration.
#[derive(Debug, Clone)]
pub struct ZkOptions {
    /// `host:port` of each server of the ensemble.
    pub servers: Vec<String>,
    /// The base path, e.g. `/zk/redis/failover`.
    pub base: String,
    /// Where peers and clients reach this daemon's HTTP API (the election znode's data).
    pub http_addr: String,
    /// This daemon's Sentinel-compatible port, after the HTTP address in the znode's
    /// data (separated by a space), for `SENTINEL sentinels`.
    pub sentinel_addr: Option<String>,
    pub session_timeout: Duration,
    /// `zk_auth`: the digest identity to log in with and to own the znodes (acl.rs).
    pub auth: Option<ZkAuth>,
}

impl ZkOptions {
    /// The znodes whose ACLs are checked before joining: the base and what the daemons
    /// keep under it.
    fn guarded_paths(&self) -> Vec<String> {
        vec![
            self.base.clone(),
            self.election_path(),
            self.state_path(),
            self.views_path(),
        ]
    }

    fn views_path(&self) -> String {
        format!("{}/views", self.base)
    }

    fn election_path(&self) -> String {
        format!("{}/election", self.base)
    }

    fn state_path(&self) -> String {
        format!("{}/state", self.base)
    }

    /// The longest wait for one call: after this the leader's lease has run out anyway.
    fn call_timeout(&self) -> Duration {
        (self.session_timeout / 2).clamp(Duration::from_millis(200), Duration::from_secs(5))
    }

    /// How long a reply proves the session alive for acting (see the module doc).
    fn lease(&self) -> Duration {
        self.session_timeout / 2
    }
}

/// The replicated state as last read or written, with the znode's creation and
/// modification zxids: the latter grows with every change, so an older read never
/// replaces a newer one. A znode created anew (a lost ensemble's data, a deleted znode
/// put back) restarts the count.
#[derive(Default)]
struct Cached {
    state: Arc<ReplicatedState>,
    czxid: i64,
    mzxid: i64,
}

/// What the session thread publishes for the broker's callers; every read is a lock on
/// a value in memory, never a ZooKeeper call.
pub struct Shared {
    options: ZkOptions,
    /// Who may change the znodes created, and the login of each session.
    guard: acl::Guard,
    cache: Mutex<Cached>,
    /// `Some(until)` while this daemon leads: it acts until then (extended by every
    /// reply from ZooKeeper).
    lease: Mutex<Option<Instant>>,
    /// This daemon's view, without `acting` (computed when asked).
    status: Mutex<ClusterStatus>,
    /// The current client and this daemon's election znode (full path), once the
    /// session is set up; proposers use them.
    client: Mutex<Option<(Client, String)>>,
    subscribers: Subscribers,
    /// Triggered by [`ZkBroker::shutdown`]: the session thread stops between two calls.
    stopping: Shutdown,
    /// The other daemons' views of the masters, as last read (`views.rs`).
    views: Views,
}

impl Shared {
    fn acting(&self) -> bool {
        lock(&self.lease).is_some_and(|until| Instant::now() < until)
    }

    fn state(&self) -> Arc<ReplicatedState> {
        lock(&self.cache).state.clone()
    }

    /// Keeps `state` if it is newer than the cached copy; returns whether it changed.
    fn store(&self, state: ReplicatedState, stat: &Stat) -> bool {
        let mut cache = lock(&self.cache);
        if stat.czxid == cache.czxid && stat.mzxid < cache.mzxid {
            return false;
        }
        cache.czxid = stat.czxid;
        cache.mzxid = stat.mzxid;
        if *cache.state == state {
            return false;
        }
        cache.state = Arc::new(state);
        true
    }

    fn client(&self) -> Option<(Client, String)> {
        lock(&self.client).clone()
    }

    fn update_status(&self, change: impl FnOnce(&mut ClusterStatus)) {
        change(&mut lock(&self.status));
    }
}

/// Starts one of the broker's threads; when the system refuses, stops and joins the
/// ones already started, so a failed start leaves nothing running.
fn start_thread(
    shared: &Shared,
    threads: &mut Vec<JoinHandle<()>>,
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> Result<()> {
    match std::thread::Builder::new().name(name.into()).spawn(body) {
        Ok(handle) => {
            threads.push(handle);
            Ok(())
        }
        Err(e) => {
            shared.stopping.trigger();
            for handle in threads.drain(..) {
                let _ = handle.join();
            }
            Err(Error::Io(format!("cannot start thread {name}: {e}")))
        }
    }
}

/// The broker of a daemon in a ZooKeeper-coordinated cluster.
pub struct ZkBroker {
    shared: Arc<Shared>,
    detached: Mutex<Option<Sender<Action>>>,
    /// This daemon's views, for the thread that shares them.
    views: Mutex<Option<Sender<MastersView>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl ZkBroker {
    /// Starts the session thread (which connects, creates the paths and joins the
    /// election in the background, retrying while ZooKeeper is unreachable) and the
    /// writer of detached proposals. Returns at once.
    pub fn start(options: ZkOptions) -> Result<ZkBroker> {
        if options.servers.is_empty() {
            return Err(Error::InvalidInput(
                "zk_addr ([zk] addr): required with -broker=zk".into(),
            ));
        }
        let guard = acl::Guard::new(options.auth.clone());
        acl::check_at_start(&options, &guard)?;
        let shared = Arc::new(Shared {
            guard,
            status: Mutex::new(ClusterStatus {
                broker: "zk".into(),
                http_addr: options.http_addr.clone(),
                role: "connecting".into(),
                zk_session: Some("connecting".into()),
                ..ClusterStatus::default()
            }),
            options,
            cache: Mutex::new(Cached::default()),
            lease: Mutex::new(None),
            client: Mutex::new(None),
            subscribers: Subscribers::default(),
            stopping: Shutdown::new(),
            views: Views::default(),
        });
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        // A shutdown wakes the session thread wherever it waits for events.
        let wake = events_tx.clone();
        shared.stopping.on_trigger(move || {
            let _ = wake.send(Event::Shutdown);
        });
        let session = session::Session::new(shared.clone(), events_tx.clone(), events_rx);
        let mut threads = Vec::new();
        start_thread(&shared, &mut threads, "zk-session", move || session.run())?;
        let (detached_tx, detached_rx) = crossbeam_channel::bounded(DETACHED_QUEUE);
        let writer_shared = shared.clone();
        start_thread(&shared, &mut threads, "zk-writer", move || {
            write_detached(&writer_shared, detached_rx)
        })?;
        let (views_tx, views_rx) = crossbeam_channel::bounded(1);
        let views_shared = shared.clone();
        start_thread(&shared, &mut threads, "zk-views", move || {
            views::run(&views_shared, views_rx)
        })?;
        log::info!(
            "zk: joining the cluster at {} under {}, session timeout {} ms",
            shared.options.servers.join(","),
            shared.options.base,
            shared.options.session_timeout.as_millis()
        );
        Ok(ZkBroker {
            shared,
            detached: Mutex::new(Some(detached_tx)),
            views: Mutex::new(Some(views_tx)),
            threads: Mutex::new(threads),
        })
    }
}

impl Broker for ZkBroker {
    fn propose(&self, action: Action) -> Result<()> {
        propose(&self.shared, action)
    }

    fn propose_detached(&self, action: Action) {
        let sender = lock(&self.detached).clone();
        if let Some(sender) = sender
            && let Err(TrySendError::Full(action)) = sender.try_send(action)
        {
            log::warn!("zk: too many changes waiting for ZooKeeper; dropped {action:?}");
        }
    }

    fn state(&self) -> Arc<ReplicatedState> {
        self.shared.state()
    }

    fn is_acting(&self) -> bool {
        self.shared.acting()
    }

    fn subscribe(&self) -> Receiver<()> {
        self.shared.subscribers.subscribe()
    }

    fn cluster(&self) -> ClusterStatus {
        let mut status = lock(&self.shared.status).clone();
        status.acting = self.shared.acting();
        status
    }

    fn share_view(&self, view: MastersView) {
        if let Some(views) = lock(&self.views).as_ref() {
            // A full channel holds a view not written yet; this one replaces it soon.
            let _ = views.try_send(view);
        }
    }

    fn peer_views(&self, max_age: Duration) -> Vec<MastersView> {
        self.shared.views.fresh(max_age)
    }

    fn shutdown(&self) {
        lock(&self.detached).take();
        lock(&self.views).take();
        self.shared.stopping.trigger();
        let threads: Vec<JoinHandle<()>> = lock(&self.threads).drain(..).collect();
        for handle in threads {
            let _ = handle.join();
        }
    }
}

impl Drop for ZkBroker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Proposes the monitor's changes (known replicas) without making it wait.
fn write_detached(shared: &Shared, actions: Receiver<Action>) {
    for action in actions {
        if let Err(e) = propose(shared, action) {
            log::warn!("zk: cannot record a change: {e}");
        }
    }
}

/// Read, apply, write back if the version is unchanged; retry on a concurrent write.
fn propose(shared: &Shared, action: Action) -> Result<()> {
    let options = &shared.options;
    let deadline = Instant::now() + PROPOSAL_TIMEOUT;
    let Some((client, own_node)) = shared.client() else {
        let why = lock(&shared.status).error.clone();
        return Err(unavailable(format!(
            "no session with {} yet{}",
            options.servers.join(","),
            why.map(|w| format!(" ({w})")).unwrap_or_default()
        )));
    };
    // Failover-begin is the step that allows a promotion: only the acting leader may
    // write it, and only while its election znode (so its session) is still there.
    let fenced = matches!(action, Action::FailoverBegin { .. });
    if fenced && !shared.acting() {
        return Err(unavailable(
            "this daemon no longer leads the cluster; failover-begin not recorded".into(),
        ));
    }
    let write = Write {
        shared,
        client: &client,
        own_node: &own_node,
        action: &action,
        fenced,
        deadline,
    };
    for attempt in 0u32.. {
        if deadline <= Instant::now() {
            return Err(unavailable(format!(
                "the change was not written within {} s ({attempt} attempts met concurrent writes)",
                PROPOSAL_TIMEOUT.as_secs()
            )));
        }
        if write.attempt()? {
            return Ok(());
        }
        log::debug!(
            "zk: concurrent write to {}; reading it again",
            options.state_path()
        );
        std::thread::sleep(Duration::from_millis(u64::from(attempt.min(20)) * 2));
    }
    Err(unavailable("gave up writing".into()))
}

fn unavailable(why: String) -> Error {
    Error::Unavailable(format!("ZooKeeper: {why}"))
}

/// One proposal being written to the state znode.
struct Write<'a> {
    shared: &'a Shared,
    client: &'a Client,
    own_node: &'a str,
    action: &'a Action,
    /// Failover-begin: written only while this daemon's election znode exists, and
    /// only within its lease.
    fenced: bool,
    deadline: Instant,
}

impl Write<'_> {
    /// The time left for one call.
    fn limit(&self) -> Duration {
        self.deadline
            .saturating_duration_since(Instant::now())
            .min(self.shared.options.call_timeout())
    }

    /// One read-apply-write; `Ok(false)` when another daemon wrote first.
    fn attempt(&self) -> Result<bool> {
        let options = &self.shared.options;
        let state_path = options.state_path();
        let sent = Instant::now();
        if self.fenced {
            let node = self.own_node.to_string();
            match self
                .client
                .call(self.limit(), move |zk| zk.exists(&node, false))
            {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(unavailable(
                        "this daemon's election znode is gone (its session ended); failover-begin not recorded".into(),
                    ));
                }
                Err(e) => return Err(unavailable(e.to_string())),
            }
        }
        let path = state_path.clone();
        let (data, stat) = self
            .client
            .call(self.limit(), move |zk| zk.get_data(&path, false))
            .map_err(|e| unavailable(format!("cannot read {state_path}: {e}")))?;
        let current = parse_state(&data)
            .map_err(|e| Error::Io(format!("ZooKeeper: {state_path} holds {e}")))?;
        let mut next = current.clone();
        next.apply(self.action.clone())?;
        if next == current && !self.fenced {
            // Nothing to write (e.g. the configured masters are known already).
            if self.shared.store(current, &stat) {
                self.shared.subscribers.notify();
            }
            return Ok(true);
        }
        let bytes = serde_json::to_vec(&next)
            .map_err(|e| Error::Io(format!("cannot encode the state: {e}")))?;
        if bytes.len() > MAX_STATE_BYTES {
            return Err(Error::InvalidInput(format!(
                "the state would take {} bytes, over ZooKeeper's znode limit of 1 MiB; remove groups first",
                bytes.len()
            )));
        }
        let path = state_path.clone();
        let version = stat.version;
        match self.client.call(self.limit(), move |zk| {
            zk.set_data(&path, bytes, Some(version))
        }) {
            Ok(written) => {
                if self.shared.store(next, &written) {
                    self.shared.subscribers.notify();
                }
                if self.fenced && sent.elapsed() >= options.lease() {
                    return Err(unavailable(format!(
                        "failover-begin took {} ms to write, longer than the leader's lease; not promoting",
                        sent.elapsed().as_millis()
                    )));
                }
                Ok(true)
            }
            Err(CallError::Zk(ZkError::BadVersion)) => Ok(false),
            Err(e) => Err(unavailable(format!("cannot write {state_path}: {e}"))),
        }
    }
}

/// The state znode's data: JSON, or nothing for a znode created empty.
fn parse_state(data: &[u8]) -> std::result::Result<ReplicatedState, String> {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(ReplicatedState::default());
    }
    serde_json::from_slice(data).map_err(|e| {
        format!(
            "data that is not a redis-failover state ({e}); fix or delete the znode, nothing was changed"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_znode_may_be_empty_but_not_garbage() {
        assert_eq!(parse_state(b"").unwrap(), ReplicatedState::default());
        assert!(parse_state(b"{not json").is_err());
        let mut state = ReplicatedState::default();
        state
            .apply(Action::Add(vec![crate::broker::GroupSpec {
                name: "g".into(),
                master: crate::address::Addr::parse("h:1").unwrap(),
            }]))
            .unwrap();
        let bytes = serde_json::to_vec(&state).unwrap();
        assert_eq!(parse_state(&bytes).unwrap(), state);
    }
}
