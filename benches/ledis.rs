//! LedisDB failover time after `kill -9`, this daemon against the Go original, in one
//! run: `LEDIS_SERVER=../shared/ledisdb/ledis-server cargo bench --bench ledis`.
//!
//! Each round starts a fresh LedisDB master with two slaves (`ledis-server -rpl`,
//! `SLAVEOF`), one watcher with `-check_interval` and `-max_down_time`, and waits until
//! the watcher knows both slaves (ours: the group is ok with both links up; Go: it
//! logged both `slave ... added`). A key is written and read back from both slaves,
//! then the master gets `kill -9`. From that instant it measures, polling both slaves
//! about every millisecond:
//!
//! - **master**: a slave answers `ROLE` master;
//! - **linked**: the other slave's `INFO replication` says `slaveof:` the new master
//!   with `master_link_status:up`.
//!
//! A round that does not get there within 30 s counts as failed, with what was seen.
//! The table shows the median of the rounds that succeeded (and min-max).
//!
//! Knobs: `BENCH_ROUNDS` (5), `BENCH_CHECK_INTERVAL_MS` (100), `BENCH_MAX_DOWN_TIME`
//! (whole seconds, 1: the Go original takes an integer), `LEDIS_SERVER` (required; the
//! bench prints that it is skipped without it), `GO_FAILOVER` (the Go binary; default
//! `../shared/anchors/go-redis-failover/redis-failover` from the repository root; its
//! column is skipped with a message when the file is absent).

#[path = "../tests/support/mod.rs"]
mod support;

use support::env_or;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::ledis::{LedisServer, ledis_binary};
use support::{Daemon, TempDir, free_port, wait_until};

/// How long a round waits for the new master and the re-pointed slave.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long a watcher may take to know the master and both slaves.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(1);
const DEFAULT_GO: &str = "../shared/anchors/go-redis-failover/redis-failover";

struct Settings {
    rounds: usize,
    check_interval_ms: u64,
    max_down_time: u64,
}

impl Settings {
    fn flags(&self) -> [String; 2] {
        [
            format!("-check_interval={}", self.check_interval_ms),
            format!("-max_down_time={}", self.max_down_time),
        ]
    }
}

/// The two watchers compared.
#[derive(Clone, Copy)]
enum System {
    Ours,
    Go,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Ours => "redis-failover (Rust)",
            System::Go => "go redis-failover",
        }
    }
}

/// The Go original, run in its own temp dir; killed on drop.
struct GoDaemon {
    child: Child,
    dir: TempDir,
}

impl GoDaemon {
    fn start(binary: &Path, master: &str, settings: &Settings) -> Result<GoDaemon, String> {
        let dir = TempDir::new("go-failover");
        let log = std::fs::File::create(dir.path().join("go.log")).map_err(|e| e.to_string())?;
        let err_log = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .arg(format!("-addr=127.0.0.1:{}", free_port()))
            .arg(format!("-masters={master}"))
            .args(settings.flags())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|e| format!("start {}: {e}", binary.display()))?;
        Ok(GoDaemon { child, dir })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("go.log")).unwrap_or_default()
    }
}

impl Drop for GoDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Watcher {
    Ours(Daemon),
    Go(GoDaemon),
}

impl Watcher {
    fn start(system: System, go: &Path, master: &str, settings: &Settings) -> Watcher {
        match system {
            System::Ours => {
                let masters = format!("-masters=bench={master}");
                let [check, down] = settings.flags();
                Watcher::Ours(Daemon::start(&[&masters, &check, &down]))
            }
            System::Go => match GoDaemon::start(go, master, settings) {
                Ok(daemon) => Watcher::Go(daemon),
                Err(e) => panic!("{e}"),
            },
        }
    }

    /// Whether the watcher knows both slaves, or what it shows so far.
    fn ready(&self, slaves: &[&LedisServer]) -> Result<(), String> {
        match self {
            Watcher::Ours(daemon) => {
                let g = daemon.group("bench");
                let list = g["replicas"].as_array().cloned().unwrap_or_default();
                let up = list.iter().filter(|r| r["link"] == "up").count();
                if g["state"] == "ok" && up == slaves.len() {
                    Ok(())
                } else {
                    Err(g.to_string())
                }
            }
            Watcher::Go(go) => {
                let log = go.log();
                let added = |s: &&LedisServer| log.contains(&format!("slave {} added", s.addr()));
                if slaves.iter().all(added) {
                    Ok(())
                } else {
                    Err(log)
                }
            }
        }
    }

    fn log(&self) -> String {
        match self {
            Watcher::Ours(daemon) => daemon.log(),
            Watcher::Go(go) => go.log(),
        }
    }
}

