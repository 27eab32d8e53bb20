//! Running under systemd (`Type=notify`, see `etc/redis-failover.service`): the
//! `sd_notify` protocol spoken directly, one datagram per message to `$NOTIFY_SOCKET`
//! (a path, or an abstract socket when it starts with `@`). No crate needed.
//!
//! - `READY=1` once [`crate::App::start`] has returned: the HTTP listener is bound and
//!   the broker, monitor and failover worker run.
//! - `STATUS=...` whenever the summary changes: groups watched, leader or follower,
//!   the last failover (see [`status_line`]).
//! - `WATCHDOG=1` every half of `$WATCHDOG_USEC`, but only while the monitor's
//!   heartbeat is fresh (it beats on every turn of its loop, at least every
//!   [`crate::monitor::HEARTBEAT_PERIOD`]). A monitor that hangs stops the pings, and
//!   systemd restarts the daemon; a free-running timer would ping on regardless.
//! - `STOPPING=1` when SIGTERM or SIGINT arrives, before shutting down.
//!
//! Without `$NOTIFY_SOCKET` (not under systemd) none of this runs.

use crate::app::Core;
use crate::logging::timestamp;
use crate::status::WatchState;
use crossbeam_channel::{RecvTimeoutError, Sender};
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

/// How often the status line is refreshed when no watchdog asks for more.
pub const STATUS_PERIOD: Duration = Duration::from_secs(5);
/// The monitor's heartbeat counts as fresh for at least this long (four of its turns),
/// or for half the watchdog timeout when that is longer.
pub const MIN_STALE_AFTER: Duration = Duration::from_secs(2);

/// A socket to systemd's notification socket.
pub struct Notifier {
    socket: UnixDatagram,
    target: SocketAddr,
    described: String,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when it is unset or empty.
    pub fn from_env() -> Option<io::Result<Notifier>> {
        let path = std::env::var("NOTIFY_SOCKET").ok()?;
        (!path.is_empty()).then(|| Notifier::connect(&path))
    }

