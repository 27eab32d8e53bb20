//! The monitor: one thread that schedules checks, feeds their outcomes to each group's
//! down detector, and hands work to the failover worker.
//!
//! It owns all per-group watch state ([`Watch`]), so there are no locks on the check
//! path: the checker pool (`checker.rs`) sends outcomes back on a channel, the broker
//! signals changes to the groups on another, the failover worker reports finished jobs
//! on a third, and the API sends switchover requests on a fourth. Timers live in one
//! binary heap: watching 10,000 groups costs no thread per group. What a master check's
//! outcome leads to is `master_check.rs`; the rule for "down" is `detector.rs`.

mod checker;
mod detector;
mod master_check;
mod watch;

use crate::address::Addr;
use crate::broker::{Action, Broker, Group, Outcome, ReplicatedState};
use crate::observe::events::{Event, Events};
use crate::observe::metrics::Metrics;
use crate::observe::status::{Observations, WatchState};
use crate::redis::{ListedReplica, NodeOptions, RedisNode, Role};
use crate::shutdown::Shutdown;
use crate::worker::failover::{FailoverRequest, Resume};
use crate::worker::fence::{FenceJob, FenceResult};
use crate::worker::switchover::SwitchoverJob;
use crate::worker::switchover_request::{SwitchoverCommand, SwitchoverError};
use crate::worker::{WorkerJob, WorkerReport};
use checker::{CheckJob, CheckOutcome, CheckerPool};
use crossbeam_channel::{Receiver, Sender, select};
use detector::DownDetector;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use watch::{Phase, Watch};

pub use detector::{MIN_FAILED_CHECKS, Verdict};

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
    /// Timeouts and credentials for checks.
    pub node_options: NodeOptions,
    pub check_interval: Duration,
    pub max_down_time: Duration,
}

/// The channels the monitor listens and talks on.
pub struct MonitorChannels {
    pub worker_jobs: Sender<WorkerJob>,
    pub worker_reports: Receiver<WorkerReport>,
    /// Switchovers asked for through the API (`worker/switchover_request.rs`).
    pub switchovers: Receiver<SwitchoverCommand>,
    pub shutdown: Shutdown,
}

/// Starts the monitor thread (and, inside it, the checker pool).
pub fn spawn(ctx: MonitorContext, channels: MonitorChannels) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || {
            let MonitorChannels {
                worker_jobs,
                worker_reports,
                switchovers,
                shutdown,
            } = channels;
            Monitor::new(ctx, worker_jobs).run(worker_reports, switchovers, shutdown)
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Check,
    RefreshReplicas,
}

struct Monitor {
    ctx: MonitorContext,
    watches: HashMap<String, Watch>,
    timers: BinaryHeap<Reverse<(Instant, Timer, String, u64)>>,
    pool: CheckerPool,
    results: Receiver<CheckOutcome>,
    changes: Receiver<()>,
    next_watch_id: u64,
    worker: Sender<WorkerJob>,
}

impl Monitor {
    fn new(ctx: MonitorContext, worker: Sender<WorkerJob>) -> Monitor {
        let (results_tx, results) = crossbeam_channel::unbounded();
        let changes = ctx.broker.subscribe();
        Monitor {
            watches: HashMap::new(),
            timers: BinaryHeap::new(),
            pool: CheckerPool::start(results_tx),
            results,
            changes,
            next_watch_id: 0,
            worker,
            ctx,
        }
    }

