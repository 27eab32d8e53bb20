//! The binary's command line and config file, as a user meets them.

mod support;

use std::process::Command;
use support::{Daemon, TempDir};

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_redis-failover"))
        .args(args)
        .output()
        .expect("run redis-failover");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn help_lists_the_go_flags() {
    let (code, text) = run(&["--help"]);
    assert_eq!(code, 0, "{text}");
    for flag in [
        "--addr",
        "--masters",
        "--check-interval",
        "--max-down-time",
        "--raft-cluster",
        "--zk-path",
        "--redis-password",
        "--redis-username",
        "--api-token",
        "--api-token-reads",
        "--log-level",
    ] {
        assert!(text.contains(flag), "help lacks {flag}: {text}");
    }
}

#[test]
fn bad_config_exits_non_zero_naming_the_key() {
    let dir = TempDir::new("cli");
    for (toml, says) in [
        ("check_interval = 0\n", "check_interval"),
        ("addr = \"127.0.0.1\"\n", "addr"),
        ("no_such_key = 1\n", "no_such_key"),
        ("masters = [\"nope\"]\n", "masters"),
        ("check_interval = [\n", "TOML"),
    ] {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, toml).unwrap();
        let (code, text) = run(&[&format!("-config={}", file.display())]);
        assert_ne!(code, 0, "{toml:?} was accepted");
        assert!(
            text.contains(says) || text.to_lowercase().contains(&says.to_lowercase()),
            "{toml:?}: {text}"
        );
    }
    let (code, text) = run(&["-config=/nonexistent/failover.toml"]);
    assert_ne!(code, 0);
    assert!(text.contains("/nonexistent/failover.toml"), "{text}");
}

#[test]
fn unknown_broker_and_unknown_flag_are_errors() {
    let (code, text) = run(&["-broker=etcd"]);
    assert_ne!(code, 0);
    assert!(text.contains("unknown broker \"etcd\""), "{text}");
    let (code, text) = run(&["-no_such_flag=1"]);
    assert_ne!(code, 0);
    assert!(
        text.contains("no-such-flag") || text.contains("Unrecognized"),
        "{text}"
    );
    let (code, text) = run(&["-max_down_time=-1"]);
    assert_ne!(code, 0, "{text}");
}

#[test]
fn config_file_with_go_style_flag_overrides() {
    let dir = TempDir::new("cli");
    let file = dir.path().join("failover.toml");
    std::fs::write(
        &file,
        "addr = \"127.0.0.1:1\"\nmasters = [\"file=127.0.0.1:6399\"]\ncheck_interval = 100\n",
    )
    .unwrap();
    // Daemon::start adds -addr=<free port>, which must override the file's addr.
    let daemon = Daemon::start(&[&format!("-config={}", file.display())]);
    let (_, body) = daemon.http("GET", "/master", "").unwrap();
    assert_eq!(body, "127.0.0.1:6399");
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let mut daemon = Daemon::start(&["--masters", "127.0.0.1:6398", "--check-interval", "100"]);
    let status = daemon
        .terminate()
        .expect("the daemon exits within 10 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(daemon.log().contains("stopped"), "{}", daemon.log());
}

#[test]
fn log_level_sets_the_level_and_rust_log_wins_over_it() {
    let quiet = Daemon::start_with_env(&["-log_level=warn"], &[("RUST_LOG", None)]);
    let (status, _) = quiet.http("GET", "/nope", "").unwrap();
    assert_eq!(status, 404);
    // The 404 is logged at info: a warn-level daemon says nothing about it.
    let (status, _) = quiet.http("GET", "/master", "").unwrap();
    assert_eq!(status, 200);
    let log = quiet.log();
    assert!(!log.contains(" INFO "), "{log}");
    let loud = Daemon::start_with_env(&["-log_level=warn"], &[("RUST_LOG", Some("info"))]);
    loud.http("GET", "/nope", "").unwrap();
    support::wait_until(
        std::time::Duration::from_secs(5),
        "the 404 logged at info",
        || {
            let log = loud.log();
            if log.contains("/nope -> 404") {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
    let (code, text) = run(&["-log_level=chatty"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("log_level"), "{text}");
}

#[test]
fn oversized_config_files_and_too_short_intervals_are_refused() {
    let dir = TempDir::new("cli");
    // 17 MB of comments: valid TOML, but more than the daemon reads.
    let big = dir.path().join("big.toml");
    let line = format!("# {}\n", "x".repeat(1021));
    std::fs::write(&big, line.repeat(17 * 1024)).unwrap();
    let (code, text) = run(&[&format!("-config={}", big.display())]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(&big.display().to_string()) && text.contains("larger than 16 MB"),
        "{text}"
    );
    // Not a file at all: read up to the limit, never unbounded.
    let (code, text) = run(&["-config=/dev/zero"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("/dev/zero"), "{text}");
    for (args, key) in [
        (&["-check_interval=5"][..], "check_interval"),
        (
            &["-check_interval=100", "-max_down_time=0.05"],
            "max_down_time",
        ),
        (
            &["-raft_secret_file=/nonexistent/secret"],
            "raft_secret_file",
        ),
    ] {
        let (code, text) = run(args);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(
            text.contains(&format!("redis-failover: {key}")),
            "{args:?}: {text}"
        );
    }
}
