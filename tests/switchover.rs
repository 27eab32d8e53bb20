//! Planned switchover (`POST /api/v1/groups/<name>/switchover`) with real redis-servers
//! (≥ 7, so `CLIENT PAUSE WRITE` is there) and the daemon: no acknowledged write lost
//! with a writer running, the old master ends as a replica of the new one, `to=` picks
//! the replica, bad requests get 4xx, and a follower of a Raft cluster refuses with the
//! leader's address while the leader switches over.

mod support;

use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use support::groups::port_of;
use support::{Daemon, RaftCluster, RedisServer, http_request, wait_until};

const FAST: [&str; 2] = ["-check_interval=100", "-max_down_time=1"];
const LONG: Duration = Duration::from_secs(20);

/// A master with two replicas of the given priorities, all linked.
fn topology(priority_a: u32, priority_b: u32) -> (RedisServer, RedisServer, RedisServer) {
    let master = RedisServer::master();
    let a = RedisServer::replica_of(master.port, priority_a);
    let b = RedisServer::replica_of(master.port, priority_b);
    master.wait_for_replicas(2);
    (master, a, b)
}

fn watch(master: &RedisServer) -> Daemon {
    let masters = format!("-masters=g={}", master.addr());
    let mut args = vec![masters.as_str()];
    args.extend(FAST);
    let daemon = Daemon::start(&args);
    wait_for_group(&daemon, "g", "g watched with both replicas", |g| {
        watched_with_replicas(g, 2)
    });
    daemon
}

fn wait_for_group(daemon: &Daemon, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_until(LONG, what, || {
        let g = daemon.group(name);
        if ok(&g) { Ok(g) } else { Err(g.to_string()) }
    })
}

fn watched_with_replicas(g: &Value, n: usize) -> bool {
    g["state"] == "ok" && g["replicas"].as_array().is_some_and(|r| r.len() == n)
}

fn switchover(port: u16, query: &str) -> (u16, String) {
    http_request(
        port,
        "POST",
        &format!("/api/v1/groups/g/switchover{query}"),
        "",
    )
    .expect("POST switchover")
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Waits until `server` replicates from `master_port` with its link up.
fn wait_replicating_from(server: &RedisServer, master_port: u16, what: &str) {
    wait_until(LONG, what, || {
        let port = server.info_field("master_port")?;
        let link = server.info_field("master_link_status")?;
        if port == master_port.to_string() && link == "up" {
            Ok(())
        } else {
            Err(format!("master_port:{port} master_link_status:{link}"))
        }
    });
}

/// What the writer got acknowledged.
#[derive(Default)]
struct Acked {
    pushed: Vec<u64>,
    increments: u64,
    errors: Vec<String>,
    masters: Vec<String>,
}

/// A client that writes `RPUSH log <seq>` and `INCR n` in a loop to the master that
/// `GET /master` names, and on any error (READONLY, a closed connection) asks again.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Acked>>,
}

