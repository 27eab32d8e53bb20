//! The Raft broker: N daemons agree on every change through tikv's raft-rs, so the
//! watcher survives the loss of any minority of them.
//!
//! ```text
//!  HTTP / library ──► RaftBroker ──Command──► raft thread (node.rs) ──► storage.rs
//!        ▲                │                      │    ▲                 (WAL + snapshot)
//!        └── state, ◄─────┘ Shared ◄── applies ──┘    │
//!            leadership                     transport.rs (TCP to/from peers)
//! ```
//!
//! - Every daemon applies the same committed [`Action`]s to the same
//!   [`ReplicatedState`], so any node answers reads from its own copy.
//! - A write on any node is proposed there; raft-rs forwards it to the leader, and the
//!   caller is answered when this node applies it (or gets 503 after a timeout).
//! - Only the leader *acts* (checks masters and fails them over), and only once it has
//!   applied an entry of its own term: by then it knows every committed failover-begin,
//!   and pre-vote plus check-quorum make a leader cut off from the majority step down.
//! - Peer ids are derived from raft addresses ([`peer_id`]), so every node computes the
//!   same id for `127.0.0.1:12000` without any coordination.
//!
//! [`Action`]: crate::broker::Action

mod admission;
mod auth;
mod frame;
mod handshake;
mod inbound;
pub mod lease;
mod log_limit;
mod node;
mod replay;
mod state_machine;
mod storage;
mod transport;
mod wire;

use crate::address::Addr;
use crate::broker::PROPOSAL_TIMEOUT;
use crate::broker::views::{MastersView, Views};
use crate::broker::{Action, Broker, ClusterStatus, MemberChange, ReplicatedState, Subscribers};
use crate::config::StartState;
use crate::error::{Error, Result};
use crate::invalid_input;
use crate::net::tls::Tls;
use crate::secret::Secret;
use crate::sync::lock;
use crossbeam_channel::Sender;
use node::{Command, Node};
use state_machine::StateMachine;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use storage::DiskStorage;
use transport::{Hello, Transport};

/// Election timeout and heartbeat interval, in ticks (raft-rs randomizes the election
/// timeout between one and two times this).
pub const ELECTION_TICKS: usize = 10;
pub const HEARTBEAT_TICKS: usize = 2;

/// A `raft_secret` shorter than this draws a warning at start.
const MIN_SECRET_LEN: usize = 16;

/// What the Raft broker needs from the configuration.
#[derive(Debug, Clone)]
pub struct RaftOptions {
    pub raft_addr: Addr,
    /// Where peers and clients reach this daemon's HTTP API.
    pub http_addr: String,
    /// This daemon's Sentinel-compatible port, told to peers for `SENTINEL sentinels`.
    pub sentinel_addr: Option<String>,
    pub data_dir: PathBuf,
    pub log_dir: Option<PathBuf>,
    pub cluster: Vec<Addr>,
    pub cluster_state: StartState,
    pub tick: Duration,
    /// `raft_secret`: when set, peers must prove they know it (see `auth.rs`).
    pub secret: Option<Secret>,
    /// `tls_raft`: when set, links are mutual TLS within the cluster's CA (see
    /// `transport.rs`).
    pub tls: Option<Arc<Tls>>,
}

/// The stable peer id of a raft address: FNV-1a of its text, never 0.
pub fn peer_id(raft_addr: &str) -> u64 {
    crate::clock::fnv1a(raft_addr)
}

/// What the raft thread publishes for the broker's callers.
pub struct Shared {
    machine: Arc<Mutex<StateMachine>>,
    /// Until when this node may act: set while it leads and has caught up, and
    /// extended by the raft thread while a majority keeps answering. A raft thread that
    /// stalls (a hung fsync) or a leader cut off from the majority stops acting when it
    /// runs out, before the others can elect a new leader.
    acting_until: Mutex<Option<Instant>>,
    status: Mutex<ClusterStatus>,
    subscribers: Subscribers,
    /// The other members' views of the masters, as their links bring them.
    views: Views,
    /// The state as of an applied index, shared by every reader until the next entry
    /// is applied.
    snapshot: Mutex<Option<(u64, Arc<ReplicatedState>)>>,
}

