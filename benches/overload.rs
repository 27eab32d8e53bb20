//! Many masters on many server processes, side by side with the Go original in the same
//! run: `cargo bench --bench overload` (as root; it re-runs itself inside a network
//! namespace of its own, where only its loopback exists).
//!
//! The topology users reported the cliff with: `redis-server` processes each bound to 16
//! loopback addresses (127.0.0.1 to 127.0.0.16) on a port of its own (8100 and up), every
//! address a master with no replicas, all listed in one config file (`check_interval =
//! 1000`, `max_down_time = 3`). The scale bench's topology is the other way round: a few
//! servers, thousands of addresses each.
//!
//! For each N in `OVERLOAD_MASTERS` (default "1000,10000,15000"): N/16 servers; this
//! daemon started on the config file: groups `ok` 20 s after its start, then sampled for
//! `OVERLOAD_SECONDS` (default 40): CPU (all threads, and the checker's), peak RSS, the
//! check-lag p99; groups `ok` at the end, failover attempts in its log, tilt entries.
//! Then the Go original (`GO_FAILOVER`, default `../shared/anchors/go-redis-failover/`)
//! on the same config file, sampled the same way. Prints a table; asserts nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use support::env_or;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::procstat::{lag_buckets, p99_ms, reexec_in_namespace, sample_threads};
use support::{Daemon, TempDir, wait_until};

const INSIDE: &str = "OVERLOAD_IN_NAMESPACE";
/// Addresses each server listens on.
const ADDRESSES: usize = 16;
const FIRST_PORT: u16 = 8100;
/// How long after its start a watcher's groups are counted, and its sampling begins.
const SETTLE: Duration = Duration::from_secs(20);

/// The servers of one run, killed when dropped.
struct Servers {
    children: Vec<Child>,
    dir: TempDir,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

fn start_servers(count: usize) -> Result<Servers, String> {
    let dir = TempDir::new("overload");
    let binds: Vec<String> = (1..=ADDRESSES).map(|a| format!("127.0.0.{a}")).collect();
    let mut servers = Servers {
        children: Vec::new(),
        dir,
    };
    for i in 0..count {
        let port = FIRST_PORT + i as u16;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind"])
            .args(&binds)
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--maxclients", "1000", "--logfile", ""])
            .arg("--dir")
            .arg(servers.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e}"))?;
        servers.children.push(child);
    }
    for i in 0..count {
        let port = FIRST_PORT + i as u16;
        wait_until(
            Duration::from_secs(120),
            "the servers to answer PING",
            || support::redis_cmd(port, &["PING"]).map(|_| ()),
        );
    }
    Ok(servers)
}

/// Every address of `count` servers, as the config file lists them.
fn master_addrs(count: usize) -> Vec<String> {
    (0..count)
        .flat_map(|i| {
            (1..=ADDRESSES).map(move |a| format!("127.0.0.{a}:{}", FIRST_PORT + i as u16))
        })
        .collect()
}

fn write_config(dir: &Path, masters: &[String]) -> Result<String, String> {
    let list: Vec<String> = masters.iter().map(|m| format!("\"{m}\"")).collect();
    let text = format!(
        "check_interval = 1000\nmax_down_time = 3\nmasters = [{}]\n",
        list.join(",")
    );
    let path = dir.join("failover.toml");
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path.to_string_lossy().to_string())
}

/// One watcher's figures.
#[derive(Default)]
struct Row {
    watcher: &'static str,
    masters: usize,
    ok_settled: Option<usize>,
    ok_end: Option<usize>,
    failovers: Option<usize>,
    tilts: Option<u64>,
    checker_pct: Option<f64>,
    cpu_pct: f64,
    rss_mb: f64,
    lag_p99_ms: Option<f64>,
}

fn ok_count(daemon: &Daemon) -> usize {
    daemon
        .http("GET", "/api/v1/groups", "")
        .map(|(_, body)| body.matches("\"state\": \"ok\"").count())
        .unwrap_or(0)
}

