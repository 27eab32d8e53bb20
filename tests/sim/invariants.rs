//! What must hold in every run, whatever the faults:
//!
//! - **One actor per group.** Commands that change a server's role (promote, re-point,
//!   fence) for one group never interleave between two workers: once another daemon's
//!   job has acted on the group, an earlier job must not act on it again.
//! - **A healthy master stays.** A master that a quorum of daemons could check without
//!   fault for the whole window (the down window plus four check intervals, which
//!   covers a shared view's age) is never replaced by a promotion, except by a planned
//!   switchover.
//! - **Liveness.** Once the faults are over (partitions healed, every daemon running),
//!   a group whose master is dead and that has an eligible replica (up, priority above
//!   0, one that accepts promotion) has a new master within [`LIVENESS_BOUND`], unless
//!   an earlier attempt switched it off (see the last rule).
//! - **One writable master.** When every server is restarted at the heal and the
//!   master the replicated state names answers, it is the group's only master by the
//!   end: every old master that came back was fenced.
//! - **Nothing stops silently.** By the end no failover-begin is left without its end,
//!   and no attempt fails (which switches the group's automatic failover off until a
//!   person adds it again) while a replica of the master that accepts promotion was up
//!   and reachable.

use super::run::Settings;
use super::world::{Ms, Server, SimRole};
use redis_failover::broker::ReplicatedState;
use std::collections::{BTreeMap, BTreeSet};

/// After the heal: the window, the session timeout for a new leader, three candidates
/// passed over at the 2 s promotion timeout, and ten check intervals.
pub const LIVENESS_BOUND: Ms = 12_000;

/// Which daemon could check which server without fault, now (`[daemon][server]`).
pub struct Health {
    pub now: Ms,
    pub sees_up: Vec<Vec<bool>>,
}

/// The world at the end of a run.
pub struct End {
    pub now: Ms,
    pub state: ReplicatedState,
    pub groups: Vec<String>,
    pub servers: Vec<Server>,
    pub masters_up: Vec<Vec<usize>>,
    /// Whether the master the state names has answered long enough to fence others.
    pub named_answers: Vec<bool>,
    pub restarted_servers: bool,
    pub heal_at: Ms,
}

pub struct Invariants {
    window: Ms,
    quorum: usize,
    /// The last time each daemon could not check each server.
    last_bad: Vec<Vec<Ms>>,
    /// The last job that acted on each group, and its daemon.
    last_actor: BTreeMap<usize, (u64, usize)>,
    superseded: BTreeSet<u64>,
    /// Jobs that are planned switchovers.
    planned: BTreeSet<u64>,
    stuck_since: BTreeMap<usize, Ms>,
    pub violations: Vec<String>,
}

impl Invariants {
    pub fn new(settings: &Settings, daemons: usize) -> Invariants {
        Invariants {
            window: settings.max_down_time + 4 * settings.check_interval,
            quorum: daemons / 2 + 1,
            last_bad: Vec::new(),
            last_actor: BTreeMap::new(),
            superseded: BTreeSet::new(),
            planned: BTreeSet::new(),
            stuck_since: BTreeMap::new(),
            violations: Vec::new(),
        }
    }

    /// Notes who cannot check whom now (called at every change of the faults).
    pub fn observe(&mut self, health: &Health) {
        if self.last_bad.is_empty() {
            self.last_bad = health
                .sees_up
                .iter()
                .map(|row| vec![0; row.len()])
                .collect();
        }
        for (d, row) in health.sees_up.iter().enumerate() {
            for (s, up) in row.iter().enumerate() {
                if !up {
                    self.last_bad[d][s] = health.now;
                }
            }
        }
    }

