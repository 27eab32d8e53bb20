//! Running under systemd (`Type=notify`, see `etc/redis-failover.service`): the
//! `sd_notify` protocol through the `sd-notify` crate, one datagram per message to
//! `$NOTIFY_SOCKET`.
//!
//! - `READY=1` once [`crate::App::start`] has returned: the HTTP listener is bound and
//!   the broker, monitor and failover worker run.
//! - `STATUS=...` whenever the summary changes: groups watched, leader or follower,
//!   the last failover (see [`status_line`]).
//! - `WATCHDOG=1` every half of `$WATCHDOG_USEC`, but only while the heartbeats of the
//!   monitor and of every checker thread are fresh (each beats on every turn of its
//!   loop, at least every [`crate::monitor::HEARTBEAT_PERIOD`]). A monitor or checker
//!   that hangs stops the pings, and systemd restarts the daemon; a free-running timer
//!   would ping on regardless.
//! - `STOPPING=1` when SIGTERM or SIGINT arrives, before shutting down.
//!
//! Without `$NOTIFY_SOCKET` (not under systemd) none of this runs.

use super::logging::timestamp;
use crate::daemon::Daemon;
use crate::observe::status::WatchState;
use crate::shutdown::Shutdown;
use sd_notify::NotifyState;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

/// How often the status line is refreshed when no watchdog asks for more.
pub const STATUS_PERIOD: Duration = Duration::from_secs(5);
/// The monitor's heartbeat counts as fresh for at least this long (four of its turns),
/// or for half the watchdog timeout when that is longer.
pub const MIN_STALE_AFTER: Duration = Duration::from_secs(2);

/// Sends notifications: to systemd's socket in production, to a test's channel in
/// tests.
pub type Notify = Arc<dyn Fn(&[NotifyState]) -> io::Result<()> + Send + Sync>;

/// Whether a heartbeat of this age is fresh enough to ping a watchdog of this timeout.
pub fn heartbeat_is_fresh(age: Duration, watchdog: Duration) -> bool {
    age <= (watchdog / 2).max(MIN_STALE_AFTER)
}

/// The `STATUS=` text: `watching 3 groups (2 ok); leader; last failover: cache
/// 10.0.0.1:6379 -> 10.0.0.2:6379 succeeded at 2026-11-25T20:15:00.123Z in 3 ms`.
pub fn status_line(daemon: &Daemon) -> String {
    let state = daemon.broker.state();
    let ok = {
        let observed = daemon.observed.lock();
        state
            .groups
            .keys()
            .filter(|name| {
                observed
                    .get(*name)
                    .is_some_and(|o| o.state == WatchState::Ok)
            })
            .count()
    };
    let role = if daemon.broker.is_acting() {
        "leader"
    } else {
        "follower"
    };
    let last = match state.history.back() {
        Some(r) => format!(
            "last failover: {} {} -> {} {} at {} in {} ms",
            r.group,
            r.old_master,
            r.new_master
                .as_ref()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
            format!("{:?}", r.outcome).to_lowercase(),
            timestamp(UNIX_EPOCH + Duration::from_millis(r.started_at_ms)),
            r.duration_ms
        ),
        None => "no failover yet".into(),
    };
    let groups = state.groups.len();
    let plural = if groups == 1 { "" } else { "s" };
    format!("watching {groups} group{plural} ({ok} ok); {role}; {last}")
}

