//! The notification script (`notify_script`) with real redis-servers and the daemon:
//! Sentinel's client-reconfig-script arguments after a failover, a hanging script killed
//! (with what it started) at its timeout while another group fails over meanwhile, a
//! failing script logged, and running scripts killed at shutdown.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use support::{Daemon, RedisServer, TempDir, wait_until};

const FAST: [&str; 2] = ["-check_interval=100", "-max_down_time=1"];
const LONG: Duration = Duration::from_secs(20);

/// A master with one replica, linked.
fn pair() -> (RedisServer, RedisServer) {
    let master = RedisServer::master();
    let replica = RedisServer::replica_of(master.port, 100);
    master.wait_for_replicas(1);
    (master, replica)
}

/// Writes an executable shell script into `dir` and returns its path.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write the script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Starts the daemon watching `masters` with the script and its timeout.
fn daemon(masters: &str, script: &Path, timeout_secs: u32) -> Daemon {
    let masters = format!("-masters={masters}");
    let script = format!("-notify_script={}", script.display());
    let timeout = format!("-notify_script_timeout={timeout_secs}");
    let mut args = vec![masters.as_str(), script.as_str(), timeout.as_str()];
    args.extend(FAST);
    Daemon::start(&args)
}

fn wait_for_group(daemon: &Daemon, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_until(LONG, what, || {
        let g = daemon.group(name);
        if ok(&g) { Ok(g) } else { Err(g.to_string()) }
    })
}

fn watched_with_replica(g: &Value) -> bool {
    g["state"] == "ok" && g["replicas"].as_array().is_some_and(|r| r.len() == 1)
}

