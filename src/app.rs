//! [`App`]: the composition root. It creates every thread of the daemon (the map is in
//! `lib.rs`), wires their channels, and stops them again. `main.rs` is a thin shell
//! around it, and another program can start one in-process, hook into its failovers and
//! stop it.

use crate::address::{Addr, MasterSpec};
use crate::api::auth::ApiAccess;
use crate::api::http::HttpApi;
use crate::api::sentinel::SentinelPort;
use crate::broker::raft::{RaftBroker, RaftOptions};
use crate::broker::standalone::StandaloneBroker;
use crate::broker::zk::{ZkBroker, ZkOptions};
use crate::broker::{Action, Broker, ClusterStatus, GroupSpec};
use crate::clock::SystemClock;
use crate::config::{BrokerKind, Config, StartState};
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::monitor::{self, MonitorChannels, MonitorContext};
use crate::net::tls::Tls;
use crate::observe::events::Events;
use crate::observe::metrics::Metrics;
use crate::observe::status::{GroupStatus, Observations};
use crate::redis::NodeOptions;
use crate::shutdown::Shutdown;
use crate::worker::hooks::Hooks;
use crate::worker::manual_failover::{ManualFailoverCommand, ManualFailovers};
use crate::worker::switchover_request::{SwitchoverCommand, Switchovers};
use crate::worker::{self, RedisServers, WorkerContext};
use crossbeam_channel::Receiver;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
    daemon: Arc<Daemon>,
    http: HttpApi,
    sentinel: Option<SentinelPort>,
    /// The TLS material, when anything uses TLS: reloaded by [`App::reload_tls`].
    tls: Option<Arc<Tls>>,
    shutdown: Shutdown,
    /// Joined in order: the monitor first (it owns the worker's job channel), then the
    /// worker, then the helpers.
    threads: Vec<JoinHandle<()>>,
}

fn thread_error(e: std::io::Error) -> Error {
    Error::Io(format!("cannot start a thread: {e}"))
}

impl App {
    /// Binds the HTTP API and starts monitoring the configured masters.
    pub fn start(config: Config) -> Result<App> {
        config.warn_open_secret_files();
        let tls = load_tls(&config)?;
        let https = tls.as_ref().filter(|_| config.tls.http);
        let http = HttpApi::bind(&config.addr, https)?;
        let http_addr = advertised(&Addr::from(http.local_addr()), &config);
        let broker = start_broker(&config, http_addr, tls.as_ref())?;
        let (switchovers, switchover_rx) = Switchovers::new(config.switchover_timeout);
        let (manual_failovers, manual_failover_rx) = ManualFailovers::new();
        let daemon = Arc::new(Daemon {
            broker,
            observed: Arc::new(Observations::default()),
            hooks: Arc::new(Hooks::default()),
            metrics: Arc::new(Metrics::new()),
            events: Arc::new(Events::default()),
            switchovers,
            manual_failovers,
            failover_block: config.failover_block,
        });
        let mut app = App {
            daemon,
            http,
            sentinel: None,
            tls,
            shutdown: Shutdown::new(),
            threads: Vec::new(),
        };
        if let Some(script) = &config.pre_failover_script {
            let timeout = config.pre_failover_script_timeout;
            let hook = crate::host::veto_script::hook(script.clone(), timeout);
            app.daemon.hooks.add_before_promote(hook);
        }
        // Should a thread fail to start, dropping `app` stops those that did.
        app.start_monitor_and_worker(&config, (switchover_rx, manual_failover_rx))?;
        app.start_helpers(&config)?;
        let access = ApiAccess::new(config.api_token.clone(), config.api_token_reads)
            .with_allowed_hosts(config.http_allowed_hosts.clone());
        app.http.serve(
            app.daemon.clone(),
            access.clone(),
            app.tls.clone(),
            &app.shutdown,
        )?;
        if let Some(addr) = &config.sentinel_addr {
            let down_after_ms = config.max_down_time.as_millis() as u64;
            let tls = app.tls.as_ref().filter(|_| config.tls.sentinel);
            let port = SentinelPort::start(
                addr,
                app.daemon.clone(),
                access,
                down_after_ms,
                config.quorum,
                tls,
                &app.shutdown,
            )?;
            app.sentinel = Some(port);
        }
        log::info!(
            "redis-failover {} listening on {}://{}, checking every {} ms, down after {} ms",
            env!("CARGO_PKG_VERSION"),
            app.http.scheme(),
            app.http.local_addr(),
            config.check_interval.as_millis(),
            config.max_down_time.as_millis()
        );
        Ok(app)
    }

