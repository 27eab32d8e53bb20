//! Steady-state cost of watching many groups: `cargo bench --bench scale`.
//!
//! Starts a few real `redis-server` masters and, for each N in `SCALE_GROUPS` (default
//! "1,100,10000"), a fresh daemon (check_interval 1000 ms) watching N groups spread over
//! those servers. Once every group is "ok" and things settled (`SCALE_SETTLE`, 5 s), it
//! samples the daemon for `SCALE_SECONDS` (20 s): CPU (utime+stime, % of one core),
//! VmRSS/VmHWM, threads, open sockets, and the `ROLE` calls per second the servers saw
//! (INFO commandstats), which should be about N. Prints figures; asserts nothing.
//!
//! Other knobs: `SCALE_SERVERS` (4), `SCALE_CHUNK` (groups per POST, 1000),
//! `SCALE_READY_TIMEOUT` (seconds to wait for all groups "ok", 120).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::{Daemon, RedisServer};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

// ---- /proc readers -------------------------------------------------------------------

/// utime + stime (clock ticks) from a `stat` file; the name may hold spaces or ')'.
fn stat_ticks(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text[open + 1..close].to_string();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // After ")": state(0) ppid(1) ... utime is field 14 overall → index 11 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

fn process_ticks(pid: u32) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    stat_ticks(&text)
        .map(|(_, t)| t)
        .ok_or_else(|| format!("cannot parse /proc/{pid}/stat"))
}

/// Per thread: tid -> (name, ticks).
fn thread_ticks(pid: u32) -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Ok(text) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some(v) = stat_ticks(&text)
        {
            out.insert(tid, v);
        }
    }
    out
}

/// Context switches (voluntary + involuntary) summed over the threads.
fn ctxt_switches(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut total = 0;
    for entry in dir.flatten() {
        if let Ok(text) = std::fs::read_to_string(entry.path().join("status")) {
            for line in text.lines() {
                if line.contains("ctxt_switches:") {
                    total += line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    total
}

/// A field of /proc/<pid>/status as a number (kB for Vm*).
fn status_field(pid: u32, field: &str) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))
}

/// (sockets, all fds) open in the process.
fn fd_counts(pid: u32) -> Result<(usize, usize), String> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| e.to_string())?;
    let (mut sockets, mut all) = (0, 0);
    for entry in dir.flatten() {
        all += 1;
        if let Ok(target) = std::fs::read_link(entry.path())
            && target.to_string_lossy().starts_with("socket:")
        {
            sockets += 1;
        }
    }
    Ok((sockets, all))
}

// ---- Redis side ----------------------------------------------------------------------

