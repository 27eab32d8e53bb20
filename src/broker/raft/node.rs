//! The raft thread: owns the `RawNode`, ticks it, feeds it proposals and peer messages,
//! and runs its Ready loop.
//!
//! Everything that touches raft-rs happens on this one thread, so there is no locking
//! around it. Other threads talk to it through channels: [`Command`]s from the broker
//! (proposals, membership changes, shutdown) and transport [`Event`]s (peer messages).
//!
//! The Ready loop follows the order raft-rs documents (`raft::lib.rs`, steps 1–7):
//! messages a leader may send at once; a snapshot to install; committed entries to
//! apply; new entries and the hard state to persist (with fsync) *before* the messages
//! that promise them (votes, append responses) go out; then `advance` and the same
//! steps for what it returns.
//!
//! A proposal carries its origin (node id and a sequence number) in the entry context.
//! When the node that proposed it applies the entry, it answers the waiting caller with
//! the result of applying it: so a write on a follower (which raft-rs forwards to the
//! leader) answers only once it is committed and applied here.

use super::admission::Admission;
use super::lease;
use super::storage::DiskStorage;
use super::transport::{Event, Hello, Transport};
use super::{Shared, peer_id};
use crate::address::Addr;
use crate::broker::raft::state_machine::{StateMachine, from_bytes};
use crate::broker::views::MastersView;
use crate::broker::{
    Action, ClusterStatus, DaemonInfo, MemberChange, PROPOSAL_TIMEOUT, PeerStatus,
};
use crate::error::{Error, Result};
use crate::sync::lock;
use crossbeam_channel::{Receiver, Sender, select};
use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType};
use raft::{RawNode, SnapshotStatus, StateRole};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Entries applied between two snapshots (after which the log before is dropped).
pub const SNAPSHOT_EVERY: u64 = 1000;

/// What the broker asks of the raft thread.
pub enum Command {
    Propose {
        action: Action,
        reply: Sender<Result<()>>,
    },
    ChangeMembers {
        change: MemberChange,
        addr: Addr,
        reply: Sender<Result<()>>,
    },
    /// Send this daemon's view of the masters to every other member.
    ShareView(MastersView),
}

/// A caller waiting for its entry to be applied.
struct Pending {
    reply: Sender<Result<()>>,
    deadline: Instant,
}

/// The raft thread's state.
pub struct Node {
    pub raw: RawNode<DiskStorage>,
    pub transport: Transport,
    pub shared: Arc<Shared>,
    pub id: u64,
    /// This node's addresses (what it says in its hellos).
    pub me: Hello,
    pub tick: Duration,
    /// Configured addresses that are not members yet (`raft_cluster_state=existing`).
    pub to_join: Vec<Addr>,
    pending: HashMap<u64, Pending>,
    /// When each peer was last heard from in the current term (for the leader's lease).
    last_heard: HashMap<u64, Instant>,
    heard_term: u64,
    /// Differs on every start, so an entry proposed before a restart and committed
    /// after it never answers a new caller that happens to get the same sequence number.
    run_nonce: u64,
    next_seq: u64,
    /// This node was removed from the membership: it never acts again.
    removed: bool,
    /// When a removed leader asked another member to take over.
    handed_over_at: Option<Instant>,
    last_join_attempt: Option<Instant>,
    last_announce: Option<Instant>,
    /// (acting, leader id) as last published, to log and notify on change.
    published: (bool, u64),
    /// Drops peer messages from non-members or not for this node.
    admission: Admission,
}

impl Node {
    pub fn new(
        raw: RawNode<DiskStorage>,
        transport: Transport,
        shared: Arc<Shared>,
        me: Hello,
        tick: Duration,
        to_join: Vec<Addr>,
    ) -> Node {
        Node {
            id: raw.raft.id,
            raw,
            transport,
            shared,
            me,
            tick,
            to_join,
            pending: HashMap::new(),
            last_heard: HashMap::new(),
            heard_term: 0,
            run_nonce: run_nonce(),
            next_seq: 1,
            removed: false,
            handed_over_at: None,
            last_join_attempt: None,
            last_announce: None,
            published: (false, 0),
            // As long as a removed leader may take to hand over (see hand_over_if_removed).
            admission: Admission::new(tick * (2 * super::ELECTION_TICKS) as u32),
        }
    }

