//! Authentication both ways: HTTP clients with `api_token`, and the daemon itself on
//! Redis servers that need `AUTH` (`requirepass`, ACL users).

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Daemon, RedisServer, free_port, wait_until};

const TOKEN: &str = "tok-5e1d9a";

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

#[test]
fn api_token_guards_changes_while_reads_stay_open() {
    let daemon = Daemon::start(&[&format!("-api_token={TOKEN}")]);
    let add = "/master?masters=cache=127.0.0.1:6390";
    for (headers, says) in [
        (vec![], "needs the API token"),
        (vec![bearer("nope")], "wrong API token"),
        (vec![format!("Authorization: Basic {TOKEN}")], "Bearer"),
    ] {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let (status, body) = daemon.http_with("POST", add, "", &headers).unwrap();
        assert_eq!(status, 401, "{headers:?}: {body}");
        assert!(body.contains(says), "{headers:?}: {body}");
    }
    for method in ["PUT", "DELETE"] {
        let (status, _) = daemon.http(method, add, "").unwrap();
        assert_eq!(status, 401, "{method} without a token");
    }
    let (status, body) = daemon.http("GET", "/master", "").unwrap();
    assert_eq!((status, body.as_str()), (200, ""), "nothing was added");

    let (status, body) = daemon
        .http_with("POST", add, "", &[&bearer(TOKEN)])
        .unwrap();
    assert_eq!(status, 200, "{body}");
    for path in ["/master", "/api/v1/groups", "/metrics"] {
        let (status, body) = daemon.http("GET", path, "").unwrap();
        assert_eq!(status, 200, "GET {path} needs no token: {body}");
    }
    assert!(!daemon.log().contains(TOKEN), "{}", daemon.log());
}

#[test]
fn api_token_reads_guards_reads_too() {
    let daemon = Daemon::start(&[&format!("-api_token={TOKEN}"), "-api_token_reads"]);
    for path in ["/master", "/api/v1/groups", "/metrics"] {
        let (status, _) = daemon.http("GET", path, "").unwrap();
        assert_eq!(status, 401, "GET {path} without a token");
        let (status, _) = daemon
            .http_with("GET", path, "", &[&bearer(TOKEN)])
            .unwrap();
        assert_eq!(status, 200, "GET {path} with the token");
    }
}

/// Runs the binary with `args`, reads its stderr until a line contains `needle` (or
/// 10 s pass), then stops it.
fn stderr_line_with(args: &[&str], needle: &str) -> Result<String, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-failover"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => break Ok(line),
            Ok(line) if line.contains("stopped") => break Err(seen.join("\n")),
            Ok(line) => seen.push(line),
            Err(_) => break Err(seen.join("\n")),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    found
}

#[test]
fn listening_beyond_loopback_without_a_token_warns() {
    let open = format!("-addr=0.0.0.0:{}", free_port());
    let line = stderr_line_with(&[&open], "no api_token is set")
        .unwrap_or_else(|seen| panic!("no warning; stderr was:\n{seen}"));
    assert!(line.contains("WARN"), "{line}");
    // With a token there is nothing to warn about; the start-up line comes instead.
    let guarded = format!("-addr=0.0.0.0:{}", free_port());
    let line = stderr_line_with(&[&guarded, "-api_token=t"], "listening on").unwrap();
    assert!(!line.contains("api_token"), "{line}");
}

fn wait_for_group(daemon: &Daemon, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    wait_until(Duration::from_secs(20), what, || {
        let g = daemon.group("g");
        if wanted(&g) {
            Ok(g)
        } else {
            Err(g.to_string())
        }
    })
}

