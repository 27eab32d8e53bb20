//! What the status page costs the daemon: `cargo bench --bench page`.
//!
//! The daemon watches `PAGE_GROUPS` groups (default 1000) with `check_interval=1000`,
//! served by real `redis-server` processes each listening on 16 loopback addresses
//! (127.0.0.1 to 127.0.0.16, which Linux routes to `lo` with no set-up) on a free port
//! of its own, so every group has a master address of its own. Once every group is
//! `ok`, the daemon's CPU (utime+stime, % of one core) is sampled for `PAGE_SECONDS`
//! (default 20) three times: with nobody polling; with a client fetching what the page
//! fetches (`/api/v1/groups`, `/api/v1/cluster`, `/api/v1/history?limit=100`) once a
//! second; and, when Chromium is installed, with the page itself open in a headless
//! Chromium (which also reports how long it took to render the 1,000 rows the first
//! time and, at most, on a later poll). Prints the page's size, the JSON per poll, the
//! CPU figures and the render times; asserts nothing.

#[path = "../tests/browser/mod.rs"]
mod browser;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::procstat::sample;
use support::{Daemon, TempDir, env_or, free_port, wait_until};

/// Addresses each server listens on (redis-server takes at most 16).
const ADDRESSES: usize = 16;
/// What the page polls, in its order.
const POLLED: [&str; 3] = [
    "/api/v1/groups",
    "/api/v1/cluster",
    "/api/v1/history?limit=100",
];

/// The servers, killed when dropped.
struct Servers {
    children: Vec<Child>,
    ports: Vec<u16>,
    dir: TempDir,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_servers(count: usize) -> Result<Servers, String> {
    let binds: Vec<String> = (1..=ADDRESSES).map(|a| format!("127.0.0.{a}")).collect();
    let mut servers = Servers {
        children: Vec::new(),
        ports: Vec::new(),
        dir: TempDir::new("page-bench"),
    };
    for _ in 0..count {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind"])
            .args(&binds)
            .args(["--save", "", "--appendonly", "no", "--logfile", ""])
            .arg("--dir")
            .arg(servers.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        servers.children.push(child);
        servers.ports.push(port);
    }
    for &port in &servers.ports {
        wait_until(
            Duration::from_secs(60),
            "the servers to answer PING",
            || support::redis_cmd(port, &["PING"]).map(|_| ()),
        );
    }
    Ok(servers)
}

/// `name=host:port` for each group: every address of every server, up to `n`.
fn masters(ports: &[u16], n: usize) -> Vec<String> {
    ports
        .iter()
        .flat_map(|port| (1..=ADDRESSES).map(move |a| format!("127.0.0.{a}:{port}")))
        .take(n)
        .enumerate()
        .map(|(i, addr)| format!("g{i:04}={addr}"))
        .collect()
}

fn watch(daemon: &Daemon, masters: &[String]) -> Result<(), String> {
    for chunk in masters.chunks(200) {
        let (status, body) =
            daemon.http("POST", "/master", &format!("masters={}", chunk.join(",")))?;
        if status != 200 {
            return Err(format!("POST /master: {status} {body}"));
        }
    }
    Ok(())
}

/// Bytes of each polled answer, once.
fn poll_sizes(daemon: &Daemon) -> Result<Vec<(String, usize)>, String> {
    POLLED
        .iter()
        .map(|path| {
            let (status, body) = daemon.http("GET", path, "")?;
            if status != 200 {
                return Err(format!("GET {path}: {status}"));
            }
            Ok((path.to_string(), body.len()))
        })
        .collect()
}

/// A client fetching what the page fetches once a second until `stop`; returns the
/// slowest poll (all three requests, one after the other).
fn poller(
    port: u16,
    stop: Arc<AtomicBool>,
    slowest_us: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            for path in POLLED {
                let _ = support::http_request(port, "GET", path, "");
            }
            slowest_us.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            next += Duration::from_secs(1);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    })
}