    /// Runs until the command channel closes.
    pub fn run(mut self, commands: Receiver<Command>, events: Receiver<Event>) {
        let mut next_tick = Instant::now() + self.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            select! {
                recv(commands) -> command => match command {
                    Ok(command) => self.on_command(command),
                    Err(_) => break,
                },
                recv(events) -> event => {
                    if let Ok(event) = event {
                        self.on_event(event);
                    }
                    // Step everything already received before the next Ready.
                    while let Ok(event) = events.try_recv() {
                        self.on_event(event);
                    }
                }
                default(wait) => {}
            }
            let now = Instant::now();
            if now >= next_tick {
                self.raw.tick();
                next_tick += self.tick;
                if next_tick < now {
                    next_tick = now + self.tick;
                }
                self.expire_pending(now);
                self.join_configured_peers(now);
                self.announce_self(now);
                self.hand_over_if_removed();
            }
            if let Err(e) = self.on_ready() {
                log::error!(
                    "raft: cannot persist the log ({e}); this node stops taking part in the cluster"
                );
                self.shared.fail(e.to_string());
                break;
            }
            self.publish();
        }
        if let Err(e) = self.raw.mut_store().sync() {
            log::error!("raft: final sync failed: {e}");
        }
        self.transport.stop();
        for (_, pending) in self.pending.drain() {
            let _ = pending.reply.send(Err(Error::Unavailable(
                "the daemon is shutting down".into(),
            )));
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ShareView(view) => {
                let members = self.members();
                self.transport.send_view(&members, &view);
            }
            Command::Propose { action, reply } => {
                // Only the acting leader begins a failover: a deposed one's begin must
                // not reach the new leader through raft-rs's forwarding.
                if let Err(e) = lease::may_propose(&action, self.shared.acting()) {
                    let _ = reply.send(Err(e));
                    return;
                }
                let data = match serde_json::to_vec(&action) {
                    Ok(data) => data,
                    Err(e) => {
                        let _ =
                            reply.send(Err(Error::Io(format!("cannot encode {action:?}: {e}"))));
                        return;
                    }
                };
                let context = self.context(reply.clone());
                if let Err(e) = self.raw.propose(context.clone(), data) {
                    self.drop_pending(&context, e);
                }
            }
            Command::ChangeMembers {
                change,
                addr,
                reply,
            } => {
                let cc = conf_change(change, &addr);
                let context = self.context(reply);
                if let Err(e) = self.raw.propose_conf_change(context.clone(), cc) {
                    self.drop_pending(&context, e);
                }
            }
        }
    }

    /// Registers a waiting caller; returns the entry context that identifies it.
    fn context(&mut self, reply: Sender<Result<()>>) -> Vec<u8> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(
            seq,
            Pending {
                reply,
                deadline: Instant::now() + PROPOSAL_TIMEOUT,
            },
        );
        let mut context = self.id.to_be_bytes().to_vec();
        context.extend_from_slice(&self.run_nonce.to_be_bytes());
        context.extend_from_slice(&seq.to_be_bytes());
        context
    }

    fn drop_pending(&mut self, context: &[u8], e: raft::Error) {
        let reason = match e {
            raft::Error::ProposalDropped => {
                "no raft leader: the cluster is electing one or has no quorum".to_string()
            }
            other => format!("raft refused the proposal: {other}"),
        };
        if let Some(pending) = self.take_pending(context) {
            let _ = pending.reply.send(Err(Error::Unavailable(reason)));
        }
    }

    fn take_pending(&mut self, context: &[u8]) -> Option<Pending> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_be_bytes(
                context.get(i * 8..i * 8 + 8)?.try_into().ok()?,
            ))
        };
        if context.len() != 24 || word(0)? != self.id || word(1)? != self.run_nonce {
            return None;
        }
        self.pending.remove(&word(2)?)
    }

    fn expire_pending(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            if let Some(pending) = self.pending.remove(&seq) {
                let _ = pending.reply.send(Err(Error::Unavailable(format!(
                    "not committed within {} s: is a majority of the raft cluster up?",
                    PROPOSAL_TIMEOUT.as_secs()
                ))));
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Message(message, origin) => {
                if !self.admission.admits(&self.raw.raft, &message, &origin) {
                    return;
                }
                let from = message.from;
                let term = message.term;
                if let Err(e) = self.raw.step(*message) {
                    log::debug!("raft: message not stepped: {e}");
                }
                if self.raw.raft.term != self.heard_term {
                    // Answers from an earlier term prove nothing about this one.
                    self.last_heard.clear();
                    self.heard_term = self.raw.raft.term;
                }
                if term == self.raw.raft.term {
                    self.last_heard.insert(from, Instant::now());
                }
            }
            Event::Unreachable(id) => self.raw.report_unreachable(id),
            // Only a member's view counts (a removed node's does not), once, under the
            // peer id the transport authenticated; none can count as this node's.
            Event::View(from, view) => {
                if from != self.id && self.members().contains(&from) {
                    self.shared.views.record(&format!("{from:016x}"), view);
                }
            }
            Event::SnapshotSent(id, ok) => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(id, status);
            }
        }
    }

    /// With `raft_cluster_state=existing`, configured addresses that are not members
    /// are added, one at a time, once a leader is known.
    fn join_configured_peers(&mut self, now: Instant) {
        let members = self.members();
        self.to_join
            .retain(|addr| !members.contains(&peer_id(&addr.to_string())));
        let Some(addr) = self.to_join.first().cloned() else {
            return;
        };
        let due = self
            .last_join_attempt
            .is_none_or(|at| now.duration_since(at) >= PROPOSAL_TIMEOUT);
        if self.raw.raft.leader_id == 0 || !due {
            return;
        }
        self.last_join_attempt = Some(now);
        log::info!("raft: adding {addr} from raft_cluster to the cluster's membership");
        let (reply, _ignored) = crossbeam_channel::bounded(1);
        self.on_command(Command::ChangeMembers {
            change: MemberChange::Add,
            addr,
            reply,
        });
    }

    /// Records this node's HTTP and Sentinel addresses in the replicated state once a
    /// leader is known (again after any change), so followers that never talk to each
    /// other can still list each other.
    fn announce_self(&mut self, now: Instant) {
        let info = DaemonInfo {
            id: format!("{:016x}", self.id),
            http_addr: self.me.http_addr.clone(),
            sentinel_addr: self.me.sentinel_addr.clone(),
        };
        let known = self.shared.lock_machine().data.state.daemons.get(&info.id) == Some(&info);
        let due = self
            .last_announce
            .is_none_or(|at| now.duration_since(at) >= PROPOSAL_TIMEOUT);
        if known || self.removed || self.raw.raft.leader_id == 0 || !due {
            return;
        }
        self.last_announce = Some(now);
        let (reply, _ignored) = crossbeam_channel::bounded(1);
        self.on_command(Command::Propose {
            action: Action::Announce(info),
            reply,
        });
    }

    fn members(&self) -> Vec<u64> {
        self.raw.raft.prs().conf().voters().ids().iter().collect()
    }

    /// One pass of the Ready loop, in raft-rs's documented order.
    fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        // 1. A leader may send its appends before persisting them.
        self.transport.send(ready.take_messages());
        // 2. A snapshot from the leader replaces the log and the state machine.
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.raw.mut_store().apply_snapshot(&snapshot)?;
            let machine = StateMachine::from_snapshot(&snapshot)?;
            log::info!(
                "raft: installed a snapshot at index {} from the leader",
                machine.applied_index
            );
            for (id, addr) in &machine.data.members {
                self.transport.set_address(*id, addr);
            }
            *self.shared.lock_machine() = machine;
            self.shared.notify();
        }
        // 3. Apply what is committed.
        let committed = ready.take_committed_entries();
        self.apply(committed)?;
        // 4. and 5. Persist new entries and the hard state, durably.
        self.raw.mut_store().append(ready.entries())?;
        if let Some(hard_state) = ready.hs() {
            self.raw.mut_store().set_hard_state(hard_state)?;
        }
        self.raw.mut_store().sync()?;
        // 6. Only now the messages that promise what was just persisted.
        self.transport.send(ready.take_persisted_messages());
        // 7. Advance, then the same for what it releases.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            // Not synced on its own: a commit index lost in a crash is learned again
            // from the leader, and the snapshot never runs ahead of a synced one.
            self.raw.mut_store().set_commit(commit)?;
        }
        self.transport.send(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply(committed)?;
        self.raw.advance_apply();
        if self.raw.store().applied_since_snapshot() >= SNAPSHOT_EVERY {
            self.raw.mut_store().compact()?;
        }
        Ok(())
    }

    /// A leader that applied its own removal hands leadership to the most up-to-date
    /// remaining member (raft-rs 0.7 leaves a removed leader in place). Should the
    /// transfer not happen within two election timeouts (the successor was slow to catch
    /// up, a message was lost), it steps down, and the members elect a leader themselves.
    fn hand_over_if_removed(&mut self) {
        if !self.removed || self.raw.raft.state != StateRole::Leader {
            return;
        }
        if let Some(at) = self.handed_over_at {
            let patience = self.tick * (2 * super::ELECTION_TICKS) as u32;
            if at.elapsed() >= patience {
                log::warn!("raft: leadership transfer did not happen; stepping down");
                let term = self.raw.raft.term;
                self.raw.raft.become_follower(term, raft::INVALID_ID);
                self.handed_over_at = None;
            }
            return;
        }
        let successor = self
            .members()
            .into_iter()
            .filter(|id| *id != self.id)
            .max_by_key(|id| self.raw.raft.prs().get(*id).map_or(0, |p| p.matched));
        if let Some(to) = successor {
            log::warn!("raft: handing leadership to peer {to:x} after this node's removal");
            self.raw.transfer_leader(to);
            self.handed_over_at = Some(Instant::now());
        }
    }

    /// Applies committed entries to the state machine and answers their proposers.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        for entry in entries {
            let result = match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => Ok(()),
                EntryType::EntryNormal => self.apply_action(&entry),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change(&entry)
                }
            };
            {
                let mut machine = self.shared.lock_machine();
                machine.applied_index = entry.index;
                machine.applied_term = entry.term;
            }
            if let Some(pending) = self.take_pending(&entry.context) {
                let _ = pending.reply.send(result);
            }
        }
        self.shared.notify();
        Ok(())
    }

    fn apply_action(&mut self, entry: &Entry) -> Result<()> {
        let action: Action = serde_json::from_slice(&entry.data).map_err(|e| {
            log::error!("raft: entry {} holds no action: {e}", entry.index);
            Error::Io(format!("entry {} holds no action: {e}", entry.index))
        })?;
        self.shared.lock_machine().data.state.apply(action)
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<()> {
        let (conf_state, changes) = if entry.get_entry_type() == EntryType::EntryConfChange {
            let cc: ConfChange = from_bytes(&entry.data, "raft configuration change")?;
            let changes = vec![(cc.get_change_type(), cc.node_id, cc.context.to_vec())];
            (self.raw.apply_conf_change(&cc), changes)
        } else {
            let cc: ConfChangeV2 = from_bytes(&entry.data, "raft configuration change")?;
            let changes = cc
                .get_changes()
                .iter()
                .map(|c| (c.get_change_type(), c.node_id, cc.context.to_vec()))
                .collect();
            (self.raw.apply_conf_change(&cc), changes)
        };
        let conf_state = conf_state
            .map_err(|e| Error::InvalidInput(format!("configuration change refused: {e}")))?;
        let mut machine = self.shared.lock_machine();
        for (change, id, context) in changes {
            let addr = String::from_utf8_lossy(&context).to_string();
            match change {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    log::info!("raft: {addr} (peer {id:x}) joined the cluster");
                    if id == self.id {
                        self.removed = false;
                        self.handed_over_at = None;
                    }
                    self.transport.set_address(id, &addr);
                    machine.data.members.insert(id, addr);
                }
                ConfChangeType::RemoveNode => {
                    log::info!("raft: peer {id:x} left the cluster");
                    machine.data.members.remove(&id);
                    self.admission.removed(id);
                    self.shared.views.forget(&format!("{id:016x}"));
                    if id == self.id {
                        log::warn!(
                            "raft: this node was removed from the cluster; it no longer takes part"
                        );
                        self.removed = true;
                    }
                }
            }
        }
        machine.conf_state = conf_state;
        Ok(())
    }

    /// Until when this leader may act (see `lease.rs`).
    fn lease_until(&self) -> Option<Instant> {
        let voters = self.members();
        lease::lease_until(
            &voters,
            self.id,
            &self.last_heard,
            Instant::now(),
            self.tick,
        )
    }

    /// Publishes leadership and the cluster view for the broker's readers.
    fn publish(&mut self) {
        let raft = &self.raw.raft;
        let applied_term = self.shared.lock_machine().applied_term;
        // A new leader acts only once it has applied an entry of its own term: then it
        // has every committed entry, including any failover-begin without an end.
        let acting_until = lease::acting_until(
            raft.state == StateRole::Leader,
            applied_term,
            raft.term,
            self.removed,
            || self.lease_until(),
        );
        let acting = acting_until.is_some();
        let leader = raft.leader_id;
        let book = self.transport.book();
        let book = lock(&book).clone();
        let daemons = self.shared.lock_machine().data.state.daemons.clone();
        let announced = |id: u64| daemons.get(&format!("{id:016x}"));
        let peer = |id: u64| PeerStatus {
            id: format!("{id:016x}"),
            raft_addr: book
                .get(&id)
                .map(|p| p.raft_addr.clone())
                .or_else(|| (id == self.id).then(|| self.me.raft_addr.clone())),
            // What a member announced through the log outranks what a connection's
            // hello says (a hello is only as trustworthy as the link's authentication).
            http_addr: if id == self.id {
                Some(self.me.http_addr.clone())
            } else {
                announced(id)
                    .map(|d| d.http_addr.clone())
                    .or_else(|| book.get(&id).and_then(|p| p.http_addr.clone()))
            },
            sentinel_addr: if id == self.id {
                self.me.sentinel_addr.clone()
            } else {
                match announced(id) {
                    Some(d) => d.sentinel_addr.clone(),
                    None => book.get(&id).and_then(|p| p.sentinel_addr.clone()),
                }
            },
            voter: raft.prs().conf().voters().contains(id),
            match_index: (raft.state == StateRole::Leader)
                .then(|| raft.prs().get(id).map(|p| p.matched))
                .flatten(),
            this_node: id == self.id,
        };
        let mut ids = self.members();
        ids.sort_unstable();
        let status = ClusterStatus {
            broker: "raft".into(),
            id: Some(format!("{:016x}", self.id)),
            raft_addr: Some(self.me.raft_addr.clone()),
            http_addr: self.me.http_addr.clone(),
            role: role_name(raft.state).into(),
            acting,
            term: Some(raft.term),
            leader: (leader != 0).then(|| peer(leader)),
            commit_index: Some(raft.raft_log.committed),
            applied_index: Some(raft.raft_log.applied),
            peers: ids.into_iter().map(peer).collect(),
            error: self
                .removed
                .then(|| "this node was removed from the cluster".to_string()),
            zk_session: None,
        };
        let changed = (acting, leader) != self.published;
        if changed {
            log_leadership(self.id, acting, leader, raft.term, &status);
            self.published = (acting, leader);
        }
        self.shared.set_status(status, acting_until);
        if changed {
            self.shared.notify();
        }
    }
}

