//! End-to-end failover with real redis-server processes and the daemon binary.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::fake_replica::{FakeReplica, Refusal};
use support::groups::port_of;
use support::{Daemon, RedisServer, wait_until};

const FAST: [&str; 2] = ["-check_interval=100", "-max_down_time=1"];

/// A master with two replicas of the given priorities, all linked.
fn topology(priority_a: u32, priority_b: u32) -> (RedisServer, RedisServer, RedisServer) {
    let master = RedisServer::master();
    let a = RedisServer::replica_of(master.port, priority_a);
    let b = RedisServer::replica_of(master.port, priority_b);
    master.wait_for_replicas(2);
    (master, a, b)
}

fn watch(master: &RedisServer, extra: &[&str]) -> Daemon {
    let masters = format!("-masters=g={}", master.addr());
    let mut args = vec![masters.as_str()];
    args.extend(FAST);
    args.extend(extra);
    let daemon = Daemon::start(&args);
    wait_for_state(&daemon, "ok");
    daemon
}

fn wait_for_state(daemon: &Daemon, state: &str) -> Value {
    wait_until(
        Duration::from_secs(20),
        &format!("group g in state {state}"),
        || {
            let g = daemon.group("g");
            if g["state"] == state {
                Ok(g)
            } else {
                Err(g.to_string())
            }
        },
    )
}

/// Waits for the group's last failover record.
fn wait_for_failover(daemon: &Daemon) -> Value {
    wait_until(Duration::from_secs(20), "a failover record", || {
        let g = daemon.group("g");
        if g["last_failover"].is_object() && g["state"] != "failing_over" {
            Ok(g)
        } else {
            Err(g.to_string())
        }
    })
}

