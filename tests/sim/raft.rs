//! The simulated daemons as a Raft cluster built on raft-rs itself (`RawNode` over
//! `MemStorage`), so that seeds exercise the elections, terms, forwarding and leases of
//! the real Raft broker rather than a model of them.
//!
//! One node per daemon, with the real broker's settings (`ELECTION_TICKS`,
//! `HEARTBEAT_TICKS`, pre-vote, check-quorum) and its Ready loop (`node.rs`): persist
//! entries and the hard state, then send the messages that promise them, apply what is
//! committed (each node its own [`ReplicatedState`], the actions encoded in JSON as the
//! broker does). A node ticks in its daemon's heartbeat (every [`TICK`] of simulated
//! time), so a stalled or dead daemon's node is silent too. Messages go at once through
//! the simulation's network (`Net::connected` between the two daemons) to running
//! daemons; what cannot be delivered is lost, as over a broken TCP link.
//!
//! Whether a node acts comes from the broker's own rule (`broker::raft::lease`). A
//! daemon that restarts keeps its log (the broker keeps a WAL on disk: here the
//! `MemStorage` outlives the node) and nothing else: its state is rebuilt by applying
//! the log again. raft-rs draws election timeouts from a thread-local random source;
//! each is replaced by one derived from the seed, so a seed replays exactly.

use super::cluster::Contact;
use super::coord::{Proposed, Refusal};
use super::world::{Ms, Net, Node};
use raft::eraftpb::{ConfState, Entry, EntryType, Message};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};
use redis_failover::broker::raft::{ELECTION_TICKS, lease, raft_config};
use redis_failover::broker::views::MastersView;
use redis_failover::broker::{Action, ReplicatedState};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The real broker's default tick (`raft_tick_interval`).
pub const TICK: Ms = 100;

/// One daemon's raft node and what its process holds in memory.
struct Member {
    raw: RawNode<MemStorage>,
    state: ReplicatedState,
    applied: u64,
    applied_term: u64,
    /// When each peer was last heard from in the current term (for the lease).
    last_heard: HashMap<u64, Instant>,
    heard_term: u64,
    incarnation: u64,
    next_seq: u64,
    /// The proposals waited for, by sequence number, and their results once applied
    /// here.
    waiting: BTreeMap<u64, Option<Result<(), String>>>,
    /// The other members' views, as they were sent to this one.
    views: Vec<Option<(MastersView, Ms)>>,
}

/// The Raft cluster of the simulated daemons.
pub struct RaftCluster {
    members: Vec<Member>,
    /// The logs, kept across restarts (the broker's WAL).
    storages: Vec<MemStorage>,
    /// The state every node starts from (the groups, as a snapshot would hold them).
    initial: ReplicatedState,
    /// The committed state: that of the highest index any node has applied.
    pub state: ReplicatedState,
    state_index: u64,
    epoch: Instant,
    seed: u64,
    /// What went wrong in the simulation itself (reported as violations).
    pub problems: Vec<String>,
}