/// The systemd side of a running daemon: started after the app, told when it stops.
pub struct Service {
    notify: Option<Notify>,
    stop: Shutdown,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC`; when under systemd, sends `READY=1`
    /// with a first status and starts the thread that refreshes the status and pings
    /// the watchdog. Does nothing otherwise.
    pub fn start(daemon: Arc<Daemon>) -> Service {
        let under_systemd = std::env::var_os("NOTIFY_SOCKET").is_some_and(|v| !v.is_empty());
        if !under_systemd {
            return Service {
                notify: None,
                stop: Shutdown::new(),
                thread: None,
            };
        }
        let watchdog = sd_notify::watchdog_enabled().filter(|w| !w.is_zero());
        Service::start_with(daemon, Arc::new(sd_notify::notify), watchdog)
    }

    /// [`Service::start`] with where to send and the watchdog timeout given rather than
    /// read from the environment.
    pub fn start_with(daemon: Arc<Daemon>, notify: Notify, watchdog: Option<Duration>) -> Service {
        let status = status_line(&daemon);
        match notify(&[NotifyState::Ready, NotifyState::Status(&status)]) {
            Ok(()) => log::info!(
                "systemd: told READY=1{}",
                watchdog
                    .map(|w| format!("; watchdog every {} ms", (w / 2).as_millis()))
                    .unwrap_or_default()
            ),
            Err(e) => log::warn!("systemd: cannot send READY=1: {e}"),
        }
        let stop = Shutdown::new();
        let period = watchdog.map_or(STATUS_PERIOD, |w| (w / 2).min(STATUS_PERIOD));
        let thread = {
            let notify = notify.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("systemd".into())
                .spawn(move || notify_until(&stop, &daemon, &notify, status, period, watchdog))
        };
        let thread = match thread {
            Ok(handle) => Some(handle),
            Err(e) => {
                log::error!("systemd: cannot start the notifier thread: {e}");
                None
            }
        };
        Service {
            notify: Some(notify),
            stop,
            thread,
        }
    }

    /// Sends `STOPPING=1` and stops the notifier thread: call it when a stop signal
    /// arrives, before shutting the app down.
    pub fn stopping(mut self) {
        if let Some(notify) = &self.notify
            && let Err(e) = notify(&[NotifyState::Stopping, NotifyState::Status("stopping")])
        {
            log::debug!("systemd: cannot send STOPPING=1: {e}");
        }
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.trigger();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// The notifier thread: every `period`, a watchdog ping while the monitor's heartbeat is
/// fresh, and the status when it changed.
fn notify_until(
    stop: &Shutdown,
    daemon: &Daemon,
    notify: &Notify,
    mut last_status: String,
    period: Duration,
    watchdog: Option<Duration>,
) {
    let mut withheld = false;
    while !stop.wait(period) {
        let mut ping = false;
        if let Some(timeout) = watchdog {
            let (thread, age) = daemon.metrics.stalest_heartbeat();
            if heartbeat_is_fresh(age, timeout) {
                ping = true;
                withheld = false;
            } else if !withheld {
                log::error!(
                    "systemd: the {thread} loop has not turned for {} ms; the watchdog is no longer pinged, so systemd will restart the daemon",
                    age.as_millis()
                );
                withheld = true;
            }
        }
        let status = status_line(daemon);
        let changed = status != last_status;
        let mut states = Vec::new();
        if ping {
            states.push(NotifyState::Watchdog);
        }
        if changed {
            states.push(NotifyState::Status(&status));
        }
        if !states.is_empty()
            && let Err(e) = notify(&states)
        {
            log::debug!("systemd: cannot notify: {e}");
        }
        if changed {
            last_status = status;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::standalone::StandaloneBroker;
    use crossbeam_channel::Receiver;

    /// A notifier that hands each message, as systemd would receive it, to a channel.
    fn channel_notifier() -> (Notify, Receiver<String>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let notify: Notify = Arc::new(move |states: &[NotifyState]| {
            let text: String = states.iter().map(|s| format!("{s}\n")).collect();
            let _ = tx.send(text);
            Ok(())
        });
        (notify, rx)
    }

    /// Messages received within `window`.
    fn drain(messages: &Receiver<String>, window: Duration) -> Vec<String> {
        let end = std::time::Instant::now() + window;
        let mut got = Vec::new();
        while let Ok(m) = messages.recv_deadline(end) {
            got.push(m);
        }
        got
    }

    #[test]
    fn the_watchdog_is_pinged_only_while_the_monitor_beats() {
        // A daemon with no monitor: the test beats the heartbeat itself, then stops.
        let daemon = Arc::new(Daemon {
            broker: Arc::new(StandaloneBroker::default()),
            observed: Default::default(),
            hooks: Default::default(),
            metrics: Default::default(),
            events: Default::default(),
            switchovers: Default::default(),
            manual_failovers: Default::default(),
            failover_block: Default::default(),
        });
        let (notify, messages) = channel_notifier();
        let service = Service::start_with(daemon.clone(), notify, Some(Duration::from_millis(200)));
        let first = messages.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(
            first.starts_with("READY=1\nSTATUS=watching 0 groups"),
            "{first}"
        );

        // Beating: a ping every 100 ms.
        let beating = std::time::Instant::now();
        let mut pings = 0;
        while beating.elapsed() < Duration::from_millis(600) {
            daemon.metrics.monitor_heartbeat().beat();
            pings += drain(&messages, Duration::from_millis(50))
                .iter()
                .filter(|m| m.contains("WATCHDOG=1"))
                .count();
        }
        assert!(pings >= 2, "{pings} pings in 600 ms of beating");

        // Silent for longer than MIN_STALE_AFTER: the pings stop.
        let _ = drain(&messages, MIN_STALE_AFTER + Duration::from_millis(300));
        let late = drain(&messages, Duration::from_millis(500));
        assert!(
            late.iter().all(|m| !m.contains("WATCHDOG=1")),
            "pinged with a stale heartbeat: {late:?}"
        );
        // Beating again resumes them.
        daemon.metrics.monitor_heartbeat().beat();
        let resumed = drain(&messages, Duration::from_millis(300));
        assert!(
            resumed.iter().any(|m| m.contains("WATCHDOG=1")),
            "{resumed:?}"
        );
        service.stopping();
        let last = drain(&messages, Duration::from_millis(100));
        assert!(last.iter().any(|m| m.starts_with("STOPPING=1")), "{last:?}");
    }

    #[test]
    fn a_stale_heartbeat_withholds_the_ping() {
        let timeout = Duration::from_secs(10);
        assert!(heartbeat_is_fresh(Duration::from_secs(1), timeout));
        assert!(!heartbeat_is_fresh(Duration::from_secs(6), timeout));
        // A short watchdog still allows a few turns of the monitor loop.
        let short = Duration::from_millis(500);
        assert!(heartbeat_is_fresh(Duration::from_millis(1500), short));
        assert!(!heartbeat_is_fresh(Duration::from_secs(3), short));
    }
}
