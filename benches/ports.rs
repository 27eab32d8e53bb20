//! The daemon's ports under a flood of idle connections: 10,000 of them spread over the
//! HTTP port, the Sentinel port and the Raft port. While they are held, the bench
//! prints the daemon's threads, RSS and open descriptors, what became of the
//! connections (held, refused with an answer, closed), and how long a real `GET /master`
//! and a real `SENTINEL get-master-addr-by-name` take (median and max of 20, each on a
//! fresh connection, with failures counted). It asserts nothing.
//!
//! Before the flood, one client trickles a long command to the Sentinel port (6,000
//! items, then one byte per packet, about 3,000 packets a second, for 6 s: issue 23's
//! finding 3), and the bench prints the CPU the port's thread used meanwhile and how
//! long a real `get-master-addr-by-name` took.
//!
//! Run with `cargo bench --bench ports`. Knobs: `PORTS_BENCH_CONNECTIONS` (10000), and
//! `PORTS_BENCH_BIN`, another `redis-failover` binary to measure (an older build, for a
//! before/after comparison). The daemon runs as one Raft node (`-broker=raft`), with an
//! open-file limit of 65536 as in `etc/redis-failover.service`, so that the ports'
//! own caps, not the descriptor limit, are what the flood meets (or the hard limit of
//! the bench's own process, if lower).

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::ports::{Fate, Held, open_fds, raise_own_nofile, set_nofile_in_child, threads};
use support::procstat::{clk_tck, thread_ticks};
use support::{RedisServer, TempDir, free_port, http_request, memory_kb, wait_until};

const GROUP: &str = "cache";
/// Time given to the ports after the flood before measuring (beyond the 2 s after which
/// the new server evicts idle connections for new ones).
const SETTLE: Duration = Duration::from_millis(2500);

struct Ports {
    http: u16,
    sentinel: u16,
    raft: u16,
}

fn binary() -> PathBuf {
    std::env::var_os("PORTS_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_redis-failover")))
}

fn start_daemon(ports: &Ports, dir: &TempDir, master: &RedisServer, nofile: u64) -> Child {
    let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
    let mut command = Command::new(binary());
    command
        .arg(format!("-addr=127.0.0.1:{}", ports.http))
        .arg(format!("-sentinel_addr=127.0.0.1:{}", ports.sentinel))
        .arg("-broker=raft")
        .arg(format!("-raft_addr=127.0.0.1:{}", ports.raft))
        .arg(format!("-raft_cluster=127.0.0.1:{}", ports.raft))
        .arg(format!(
            "-raft_data_dir={}",
            dir.path().join("data").display()
        ))
        .arg(format!("-masters={GROUP}={}", master.addr()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
    set_nofile_in_child(&mut command, nofile);
    command.spawn().expect("start the daemon")
}

/// One `SENTINEL get-master-addr-by-name` on a fresh connection, raw RESP.
fn sentinel_lookup(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n${}\r\n{GROUP}\r\n",
        GROUP.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    // `*2 $9 127.0.0.1 $N port`: five lines.
    while got.iter().filter(|b| **b == b'\n').count() < 5 {
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("closed: {:?}", String::from_utf8_lossy(&got)));
        }
        got.extend_from_slice(&buf[..n]);
        if got.starts_with(b"-") && got.ends_with(b"\r\n") {
            return Err(String::from_utf8_lossy(&got).trim().to_string());
        }
    }
    Ok(())
}

fn http_lookup(port: u16) -> Result<(), String> {
    match http_request(port, "GET", "/master", "")? {
        (200, _) => Ok(()),
        (status, body) => Err(format!("{status} {}", body.trim())),
    }
}

/// `n` tries of `probe`, one per `pace` at most: (median, max) of the successful ones,
/// and the failures.
fn timed(
    n: usize,
    pace: Duration,
    probe: impl Fn() -> Result<(), String>,
) -> (String, Vec<String>) {
    let mut times = Vec::new();
    let mut failures = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        match probe() {
            Ok(()) => times.push(started.elapsed()),
            Err(e) => failures.push(e),
        }
        if let Some(wait) = pace.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    times.sort();
    let summary = match (times.get(times.len() / 2), times.last()) {
        (Some(median), Some(max)) => format!(
            "median {:.2} ms, max {:.2} ms ({} ok)",
            median.as_secs_f64() * 1000.0,
            max.as_secs_f64() * 1000.0,
            times.len()
        ),
        _ => "no success".to_string(),
    };
    (summary, failures)
}

fn figures(pid: u32, when: &str) {
    let (rss, _) = memory_kb(pid).unwrap_or((0, 0));
    println!(
        "{when}: threads {}, RSS {} kB, open descriptors {}",
        threads(pid).unwrap_or(0),
        rss,
        open_fds(pid).unwrap_or(0)
    );
}

fn measure(ports: &Ports) {
    let (http, http_failures) = timed(20, Duration::ZERO, || http_lookup(ports.http));
    let (sentinel, sentinel_failures) =
        timed(20, Duration::ZERO, || sentinel_lookup(ports.sentinel));
    println!("  GET /master: {http}");
    if let Some(first) = http_failures.first() {
        println!("    {} failed, first: {first}", http_failures.len());
    }
    println!("  SENTINEL get-master-addr-by-name: {sentinel}");
    if let Some(first) = sentinel_failures.first() {
        println!("    {} failed, first: {first}", sentinel_failures.len());
    }
}