/// Kills the master and checks that the daemon promoted one replica and re-pointed the
/// other, both reached with the credentials given to it.
fn fail_over_and_check(
    daemon: &Daemon,
    master: &mut RedisServer,
    a: &RedisServer,
    b: &RedisServer,
) {
    // Replica INFO went through AUTH as well: their priorities are known.
    wait_for_group(daemon, "ok with both replicas' INFO", |g| {
        g["state"] == "ok"
            && g["replicas"].as_array().map(Vec::len) == Some(2)
            && g["replicas"][0]["priority"] == 100
            && g["replicas"][1]["priority"] == 100
    });
    master.kill();
    let g = wait_for_group(daemon, "a failover record", |g| {
        g["last_failover"].is_object() && g["state"] != "failing_over"
    });
    assert_eq!(g["last_failover"]["outcome"], "succeeded", "{g}");
    let promoted = g["master"].as_str().unwrap_or_default().to_string();
    let (new, other) = if promoted == a.addr() { (a, b) } else { (b, a) };
    assert_eq!(promoted, new.addr(), "{g}");
    assert_eq!(new.role().unwrap(), "master");
    wait_until(
        Duration::from_secs(20),
        "the other replica to follow the new master",
        || {
            let port = other.info_field("master_port")?;
            let link = other.info_field("master_link_status")?;
            if port == new.port.to_string() && link == "up" {
                Ok(())
            } else {
                Err(format!("master_port:{port} link:{link}"))
            }
        },
    );
}

/// The credentials appear nowhere the daemon shows: log, API, metrics.
fn assert_never_shown(daemon: &Daemon, secret: &str) {
    assert!(!daemon.log().contains(secret), "log:\n{}", daemon.log());
    for path in ["/api/v1/groups", "/metrics", "/master"] {
        let (_, body) = daemon.http("GET", path, "").unwrap();
        assert!(!body.contains(secret), "GET {path}: {body}");
    }
}

#[test]
fn requirepass_master_and_replicas_fail_over_with_redis_password() {
    const PASSWORD: &str = "pw-Zx81q";
    let auth = |replica_of: Option<u16>| -> Vec<String> {
        let mut args: Vec<String> = ["--requirepass", PASSWORD, "--masterauth", PASSWORD]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(port) = replica_of {
            args.extend(["--replicaof".into(), "127.0.0.1".into(), port.to_string()]);
        }
        args
    };
    let mut master = RedisServer::start_with_auth(&auth(None), None, Some(PASSWORD));
    let a = RedisServer::start_with_auth(&auth(Some(master.port)), None, Some(PASSWORD));
    let b = RedisServer::start_with_auth(&auth(Some(master.port)), None, Some(PASSWORD));
    master.wait_for_replicas(2);

    // Without the password the master never counts as up.
    let masters = format!("-masters=g={}", master.addr());
    let refused = Daemon::start(&[&masters, "-check_interval=100", "-max_down_time=60"]);
    let g = wait_for_group(&refused, "checks refused without AUTH", |g| {
        g["last_error"].as_str().unwrap_or("").contains("NOAUTH")
    });
    assert_ne!(g["state"], "ok", "{g}");
    drop(refused);

    let daemon = Daemon::start(&[
        &masters,
        "-check_interval=100",
        "-max_down_time=1",
        &format!("-redis_password={PASSWORD}"),
    ]);
    fail_over_and_check(&daemon, &mut master, &a, &b);
    assert_never_shown(&daemon, PASSWORD);
}

#[test]
fn acl_user_with_redis_username_fails_over() {
    const USER: &str = "failover";
    const PASSWORD: &str = "fo-secret-19";
    // The default user has another password: a daemon that sent `AUTH <password>`
    // without the user name would be refused.
    let auth = |replica_of: Option<u16>| -> Vec<String> {
        let mut args: Vec<String> = [
            "--requirepass",
            "admin-pw-33",
            "--user",
            USER,
            "on",
            &format!(">{PASSWORD}"),
            "~*",
            "&*",
            "+@all",
            "--masteruser",
            USER,
            "--masterauth",
            PASSWORD,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(port) = replica_of {
            args.extend(["--replicaof".into(), "127.0.0.1".into(), port.to_string()]);
        }
        args
    };
    let mut master = RedisServer::start_with_auth(&auth(None), Some(USER), Some(PASSWORD));
    let a = RedisServer::start_with_auth(&auth(Some(master.port)), Some(USER), Some(PASSWORD));
    let b = RedisServer::start_with_auth(&auth(Some(master.port)), Some(USER), Some(PASSWORD));
    master.wait_for_replicas(2);

    let config = master.dir.path().join("failover.toml");
    std::fs::write(
        &config,
        format!(
            "masters = [\"g={}\"]\ncheck_interval = 100\nmax_down_time = 1\nredis_username = \"{USER}\"\nredis_password = \"{PASSWORD}\"\n",
            master.addr()
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&[&format!("-config={}", config.display())]);
    fail_over_and_check(&daemon, &mut master, &a, &b);
    assert_never_shown(&daemon, PASSWORD);
}
