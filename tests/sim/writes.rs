//! The clients' writes and what became of them.
//!
//! Each group has a client that writes every 100 ms. By default it writes to the master
//! the replicated state names (what a client learns from the Sentinel port). With
//! bounded loss on (`min_replicas_to_write`), it behaves as a real client does with a
//! kept connection: it stays with the master it has until a write fails (`READONLY`,
//! `NOREPLICAS`, no answer) and only then asks again. So an old master cut off from
//! its daemons and replicas, but not from its clients, keeps taking their writes until
//! it refuses them: the split brain that `min-replicas-to-write` bounds.
//!
//! Every acknowledged write is recorded with the server that acknowledged it; at the
//! end, the writes the group's final master does not hold are lost. Checked with
//! bounded loss on:
//!
//! - **Loss within the lag.** A lost write that a master with the setting acknowledged
//!   was acknowledged at most `min_replicas_max_lag` (plus one replication step) after
//!   that master last heard enough replicas acknowledge: Redis's promise, end to end
//!   through the simulated replication, acknowledgements and fencing.
//! - **The setting is owed to every master.** Once the faults are over, the master the
//!   state names, answering, has the setting within [`LIVENESS_BOUND`] of becoming
//!   master or restarting (a restart loses a `CONFIG SET` where the server has no
//!   config file): the daemon's part of the bargain. A group switched off by a failed
//!   attempt is left alone by the daemons, and not judged.
//!
//! Writes a master took before it had the setting are lost without bound; they are
//! counted, not judged.

use super::invariants::LIVENESS_BOUND;
use super::run::Sim;
use super::world::{Ms, SimRole, WriteError};

/// One replication step: how much later than the rule a lost write may be.
const SLACK: Ms = 100;

/// A write a server acknowledged.
struct Acked {
    id: u64,
    group: usize,
    server: usize,
    /// When that server last became master (or restarted): one term as master.
    term: Ms,
    at: Ms,
    /// The master had `min-replicas-to-write` then, and its replicas last acknowledged
    /// (enough of them) at this time.
    fed_at: Option<Ms>,
}

/// The clients of every group.
#[derive(Default)]
pub struct Clients {
    /// Whether a client stays with its master until a write fails.
    sticky: bool,
    /// The server each group's client writes to (sticky clients).
    using: Vec<Option<usize>>,
    next_id: u64,
    acked: Vec<Acked>,
}

/// What the writes came to at the end of a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Loss {
    /// Whether the run bounded the loss (`min_replicas_to_write`).
    pub bounded: bool,
    pub acknowledged: usize,
    pub lost: usize,
    /// The longest span between the first and the last lost write of one master (in
    /// one term: from becoming master, or restarting, to the next time).
    pub longest_ms: Ms,
}

impl Clients {
    pub fn new(groups: usize, sticky: bool) -> Clients {
        Clients {
            sticky,
            using: vec![None; groups],
            ..Clients::default()
        }
    }
}

impl Sim {
    /// Each group's client writes once.
    pub(super) fn client_writes(&mut self) {
        for g in 0..self.groups.len() {
            let target = match self.clients.using[g] {
                Some(s) if self.clients.sticky => Some(s),
                _ => self.state_master(g),
            };
            let Some(s) = target else {
                continue;
            };
            self.clients.next_id += 1;
            let id = self.clients.next_id;
            let fed_at = self.fed_at(s);
            let term = self.world.servers[s].since;
            match self.world.client_write(s, id, self.now) {
                Ok(()) => {
                    self.clients.using[g] = Some(s);
                    self.clients.acked.push(Acked {
                        id,
                        group: g,
                        server: s,
                        term,
                        at: self.now,
                        fed_at,
                    });
                }
                // A paused master holds the client, which waits and stays.
                Err(WriteError::Paused) => {}
                Err(e) => {
                    if self.clients.using[g].take().is_some() && self.clients.sticky {
                        let who = self.world.servers[s].addr.to_string();
                        self.log(
                            "client",
                            &format!("g{g}: write to {who} failed ({e:?}); asks again"),
                        );
                    }
                }
            }
        }
    }

    /// With the setting on `s`: when the replicas it counts last acknowledged (the
    /// `min-replicas-to-write`-th latest acknowledgement of its linked replicas).
    fn fed_at(&self, s: usize) -> Option<Ms> {
        let master = &self.world.servers[s];
        let (to_write, _) = master.min_replicas?;
        let mut acks: Vec<Ms> = self
            .world
            .servers
            .iter()
            .filter(|r| {
                r.up && matches!(&r.role, SimRole::Replica { master: m, link_up: true, .. } if *m == master.addr)
            })
            .map(|r| r.last_ack)
            .collect();
        acks.sort_unstable_by(|a, b| b.cmp(a));
        Some(acks.get(to_write.saturating_sub(1)).copied().unwrap_or(0))
    }

    /// The writes lost by the end, and the invariants above.
    pub(super) fn judge_writes(&mut self) -> Loss {
        let mut loss = Loss {
            acknowledged: self.clients.acked.len(),
            ..Loss::default()
        };
        let judged = self.settings.bounded_loss.is_some();
        loss.bounded = judged;
        let max_lag = self
            .settings
            .bounded_loss
            .map_or(0, |b| Ms::from(b.max_lag_secs) * 1000);
        let mut spans: std::collections::BTreeMap<(usize, Ms), (Ms, Ms)> = Default::default();
        let mut violations = Vec::new();
        for g in 0..self.groups.len() {
            let Some(m) = self.state_master(g) else {
                continue;
            };
            let held: std::collections::HashSet<u64> =
                self.world.servers[m].data.iter().copied().collect();
            for w in self.clients.acked.iter().filter(|w| w.group == g) {
                if held.contains(&w.id) {
                    continue;
                }
                loss.lost += 1;
                let span = spans.entry((w.server, w.term)).or_insert((w.at, w.at));
                span.1 = w.at;
                if let (true, Some(fed_at)) = (judged, w.fed_at)
                    && w.at > fed_at + max_lag + SLACK
                {
                    violations.push(format!(
                        "g{g}: write {} acknowledged by {} at {} ms was lost, {} ms after its replicas last acknowledged (max lag {max_lag} ms)",
                        w.id,
                        self.world.servers[w.server].addr,
                        w.at,
                        w.at - fed_at
                    ));
                }
            }
            let master = &self.world.servers[m];
            let owed_since = master.since.max(self.settings.heal_at);
            let switched_off = self
                .coord
                .state()
                .groups
                .get(&self.groups[g])
                .is_some_and(|g| g.failed.is_some());
            if judged
                && !switched_off
                && master.answers(self.now)
                && master.role == SimRole::Master
                && master.min_replicas.is_none()
                && self.now.saturating_sub(owed_since) > LIVENESS_BOUND
            {
                violations.push(format!(
                    "g{g}: master {} has taken writes without min-replicas-to-write for {} ms after the heal",
                    master.addr,
                    self.now - owed_since
                ));
            }
        }
        loss.longest_ms = spans.values().map(|(a, b)| b - a).max().unwrap_or(0);
        self.inv.violations.extend(violations);
        loss
    }
}
