//! The monitor: one thread that schedules checks, feeds their outcomes to each group's
//! down detector, and hands work to the failover worker.
//!
//! It owns all per-group watch state (`Watch`), so there are no locks on the check
//! path: the checker threads (`checker/`) send their reports back on a channel, the
//! broker signals changes to the groups on another, the failover worker reports
//! finished jobs on a third, and the API sends switchover requests on a fourth. Timers
//! live in one binary heap: watching 10,000 groups costs no thread per group.
//!
//! Regular checks fall on a few phases of the interval (one for up to 10,000 groups,
//! two for 15,000): every check of a phase is due at the same instant and goes to the
//! checkers as one batch, so 10,000 groups checked every second cost one wake-up a
//! second, not 10,000, and no check runs later than it is due. Other timers (the
//! re-check of a failing master at the end of its window) fall on a finer grid of slots
//! (a tenth of the check interval, at most 100 ms), so detection stays as precise. What
//! a master check's outcome leads to is `master_check.rs`; the rule for "down" is
//! `detector.rs`.

mod checker;
mod detector;
mod master_check;
mod probes;
mod quorum;
mod state_sync;
mod tilt;
pub mod timers;
mod watch;

use crate::address::Addr;
use crate::broker::{Broker, Outcome};
use crate::config::MinReplicas;
use crate::observe::events::{Event, Events};
use crate::observe::metrics::Metrics;
use crate::observe::status::Observations;
use crate::redis::NodeOptions;
use crate::shutdown::Shutdown;
use crate::worker::fence::{FenceJob, FenceResult};
use crate::worker::switchover::SwitchoverJob;
use crate::worker::switchover_request::{SwitchoverCommand, SwitchoverError};
use crate::worker::{WorkerJob, WorkerReport};
use checker::{CheckerReport, Checkers, Probe, ProbeKind};
use crossbeam_channel::{Receiver, Sender, select};
use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use tilt::{ClockWatch, Tilt, TiltChange};
use timers::Timers;
use watch::{Phase, Watch};

pub use detector::{MIN_FAILED_CHECKS, Verdict};

/// How often the replicas' own `INFO` is read for the API (Sentinel reads it every 10 s).
pub const REPLICA_REFRESH: Duration = Duration::from_secs(10);
/// The longest slot of the timer grid (see the module docs).
pub const MAX_SLOT: Duration = Duration::from_millis(100);
/// About how many checks go out together (see `Monitor::phase_of`). Large batches cost
/// least: a server process that serves several masters (one per address) gets all their
/// checks back to back and is woken once. 10,000 masters on 625 servers of 16 addresses:
/// the checker took 15.5 % of a core in ten batches a second, 10.5 % in one.
pub const BATCH_TARGET: usize = 10_000;
/// The monitor loop turns at least this often, beating its heartbeat (which the systemd
/// watchdog and `/metrics` read) even when no check is due.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_millis(500);
/// A sync with the broker's state may take at most 1/SYNC_SHARE of the monitor's time:
/// after a sync that took `t`, the next waits until `t * (SYNC_SHARE - 1)` has passed.
/// Reading the state costs in proportion to the groups, and a burst of changes (10,000
/// stopped attempts after the daemon's own host lost every master at once) would else
/// have the monitor copy the state once per change, checks starved meanwhile.
const SYNC_SHARE: u32 = 5;

/// What the monitor needs.
pub struct MonitorContext {
    pub broker: Arc<dyn Broker>,
    pub observed: Arc<Observations>,
    pub metrics: Arc<Metrics>,
    pub events: Arc<Events>,
    /// Credentials for checks; `io_timeout` is a whole check's deadline.
    pub node_options: NodeOptions,
    pub check_interval: Duration,
    pub max_down_time: Duration,
    /// Daemons that must find a master down before it is failed over; 0: a majority.
    pub quorum: usize,
    /// Bounded write loss, set on every master when given.
    pub min_replicas: Option<MinReplicas>,
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
            match Monitor::new(ctx, worker_jobs) {
                Ok(monitor) => monitor.run(worker_reports, switchovers, shutdown),
                Err(e) => log::error!("cannot start the checker threads: {e}; nothing is checked"),
            }
        })
}

/// A watch's place in [0, 1): the golden-ratio sequence spreads successive ids evenly.
fn spread(watch_id: u64) -> f64 {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    (watch_id as f64 * GOLDEN).fract()
}