#[test]
fn killed_master_fails_over_and_the_other_replica_follows() {
    let (mut master, a, b) = topology(100, 100);
    let daemon = watch(&master, &[]);
    master.cmd(&["SET", "before", "1"]).unwrap();
    for replica in [&a, &b] {
        wait_until(
            Duration::from_secs(10),
            "the key on both replicas",
            || match replica.cmd(&["GET", "before"]) {
                Ok(redis::Value::BulkString(_)) => Ok(()),
                seen => Err(format!("{seen:?}")),
            },
        );
    }
    let killed_at = Instant::now();
    master.kill();
    let g = wait_for_failover(&daemon);
    let waited = killed_at.elapsed();
    assert_eq!(g["last_failover"]["outcome"], "succeeded", "{g}");
    let new_port = port_of(&g["master"]);
    assert!(new_port == a.port || new_port == b.port, "{g}");
    // The window is respected: the master had not answered for a whole max_down_time.
    let down_for = g["last_failover"]["down_for_ms"].as_u64().unwrap_or(0);
    assert!(
        down_for >= 1000,
        "failed over after only {down_for} ms without an answer: {g}"
    );
    assert!(
        waited >= Duration::from_millis(800),
        "failed over {waited:?} after the kill"
    );
    let (new, other) = if new_port == a.port {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(new.role().unwrap(), "master");
    // The other replica now replicates from the new master: a write there shows up.
    new.cmd(&["SET", "after", "2"]).unwrap();
    wait_until(
        Duration::from_secs(20),
        "the key written to the new master on the other replica",
        || match other.cmd(&["GET", "after"]) {
            Ok(redis::Value::BulkString(v)) if v == b"2" => Ok(()),
            seen => Err(format!(
                "{seen:?}; master_port:{:?}",
                other.info_field("master_port")
            )),
        },
    );
    assert_eq!(
        other.info_field("master_port").unwrap(),
        new.port.to_string()
    );
    assert!(matches!(
        new.cmd(&["GET", "before"]),
        Ok(redis::Value::BulkString(_))
    ));
    // GET /master reports the new master; the group keeps its name.
    let (_, masters) = daemon.http("GET", "/master", "").unwrap();
    assert_eq!(masters, new.addr());
    wait_until(
        Duration::from_secs(20),
        "the new master watched with its replica",
        || {
            let g = daemon.group("g");
            let replicas = g["replicas"].as_array().map(|r| r.len()).unwrap_or(0);
            if g["state"] == "ok" && replicas == 1 {
                Ok(())
            } else {
                Err(g.to_string())
            }
        },
    );
    let log = daemon.log();
    for step in [
        "step info",
        "step elect",
        "step promote",
        "step repoint",
        "failover succeeded",
    ] {
        assert!(log.contains(step), "log lacks {step:?}:\n{log}");
    }
}

/// The user the daemon speaks as in [`LockedOut`], given to every server.
const WATCHER_USER: [&str; 6] = ["watcher", "on", ">watcher-pw", "~*", "&*", "+@all"];

/// A master the daemon cannot use while its replicas hear it: every server has a user
/// `watcher` for the daemon (the default user stays open for replication and the test's
/// own writes), a writer keeps the replicas hearing the master every 20 ms, and the
/// `watcher` user is deleted on the master only.
struct LockedOut {
    master: RedisServer,
    _replicas: (RedisServer, RedisServer),
    daemon: Daemon,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl LockedOut {
    fn start() -> LockedOut {
        let user = |extra: &[String]| {
            let mut args = vec!["--user".to_string()];
            args.extend(WATCHER_USER.iter().map(|s| s.to_string()));
            args.extend_from_slice(extra);
            RedisServer::start(&args)
        };
        let master = user(&[]);
        let replica = || {
            user(&[
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port.to_string(),
            ])
        };
        let replicas = (replica(), replica());
        master.wait_for_replicas(2);
        let daemon = watch(
            &master,
            &["-redis_username=watcher", "-redis_password=watcher-pw"],
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (port, stopped) = (master.port, stop.clone());
        let writer = std::thread::spawn(move || {
            let mut i = 0u64;
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = support::redis_cmd(port, &["SET", "tick", &i.to_string()]);
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        master.cmd(&["ACL", "DELUSER", "watcher"]).unwrap();
        let _ = master.cmd(&["CLIENT", "KILL", "USER", "watcher"]);
        LockedOut {
            master,
            _replicas: replicas,
            daemon,
            stop,
            writer: Some(writer),
        }
    }

    /// The daemon gets its user back: the group is ok again; the writer stops.
    fn let_back(&mut self) {
        let mut args = vec!["ACL", "SETUSER"];
        args.extend(WATCHER_USER);
        self.master.cmd(&args).unwrap();
        wait_for_state(&self.daemon, "ok");
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(writer) = self.writer.take() {
            writer.join().unwrap();
        }
    }
}

/// The record of an attempt stopped because a replica still hears the master.
fn assert_vetoed_by_a_replica(g: &serde_json::Value) {
    let record = &g["last_failover"];
    assert_eq!(record["outcome"], "aborted", "{g}");
    assert!(
        record["reason"]
            .as_str()
            .unwrap_or("")
            .contains("master_link_status:up"),
        "{g}"
    );
}

#[test]
fn a_master_the_daemon_cannot_use_but_its_replicas_hear_is_not_failed_over() {
    // The daemon's checks fail, while the replicas hear the master all along.
    let mut locked = LockedOut::start();
    let g = wait_for_failover(&locked.daemon);
    assert_vetoed_by_a_replica(&g);
    locked.let_back();
    assert_eq!(locked.master.role().unwrap(), "master");
    assert_eq!(
        port_of(&locked.daemon.group("g")["master"]),
        locked.master.port
    );
}

#[test]
fn a_frozen_master_is_failed_over_once_its_replicas_stop_hearing_it() {
    // A master stuck (here in DEBUG SLEEP) keeps its replicas' links up for
    // repl-timeout (60 s), but they stop hearing from it: no fresh evidence, no veto.
    let (master, a, b) = topology(100, 100);
    let daemon = watch(&master, &[]);
    let port = master.port;
    let frozen = Instant::now();
    let sleeper = std::thread::spawn(move || support::redis_cmd(port, &["DEBUG", "SLEEP", "8"]));
    let g = wait_until(
        Duration::from_secs(20),
        "a failover of the frozen master",
        || {
            let g = daemon.group("g");
            if g["last_failover"]["outcome"] == "succeeded" {
                Ok(g)
            } else {
                Err(g.to_string())
            }
        },
    );
    let took = frozen.elapsed();
    println!(
        "frozen master failed over {} ms after it froze",
        took.as_millis()
    );
    assert!(
        took < Duration::from_secs(1 + 2 + 1),
        "took {took:?}, beyond max_down_time + 2 s (and a second of slack): {g}"
    );
    assert!([a.port, b.port].contains(&port_of(&g["master"])), "{g}");
    let _ = sleeper.join();
}

#[test]
fn failed_failover_is_reported_and_not_retried() {
    let (mut master, _a, _b) = topology(0, 0);
    let daemon = watch(&master, &[]);
    master.kill();
    let g = wait_for_state(&daemon, "failed");
    let record = &g["last_failover"];
    assert_eq!(record["outcome"], "failed", "{g}");
    let reason = g["reason"].as_str().unwrap_or("");
    assert!(reason.contains("slave_priority is 0"), "{g}");
    assert!(daemon.log().contains("failover FAILED"), "{}", daemon.log());
    // Not retried on its own, even once the master is back.
    master.restart();
    std::thread::sleep(Duration::from_millis(1500));
    let g = daemon.group("g");
    assert_eq!(g["state"], "failed", "{g}");
    // Adding the group again resumes watching.
    let (status, body) = daemon
        .http("POST", &format!("/master?masters=g={}", master.addr()), "")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    wait_for_state(&daemon, "ok");
}

#[test]
fn a_configured_master_that_is_a_replica_is_not_watched() {
    let (master, a, _b) = topology(100, 100);
    let masters = format!("-masters=g={}", a.addr());
    let daemon = Daemon::start(&[&masters, "-check_interval=100", "-max_down_time=1"]);
    let g = wait_for_state(&daemon, "not_master");
    assert!(
        g["reason"]
            .as_str()
            .unwrap_or("")
            .contains(&master.port.to_string()),
        "{g}"
    );
    assert!(daemon.log().contains("no longer watched"));
}

/// A port that answers anything it is sent with bytes that are not RESP.
fn garbage_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut stream = stream;
                let mut buf = [0u8; 512];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(b"%%garbage\r\n*9\r\n:x\r\n").is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_server_answering_garbage_counts_as_down_and_the_daemon_keeps_running() {
    let port = garbage_server();
    let masters = format!("-masters=g=127.0.0.1:{port}");
    let daemon = Daemon::start(&[&masters, "-check_interval=100", "-max_down_time=1"]);
    // Down, and with no replicas known the attempt is aborted (and retried later).
    let g = wait_for_failover(&daemon);
    assert_eq!(g["last_failover"]["outcome"], "aborted", "{g}");
    assert!(g["last_error"].is_string(), "{g}");
    let (status, _) = daemon.http("GET", "/master", "").unwrap();
    assert_eq!(status, 200);
}

/// A port that accepts connections and never answers: a hung server.
fn hanging_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
            if held.len() > 10_000 {
                break;
            }
        }
    });
    (port, handle)
}

/// A port whose connects never complete: a listener with a full accept queue (SYNs
/// beyond it are dropped), like a host that is gone. The queue holders are returned.
fn blackhole() -> (u16, socket2::Socket, Vec<std::net::TcpStream>) {
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&addr.into()).unwrap();
    listener.listen(0).unwrap();
    let port = listener.local_addr().unwrap().as_socket().unwrap().port();
    let mut held = Vec::new();
    for _ in 0..4 {
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        if let Ok(s) = std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)) {
            held.push(s);
        }
    }
    (port, listener, held)
}