impl Writer {
    fn start(http_port: u16) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut acked = Acked::default();
            let mut conn: Option<redis::Connection> = None;
            let mut seq = 0u64;
            while !stopping.load(Ordering::Relaxed) {
                let Some(c) = conn.as_mut() else {
                    match connect(http_port) {
                        Ok((addr, c)) => {
                            if acked.masters.last() != Some(&addr) {
                                acked.masters.push(addr);
                            }
                            conn = Some(c);
                        }
                        Err(e) => {
                            acked.errors.push(e);
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                    continue;
                };
                seq += 1;
                let pushed: redis::RedisResult<i64> =
                    redis::cmd("RPUSH").arg("log").arg(seq).query(c);
                let incremented = pushed.and_then(|_| {
                    acked.pushed.push(seq);
                    redis::cmd("INCR").arg("n").query::<i64>(c)
                });
                match incremented {
                    Ok(_) => acked.increments += 1,
                    Err(e) => {
                        acked.errors.push(e.to_string());
                        conn = None;
                    }
                }
            }
            acked
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Acked {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .expect("the writer thread")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn connect(http_port: u16) -> Result<(String, redis::Connection), String> {
    let (status, addr) = http_request(http_port, "GET", "/master", "")?;
    if status != 200 {
        return Err(format!("GET /master: {status} {addr}"));
    }
    let client = redis::Client::open(format!("redis://{addr}/")).map_err(|e| e.to_string())?;
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    Ok((addr, conn))
}

fn server_with_port(servers: [&RedisServer; 3], port: u16) -> &RedisServer {
    servers
        .into_iter()
        .find(|s| s.port == port)
        .unwrap_or_else(|| panic!("no server on port {port}"))
}

/// The sequence numbers in the `log` list of a server.
fn logged(server: &RedisServer) -> HashSet<u64> {
    match server.cmd(&["LRANGE", "log", "0", "-1"]) {
        Ok(redis::Value::Array(items)) => items
            .iter()
            .filter_map(|v| match v {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).parse().ok(),
                _ => None,
            })
            .collect(),
        other => panic!("LRANGE log on {}: {other:?}", server.addr()),
    }
}

#[test]
fn with_a_writer_running_no_acknowledged_write_is_lost() {
    let (master, a, b) = topology(100, 100);
    let daemon = watch(&master);
    let writer = Writer::start(daemon.port);
    wait_until(LONG, "the writer's first writes", || {
        match master.cmd(&["LLEN", "log"]) {
            Ok(redis::Value::Int(n)) if n >= 100 => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    });

    let (status, body) = switchover(daemon.port, "");
    assert_eq!(status, 200, "{body}");
    let report = json(&body);
    assert_eq!(report["outcome"], "succeeded", "{report}");
    assert_eq!(report["old_master"], master.addr(), "{report}");
    assert!(report["paused_ms"].as_u64().is_some(), "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap_or("")
            .contains("switchover"),
        "{report}"
    );
    let new_port = port_of(&report["new_master"]);
    let new = server_with_port([&master, &a, &b], new_port);
    let other = if new_port == a.port { &b } else { &a };

    // The writer finds the new master and keeps writing there.
    let before = match new.cmd(&["LLEN", "log"]) {
        Ok(redis::Value::Int(n)) => n,
        seen => panic!("{seen:?}"),
    };
    wait_until(LONG, "writes on the new master", || {
        match new.cmd(&["LLEN", "log"]) {
            Ok(redis::Value::Int(n)) if n >= before + 100 => Ok(()),
            seen => Err(format!("{seen:?} (was {before})")),
        }
    });
    let acked = writer.finish();
    eprintln!(
        "{} pushes and {} increments acknowledged; masters used: {:?}; {} errors, first: {:?}",
        acked.pushed.len(),
        acked.increments,
        acked.masters,
        acked.errors.len(),
        acked.errors.first()
    );
    assert_eq!(
        acked.masters,
        vec![master.addr(), new.addr()],
        "the writer should have used the old master, then the new one"
    );

    // Every acknowledged write is on the new master.
    let present = logged(new);
    let lost: Vec<u64> = acked
        .pushed
        .iter()
        .filter(|seq| !present.contains(seq))
        .copied()
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged pushes are missing on the new master, first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let n: u64 = match new.cmd(&["GET", "n"]) {
        Ok(redis::Value::BulkString(b)) => String::from_utf8_lossy(&b).parse().unwrap_or(0),
        seen => panic!("GET n: {seen:?}"),
    };
    assert!(
        n >= acked.increments,
        "n is {n} on the new master but {} increments were acknowledged",
        acked.increments
    );

    // The old master is a replica of the new one, and so is the other replica.
    assert_eq!(master.role().unwrap(), "slave");
    wait_replicating_from(&master, new.port, "the old master to follow the new one");
    wait_replicating_from(other, new.port, "the other replica to follow");
    let refused = master.cmd(&["SET", "x", "1"]).unwrap_err();
    assert!(refused.contains("read only"), "{refused}");

    // The daemon watches the new master, with the old one among its replicas.
    let g = wait_for_group(&daemon, "g", "g watched at its new master", |g| {
        g["master"] == new.addr() && watched_with_replicas(g, 2)
    });
    assert_eq!(g["last_failover"]["outcome"], "succeeded", "{g}");
    assert_eq!(g["last_failover"]["old_master"], master.addr(), "{g}");
    let log = daemon.log();
    for step in [
        "switchover step role",
        "switchover step elect",
        "switchover step begin",
        "switchover step pause",
        "switchover step catch-up",
        "switchover step promote",
        "switchover step demote",
        "switchover step record",
        "switchover step unpause",
        "switchover succeeded",
        "event +switch-master",
    ] {
        assert!(log.contains(step), "log lacks {step:?}:\n{log}");
    }
}

#[test]
fn to_picks_the_replica_and_bad_requests_get_4xx() {
    // By the failover's rules `a` (priority 10) would win; `to=` names `b`.
    let (master, a, b) = topology(10, 100);
    let daemon = watch(&master);

    let (status, body) = switchover(daemon.port, &format!("?to={}", b.addr()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["new_master"], b.addr(), "{body}");
    assert_eq!(b.role().unwrap(), "master");
    wait_replicating_from(&master, b.port, "the old master to follow b");
    wait_replicating_from(&a, b.port, "a to follow b");

    // Back to the old master, named in a form body this time.
    wait_for_group(&daemon, "g", "g watched at b with both replicas", |g| {
        g["master"] == b.addr() && watched_with_replicas(g, 2)
    });
    let (status, body) = daemon
        .http(
            "POST",
            "/api/v1/groups/g/switchover",
            &format!("to={}", master.addr()),
        )
        .expect("POST");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["new_master"], master.addr(), "{body}");
    wait_for_group(&daemon, "g", "g watched at its first master again", |g| {
        g["master"] == master.addr() && watched_with_replicas(g, 2)
    });

    // Without `to`, the best replica by priority.
    let (status, body) = switchover(daemon.port, "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["new_master"], a.addr(), "{body}");
    wait_for_group(&daemon, "g", "g watched at a", |g| {
        g["master"] == a.addr() && watched_with_replicas(g, 2)
    });

    for (method, path, status, says) in [
        (
            "POST",
            "/api/v1/groups/nope/switchover",
            404,
            "no monitored group",
        ),
        (
            "POST",
            "/api/v1/groups/g/switchover?to=127.0.0.1:1",
            400,
            "not a replica",
        ),
        (
            "POST",
            "/api/v1/groups/g/switchover?to=nonsense",
            400,
            "to:",
        ),
        (
            "POST",
            "/api/v1/groups/g/switchover?force=maybe",
            400,
            "force",
        ),
        ("GET", "/api/v1/groups/g/switchover", 405, "only POST"),
        ("POST", "/api/v1/groups/switchover", 404, "no such endpoint"),
        (
            "POST",
            "/api/v1/groups//switchover",
            404,
            "no such endpoint",
        ),
        (
            "POST",
            "/api/v1/groups/a/b/switchover",
            404,
            "no such endpoint",
        ),
        ("POST", "/api/v1/groups/%zz/switchover", 400, "percent"),
    ] {
        let (got, body) = daemon.http(method, path, "").expect("request");
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(body.contains(says), "{method} {path}: {body}");
    }
    // The group's address works as its name, percent-encoded or not.
    let encoded = a.addr().replace(':', "%3A");
    let (status, body) = daemon
        .http(
            "POST",
            &format!("/api/v1/groups/{encoded}/switchover?to={}", b.addr()),
            "",
        )
        .expect("POST");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["new_master"], b.addr(), "{body}");
    // Refused requests changed nothing else: every attempt in the history succeeded.
    assert_eq!(b.role().unwrap(), "master");
}

#[test]
fn a_follower_refuses_with_the_leaders_address_and_the_leader_switches_over() {
    let (master, a, b) = topology(100, 100);
    let masters = format!("-masters=g={}", master.addr());
    let mut args = FAST.to_vec();
    args.push(&masters);
    let mut cluster = RaftCluster::start(3, &args, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], LONG);
    let leader_http = format!("127.0.0.1:{}", cluster.nodes[leader].port);
    wait_for_group(
        &cluster.nodes[leader],
        "g",
        "g watched by the leader",
        |g| watched_with_replicas(g, 2),
    );
    let follower = (0..3).find(|&i| i != leader).unwrap_or(0);
    // A follower learns the leader's HTTP address when the leader connects to it.
    wait_until(
        LONG,
        "the follower to know the leader's HTTP address",
        || {
            let status = cluster.status(follower)?;
            if status["leader"]["http_addr"] == leader_http.as_str() {
                Ok(())
            } else {
                Err(status.to_string())
            }
        },
    );

    let (status, body) = switchover(cluster.nodes[follower].port, "");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!("http://{leader_http}")),
        "the follower should name the leader: {body}"
    );
    assert_eq!(
        master.role().unwrap(),
        "master",
        "the follower changed nothing"
    );

    let (status, body) = switchover(cluster.nodes[leader].port, &format!("?to={}", a.addr()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["new_master"], a.addr(), "{body}");
    for i in 0..3 {
        wait_for_group(
            &cluster.nodes[i],
            "g",
            &format!("node {i} to show the switchover"),
            |g| g["master"] == a.addr() && g["last_failover"]["outcome"] == "succeeded",
        );
    }
    wait_replicating_from(&master, a.port, "the old master to follow a");
    wait_replicating_from(&b, a.port, "b to follow a");
    // Every node published +switch-master: the leader as leader, the others as observers.
    for i in 0..3 {
        let node = &cluster.nodes[i];
        wait_until(LONG, &format!("node {i} to log +switch-master"), || {
            if node.log().contains("event +switch-master") {
                Ok(())
            } else {
                Err("not yet".into())
            }
        });
    }
}

#[test]
fn a_target_that_does_not_catch_up_in_time_aborts_and_writes_resume() {
    let (master, a, _b) = topology(100, 100);
    let masters = format!("-masters=g={}", master.addr());
    let mut args = vec![masters.as_str(), "-switchover_timeout=0.5"];
    args.extend(FAST);
    let daemon = Daemon::start_with_env(
        &args,
        &[("REDIS_FAILOVER_SWITCHOVER_HOLD_MS", Some("1000"))],
    );
    wait_for_group(&daemon, "g", "g watched with both replicas", |g| {
        watched_with_replicas(g, 2)
    });
    let port = daemon.port;
    let target = a.addr();
    let request = std::thread::spawn(move || switchover(port, &format!("?to={target}")));
    // Once the writes are paused, the target stops answering (SIGSTOP) until the end.
    wait_until(LONG, "the pause step in the log", || {
        if daemon.log().contains("switchover step pause") {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    let pid = a.pid().expect("the replica's pid").to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args(["-s", name, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} {pid}");
    };
    signal("STOP");
    let answer = request.join();
    signal("CONT");
    let (status, body) = answer.expect("the request thread");
    assert_eq!(status, 503, "{body}");
    for says in ["did not catch up", "recorded as aborted", "writes resumed"] {
        assert!(body.contains(says), "{says:?} missing: {body}");
    }
    // The old master takes writes again at once and stays the group's master.
    master
        .cmd(&["SET", "after", "1"])
        .expect("a write after the abort");
    assert_eq!(master.role().unwrap(), "master");
    let g = wait_for_group(&daemon, "g", "g watched again at its master", |g| {
        g["master"] == master.addr() && g["state"] == "ok"
    });
    assert_eq!(g["last_failover"]["outcome"], "aborted", "{g}");
    assert_eq!(a.role().unwrap(), "slave");
}

#[test]
fn without_client_pause_it_is_refused_unless_forced() {
    // A server whose CLIENT command is renamed stands for one without CLIENT PAUSE WRITE.
    let master = RedisServer::start(&[
        "--rename-command".into(),
        "CLIENT".into(),
        "CLIENT_RENAMED_FOR_TEST".into(),
    ]);
    let a = RedisServer::replica_of(master.port, 100);
    master.wait_for_replicas(1);
    let masters = format!("-masters=g={}", master.addr());
    let mut args = vec![masters.as_str()];
    args.extend(FAST);
    let daemon = Daemon::start(&args);
    wait_for_group(&daemon, "g", "g watched with its replica", |g| {
        watched_with_replicas(g, 1)
    });

    let (status, body) = switchover(daemon.port, "");
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("CLIENT PAUSE WRITE") && body.contains("force=true"),
        "{body}"
    );
    assert_eq!(master.role().unwrap(), "master");
    let g = wait_for_group(&daemon, "g", "g watched again", |g| g["state"] == "ok");
    assert_eq!(g["last_failover"]["outcome"], "aborted", "{g}");

    let (status, body) = switchover(daemon.port, "?force=true");
    assert_eq!(status, 200, "{body}");
    let report = json(&body);
    assert_eq!(report["new_master"], a.addr(), "{report}");
    assert!(report["paused_ms"].is_null(), "{report}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap_or("")
            .contains("writes were not paused"),
        "{report}"
    );
    wait_replicating_from(&master, a.port, "the old master to follow");
}
