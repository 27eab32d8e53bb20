//! The monitor: one thread that schedules checks, feeds their outcomes to each group's
//! down detector, and hands down masters to the failover worker.
//!
//! It owns all per-group watch state, so there are no locks on the check path: the
//! checker pool sends outcomes back on a channel, the broker signals changes to the
//! groups on another, and the failover worker reports finished attempts on a third.
//! Timers live in one binary heap: watching 10,000 groups costs no thread per group.

use crate::address::Addr;
use crate::broker::{Action, Broker, Group, Outcome, ReplicatedState};
use crate::checker::{CheckJob, CheckOutcome, CheckerPool, FenceResult, ReplicaConnections};
use crate::detector::{DownDetector, Verdict};
use crate::events::{Event, Events};
use crate::failover::{FailoverDone, FailoverRequest, Resume, WorkerJob};
use crate::metrics::Metrics;
use crate::redis_node::{ListedReplica, NodeOptions, RedisNode, ReplicationInfo, Role};
use crate::status::{Observations, ReplicaStatus, WatchState, unix_ms};
use crate::switchover::{SwitchoverCommand, SwitchoverError, SwitchoverJob};
use crossbeam_channel::{Receiver, Sender, select};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// How often the replicas' own `INFO` is read for the API (Sentinel reads it every 10 s).
pub const REPLICA_REFRESH: Duration = Duration::from_secs(10);
/// Timers due within this much of each other fire together: with thousands of groups
/// spread over the interval, the monitor then wakes a few hundred times a second rather
/// than once per check.
pub const TIMER_SLACK: Duration = Duration::from_millis(2);
/// The monitor loop turns at least this often, beating its heartbeat (which the systemd
/// watchdog and `/metrics` read) even when no check is due.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_millis(500);

/// What the monitor needs.
pub struct MonitorContext {
    pub broker: Arc<dyn Broker>,
    pub observed: Arc<Observations>,
    pub metrics: Arc<Metrics>,
    pub events: Arc<Events>,
    pub node_options: NodeOptions,
    pub check_interval: Duration,
    pub max_down_time: Duration,
}

/// The channels the monitor listens and talks on.
pub struct MonitorChannels {
    pub failover_requests: Sender<WorkerJob>,
    pub failover_done: Receiver<FailoverDone>,
    /// Switchovers asked for through the API (see `switchover.rs`).
    pub switchovers: Receiver<SwitchoverCommand>,
    pub shutdown: Receiver<()>,
}