fn main() {
    let n: usize = env_or("PAGE_GROUPS", 1000);
    let seconds: u64 = env_or("PAGE_SECONDS", 20);
    let servers = match start_servers(n.div_ceil(ADDRESSES)) {
        Ok(servers) => servers,
        Err(e) => {
            eprintln!("page: cannot start the servers: {e}");
            std::process::exit(1);
        }
    };
    let daemon = Daemon::start(&["-check_interval=1000", "-max_down_time=10"]);
    if let Err(e) = watch(&daemon, &masters(&servers.ports, n)) {
        eprintln!("page: {e}");
        std::process::exit(1);
    }
    wait_until(Duration::from_secs(120), "every group ok", || {
        let (_, body) = daemon.http("GET", "/api/v1/groups", "")?;
        let ok = body.matches("\"state\": \"ok\"").count();
        if ok == n {
            Ok(())
        } else {
            Err(format!("{ok} of {n} ok"))
        }
    });
    let Some(pid) = daemon.pid() else {
        eprintln!("page: the daemon has no pid");
        std::process::exit(1);
    };
    let page = daemon
        .http("GET", "/", "")
        .map(|(_, body)| body.len())
        .unwrap_or(0);
    let sizes = poll_sizes(&daemon).unwrap_or_default();
    let per_poll: usize = sizes.iter().map(|(_, bytes)| bytes).sum();
    std::thread::sleep(Duration::from_secs(3));

    eprintln!("page: {n} groups ok; sampling {seconds} s with nobody polling");
    let idle = sample(pid, seconds).map(|(cpu, _, _)| cpu);

    eprintln!("page: sampling {seconds} s with a client polling what the page polls every second");
    let stop = Arc::new(AtomicBool::new(false));
    let slowest = Arc::new(AtomicU64::new(0));
    let client = poller(daemon.port, stop.clone(), slowest.clone());
    std::thread::sleep(Duration::from_secs(2));
    let polled = sample(pid, seconds).map(|(cpu, _, _)| cpu);
    stop.store(true, Ordering::Relaxed);
    let _ = client.join();

    let in_browser = browser_run(&daemon, pid, n, seconds);

    println!();
    println!("status page at {n} groups (check_interval 1 s), {seconds} s windows");
    println!("  page (HTML+CSS+JS): {page} bytes");
    for (path, bytes) in &sizes {
        println!("  {path}: {bytes} bytes");
    }
    println!("  JSON per poll: {per_poll} bytes");
    let pct = |r: &Result<f64, String>| match r {
        Ok(cpu) => format!("{cpu:.2}% of one core"),
        Err(e) => format!("not measured: {e}"),
    };
    println!("  daemon CPU, nobody polling: {}", pct(&idle));
    println!("  daemon CPU, polled once a second: {}", pct(&polled));
    println!(
        "  slowest poll (3 requests): {:.1} ms",
        slowest.load(Ordering::Relaxed) as f64 / 1000.0
    );
    match in_browser {
        Ok((cpu, stats)) => {
            println!("  daemon CPU, the page open in headless Chromium: {cpu:.2}% of one core");
            println!("  page in Chromium: {stats}");
        }
        Err(e) => println!("  the page in Chromium: not measured: {e}"),
    }
    drop(servers);
}

/// The page open in Chromium for a window: the daemon's CPU, and the page's own
/// figures (`window.pageStats`).
fn browser_run(daemon: &Daemon, pid: u32, n: usize, seconds: u64) -> Result<(f64, String), String> {
    let (chromium, driver) = browser::binaries()?;
    let browser = browser::Browser::start(&chromium, &driver, free_port())?;
    browser.goto(&format!("http://127.0.0.1:{}/", daemon.port))?;
    let script = "return document.querySelectorAll('.group').length";
    let deadline = Instant::now() + Duration::from_secs(60);
    while browser.run(script)?.as_u64() != Some(n as u64) {
        if Instant::now() > deadline {
            return Err(format!("the page did not show {n} groups in 60 s"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("page: sampling {seconds} s with the page open in Chromium");
    let (cpu, _, _) = sample(pid, seconds)?;
    let stats = browser.run(
        "const s = window.pageStats; return `${s.polls} polls, first render ${s.firstRenderMs.toFixed(1)} ms, later renders at most ${s.maxRenderMs.toFixed(1)} ms (last: ${s.rowsUpdated} rows changed)`;",
    )?;
    Ok((cpu, stats.as_str().unwrap_or("?").to_string()))
}