impl Shared {
    fn lock_machine(&self) -> MutexGuard<'_, StateMachine> {
        lock(&self.machine)
    }

    /// The applied state as a shared snapshot, made anew only after an entry was
    /// applied since the last one.
    fn snapshot(&self) -> Arc<ReplicatedState> {
        let machine = self.lock_machine();
        let mut snapshot = lock(&self.snapshot);
        match &*snapshot {
            Some((index, state)) if *index == machine.applied_index => state.clone(),
            _ => {
                let state = Arc::new(machine.data.state.clone());
                *snapshot = Some((machine.applied_index, state.clone()));
                state
            }
        }
    }

    fn notify(&self) {
        self.subscribers.notify();
    }

    fn set_status(&self, status: ClusterStatus, acting_until: Option<Instant>) {
        *lock(&self.acting_until) = acting_until;
        *lock(&self.status) = status;
    }

    /// Whether this node may act now: leader, caught up, and within its lease.
    fn acting(&self) -> bool {
        lock(&self.acting_until).is_some_and(|until| Instant::now() < until)
    }

    /// The raft thread has stopped for good: nothing acts any more.
    fn fail(&self, reason: String) {
        *lock(&self.acting_until) = None;
        let mut status = lock(&self.status);
        status.acting = false;
        status.role = "failed".into();
        status.error = Some(reason);
        drop(status);
        self.notify();
    }
}

