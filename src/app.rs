//! [`App`]: the daemon as a library. `main.rs` is a thin shell around it, and another
//! program can start one in-process, hook into its failovers and stop it.
//!
//! Starting an `App` binds the HTTP listener, then starts the monitor (with its checker
//! pool) and the failover worker. [`App::shutdown`] stops them and joins every thread
//! it started.

use crate::address::{Addr, MasterSpec};
use crate::api_auth::ApiAccess;
use crate::broker::raft::{RaftBroker, RaftOptions};
use crate::broker::standalone::StandaloneBroker;
use crate::broker::zk::{ZkBroker, ZkOptions};
use crate::broker::{Action, Broker, ClusterStatus, GroupSpec};
use crate::config::{BrokerKind, Config, StartState};
use crate::error::{Error, Result};
use crate::events::Events;
use crate::failover::{FailoverContext, spawn_worker};
use crate::hooks::Hooks;
use crate::http::HttpApi;
use crate::metrics::Metrics;
use crate::monitor::{MonitorChannels, MonitorContext, spawn_monitor};
use crate::redis_node::NodeOptions;
use crate::sentinel::SentinelPort;
use crate::status::{GroupStatus, Observations, group_statuses};
use crate::switchover::Switchovers;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The state shared by the API surfaces (library, HTTP): read and change the groups.
pub struct Core {
    pub broker: Arc<dyn Broker>,
    pub observed: Arc<Observations>,
    pub hooks: Arc<Hooks>,
    /// Counters for `/metrics` and the monitor's heartbeat (for the systemd watchdog).
    pub metrics: Arc<Metrics>,
    /// Who may use the API (`api_token`).
    pub access: ApiAccess,
    /// Sentinel-style events, for the Sentinel port and the notification script.
    pub events: Arc<Events>,
    /// Planned switchovers, run by the monitor and the failover worker.
    pub switchovers: Switchovers,
}

impl Core {
    /// Current master addresses, in group-name order.
    pub fn masters(&self) -> Vec<Addr> {
        self.broker
            .state()
            .groups
            .values()
            .map(|g| g.master.clone())
            .collect()
    }

    /// Watches these groups (or updates them, clearing a failed state).
    pub fn add(&self, specs: Vec<MasterSpec>) -> Result<()> {
        self.broker.propose(Action::Add(
            specs.into_iter().map(GroupSpec::from).collect(),
        ))
    }

    /// Stops watching the groups with these names or master addresses.
    pub fn remove(&self, keys: Vec<String>) -> Result<()> {
        self.broker.propose(Action::Delete(keys))
    }

    /// Watches exactly these groups.
    pub fn set(&self, specs: Vec<MasterSpec>) -> Result<()> {
        self.broker.propose(Action::Set(
            specs.into_iter().map(GroupSpec::from).collect(),
        ))
    }

    /// Every group with what this daemon sees of it.
    pub fn groups(&self) -> Vec<GroupStatus> {
        group_statuses(&self.broker.state(), &self.observed)
    }

    /// This daemon's view of its cluster.
    pub fn cluster(&self) -> ClusterStatus {
        self.broker.cluster()
    }
}