/// A map by watch id. Ids are handed out in sequence and never chosen by anyone
/// outside the daemon, so a multiplication spreads them well enough; the default
/// SipHash, made to resist chosen keys, costs more on the check path than it buys.
pub(crate) type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// What woke the monitor loop.
enum Wake {
    Checked(Option<CheckerReport>),
    Worker(Option<WorkerReport>),
    StateChanged,
    Switchover(Option<SwitchoverCommand>),
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Check,
    RefreshReplicas,
}

struct Monitor {
    ctx: MonitorContext,
    /// Boxed: a table of 10,000 large entries would waste megabytes in its empty slots.
    watches: HashMap<String, Box<Watch>>,
    /// The group of each current watch id (shared, so the hot path clones no string).
    by_id: IdMap<Arc<str>>,
    timers: Timers<(Timer, u64)>,
    /// The timer grid: its origin and its step.
    epoch: Instant,
    slot: Duration,
    /// Probes of the timers fired in this turn, sent as one batch.
    batch: Vec<Probe>,
    checkers: Checkers,
    reports: Receiver<CheckerReport>,
    changes: Receiver<()>,
    next_watch_id: u64,
    worker: Sender<WorkerJob>,
    /// The number of the last view shared, and when the next is due.
    view_seq: u64,
    next_exchange: Instant,
    /// The broker's state changed since the last sync; the next is due at `sync_due`.
    sync_pending: bool,
    sync_due: Instant,
    /// Whether this daemon's own loops run too late to trust its checks.
    tilt: Tilt,
    clocks: ClockWatch,
}

impl Monitor {
    fn new(ctx: MonitorContext, worker: Sender<WorkerJob>) -> std::io::Result<Monitor> {
        let (reports_tx, reports) = checker::report_channel();
        let timeout = ctx.node_options.io_timeout;
        let checkers = Checkers::start(
            ctx.node_options.clone(),
            timeout,
            reports_tx,
            &ctx.metrics,
            &ctx.broker.cluster().http_addr,
        )?;
        let changes = ctx.broker.subscribe();
        let slot = (ctx.check_interval / 10).clamp(Duration::from_millis(1), MAX_SLOT);
        Ok(Monitor {
            watches: HashMap::new(),
            by_id: IdMap::default(),
            timers: Timers::default(),
            epoch: Instant::now(),
            slot,
            batch: Vec::new(),
            checkers,
            reports,
            changes,
            next_watch_id: 0,
            worker,
            view_seq: 0,
            next_exchange: Instant::now(),
            sync_pending: false,
            sync_due: Instant::now(),
            tilt: Tilt::new(ctx.check_interval, ctx.max_down_time),
            clocks: ClockWatch::new(),
            ctx,
        })
    }

    fn run(
        mut self,
        reports: Receiver<WorkerReport>,
        mut switchovers: Receiver<SwitchoverCommand>,
        shutdown: Shutdown,
    ) {
        let stop = shutdown.signal();
        self.sync();
        let mut woke = Instant::now();
        loop {
            self.ctx.metrics.monitor_heartbeat().beat();
            let now = Instant::now();
            self.judge_own_time(now, now.saturating_duration_since(woke));
            if self.sync_pending && now >= self.sync_due {
                self.sync();
            }
            let now = Instant::now();
            self.fire_due_timers(now);
            if now >= self.next_exchange {
                self.exchange_views();
                self.next_exchange = now + self.ctx.check_interval;
            }
            let wait = self
                .timers
                .next()
                .unwrap_or(now + HEARTBEAT_PERIOD)
                .min(self.next_exchange)
                .min(if self.sync_pending {
                    self.sync_due
                } else {
                    now + HEARTBEAT_PERIOD
                })
                .saturating_duration_since(now)
                .min(HEARTBEAT_PERIOD);
            let waiting_since = Instant::now();
            let wake = select! {
                recv(self.reports) -> report => Wake::Checked(report.ok()),
                recv(reports) -> report => Wake::Worker(report.ok()),
                recv(self.changes) -> _ => Wake::StateChanged,
                recv(switchovers) -> command => Wake::Switchover(command.ok()),
                recv(stop) -> _ => break,
                default(wait) => Wake::Timeout,
            };
            // How late the loop woke is judged before what woke it is handled: a stop
            // of the whole process must enter tilt before the checks it delayed count.
            woke = Instant::now();
            let overslept = woke.saturating_duration_since(waiting_since + wait);
            if let Some(change) = self.tilt.on_lateness("the monitor loop", overslept, woke) {
                self.on_tilt(change, woke);
            }
            match wake {
                Wake::Checked(report) => {
                    if let Some(report) = report {
                        self.on_report(report);
                    }
                    // Take every report already waiting before sleeping again.
                    while let Ok(report) = self.reports.try_recv() {
                        self.on_report(report);
                    }
                }
                Wake::Worker(Some(report)) => self.on_worker_report(report),
                Wake::Worker(None) => {
                    log::error!("the failover worker has stopped; monitoring stops too");
                    break;
                }
                Wake::StateChanged => self.sync_pending = true,
                Wake::Switchover(Some(command)) => self.on_switchover(command),
                // The API is gone (an embedder dropped it): nothing more will come.
                Wake::Switchover(None) => switchovers = crossbeam_channel::never(),
                Wake::Timeout => {}
            }
        }
        self.checkers.shutdown();
    }