    /// The monitor (with its checker pool) and the failover worker, and the channels
    /// between them.
    fn start_monitor_and_worker(
        &mut self,
        config: &Config,
        asked: (Receiver<SwitchoverCommand>, Receiver<ManualFailoverCommand>),
    ) -> Result<()> {
        let (switchovers, manual_failovers) = asked;
        let daemon = &self.daemon;
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        let (reports_tx, reports_rx) = crossbeam_channel::unbounded();
        let mut node_options = check_options(config);
        node_options.tls = self.tls.clone().filter(|_| config.tls.data_nodes);
        let worker_node_options = worker_options(&node_options);
        let worker_context = WorkerContext {
            broker: daemon.broker.clone(),
            hooks: daemon.hooks.clone(),
            observed: daemon.observed.clone(),
            metrics: daemon.metrics.clone(),
            events: daemon.events.clone(),
            servers: Arc::new(RedisServers::new(worker_node_options.clone())),
            clock: Arc::new(SystemClock),
            node_options: worker_node_options,
            max_down_time: config.max_down_time,
            fresh_io: config.check_interval.max(Duration::from_secs(1)),
        };
        let monitor_context = MonitorContext {
            broker: daemon.broker.clone(),
            observed: daemon.observed.clone(),
            metrics: daemon.metrics.clone(),
            events: daemon.events.clone(),
            node_options,
            check_interval: config.check_interval,
            max_down_time: config.max_down_time,
            quorum: config.quorum,
            min_replicas: config.min_replicas,
            failover_block: config.failover_block,
        };
        let channels = MonitorChannels {
            worker_jobs: jobs_tx,
            worker_reports: reports_rx,
            switchovers,
            manual_failovers,
            shutdown: self.shutdown.clone(),
        };
        // The monitor first: it owns the worker's job channel, so it is joined first.
        let monitor = monitor::spawn(monitor_context, channels).map_err(thread_error)?;
        self.threads.push(monitor);
        let worker = worker::spawn(worker_context, jobs_rx, reports_tx).map_err(thread_error)?;
        self.threads.push(worker);
        Ok(())
    }

    /// The notification script runner and the seeder of the configured masters.
    fn start_helpers(&mut self, config: &Config) -> Result<()> {
        if let Some(script) = &config.notify_script {
            let events = self.daemon.events.subscribe();
            let runner = crate::host::notify_script::spawn(
                script.clone(),
                config.notify_script_timeout,
                events,
                self.shutdown.clone(),
            );
            self.threads.push(runner.map_err(thread_error)?);
        }
        if let Some(seed) = seed_action(config) {
            if config.broker == BrokerKind::Standalone {
                self.daemon.broker.propose(seed)?;
            } else {
                let seeder = spawn_seeder(self.daemon.clone(), seed, self.shutdown.clone())?;
                self.threads.push(seeder);
            }
        }
        Ok(())
    }

    /// What the API surfaces share: groups, observations, metrics (for `host/systemd.rs`).
    pub fn daemon(&self) -> &Arc<Daemon> {
        &self.daemon
    }

    /// The address the Sentinel-compatible port is bound to, when it is on.
    pub fn sentinel_addr(&self) -> Option<SocketAddr> {
        self.sentinel.as_ref().map(SentinelPort::local_addr)
    }