/// A running failover daemon.
///
/// ```no_run
/// use redis_failover::{App, Config, MasterSpec};
///
/// let config = Config {
///     addr: redis_failover::Addr::parse("127.0.0.1:11000")?,
///     masters: MasterSpec::parse_list("cache=127.0.0.1:6379")?,
///     ..Config::default()
/// };
/// let app = App::start(config)?;
/// app.on_before_failover(|group, old| {
///     println!("about to fail over {group} from {old}");
///     Ok(()) // return Err(reason) to veto
/// });
/// app.on_after_failover(|group, old, new| println!("{group}: {old} -> {new}"));
/// println!("watching {:?}", app.masters());
/// app.shutdown();
/// # Ok::<(), redis_failover::Error>(())
/// ```
pub struct App {
    core: Arc<Core>,
    http: HttpApi,
    sentinel: Option<SentinelPort>,
    shutdown: Option<Sender<()>>,
    /// Dropped at shutdown: tells helper threads (the seeder) to stop.
    stopping: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl App {
    /// Binds the HTTP API and starts monitoring the configured masters.
    pub fn start(config: Config) -> Result<App> {
        let mut http = HttpApi::bind(&config.addr)?;
        let http_addr = advertised_http_addr(http.local_addr(), &config);
        let sentinel_advertised = config
            .sentinel_addr
            .as_ref()
            .map(|a| advertised(a, &config));
        let broker: Arc<dyn Broker> = match config.broker {
            BrokerKind::Standalone => Arc::new(StandaloneBroker::new(http_addr)),
            BrokerKind::Raft => Arc::new(RaftBroker::start(RaftOptions {
                raft_addr: config.raft.addr.clone().ok_or_else(|| {
                    Error::InvalidInput("raft_addr: required with -broker=raft".into())
                })?,
                http_addr,
                sentinel_addr: sentinel_advertised.clone(),
                data_dir: config.raft.data_dir.clone(),
                log_dir: config.raft.log_dir.clone(),
                cluster: config.raft.cluster.clone(),
                cluster_state: config.raft.cluster_state,
                tick: config.raft.tick_interval,
            })?),
            BrokerKind::Zk => Arc::new(ZkBroker::start(ZkOptions {
                servers: config.zk.addr.iter().map(|a| a.to_string()).collect(),
                base: config.zk.base_dir.clone(),
                http_addr,
                sentinel_addr: sentinel_advertised.clone(),
                session_timeout: config.zk.session_timeout,
            })?),
        };
        let (switchovers, switchover_rx) = Switchovers::new(config.switchover_timeout);
        let core = Arc::new(Core {
            broker,
            observed: Arc::new(Observations::default()),
            hooks: Arc::new(Hooks::default()),
            metrics: Arc::new(Metrics::new()),
            access: ApiAccess::new(config.api_token.clone(), config.api_token_reads),
            events: Arc::new(Events::default()),
            switchovers,
        });
        let (stopping, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let mut threads = Vec::new();
        if let Some(script) = &config.notify_script {
            let events = core.events.subscribe();
            let timeout = config.notify_script_timeout;
            threads.push(
                crate::notify::spawn(script.clone(), timeout, events, stop_rx.clone())
                    .map_err(|e| Error::Io(format!("cannot start a thread: {e}")))?,
            );
        }
        if let Some(seed) = seed_action(&config) {
            if config.broker == BrokerKind::Standalone {
                core.broker.propose(seed)?;
            } else {
                threads.push(spawn_seeder(core.clone(), seed, stop_rx)?);
            }
        }
        http.serve(core.clone())?;
        let sentinel = match &config.sentinel_addr {
            Some(addr) => Some(SentinelPort::start(
                addr,
                core.clone(),
                config.max_down_time.as_millis() as u64,
            )?),
            None => None,
        };
        let node_options = node_options(&config);
        let (failover_tx, failover_rx) = crossbeam_channel::unbounded();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let (shutdown_tx, shutdown_rx) = crossbeam_channel::bounded(1);
        let io = |e: std::io::Error| Error::Io(format!("cannot start a thread: {e}"));
        let worker = spawn_worker(
            FailoverContext {
                broker: core.broker.clone(),
                hooks: core.hooks.clone(),
                observed: core.observed.clone(),
                metrics: core.metrics.clone(),
                events: core.events.clone(),
                node_options: failover_options(&node_options),
                max_down_time: config.max_down_time,
            },
            failover_rx,
            done_tx,
        )
        .map_err(io)?;
        let monitor = spawn_monitor(
            MonitorContext {
                broker: core.broker.clone(),
                observed: core.observed.clone(),
                metrics: core.metrics.clone(),
                events: core.events.clone(),
                node_options,
                check_interval: config.check_interval,
                max_down_time: config.max_down_time,
            },
            MonitorChannels {
                failover_requests: failover_tx,
                failover_done: done_rx,
                switchovers: switchover_rx,
                shutdown: shutdown_rx,
            },
        )
        .map_err(io)?;
        log::info!(
            "redis-failover {} listening on http://{}, checking every {} ms, down after {} ms",
            env!("CARGO_PKG_VERSION"),
            http.local_addr(),
            config.check_interval.as_millis(),
            config.max_down_time.as_millis()
        );
        // The monitor is joined first: it owns the worker's request channel.
        threads.insert(0, monitor);
        threads.insert(1, worker);
        Ok(App {
            core,
            http,
            sentinel,
            shutdown: Some(shutdown_tx),
            stopping: Some(stopping),
            threads,
        })
    }

    /// What the API surfaces share: groups, observations, metrics (for `systemd.rs`).
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The address the Sentinel-compatible port is bound to, when it is on.
    pub fn sentinel_addr(&self) -> Option<SocketAddr> {
        self.sentinel.as_ref().map(SentinelPort::local_addr)
    }

    /// The address the HTTP API is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// Registers a hook run before each failover; returning `Err(reason)` vetoes it.
    pub fn on_before_failover(
        &self,
        hook: impl Fn(&str, &Addr) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) {
        self.core.hooks.add_before(Box::new(hook));
    }

    /// Registers a hook run after each successful failover with `(group, old, new)`.
    pub fn on_after_failover(&self, hook: impl Fn(&str, &Addr, &Addr) + Send + Sync + 'static) {
        self.core.hooks.add_after(Box::new(hook));
    }

    pub fn masters(&self) -> Vec<Addr> {
        self.core.masters()
    }

    pub fn add_masters(&self, specs: Vec<MasterSpec>) -> Result<()> {
        self.core.add(specs)
    }

    pub fn remove_masters(&self, names_or_addrs: Vec<String>) -> Result<()> {
        self.core.remove(names_or_addrs)
    }

    pub fn set_masters(&self, specs: Vec<MasterSpec>) -> Result<()> {
        self.core.set(specs)
    }

    pub fn groups(&self) -> Vec<GroupStatus> {
        self.core.groups()
    }

    pub fn cluster(&self) -> ClusterStatus {
        self.core.cluster()
    }

    /// Stops the HTTP API, the monitor, the checkers, the failover worker and the
    /// broker, and joins them. A failover under way is finished first.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.http.stop();
        if let Some(sentinel) = &mut self.sentinel {
            sentinel.stop();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.stopping.take();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
        self.core.broker.shutdown();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The config file's masters as an action: `masters_state=new` replaces the saved
/// groups, `existing` adds the ones not watched yet.
fn seed_action(config: &Config) -> Option<Action> {
    let specs: Vec<GroupSpec> = config
        .masters
        .iter()
        .cloned()
        .map(GroupSpec::from)
        .collect();
    match config.masters_state {
        StartState::New => Some(Action::Set(specs)),
        StartState::Existing if specs.is_empty() => None,
        StartState::Existing => Some(Action::Seed(specs)),
    }
}

/// Proposes the config file's masters once the cluster can take a write (a cluster
/// may still be electing its first leader when the daemon starts).
fn spawn_seeder(core: Arc<Core>, seed: Action, stop: Receiver<()>) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("seed-masters".into())
        .spawn(move || {
            let mut attempts = 0u32;
            loop {
                match core.broker.propose(seed.clone()) {
                    Ok(()) => {
                        log::info!("the configured masters are in the cluster's state");
                        return;
                    }
                    Err(Error::InvalidInput(e)) => {
                        log::error!("the configured masters were refused: {e}");
                        return;
                    }
                    Err(e) => {
                        attempts += 1;
                        if attempts % 10 == 1 {
                            log::warn!("cannot record the configured masters yet ({e}); retrying");
                        }
                    }
                }
                match stop.recv_timeout(Duration::from_millis(500)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })
        .map_err(|e| Error::Io(format!("cannot start a thread: {e}")))
}

/// The HTTP address peers and clients should use: a wildcard listener is advertised
/// under the raft address's host (or loopback).
fn advertised_http_addr(bound: SocketAddr, config: &Config) -> String {
    advertised(
        &Addr {
            host: bound.ip().to_string(),
            port: bound.port(),
        },
        config,
    )
}

/// A listen address as others should dial it: a wildcard host becomes the raft
/// address's host (or loopback).
fn advertised(listen: &Addr, config: &Config) -> String {
    let wildcard = matches!(listen.host.as_str(), "0.0.0.0" | "::" | "[::]" | "");
    if !wildcard {
        return listen.to_string();
    }
    let host = config
        .raft
        .addr
        .as_ref()
        .map(|a| a.host.clone())
        .filter(|h| h != "0.0.0.0" && h != "::" && !h.is_empty())
        .unwrap_or_else(|| "127.0.0.1".into());
    format!("{host}:{}", listen.port)
}

/// Timeouts shorter than the check interval, so one check never overlaps the next.
fn node_options(config: &Config) -> NodeOptions {
    let timeout =
        (config.check_interval * 3 / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    NodeOptions {
        connect_timeout: timeout,
        io_timeout: timeout,
        username: config.redis_username.clone(),
        password: config.redis_password.clone(),
    }
}

/// Failover commands may wait on a busy server longer than a check does.
fn failover_options(check: &NodeOptions) -> NodeOptions {
    NodeOptions {
        connect_timeout: check.connect_timeout.max(Duration::from_millis(500)),
        io_timeout: check.io_timeout.max(Duration::from_secs(2)),
        ..check.clone()
    }
}
