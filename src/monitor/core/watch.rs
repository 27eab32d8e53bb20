//! [`Watch`]: everything the monitor knows about one group, and the small rules that
//! need nothing but that knowledge.

use super::detector::{DownDetector, Verdict};
use crate::address::Addr;
use crate::broker::Group;
use crate::observe::metrics::CheckCounts;
use crate::observe::status::ReplicaStatus;
use crate::redis::{ListedReplica, ReplicationInfo};
use crate::worker::failover::{FailoverRequest, Resume};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a watch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Watching,
    /// The failover worker has the group (a failover or a switchover).
    FailingOver,
    /// Not checked: the master reports being a replica.
    Stopped,
}

/// Everything the monitor knows about one group. Its fields are its own: the core
/// changes a watch only through the steps below, each named for what happened.
pub struct Watch {
    master: Addr,
    /// The replicated `Group::revision` this watch was made for.
    revision: u64,
    /// Names this watch among all the monitor has made (never reused): timers, check
    /// outcomes and worker reports for an older watch of the group are ignored.
    watch_id: u64,
    phase: Phase,
    /// A failover of this group failed (the replicated `Group::failed`): it is still
    /// checked, and an old master that comes back is still fenced, but no automatic
    /// failover begins until the group is added again.
    failover_off: Option<String>,
    detector: DownDetector,
    check_in_flight: bool,
    /// The link to the master is down (closed by the server, or the last check failed).
    link_down: bool,
    /// A replica refresh is scheduled or running (one chain per watch, never more).
    refresh_pending: bool,
    /// Replica `INFO` probes of the current refresh still out.
    refresh_outstanding: usize,
    /// The replicas the master listed in its last `ROLE` reply.
    listed: Vec<ListedReplica>,
    /// The replicas as recorded in the replicated state.
    known: Vec<Addr>,
    /// This daemon finds the master down (`s_down`): `+sdown` was published and
    /// `-sdown` not yet.
    reported_down: bool,
    /// Daemons (this one included) that find the master down, as last counted.
    down_votes: usize,
    /// The vote count last logged while waiting for a quorum.
    waiting_for_quorum: Option<usize>,
    /// Servers being probed or fenced now (one probe or job per server at a time).
    fence_pending: HashSet<Addr>,
    /// The master's replication offset in its last `ROLE` reply.
    master_offset: i64,
    infos: HashMap<Addr, Option<ReplicationInfo>>,
    /// The master got the bounded-loss settings (or needs none) since it last failed a
    /// check or closed its link: a restart loses a `CONFIG SET` where the server has no
    /// config file, so a master that was gone is sent them again.
    configured: bool,
    /// After `CONFIG SET` failed: not sent again before this.
    configure_not_before: Option<Instant>,
    /// Why the last automatic failover was held back (pause, block), until the master
    /// answers again.
    held: Option<String>,
    /// This group's check counters in the metrics.
    counts: Arc<CheckCounts>,
    /// The observation already says "ok, no error": a healthy check needs not write it.
    observed_ok: bool,
    /// The replica list as last published in the observation.
    published_replicas: Vec<ReplicaStatus>,
}

/// What a master's answer changed (see [`Watch::answered`]).
pub struct Answered {
    /// Failed checks in a row before this answer.
    pub failures_before: u32,
    /// Replicas never known before: the full known list to record, if any.
    pub known_grew: Option<Vec<Addr>>,
    /// A refresh of the replicas' `INFO` is to be scheduled.
    pub refresh: bool,
    /// The observation must say "ok" again.
    pub observe_ok: bool,
}

impl Watch {
    /// A watch of `group`'s master, starting its window at `now`, with the replicas
    /// `listed` (the master's last list, or the replicated state's known replicas).
    pub fn new(
        group: &Group,
        watch_id: u64,
        listed: Vec<ListedReplica>,
        counts: Arc<CheckCounts>,
        max_down_time: Duration,
        now: Instant,
    ) -> Watch {
        Watch {
            master: group.master.clone(),
            revision: group.revision,
            watch_id,
            phase: Phase::Watching,
            failover_off: group.failed.clone(),
            detector: DownDetector::new(max_down_time, now),
            check_in_flight: false,
            link_down: false,
            refresh_pending: false,
            refresh_outstanding: 0,
            listed,
            known: group.known_replicas.clone(),
            reported_down: false,
            down_votes: 0,
            waiting_for_quorum: None,
            fence_pending: HashSet::new(),
            master_offset: 0,
            infos: HashMap::new(),
            configured: false,
            configure_not_before: None,
            held: None,
            counts,
            observed_ok: false,
            published_replicas: Vec::new(),
        }
    }

    pub fn master(&self) -> &Addr {
        &self.master
    }