fn info_text(server: &RedisServer, section: &str) -> Result<String, String> {
    match server.cmd(&["INFO", section])? {
        redis::Value::BulkString(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        redis::Value::VerbatimString { text, .. } => Ok(text),
        other => Err(format!("odd INFO reply {other:?}")),
    }
}

/// `cmdstat_role` calls, summed over the servers.
fn role_calls(servers: &[RedisServer]) -> Result<u64, String> {
    let mut total = 0;
    for server in servers {
        let text = info_text(server, "commandstats")?;
        let calls = text
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_role:calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        total += calls;
    }
    Ok(total)
}

/// `connected_clients`, summed over the servers.
fn connected_clients(servers: &[RedisServer]) -> Result<u64, String> {
    let mut total = 0;
    for server in servers {
        let text = info_text(server, "clients")?;
        total += text
            .lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

// ---- the daemon side -----------------------------------------------------------------

/// Groups in state "ok", total groups, other states seen with counts.
type GroupStates = (usize, usize, Vec<(String, usize)>);

fn group_states(daemon: &Daemon) -> Result<GroupStates, String> {
    let (status, raw) = daemon.http("GET", "/api/v1/groups", "")?;
    // tiny_http sends bodies of 32 KiB or more chunked; support::http_request does not
    // decode that, so do it here.
    let body = dechunk(&raw).unwrap_or(raw);
    if status != 200 {
        return Err(format!("GET /api/v1/groups -> {status}: {body}"));
    }
    let json: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let groups = json.as_array().ok_or("groups JSON is not an array")?;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for g in groups {
        *counts
            .entry(g["state"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let ok = counts.get("ok").copied().unwrap_or(0);
    let mut others: Vec<(String, usize)> = counts.into_iter().filter(|(s, _)| s != "ok").collect();
    others.sort();
    Ok((ok, groups.len(), others))
}

/// Decodes a `Transfer-Encoding: chunked` body; None when it does not look chunked.
fn dechunk(raw: &str) -> Option<String> {
    let mut rest = raw;
    let mut out = String::with_capacity(raw.len());
    loop {
        let (size_line, after) = rest.split_once("\r\n")?;
        let size_hex = size_line.split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}

fn add_groups(daemon: &Daemon, specs: &[String], chunk: usize) -> Result<(), String> {
    for part in specs.chunks(chunk) {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("masters", &part.join(","))
            .finish();
        let (status, reply) = daemon.http("POST", "/master", &body)?;
        if status != 200 {
            return Err(format!(
                "POST /master ({} groups, {} bytes) -> {status}: {}",
                part.len(),
                body.len(),
                reply.trim()
            ));
        }
    }
    Ok(())
}

struct Row {
    groups: usize,
    cpu_pct: f64,
    rss_mb: f64,
    hwm_mb: f64,
    threads: (u64, u64),
    sockets: (usize, usize),
    role_per_s: f64,
    role_min_max: (u64, u64),
    notes: Vec<String>,
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn run_case(servers: &[RedisServer], n: usize) -> Result<Row, String> {
    let sample_secs: u64 = env_or("SCALE_SECONDS", 20);
    let settle_secs: u64 = env_or("SCALE_SETTLE", 5);
    let chunk: usize = env_or("SCALE_CHUNK", 1000);
    let ready_timeout: u64 = env_or("SCALE_READY_TIMEOUT", 120);
    let tck = clk_tck();
    let mut notes = Vec::new();

    let daemon = Daemon::start(&["-check_interval=1000", "-max_down_time=3"]);
    let pid = daemon.pid().ok_or("daemon has no pid")?;
    let result = (|| {
        let specs: Vec<String> = (1..=n)
            .map(|i| format!("g{i:05}={}", servers[(i - 1) % servers.len()].addr()))
            .collect();
        let clients_before = connected_clients(servers)?;
        let t0 = Instant::now();
        add_groups(&daemon, &specs, chunk)?;
        let added = t0.elapsed();

        // Every group "ok" (polled gently: the JSON is large at 10k groups).
        let deadline = Instant::now() + Duration::from_secs(ready_timeout);
        let mut last = String::new();
        let mut json_time = Duration::ZERO;
        loop {
            let q = Instant::now();
            let (ok, total, others) = group_states(&daemon)?;
            json_time = json_time.max(q.elapsed());
            if ok == n && total == n {
                break;
            }
            last = format!("{ok}/{total} ok, others {others:?}");
            if Instant::now() >= deadline {
                return Err(format!(
                    "not every group ok after {ready_timeout} s: {last}"
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let _ = last;
        let ready = t0.elapsed();
        notes.push(format!(
            "POST of {n} groups took {:.2} s; all ok after {:.2} s; slowest GET /api/v1/groups {:.0} ms",
            added.as_secs_f64(),
            ready.as_secs_f64(),
            json_time.as_secs_f64() * 1000.0
        ));
        std::thread::sleep(Duration::from_secs(settle_secs));

        // Sample window.
        let start = Instant::now();
        let ticks0 = process_ticks(pid)?;
        let threads0 = thread_ticks(pid);
        let switches0 = ctxt_switches(pid);
        let role0 = role_calls(servers)?;
        let mut role_prev = role0;
        let mut role_min_max = (u64::MAX, 0u64);
        let mut threads_min_max = (u64::MAX, 0u64);
        let mut sockets_min_max = (usize::MAX, 0usize);
        let mut rss_max = 0u64;
        let mut fds_max = 0usize;
        for second in 1..=sample_secs {
            let next = start + Duration::from_secs(second);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            let role = role_calls(servers)?;
            let delta = role - role_prev;
            role_prev = role;
            role_min_max = (role_min_max.0.min(delta), role_min_max.1.max(delta));
            let threads = status_field(pid, "Threads")?;
            threads_min_max = (
                threads_min_max.0.min(threads),
                threads_min_max.1.max(threads),
            );
            let (sockets, fds) = fd_counts(pid)?;
            sockets_min_max = (
                sockets_min_max.0.min(sockets),
                sockets_min_max.1.max(sockets),
            );
            fds_max = fds_max.max(fds);
            rss_max = rss_max.max(status_field(pid, "VmRSS")?);
        }
        let elapsed = start.elapsed().as_secs_f64();
        let ticks1 = process_ticks(pid)?;
        let threads1 = thread_ticks(pid);
        let switches1 = ctxt_switches(pid);
        let role1 = role_calls(servers)?;
        let hwm = status_field(pid, "VmHWM")?;
        let clients_after = connected_clients(servers)?;

        let cpu_pct = (ticks1 - ticks0) as f64 / tck as f64 / elapsed * 100.0;
        // CPU by thread name over the window.
        let mut by_name: HashMap<String, (u64, usize)> = HashMap::new();
        for (tid, (name, t1)) in &threads1 {
            let t0 = threads0.get(tid).map(|(_, t)| *t).unwrap_or(0);
            let key = if name.starts_with("checker-") {
                "checker-*".to_string()
            } else {
                name.clone()
            };
            let e = by_name.entry(key).or_default();
            e.0 += t1 - t0;
            e.1 += 1;
        }
        let mut by_name: Vec<_> = by_name.into_iter().collect();
        by_name.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
        let per_thread: Vec<String> = by_name
            .iter()
            .map(|(name, (ticks, count))| {
                let pct = *ticks as f64 / tck as f64 / elapsed * 100.0;
                if *count > 1 {
                    format!("{name} x{count} {pct:.1}%")
                } else {
                    format!("{name} {pct:.1}%")
                }
            })
            .collect();
        notes.push(format!("CPU by thread: {}", per_thread.join(", ")));
        notes.push(format!(
            "context switches of the daemon: {:.0}/s",
            switches1.saturating_sub(switches0) as f64 / elapsed
        ));
        notes.push(format!(
            "redis connected_clients: {clients_before} before, {clients_after} during; max fds of the daemon {fds_max}"
        ));
        let log = daemon.log();
        let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
        // Pool growth: "... the pool grew to N threads" (or older "checker pool grew to N").
        let growth: Vec<&str> = log.lines().filter(|l| l.contains("pool grew to")).collect();
        let growth_note = match (growth.first(), growth.last()) {
            (Some(first), Some(last)) => format!(
                ", first at {}, last at {} ({})",
                first.split(' ').next().unwrap_or(""),
                last.split(' ').next().unwrap_or(""),
                last.split("grew to ").nth(1).unwrap_or("").trim()
            ),
            _ => String::new(),
        };
        let first_line = log.lines().next().unwrap_or("");
        notes.push(format!(
            "daemon log: {} lines, {} WARN, {} ERROR; pool grew {} times{growth_note}; daemon started {}",
            log.lines().count(),
            count(" WARN "),
            count(" ERROR "),
            growth.len(),
            first_line.split(' ').next().unwrap_or("")
        ));
        if let Some(line) = log
            .lines()
            .find(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        {
            notes.push(format!("first warning: {line}"));
        }

        Ok(Row {
            groups: n,
            cpu_pct,
            rss_mb: mb(rss_max),
            hwm_mb: mb(hwm),
            threads: threads_min_max,
            sockets: sockets_min_max,
            role_per_s: (role1 - role0) as f64 / elapsed,
            role_min_max,
            notes: std::mem::take(&mut notes),
        })
    })();
    if result.is_err() {
        let log = daemon.log();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        eprintln!(
            "--- last lines of the daemon log ({n} groups) ---\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    drop(daemon);
    result
}

fn range<T: PartialEq + std::fmt::Display>((lo, hi): (T, T)) -> String {
    if lo == hi {
        format!("{lo}")
    } else {
        format!("{lo}-{hi}")
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let groups: Vec<usize> = std::env::var("SCALE_GROUPS")
        .unwrap_or_else(|_| "1,100,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let server_count: usize = env_or("SCALE_SERVERS", 4);
    let servers: Vec<RedisServer> = (0..server_count.max(1))
        .map(|_| RedisServer::start(&["--maxclients".into(), "20000".into()]))
        .collect();
    for s in &servers {
        if let Ok(redis::Value::Array(items)) = s.cmd(&["CONFIG", "GET", "maxclients"])
            && let Some(redis::Value::BulkString(v)) = items.get(1)
        {
            eprintln!(
                "redis {} maxclients {}",
                s.addr(),
                String::from_utf8_lossy(v)
            );
        }
    }
    eprintln!(
        "scale: {} redis-server masters, groups {:?}, check_interval 1000 ms, open-file limit {}",
        servers.len(),
        groups,
        std::process::Command::new("sh")
            .args(["-c", "ulimit -n; ulimit -Hn"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout)
                .replace('\n', " ")
                .trim()
                .to_string())
            .unwrap_or_default()
    );

    let mut rows = Vec::new();
    for &n in &groups {
        eprintln!("scale: {n} groups ...");
        match run_case(&servers, n) {
            Ok(row) => {
                for note in &row.notes {
                    eprintln!("  {n}: {note}");
                }
                rows.push(Ok(row));
            }
            Err(e) => {
                eprintln!("  {n}: FAILED: {e}");
                rows.push(Err((n, e)));
            }
        }
    }

    println!();
    println!(
        "{:>7} {:>8} {:>8} {:>8} {:>8} {:>12} {:>10} {:>14}",
        "groups", "cpu%", "rss MB", "hwm MB", "threads", "sockets", "ROLE/s", "ROLE/s min-max"
    );
    for row in &rows {
        match row {
            Ok(r) => println!(
                "{:>7} {:>8.2} {:>8.1} {:>8.1} {:>8} {:>12} {:>10.1} {:>14}",
                r.groups,
                r.cpu_pct,
                r.rss_mb,
                r.hwm_mb,
                range(r.threads),
                range(r.sockets),
                r.role_per_s,
                range(r.role_min_max)
            ),
            Err((n, e)) => println!("{n:>7} FAILED: {e}"),
        }
    }
    println!(
        "(cpu% of one core and ROLE/s over the window; rss = max VmRSS; threads/sockets = min-max of 1-s samples, sockets incl. the HTTP listener)"
    );
}
