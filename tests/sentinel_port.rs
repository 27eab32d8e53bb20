//! Clients find the new master through the daemon's Sentinel-compatible port, and an old
//! master that comes back is made a replica: tested with real redis-server processes,
//! redis-py's `redis.sentinel.Sentinel` and `redis-cli`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use support::{Daemon, RaftCluster, RedisServer, free_port, redis_cmd, wait_until};

const FAST: [&str; 2] = ["-check_interval=100", "-max_down_time=1"];

/// A master with two replicas (the first preferred), both linked.
fn topology() -> (RedisServer, RedisServer, RedisServer) {
    // The master keeps its data on restart, as a crashed production master would.
    let master = RedisServer::start(&[
        "--appendonly".into(),
        "yes".into(),
        "--appendfsync".into(),
        "always".into(),
    ]);
    let a = RedisServer::replica_of(master.port, 10);
    let b = RedisServer::replica_of(master.port, 100);
    master.wait_for_replicas(2);
    (master, a, b)
}

/// A daemon watching `master` as group `cache`, with its Sentinel port.
fn daemon_with_sentinel(master: &RedisServer, extra: &[&str]) -> (Daemon, u16) {
    let port = free_port();
    let sentinel = format!("-sentinel_addr=127.0.0.1:{port}");
    let masters = format!("-masters=cache={}", master.addr());
    let mut args = vec![sentinel.as_str(), masters.as_str()];
    args.extend(FAST);
    args.extend(extra);
    let daemon = Daemon::start(&args);
    (daemon, port)
}

/// Sends raw bytes to the Sentinel port and reads what comes back within a moment.
fn raw(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the sentinel port");
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn require_redis_py() {
    let ok = Command::new("python3")
        .args(["-c", "import redis.sentinel"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 with redis-py is needed: run `bash test-cluster/install-deps.sh` (pip install redis)"
    );
}

/// Runs a Python script; returns its stdout, or fails with both outputs.
fn python(script: &str, args: &[String]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// redis-py: discover, write, kill the master (the script does it), keep writing with the
/// same Sentinel object until a write lands on the new master.
const REDIS_PY_FAILOVER: &str = r#"
import os, sys, time, redis
from redis.sentinel import Sentinel
port, master_pid = int(sys.argv[1]), int(sys.argv[2])
sentinel = Sentinel([("127.0.0.1", port)], socket_timeout=0.5)
before = sentinel.discover_master("cache")
print("before", before[0], before[1])
print("replicas", len(sentinel.discover_slaves("cache")))
master = sentinel.master_for("cache", socket_timeout=0.5)
master.set("k", "written before")
os.kill(master_pid, 9)
deadline = time.time() + 20
last = None
while time.time() < deadline:
    try:
        master.set("k", "written after")
        break
    except Exception as e:
        last = e
        time.sleep(0.05)
else:
    sys.exit("no write succeeded within 20 s; last error: %r" % (last,))
after = sentinel.discover_master("cache")
print("after", after[0], after[1])
print("value", redis.Redis(host=after[0], port=after[1]).get("k").decode())
"#;

#[test]
fn redis_py_sentinel_client_follows_a_failover() {
    require_redis_py();
    let (master, a, _b) = topology();
    let (_daemon, port) = daemon_with_sentinel(&master, &[]);
    let out = python(
        REDIS_PY_FAILOVER,
        &[port.to_string(), master.pid().expect("pid").to_string()],
    );
    assert!(
        out.contains(&format!("before 127.0.0.1 {}", master.port)),
        "{out}"
    );
    assert!(out.contains("replicas 2"), "{out}");
    // Replica a has the better priority: it is the new master, and the write is there.
    assert!(
        out.contains(&format!("after 127.0.0.1 {}", a.port)),
        "{out}"
    );
    assert!(out.contains("value written after"), "{out}");
}

#[test]
fn redis_cli_subscriber_receives_switch_master() {
    let (mut master, a, _b) = topology();
    let (daemon, port) = daemon_with_sentinel(&master, &[]);
    wait_until(Duration::from_secs(10), "the group to be ok", || {
        let g = daemon.group("cache");
        (g["state"] == "ok").then_some(()).ok_or(g.to_string())
    });
    let mut subscriber = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "SUBSCRIBE", "+switch-master"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-cli");
    let stdout = subscriber.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The subscription is confirmed before the master dies.
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l == "1") {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no subscription confirmation; saw {seen:?}"));
        seen.push(line);
    }
    master.kill();
    let expected = format!("cache 127.0.0.1 {} 127.0.0.1 {}", master.port, a.port);
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line == expected => break,
            Ok(line) => lines.push(line),
            Err(_) => panic!("no +switch-master message {expected:?}; saw {lines:?}"),
        }
    }
    let _ = subscriber.kill();
    let _ = subscriber.wait();
}