fn failed_over(g: &Value) -> bool {
    g["last_failover"]["outcome"] == "succeeded" && g["state"] != "failing_over"
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Whether a process exists and is not a zombie.
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn after_a_failover_the_script_gets_sentinels_arguments() {
    let (mut master, replica) = pair();
    let dir = TempDir::new("notify-args");
    let args_file = dir.path().join("args");
    let script = script(
        dir.path(),
        "reconfig.sh",
        &format!("echo \"$@\" >> {}\necho done", args_file.display()),
    );
    let daemon = daemon(&format!("g={}", master.addr()), &script, 60);
    wait_for_group(
        &daemon,
        "g",
        "g watched with its replica",
        watched_with_replica,
    );

    master.kill();
    wait_for_group(&daemon, "g", "the failover of g", failed_over);
    let expected = format!(
        "g leader start 127.0.0.1 {} 127.0.0.1 {}\n",
        master.port, replica.port
    );
    wait_until(LONG, "the script's line in its file", || {
        let seen = read(&args_file);
        if seen == expected {
            Ok(())
        } else {
            Err(format!("{seen:?}, expected {expected:?}"))
        }
    });
    wait_until(LONG, "the run logged with its output", || {
        let log = daemon.log();
        if log.contains("exited with status 0") && log.contains("stdout: \"done\"") {
            Ok(())
        } else {
            Err("no such line yet".into())
        }
    });
    // Exactly one run: nothing else ran the script meanwhile.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read(&args_file), expected);
}

#[test]
fn a_hanging_script_is_killed_at_its_timeout_and_delays_no_other_failover() {
    let (mut master_a, _replica_a) = pair();
    let (mut master_b, replica_b) = pair();
    let dir = TempDir::new("notify-hang");
    let args_file = dir.path().join("args");
    let pid_file = dir.path().join("sleep.pid");
    // For group a the script starts a long sleep and waits for it: it hangs.
    let script = script(
        dir.path(),
        "hang.sh",
        &format!(
            "echo \"$@\" >> {args}\nif [ \"$1\" = a ]; then sleep 600 & echo $! > {pid}; wait; fi",
            args = args_file.display(),
            pid = pid_file.display()
        ),
    );
    let masters = format!("a={},b={}", master_a.addr(), master_b.addr());
    let daemon = daemon(&masters, &script, 8);
    for name in ["a", "b"] {
        wait_for_group(&daemon, name, "both groups watched", watched_with_replica);
    }

    master_a.kill();
    wait_for_group(&daemon, "a", "the failover of a", failed_over);
    let sleeper = wait_until(LONG, "the hanging script's sleep", || {
        let pid = read(&pid_file);
        if pid.trim().is_empty() {
            Err(format!("args so far: {:?}", read(&args_file)))
        } else {
            Ok(pid)
        }
    });
    assert!(alive(&sleeper), "the sleep {sleeper} should still run");

    // While a's script hangs, b fails over and its script runs.
    master_b.kill();
    let b = wait_for_group(&daemon, "b", "the failover of b", failed_over);
    assert_eq!(b["master"], replica_b.addr(), "{b}");
    let b_line = format!(
        "b leader start 127.0.0.1 {} 127.0.0.1 {}",
        master_b.port, replica_b.port
    );
    wait_until(LONG, "b's line from the script", || {
        let seen = read(&args_file);
        if seen.lines().any(|l| l == b_line) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    assert!(
        alive(&sleeper),
        "a's script should still hang while b's ran (the timeout is 8 s)"
    );

    // At its timeout, a's script is killed with the sleep it started.
    wait_until(LONG, "a's script killed at the timeout", || {
        let log = daemon.log();
        let killed = log.lines().any(|l| {
            l.contains("group a: notify_script") && l.contains("notify_script_timeout of 8000 ms")
        });
        if killed && !alive(&sleeper) {
            Ok(())
        } else {
            Err(format!(
                "killed logged: {killed}, sleep alive: {}",
                alive(&sleeper)
            ))
        }
    });
    assert!(
        daemon
            .log()
            .contains("group a: notify_script will be retried in 30 s"),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_failing_script_is_logged_with_its_stderr() {
    let (master, replica) = pair();
    let dir = TempDir::new("notify-fail");
    let script = script(
        dir.path(),
        "fail.sh",
        "echo \"cannot reach the proxy\" >&2\nexit 1",
    );
    let daemon = daemon(&format!("g={}", master.addr()), &script, 60);
    wait_for_group(
        &daemon,
        "g",
        "g watched with its replica",
        watched_with_replica,
    );

    // A switchover moves the master too, and runs the script the same way.
    let (status, body) = daemon
        .http("POST", "/api/v1/groups/g/switchover", "")
        .expect("POST switchover");
    assert_eq!(status, 200, "{body}");
    let line = wait_until(LONG, "the failing run in the log", || {
        daemon
            .log()
            .lines()
            .find(|l| l.contains("notify_script") && l.contains("exited with status 1"))
            .map(String::from)
            .ok_or_else(|| "not yet".to_string())
    });
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&format!(
            "g leader start 127.0.0.1 {} 127.0.0.1 {}",
            master.port, replica.port
        )),
        "{line}"
    );
    assert!(
        line.contains("stderr: \"cannot reach the proxy\""),
        "{line}"
    );
    assert!(
        daemon
            .log()
            .contains("notify_script will be retried in 30 s (retry 1 of 10)"),
        "{}",
        daemon.log()
    );
}

#[test]
fn running_scripts_are_killed_at_shutdown() {
    let (master, _replica) = pair();
    let dir = TempDir::new("notify-stop");
    let pid_file = dir.path().join("sleep.pid");
    let script = script(
        dir.path(),
        "hang.sh",
        &format!("sleep 600 & echo $! > {}; wait", pid_file.display()),
    );
    let mut daemon = daemon(&format!("g={}", master.addr()), &script, 600);
    wait_for_group(
        &daemon,
        "g",
        "g watched with its replica",
        watched_with_replica,
    );
    let (status, body) = daemon
        .http("POST", "/api/v1/groups/g/switchover", "")
        .expect("POST switchover");
    assert_eq!(status, 200, "{body}");
    let sleeper = wait_until(LONG, "the script's sleep", || {
        let pid = read(&pid_file);
        if pid.trim().is_empty() {
            Err("no pid yet".to_string())
        } else {
            Ok(pid)
        }
    });
    let status = daemon.terminate().expect("the daemon stops on SIGTERM");
    assert!(status.success(), "{status}");
    wait_until(LONG, "the script's sleep to be gone", || {
        if alive(&sleeper) {
            Err(format!("{} still runs", sleeper.trim()))
        } else {
            Ok(())
        }
    });
    assert!(
        daemon.log().contains("the daemon is stopping"),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_script_that_is_not_executable_is_a_config_error() {
    let dir = TempDir::new("notify-config");
    let plain = dir.path().join("plain.sh");
    std::fs::write(&plain, "#!/bin/sh\n").expect("write");
    for (arg, what) in [
        (
            format!("-notify_script={}", plain.display()),
            "not an executable file",
        ),
        (
            "-notify_script=/nonexistent/reconfig.sh".to_string(),
            "cannot use",
        ),
        ("-notify_script_timeout=0".to_string(), "out of range"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_redis-failover"))
            .arg(&arg)
            .output()
            .expect("run the daemon");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{arg}: {stderr}");
        assert!(
            stderr.contains("notify_script") && stderr.contains(what),
            "{arg}: {stderr}"
        );
    }
}

/// The memory held by the daemon's captured script stdout (its in-memory files): the
/// size written and the bytes actually held, or None when no run is captured now.
fn captured_stdout(daemon: &Daemon) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let pid = daemon.pid()?;
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    entries.flatten().find_map(|entry| {
        let target = std::fs::read_link(entry.path()).ok()?;
        if !target.to_string_lossy().contains("memfd:notify-stdout") {
            return None;
        }
        let meta = std::fs::metadata(entry.path()).ok()?;
        Some((meta.len(), meta.blocks() * 512))
    })
}

#[test]
fn a_script_printing_100_mb_is_never_blocked_and_the_daemon_keeps_64_kib() {
    const PRINTED: u64 = 100_000_000;
    let (master, _replica) = pair();
    let dir = TempDir::new("notify-flood");
    let written = dir.path().join("written");
    let script = script(
        dir.path(),
        "flood.sh",
        &format!(
            "yes 0123456789abcdef | head -c {PRINTED}\ntouch {}\nsleep 3",
            written.display()
        ),
    );
    let daemon = daemon(&format!("g={}", master.addr()), &script, 60);
    wait_for_group(
        &daemon,
        "g",
        "g watched with its replica",
        watched_with_replica,
    );
    let (status, body) = daemon
        .http("POST", "/api/v1/groups/g/switchover", "")
        .expect("POST switchover");
    assert_eq!(status, 200, "{body}");
    // The script writes all of it (nothing blocks it), and while it still runs the
    // daemon holds at most the 64 KiB kept plus what one poll lets through.
    wait_until(LONG, "the script to write its 100 MB", || {
        written
            .exists()
            .then_some(())
            .ok_or_else(|| format!("captured so far: {:?}", captured_stdout(&daemon)))
    });
    let held = wait_until(
        LONG,
        "the output beyond 64 KiB to be discarded",
        || match captured_stdout(&daemon) {
            Some((size, held)) if size >= PRINTED && held <= 256 * 1024 => Ok(held),
            seen => Err(format!("(size, bytes held) = {seen:?}")),
        },
    );
    println!("captured stdout: {PRINTED} bytes written, {held} bytes held");
    let line = wait_until(LONG, "the run in the log", || {
        daemon
            .log()
            .lines()
            .find(|l| l.contains("notify_script") && l.contains("exited with status 0"))
            .map(String::from)
            .ok_or_else(|| "not yet".to_string())
    });
    assert!(
        line.contains(&format!("output truncated: {PRINTED} bytes in all")),
        "{line}"
    );
    assert!(
        line.len() < 16 * 1024,
        "the log line is short: {} bytes",
        line.len()
    );
}
