//! The replicated state: the monitored groups and a bounded failover history, changed
//! only by [`Action`]s that every node applies in the same order.
//!
//! [`ReplicatedState::apply`] is pure and deterministic (no clock, no I/O), so the Raft
//! log, the ZooKeeper znode and the standalone broker all compute the same state from
//! the same actions, and the rules (one failover of a group at a time, a late result of
//! a deposed leader never applied) are unit-tested here without servers.

use crate::address::{Addr, MasterSpec};
use crate::error::Result;
use crate::invalid_input;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// Failover records kept per daemon; older ones are dropped first.
pub const FAILOVER_HISTORY: usize = 100;

/// A change to the replicated state. Applied in the same order on every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Watch these groups; an existing group with the same name (or the same master) is
    /// updated and its failed state cleared.
    Add(Vec<GroupSpec>),
    /// Stop watching the groups with these names or current master addresses.
    Delete(Vec<String>),
    /// Watch exactly these groups.
    Set(Vec<GroupSpec>),
    /// Watch these groups unless already watched: the masters of the config file at
    /// start-up. A group that exists (by name, or by a bare address that is its name or
    /// master) is left as it is, so a restart never undoes a failover.
    Seed(Vec<GroupSpec>),
    /// A failover of `group` from `old_master` to `new_master` is starting; `replicas`
    /// are the ones to re-point. A leader that finds a begin without an end finishes it.
    ///
    /// When the replica named could not be promoted, the same attempt (same
    /// `started_at_ms`) moves on to the next candidate with another begin that names it
    /// and lists the replicas passed over so far: the earlier list plus the replica the
    /// attempt named until then. Only such a begin replaces the one under way, so a new
    /// leader always resumes with the replica being promoted.
    FailoverBegin {
        group: String,
        old_master: Addr,
        new_master: Addr,
        #[serde(default)]
        replicas: Vec<Addr>,
        started_at_ms: u64,
        #[serde(default)]
        passed_over: Vec<PassedOver>,
    },
    /// A failover attempt has ended (whatever its outcome).
    FailoverEnd(FailoverRecord),
    /// A daemon of the cluster says where it can be reached, so every daemon can list
    /// the others (`SENTINEL sentinels`, the leader's HTTP address) even if they never
    /// connect to each other directly.
    Announce(DaemonInfo),
    /// The replicas `master` lists now, recorded by the acting daemon when they change,
    /// so a daemon that takes over can fail over a master it never saw alive.
    KnownReplicas {
        group: String,
        master: Addr,
        replicas: Vec<Addr>,
    },
    /// Maintenance: no automatic failover of `group` (every group when None) while the
    /// pause holds (see `holds.rs`).
    Pause { group: Option<String>, pause: Pause },
    /// Ends the pause of `group` (every group's own pause and the pause of all, when
    /// None).
    Resume { group: Option<String> },
    /// Lifts the anti-flapping block of `group` (see `holds.rs`) at `at_ms`.
    Acknowledge { group: String, at_ms: u64 },
}

/// Where one daemon of a cluster can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// The daemon's id in its cluster (16 hex digits for Raft).
    pub id: String,
    pub http_addr: String,
    pub sentinel_addr: Option<String>,
}

/// A group as stored: name and master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    pub name: String,
    pub master: Addr,
}

impl From<MasterSpec> for GroupSpec {
    fn from(spec: MasterSpec) -> GroupSpec {
        GroupSpec {
            name: spec.name,
            master: spec.addr,
        }
    }
}

/// A monitored group in the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub master: Addr,
    /// Set when a failover failed: the group is no longer failed over automatically until
    /// a user adds it again. Holds the reason.
    pub failed: Option<String>,
    /// Changes (to a value never used before) whenever the group is created, its master
    /// changes, or a user clears its failed state; every node's monitor then starts
    /// watching it afresh. Re-adding a group unchanged keeps its revision, so its down
    /// window goes on.
    pub revision: u64,
    /// The master's replicas as last recorded (see [`Action::KnownReplicas`]).
    #[serde(default)]
    pub known_replicas: Vec<Addr>,
    /// Paused for maintenance (see [`Action::Pause`]).
    #[serde(default)]
    pub paused: Option<Pause>,
    /// When its last automatic failover ended (Unix ms): the anti-flapping block runs
    /// from then.
    #[serde(default)]
    pub failed_over_at_ms: Option<u64>,
    /// When a person last acknowledged its failovers (see [`Action::Acknowledge`]).
    #[serde(default)]
    pub acknowledged_at_ms: Option<u64>,
}

