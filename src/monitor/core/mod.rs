//! The monitor's decisions, with no I/O: when each master is checked, when it is down
//! here (`detector.rs`), when the cluster agrees (`quorum.rs`), when this daemon cannot
//! trust its own checks (`tilt.rs`), what a check's outcome leads to
//! (`master_check.rs`, `results.rs`), and how the watches follow the replicated state
//! (`state_sync.rs`).
//!
//! [`MonitorCore::step`] takes one [`Input`] (check outcomes, the worker's reports, the
//! replicated state, a tick) at a time it is given, with a [`ClusterView`] of the
//! broker, and leaves [`Output`]s (probes to send, jobs for the worker, proposals, the
//! view to share) for its driver to carry out. It reads no clock, opens no socket and
//! starts no thread: the monitor thread (`monitor/mod.rs`) drives it with real time and
//! real servers, the deterministic simulator (`tests/simulation.rs`) with simulated
//! ones. What it publishes (observations, metrics, events) goes to in-memory [`Sinks`].
//!
//! Regular checks fall on a few offsets within the interval (one for up to 10,000
//! groups, two for 15,000): every check of an offset is due at the same instant and
//! goes to the checkers as one batch, so 10,000 groups checked every second cost one
//! wake-up a second, not 10,000, and no check runs later than it is due. Other timers
//! (the re-check of a failing master at the end of its window) fall on a finer grid of
//! slots (a tenth of the check interval, at most 100 ms), so detection stays as precise.

mod detector;
mod holds;
mod master_check;
pub mod probe;
mod quorum;
mod results;
mod state_sync;
mod tilt;
mod watch;

use super::timers::Timers;
use crate::address::Addr;
use crate::broker::views::MastersView;
use crate::broker::{Action, Outcome, ReplicatedState};
use crate::config::MinReplicas;
use crate::observe::events::{Event, Events};
use crate::observe::metrics::Metrics;
use crate::observe::status::Observations;
use crate::worker::fence::{FenceJob, FenceResult};
use crate::worker::manual_failover::ManualFailoverCommand;
use crate::worker::switchover::SwitchoverJob;
use crate::worker::switchover_request::{SwitchoverCommand, SwitchoverError};
use crate::worker::{WorkerJob, WorkerReport};
use probe::{CheckerReport, Probe, ProbeKind};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tilt::{ClockWatch, Tilt, TiltChange};
use watch::{Phase, Watch};

pub use detector::{DownDetector, MIN_FAILED_CHECKS, Verdict};
pub use quorum::VIEW_MAX_AGE_INTERVALS;

/// How often the replicas' own `INFO` is read for the API (Sentinel reads it every 10 s).
pub const REPLICA_REFRESH: Duration = Duration::from_secs(10);
/// After a `CONFIG SET` of the bounded-loss settings failed, the next try.
pub const CONFIGURE_RETRY: Duration = Duration::from_secs(30);
/// The longest slot of the timer grid (see the module docs).
pub const MAX_SLOT: Duration = Duration::from_millis(100);
/// About how many checks go out together (see `MonitorCore::offset_in_interval`). Large
/// batches cost least: a server process that serves several masters (one per address)
/// gets all their checks back to back and is woken once. 10,000 masters on 625 servers
/// of 16 addresses: the checker took 15.5 % of a core in ten batches a second, 10.5 % in
/// one.
pub const BATCH_TARGET: usize = 10_000;

/// The settings the decisions depend on.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub check_interval: Duration,
    pub max_down_time: Duration,
    /// Daemons that must find a master down before it is failed over; 0: a majority.
    pub quorum: usize,
    /// Bounded write loss, set on every master when given.
    pub min_replicas: Option<MinReplicas>,
    /// This daemon's name in the views it shares (its HTTP address).
    pub daemon: String,
    /// After an automatic failover of a group, a second automatic one within this
    /// waits for an acknowledgement (`failover_block`; zero: off).
    pub failover_block: Duration,
}

/// Where the core publishes what it sees: all in memory, read by the API, `/metrics`
/// and the Sentinel port.
#[derive(Clone)]
pub struct Sinks {
    pub observed: Arc<Observations>,
    pub metrics: Arc<Metrics>,
    pub events: Arc<Events>,
}

