//! The monitor thread: the driver of the monitor's decisions (`core/`). It turns the
//! checker threads' reports, the broker's changes, the worker's reports and the API's
//! switchovers into inputs of a [`MonitorCore`], with the real clock, and carries out
//! what the core asks (probes to the checkers, jobs to the worker, proposals and views
//! to the broker). The core owns all per-group watch state, so there are no locks on
//! the check path; timers live in its ordered buckets: watching 10,000 groups costs no
//! thread per group.

mod checker;
pub mod core;
pub mod timers;

use self::core::probe::CheckerReport;
use self::core::{ClusterView, CoreSettings, Input, MonitorCore, Now, Output, Sinks};
use crate::broker::Broker;
use crate::broker::views::MastersView;
use crate::config::MinReplicas;
use crate::observe::events::Events;
use crate::observe::metrics::Metrics;
use crate::observe::status::Observations;
use crate::redis::NodeOptions;
use crate::shutdown::Shutdown;
use crate::worker::manual_failover::ManualFailoverCommand;
use crate::worker::switchover_request::{SwitchoverCommand, SwitchoverError};
use crate::worker::{WorkerJob, WorkerReport};
use checker::Checkers;
use crossbeam_channel::{Receiver, Sender, select};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

pub(crate) use self::core::IdMap;
pub use self::core::{BATCH_TARGET, MAX_SLOT, MIN_FAILED_CHECKS, REPLICA_REFRESH, Verdict};

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
    /// The anti-flapping block (`failover_block`; zero: off).
    pub failover_block: Duration,
}

/// The channels the monitor listens and talks on.
pub struct MonitorChannels {
    pub worker_jobs: Sender<WorkerJob>,
    pub worker_reports: Receiver<WorkerReport>,
    /// Switchovers asked for through the API (`worker/switchover_request.rs`).
    pub switchovers: Receiver<SwitchoverCommand>,
    /// Failovers asked for through the API (`worker/manual_failover.rs`).
    pub manual_failovers: Receiver<ManualFailoverCommand>,
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
                manual_failovers,
                shutdown,
            } = channels;
            match Monitor::new(ctx, worker_jobs) {
                Ok(monitor) => {
                    monitor.run(worker_reports, (switchovers, manual_failovers), shutdown)
                }
                Err(e) => log::error!("cannot start the checker threads: {e}; nothing is checked"),
            }
        })
}

/// What woke the monitor loop.
enum Wake {
    Checked(Option<CheckerReport>),
    Worker(Option<WorkerReport>),
    StateChanged,
    Switchover(Option<SwitchoverCommand>),
    ManualFailover(Option<ManualFailoverCommand>),
    Timeout,
}

/// The broker, as the core sees it.
struct BrokerView<'a>(&'a dyn Broker);

impl ClusterView for BrokerView<'_> {
    fn is_acting(&self) -> bool {
        self.0.is_acting()
    }

    fn quorum(&self, setting: usize) -> usize {
        self.0.cluster().quorum(setting)
    }

    fn peer_views(&self, max_age: Duration) -> Vec<MastersView> {
        self.0.peer_views(max_age)
    }
}

fn now() -> Now {
    Now {
        mono: Instant::now(),
        wall: SystemTime::now(),
    }
}

struct Monitor {
    core: MonitorCore,
    broker: Arc<dyn Broker>,
    metrics: Arc<Metrics>,
    checkers: Checkers,
    reports: Receiver<CheckerReport>,
    changes: Receiver<()>,
    worker: Sender<WorkerJob>,
    /// The broker's state changed since the last sync; the next is due at `sync_due`.
    sync_pending: bool,
    sync_due: Instant,
}

impl Monitor {
    fn new(ctx: MonitorContext, worker: Sender<WorkerJob>) -> std::io::Result<Monitor> {
        let (reports_tx, reports) = checker::report_channel();
        let timeout = ctx.node_options.io_timeout;
        let daemon = ctx.broker.cluster().http_addr;
        let checkers = Checkers::start(
            ctx.node_options.clone(),
            timeout,
            reports_tx,
            &ctx.metrics,
            &daemon,
        )?;
        let changes = ctx.broker.subscribe();
        let settings = CoreSettings {
            check_interval: ctx.check_interval,
            max_down_time: ctx.max_down_time,
            quorum: ctx.quorum,
            min_replicas: ctx.min_replicas,
            daemon,
            failover_block: ctx.failover_block,
        };
        let sinks = Sinks {
            observed: ctx.observed,
            metrics: ctx.metrics.clone(),
            events: ctx.events,
        };
        Ok(Monitor {
            core: MonitorCore::new(settings, sinks, now()),
            broker: ctx.broker,
            metrics: ctx.metrics,
            checkers,
            reports,
            changes,
            worker,
            sync_pending: false,
            sync_due: Instant::now(),
        })
    }