/// How a failover attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A replica was promoted and is the group's master now.
    Succeeded,
    /// Nothing was changed because the master may be alive or a hook vetoed; the group
    /// stays watched and is tried again after another full down window.
    Aborted,
    /// No replica could be promoted, or promotion failed: the group is marked failed.
    Failed,
}

/// A maintenance pause: from `since_ms`, until `until_ms` (Unix ms) or until resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub since_ms: u64,
    /// None: until someone resumes.
    pub until_ms: Option<u64>,
}

impl Pause {
    /// Whether it holds at `now_ms` (a pause with an end expires by itself).
    pub fn active(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|until| now_ms < until)
    }
}

/// What an attempt was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptKind {
    /// A master the daemons found down, failed over automatically.
    #[default]
    Failover,
    /// A failover a person asked for (`POST /api/v1/groups/NAME/failover`).
    ManualFailover,
    /// A planned switchover of a live master.
    Switchover,
    /// An automatic failover that a pause or the anti-flapping block held back.
    HeldBack,
}

/// One step of an attempt, as its log line shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    /// Since the attempt began, in ms.
    pub at_ms: f64,
    pub took_ms: f64,
    pub detail: String,
}

/// A candidate that a failover tried to promote and gave up on, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassedOver {
    pub addr: Addr,
    pub reason: String,
}

/// The story of one failover attempt, kept in the replicated history.
///
/// Consecutive stopped attempts of a group (aborted before any failover-begin) with the
/// same reason share one record: `count` says how many, `first_started_at_ms` when the
/// first began, and the other fields describe the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverRecord {
    pub group: String,
    /// Automatic or manual failover, switchover, or held back.
    #[serde(default)]
    pub kind: AttemptKind,
    pub old_master: Addr,
    pub new_master: Option<Addr>,
    /// Unix time in milliseconds.
    pub started_at_ms: u64,
    /// How long the master had gone without a successful check when the attempt began:
    /// never less than `max_down_time`.
    pub down_for_ms: u64,
    pub duration_ms: u64,
    pub outcome: Outcome,
    /// Why it aborted or failed; for a success, notes such as replicas not re-pointed.
    pub reason: Option<String>,
    /// Its failover-begin was committed: the record then applies only while that begin
    /// is still in progress.
    #[serde(default)]
    pub begun: bool,
    /// Candidates tried before `new_master` (or, when none could be promoted, every
    /// candidate tried), in election order, each with why it was passed over.
    #[serde(default)]
    pub passed_over: Vec<PassedOver>,
    /// How many attempts this record stands for: more than 1 only for consecutive
    /// stopped attempts with the same reason.
    #[serde(default = "one_attempt")]
    pub count: u64,
    /// When the first of those attempts began (`started_at_ms` is the last one's); None
    /// when the record stands for one attempt.
    #[serde(default)]
    pub first_started_at_ms: Option<u64>,
    /// Its steps with their times (the last attempt's, for a repeated record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
}

fn one_attempt() -> u64 {
    1
}

impl FailoverRecord {
    /// Stopped before anything was changed or begun: aborted with no failover-begin.
    pub fn is_stopped(&self) -> bool {
        self.outcome == Outcome::Aborted && !self.begun
    }

    /// Whether `next`, a later attempt, repeats this stopped one (same group, master and
    /// reason), so that the two are one record.
    fn repeated_by(&self, next: &FailoverRecord) -> bool {
        self.is_stopped()
            && next.is_stopped()
            && self.group == next.group
            && self.old_master == next.old_master
            && self.reason == next.reason
    }

    /// Takes in a later repeat of this stopped attempt.
    fn absorb(&mut self, next: FailoverRecord) {
        let first = self.first_started_at_ms.unwrap_or(self.started_at_ms);
        self.count = self.count.saturating_add(next.count.max(1));
        self.first_started_at_ms = Some(first);
        self.started_at_ms = next.started_at_ms;
        self.down_for_ms = next.down_for_ms;
        self.duration_ms = next.duration_ms;
        self.steps = next.steps;
    }
}

/// The replicated state: groups plus a bounded failover history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicatedState {
    pub groups: BTreeMap<String, Group>,
    /// Failovers begun and not yet ended, by group (a new leader must finish these).
    pub in_progress: BTreeMap<String, Action>,
    pub history: VecDeque<FailoverRecord>,
    /// The last revision handed out (see [`Group::revision`]).
    pub last_revision: u64,
    /// The cluster's daemons as they announced themselves, by id.
    #[serde(default)]
    pub daemons: BTreeMap<String, DaemonInfo>,
    /// Every group paused for maintenance (see [`Action::Pause`]).
    #[serde(default)]
    pub paused_all: Option<Pause>,
}