/// The broker as the core sees it at one step: whether this daemon acts, the quorum,
/// and what the other daemons find down. The monitor thread reads it from the broker;
/// the simulator from its simulated cluster.
pub trait ClusterView {
    /// Whether this daemon acts (fails over, fences, records what it sees).
    fn is_acting(&self) -> bool;
    /// Daemons that must agree, for the `quorum` setting (0: a majority).
    fn quorum(&self, setting: usize) -> usize;
    /// The views of the other daemons renewed within `max_age`.
    fn peer_views(&self, max_age: Duration) -> Vec<MastersView>;
}

/// The time of a step: the monotonic clock, and the wall clock at the same moment
/// (observations show Unix milliseconds; a jump of the wall clock enters tilt).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Now {
    /// `at` as Unix milliseconds, by this moment's wall clock.
    pub fn unix_ms(&self, at: Instant) -> u64 {
        let wall = self.wall - self.mono.saturating_duration_since(at);
        wall.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// How long before this moment `at` was.
    pub fn since(&self, at: Instant) -> Duration {
        self.mono.saturating_duration_since(at)
    }
}

/// What happened, as the core is told.
pub enum Input {
    /// The replicated state (after a change of it or of the leadership), as the
    /// broker's shared snapshot.
    State(Arc<ReplicatedState>),
    /// What a checker turn found.
    Checked(CheckerReport),
    /// The failover worker finished a job.
    Worker(WorkerReport),
    /// A switchover asked through the API (the driver refuses it first when this daemon
    /// does not act, naming the leader).
    Switchover(SwitchoverCommand),
    /// A failover a person asked for through the API.
    ManualFailover(ManualFailoverCommand),
    /// One of this daemon's loops ran `late` behind (see `tilt.rs`).
    Late { what: &'static str, late: Duration },
    /// Time passed: fire due timers, share the view when due, compare the clocks.
    Tick,
}

/// What the core asks its driver to do.
pub enum Output {
    /// Probes due now, as one batch.
    Probes(Vec<Probe>),
    /// A watch ended: close its connections.
    Forget(u64),
    /// A job for the failover worker.
    Job(WorkerJob),
    /// A change to record in the replicated state, without waiting for it.
    Propose(Action),
    /// This daemon's view of the masters, for the other daemons.
    ShareView(MastersView),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Check,
    RefreshReplicas,
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

/// The monitor's decisions over every watched group.
pub struct MonitorCore {
    settings: CoreSettings,
    sinks: Sinks,
    /// Boxed: a table of 10,000 large entries would waste megabytes in its empty slots.
    watches: HashMap<String, Box<Watch>>,
    /// The group of each current watch id (shared, so the hot path clones no string).
    by_id: IdMap<Arc<str>>,
    timers: Timers<(Timer, u64)>,
    /// The timer grid: its origin and its step.
    epoch: Instant,
    slot: Duration,
    next_watch_id: u64,
    /// The number of the last view shared, and when the next is due.
    view_seq: u64,
    next_exchange: Instant,
    /// Whether this daemon's own loops run too late to trust its checks.
    tilt: Tilt,
    clocks: ClockWatch,
    /// The current step's time and cluster (set by [`MonitorCore::step`]).
    now: Now,
    acting: bool,
    needed: usize,
    peer_views: Vec<MastersView>,
    /// The replicated state last given (pauses and blocks are read from it).
    latest: Option<Arc<ReplicatedState>>,
    /// Probes of this step, sent as one batch; the other outputs.
    batch: Vec<Probe>,
    outputs: Vec<Output>,
}

impl MonitorCore {
    /// A core with no groups yet, its timer grid starting at `now`.
    pub fn new(settings: CoreSettings, sinks: Sinks, now: Now) -> MonitorCore {
        let slot = (settings.check_interval / 10).clamp(Duration::from_millis(1), MAX_SLOT);
        MonitorCore {
            watches: HashMap::new(),
            by_id: IdMap::default(),
            timers: Timers::default(),
            epoch: now.mono,
            slot,
            next_watch_id: 0,
            view_seq: 0,
            next_exchange: now.mono,
            tilt: Tilt::new(settings.check_interval, settings.max_down_time),
            clocks: ClockWatch::new(),
            now,
            acting: false,
            needed: 1,
            peer_views: Vec::new(),
            latest: None,
            batch: Vec::new(),
            outputs: Vec::new(),
            settings,
            sinks,
        }
    }