/// Items sent at once before the trickle, and bytes trickled one per packet after them.
const TRICKLE_ITEMS: usize = 6000;
const TRICKLED_BYTES: usize = 18_000;
/// Time between two trickled packets (about 3,000 a second).
const TRICKLE_GAP: Duration = Duration::from_micros(333);

/// One client trickles a long command while real lookups are timed: prints the CPU
/// the Sentinel port's thread used, and the lookups' latency.
fn trickle(ports: &Ports, pid: u32) {
    let mut head = format!("*{}\r\n", TRICKLE_ITEMS + 1).into_bytes();
    for _ in 0..TRICKLE_ITEMS {
        head.extend_from_slice(b"$1\r\nx\r\n");
    }
    head.extend_from_slice(format!("${TRICKLED_BYTES}\r\n").as_bytes());
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", ports.sentinel)) else {
        println!("  trickle: cannot connect");
        return;
    };
    let _ = stream.set_nodelay(true);
    if stream.write_all(&head).is_err() {
        println!("  trickle: cannot send");
        return;
    }
    std::thread::sleep(Duration::from_millis(200));
    let ticks = || thread_ticks(pid).get("sentinel").copied().unwrap_or(0);
    let before = ticks();
    let started = Instant::now();
    let trickler = std::thread::spawn(move || {
        let mut sent = 0;
        for i in 0..TRICKLED_BYTES {
            let due = started + TRICKLE_GAP * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if stream.write_all(b"y").is_err() {
                break;
            }
            sent += 1;
        }
        (sent, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    // Spread over the trickle: one lookup every 250 ms.
    let (lookups, failures) = timed(20, Duration::from_millis(250), || {
        sentinel_lookup(ports.sentinel)
    });
    let (sent, took) = trickler.join().unwrap_or((0, started.elapsed()));
    let cpu = (ticks() - before) as f64 / clk_tck();
    println!(
        "  trickle: {sent} one-byte packets after {TRICKLE_ITEMS} items in {:.1} s; the Sentinel port's thread used {:.2} s of CPU ({:.0}% of a core)",
        took.as_secs_f64(),
        cpu,
        100.0 * cpu / took.as_secs_f64().max(0.001)
    );
    println!("  SENTINEL get-master-addr-by-name meanwhile: {lookups}");
    if let Some(first) = failures.first() {
        println!("    {} failed, first: {first}", failures.len());
    }
}

/// Opens `n` idle connections to `port`; reports what became of them.
fn flood(name: &str, port: u16, n: usize) -> Vec<Held> {
    let started = Instant::now();
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_error = None;
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let connecting = Instant::now();
        let result = Held::open(port, b"");
        slowest = slowest.max(connecting.elapsed());
        match result {
            Ok(h) => held.push(h),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    println!(
        "  {name}: {n} connects in {:.2} s, the slowest {:.0} ms ({failed} failed{})",
        started.elapsed().as_secs_f64(),
        slowest.as_secs_f64() * 1000.0,
        first_error.map(|e| format!(": {e}")).unwrap_or_default()
    );
    held
}

fn fates(name: &str, held: &mut [Held]) {
    let (mut open, mut answered, mut closed) = (0, 0, 0);
    let mut sample = None;
    for h in held.iter_mut() {
        match h.fate() {
            Fate::Open => open += 1,
            Fate::Closed => closed += 1,
            Fate::Answered(text) => {
                answered += 1;
                sample.get_or_insert(text);
            }
        }
    }
    let said = sample
        .and_then(|t| t.lines().next().map(str::to_string))
        .map(|l| format!(" ({l:?}, ...)"))
        .unwrap_or_default();
    println!(
        "  {name}: {open} held open, {answered} refused with an answer{said}, {closed} closed"
    );
}

fn main() {
    let total: usize = std::env::var("PORTS_BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let own = raise_own_nofile();
    println!(
        "binary {}; {total} idle connections; open-file limit {} for the daemon",
        binary().display(),
        own.min(65536)
    );
    let master = RedisServer::master();
    let dir = TempDir::new("ports-bench");
    let ports = Ports {
        http: free_port(),
        sentinel: free_port(),
        raft: free_port(),
    };
    // As in the systemd unit, if this process may raise it that far.
    let nofile = own.min(65536);
    let mut daemon = start_daemon(&ports, &dir, &master, nofile);
    let pid = daemon.id();
    wait_until(
        Duration::from_secs(30),
        "the group on the Sentinel port",
        || sentinel_lookup(ports.sentinel),
    );
    figures(pid, "before");
    measure(&ports);
    println!("a client trickling a long command to the Sentinel port:");
    trickle(&ports, pid);

    println!("flood:");
    let third = total / 3;
    let mut http = flood("HTTP", ports.http, total - 2 * third);
    let mut sentinel = flood("Sentinel", ports.sentinel, third);
    let mut raft = flood("Raft", ports.raft, third);
    std::thread::sleep(SETTLE);
    fates("HTTP", &mut http);
    fates("Sentinel", &mut sentinel);
    fates("Raft", &mut raft);
    figures(pid, "while held");
    measure(&ports);
    figures(pid, "after measuring");

    drop((http, sentinel, raft));
    let _ = daemon.kill();
    let _ = daemon.wait();
}