impl ReplicatedState {
    /// Applies one action. Invalid actions change nothing and return an error.
    pub fn apply(&mut self, action: Action) -> Result<()> {
        match action {
            Action::Add(specs) => {
                for spec in specs {
                    self.upsert(spec);
                }
            }
            Action::Delete(names) => {
                // Like the Go original: remove the known ones, ignore the rest; an action
                // that matches nothing at all is refused so a typo is not silent.
                let doomed: Vec<String> = names.iter().filter_map(|key| self.find(key)).collect();
                if doomed.is_empty() {
                    return Err(invalid_input!(
                        "no monitored group has the name or master {}",
                        names.join(", ")
                    ));
                }
                for name in doomed {
                    self.groups.remove(&name);
                    self.in_progress.remove(&name);
                }
            }
            Action::Set(specs) => {
                let keep: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
                self.groups.retain(|name, _| keep.contains(name));
                self.in_progress.retain(|name, _| keep.contains(name));
                for spec in specs {
                    self.upsert(spec);
                }
            }
            Action::Announce(info) => {
                self.daemons.insert(info.id.clone(), info);
            }
            Action::KnownReplicas {
                group,
                master,
                replicas,
            } => {
                if let Some(g) = self.groups.get_mut(&group).filter(|g| g.master == master) {
                    g.known_replicas = replicas;
                }
            }
            Action::Seed(specs) => {
                for spec in specs {
                    let known = self.groups.contains_key(&spec.name)
                        || (spec.name == spec.master.to_string()
                            && self.find(&spec.name).is_some());
                    if !known {
                        self.upsert(spec);
                    }
                }
            }
            Action::FailoverBegin { .. } => self.begin_failover(action)?,
            Action::FailoverEnd(record) => self.end_failover(record),
            Action::Pause { group, pause } => match group {
                None => self.paused_all = Some(pause),
                Some(name) => self.group_mut(&name)?.paused = Some(pause),
            },
            Action::Resume { group } => match group {
                None => {
                    self.paused_all = None;
                    for g in self.groups.values_mut() {
                        g.paused = None;
                    }
                }
                Some(name) => self.group_mut(&name)?.paused = None,
            },
            Action::Acknowledge { group, at_ms } => {
                self.group_mut(&group)?.acknowledged_at_ms = Some(at_ms);
            }
        }
        Ok(())
    }

    fn group_mut(&mut self, name: &str) -> Result<&mut Group> {
        self.groups
            .get_mut(name)
            .ok_or_else(|| invalid_input!("no monitored group {name:?}"))
    }

    /// Records a failover-begin: one attempt at a time, and only of the master the
    /// group has now (a late begin from a deposed leader must not replace the current
    /// one). A begin that moves the attempt under way on to its next candidate replaces
    /// it (see [`Action::FailoverBegin`]).
    fn begin_failover(&mut self, action: Action) -> Result<()> {
        let Action::FailoverBegin {
            group, old_master, ..
        } = &action
        else {
            return Ok(());
        };
        let Some(current) = self.groups.get(group) else {
            return Err(invalid_input!("failover of unknown group {group:?}"));
        };
        if current.master != *old_master {
            return Err(invalid_input!(
                "group {group:?} has master {}, not {old_master}",
                current.master
            ));
        }
        if let Some(under_way) = self.in_progress.get(group)
            && !moves_on(under_way, &action)
        {
            return Err(invalid_input!(
                "a failover of group {group:?} is already under way"
            ));
        }
        self.in_progress.insert(group.clone(), action.clone());
        Ok(())
    }

    /// Records the end of a failover attempt in the history and, when it is the attempt
    /// under way, applies its outcome.
    fn end_failover(&mut self, mut record: FailoverRecord) {
        if let Some(why) = self.superseded(&record) {
            // A late or duplicate result (e.g. from a leader deposed while it worked):
            // kept in the history, never applied.
            record.reason = Some(match record.reason.take() {
                Some(reason) => format!("{reason}; not applied: {why}"),
                None => format!("not applied: {why}"),
            });
            self.push_history(record);
            return;
        }
        self.in_progress.remove(&record.group);
        let revision = self.last_revision + 1;
        // A late result must not undo a master a user set meanwhile.
        let current = self
            .groups
            .get_mut(&record.group)
            .filter(|g| g.master == record.old_master);
        if let Some(group) = current {
            match record.outcome {
                Outcome::Succeeded => {
                    if let Some(new) = &record.new_master {
                        // The old master is expected back as a replica.
                        group.known_replicas.retain(|r| r != new);
                        if !group.known_replicas.contains(&record.old_master) {
                            group.known_replicas.push(record.old_master.clone());
                        }
                        group.master = new.clone();
                        group.revision = revision;
                        self.last_revision = revision;
                        if record.kind == AttemptKind::Failover {
                            let ended = record.started_at_ms.saturating_add(record.duration_ms);
                            group.failed_over_at_ms = Some(ended);
                        }
                    }
                    group.failed = None;
                }
                Outcome::Failed => {
                    group.failed = Some(record.reason.clone().unwrap_or_default());
                }
                Outcome::Aborted => {}
            }
        }
        self.push_history(record);
    }