    fn run(
        mut self,
        reports: Receiver<WorkerReport>,
        asked: (Receiver<SwitchoverCommand>, Receiver<ManualFailoverCommand>),
        shutdown: Shutdown,
    ) {
        let (mut switchovers, mut manual_failovers) = asked;
        let stop = shutdown.signal();
        self.sync();
        let mut woke = Instant::now();
        loop {
            self.metrics.monitor_heartbeat().beat();
            let worked = woke.elapsed();
            self.step(Input::Late {
                what: "the monitor loop",
                late: worked,
            });
            if self.sync_pending && Instant::now() >= self.sync_due {
                self.sync();
            }
            self.step(Input::Tick);
            let now = Instant::now();
            let sync_at = if self.sync_pending {
                self.sync_due
            } else {
                now + HEARTBEAT_PERIOD
            };
            let wait = self
                .core
                .next_wake()
                .min(sync_at)
                .saturating_duration_since(now)
                .min(HEARTBEAT_PERIOD);
            let waiting_since = Instant::now();
            let wake = select! {
                recv(self.reports) -> report => Wake::Checked(report.ok()),
                recv(reports) -> report => Wake::Worker(report.ok()),
                recv(self.changes) -> _ => Wake::StateChanged,
                recv(switchovers) -> command => Wake::Switchover(command.ok()),
                recv(manual_failovers) -> command => Wake::ManualFailover(command.ok()),
                recv(stop) -> _ => break,
                default(wait) => Wake::Timeout,
            };
            // How late the loop woke is judged before what woke it is handled: a stop
            // of the whole process must enter tilt before the checks it delayed count.
            woke = Instant::now();
            let overslept = woke.saturating_duration_since(waiting_since + wait);
            self.step(Input::Late {
                what: "the monitor loop",
                late: overslept,
            });
            match wake {
                Wake::Checked(report) => {
                    // Every report already waiting is taken before sleeping again.
                    let waiting = report.into_iter().chain(self.reports.try_iter());
                    let reports: Vec<CheckerReport> = waiting.collect();
                    for report in reports {
                        self.step(Input::Checked(report));
                    }
                }
                Wake::Worker(Some(report)) => {
                    // An attempt's outcome is in the broker's state: sync before the
                    // next timers fire (or soon after, in a burst of attempts).
                    let attempted = matches!(report, WorkerReport::Attempted { .. });
                    self.step(Input::Worker(report));
                    self.sync_pending |= attempted;
                }
                Wake::Worker(None) => {
                    log::error!("the failover worker has stopped; monitoring stops too");
                    break;
                }
                Wake::StateChanged => self.sync_pending = true,
                Wake::Switchover(Some(command)) => self.on_switchover(command),
                // The API is gone (an embedder dropped it): nothing more will come.
                Wake::Switchover(None) => switchovers = crossbeam_channel::never(),
                Wake::ManualFailover(Some(command)) => self.step(Input::ManualFailover(command)),
                Wake::ManualFailover(None) => manual_failovers = crossbeam_channel::never(),
                Wake::Timeout => {}
            }
        }
        self.checkers.shutdown();
    }

    /// One input to the core at the current time; then what it asked for is done.
    fn step(&mut self, input: Input) {
        let view = BrokerView(&*self.broker);
        self.core.step(now(), &view, input);
        for output in self.core.take_outputs() {
            match output {
                Output::Probes(probes) => self.checkers.submit(probes),
                Output::Forget(watch_id) => self.checkers.forget(watch_id),
                Output::Job(job) => {
                    if self.worker.send(job).is_err() {
                        log::error!("the failover worker is gone");
                    }
                }
                Output::Propose(action) => self.broker.propose_detached(action),
                Output::ShareView(view) => self.broker.share_view(view),
            }
        }
    }

    /// Brings the core in line with the broker's state, and says when the next sync may
    /// run (see [`SYNC_SHARE`]).
    fn sync(&mut self) {
        let started = Instant::now();
        self.sync_pending = false;
        let state = self.broker.state();
        self.step(Input::State(state));
        let took = started.elapsed();
        self.sync_due = Instant::now() + took * (SYNC_SHARE - 1);
    }

    /// A switchover asked through the API: a daemon that does not act names the leader.
    fn on_switchover(&mut self, command: SwitchoverCommand) {
        if !self.broker.is_acting() {
            let leader = self.broker.cluster().leader.and_then(|l| l.http_addr);
            return command.refuse(SwitchoverError::NotLeader { leader });
        }
        self.step(Input::Switchover(command));
    }
}