    /// A notifier for a socket path, or for an abstract socket written `@name`.
    pub fn connect(path: &str) -> io::Result<Notifier> {
        let target = match path.strip_prefix('@') {
            Some(name) => abstract_address(name.as_bytes())?,
            None => SocketAddr::from_pathname(path)?,
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            target,
            described: path.to_string(),
        })
    }

    /// Sends one message, such as `READY=1` or `STATUS=...\nWATCHDOG=1`.
    pub fn send(&self, message: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(message.as_bytes(), &self.target)
            .map(|_| ())
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

/// The watchdog timeout systemd asks for: `$WATCHDOG_USEC`, when `$WATCHDOG_PID` is
/// unset or names this process (as `sd_watchdog_enabled` reads them).
pub fn watchdog_timeout(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok() != Some(my_pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Whether a heartbeat of this age is fresh enough to ping a watchdog of this timeout.
pub fn heartbeat_is_fresh(age: Duration, watchdog: Duration) -> bool {
    age <= (watchdog / 2).max(MIN_STALE_AFTER)
}

/// The `STATUS=` text: `watching 3 groups (2 ok); leader; last failover: cache
/// 10.0.0.1:6379 -> 10.0.0.2:6379 succeeded at 2026-11-25T20:15:00.123Z in 3 ms`.
pub fn status_line(core: &Core) -> String {
    let state = core.broker.state();
    let ok = {
        let observed = core.observed.lock();
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
    let role = if core.broker.is_leader() {
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
    notifier: Option<Arc<Notifier>>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC`; when under systemd, sends `READY=1`
    /// with a first status and starts the thread that refreshes the status and pings
    /// the watchdog. Does nothing otherwise.
    pub fn start(core: Arc<Core>) -> Service {
        let notifier = match Notifier::from_env() {
            None => return Service::idle(),
            Some(Err(e)) => {
                log::warn!("systemd: cannot use NOTIFY_SOCKET: {e}");
                return Service::idle();
            }
            Some(Ok(notifier)) => notifier,
        };
        let watchdog = watchdog_timeout(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        Service::start_with(core, notifier, watchdog)
    }

    fn idle() -> Service {
        Service {
            notifier: None,
            stop: None,
            thread: None,
        }
    }

    /// [`Service::start`] with the socket and watchdog timeout given rather than read
    /// from the environment.
    pub fn start_with(core: Arc<Core>, notifier: Notifier, watchdog: Option<Duration>) -> Service {
        let notifier = Arc::new(notifier);
        let status = status_line(&core);
        match notifier.send(&format!("READY=1\nSTATUS={status}")) {
            Ok(()) => log::info!(
                "systemd: told {} READY=1{}",
                notifier.described,
                watchdog
                    .map(|w| format!("; watchdog every {} ms", (w / 2).as_millis()))
                    .unwrap_or_default()
            ),
            Err(e) => log::warn!(
                "systemd: cannot send READY=1 to {}: {e}",
                notifier.described
            ),
        }
        let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
        let period = watchdog.map_or(STATUS_PERIOD, |w| (w / 2).min(STATUS_PERIOD));
        let sender = notifier.clone();
        let thread = std::thread::Builder::new()
            .name("systemd".into())
            .spawn(move || {
                let mut last_status = status;
                let mut withheld = false;
                // Until `stop` is dropped (or sent on).
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    let mut message = String::new();
                    if let Some(timeout) = watchdog {
                        let age = core.metrics.monitor_heartbeat().age();
                        if heartbeat_is_fresh(age, timeout) {
                            message.push_str("WATCHDOG=1\n");
                            withheld = false;
                        } else if !withheld {
                            log::error!(
                                "systemd: the monitor loop has not turned for {} ms; the watchdog is no longer pinged, so systemd will restart the daemon",
                                age.as_millis()
                            );
                            withheld = true;
                        }
                    }
                    let status = status_line(&core);
                    if status != last_status {
                        message.push_str(&format!("STATUS={status}\n"));
                        last_status = status;
                    }
                    if !message.is_empty()
                        && let Err(e) = sender.send(message.trim_end())
                    {
                        log::debug!("systemd: cannot notify: {e}");
                    }
                }
            });
        let thread = match thread {
            Ok(handle) => Some(handle),
            Err(e) => {
                log::error!("systemd: cannot start the notifier thread: {e}");
                None
            }
        };
        Service {
            notifier: Some(notifier),
            stop: Some(stop),
            thread,
        }
    }

    /// Sends `STOPPING=1` and stops the notifier thread: call it when a stop signal
    /// arrives, before shutting the app down.
    pub fn stopping(mut self) {
        if let Some(notifier) = &self.notifier
            && let Err(e) = notifier.send("STOPPING=1\nSTATUS=stopping")
        {
            log::debug!("systemd: cannot send STOPPING=1: {e}");
        }
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.take();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification within 5 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn notifies_a_socket_path() {
        let dir = std::env::temp_dir().join(format!("rf-sd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::connect(path.to_str().unwrap()).unwrap();
        notifier.send("READY=1").unwrap();
        assert_eq!(receive(&listener), "READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn notifies_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("rf-sd-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let notifier = Notifier::connect(&format!("@{name}")).unwrap();
        notifier.send("WATCHDOG=1").unwrap();
        assert_eq!(receive(&listener), "WATCHDOG=1");
    }

    #[test]
    fn watchdog_settings_follow_sd_watchdog_enabled() {
        let s = Duration::from_secs(1);
        assert_eq!(watchdog_timeout(Some("1000000"), None, 7), Some(s));
        assert_eq!(watchdog_timeout(Some("1000000"), Some("7"), 7), Some(s));
        assert_eq!(watchdog_timeout(Some("1000000"), Some("8"), 7), None);
        assert_eq!(watchdog_timeout(Some("0"), None, 7), None);
        assert_eq!(watchdog_timeout(Some("soon"), None, 7), None);
        assert_eq!(watchdog_timeout(None, None, 7), None);
    }

    /// Datagrams received within `window`.
    fn drain(socket: &UnixDatagram, window: Duration) -> Vec<String> {
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let end = std::time::Instant::now() + window;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while std::time::Instant::now() < end {
            if let Ok(n) = socket.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got
    }

    #[test]
    fn the_watchdog_is_pinged_only_while_the_monitor_beats() {
        use crate::api_auth::ApiAccess;
        use crate::broker::standalone::StandaloneBroker;
        // A core with no monitor: the test beats the heartbeat itself, then stops.
        let core = Arc::new(Core {
            broker: Arc::new(StandaloneBroker::default()),
            observed: Default::default(),
            hooks: Default::default(),
            metrics: Default::default(),
            access: ApiAccess::default(),
            events: Default::default(),
            switchovers: Default::default(),
        });
        let name = format!("rf-sd-watchdog-{}", std::process::id());
        let listener = {
            use std::os::linux::net::SocketAddrExt;
            let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            UnixDatagram::bind_addr(&addr).unwrap()
        };
        let notifier = Notifier::connect(&format!("@{name}")).unwrap();
        let service = Service::start_with(core.clone(), notifier, Some(Duration::from_millis(200)));
        assert!(receive(&listener).starts_with("READY=1\nSTATUS=watching 0 groups"));

        // Beating: a ping every 100 ms.
        let beating = std::time::Instant::now();
        let mut pings = 0;
        while beating.elapsed() < Duration::from_millis(600) {
            core.metrics.monitor_heartbeat().beat();
            pings += drain(&listener, Duration::from_millis(50))
                .iter()
                .filter(|m| m.contains("WATCHDOG=1"))
                .count();
        }
        assert!(pings >= 2, "{pings} pings in 600 ms of beating");

        // Silent for longer than MIN_STALE_AFTER: the pings stop.
        let _ = drain(&listener, MIN_STALE_AFTER + Duration::from_millis(300));
        let late = drain(&listener, Duration::from_millis(500));
        assert!(
            late.iter().all(|m| !m.contains("WATCHDOG=1")),
            "pinged with a stale heartbeat: {late:?}"
        );
        // Beating again resumes them.
        core.metrics.monitor_heartbeat().beat();
        let resumed = drain(&listener, Duration::from_millis(300));
        assert!(
            resumed.iter().any(|m| m.contains("WATCHDOG=1")),
            "{resumed:?}"
        );
        service.stopping();
        assert!(receive(&listener).starts_with("STOPPING=1"));
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