    /// The monitor's own time: a turn that worked `worked`, the clocks compared, and
    /// the end of a tilt once the loops have been on time long enough.
    fn judge_own_time(&mut self, now: Instant, worked: Duration) {
        let mut changes = Vec::new();
        changes.extend(self.tilt.on_lateness("the monitor loop", worked, now));
        if let Some((wall, mono)) = self.clocks.look(now, SystemTime::now()) {
            changes.extend(self.tilt.on_clocks(wall, mono, now));
        }
        changes.extend(self.tilt.tick(now));
        for change in changes {
            self.on_tilt(change, now);
        }
    }

    /// Says that tilt began or ended: the log, the metrics (which the API, `/metrics`
    /// and the Sentinel port read).
    fn on_tilt(&mut self, change: TiltChange, now: Instant) {
        match change {
            TiltChange::Entered { why } => {
                log::warn!(
                    "tilt: {why}; checks go on, but no failover begins and no master counts as down here until this daemon has been on time for {} ms",
                    self.tilt.recovery().as_millis()
                );
                self.ctx
                    .metrics
                    .set_tilt(Some(crate::clock::instant_to_unix_ms(now)));
            }
            TiltChange::Left { lasted } => {
                log::warn!(
                    "tilt ends after {} ms: this daemon has been on time for {} ms; failovers may begin again",
                    lasted.as_millis(),
                    self.tilt.recovery().as_millis()
                );
                self.ctx.metrics.set_tilt(None);
            }
        }
    }

    /// Hands a job to the failover worker.
    fn send_to_worker(&self, group: &str, job: WorkerJob) {
        if self.worker.send(job).is_err() {
            log::error!("group {group}: the failover worker is gone");
        }
    }

    /// Sets a timer for the first grid instant at or after `at`.
    fn schedule(&mut self, at: Instant, timer: Timer, watch_id: u64) {
        let at = self.on_grid(at);
        self.timers.push(at, (timer, watch_id));
    }

    /// The first instant of the timer grid at or after `at`.
    fn on_grid(&self, at: Instant) -> Instant {
        let since = at.saturating_duration_since(self.epoch).as_nanos();
        let step = self.slot.as_nanos().max(1);
        let slots = since.div_ceil(step);
        self.epoch + Duration::from_nanos((slots * step).min(u64::MAX as u128) as u64)
    }

    /// Fires every timer due by `now`; their probes go to the checkers as one batch.
    fn fire_due_timers(&mut self, now: Instant) {
        while let Some((at, due)) = self.timers.pop_due(now) {
            for (timer, watch_id) in due {
                self.fire(timer, watch_id, at, now);
            }
        }
        if !self.batch.is_empty() {
            self.checkers.submit(std::mem::take(&mut self.batch));
        }
    }

    /// Every daemon checks every master (followers too: their views count towards the
    /// quorum); only the acting one fails over and fences.
    fn fire(&mut self, timer: Timer, watch_id: u64, due: Instant, now: Instant) {
        let Some(group) = self.by_id.get(&watch_id).cloned() else {
            return;
        };
        let Some(watch) = self.watches.get_mut(&*group) else {
            return;
        };
        if watch.phase != Phase::Watching {
            return;
        }
        match timer {
            Timer::Check if !watch.check_in_flight => {
                watch.check_in_flight = true;
                let probe = Probe {
                    watch_id,
                    addr: watch.master.clone(),
                    kind: ProbeKind::Master,
                    due,
                };
                self.batch.push(probe);
            }
            Timer::RefreshReplicas => {
                let replicas = watch.listed_addrs();
                watch.refresh_outstanding = replicas.len();
                if replicas.is_empty() {
                    self.schedule(now + REPLICA_REFRESH, Timer::RefreshReplicas, watch_id);
                }
                for addr in replicas {
                    let kind = ProbeKind::Info;
                    self.batch.push(Probe {
                        watch_id,
                        addr,
                        kind,
                        due,
                    });
                }
            }
            _ => {}
        }
    }

