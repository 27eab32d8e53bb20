//! Steady-state cost of watching many masters, side by side with the Go original and
//! Redis Sentinel in the same run: `cargo bench --bench scale`.
//!
//! Each watched master has an address of its own: `127.1.X.Y:PORT`, served by a few
//! real `redis-server` processes listening on every address of a network namespace
//! that the benchmark makes for itself (it re-runs itself under `unshare --net`, as
//! root; the namespace has only its own loopback, so nothing listens beyond it). For each
//! N in `SCALE_GROUPS` (default "1000,10000") and each watcher (this daemon, the Go
//! original from `GO_FAILOVER`, one `redis-server --sentinel`), the watcher alone checks
//! the N masters every second; once it settled (`SCALE_SETTLE`, 5 s) it is sampled for
//! `SCALE_SECONDS` (20 s): CPU (utime+stime, % of one core), peak VmRSS, threads, and
//! for this daemon the check-lag histogram (p99) from `/metrics`. Prints a table and the
//! ratios to the Go original; asserts nothing.
//!
//! Without root or `unshare`, it falls back to this daemon alone, with groups sharing
//! a few addresses (the Go original keys masters by address, so it cannot be compared).
//!
//! `SCALE_OUTAGE=N` (seconds, off by default): after the window, every server is
//! stopped (SIGSTOP) for N seconds and resumed, as when the daemon's host loses the
//! network: every group goes down at once and its failover is attempted (and stopped:
//! these masters have no replicas). The bench prints how long after the servers resume
//! every group is ok again, the daemon's CPU meanwhile, and the checks that ran more
//! than 100 ms late.
//!
//! `SCALE_TLS=1`: the servers speak TLS only (client certificates required), this
//! daemon checks them with `-tls` and Sentinel with `tls-replication yes`; the Go
//! original, which has no TLS, is left out.

#[path = "../tests/support/mod.rs"]
mod support;

use support::env_or;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::procstat::{clk_tck, cpu_ticks, lag_buckets, p99_ms, reexec_in_namespace, sample};
use support::tls::{CertFiles, Pki, TlsRedis};
use support::{Daemon, RedisServer, TempDir, wait_until};

/// The certificates of a TLS run: one CA, the servers' and the watchers' own.
struct BenchTls {
    pki: Pki,
    server: CertFiles,
    client: CertFiles,
}

impl BenchTls {
    fn new() -> BenchTls {
        let pki = Pki::new("scale");
        let server = pki.loopback("redis");
        let client = pki.loopback("watcher");
        BenchTls {
            pki,
            server,
            client,
        }
    }
}

const INSIDE: &str = "SCALE_IN_NAMESPACE";

/// The master addresses: N distinct IPs of 127.1.0.0/16 over the servers' ports.
fn master_addrs(n: usize, ports: &[u16], distinct_ips: bool) -> Vec<String> {
    (0..n)
        .map(|i| {
            let port = ports[i % ports.len()];
            if distinct_ips {
                format!("127.1.{}.{}:{port}", i / 250, i % 250 + 1)
            } else {
                format!("127.0.0.1:{port}")
            }
        })
        .collect()
}

/// What one watcher cost over the sample window.
struct Row {
    watcher: &'static str,
    groups: usize,
    cpu_pct: f64,
    rss_mb: f64,
    threads: u64,
    lag_p99_ms: Option<f64>,
    note: String,
}

fn post_masters(http_port: u16, masters: &[String]) -> Result<(), String> {
    for chunk in masters.chunks(1000) {
        let (status, body) = support::http_request(
            http_port,
            "POST",
            "/master",
            &format!("masters={}", chunk.join(",")),
        )?;
        if status != 200 {
            return Err(format!("POST /master: {status} {body}"));
        }
    }
    Ok(())
}

/// This daemon watching the masters.
/// Waits until the daemon reports every one of its `n` groups ok.
fn wait_all_ok(daemon: &Daemon, n: usize, deadline: Duration) {
    wait_until(deadline, "every group ok", || {
        let (_, body) = daemon.http("GET", "/api/v1/groups", "")?;
        let ok = body.matches("\"state\": \"ok\"").count();
        if ok == n {
            Ok(())
        } else {
            Err(format!("{ok}/{n} ok"))
        }
    });
}