/// Starts the monitor thread (and, inside it, the checker pool).
pub fn spawn_monitor(
    ctx: MonitorContext,
    channels: MonitorChannels,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || {
            Monitor::new(ctx, channels.failover_requests).run(
                channels.failover_done,
                channels.switchovers,
                channels.shutdown,
            )
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Watching,
    FailingOver,
    /// Not checked: the master reports being a replica, or a failover failed.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Check,
    RefreshReplicas,
}

/// Everything the monitor knows about one group.
struct Watch {
    master: Addr,
    /// The replicated [`Group::revision`] this watch was made for.
    revision: u64,
    /// Names this watch among all the monitor has made (never reused): timers, check
    /// outcomes and failover results of an older watch of the group are ignored.
    watch_id: u64,
    phase: Phase,
    detector: DownDetector,
    master_node: Arc<Mutex<RedisNode>>,
    replica_nodes: Arc<Mutex<ReplicaConnections>>,
    check_in_flight: bool,
    /// A replica refresh is queued or running (one chain per watch, never more).
    refresh_pending: bool,
    listed: Vec<ListedReplica>,
    /// The replicas as recorded in the replicated state.
    known: Vec<Addr>,
    /// `+sdown` was published and `-sdown` not yet.
    reported_down: bool,
    /// A fencing job for this watch is queued or running.
    fence_pending: bool,
    /// The master's replication offset in its last `ROLE` reply.
    master_offset: i64,
    infos: HashMap<Addr, Option<ReplicationInfo>>,
}

struct Monitor {
    ctx: MonitorContext,
    watches: HashMap<String, Watch>,
    timers: BinaryHeap<Reverse<(Instant, Timer, String, u64)>>,
    pool: CheckerPool,
    results: Receiver<CheckOutcome>,
    changes: Receiver<()>,
    next_watch_id: u64,
    failover_requests: Sender<WorkerJob>,
}

impl Monitor {
    fn new(ctx: MonitorContext, failover_requests: Sender<WorkerJob>) -> Monitor {
        let (results_tx, results) = crossbeam_channel::unbounded();
        let changes = ctx.broker.subscribe();
        Monitor {
            watches: HashMap::new(),
            timers: BinaryHeap::new(),
            pool: CheckerPool::start(results_tx),
            results,
            changes,
            next_watch_id: 0,
            failover_requests,
            ctx,
        }
    }

    fn run(
        mut self,
        failover_done: Receiver<FailoverDone>,
        mut switchovers: Receiver<SwitchoverCommand>,
        shutdown: Receiver<()>,
    ) {
        self.sync();
        loop {
            self.ctx.metrics.monitor_heartbeat().beat();
            let now = Instant::now();
            self.fire_due_timers(now);
            let wait = self
                .timers
                .peek()
                .map(|Reverse((at, ..))| at.saturating_duration_since(now))
                .unwrap_or(HEARTBEAT_PERIOD)
                .min(HEARTBEAT_PERIOD);
            select! {
                recv(self.results) -> outcome => {
                    if let Ok(outcome) = outcome {
                        self.on_outcome(outcome);
                    }
                    // Take every outcome already waiting before sleeping again.
                    while let Ok(outcome) = self.results.try_recv() {
                        self.on_outcome(outcome);
                    }
                }
                recv(failover_done) -> done => match done {
                    Ok(done) => self.on_failover_done(done),
                    Err(_) => {
                        log::error!("the failover worker has stopped; monitoring stops too");
                        break;
                    }
                },
                recv(self.changes) -> _ => self.sync(),
                recv(switchovers) -> command => match command {
                    Ok(command) => self.on_switchover(command),
                    // The API is gone (an embedder dropped it): nothing more will come.
                    Err(_) => switchovers = crossbeam_channel::never(),
                },
                recv(shutdown) -> _ => break,
                default(wait) => {}
            }
        }
        self.pool.shutdown();
    }

    fn schedule(&mut self, at: Instant, timer: Timer, group: &str, watch_id: u64) {
        self.timers
            .push(Reverse((at, timer, group.to_string(), watch_id)));
    }

    fn fire_due_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, ..))) = self.timers.peek() {
            if *at > now + TIMER_SLACK {
                break;
            }
            let Some(Reverse((_, timer, group, watch_id))) = self.timers.pop() else {
                break;
            };
            self.fire(timer, &group, watch_id, now);
        }
    }

    fn fire(&mut self, timer: Timer, group: &str, watch_id: u64, now: Instant) {
        let leader = self.ctx.broker.is_leader();
        let Some(watch) = self.watches.get_mut(group) else {
            return;
        };
        if watch.watch_id != watch_id || watch.phase != Phase::Watching {
            return;
        }
        if !leader {
            // Followers do not check; look again in one interval.
            watch.detector.restart(now);
            self.ctx
                .observed
                .update(group, |o| o.state = WatchState::Follower);
            let interval = self.ctx.check_interval;
            self.schedule(now + interval, timer, group, watch_id);
            return;
        }
        match timer {
            Timer::Check if !watch.check_in_flight => {
                watch.check_in_flight = true;
                let job = CheckJob::Master {
                    group: group.to_string(),
                    watch_id,
                    node: watch.master_node.clone(),
                };
                self.pool.submit(job);
            }
            Timer::RefreshReplicas => {
                let job = CheckJob::Replicas {
                    group: group.to_string(),
                    watch_id,
                    replicas: watch.listed.iter().map(|r| r.addr.clone()).collect(),
                    nodes: watch.replica_nodes.clone(),
                    options: self.ctx.node_options.clone(),
                };
                self.pool.submit(job);
            }
            _ => {}
        }
    }

    fn on_outcome(&mut self, outcome: CheckOutcome) {
        match outcome {
            CheckOutcome::Master {
                group,
                watch_id,
                started,
                finished,
                role,
            } => self.on_master_checked(&group, watch_id, started, finished, role),
            CheckOutcome::Fence {
                group,
                watch_id,
                master,
                results,
            } => self.on_fenced(&group, watch_id, &master, results),
            CheckOutcome::Replicas {
                group,
                watch_id,
                infos,
            } => {
                let Some(watch) = self.watches.get_mut(&group) else {
                    return;
                };
                if watch.watch_id != watch_id {
                    return;
                }
                // The chain goes on: refresh_pending stays set until the next one runs.
                for (addr, info) in infos {
                    if let Err(e) = &info {
                        log::debug!("group {group}: replica INFO failed: {e}");
                    }
                    watch.infos.insert(addr, info.ok());
                }
                self.publish_replicas(&group);
                self.schedule(
                    Instant::now() + REPLICA_REFRESH,
                    Timer::RefreshReplicas,
                    &group,
                    watch_id,
                );
            }
        }
    }

    fn on_master_checked(
        &mut self,
        group: &str,
        watch_id: u64,
        started: Instant,
        finished: Instant,
        role: crate::error::Result<Role>,
    ) {
        let interval = self.ctx.check_interval;
        let Some(watch) = self.watches.get_mut(group) else {
            return;
        };
        if watch.watch_id != watch_id {
            return;
        }
        watch.check_in_flight = false;
        let ok = matches!(role, Ok(Role::Master { .. }));
        self.ctx
            .metrics
            .on_check(group, finished.saturating_duration_since(started), ok);
        if watch.phase != Phase::Watching {
            return;
        }
        let failure = match role {
            Ok(Role::Master { replicas, offset }) => {
                watch.master_offset = offset;
                let failures = watch.detector.failures_in_a_row();
                if failures > 0 {
                    log::info!(
                        "group {group}: master {} answers again after {failures} failed check(s)",
                        watch.master
                    );
                }
                watch.detector.on_success(finished);
                if watch.reported_down {
                    watch.reported_down = false;
                    self.ctx.events.publish(Event::MasterUp {
                        group: group.to_string(),
                        master: watch.master.clone(),
                    });
                }
                let changed = !same_addresses(&watch.listed, &replicas);
                watch.listed = replicas;
                let listed: Vec<Addr> = watch.listed.iter().map(|r| r.addr.clone()).collect();
                // Known replicas are never forgotten (as in Sentinel): one that is down
                // now is fenced when it comes back, and re-pointed at the next failover.
                let new: Vec<Addr> = listed
                    .iter()
                    .filter(|a| !watch.known.contains(a))
                    .cloned()
                    .collect();
                if !new.is_empty() {
                    watch.known.extend(new);
                    self.ctx.broker.propose_detached(Action::KnownReplicas {
                        group: group.to_string(),
                        master: watch.master.clone(),
                        replicas: watch.known.clone(),
                    });
                }
                let fence: Vec<Addr> = watch
                    .known
                    .iter()
                    .filter(|a| !listed.contains(a) && **a != watch.master)
                    .cloned()
                    .collect();
                // Fencing changes a server's role without the cluster's say: only while
                // this daemon still acts (its lease may have run out since the check).
                if !fence.is_empty() && !watch.fence_pending && self.ctx.broker.is_leader() {
                    watch.fence_pending = true;
                    self.pool.submit(CheckJob::Fence {
                        group: group.to_string(),
                        watch_id,
                        master: watch.master.clone(),
                        targets: fence,
                        options: self.ctx.node_options.clone(),
                    });
                }
                self.ctx.observed.update(group, |o| {
                    o.state = WatchState::Ok;
                    o.failing_since_ms = None;
                    o.last_error = None;
                });
                if changed && !watch.refresh_pending {
                    watch.refresh_pending = true;
                    self.schedule(Instant::now(), Timer::RefreshReplicas, group, watch_id);
                }
                self.publish_replicas(group);
                self.schedule(started + interval, Timer::Check, group, watch_id);
                return;
            }
            Ok(Role::Replica { master, state }) => {
                log::warn!(
                    "group {group}: {} reports role slave of {master} (link {state}), not master; it is no longer watched",
                    watch.master
                );
                watch.phase = Phase::Stopped;
                self.ctx.observed.update(group, |o| {
                    o.state = WatchState::NotMaster;
                    o.replicating_from = Some(master);
                });
                return;
            }
            Ok(Role::Other(role)) => format!("{} reports role {role}, not master", watch.master),
            Err(e) => e.to_string(),
        };
        let verdict = watch.detector.on_failure(finished);
        let failures = watch.detector.failures_in_a_row();
        if failures == 1 {
            log::warn!("group {group}: check of master failed: {failure}");
        } else {
            log::debug!("group {group}: check {failures} of master failed: {failure}");
        }
        let failing_since = watch.detector.first_failure().map(to_unix_ms);
        let state = if verdict == Verdict::Down {
            WatchState::Down
        } else {
            WatchState::Suspect
        };
        self.ctx.observed.update(group, |o| {
            o.state = state;
            o.failing_since_ms = failing_since;
            o.last_error = Some(failure);
        });
        match verdict {
            Verdict::Suspect { recheck_at } => {
                let at = (started + interval).min(recheck_at);
                self.schedule(at, Timer::Check, group, watch_id);
            }
            Verdict::Down => {
                log::error!(
                    "group {group}: master {} is down: no successful check for {} ms, {failures} failed checks in a row",
                    watch.master,
                    watch.detector.last_success().elapsed().as_millis()
                );
                watch.phase = Phase::FailingOver;
                watch.reported_down = true;
                for event in [
                    Event::MasterDown {
                        group: group.to_string(),
                        master: watch.master.clone(),
                    },
                    Event::FailoverNeeded {
                        group: group.to_string(),
                        master: watch.master.clone(),
                    },
                ] {
                    self.ctx.events.publish(event);
                }
                let request = FailoverRequest {
                    group: group.to_string(),
                    master: watch.master.clone(),
                    replicas: watch.listed.iter().map(|r| r.addr.clone()).collect(),
                    last_success: watch.detector.last_success(),
                    master_offset: watch.master_offset,
                    watch_id,
                    resume: None,
                };
                if self
                    .failover_requests
                    .send(WorkerJob::Failover(request))
                    .is_err()
                {
                    log::error!("group {group}: the failover worker is gone");
                }
            }
        }
    }

    /// Hands a switchover of an idle, watched group to the failover worker; its watch
    /// stops checking (so it cannot start a failover) until the worker is done.
    fn on_switchover(&mut self, command: SwitchoverCommand) {
        if !self.ctx.broker.is_leader() {
            let leader = self.ctx.broker.cluster().leader.and_then(|l| l.http_addr);
            return command.refuse(SwitchoverError::NotLeader { leader });
        }
        let group = command.request.group.clone();
        let Some(watch) = self.watches.get_mut(&group) else {
            return command.refuse(SwitchoverError::NotFound(format!(
                "no monitored group {group:?}"
            )));
        };
        let busy = match watch.phase {
            Phase::Watching => None,
            Phase::FailingOver => Some("a failover or switchover of the group is under way"),
            Phase::Stopped => Some(
                "the group is not watched (its master reports being a replica, or a failover failed); add it again first",
            ),
        };
        if let Some(why) = busy {
            return command.refuse(SwitchoverError::Conflict(why.into()));
        }
        watch.phase = Phase::FailingOver;
        let job = SwitchoverJob {
            command,
            master: watch.master.clone(),
            watch_id: watch.watch_id,
        };
        if self
            .failover_requests
            .send(WorkerJob::Switchover(job))
            .is_err()
        {
            log::error!("group {group}: the failover worker is gone");
        }
    }

    fn on_failover_done(&mut self, done: FailoverDone) {
        let now = Instant::now();
        let current = self
            .watches
            .get_mut(&done.group)
            .filter(|w| w.watch_id == done.watch_id);
        if let Some(watch) = current {
            // Checks resume with a whole new window, whatever the outcome. After a
            // success `sync` below replaces this watch (new master, new id) and after a
            // failure it stops it; either way this timer is then ignored. Should the
            // outcome not have reached the broker, the group is still watched.
            watch.phase = Phase::Watching;
            watch.detector.restart(now);
            if done.outcome != Outcome::Succeeded {
                log::info!(
                    "group {}: watching master {} again",
                    done.group,
                    watch.master
                );
            }
            let watch_id = watch.watch_id;
            self.schedule(now, Timer::Check, &done.group, watch_id);
        }
        self.sync();
    }

    /// Brings the watches in line with the broker's groups.
    fn sync(&mut self) {
        let state = self.ctx.broker.state();
        let removed: Vec<String> = self
            .watches
            .keys()
            .filter(|name| !state.groups.contains_key(*name))
            .cloned()
            .collect();
        for name in removed {
            log::info!("group {name}: no longer monitored");
            self.watches.remove(&name);
            self.ctx.observed.lock().remove(&name);
        }
        for group in state.groups.values() {
            let mut switched_from = None;
            let fresh = match self.watches.get_mut(&group.name) {
                None => true,
                Some(w) if w.phase == Phase::FailingOver => false,
                Some(w) if w.revision != group.revision => {
                    if w.master != group.master {
                        switched_from = Some(w.master.clone());
                    }
                    true
                }
                Some(w) => {
                    w.known = group.known_replicas.clone();
                    if group.failed.is_some() && w.phase == Phase::Watching {
                        w.phase = Phase::Stopped;
                    }
                    false
                }
            };
            if let Some(old) = switched_from {
                self.announce_switch(&state, group, &old);
            }
            if fresh {
                self.watch(group);
            }
        }
        if self.ctx.broker.is_leader() {
            self.resume_unfinished(&state);
        }
    }

    /// Reports what fencing did; converted servers show up in the master's next `ROLE`.
    fn on_fenced(
        &mut self,
        group: &str,
        watch_id: u64,
        master: &Addr,
        results: Vec<(Addr, FenceResult)>,
    ) {
        if let Some(watch) = self
            .watches
            .get_mut(group)
            .filter(|w| w.watch_id == watch_id)
        {
            watch.fence_pending = false;
        }
        for (addr, result) in results {
            match result {
                FenceResult::Converted => {
                    log::warn!(
                        "group {group}: {addr} claimed to be master; made it a replica of {master}"
                    );
                    self.ctx.events.publish(Event::ConvertedToReplica {
                        group: group.to_string(),
                        addr,
                        master: master.clone(),
                    });
                }
                FenceResult::Failed(e) => log::warn!(
                    "group {group}: {addr} claims to be master and could not be made a replica of {master}: {e}"
                ),
                FenceResult::Unreachable(e) => {
                    log::debug!("group {group}: known replica {addr} does not answer: {e}")
                }
                FenceResult::NotMaster => {}
            }
        }
    }

    /// Every daemon tells its subscribers when a failover moved a group's master, from
    /// the replicated state: a follower announces it as soon as it applies the change.
    fn announce_switch(&self, state: &ReplicatedState, group: &Group, old: &Addr) {
        let by_failover = state.last_failover(&group.name).is_some_and(|r| {
            r.outcome == Outcome::Succeeded
                && r.old_master == *old
                && r.new_master.as_ref() == Some(&group.master)
        });
        if by_failover {
            self.ctx.events.publish(Event::SwitchMaster {
                group: group.name.clone(),
                old: old.clone(),
                new: group.master.clone(),
                performed_here: self.ctx.broker.is_leader(),
            });
        }
    }

    /// A new leader finishes the failovers an earlier one began and did not end.
    fn resume_unfinished(&mut self, state: &ReplicatedState) {
        for (name, begun) in &state.in_progress {
            let Action::FailoverBegin {
                old_master,
                new_master,
                replicas,
                started_at_ms,
                ..
            } = begun
            else {
                continue;
            };
            let Some(watch) = self.watches.get_mut(name) else {
                continue;
            };
            // Our own failover under way, or a master changed since: nothing to finish.
            if watch.phase == Phase::FailingOver || watch.master != *old_master {
                continue;
            }
            log::warn!(
                "group {name}: failover to {new_master} was begun by an earlier leader and not ended; finishing it"
            );
            watch.phase = Phase::FailingOver;
            let request = FailoverRequest {
                group: name.clone(),
                master: old_master.clone(),
                replicas: replicas.clone(),
                last_success: watch.detector.last_success(),
                master_offset: watch.master_offset,
                watch_id: watch.watch_id,
                resume: Some(Resume {
                    new_master: new_master.clone(),
                    started_at_ms: *started_at_ms,
                }),
            };
            if self
                .failover_requests
                .send(WorkerJob::Failover(request))
                .is_err()
            {
                log::error!("group {name}: the failover worker is gone");
            }
        }
    }

    fn watch(&mut self, group: &Group) {
        let now = Instant::now();
        // Same master (a failed group added again): keep the replicas it listed, so a
        // master that is still down can be failed over without a fresh ROLE reply.
        // Else start from the replicas recorded in the replicated state: a daemon that
        // takes over can then fail over a master it never saw alive.
        let listed = self
            .watches
            .get(&group.name)
            .filter(|w| w.master == group.master)
            .map(|w| w.listed.clone())
            .unwrap_or_else(|| {
                group
                    .known_replicas
                    .iter()
                    .map(|addr| ListedReplica {
                        addr: addr.clone(),
                        offset: 0,
                    })
                    .collect()
            });
        let watch_id = self.next_watch_id;
        self.next_watch_id += 1;
        let phase = if group.failed.is_some() {
            Phase::Stopped
        } else {
            log::info!("group {}: watching master {}", group.name, group.master);
            Phase::Watching
        };
        self.watches.insert(
            group.name.clone(),
            Watch {
                master: group.master.clone(),
                revision: group.revision,
                watch_id,
                phase,
                detector: DownDetector::new(self.ctx.max_down_time, now),
                master_node: Arc::new(Mutex::new(RedisNode::new(
                    group.master.clone(),
                    self.ctx.node_options.clone(),
                ))),
                replica_nodes: Arc::new(Mutex::new(HashMap::new())),
                check_in_flight: false,
                refresh_pending: false,
                listed,
                known: group.known_replicas.clone(),
                reported_down: false,
                fence_pending: false,
                master_offset: 0,
                infos: HashMap::new(),
            },
        );
        self.ctx.observed.update(&group.name, |o| {
            *o = Default::default();
        });
        if phase == Phase::Watching {
            let first = now + self.spread(watch_id);
            self.schedule(first, Timer::Check, &group.name, watch_id);
        }
    }

    /// Where in the interval a new watch's checks fall. Groups added together (at start,
    /// or by one `POST /master` with thousands of masters) would otherwise be checked in
    /// one burst every interval; the golden-ratio sequence spreads them evenly. The
    /// first group of a daemon is checked at once.
    fn spread(&self, watch_id: u64) -> Duration {
        const GOLDEN: f64 = 0.618_033_988_749_895;
        let phase = (watch_id as f64 * GOLDEN).fract();
        self.ctx.check_interval.mul_f64(phase)
    }

    /// Publishes the replicas of a group, merging `ROLE` offsets with `INFO` details.
    fn publish_replicas(&self, group: &str) {
        let Some(watch) = self.watches.get(group) else {
            return;
        };
        let replicas: Vec<ReplicaStatus> = watch
            .listed
            .iter()
            .map(|listed| {
                let info = watch.infos.get(&listed.addr).cloned().flatten();
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
            .collect();
        self.ctx.observed.update(group, |o| {
            if o.replicas != replicas {
                o.replicas = replicas;
            }
        });
    }
}

fn same_addresses(a: &[ListedReplica], b: &[ListedReplica]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.addr == y.addr)
}

/// Converts a monotonic instant in the past to Unix milliseconds.
fn to_unix_ms(at: Instant) -> u64 {
    unix_ms(SystemTime::now() - at.elapsed())
}