#[test]
fn a_returning_old_master_is_made_a_replica_of_the_new_one() {
    let (mut master, a, _b) = topology();
    let (daemon, _port) = daemon_with_sentinel(&master, &[]);
    wait_until(Duration::from_secs(10), "the group to be ok", || {
        let g = daemon.group("cache");
        (g["state"] == "ok").then_some(()).ok_or(g.to_string())
    });
    master
        .cmd(&["SET", "old", "data"])
        .expect("SET on the master");
    master.kill();
    wait_until(Duration::from_secs(20), "the failover to a", || {
        let g = daemon.group("cache");
        (g["master"] == a.addr()).then_some(()).ok_or(g.to_string())
    });
    a.cmd(&["SET", "new", "data"])
        .expect("SET on the new master");
    // The old master comes back with its old data, claiming to be master.
    master.restart();
    wait_until(
        Duration::from_secs(20),
        "the old master to replicate from a",
        || {
            let role = master.role()?;
            let link = master.info_field("master_link_status").unwrap_or_default();
            let port = master.info_field("master_port").unwrap_or_default();
            (role == "slave" && link == "up" && port == a.port.to_string())
                .then_some(())
                .ok_or(format!("role {role}, link {link}, master port {port}"))
        },
    );
    // It holds the new master's data and refuses writes.
    assert_eq!(
        master.cmd(&["GET", "new"]).ok(),
        Some(redis::Value::BulkString(b"data".to_vec()))
    );
    let refused = master
        .cmd(&["SET", "x", "1"])
        .expect_err("a replica refuses writes");
    assert!(refused.to_lowercase().contains("read only"), "{refused}");
    // The group lists it as a replica, and the daemon said what it did.
    wait_until(
        Duration::from_secs(20),
        "the old master listed as a replica",
        || {
            let g = daemon.group("cache");
            let listed = g["replicas"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["addr"] == master.addr()));
            listed.then_some(()).ok_or(g.to_string())
        },
    );
    assert!(
        daemon.log().contains(&format!(
            "{} claimed to be master; made it a replica of {}",
            master.addr(),
            a.addr()
        )),
        "{}",
        daemon.log()
    );
}