/// Every server stopped for `outage` and resumed: how soon every group is ok again,
/// what that cost, and how late checks ran meanwhile.
fn mass_outage(
    daemon: &Daemon,
    pid: u32,
    n: usize,
    servers: &[u32],
    outage: Duration,
) -> Result<(), String> {
    let signal = |name: &str| {
        for server in servers {
            let _ = Command::new("kill")
                .args([name, &server.to_string()])
                .status();
        }
    };
    let lag_before = lag_buckets(daemon);
    let ticks0 = cpu_ticks(pid)?;
    let start = Instant::now();
    signal("-STOP");
    std::thread::sleep(outage);
    signal("-CONT");
    let resumed = Instant::now();
    wait_all_ok(daemon, n, Duration::from_secs(300));
    let recovered = resumed.elapsed();
    let cpu = (cpu_ticks(pid)? - ticks0) as f64 / clk_tck() / start.elapsed().as_secs_f64() * 100.0;
    let lag_after = lag_buckets(daemon);
    let late = |buckets: &[(f64, f64)]| {
        let within = buckets
            .iter()
            .find(|(le, _)| *le >= 0.1)
            .map_or(0.0, |b| b.1);
        let all = buckets.last().map_or(0.0, |b| b.1);
        all - within
    };
    eprintln!(
        "    outage: {n} masters stopped {} s: every group ok {:.2} s after they resumed; \
         {cpu:.1} % CPU from the stop to then; {} checks more than 100 ms late",
        outage.as_secs(),
        recovered.as_secs_f64(),
        late(&lag_after) - late(&lag_before)
    );
    Ok(())
}