/// Logs a change of leadership as this node sees it.
fn log_leadership(me: u64, acting: bool, leader: u64, term: u64, status: &ClusterStatus) {
    if acting {
        log::warn!("raft: this node is the leader (term {term}); it checks and fails over");
    } else if leader == me {
        log::info!("raft: elected leader (term {term}); catching up before acting");
    } else if let Some(l) = &status.leader {
        log::info!(
            "raft: following leader {} (term {term})",
            l.raft_addr.as_deref().unwrap_or("?")
        );
    } else if leader == 0 {
        log::warn!("raft: no leader (term {term})");
    }
}

fn conf_change(change: MemberChange, addr: &Addr) -> ConfChange {
    let mut cc = ConfChange {
        node_id: peer_id(&addr.to_string()),
        ..ConfChange::default()
    };
    match change {
        MemberChange::Add => {
            cc.set_change_type(ConfChangeType::AddNode);
            cc.context = addr.to_string().into_bytes().into();
        }
        MemberChange::Remove => cc.set_change_type(ConfChangeType::RemoveNode),
    }
    cc
}

/// A value that differs between two starts of the daemon.
fn run_nonce() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

fn role_name(role: StateRole) -> &'static str {
    match role {
        StateRole::Leader => "leader",
        StateRole::Follower => "follower",
        StateRole::Candidate => "candidate",
        StateRole::PreCandidate => "pre_candidate",
    }
}