    pub fn watch_id(&self) -> u64 {
        self.watch_id
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn detector(&self) -> &DownDetector {
        &self.detector
    }

    pub fn counts(&self) -> &CheckCounts {
        &self.counts
    }

    /// Why automatic failover is off for this group, if it is.
    pub fn failover_off(&self) -> Option<&str> {
        self.failover_off.as_deref()
    }

    /// Whether a failover may begin (watched, and not switched off by a failed one).
    pub fn may_fail_over(&self) -> bool {
        self.phase == Phase::Watching && self.failover_off.is_none()
    }

    /// The replicas the master listed last (kept when the group is added again).
    pub fn listed(&self) -> &[ListedReplica] {
        &self.listed
    }

    /// Takes the replicated state's word for the known replicas and the failed flag.
    pub fn follow_state(&mut self, group: &Group) {
        if self.known != group.known_replicas {
            self.known = group.known_replicas.clone();
        }
        if self.failover_off != group.failed {
            self.failover_off = group.failed.clone();
        }
    }

    /// A regular check is due: true (and the check is under way) unless one is out
    /// already or the group is not watched.
    pub fn start_check(&mut self) -> bool {
        let start = self.phase == Phase::Watching && !self.check_in_flight;
        self.check_in_flight |= start;
        start
    }

    /// A check came back; false if the group is no longer watched.
    pub fn check_returned(&mut self) -> bool {
        self.check_in_flight = false;
        self.phase == Phase::Watching
    }

    /// Whether the master is checked again when its link closes (watched, no check
    /// out).
    pub fn recheck_on_close(&self) -> bool {
        self.phase == Phase::Watching && !self.check_in_flight
    }

    /// Records the link's state; true when that changed.
    pub fn set_link(&mut self, up: bool) -> bool {
        let changed = self.link_down == up;
        self.link_down = !up;
        changed
    }

    /// A refresh of the listed replicas begins: their addresses.
    pub fn start_refresh(&mut self) -> Vec<Addr> {
        let replicas: Vec<Addr> = self.listed.iter().map(|r| r.addr.clone()).collect();
        self.refresh_outstanding = replicas.len();
        replicas
    }

    /// One replica's `INFO` of the refresh; true when it was the last one.
    pub fn replica_info(&mut self, addr: Addr, info: Option<ReplicationInfo>) -> bool {
        self.infos.insert(addr, info);
        self.refresh_outstanding = self.refresh_outstanding.saturating_sub(1);
        self.refresh_outstanding == 0
    }

    /// The master answered as master at `at`, with its offset and replicas.
    pub fn answered(&mut self, at: Instant, offset: i64, replicas: Vec<ListedReplica>) -> Answered {
        self.master_offset = offset;
        self.held = None;
        let failures_before = self.detector.failures_in_a_row();
        self.detector.on_success(at);
        let changed = !same_addresses(&self.listed, &replicas);
        self.listed = replicas;
        let new: Vec<Addr> = self
            .listed
            .iter()
            .map(|r| r.addr.clone())
            .filter(|a| !self.known.contains(a))
            .collect();
        // Known replicas are never forgotten (as in Sentinel): one that is down now is
        // fenced when it comes back, and re-pointed at the next failover.
        let grew = !new.is_empty();
        self.known.extend(new);
        let refresh = changed && !self.refresh_pending;
        self.refresh_pending |= refresh;
        let observe_ok = !self.observed_ok;
        self.observed_ok = true;
        Answered {
            failures_before,
            known_grew: grew.then(|| self.known.clone()),
            refresh,
            observe_ok,
        }
    }

    /// A check failed at `at`: the detector's verdict.
    pub fn failed(&mut self, at: Instant) -> Verdict {
        self.observed_ok = false;
        self.link_closed();
        self.detector.on_failure(at)
    }

    /// The master says it replicates from another server: no longer checked.
    pub fn stop(&mut self) {
        self.phase = Phase::Stopped;
        self.observed_ok = false;
    }

    /// The worker takes the group (a failover or a switchover).
    pub fn hand_to_worker(&mut self) {
        self.phase = Phase::FailingOver;
    }

    /// The worker takes the group to fail its master over (or to finish a failover an
    /// earlier leader began, `resume`), electing from and re-pointing `replicas`.
    pub fn hand_over_failover(
        &mut self,
        group: &str,
        replicas: Vec<Addr>,
        resume: Option<Resume>,
    ) -> FailoverRequest {
        self.phase = Phase::FailingOver;
        FailoverRequest {
            group: group.to_string(),
            master: self.master.clone(),
            replicas,
            last_success: self.detector.last_answer(),
            master_offset: self.master_offset,
            watch_id: self.watch_id,
            resume,
            manual: false,
        }
    }

    /// The worker's attempt ended: checks resume at `now` with a whole new window.
    pub fn attempt_ended(&mut self, now: Instant) {
        self.phase = Phase::Watching;
        self.detector.restart(now);
        // The worker wrote the observation meanwhile (failing over, switching over).
        self.observed_ok = false;
    }

    /// Whether the bounded-loss settings are to be sent now (then not again until the
    /// master fails a check, closes its link, or the worker says they failed).
    pub fn take_configure(&mut self, now: Instant) -> bool {
        if self.configured || self.configure_not_before.is_some_and(|t| now < t) {
            return false;
        }
        self.configured = true;
        true
    }

    /// The worker could not set them: again in `retry_after`, or at once once the
    /// master has failed a check or closed its link.
    pub fn configure_failed(&mut self, now: Instant, retry_after: Duration) {
        self.configured = false;
        self.configure_not_before = Some(now + retry_after);
    }

    /// Notes why a failover is held back; true when that is news (to log it once).
    pub fn set_held(&mut self, why: Option<String>) -> bool {
        let changed = self.held != why;
        self.held = why;
        changed
    }

    /// The master's link closed (it may have restarted): the settings are owed again.
    pub fn link_closed(&mut self) {
        self.configured = false;
        self.configure_not_before = None;
    }

    /// Known replicas the master does not list (nor is) and that are not being looked
    /// at already: they may claim master. They are being looked at from now on.
    pub fn take_fence_targets(&mut self) -> Vec<Addr> {
        let targets: Vec<Addr> = self
            .known
            .iter()
            .filter(|a| !self.listed.iter().any(|l| l.addr == **a) && **a != self.master)
            .filter(|a| !self.fence_pending.contains(*a))
            .cloned()
            .collect();
        self.fence_pending.extend(targets.iter().cloned());
        targets
    }

    /// A server fencing looked at is no longer being looked at.
    pub fn fence_done(&mut self, addr: &Addr) {
        self.fence_pending.remove(addr);
    }

    /// This daemon finds the master down: true the first time (`+sdown`).
    pub fn report_down(&mut self) -> bool {
        let first = !self.reported_down;
        self.reported_down = true;
        first
    }

    /// The master answers again: true if it had been reported down (`-sdown`).
    pub fn report_up(&mut self) -> bool {
        self.waiting_for_quorum = None;
        let was = self.reported_down;
        self.reported_down = false;
        was
    }

    /// `votes` daemons find the master down; true when that changed.
    pub fn set_down_votes(&mut self, votes: usize) -> bool {
        let changed = self.down_votes != votes;
        self.down_votes = votes;
        changed
    }

    /// Records whether the quorum was reached; true when the count while waiting is
    /// new (and worth a log line).
    pub fn waiting_for(&mut self, votes: usize, agreed: bool) -> bool {
        let new = !agreed && self.waiting_for_quorum != Some(votes);
        self.waiting_for_quorum = (!agreed).then_some(votes);
        new
    }

    /// The replicas' statuses for the API, when they changed since last published.
    pub fn replicas_to_publish(&mut self) -> Option<Vec<ReplicaStatus>> {
        let replicas = self.replica_statuses();
        if replicas == self.published_replicas {
            return None;
        }
        self.published_replicas = replicas.clone();
        Some(replicas)
    }

    /// The replicas' statuses for the API: `ROLE` offsets merged with `INFO` details.
    fn replica_statuses(&self) -> Vec<ReplicaStatus> {
        self.listed
            .iter()
            .map(|listed| {
                let info = self.infos.get(&listed.addr).cloned().flatten();
                ReplicaStatus {
                    addr: listed.addr.clone(),
                    offset: listed.offset,
                    link: match &info {
                        Some(i) if i.link_up => "up",
                        Some(_) => "down",
                        None => "unknown",
                    },
                    priority: info.map(|i| i.priority),
                }
            })
            .collect()
    }

    /// The replicas a failover of this master elects from and re-points: those it
    /// listed last, then the known ones from the replicated state (listed earlier, or
    /// added by fencing and failovers), each once and never the master itself. A daemon
    /// that never saw the master alive (a new leader) knows them from the state alone.
    pub fn failover_replicas(&self) -> Vec<Addr> {
        let mut replicas: Vec<Addr> = Vec::new();
        let listed = self.listed.iter().map(|r| &r.addr);
        for addr in listed.chain(&self.known) {
            if *addr != self.master && !replicas.contains(addr) {
                replicas.push(addr.clone());
            }
        }
        replicas
    }
}

fn same_addresses(a: &[ListedReplica], b: &[ListedReplica]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.addr == y.addr)
}