    /// A role-changing command of `job` (on daemon `d`) on a server of `group`.
    pub fn on_command(&mut self, group: usize, d: usize, job: u64, now: Ms, what: &str) {
        if self.superseded.contains(&job) {
            self.violations.push(format!(
                "at {now} ms two daemons act on group g{group} at once: d{d} ({what}) after another daemon's job acted on the group"
            ));
        }
        if let Some((last_job, last_d)) = self.last_actor.get(&group).copied()
            && last_job != job
            && last_d != d
        {
            self.superseded.insert(last_job);
        }
        self.last_actor.insert(group, (job, d));
    }

    /// Server `promoted` of `group` was made master while `master` (if the state names
    /// one that says it is master) was the group's master.
    /// Job `job` is a planned switchover: it replaces a healthy master on purpose.
    pub fn planned(&mut self, job: u64) {
        self.planned.insert(job);
    }

    pub fn on_promotion(
        &mut self,
        job: u64,
        group: usize,
        master: Option<usize>,
        promoted: usize,
        health: &Health,
    ) {
        self.observe(health);
        if self.planned.contains(&job) {
            return;
        }
        let Some(m) = master.filter(|m| *m != promoted) else {
            return;
        };
        let now = health.now;
        if now <= self.window {
            return;
        }
        let healthy_for: Vec<usize> = (0..self.last_bad.len())
            .filter(|&d| health.sees_up[d][m] && self.last_bad[d][m] + self.window < now)
            .collect();
        if healthy_for.len() >= self.quorum {
            self.violations.push(format!(
                "at {now} ms the healthy master of g{group} (server {m}) was failed over: daemons {healthy_for:?} could check it for the last {} ms",
                self.window
            ));
        }
    }

    /// Called every tenth of a second after the heal: `stuck` says, per group, whether
    /// its master is dead while an eligible replica is up.
    pub fn liveness(&mut self, now: Ms, stuck: &[(usize, bool, String)]) {
        for (group, is_stuck, detail) in stuck {
            if !is_stuck {
                self.stuck_since.remove(group);
                continue;
            }
            let since = *self.stuck_since.entry(*group).or_insert(now);
            if now - since == LIVENESS_BOUND {
                self.violations.push(format!(
                    "g{group}: no failover within {LIVENESS_BOUND} ms after the heal: {detail}"
                ));
            }
        }
    }

    /// An attempt on `group` failed (switching the group's automatic failover off)
    /// while `candidate`, a replica of the master that accepts promotion, was up and
    /// reachable.
    pub fn on_failed(&mut self, group: usize, now: Ms, candidate: Option<String>, reason: &str) {
        if let Some(candidate) = candidate {
            self.violations.push(format!(
                "at {now} ms g{group} was switched off ({reason}) although {candidate} could be promoted"
            ));
        }
    }

    pub fn at_end(&mut self, end: &End) {
        for (name, begun) in &end.state.in_progress {
            self.violations
                .push(format!("{name}: a failover was left unfinished: {begun:?}"));
        }
        for (g, name) in end.groups.iter().enumerate() {
            let Some(group) = end.state.groups.get(name) else {
                continue;
            };
            if end.restarted_servers {
                let masters: Vec<String> = end.masters_up[g]
                    .iter()
                    .map(|&s| end.servers[s].addr.to_string())
                    .collect();
                // Fencing points servers at the group's master, so it runs while that
                // master answers; then it must be the only one. (With it silent, old
                // masters that came back stay masters until it answers or is
                // replaced: not judged here.)
                let named = group.master.to_string();
                let wrong = end.named_answers[g] && masters.iter().any(|m| *m != named);
                if wrong {
                    self.violations.push(format!(
                        "{name}: {} writable master(s) {masters:?} {} ms after every server came back; the state names {named}",
                        masters.len(),
                        end.now - end.heal_at,
                    ));
                }
            }
        }
    }
}

/// A replica of group `g` that could be promoted, if any.
pub fn eligible_in(servers: &[Server], g: usize) -> Option<String> {
    servers
        .iter()
        .find(|s| {
            s.group == g
                && s.up
                && s.priority > 0
                && !s.refuses_promotion
                && matches!(s.role, SimRole::Replica { .. })
        })
        .map(|s| s.addr.to_string())
}