fn run_ours(
    servers: &[u32],
    masters: &[String],
    settle: u64,
    seconds: u64,
    tls: Option<&BenchTls>,
) -> Result<Row, String> {
    let mut flags = vec![
        "-check_interval=1000".to_string(),
        "-max_down_time=3".into(),
    ];
    if let Some(tls) = tls {
        flags.extend(support::tls::material_flags(&tls.pki.ca, &tls.client));
        // Every master's address differs; the servers' certificate names localhost.
        flags.extend(["-tls".into(), "-tls_server_name=localhost".into()]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&flags);
    let pid = daemon.pid().ok_or("no pid")?;
    let port = daemon.port;
    post_masters(port, masters)?;
    let n = masters.len();
    wait_all_ok(&daemon, n, Duration::from_secs(180));
    std::thread::sleep(Duration::from_secs(settle));
    let before = lag_buckets(&daemon);
    let (cpu_pct, rss_mb, threads) = sample(pid, seconds)?;
    let after = lag_buckets(&daemon);
    let outage: u64 = env_or("SCALE_OUTAGE", 0);
    if outage > 0 {
        mass_outage(&daemon, pid, n, servers, Duration::from_secs(outage))?;
    }
    Ok(Row {
        watcher: "ours",
        groups: n,
        cpu_pct,
        rss_mb,
        threads,
        lag_p99_ms: p99_ms(&before, &after),
        note: String::new(),
    })
}

/// A child process killed when dropped.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Go original watching the same masters.
fn run_go(binary: &str, masters: &[String], settle: u64, seconds: u64) -> Result<Row, String> {
    let port = support::free_port();
    let dir = TempDir::new("go-failover");
    let log = std::fs::File::create(dir.path().join("go.log")).map_err(|e| e.to_string())?;
    let child = Command::new(binary)
        .args([
            &format!("-addr=127.0.0.1:{port}"),
            "-check_interval=1000",
            "-max_down_time=3",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{binary}: {e}"))?;
    let watcher = Watcher(child);
    wait_until(
        Duration::from_secs(10),
        "the Go original's HTTP API",
        || support::http_request(port, "GET", "/master", "").map(|_| ()),
    );
    post_masters(port, masters)?;
    std::thread::sleep(Duration::from_secs(settle));
    let (cpu_pct, rss_mb, threads) = sample(watcher.0.id(), seconds)?;
    Ok(Row {
        watcher: "go",
        groups: masters.len(),
        cpu_pct,
        rss_mb,
        threads,
        lag_p99_ms: None,
        note: String::new(),
    })
}

/// One Sentinel watching the same masters (PING every second, as ours).
fn run_sentinel(
    masters: &[String],
    settle: u64,
    seconds: u64,
    tls: Option<&BenchTls>,
) -> Result<Row, String> {
    let dir = TempDir::new("sentinel-scale");
    let port = support::free_port();
    let conf = dir.path().join("sentinel.conf");
    let mut text = format!(
        "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n",
        dir.path().display()
    );
    if let Some(tls) = tls {
        text.push_str(&format!(
            "tls-replication yes\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n",
            tls.client.cert.display(),
            tls.client.key.display(),
            tls.pki.ca.display()
        ));
    }
    for (i, addr) in masters.iter().enumerate() {
        let (ip, p) = addr.rsplit_once(':').ok_or("bad address")?;
        text.push_str(&format!(
            "sentinel monitor m{i} {ip} {p} 1\nsentinel down-after-milliseconds m{i} 3000\n"
        ));
    }
    std::fs::write(&conf, text).map_err(|e| e.to_string())?;
    let child = Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server --sentinel: {e}"))?;
    let watcher = Watcher(child);
    wait_until(Duration::from_secs(30), "sentinel to answer PING", || {
        support::redis_cmd(port, &["PING"]).map(|_| ())
    });
    std::thread::sleep(Duration::from_secs(settle));
    let (cpu_pct, rss_mb, threads) = sample(watcher.0.id(), seconds)?;
    Ok(Row {
        watcher: "sentinel",
        groups: masters.len(),
        cpu_pct,
        rss_mb,
        threads,
        lag_p99_ms: None,
        note: String::new(),
    })
}

fn main() {
    if let Some(status) = reexec_in_namespace(INSIDE) {
        std::process::exit(status.code().unwrap_or(1));
    }
    let inside = std::env::var_os(INSIDE).is_some();
    if inside {
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        if !up.is_ok_and(|s| s.success()) {
            eprintln!("scale: cannot bring lo up in the namespace");
            std::process::exit(1);
        }
    }
    let groups: Vec<usize> = std::env::var("SCALE_GROUPS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let settle: u64 = env_or("SCALE_SETTLE", 5);
    let seconds: u64 = env_or("SCALE_SECONDS", 20);
    let go = std::env::var("GO_FAILOVER")
        .unwrap_or_else(|_| "../shared/anchors/go-redis-failover/redis-failover".into());
    let go = std::fs::canonicalize(&go)
        .ok()
        .map(|p| p.to_string_lossy().to_string());
    // Inside the namespace the servers listen on every address (only loopback exists).
    let bind: Vec<String> = if inside {
        vec!["--bind".into(), "0.0.0.0".into()]
    } else {
        Vec::new()
    };
    let tls = (std::env::var("SCALE_TLS").as_deref() == Ok("1")).then(BenchTls::new);
    let mut extra = bind.clone();
    extra.extend(["--maxclients".into(), "20000".into()]);
    let count = env_or("SCALE_SERVERS", 4usize).max(1);
    let (plain, tls_servers): (Vec<RedisServer>, Vec<TlsRedis>) = match &tls {
        None => (
            (0..count).map(|_| RedisServer::start(&extra)).collect(),
            Vec::new(),
        ),
        Some(t) => (
            Vec::new(),
            (0..count)
                .map(|_| TlsRedis::start_with(&t.pki, &t.server, None, &extra))
                .collect(),
        ),
    };
    let pids: Vec<u32> = plain
        .iter()
        .filter_map(RedisServer::pid)
        .chain(tls_servers.iter().filter_map(TlsRedis::pid))
        .collect();
    let ports: Vec<u16> = plain
        .iter()
        .map(|s| s.port)
        .chain(tls_servers.iter().map(|s| s.port))
        .collect();
    eprintln!(
        "scale: {} redis-server processes{}, masters {groups:?}, check every 1000 ms, {}",
        ports.len(),
        if tls.is_some() { " (TLS only)" } else { "" },
        if inside {
            "each master at an address of its own"
        } else {
            "masters sharing addresses"
        }
    );
    let mut rows: Vec<Row> = Vec::new();
    for &n in &groups {
        let masters = master_addrs(n, &ports, inside);
        let wanted = std::env::var("SCALE_WATCHERS").unwrap_or_else(|_| "ours,go,sentinel".into());
        let wants = |w: &str| wanted.split(',').any(|x| x.trim() == w);
        let mut runs: Vec<(&str, Result<Row, String>)> = Vec::new();
        if wants("ours") {
            runs.push((
                "ours",
                run_ours(&pids, &masters, settle, seconds, tls.as_ref()),
            ));
        }
        if inside
            && tls.is_none()
            && wants("go")
            && let Some(go) = &go
        {
            runs.push(("go", run_go(go, &masters, settle, seconds)));
        }
        if inside && wants("sentinel") {
            runs.push((
                "sentinel",
                run_sentinel(&masters, settle, seconds, tls.as_ref()),
            ));
        }
        for (watcher, run) in runs {
            match run {
                Ok(row) => {
                    eprintln!(
                        "  {n} masters, {watcher}: {:.2} % CPU, {:.1} MB",
                        row.cpu_pct, row.rss_mb
                    );
                    rows.push(row);
                }
                Err(e) => eprintln!("  {n} masters, {watcher}: FAILED: {e}"),
            }
        }
    }
    print_table(&rows);
}

fn print_table(rows: &[Row]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>8} {:>9} {:>8} {:>8} {:>8} {:>10} {:>10}",
        "masters", "watcher", "cpu%", "rss MB", "threads", "lag p99", "cpu vs go"
    );
    for row in rows {
        let go = rows
            .iter()
            .find(|r| r.groups == row.groups && r.watcher == "go")
            .map(|g| g.cpu_pct);
        let ratio = go
            .filter(|g| *g > 0.0)
            .map_or("-".to_string(), |g| format!("{:.2}x", row.cpu_pct / g));
        let lag = row
            .lag_p99_ms
            .map_or("-".to_string(), |ms| format!("<={ms:.0} ms"));
        let _ = writeln!(
            out,
            "{:>8} {:>9} {:>8.2} {:>8.1} {:>8} {:>10} {:>10} {}",
            row.groups, row.watcher, row.cpu_pct, row.rss_mb, row.threads, lag, ratio, row.note
        );
    }
    let _ = writeln!(
        out,
        "(cpu% of one core over the window; rss = peak VmRSS; lag p99 = the check-lag histogram bucket holding the 99th percentile)"
    );
}
