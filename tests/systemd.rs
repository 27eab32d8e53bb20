//! Running under systemd: the daemon speaks the notify protocol to a `NOTIFY_SOCKET`
//! that the test creates, as systemd would with `Type=notify` and `WatchdogSec=1`.

mod support;

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Daemon, RedisServer, TempDir, wait_until};

/// Every datagram received, with when it came.
type Received = Arc<Mutex<Vec<(Instant, String)>>>;

/// Reads datagrams on `socket` into a shared list until the socket is shut down.
fn collect(socket: UnixDatagram) -> Received {
    let received: Received = Arc::default();
    let list = received.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            list.lock().unwrap().push((Instant::now(), text));
        }
    });
    received
}

fn messages(received: &Received) -> Vec<String> {
    received
        .lock()
        .unwrap()
        .iter()
        .map(|(_, m)| m.clone())
        .collect()
}

/// Waits until a received datagram has a line for which `wanted` holds; returns it.
fn wait_for_line(received: &Received, what: &str, wanted: impl Fn(&str) -> bool) -> String {
    wait_until(Duration::from_secs(10), what, || {
        let all = messages(received);
        all.iter()
            .flat_map(|m| m.lines())
            .find(|l| wanted(l))
            .map(String::from)
            .ok_or_else(|| format!("{all:?}"))
    })
}

#[test]
fn ready_status_watchdog_pings_and_stopping_on_sigterm() {
    let master = RedisServer::master();
    let dir = TempDir::new("systemd");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let received = collect(socket.try_clone().unwrap());
    let masters = format!("-masters=g={}", master.addr());
    let notify = path.to_str().unwrap();
    let mut daemon = Daemon::start_with_env(
        &[&masters, "-check_interval=100"],
        &[
            ("NOTIFY_SOCKET", Some(notify)),
            ("WATCHDOG_USEC", Some("1000000")),
        ],
    );

    // READY=1 comes with the first status, once App::start has returned.
    wait_for_line(&received, "READY=1", |l| l == "READY=1");
    let first = messages(&received);
    assert!(
        first[0].starts_with("READY=1\nSTATUS=watching 1 group"),
        "{first:?}"
    );
    // The status follows the group once its master answers.
    let status = wait_for_line(&received, "a STATUS line with the group ok", |l| {
        l.starts_with("STATUS=watching 1 group (1 ok); leader; no failover yet")
    });
    assert!(status.contains("leader"), "{status}");

    // WATCHDOG_USEC=1 s: a ping every 500 ms while the monitor loop turns.
    let pings = wait_until(Duration::from_secs(10), "three WATCHDOG=1 pings", || {
        let at: Vec<Instant> = received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
            .map(|(at, _)| *at)
            .collect();
        if at.len() >= 3 {
            Ok(at)
        } else {
            Err(format!("{} pings: {:?}", at.len(), messages(&received)))
        }
    });
    let gap = pings[2] - pings[1];
    assert!(
        gap < Duration::from_millis(900),
        "pings {gap:?} apart, for a 1 s watchdog"
    );

    let asked = Instant::now();
    let status = daemon
        .terminate()
        .expect("the daemon exits within 10 s of SIGTERM");
    let took = asked.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    wait_for_line(&received, "STOPPING=1", |l| l == "STOPPING=1");
    let _ = socket.shutdown(std::net::Shutdown::Both);
}

#[test]
fn without_notify_socket_nothing_is_sent_and_the_daemon_runs() {
    // WATCHDOG_USEC alone (no NOTIFY_SOCKET) must not start anything or fail.
    let mut daemon = Daemon::start_with_env(
        &["-check_interval=100"],
        &[("NOTIFY_SOCKET", None), ("WATCHDOG_USEC", Some("1000000"))],
    );
    let (status, _) = daemon.http("GET", "/metrics", "").unwrap();
    assert_eq!(status, 200);
    let exit = daemon.terminate().expect("exits after SIGTERM");
    assert!(exit.success(), "{exit:?}");
    assert!(!daemon.log().contains("systemd"), "{}", daemon.log());
}

#[test]
fn a_stalled_checker_stops_the_watchdog_pings() {
    let master = RedisServer::master();
    let dir = TempDir::new("systemd-stall");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let received = collect(socket.try_clone().unwrap());
    let masters = format!("-masters=g={}", master.addr());
    let notify = path.to_str().unwrap();
    // checker-0 stops turning 2 s after it starts (the test hook in worker/fault.rs).
    let daemon = Daemon::start_with_env(
        &[&masters, "-check_interval=100"],
        &[
            ("NOTIFY_SOCKET", Some(notify)),
            ("WATCHDOG_USEC", Some("1000000")),
            ("REDIS_FAILOVER_STALL_CHECKER_AFTER_MS", Some("2000")),
        ],
    );
    wait_for_line(&received, "a first WATCHDOG=1", |l| l == "WATCHDOG=1");
    let log = wait_until(
        Duration::from_secs(15),
        "the stalled checker to be noticed",
        || {
            let log = daemon.log();
            if log.contains("the checker-0 loop has not turned") {
                Ok(log)
            } else {
                Err(log)
            }
        },
    );
    assert!(log.contains("checker-0: stalling"), "{log}");
    let noticed = Instant::now();
    // The monitor itself keeps turning, yet no ping goes out while a checker is stuck.
    std::thread::sleep(Duration::from_millis(1500));
    let late: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, m)| *at > noticed && m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(_, m)| m.clone())
        .collect();
    assert!(
        late.is_empty(),
        "pinged while checker-0 was stalled: {late:?}"
    );
    let (status, metrics) = daemon.http("GET", "/metrics", "").unwrap();
    assert_eq!(status, 200);
    let checker_age = metrics
        .lines()
        .find(|l| {
            l.starts_with("redis_failover_thread_heartbeat_age_seconds{thread=\"checker-0\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        checker_age > 1.0,
        "checker-0 heartbeat age {checker_age}: {metrics}"
    );
    let _ = socket.shutdown(std::net::Shutdown::Both);
}