    /// Takes one input at `now`; the outputs wait in [`MonitorCore::take_outputs`].
    pub fn step(&mut self, now: Now, cluster: &dyn ClusterView, input: Input) {
        self.now = now;
        self.acting = cluster.is_acting();
        self.needed = cluster.quorum(self.settings.quorum);
        self.peer_views = cluster.peer_views(self.view_max_age());
        match input {
            Input::State(state) => {
                self.sync_groups(&state);
                self.latest = Some(state);
            }
            Input::ManualFailover(command) => self.on_manual_failover(command),
            Input::Checked(report) => self.on_report(report),
            Input::Worker(report) => self.on_worker_report(report),
            Input::Switchover(command) => self.on_switchover(command),
            Input::Late { what, late } => {
                if let Some(change) = self.tilt.on_lateness(what, late, now.mono) {
                    self.on_tilt(change);
                }
            }
            Input::Tick => self.on_tick(),
        }
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.outputs.push(Output::Probes(batch));
        }
    }

    /// What the last steps asked for, in order.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// When the core next needs a [`Input::Tick`] (a timer or the exchange of views).
    pub fn next_wake(&self) -> Instant {
        self.timers
            .next()
            .map_or(self.next_exchange, |t| t.min(self.next_exchange))
    }

    /// Whether this daemon is in tilt now.
    pub fn in_tilt(&self) -> bool {
        self.tilt.is_on()
    }

    /// Time passed: the clocks compared, the end of a tilt, due timers, the views.
    fn on_tick(&mut self) {
        let now = self.now.mono;
        let mut changes = Vec::new();
        if let Some((wall, mono)) = self.clocks.look(now, self.now.wall) {
            changes.extend(self.tilt.on_clocks(wall, mono, now));
        }
        changes.extend(self.tilt.tick(now));
        for change in changes {
            self.on_tilt(change);
        }
        while let Some((at, due)) = self.timers.pop_due(now) {
            for (timer, watch_id) in due {
                self.fire(timer, watch_id, at);
            }
        }
        if now >= self.next_exchange {
            self.exchange_views();
            self.next_exchange = now + self.settings.check_interval;
        }
    }

    /// Says that tilt began or ended: the log, the metrics (which the API, `/metrics`
    /// and the Sentinel port read).
    fn on_tilt(&mut self, change: TiltChange) {
        match change {
            TiltChange::Entered { why } => {
                log::warn!(
                    "tilt: {why}; checks go on, but no failover begins and no master counts as down here until this daemon has been on time for {} ms",
                    self.tilt.recovery().as_millis()
                );
                let since = self.now.unix_ms(self.now.mono);
                self.sinks.metrics.set_tilt(Some(since));
            }
            TiltChange::Left { lasted } => {
                log::warn!(
                    "tilt ends after {} ms: this daemon has been on time for {} ms; failovers may begin again",
                    lasted.as_millis(),
                    self.tilt.recovery().as_millis()
                );
                self.sinks.metrics.set_tilt(None);
            }
        }
    }