    /// The watch of `group` if it is the one `watch_id` names.
    fn current(&mut self, group: &str, watch_id: u64) -> Option<&mut Watch> {
        self.watches
            .get_mut(group)
            .filter(|w| w.watch_id == watch_id)
            .map(|w| &mut **w)
    }

    fn on_worker_report(&mut self, report: WorkerReport) {
        match report {
            WorkerReport::Attempted {
                group,
                watch_id,
                outcome,
            } => self.on_attempted(&group, watch_id, outcome),
            WorkerReport::Fenced { job, results } => self.on_fenced(job, results),
            WorkerReport::Configured => {}
        }
    }

    fn on_attempted(&mut self, group: &str, watch_id: u64, outcome: Outcome) {
        let now = Instant::now();
        if let Some(watch) = self.current(group, watch_id) {
            // Checks resume with a whole new window, whatever the outcome. After a
            // success the next sync replaces this watch (new master, new id) and after a
            // failure it stops it; either way this timer is then ignored. Should the
            // outcome not have reached the broker, the group is still watched.
            watch.phase = Phase::Watching;
            watch.detector.restart(now);
            // The worker wrote the observation meanwhile (failing over, switching over).
            watch.observed_ok = false;
            if outcome != Outcome::Succeeded {
                log::info!("group {group}: watching master {} again", watch.master);
            }
            self.schedule(now, Timer::Check, watch_id);
        }
        // The outcome is in the broker's state: sync before the next timers fire (or
        // soon after, in a burst of attempts).
        self.sync_pending = true;
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
            for (addr, _) in &results {
                watch.fence_pending.remove(addr);
            }
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
        let Some(watch) = self.watches.get_mut(&*group) else {
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

    /// Where in the interval a watch's regular checks fall: one of a few phases, so
    /// that the checks of many groups go out as a few large batches (one per phase)
    /// rather than a trickle. There are as many phases as it takes to keep a batch near
    /// [`BATCH_TARGET`] probes, at most ten: 10,000 groups are checked in one batch a
    /// second, 15,000 in two. The golden-ratio sequence spreads watches evenly over the
    /// phases; the first group of a daemon is checked at once.
    fn phase_of(&self, watch_id: u64) -> Duration {
        let phases = self.watches.len().div_ceil(BATCH_TARGET).clamp(1, 10) as u32;
        let index = (spread(watch_id) * f64::from(phases)) as u32;
        self.ctx.check_interval / phases * index.min(phases - 1)
    }

    /// How long after its link closed a watch's master is checked again: spread over a
    /// quarter of the interval (at most 250 ms), so that links lost together are not
    /// all dialled again in the same instant.
    fn recheck_spread(&self, watch_id: u64) -> Duration {
        let over = (self.ctx.check_interval / 4).min(Duration::from_millis(250));
        over.mul_f64(spread(watch_id))
    }

    /// The watch's next regular check: its first phase point at or after `after`.
    fn next_check(&self, watch_id: u64, after: Instant) -> Instant {
        let interval = self.ctx.check_interval.as_nanos().max(1);
        let phase = self.phase_of(watch_id).as_nanos();
        let since = after.saturating_duration_since(self.epoch).as_nanos();
        let cycles = (since.saturating_sub(phase)).div_ceil(interval);
        let at = (phase + cycles * interval).min(u64::MAX as u128) as u64;
        self.epoch + Duration::from_nanos(at)
    }

    /// Publishes the replicas of a group, merging `ROLE` offsets with `INFO` details.
    fn publish_replicas(&mut self, group: &str) {
        let Some(watch) = self.watches.get_mut(group) else {
            return;
        };
        let replicas = watch.replica_statuses();
        if replicas == watch.published_replicas {
            return;
        }
        watch.published_replicas = replicas.clone();
        self.ctx.observed.update(group, |o| o.replicas = replicas);
    }
}