    /// Why a failover result must not be applied, if it must not: another attempt of
    /// the group is under way, or it claims a promotion whose failover-begin was already
    /// ended (or never recorded).
    fn superseded(&self, record: &FailoverRecord) -> Option<String> {
        let begun = match self.in_progress.get(&record.group) {
            Some(Action::FailoverBegin { started_at_ms, .. }) => Some(*started_at_ms),
            _ => None,
        };
        match begun {
            Some(at) if at != record.started_at_ms => Some(format!(
                "another failover of the group (begun at {at}) is under way"
            )),
            None if record.begun || record.outcome == Outcome::Succeeded => {
                Some("its failover-begin was already ended by another daemon".into())
            }
            _ => None,
        }
    }

    /// Adds a record to the history. A stopped attempt that repeats the group's last
    /// record joins it (moved to the end, as the latest). When the history is full, the
    /// oldest stopped attempt goes first: real failovers are never pushed out by them.
    fn push_history(&mut self, record: FailoverRecord) {
        let repeat = self
            .history
            .iter()
            .rposition(|r| r.group == record.group)
            .filter(|&at| self.history[at].repeated_by(&record));
        match repeat.and_then(|at| self.history.remove(at)) {
            Some(mut last) => {
                last.absorb(record);
                self.history.push_back(last);
            }
            None => self.history.push_back(record),
        }
        while self.history.len() > FAILOVER_HISTORY {
            match self.history.iter().position(FailoverRecord::is_stopped) {
                Some(at) => {
                    self.history.remove(at);
                }
                None => {
                    self.history.pop_front();
                }
            }
        }
    }

    /// The group named `key`, or whose current master is `key`.
    pub fn find(&self, key: &str) -> Option<String> {
        if self.groups.contains_key(key) {
            return Some(key.to_string());
        }
        let addr = Addr::parse(key).ok()?;
        self.groups
            .values()
            .find(|g| g.master == addr)
            .map(|g| g.name.clone())
    }

    /// The last failover record of a group.
    pub fn last_failover(&self, group: &str) -> Option<&FailoverRecord> {
        self.history.iter().rev().find(|r| r.group == group)
    }

    fn upsert(&mut self, spec: GroupSpec) {
        // A bare address that is already some group's master means that group.
        let name = if spec.name == spec.master.to_string() {
            self.find(&spec.name).unwrap_or(spec.name)
        } else {
            spec.name
        };
        let unchanged = self
            .groups
            .get(&name)
            .is_some_and(|g| g.master == spec.master && g.failed.is_none());
        if unchanged {
            return;
        }
        self.last_revision += 1;
        // A pause and the block's acknowledgement outlive a new master.
        let earlier = self.groups.get(&name);
        let paused = earlier.and_then(|g| g.paused);
        let failed_over_at_ms = earlier.and_then(|g| g.failed_over_at_ms);
        let acknowledged_at_ms = earlier.and_then(|g| g.acknowledged_at_ms);
        self.groups.insert(
            name.clone(),
            Group {
                name,
                master: spec.master,
                failed: None,
                revision: self.last_revision,
                known_replicas: Vec::new(),
                paused,
                failed_over_at_ms,
                acknowledged_at_ms,
            },
        );
    }
}

/// Whether `next` moves the failover-begin `under_way` on to its next candidate: the
/// same attempt and master, and the replicas passed over are those of `under_way` plus
/// the replica it named, which `next` does not name again.
fn moves_on(under_way: &Action, next: &Action) -> bool {
    let (
        Action::FailoverBegin {
            old_master,
            new_master,
            started_at_ms,
            passed_over,
            ..
        },
        Action::FailoverBegin {
            old_master: next_old,
            new_master: next_new,
            started_at_ms: next_started,
            passed_over: next_passed,
            ..
        },
    ) = (under_way, next)
    else {
        return false;
    };
    started_at_ms == next_started
        && old_master == next_old
        && next_passed.len() == passed_over.len() + 1
        && next_passed.starts_with(passed_over)
        && next_passed.last().is_some_and(|p| p.addr == *new_master)
        && !next_passed.iter().any(|p| p.addr == *next_new)
}

#[cfg(test)]
mod tests;
