//! A simulated coordinator in the manner of ZooKeeper: every daemon keeps a session by
//! contacting it; a session not heard from for `session_timeout` expires; the leader
//! is the daemon with the oldest live session and keeps its place while its session
//! lives. The replicated state is the crate's own [`ReplicatedState`], changed only by
//! [`ReplicatedState::apply`] on a proposal of the leader, as the real brokers do.
//!
//! A daemon believes what it last heard: it acts while the coordinator named it leader
//! at its last contact and that contact is younger than its lease (shorter than the
//! session timeout), so a daemon cut off stops acting before anyone else may begin.

use super::world::{Ms, Net, Node};
use redis_failover::broker::views::MastersView;
use redis_failover::broker::{Action, ReplicatedState};

/// One daemon's session, as the coordinator sees it.
#[derive(Debug, Clone)]
struct Session {
    alive: bool,
    last_heard: Ms,
    /// When the session began (the oldest live one leads).
    since: Ms,
}

/// The coordinator: sessions, the leader, the state, the daemons' shared views.
pub struct Coordinator {
    pub state: ReplicatedState,
    /// Bumped on every change of the state.
    pub version: u64,
    sessions: Vec<Session>,
    pub leader: Option<usize>,
    views: Vec<Option<(MastersView, Ms)>>,
    pub session_timeout: Ms,
}

/// What a daemon learns at a contact.
pub struct Contact {
    pub leader: bool,
    /// Until when the daemon acts, when the cluster says (Raft's lease); else the
    /// daemon's own lease from this contact.
    pub lease_until: Option<Ms>,
    pub state: Option<(u64, ReplicatedState)>,
    pub views: Vec<(usize, MastersView, Ms)>,
}

impl Coordinator {
    pub fn new(daemons: usize, state: ReplicatedState, session_timeout: Ms) -> Coordinator {
        Coordinator {
            state,
            version: 1,
            sessions: vec![
                Session {
                    alive: false,
                    last_heard: 0,
                    since: 0,
                };
                daemons
            ],
            leader: None,
            views: vec![None; daemons],
            session_timeout,
        }
    }

    /// Expires sessions not heard from in time and elects a leader if there is none.
    pub fn tick(&mut self, now: Ms) {
        for session in &mut self.sessions {
            if session.alive && now.saturating_sub(session.last_heard) > self.session_timeout {
                session.alive = false;
            }
        }
        if self.leader.is_some_and(|l| !self.sessions[l].alive) {
            self.leader = None;
        }
        if self.leader.is_none() {
            self.leader = (0..self.sessions.len())
                .filter(|&d| self.sessions[d].alive)
                .min_by_key(|&d| (self.sessions[d].since, d));
        }
    }

    /// Daemon `d` (re)starting: its old session is gone with its process.
    pub fn daemon_restarted(&mut self, d: usize) {
        self.sessions[d].alive = false;
        if self.leader == Some(d) {
            self.leader = None;
        }
    }

    /// Daemon `d` makes contact (when the network lets it): its session lives on.
    pub fn contact(&mut self, d: usize, net: &Net, now: Ms, known_version: u64) -> Option<Contact> {
        if !net.connected(Node::Daemon(d), Node::Coordinator) {
            return None;
        }
        let session = &mut self.sessions[d];
        if !session.alive {
            session.alive = true;
            session.since = now;
        }
        session.last_heard = now;
        self.tick(now);
        let views = self
            .views
            .iter()
            .enumerate()
            .filter(|(peer, _)| *peer != d)
            .filter_map(|(peer, v)| v.as_ref().map(|(view, at)| (peer, view.clone(), *at)))
            .collect();
        Some(Contact {
            leader: self.leader == Some(d),
            lease_until: None,
            state: (known_version != self.version).then(|| (self.version, self.state.clone())),
            views,
        })
    }

    /// A proposal of daemon `d`: applied when `d` leads and reaches the coordinator.
    pub fn propose(&mut self, d: usize, net: &Net, now: Ms, action: Action) -> Result<(), String> {
        if !net.connected(Node::Daemon(d), Node::Coordinator) {
            return Err("the coordinator cannot be reached".into());
        }
        self.tick(now);
        if self.leader != Some(d) || !self.sessions[d].alive {
            return Err("not the leader".into());
        }
        self.state.apply(action).map_err(|e| e.to_string())?;
        self.version += 1;
        Ok(())
    }

    /// Daemon `d` shares its view of the masters.
    pub fn share_view(&mut self, d: usize, net: &Net, now: Ms, view: MastersView) {
        if net.connected(Node::Daemon(d), Node::Coordinator) {
            self.views[d] = Some((view, now));
        }
    }
}
