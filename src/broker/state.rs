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
    FailoverBegin {
        group: String,
        old_master: Addr,
        new_master: Addr,
        #[serde(default)]
        replicas: Vec<Addr>,
        started_at_ms: u64,
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

/// The story of one failover attempt, kept in the replicated history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRecord {
    pub group: String,
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
        }
        Ok(())
    }

    /// Records a failover-begin: one attempt at a time, and only of the master the
    /// group has now (a late begin from a deposed leader must not replace the current
    /// one).
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
        if self.in_progress.contains_key(group) {
            return Err(invalid_input!(
                "a failover of group {group:?} is already under way"
            ));
        }
        if current.master != *old_master {
            return Err(invalid_input!(
                "group {group:?} has master {}, not {old_master}",
                current.master
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

    fn push_history(&mut self, record: FailoverRecord) {
        self.history.push_back(record);
        while self.history.len() > FAILOVER_HISTORY {
            self.history.pop_front();
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
        self.groups.insert(
            name.clone(),
            Group {
                name,
                master: spec.master,
                failed: None,
                revision: self.last_revision,
                known_replicas: Vec::new(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> GroupSpec {
        MasterSpec::parse(text).unwrap().into()
    }

    fn record(group: &str, outcome: Outcome, new: Option<&str>) -> FailoverRecord {
        FailoverRecord {
            group: group.into(),
            old_master: Addr::parse("h:1").unwrap(),
            new_master: new.map(|n| Addr::parse(n).unwrap()),
            started_at_ms: 0,
            down_for_ms: 1000,
            duration_ms: 1,
            outcome,
            reason: Some("why".into()),
            begun: false,
        }
    }

    fn begin(s: &mut ReplicatedState, group: &str, new: &str) {
        s.apply(Action::FailoverBegin {
            group: group.into(),
            old_master: s.groups[group].master.clone(),
            new_master: Addr::parse(new).unwrap(),
            replicas: vec![],
            started_at_ms: 0,
        })
        .unwrap();
    }

    #[test]
    fn add_delete_set_keep_names() {
        let mut s = ReplicatedState::default();
        s.apply(Action::Add(vec![spec("cache=h:1"), spec("h:2")]))
            .unwrap();
        assert_eq!(s.groups.len(), 2);
        s.apply(Action::Delete(vec!["h:1".into(), "unknown".into()]))
            .unwrap();
        assert!(!s.groups.contains_key("cache"), "delete by master address");
        assert!(s.apply(Action::Delete(vec!["nope".into()])).is_err());
        // Deleted and added again: a revision never seen before.
        let old = s.groups["h:2"].revision;
        s.apply(Action::Delete(vec!["h:2".into()])).unwrap();
        s.apply(Action::Add(vec![spec("h:2")])).unwrap();
        assert!(s.groups["h:2"].revision > old);
        // Re-added unchanged: same revision (the down window goes on).
        let now = s.groups["h:2"].revision;
        s.apply(Action::Add(vec![spec("h:2")])).unwrap();
        assert_eq!(s.groups["h:2"].revision, now);
        s.apply(Action::Set(vec![spec("a=h:3")])).unwrap();
        assert_eq!(s.groups.keys().collect::<Vec<_>>(), vec!["a"]);
    }

    #[test]
    fn a_deposed_leaders_late_result_is_kept_but_not_applied() {
        let mut s = ReplicatedState::default();
        s.apply(Action::Add(vec![spec("g=h:1")])).unwrap();
        begin(&mut s, "g", "h:2");
        // The new leader finished the attempt (here: aborted, the old master is back).
        s.apply(Action::FailoverEnd(record("g", Outcome::Aborted, None)))
            .unwrap();
        assert!(s.in_progress.is_empty());
        // The deposed leader wakes and reports a promotion of the same attempt.
        s.apply(Action::FailoverEnd(record(
            "g",
            Outcome::Succeeded,
            Some("h:2"),
        )))
        .unwrap();
        assert_eq!(
            s.groups["g"].master.port, 1,
            "the late promotion is not applied"
        );
        let last = s.last_failover("g").unwrap();
        assert!(last.reason.as_deref().unwrap().contains("not applied"));
        // Nor is a late failure of an attempt that had begun.
        let mut late = record("g", Outcome::Failed, None);
        late.begun = true;
        s.apply(Action::FailoverEnd(late)).unwrap();
        assert_eq!(s.groups["g"].failed, None, "a late failure is not applied");
        // A result of another attempt while one is under way is not applied either, and
        // a second begin while one is under way is refused.
        begin(&mut s, "g", "h:3");
        let again = Action::FailoverBegin {
            group: "g".into(),
            old_master: Addr::parse("h:1").unwrap(),
            new_master: Addr::parse("h:4").unwrap(),
            replicas: vec![],
            started_at_ms: 7,
        };
        assert!(s.apply(again).is_err());
        let mut other = record("g", Outcome::Failed, None);
        other.started_at_ms = 99;
        s.apply(Action::FailoverEnd(other)).unwrap();
        assert_eq!(s.groups["g"].failed, None);
        assert_eq!(s.in_progress.len(), 1);
    }

    #[test]
    fn seed_never_undoes_a_failover() {
        let mut s = ReplicatedState::default();
        s.apply(Action::Seed(vec![spec("h:1"), spec("cache=h:5")]))
            .unwrap();
        begin(&mut s, "h:1", "h:2");
        s.apply(Action::FailoverEnd(record(
            "h:1",
            Outcome::Succeeded,
            Some("h:2"),
        )))
        .unwrap();
        // A restart seeds the config masters again: the failed-over group keeps h:2.
        s.apply(Action::Seed(vec![
            spec("h:1"),
            spec("cache=h:6"),
            spec("h:7"),
        ]))
        .unwrap();
        assert_eq!(s.groups["h:1"].master.port, 2);
        assert_eq!(s.groups["cache"].master.port, 5);
        assert!(s.groups.contains_key("h:7"));
    }

    #[test]
    fn failover_end_moves_master_or_marks_failed() {
        let mut s = ReplicatedState::default();
        s.apply(Action::Add(vec![spec("g=h:1")])).unwrap();
        begin(&mut s, "g", "h:2");
        s.apply(Action::FailoverEnd(record(
            "g",
            Outcome::Succeeded,
            Some("h:2"),
        )))
        .unwrap();
        assert_eq!(s.groups["g"].master.port, 2);
        // Adding the new master's bare address refers to the same group.
        s.apply(Action::Add(vec![spec("h:2")])).unwrap();
        assert_eq!(s.groups.len(), 1);
        // A late record about the old master changes nothing but the history.
        s.apply(Action::FailoverEnd(record("g", Outcome::Failed, None)))
            .unwrap();
        assert_eq!(s.groups["g"].failed, None);
        let mut failed = record("g", Outcome::Failed, None);
        failed.old_master = Addr::parse("h:2").unwrap();
        s.apply(Action::FailoverEnd(failed)).unwrap();
        assert_eq!(s.groups["g"].failed.as_deref(), Some("why"));
        s.apply(Action::Add(vec![spec("g=h:2")])).unwrap();
        assert_eq!(s.groups["g"].failed, None, "re-adding clears failed");
        assert_eq!(s.last_failover("g").unwrap().outcome, Outcome::Failed);
    }
}