    fn run(
        mut self,
        reports: Receiver<WorkerReport>,
        mut switchovers: Receiver<SwitchoverCommand>,
        shutdown: Shutdown,
    ) {
        let stop = shutdown.signal();
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
                recv(reports) -> report => match report {
                    Ok(report) => self.on_worker_report(report),
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
                recv(stop) -> _ => break,
                default(wait) => {}
            }
        }
        self.pool.shutdown();
    }

    /// Hands a job to the failover worker.
    fn send_to_worker(&self, group: &str, job: WorkerJob) {
        if self.worker.send(job).is_err() {
            log::error!("group {group}: the failover worker is gone");
        }
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
        let acting = self.ctx.broker.is_acting();
        let Some(watch) = self.watches.get_mut(group) else {
            return;
        };
        if watch.watch_id != watch_id || watch.phase != Phase::Watching {
            return;
        }
        if !acting {
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
                    replicas: watch.listed_addrs(),
                    nodes: watch.replica_nodes.clone(),
                    options: self.ctx.node_options.clone(),
                };
                self.pool.submit(job);
            }
            _ => {}
        }
    }

    /// The watch of `group` if it is the one `watch_id` names.
    fn current(&mut self, group: &str, watch_id: u64) -> Option<&mut Watch> {
        self.watches
            .get_mut(group)
            .filter(|w| w.watch_id == watch_id)
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
            CheckOutcome::Roles {
                group,
                watch_id,
                master,
                roles,
            } => self.on_fence_probed(&group, watch_id, master, roles),
            CheckOutcome::Replicas {
                group,
                watch_id,
                infos,
            } => {
                let Some(watch) = self.current(&group, watch_id) else {
                    return;
                };
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

    /// Known replicas that the master does not list were asked for their role; those
    /// that claim master go to the worker to be made replicas.
    fn on_fence_probed(
        &mut self,
        group: &str,
        watch_id: u64,
        master: Addr,
        roles: Vec<(Addr, crate::error::Result<Role>)>,
    ) {
        let acting = self.ctx.broker.is_acting();
        let Some(watch) = self.current(group, watch_id) else {
            return;
        };
        let mut claimants = Vec::new();
        for (addr, role) in roles {
            match role {
                Ok(Role::Master { .. }) => claimants.push(addr),
                Ok(_) => {}
                Err(e) => log::debug!("group {group}: known replica {addr} does not answer: {e}"),
            }
        }
        // Fencing changes a server's role without the cluster's say: only while this
        // daemon still acts (its lease may have run out since the check).
        if claimants.is_empty() || !acting {
            watch.fence_pending = false;
            return;
        }
        let job = FenceJob {
            group: group.to_string(),
            watch_id,
            master,
            targets: claimants,
        };
        self.send_to_worker(group, WorkerJob::Fence(job));
    }

    fn on_worker_report(&mut self, report: WorkerReport) {
        match report {
            WorkerReport::Attempted {
                group,
                watch_id,
                outcome,
            } => self.on_attempted(&group, watch_id, outcome),
            WorkerReport::Fenced { job, results } => self.on_fenced(job, results),
        }
    }

    fn on_attempted(&mut self, group: &str, watch_id: u64, outcome: Outcome) {
        let now = Instant::now();
        if let Some(watch) = self.current(group, watch_id) {
            // Checks resume with a whole new window, whatever the outcome. After a
            // success `sync` below replaces this watch (new master, new id) and after a
            // failure it stops it; either way this timer is then ignored. Should the
            // outcome not have reached the broker, the group is still watched.
            watch.phase = Phase::Watching;
            watch.detector.restart(now);
            if outcome != Outcome::Succeeded {
                log::info!("group {group}: watching master {} again", watch.master);
            }
            self.schedule(now, Timer::Check, group, watch_id);
        }
        self.sync();
    }

    /// Reports what fencing did; converted servers show up in the master's next `ROLE`.
    fn on_fenced(&mut self, job: FenceJob, results: Vec<(Addr, FenceResult)>) {
        let FenceJob {
            group,
            watch_id,
            master,
            ..
        } = job;
        if let Some(watch) = self.current(&group, watch_id) {
            watch.fence_pending = false;
        }
        for (addr, result) in results {
            match result {
                FenceResult::Converted => {
                    log::warn!(
                        "group {group}: {addr} claimed to be master; made it a replica of {master}"
                    );
                    self.ctx.events.publish(Event::ConvertedToReplica {
                        group: group.clone(),
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

    /// Hands a switchover of an idle, watched group to the failover worker; its watch
    /// stops checking (so it cannot start a failover) until the worker is done.
    fn on_switchover(&mut self, command: SwitchoverCommand) {
        if !self.ctx.broker.is_acting() {
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
        self.send_to_worker(&group, WorkerJob::Switchover(job));
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
        if self.ctx.broker.is_acting() {
            self.resume_unfinished(&state);
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
                performed_here: self.ctx.broker.is_acting(),
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
            self.send_to_worker(name, WorkerJob::Failover(request));
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
        let replicas = watch.replica_statuses();
        self.ctx.observed.update(group, |o| {
            if o.replicas != replicas {
                o.replicas = replicas;
            }
        });
    }
}
