//! What a process costs, read from `/proc` (CPU by thread, peak RSS), the daemon's
//! check-lag histogram from `/metrics`, and a bench re-run inside a network namespace
//! of its own: shared by the scale and overload benches.

use super::Daemon;
use std::process::Command;
use std::time::{Duration, Instant};

pub fn clk_tck() -> f64 {
    // SAFETY: sysconf only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    let close = text.rfind(')').ok_or("no ')' in stat")?;
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |i: usize| -> Result<u64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("stat field {i}"))
    };
    Ok(field(11)? + field(12)?)
}

pub fn status_kb(pid: u32, field: &str) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}

/// CPU ticks per thread name (threads of one name added up).
pub fn thread_ticks(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let tid = entry.file_name().to_string_lossy().to_string();
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (text.find('('), text.rfind(')')) else {
            continue;
        };
        let name = text[open + 1..close].to_string();
        let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
        let ticks = fields
            .get(11)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        *out.entry(name).or_default() += ticks;
    }
    out
}

/// What a process cost over a window.
pub struct Sample {
    /// % of one core.
    pub cpu_pct: f64,
    /// Peak VmRSS.
    pub rss_mb: f64,
    pub threads: u64,
    /// % of one core by thread name (threads of one name added up).
    pub by_thread: Vec<(String, f64)>,
}

/// Samples a process for the window: CPU (% of one core), peak RSS (MB), threads.
pub fn sample(pid: u32, seconds: u64) -> Result<(f64, f64, u64), String> {
    let s = sample_threads(pid, seconds)?;
    Ok((s.cpu_pct, s.rss_mb, s.threads))
}

/// Like [`sample`], with each thread's share (printed too).
pub fn sample_threads(pid: u32, seconds: u64) -> Result<Sample, String> {
    let start = Instant::now();
    let threads0 = thread_ticks(pid);
    let ticks0 = cpu_ticks(pid)?;
    let mut rss = 0;
    let mut threads = 0;
    for second in 1..=seconds {
        let next = start + Duration::from_secs(second);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        rss = rss.max(status_kb(pid, "VmRSS")?);
        threads = threads.max(status_kb(pid, "Threads")?);
    }
    let ticks = cpu_ticks(pid)? - ticks0;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = ticks as f64 / clk_tck() / elapsed * 100.0;
    let by_thread: Vec<(String, f64)> = thread_ticks(pid)
        .into_iter()
        .filter_map(|(name, t)| {
            let used = t.saturating_sub(threads0.get(&name).copied().unwrap_or(0));
            (used > 0).then(|| (name, used as f64 / clk_tck() / elapsed * 100.0))
        })
        .collect();
    let shown: Vec<String> = by_thread
        .iter()
        .map(|(name, pct)| format!("{name} {pct:.2}%"))
        .collect();
    eprintln!("    CPU by thread: {}", shown.join(", "));
    Ok(Sample {
        cpu_pct: cpu,
        rss_mb: rss as f64 / 1024.0,
        threads,
        by_thread,
    })
}

/// Cumulative counts of `redis_failover_check_lag_seconds_bucket` by bound.
pub fn lag_buckets(daemon: &Daemon) -> Vec<(f64, f64)> {
    let Ok((_, page)) = daemon.http("GET", "/metrics", "") else {
        return Vec::new();
    };
    page.lines()
        .filter_map(|l| l.strip_prefix("redis_failover_check_lag_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (bound, value) = rest.split_once("\"} ")?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, value.trim().parse().ok()?))
        })
        .collect()
}

/// The p99 of the lags counted between two readings: the bound of its bucket, in ms.
pub fn p99_ms(before: &[(f64, f64)], after: &[(f64, f64)]) -> Option<f64> {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|(bound, n)| {
            let was = before
                .iter()
                .find(|(b, _)| b == bound)
                .map_or(0.0, |(_, v)| *v);
            (*bound, n - was)
        })
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    counts
        .iter()
        .find(|(_, n)| *n >= total * 0.99)
        .map(|(bound, _)| bound * 1000.0)
}

/// Runs the benchmark again inside a network namespace of its own.
pub fn reexec_in_namespace(inside: &str) -> Option<std::process::ExitStatus> {
    if std::env::var_os(inside).is_some() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("bench: not root: no network namespace, so no side-by-side comparison");
        return None;
    }
    let status = Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(exe)
        .args(std::env::args().skip(1))
        .env(inside, "1")
        .status();
    match status {
        Ok(status) => Some(status),
        Err(e) => {
            eprintln!("bench: unshare --net failed ({e}); running without a namespace");
            None
        }
    }
}