/// One round's figures, in milliseconds after the kill.
struct Round {
    to_master: f64,
    to_linked: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Whether `slave` replicates from `master` with its link up.
fn linked_to(slave: &LedisServer, master: &LedisServer) -> Result<bool, String> {
    Ok(slave.info_field("slaveof")? == master.addr()
        && slave.info_field("master_link_status")? == "up")
}

/// A fresh master, two linked slaves and a ready watcher; then the kill and the polls.
fn round(system: System, ledis: &Path, go: &Path, settings: &Settings) -> Result<Round, String> {
    let mut master = LedisServer::master(ledis);
    let a = LedisServer::slave_of(ledis, &master);
    let b = LedisServer::slave_of(ledis, &master);
    master.wait_for_slaves(&[a.port, b.port]);
    let watcher = Watcher::start(system, go, &master.addr(), settings);
    wait_until(READY_TIMEOUT, "the watcher to know both slaves", || {
        watcher.ready(&[&a, &b])
    });
    master
        .cmd(&["SET", "bench", "1"])
        .map_err(|e| format!("SET: {e}"))?;
    a.wait_for_key("bench", "1");
    b.wait_for_key("bench", "1");
    let killed_at = Instant::now();
    master.kill();
    let result = poll_after_kill(killed_at, &a, &b);
    result.map_err(|seen| {
        let log = watcher.log();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{seen}\n  watcher log (tail):\n  {}", tail.join("\n  "))
    })
}

/// Polls both slaves until one is master and the other is linked to it.
fn poll_after_kill(killed_at: Instant, a: &LedisServer, b: &LedisServer) -> Result<Round, String> {
    let slaves = [a, b];
    let mut promoted: Option<(usize, Duration)> = None;
    let mut seen = String::new();
    while killed_at.elapsed() < DEADLINE {
        match promoted {
            None => {
                for (i, slave) in slaves.iter().enumerate() {
                    match slave.role() {
                        Ok((kind, _)) if kind == "master" => {
                            promoted = Some((i, killed_at.elapsed()));
                            break;
                        }
                        Ok((_, items)) => seen = format!("{}: ROLE {items:?}", slave.addr()),
                        Err(e) => seen = format!("{}: {e}", slave.addr()),
                    }
                }
            }
            Some((i, to_master)) => match linked_to(slaves[1 - i], slaves[i]) {
                Ok(true) => {
                    return Ok(Round {
                        to_master: ms(to_master),
                        to_linked: ms(killed_at.elapsed()),
                    });
                }
                Ok(false) => {
                    seen = format!("{} promoted, the other not linked yet", slaves[i].addr())
                }
                Err(e) => seen = e,
            },
        }
        std::thread::sleep(POLL);
    }
    Err(format!("nothing within {DEADLINE:?}; last seen: {seen}"))
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// Figures of one system: (median master, median linked, min-max texts, ok rounds).
struct Summary {
    name: &'static str,
    master: Option<f64>,
    linked: Option<f64>,
    spread: String,
    ok: usize,
}

fn run_system(system: System, ledis: &Path, go: &Path, settings: &Settings) -> Summary {
    let mut masters = Vec::new();
    let mut linked = Vec::new();
    for n in 1..=settings.rounds {
        match round(system, ledis, go, settings) {
            Ok(r) => {
                println!(
                    "  {} round {n}: master after {:.1} ms, other slave linked after {:.1} ms",
                    system.name(),
                    r.to_master,
                    r.to_linked
                );
                masters.push(r.to_master);
                linked.push(r.to_linked);
            }
            Err(e) => println!("  {} round {n}: FAILED: {e}", system.name()),
        }
    }
    let spread = |v: &[f64]| match (
        v.iter().copied().reduce(f64::min),
        v.iter().copied().reduce(f64::max),
    ) {
        (Some(lo), Some(hi)) => format!("{lo:.0}-{hi:.0}"),
        _ => "-".into(),
    };
    let spread = format!("{} / {}", spread(&masters), spread(&linked));
    Summary {
        name: system.name(),
        ok: masters.len(),
        master: median(&mut masters),
        linked: median(&mut linked),
        spread,
    }
}

fn cell(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn print_table(settings: &Settings, rows: &[Summary]) {
    let [check, down] = settings.flags();
    println!();
    println!(
        "LedisDB failover after kill -9 (master + 2 slaves, {check} {down}), median of {} rounds, ms after the kill",
        settings.rounds
    );
    println!(
        "{:<24} {:>14} {:>22} {:>24} {:>8}",
        "watcher", "slave master", "other slave linked", "min-max (master/linked)", "ok"
    );
    for row in rows {
        println!(
            "{:<24} {:>14} {:>22} {:>24} {:>8}",
            row.name,
            cell(row.master),
            cell(row.linked),
            row.spread,
            format!("{}/{}", row.ok, settings.rounds)
        );
    }
    if let [ours, go] = rows
        && let (Some(a), Some(b)) = (ours.master, go.master)
    {
        println!("ratio ours/Go (slave master): {:.2}", a / b);
    }
}

/// The Go binary: `GO_FAILOVER`, else the default path from the repository root.
fn go_binary() -> PathBuf {
    let path = std::env::var_os("GO_FAILOVER")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_GO));
    if path.is_relative() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
    } else {
        path
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(ledis) = ledis_binary() else {
        println!(
            "SKIPPED ledis bench: LEDIS_SERVER is not set (for example LEDIS_SERVER=../shared/ledisdb/ledis-server)"
        );
        return;
    };
    let settings = Settings {
        rounds: env_or("BENCH_ROUNDS", 5usize).max(1),
        check_interval_ms: env_or("BENCH_CHECK_INTERVAL_MS", 100u64),
        max_down_time: env_or("BENCH_MAX_DOWN_TIME", 1u64),
    };
    let go = go_binary();
    let mut rows = vec![run_system(System::Ours, &ledis, &go, &settings)];
    if go.is_file() {
        rows.push(run_system(System::Go, &ledis, &go, &settings));
    } else {
        println!(
            "SKIPPED the Go original: {} is not a file (set GO_FAILOVER)",
            go.display()
        );
    }
    print_table(&settings, &rows);
}