#[test]
fn sentinel_commands_answer_like_sentinel() {
    let (master, _a, _b) = topology();
    let (daemon, port) = daemon_with_sentinel(&master, &[]);
    wait_until(Duration::from_secs(10), "two replicas seen", || {
        let g = daemon.group("cache");
        (g["replicas"].as_array().map_or(0, |r| r.len()) == 2)
            .then_some(())
            .ok_or(g.to_string())
    });
    let get = |args: &[&str]| redis_cmd(port, args);
    assert_eq!(
        get(&["SENTINEL", "get-master-addr-by-name", "cache"]),
        Ok(redis::Value::Array(vec![
            redis::Value::BulkString(b"127.0.0.1".to_vec()),
            redis::Value::BulkString(master.port.to_string().into_bytes()),
        ]))
    );
    assert_eq!(
        get(&["SENTINEL", "get-master-addr-by-name", "nope"]),
        Ok(redis::Value::Nil)
    );
    let masters = format!("{:?}", get(&["SENTINEL", "masters"]));
    for field in [
        "\"flags\"",
        "\"master\"",
        "\"num-other-sentinels\"",
        "\"quorum\"",
    ] {
        assert!(masters.contains(field), "{field} missing from {masters}");
    }
    let replicas = format!("{:?}", get(&["SENTINEL", "replicas", "cache"]));
    assert!(replicas.contains("\"slave\""), "{replicas}");
    assert!(get(&["SENTINEL", "master", "nope"]).is_err());
    assert!(
        get(&["SENTINEL", "ckquorum", "cache"]).is_ok(),
        "a standalone daemon can always act"
    );
    let role = format!("{:?}", get(&["ROLE"]));
    assert!(
        role.contains("sentinel") && role.contains("cache"),
        "{role}"
    );
    let info = format!("{:?}", get(&["INFO", "sentinel"]));
    assert!(info.contains("master0:name=cache,status=ok"), "{info}");
    // An unknown command is an error reply; the connection stays usable.
    let reply = raw(port, b"FLUSHALL\r\nPING\r\n");
    assert!(
        reply.starts_with("-ERR unknown command 'flushall'"),
        "{reply}"
    );
    assert!(reply.ends_with("+PONG\r\n"), "{reply}");
    // A malformed request closes that connection only.
    let reply = raw(port, b"*2\r\n:1\r\n:2\r\nPING\r\n");
    assert!(reply.starts_with("-ERR Protocol error"), "{reply}");
    assert!(!reply.contains("PONG"), "the connection is closed: {reply}");
    assert_eq!(raw(port, b"PING\r\n"), "+PONG\r\n");
}

#[test]
fn the_sentinel_port_needs_the_api_token_when_one_is_set() {
    let master = RedisServer::master();
    let (_daemon, port) = daemon_with_sentinel(&master, &["-api_token=s3cret"]);
    let reply = raw(port, b"SENTINEL get-master-addr-by-name cache\r\n");
    assert!(reply.starts_with("-NOAUTH"), "{reply}");
    let reply = raw(port, b"AUTH wrong\r\n");
    assert!(reply.starts_with("-WRONGPASS"), "{reply}");
    let reply = raw(
        port,
        b"AUTH s3cret\r\nSENTINEL get-master-addr-by-name cache\r\n",
    );
    assert!(
        reply.starts_with("+OK\r\n*2\r\n$9\r\n127.0.0.1\r\n"),
        "{reply}"
    );
}

#[test]
fn every_daemon_of_a_raft_cluster_answers_and_names_the_others() {
    let master = RedisServer::master();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let raft_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let members = raft_ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let nodes: Vec<Daemon> = (0..3)
        .map(|i| {
            let sentinel = format!("-sentinel_addr=127.0.0.1:{}", ports[i]);
            let mut extra = FAST.to_vec();
            extra.push(&sentinel);
            RaftCluster::start_node(raft_ports[i], &members, &extra, &[])
        })
        .collect();
    // Once a leader is elected the write commits.
    wait_until(Duration::from_secs(20), "POST /master to commit", || {
        let (status, body) = nodes[0].http(
            "POST",
            &format!("/master?masters=cache={}", master.addr()),
            "",
        )?;
        (status == 200)
            .then_some(())
            .ok_or(format!("{status} {body}"))
    });
    for (i, port) in ports.iter().enumerate() {
        wait_until(Duration::from_secs(10), "the master on every node", || {
            let reply = redis_cmd(*port, &["SENTINEL", "get-master-addr-by-name", "cache"])?;
            let text = format!("{reply:?}");
            text.contains(&master.port.to_string())
                .then_some(())
                .ok_or(format!("node {i}: {text}"))
        });
        // Each lists the two others with their Sentinel ports, once they have met.
        wait_until(Duration::from_secs(10), "the other sentinels", || {
            let reply = format!(
                "{:?}",
                redis_cmd(*port, &["SENTINEL", "sentinels", "cache"])?
            );
            let others: Vec<u16> = ports.iter().copied().filter(|p| p != port).collect();
            others
                .iter()
                .all(|p| reply.contains(&format!("\"{p}\"")))
                .then_some(())
                .ok_or(format!("node {i}: {reply}"))
        });
    }
}