    /// Hands a job to the failover worker.
    fn send_to_worker(&mut self, job: WorkerJob) {
        self.outputs.push(Output::Job(job));
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

    /// Every daemon checks every master (followers too: their views count towards the
    /// quorum); only the acting one fails over and fences.
    fn fire(&mut self, timer: Timer, watch_id: u64, due: Instant) {
        let Some(group) = self.by_id.get(&watch_id).cloned() else {
            return;
        };
        let Some(watch) = self.watches.get_mut(&*group) else {
            return;
        };
        if watch.phase() != Phase::Watching {
            return;
        }
        match timer {
            Timer::Check if watch.start_check() => {
                let probe = Probe {
                    watch_id,
                    addr: watch.master().clone(),
                    kind: ProbeKind::Master,
                    due,
                };
                self.batch.push(probe);
            }
            Timer::RefreshReplicas => {
                let replicas = watch.start_refresh();
                if replicas.is_empty() {
                    let next = self.now.mono + REPLICA_REFRESH;
                    self.schedule(next, Timer::RefreshReplicas, watch_id);
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
            .filter(|w| w.watch_id() == watch_id)
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
            WorkerReport::Configured { group, master, ok } => {
                let now = self.now.mono;
                if let Some(watch) = self.watches.get_mut(&*group)
                    && !ok
                    && *watch.master() == master
                {
                    watch.configure_failed(now, CONFIGURE_RETRY);
                }
            }
        }
    }

    fn on_attempted(&mut self, group: &str, watch_id: u64, outcome: Outcome) {
        let now = self.now.mono;
        if let Some(watch) = self.current(group, watch_id) {
            // Checks resume with a whole new window, whatever the outcome. After a
            // success the next sync replaces this watch (new master, new id) and after a
            // failure it stops it; either way this timer is then ignored. Should the
            // outcome not have reached the broker, the group is still watched.
            watch.attempt_ended(now);
            if outcome != Outcome::Succeeded {
                log::info!("group {group}: watching master {} again", watch.master());
            }
            self.schedule(now, Timer::Check, watch_id);
        }
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
                watch.fence_done(addr);
            }
        }
        for (addr, result) in results {
            match result {
                FenceResult::Converted => {
                    log::warn!(
                        "group {group}: {addr} claimed to be master; made it a replica of {master}"
                    );
                    self.sinks.events.publish(Event::ConvertedToReplica {
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
        if !self.acting {
            return command.refuse(SwitchoverError::NotLeader { leader: None });
        }
        let group = command.request.group.clone();
        let Some(watch) = self.watches.get_mut(&*group) else {
            return command.refuse(SwitchoverError::NotFound(format!(
                "no monitored group {group:?}"
            )));
        };
        let busy = match watch.phase() {
            Phase::Watching => None,
            Phase::FailingOver => Some("a failover or switchover of the group is under way"),
            Phase::Stopped => Some(
                "the group is not watched (its master reports being a replica, or a failover failed); add it again first",
            ),
        };
        if let Some(why) = busy {
            return command.refuse(SwitchoverError::Conflict(why.into()));
        }
        watch.hand_to_worker();
        let job = SwitchoverJob {
            command,
            master: watch.master().clone(),
            watch_id: watch.watch_id(),
        };
        self.send_to_worker(WorkerJob::Switchover(job));
    }

    /// Where in the interval a watch's regular checks fall: one of a few offsets, so
    /// that the checks of many groups go out as a few large batches (one per offset)
    /// rather than a trickle. There are as many offsets as it takes to keep a batch near
    /// [`BATCH_TARGET`] probes, at most ten: 10,000 groups are checked in one batch a
    /// second, 15,000 in two. The golden-ratio sequence spreads watches evenly over the
    /// offsets; the first group of a daemon is checked at once.
    fn offset_in_interval(&self, watch_id: u64) -> Duration {
        let offsets = self.watches.len().div_ceil(BATCH_TARGET).clamp(1, 10) as u32;
        let index = (spread(watch_id) * f64::from(offsets)) as u32;
        self.settings.check_interval / offsets * index.min(offsets - 1)
    }

    /// How long after its link closed a watch's master is checked again: spread over a
    /// quarter of the interval (at most 250 ms), so that links lost together are not
    /// all dialled again in the same instant.
    fn recheck_spread(&self, watch_id: u64) -> Duration {
        let over = (self.settings.check_interval / 4).min(Duration::from_millis(250));
        over.mul_f64(spread(watch_id))
    }

    /// The watch's next regular check: its first offset point at or after `after`.
    fn next_check(&self, watch_id: u64, after: Instant) -> Instant {
        let interval = self.settings.check_interval.as_nanos().max(1);
        let offset = self.offset_in_interval(watch_id).as_nanos();
        let since = after.saturating_duration_since(self.epoch).as_nanos();
        let cycles = (since.saturating_sub(offset)).div_ceil(interval);
        let at = (offset + cycles * interval).min(u64::MAX as u128) as u64;
        self.epoch + Duration::from_nanos(at)
    }

    /// Publishes the replicas of a group, merging `ROLE` offsets with `INFO` details.
    fn publish_replicas(&mut self, group: &str) {
        let Some(watch) = self.watches.get_mut(group) else {
            return;
        };
        if let Some(replicas) = watch.replicas_to_publish() {
            self.sinks.observed.update(group, |o| o.replicas = replicas);
        }
    }
}

#[cfg(test)]
mod tests;