    /// The address the HTTP API is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// Reads the TLS certificates, keys and CA from disk again (SIGHUP, `POST
    /// /api/v1/reload`). Connections opened from now on use them; open ones keep their
    /// session, so nothing is dropped. On error the old material stays in use. Returns
    /// what is loaded, or None when TLS is off.
    pub fn reload_tls(&self) -> Result<Option<String>> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        tls.reload().map(Some).map_err(|e| {
            Error::InvalidInput(format!(
                "TLS reload failed, the previous certificates stay in use: {e}"
            ))
        })
    }

    /// Registers a hook run before each failover; returning `Err(reason)` vetoes it.
    pub fn on_before_failover(
        &self,
        hook: impl Fn(&str, &Addr) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) {
        self.daemon.hooks.add_before(Box::new(hook));
    }

    /// Registers a hook run after each successful failover with `(group, old, new)`.
    pub fn on_after_failover(&self, hook: impl Fn(&str, &Addr, &Addr) + Send + Sync + 'static) {
        self.daemon.hooks.add_after(Box::new(hook));
    }

    pub fn masters(&self) -> Vec<Addr> {
        self.daemon.masters()
    }

    pub fn add_masters(&self, specs: Vec<MasterSpec>) -> Result<()> {
        self.daemon.add(specs)
    }

    pub fn remove_masters(&self, names_or_addrs: Vec<String>) -> Result<()> {
        self.daemon.remove(names_or_addrs)
    }

    pub fn set_masters(&self, specs: Vec<MasterSpec>) -> Result<()> {
        self.daemon.set(specs)
    }

    pub fn groups(&self) -> Vec<GroupStatus> {
        self.daemon.groups()
    }

    pub fn cluster(&self) -> ClusterStatus {
        self.daemon.cluster()
    }

    /// Stops the HTTP API, the Sentinel port, the monitor, the checkers, the failover
    /// worker and the broker, and joins them. A failover under way is finished first.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shutdown.trigger();
        self.http.join();
        if let Some(sentinel) = &mut self.sentinel {
            sentinel.join();
        }
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
        // Last: the worker may have been recording the end of a failover.
        self.daemon.broker.shutdown();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The TLS material, when any connection uses TLS (the files were checked by the
/// config already; they may have changed since).
fn load_tls(config: &Config) -> Result<Option<Arc<Tls>>> {
    if !config.tls.in_use() {
        return Ok(None);
    }
    let tls =
        Tls::load(config.tls.options.clone()).map_err(|e| Error::InvalidInput(e.to_string()))?;
    tls.log_loaded();
    Ok(Some(Arc::new(tls)))
}

/// The cluster this daemon belongs to, as configured.
fn start_broker(
    config: &Config,
    http_addr: String,
    tls: Option<&Arc<Tls>>,
) -> Result<Arc<dyn Broker>> {
    let sentinel_addr = config.sentinel_addr.as_ref().map(|a| advertised(a, config));
    Ok(match config.broker {
        BrokerKind::Standalone => Arc::new(StandaloneBroker::new(http_addr)),
        BrokerKind::Raft => Arc::new(RaftBroker::start(RaftOptions {
            raft_addr: config.raft.addr.clone().ok_or_else(|| {
                Error::InvalidInput("raft_addr: required with -broker=raft".into())
            })?,
            http_addr,
            sentinel_addr,
            data_dir: config.raft.data_dir.clone(),
            log_dir: config.raft.log_dir.clone(),
            cluster: config.raft.cluster.clone(),
            cluster_state: config.raft.cluster_state,
            tick: config.raft.tick_interval,
            secret: config.raft.secret.clone(),
            tls: tls.filter(|_| config.tls.raft).cloned(),
        })?),
        BrokerKind::Zk => Arc::new(ZkBroker::start(ZkOptions {
            servers: config.zk.addr.iter().map(|a| a.to_string()).collect(),
            base: config.zk.base_dir.clone(),
            http_addr,
            sentinel_addr,
            session_timeout: config.zk.session_timeout,
            auth: config.zk.auth.clone(),
        })?),
    })
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
fn spawn_seeder(daemon: Arc<Daemon>, seed: Action, shutdown: Shutdown) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("seed-masters".into())
        .spawn(move || {
            let mut attempts = 0u32;
            loop {
                match daemon.broker.propose(seed.clone()) {
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
                if shutdown.wait(Duration::from_millis(500)) {
                    return;
                }
            }
        })
        .map_err(thread_error)
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

/// Check timeouts: shorter than the check interval, so one check never overlaps the next.
fn check_options(config: &Config) -> NodeOptions {
    let timeout =
        (config.check_interval * 3 / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    NodeOptions {
        connect_timeout: timeout,
        io_timeout: timeout,
        username: config.redis_username.clone(),
        password: config.redis_password.clone(),
        tls: None,
    }
}

/// The worker's commands may wait on a busy server longer than a check does.
fn worker_options(check: &NodeOptions) -> NodeOptions {
    NodeOptions {
        connect_timeout: check.connect_timeout.max(Duration::from_millis(500)),
        io_timeout: check.io_timeout.max(Duration::from_secs(2)),
        ..check.clone()
    }
}