/// The broker of a daemon in a Raft cluster.
pub struct RaftBroker {
    shared: Arc<Shared>,
    commands: Mutex<Option<Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl RaftBroker {
    /// Opens the storage, binds the raft port and starts the raft thread.
    pub fn start(options: RaftOptions) -> Result<RaftBroker> {
        let raft_addr = options.raft_addr.to_string();
        let id = peer_id(&raft_addr);
        let mut storage = DiskStorage::open(&options.data_dir, options.log_dir.as_deref())?;
        let mut cluster = options.cluster.clone();
        if cluster.is_empty() {
            cluster.push(options.raft_addr.clone());
        }
        let to_join = prepare_storage(&mut storage, &options, &cluster)?;
        let machine = storage.machine();
        let (members, applied, voters) = {
            let m = lock(&machine);
            (
                m.data.members.clone(),
                m.applied_index,
                m.conf_state.voters.clone(),
            )
        };
        if voters == [id] {
            log::warn!(
                "raft: this is a one-node cluster: fine for testing, but it is a single point of failure; run 3 or 5 nodes"
            );
        }
        let (events_tx, events_rx) = crossbeam_channel::bounded(4096);
        let me = Hello {
            id,
            raft_addr: raft_addr.clone(),
            http_addr: options.http_addr.clone(),
            sentinel_addr: options.sentinel_addr.clone(),
        };
        let transport = Transport::start(
            me.clone(),
            &raft_addr,
            options.secret.as_ref(),
            options.tls.clone(),
            events_tx,
        )?;
        warn_about_the_secret(options.secret.as_ref(), options.tls.is_some(), &transport);
        for addr in members.values() {
            transport.set_address(peer_id(addr), addr);
        }
        for addr in &cluster {
            transport.set_address(peer_id(&addr.to_string()), &addr.to_string());
        }
        let mut raw = raw_node(id, applied, storage)?;
        if voters == [id] {
            // Alone: no need to wait an election timeout.
            let _ = raw.campaign();
        }
        let shared = Arc::new(Shared {
            machine,
            acting_until: Mutex::new(None),
            status: Mutex::new(ClusterStatus {
                broker: "raft".into(),
                id: Some(format!("{id:016x}")),
                raft_addr: Some(raft_addr.clone()),
                http_addr: options.http_addr.clone(),
                role: "follower".into(),
                ..ClusterStatus::default()
            }),
            subscribers: Subscribers::default(),
            views: Views::default(),
            snapshot: Mutex::new(None),
        });
        let node = Node::new(raw, transport, shared.clone(), me, options.tick, to_join);
        let (commands_tx, commands_rx) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || node.run(commands_rx, events_rx))
            .map_err(|e| Error::Io(format!("cannot start the raft thread: {e}")))?;
        log::info!(
            "raft: node {id:x} listening on {raft_addr}, tick {} ms, data in {}",
            options.tick.as_millis(),
            options.data_dir.display()
        );
        Ok(RaftBroker {
            shared,
            commands: Mutex::new(Some(commands_tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Sends a command to the raft thread and waits for its answer.
    fn ask(&self, make: impl FnOnce(Sender<Result<()>>) -> Command) -> Result<()> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let sent = lock(&self.commands)
            .as_ref()
            .map(|commands| commands.send(make(reply)).is_ok());
        if sent != Some(true) {
            return Err(Error::Unavailable("the raft node has stopped".into()));
        }
        answer
            .recv_timeout(PROPOSAL_TIMEOUT + Duration::from_secs(1))
            .unwrap_or_else(|_| {
                Err(Error::Unavailable(
                    "the raft node did not answer in time".into(),
                ))
            })
    }
}

impl Broker for RaftBroker {
    fn propose(&self, action: Action) -> Result<()> {
        self.ask(|reply| Command::Propose { action, reply })
    }

    fn propose_detached(&self, action: Action) {
        // Nobody waits: the raft thread's answer goes to a closed channel.
        let (reply, _) = crossbeam_channel::bounded(1);
        if let Some(commands) = lock(&self.commands).as_ref() {
            let _ = commands.send(Command::Propose { action, reply });
        }
    }

    fn state(&self) -> Arc<ReplicatedState> {
        self.shared.snapshot()
    }

    fn is_acting(&self) -> bool {
        self.shared.acting()
    }

    fn subscribe(&self) -> crossbeam_channel::Receiver<()> {
        self.shared.subscribers.subscribe()
    }

    fn cluster(&self) -> ClusterStatus {
        let mut status = lock(&self.shared.status).clone();
        // The lease may have run out since the raft thread last published.
        status.acting = self.shared.acting();
        status
    }

    fn change_members(&self, change: MemberChange, addr: &Addr) -> Result<()> {
        let id = peer_id(&addr.to_string());
        let voters = self.shared.lock_machine().conf_state.voters.clone();
        match change {
            MemberChange::Add if voters.contains(&id) => {
                return Err(invalid_input!("{addr} is already a member of the cluster"));
            }
            MemberChange::Remove if !voters.contains(&id) => {
                return Err(invalid_input!("{addr} is not a member of the cluster"));
            }
            MemberChange::Remove if voters.len() == 1 => {
                return Err(invalid_input!(
                    "{addr} is the only member; a cluster cannot remove its last node"
                ));
            }
            _ => {}
        }
        let addr = addr.clone();
        self.ask(|reply| Command::ChangeMembers {
            change,
            addr,
            reply,
        })
    }

    fn share_view(&self, view: MastersView) {
        if let Some(commands) = lock(&self.commands).as_ref() {
            let _ = commands.send(Command::ShareView(view));
        }
    }

    fn peer_views(&self, max_age: Duration) -> Vec<MastersView> {
        self.shared.views.fresh(max_age)
    }

    fn shutdown(&self) {
        lock(&self.commands).take();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RaftBroker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Founds a new cluster in an empty data directory (when this node is among the
/// founders), or checks that a used one may be kept. Returns the configured addresses
/// that are not members yet (to be added once a leader is known).
fn prepare_storage(
    storage: &mut DiskStorage,
    options: &RaftOptions,
    cluster: &[Addr],
) -> Result<Vec<Addr>> {
    let raft_addr = options.raft_addr.to_string();
    if storage.is_empty() {
        if cluster.contains(&options.raft_addr) {
            storage.bootstrap(founding_state(cluster))?;
            log::info!(
                "raft: new cluster of {} node(s): {}",
                cluster.len(),
                list(cluster)
            );
        } else {
            log::warn!(
                "raft: {raft_addr} is not in raft_cluster ({}); waiting to be added: run POST /api/v1/cluster/peers?addr={raft_addr} on a member",
                list(cluster)
            );
        }
        return Ok(Vec::new());
    }
    if options.cluster_state == StartState::New {
        return Err(invalid_input!(
            "raft_cluster_state ([raft] cluster_state): \"new\" but {} already holds a cluster's state; start with \"existing\" to keep it, or empty the directory to form a new cluster",
            options.data_dir.display()
        ));
    }
    let machine = storage.machine();
    let members = &lock(&machine).data.members;
    Ok(cluster
        .iter()
        .filter(|a| !members.contains_key(&peer_id(&a.to_string())))
        .cloned()
        .collect())
}

/// A raft port that strangers can reach needs `raft_secret` (or `tls_raft`, whose
/// client certificates keep strangers out); a short secret can be guessed offline from
/// one recorded handshake.
fn warn_about_the_secret(secret: Option<&Secret>, tls: bool, transport: &Transport) {
    let addr = transport.local_addr();
    match secret {
        None if !tls && !addr.ip().is_loopback() => log::warn!(
            "raft: raft_addr {addr} accepts connections beyond loopback and no raft_secret is set: anyone who can reach it can pose as a member, change the monitored masters and disrupt elections; set raft_secret (the same on every daemon, see docs/raft.md)"
        ),
        Some(secret) if secret.expose().len() < MIN_SECRET_LEN => log::warn!(
            "raft: raft_secret is shorter than {MIN_SECRET_LEN} bytes; anyone who records one handshake can try guesses offline; use a long random one (openssl rand -hex 32)"
        ),
        _ => {}
    }
}

/// The raft-rs settings of every node: pre-vote and check-quorum on, so a partitioned
/// leader steps down (shared with the simulator, `tests/sim/raft.rs`).
pub fn raft_config(id: u64, applied: u64) -> raft::Config {
    raft::Config {
        id,
        election_tick: ELECTION_TICKS,
        heartbeat_tick: HEARTBEAT_TICKS,
        applied,
        pre_vote: true,
        check_quorum: true,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        ..raft::Config::default()
    }
}

/// raft-rs's node with this daemon's settings ([`raft_config`]).
fn raw_node(id: u64, applied: u64, storage: DiskStorage) -> Result<raft::RawNode<DiskStorage>> {
    let config = raft_config(id, applied);
    config
        .validate()
        .map_err(|e| Error::InvalidInput(format!("raft settings: {e}")))?;
    let logger = slog::Logger::root(LogDrain, slog::o!());
    raft::RawNode::new(&config, storage, &logger)
        .map_err(|e| Error::Io(format!("raft: cannot start: {e}")))
}

/// The state every founding node starts from: no groups, the configured members.
fn founding_state(cluster: &[Addr]) -> StateMachine {
    let mut machine = StateMachine {
        applied_index: 1,
        applied_term: 1,
        ..StateMachine::default()
    };
    for addr in cluster {
        let id = peer_id(&addr.to_string());
        machine.data.members.insert(id, addr.to_string());
        if !machine.conf_state.voters.contains(&id) {
            machine.conf_state.voters.push(id);
        }
    }
    machine
}

fn list(addrs: &[Addr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Sends raft-rs's slog records to the `log` crate, under the target `raft`.
struct LogDrain;

impl slog::Drain for LogDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> std::result::Result<(), slog::Never> {
        let level = match record.level() {
            slog::Level::Critical | slog::Level::Error => log::Level::Error,
            slog::Level::Warning => log::Level::Warn,
            // raft-rs narrates every election and dropped proposal at info; this
            // daemon logs the changes that matter itself.
            slog::Level::Info | slog::Level::Debug => log::Level::Debug,
            slog::Level::Trace => log::Level::Trace,
        };
        if !log::log_enabled!(target: "raft", level) {
            return Ok(());
        }
        let mut fields = KeyValues(String::new());
        let _ = slog::KV::serialize(&record.kv(), record, &mut fields);
        let _ = slog::KV::serialize(values, record, &mut fields);
        log::log!(target: "raft", level, "raft-rs: {}{}", record.msg(), fields.0);
        Ok(())
    }
}

/// Collects slog key-value pairs as ` key=value` text.
struct KeyValues(String);

impl slog::Serializer for KeyValues {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_are_stable_and_distinct() {
        assert_eq!(peer_id("127.0.0.1:12000"), peer_id("127.0.0.1:12000"));
        assert_ne!(peer_id("127.0.0.1:12000"), peer_id("127.0.0.1:12001"));
        assert_ne!(peer_id(""), 0);
    }
}