/// A deterministic mix of the values (SplitMix64's finaliser).
fn mix(values: &[u64]) -> u64 {
    values.iter().fold(0x9e37_79b9_7f4a_7c15, |acc, v| {
        let mut z = (acc ^ v).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// Replaces raft-rs's random election timeout by one drawn from the seed, the node,
/// its term and its role (it changes only when they do).
fn fix_timeout(seed: u64, m: &mut Member) {
    let raft = &m.raw.raft;
    let role = match raft.state {
        StateRole::Follower => 0,
        StateRole::PreCandidate => 1,
        StateRole::Candidate => 2,
        StateRole::Leader => 3,
    };
    let spread = ELECTION_TICKS as u64;
    let want = ELECTION_TICKS + (mix(&[seed, raft.id, raft.term, role]) % spread) as usize;
    if raft.randomized_election_timeout() != want {
        m.raw.raft.set_randomized_election_timeout(want);
    }
}

impl RaftCluster {
    pub fn new(daemons: usize, state: ReplicatedState, seed: u64, epoch: Instant) -> RaftCluster {
        let voters: Vec<u64> = (1..=daemons as u64).collect();
        let storages: Vec<MemStorage> = (0..daemons)
            .map(|_| MemStorage::new_with_conf_state(ConfState::from((voters.clone(), vec![]))))
            .collect();
        let mut cluster = RaftCluster {
            members: Vec::new(),
            storages,
            initial: state.clone(),
            state,
            state_index: 0,
            epoch,
            seed,
            problems: Vec::new(),
        };
        for d in 0..daemons {
            let member = cluster.boot(d, 0);
            cluster.members.push(member);
        }
        cluster
    }

    /// A node of daemon `d` over its kept log, with nothing else in memory.
    fn boot(&mut self, d: usize, incarnation: u64) -> Member {
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let storage = self.storages[d].clone();
        // Our own settings over our own storage: raft-rs refusing them is a bug here.
        let raw = RawNode::new(&raft_config(d as u64 + 1, 0), storage, &logger)
            .unwrap_or_else(|e| panic!("d{d}: raft-rs cannot start: {e}"));
        let mut member = Member {
            raw,
            state: self.initial.clone(),
            applied: 0,
            applied_term: 0,
            last_heard: HashMap::new(),
            heard_term: 0,
            incarnation,
            next_seq: 1,
            waiting: BTreeMap::new(),
            views: vec![None; self.storages.len()],
        };
        fix_timeout(self.seed, &mut member);
        member
    }

    fn instant(&self, at: Ms) -> Instant {
        self.epoch + Duration::from_millis(at)
    }

    /// Daemon `d` (re)starting: its node comes back from its log.
    pub fn daemon_restarted(&mut self, d: usize) {
        let incarnation = self.members[d].incarnation + 1;
        self.members[d] = self.boot(d, incarnation);
    }

    /// Until when daemon `d` acts (the broker's rule), if it does.
    pub fn acting_until(&self, d: usize, now: Ms) -> Option<Ms> {
        let m = &self.members[d];
        let raft = &m.raw.raft;
        let voters: Vec<u64> = raft.prs().conf().voters().ids().iter().collect();
        let tick = Duration::from_millis(TICK);
        let until = lease::acting_until(
            raft.state == StateRole::Leader,
            m.applied_term,
            raft.term,
            false,
            || lease::lease_until(&voters, raft.id, &m.last_heard, self.instant(now), tick),
        )?;
        let ms = until.saturating_duration_since(self.epoch).as_millis() as Ms;
        (ms > now).then_some(ms)
    }

    /// Daemon `d`'s heartbeat: its node ticks, the cluster exchanges what follows, and
    /// the daemon learns whether it acts, its node's state and its peers' views.
    pub fn contact(
        &mut self,
        d: usize,
        net: &Net,
        now: Ms,
        known_version: u64,
        running: &[bool],
    ) -> Contact {
        self.members[d].raw.tick();
        fix_timeout(self.seed, &mut self.members[d]);
        self.pump(net, now, running);
        let until = self.acting_until(d, now);
        let m = &self.members[d];
        let version = m.applied + 1;
        Contact {
            leader: until.is_some(),
            lease_until: until,
            state: (known_version != version).then(|| (version, m.state.clone())),
            views: m
                .views
                .iter()
                .enumerate()
                .filter_map(|(peer, v)| v.as_ref().map(|(view, at)| (peer, view.clone(), *at)))
                .collect(),
        }
    }

    /// Daemon `d`'s node and the version of its state (what its broker would answer).
    pub fn daemon_state(&self, d: usize) -> (u64, ReplicatedState) {
        let m = &self.members[d];
        (m.applied + 1, m.state.clone())
    }

    /// A proposal of daemon `d`: done once its node applies it (at once when a
    /// majority is connected), refused at once when the node knows no leader (or may
    /// not begin a failover). When it is not applied yet, a caller that `waits` gets a
    /// ticket for [`RaftCluster::poll`]; one that does not (the core) a refusal.
    pub fn propose(
        &mut self,
        d: usize,
        net: &Net,
        now: Ms,
        action: Action,
        running: &[bool],
        waits: bool,
    ) -> Result<Proposed, Refusal> {
        let refuse = |why: String| Refusal { why, after: 2 };
        let acting = self.acting_until(d, now).is_some();
        lease::may_propose(&action, acting).map_err(|e| refuse(e.to_string()))?;
        let data = serde_json::to_vec(&action)
            .map_err(|e| refuse(format!("cannot encode {action:?}: {e}")))?;
        let m = &mut self.members[d];
        let seq = m.next_seq;
        m.next_seq += 1;
        let mut context = (d as u64).to_be_bytes().to_vec();
        context.extend_from_slice(&m.incarnation.to_be_bytes());
        context.extend_from_slice(&seq.to_be_bytes());
        if let Err(e) = m.raw.propose(context, data) {
            let why = match e {
                raft::Error::ProposalDropped => {
                    "no raft leader: the cluster is electing one or has no quorum".to_string()
                }
                other => format!("raft refused the proposal: {other}"),
            };
            return Err(refuse(why));
        }
        self.members[d].waiting.insert(seq, None);
        self.pump(net, now, running);
        match self.poll(d, seq) {
            Some(Ok(())) => Ok(Proposed::Done),
            Some(Err(e)) => Err(refuse(e)),
            None if waits => Ok(Proposed::Pending(seq)),
            None => {
                self.abandon(d, seq);
                Err(refuse("not applied yet".into()))
            }
        }
    }

    /// The result of daemon `d`'s proposal `seq`, once its node has applied it.
    pub fn poll(&mut self, d: usize, seq: u64) -> Option<Result<(), String>> {
        let waiting = &mut self.members[d].waiting;
        let result = waiting.get(&seq).cloned().flatten()?;
        waiting.remove(&seq);
        Some(result)
    }

    /// Daemon `d` stops waiting for proposal `seq` (the broker's proposal timeout).
    pub fn abandon(&mut self, d: usize, seq: u64) {
        self.members[d].waiting.remove(&seq);
    }

    /// Daemon `d` sends its view of the masters to every member it is connected to.
    pub fn share_view(
        &mut self,
        d: usize,
        net: &Net,
        now: Ms,
        view: MastersView,
        running: &[bool],
    ) {
        for (peer, member) in self.members.iter_mut().enumerate() {
            let runs = running.get(peer).copied().unwrap_or(false);
            if peer != d && runs && net.connected(Node::Daemon(d), Node::Daemon(peer)) {
                member.views[d] = Some((view.clone(), now));
            }
        }
    }

    /// Runs every running node's Ready loop and delivers the messages, until quiet.
    fn pump(&mut self, net: &Net, now: Ms, running: &[bool]) {
        for _ in 0..1_000 {
            let mut out = Vec::new();
            for (d, runs) in running.iter().enumerate().take(self.members.len()) {
                if *runs {
                    self.ready(d, &mut out);
                }
            }
            if out.is_empty() {
                break;
            }
            for message in out {
                let (from, to) = (message.from as usize - 1, message.to as usize - 1);
                let delivered = to < self.members.len()
                    && running[to]
                    && net.connected(Node::Daemon(from), Node::Daemon(to));
                if delivered {
                    self.step(to, message, now);
                }
            }
        }
        let best = (0..self.members.len()).max_by_key(|&d| (self.members[d].applied, d));
        if let Some(best) = best
            && self.members[best].applied > self.state_index
        {
            self.state_index = self.members[best].applied;
            self.state = self.members[best].state.clone();
        }
    }

    /// A peer's message to daemon `d`'s node, noting when the peer was heard.
    fn step(&mut self, d: usize, message: Message, now: Ms) {
        let at = self.instant(now);
        let m = &mut self.members[d];
        let (from, term) = (message.from, message.term);
        let _ = m.raw.step(message);
        fix_timeout(self.seed, m);
        if m.raw.raft.term != m.heard_term {
            // Answers from an earlier term prove nothing about this one.
            m.last_heard.clear();
            m.heard_term = m.raw.raft.term;
        }
        if term == m.raw.raft.term {
            m.last_heard.insert(from, at);
        }
    }

    /// One pass of daemon `d`'s Ready loop, in the broker's order.
    fn ready(&mut self, d: usize, out: &mut Vec<Message>) {
        let m = &mut self.members[d];
        if !m.raw.has_ready() {
            return;
        }
        let mut problems = Vec::new();
        let mut ready = m.raw.ready();
        out.extend(ready.take_messages());
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            if let Err(e) = m.raw.mut_store().wl().apply_snapshot(snapshot) {
                problems.push(format!("d{d}: snapshot: {e}"));
            }
        }
        apply(m, ready.take_committed_entries(), d, &mut problems);
        if let Err(e) = m.raw.mut_store().wl().append(ready.entries()) {
            problems.push(format!("d{d}: append: {e}"));
        }
        if let Some(hard_state) = ready.hs() {
            m.raw.mut_store().wl().set_hardstate(hard_state.clone());
        }
        out.extend(ready.take_persisted_messages());
        let mut light = m.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            m.raw.mut_store().wl().mut_hard_state().set_commit(commit);
        }
        out.extend(light.take_messages());
        apply(m, light.take_committed_entries(), d, &mut problems);
        m.raw.advance_apply();
        self.problems.extend(problems);
    }
}

/// Applies committed entries to the member's state; the result of the one its daemon
/// waits for is kept for it.
fn apply(m: &mut Member, entries: Vec<Entry>, d: usize, problems: &mut Vec<String>) {
    for entry in entries {
        let result = match entry.get_entry_type() {
            EntryType::EntryNormal if entry.data.is_empty() => Ok(()),
            EntryType::EntryNormal => match serde_json::from_slice::<Action>(&entry.data) {
                Ok(action) => m.state.apply(action).map_err(|e| e.to_string()),
                Err(e) => {
                    problems.push(format!("d{d}: entry {} holds no action: {e}", entry.index));
                    Err(e.to_string())
                }
            },
            _ => Ok(()),
        };
        m.applied = entry.index;
        m.applied_term = entry.term;
        let word = |i: usize| {
            entry
                .context
                .get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
        };
        let mine = word(0) == Some(d as u64) && word(1) == Some(m.incarnation);
        if let Some(slot) = word(2).filter(|_| mine).and_then(|q| m.waiting.get_mut(&q)) {
            *slot = Some(result);
        }
    }
}