fn metric(daemon: &Daemon, name: &str) -> Option<f64> {
    let (_, page) = daemon.http("GET", "/metrics", "").ok()?;
    page.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

fn run_ours(config: &str, n: usize, seconds: u64) -> Result<Row, String> {
    let started = Instant::now();
    let daemon = Daemon::start(&[&format!("-config={config}")]);
    let pid = daemon.pid().ok_or("no pid")?;
    std::thread::sleep(SETTLE.saturating_sub(started.elapsed()));
    let ok_settled = ok_count(&daemon);
    let before = lag_buckets(&daemon);
    let sampled = sample_threads(pid, seconds)?;
    let after = lag_buckets(&daemon);
    let checker: f64 = sampled
        .by_thread
        .iter()
        .filter(|(name, _)| name.starts_with("checker"))
        .map(|(_, pct)| pct)
        .sum();
    Ok(Row {
        watcher: "ours",
        masters: n,
        ok_settled: Some(ok_settled),
        ok_end: Some(ok_count(&daemon)),
        failovers: Some(daemon.log().matches("failover of master").count()),
        tilts: metric(&daemon, "redis_failover_tilt_entries_total").map(|t| t as u64),
        checker_pct: Some(checker),
        cpu_pct: sampled.cpu_pct,
        rss_mb: sampled.rss_mb,
        lag_p99_ms: p99_ms(&before, &after),
    })
}

fn run_go(binary: &str, config: &str, n: usize, seconds: u64) -> Result<Row, String> {
    let port = support::free_port();
    let dir = TempDir::new("go-overload");
    let log = std::fs::File::create(dir.path().join("go.log")).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args([
            &format!("-addr=127.0.0.1:{port}"),
            &format!("-config={config}"),
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{binary}: {e}"))?;
    std::thread::sleep(SETTLE.saturating_sub(started.elapsed()));
    let sampled = sample_threads(child.id(), seconds);
    let _ = child.kill();
    let _ = child.wait();
    let sampled = sampled?;
    Ok(Row {
        watcher: "go",
        masters: n,
        cpu_pct: sampled.cpu_pct,
        rss_mb: sampled.rss_mb,
        ..Row::default()
    })
}

/// Lets this process and its children open one descriptor per master and more: the
/// soft limit up to the hard one (which root may raise too).
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or fill the struct they are given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        let wanted = libc::rlimit {
            rlim_cur: 200_000,
            rlim_max: 200_000,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    eprintln!("overload: open-file limit {}", limit.rlim_cur);
}

fn main() {
    if let Some(status) = reexec_in_namespace(INSIDE) {
        std::process::exit(status.code().unwrap_or(1));
    }
    if std::env::var_os(INSIDE).is_none() {
        eprintln!("overload: needs root and unshare (ports 8100 and up on 127.0.0.1-16)");
        return;
    }
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    if !up.is_ok_and(|s| s.success()) {
        eprintln!("overload: cannot bring lo up in the namespace");
        std::process::exit(1);
    }
    raise_open_files();
    let sizes: Vec<usize> = std::env::var("OVERLOAD_MASTERS")
        .unwrap_or_else(|_| "1000,10000,15000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let seconds: u64 = env_or("OVERLOAD_SECONDS", 40);
    let go = std::env::var("GO_FAILOVER")
        .unwrap_or_else(|_| "../shared/anchors/go-redis-failover/redis-failover".into());
    let go = std::fs::canonicalize(&go)
        .ok()
        .map(|p| p.to_string_lossy().to_string());
    let mut rows = Vec::new();
    for n in sizes {
        let count = n.div_ceil(ADDRESSES);
        eprintln!("overload: {n} masters on {count} servers x {ADDRESSES} addresses");
        let servers = match start_servers(count) {
            Ok(servers) => servers,
            Err(e) => {
                eprintln!("  {n} masters: cannot start the servers: {e}");
                continue;
            }
        };
        let dir = TempDir::new("overload-config");
        let masters: Vec<String> = master_addrs(count).into_iter().take(n).collect();
        let config = match write_config(dir.path(), &masters) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("  config: {e}");
                continue;
            }
        };
        match run_ours(&config, n, seconds) {
            Ok(row) => rows.push(row),
            Err(e) => eprintln!("  {n} masters, ours: FAILED: {e}"),
        }
        if let Some(go) = &go {
            match run_go(go, &config, n, seconds) {
                Ok(row) => rows.push(row),
                Err(e) => eprintln!("  {n} masters, go: FAILED: {e}"),
            }
        }
        drop(servers);
    }
    print_table(&rows);
}

fn print_table(rows: &[Row]) {
    let mut out = std::io::stdout().lock();
    let opt = |v: Option<usize>| v.map_or("-".to_string(), |v| v.to_string());
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>8} {:>7} {:>9} {:>9} {:>9} {:>5} {:>9} {:>8} {:>8} {:>9} {:>9}",
        "masters",
        "watcher",
        "ok @20s",
        "ok @end",
        "failovers",
        "tilts",
        "checker%",
        "cpu%",
        "rss MB",
        "lag p99",
        "cpu vs go"
    );
    for row in rows {
        let go = rows
            .iter()
            .find(|r| r.masters == row.masters && r.watcher == "go")
            .map(|g| g.cpu_pct)
            .filter(|g| *g > 0.0);
        let _ = writeln!(
            out,
            "{:>8} {:>7} {:>9} {:>9} {:>9} {:>5} {:>9} {:>8.2} {:>8.1} {:>9} {:>9}",
            row.masters,
            row.watcher,
            opt(row.ok_settled),
            opt(row.ok_end),
            opt(row.failovers),
            row.tilts.map_or("-".to_string(), |t| t.to_string()),
            row.checker_pct
                .map_or("-".to_string(), |c| format!("{c:.2}")),
            row.cpu_pct,
            row.rss_mb,
            row.lag_p99_ms
                .map_or("-".to_string(), |ms| format!("<={ms:.0} ms")),
            go.map_or("-".to_string(), |g| format!("{:.2}x", row.cpu_pct / g)),
        );
    }
    let _ = writeln!(
        out,
        "(ok @20s: groups ok 20 s after the start; cpu% of one core over the {}-s window after it; rss = peak VmRSS)",
        env_or("OVERLOAD_SECONDS", 40)
    );
}