#[test]
fn hanging_masters_do_not_delay_the_failover_of_another() {
    let (hang_port, _server) = hanging_server();
    let (hole_port, _listener, _held) = blackhole();
    let garbage_port = garbage_server();
    let (mut master, a, b) = topology(100, 100);
    let mut list: Vec<String> = (0..60)
        .map(|i| {
            let port = [hang_port, hole_port, garbage_port][i % 3];
            format!("hung{i}=127.0.0.1:{port}")
        })
        .collect();
    list.push(format!("g={}", master.addr()));
    let masters = format!("-masters={}", list.join(","));
    let daemon = Daemon::start(&[&masters, "-check_interval=100", "-max_down_time=1"]);
    wait_for_state(&daemon, "ok");
    // The hung groups are down (their failovers abort: no replicas); g stays ok meanwhile.
    // hung6 never answers, hung7 never connects, hung8 answers garbage.
    for name in ["hung6", "hung7", "hung8"] {
        wait_until(
            Duration::from_secs(20),
            &format!("{name} to be found down"),
            || {
                let g = daemon.group(name);
                if g["last_failover"]["outcome"] == "aborted" {
                    Ok(())
                } else {
                    Err(g.to_string())
                }
            },
        );
    }
    assert_eq!(daemon.group("g")["state"], "ok");
    let killed_at = Instant::now();
    master.kill();
    let g = wait_for_failover(&daemon);
    let took = killed_at.elapsed();
    assert_eq!(g["last_failover"]["outcome"], "succeeded", "{g}");
    assert!([a.port, b.port].contains(&port_of(&g["master"])), "{g}");
    // Checked one after the other, 40 hung servers at a 75 ms timeout would add ~3 s.
    assert!(
        daemon.group("hung7")["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("connect timed out"),
        "{}",
        daemon.group("hung7")
    );
    for (name, says) in [
        ("hung6", "read timed out"),
        ("hung8", "unexpected reply type"),
    ] {
        let hung = daemon.group(name);
        assert!(
            hung["last_error"].as_str().unwrap_or("").contains(says),
            "{name}: {hung}"
        );
    }
    assert!(
        took < Duration::from_secs(3),
        "failover took {took:?} with hung groups beside it"
    );
}

/// A master with one honest replica (priority 100) and a fake one that looks better
/// (priority 1, a huge offset) but cannot be promoted; the daemon watches both.
fn master_with_fake(refusal: Refusal) -> (RedisServer, RedisServer, FakeReplica, Daemon) {
    let master = RedisServer::master();
    let honest = RedisServer::replica_of(master.port, 100);
    let fake = FakeReplica::start(master.port, refusal);
    wait_until(
        Duration::from_secs(20),
        "the master to list both replicas",
        || match master.cmd(&["ROLE"])? {
            redis::Value::Array(items) => match items.get(2) {
                Some(redis::Value::Array(list)) if list.len() == 2 => Ok(()),
                other => Err(format!("{other:?}")),
            },
            other => Err(format!("{other:?}")),
        },
    );
    let daemon = watch(&master, &[]);
    wait_until(Duration::from_secs(20), "g watched with 2 replicas", || {
        let g = daemon.group("g");
        match g["replicas"].as_array() {
            Some(r) if r.len() == 2 => Ok(()),
            _ => Err(g.to_string()),
        }
    });
    (master, honest, fake, daemon)
}

/// The failover promoted the honest replica in the attempt that first chose the fake,
/// passing over the fake (for `why`), and told the fake to follow the winner.
fn passed_over_the_fake(
    daemon: &Daemon,
    honest: &RedisServer,
    fake: &FakeReplica,
    why: &str,
) -> Value {
    let g = wait_for_failover(daemon);
    let record = &g["last_failover"];
    assert_eq!(record["outcome"], "succeeded", "{g}");
    assert_eq!(record["new_master"], honest.addr().as_str(), "{g}");
    assert_eq!(record["count"], 1, "one attempt: {g}");
    let passed = record["passed_over"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(passed.len(), 1, "{g}");
    assert_eq!(passed[0]["addr"], fake.addr().as_str(), "{g}");
    let reason = passed[0]["reason"].as_str().unwrap_or("");
    assert!(reason.contains(why), "{reason}: {g}");
    let text = record["reason"].as_str().unwrap_or("");
    assert!(
        text.contains(&fake.addr()) && text.contains(&honest.addr()),
        "the record names both candidates: {g}"
    );
    assert_eq!(honest.role().unwrap(), "master");
    let repoint = format!("SLAVEOF 127.0.0.1 {}", honest.port);
    wait_until(
        Duration::from_secs(20),
        "the fake replica to be re-pointed to the winner",
        || {
            let seen = fake.commands();
            if seen.iter().any(|c| c.eq_ignore_ascii_case(&repoint)) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    );
    let log = daemon.log();
    assert!(
        log.contains("passed over") && log.contains("moving on to"),
        "{log}"
    );
    g
}

#[test]
fn a_replica_that_refuses_promotion_is_passed_over_in_the_same_attempt() {
    let (mut master, honest, fake, daemon) = master_with_fake(Refusal::Error);
    let killed_at = Instant::now();
    master.kill();
    passed_over_the_fake(&daemon, &honest, &fake, "refused SLAVEOF NO ONE");
    let took = killed_at.elapsed();
    eprintln!("failover past a refusing replica: {} ms", took.as_millis());
    assert!(
        took < Duration::from_secs(10),
        "a refusal costs no waiting, yet the failover took {took:?}"
    );
}

#[test]
fn a_replica_that_never_becomes_master_is_passed_over_after_the_promotion_timeout() {
    let (mut master, honest, fake, daemon) = master_with_fake(Refusal::Stall);
    master.kill();
    // max_down_time is 1 s: the promotion timeout is its floor, 2 s.
    let g = passed_over_the_fake(
        &daemon,
        &honest,
        &fake,
        "ROLE still not master after 2000 ms",
    );
    let duration = g["last_failover"]["duration_ms"].as_u64().unwrap_or(0);
    assert!(
        (2000..10_000).contains(&duration),
        "the attempt waited one promotion timeout: {g}"
    );
}

/// `redis_failover_failovers_total` for group g and `outcome`, from `GET /metrics`.
fn failovers_total(daemon: &Daemon, outcome: &str) -> Result<u64, String> {
    let (_, page) = daemon.http("GET", "/metrics", "")?;
    let series = format!("redis_failover_failovers_total{{group=\"g\",outcome=\"{outcome}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no {series} in {page}"))
}

#[test]
fn repeated_stopped_attempts_are_one_history_entry_with_a_count() {
    // Every attempt (one per window) stops at the same reason.
    let mut locked = LockedOut::start();
    let g = wait_until(Duration::from_secs(20), "3 stopped attempts", || {
        let g = locked.daemon.group("g");
        if g["last_failover"]["count"].as_u64().unwrap_or(0) >= 3 {
            Ok(g)
        } else {
            Err(g.to_string())
        }
    });
    assert_vetoed_by_a_replica(&g);
    let record = &g["last_failover"];
    let first = record["first_started_at_ms"].as_u64().unwrap_or(u64::MAX);
    let last = record["started_at_ms"].as_u64().unwrap_or(0);
    assert!(first + 1000 < last, "first and last attempt times: {g}");
    locked.let_back();
    // Every attempt still counts in the metrics; the history holds them as one entry.
    let g = locked.daemon.group("g");
    let count = g["last_failover"]["count"].as_u64().unwrap_or(0);
    assert_eq!(failovers_total(&locked.daemon, "aborted"), Ok(count), "{g}");
    assert_eq!(port_of(&g["master"]), locked.master.port);
}

fn min_replicas_to_write(master: &RedisServer) -> Result<(), String> {
    match master.cmd(&["CONFIG", "GET", "min-replicas-to-write"])? {
        redis::Value::Array(v) if v.get(1) == Some(&redis::Value::BulkString(b"1".to_vec())) => {
            Ok(())
        }
        other => Err(format!("min-replicas-to-write: {other:?}")),
    }
}

/// Bounded write loss survives a restart of the master without a config file (as in a
/// container): the restart forgets the `CONFIG SET`, and the daemon sets it again.
#[test]
fn a_restarted_master_gets_the_bounded_loss_settings_again() {
    let mut master = RedisServer::master();
    let daemon = watch(&master, &["-min_replicas_to_write=1"]);
    wait_until(
        Duration::from_secs(20),
        "min-replicas-to-write 1 on the master",
        || min_replicas_to_write(&master),
    );
    master.restart();
    wait_until(
        Duration::from_secs(20),
        "min-replicas-to-write 1 on the master again after its restart",
        || min_replicas_to_write(&master),
    );
    assert!(
        daemon
            .log()
            .matches("refuses writes unless 1 replica")
            .count()
            >= 2,
        "the log says the settings were sent twice:\n{}",
        daemon.log()
    );
}
