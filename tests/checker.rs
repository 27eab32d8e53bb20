//! The checker under hostile and slow servers: no server can stall another's check, a
//! closed link is seen at once, and the failover still waits for the whole window.
//!
//! The hostile "masters" are written here: small TCP servers that answer `ROLE` as a
//! master a few times and then misbehave (trickle a reply that never ends, stop
//! answering, answer one byte at a time slower than any deadline).

mod support;

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::{Daemon, RedisServer, wait_until};

/// `ROLE` of a master with no replicas.
const MASTER_ROLE: &[u8] = b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n";

/// How a fake master misbehaves once it has answered `honest` checks.
#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Starts a 4 MB bulk string and sends one byte of it every 40 ms.
    Trickle,
    /// Reads the command and never answers.
    Silent,
    /// Answers `ROLE` correctly, one byte every 50 ms: it starts within the deadline
    /// and ends long after it.
    ByteByByte,
    /// Starts a 4 MB bulk string and sends bytes as fast as the socket takes them,
    /// past its end and forever.
    EndlessBulk,
}

/// A fake master on a port of its own; every connection gets its own thread. It answers
/// `honest` checks in all (whatever the connection), then misbehaves for good.
fn fake_master(honest: usize, misbehaviour: Misbehaviour) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answered = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let answered = answered.clone();
            std::thread::spawn(move || serve_fake(stream, honest, &answered, misbehaviour));
        }
    });
    port
}

fn serve_fake(
    mut stream: TcpStream,
    honest: usize,
    answered: &AtomicUsize,
    misbehaviour: Misbehaviour,
) {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if answered.fetch_add(1, Ordering::SeqCst) < honest {
            if stream.write_all(MASTER_ROLE).is_err() {
                return;
            }
            continue;
        }
        let result = match misbehaviour {
            Misbehaviour::Trickle => {
                trickle(&mut stream, b"$4000000\r\n", Duration::from_millis(40))
            }
            Misbehaviour::Silent => {
                // Keep the connection open and say nothing, until the daemon gives up.
                let _ = stream.read(&mut buf);
                return;
            }
            Misbehaviour::ByteByByte => {
                let mut sent = Ok(());
                for byte in MASTER_ROLE {
                    sent = stream.write_all(&[*byte]);
                    if sent.is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                sent
            }
            Misbehaviour::EndlessBulk => {
                let _ = stream.write_all(b"$4000000\r\n");
                let chunk = [b'x'; 16 * 1024];
                loop {
                    if stream.write_all(&chunk).is_err() {
                        return;
                    }
                }
            }
        };
        if result.is_err() {
            return;
        }
    }
}

/// Sends `head`, then one byte every `every`, until the peer closes.
fn trickle(stream: &mut TcpStream, head: &[u8], every: Duration) -> std::io::Result<()> {
    stream.write_all(head)?;
    loop {
        std::thread::sleep(every);
        stream.write_all(b"x")?;
    }
}

/// A master with two linked replicas.
fn real_group() -> (RedisServer, RedisServer, RedisServer) {
    let master = RedisServer::master();
    let a = RedisServer::replica_of(master.port, 100);
    let b = RedisServer::replica_of(master.port, 100);
    master.wait_for_replicas(2);
    (master, a, b)
}

fn group_in(daemon: &Daemon, name: &str, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    wait_until(Duration::from_secs(20), what, || {
        let g = daemon.group(name);
        if wanted(&g) {
            Ok(g)
        } else {
            Err(g.to_string())
        }
    })
}

/// Kills the real master and waits for its failover; returns the time it took.
fn kill_and_fail_over(daemon: &Daemon, master: &mut RedisServer) -> (Value, Duration) {
    let killed = Instant::now();
    master.kill();
    let g = group_in(daemon, "g", "the real group to fail over", |g| {
        g["last_failover"]["outcome"] == "succeeded"
    });
    (g, killed.elapsed())
}

/// The failover must come within the window plus this much after the kill (the window
/// counts from the last successful check, up to one check interval before the kill).
const FAILOVER_MARGIN: Duration = Duration::from_millis(1000);

#[test]
fn twenty_trickling_masters_do_not_delay_a_real_failover() {
    let (mut master, _a, _b) = real_group();
    let mut list: Vec<String> = (0..20)
        .map(|i| {
            format!(
                "trickle{i}=127.0.0.1:{}",
                fake_master(3, Misbehaviour::Trickle)
            )
        })
        .collect();
    list.push(format!("g={}", master.addr()));
    let masters = format!("-masters={}", list.join(","));
    let daemon = Daemon::start(&[&masters, "-check_interval=100", "-max_down_time=1"]);
    group_in(&daemon, "g", "the real group ok", |g| g["state"] == "ok");
    // Every trickling group answered a few checks, then its checks time out.
    for i in 0..20 {
        let name = format!("trickle{i}");
        let g = group_in(&daemon, &name, &format!("{name} down with a reason"), |g| {
            let error = g["last_error"].as_str().unwrap_or("");
            (g["state"] == "down" || g["state"] == "suspect" || g["last_failover"].is_object())
                && error.contains("read timed out")
        });
        assert_eq!(g["disconnected"], true, "{g}");
    }
    assert_eq!(
        daemon.group("g")["state"],
        "ok",
        "the real group is checked meanwhile"
    );
    let (g, took) = kill_and_fail_over(&daemon, &mut master);
    println!(
        "failover with 20 trickling masters beside it: {} ms after the kill",
        took.as_millis()
    );
    assert!(
        took < Duration::from_secs(1) + FAILOVER_MARGIN,
        "failover took {took:?} with trickling masters beside it: {g}"
    );
}

#[test]
fn silent_slow_and_endless_servers_are_down_and_delay_nobody() {
    let (mut master, _a, _b) = real_group();
    let kinds = [
        ("silent", Misbehaviour::Silent),
        ("slow", Misbehaviour::ByteByByte),
        ("endless", Misbehaviour::EndlessBulk),
    ];
    let mut list = Vec::new();
    for (name, kind) in kinds {
        for i in 0..4 {
            list.push(format!("{name}{i}=127.0.0.1:{}", fake_master(2, kind)));
        }
    }
    list.push(format!("g={}", master.addr()));
    let masters = format!("-masters={}", list.join(","));
    let daemon = Daemon::start(&[&masters, "-check_interval=100", "-max_down_time=1"]);
    group_in(&daemon, "g", "the real group ok", |g| g["state"] == "ok");
    for (name, says) in [
        ("silent0", &["read timed out (no reply)"][..]),
        ("slow0", &["read timed out (the reply did not end in time)"]),
        // Cut off by the deadline, or read to its declared end and found not to end.
        ("endless0", &["did not end in time", "not followed by CRLF"]),
    ] {
        group_in(
            &daemon,
            name,
            &format!("{name} failing with {says:?}"),
            |g| {
                let error = g["last_error"].as_str().unwrap_or("");
                says.iter().any(|s| error.contains(s)) && g["state"] != "ok"
            },
        );
    }
    let (g, took) = kill_and_fail_over(&daemon, &mut master);
    println!(
        "failover with 12 hostile masters beside it: {} ms after the kill",
        took.as_millis()
    );
    assert!(
        took < Duration::from_secs(1) + FAILOVER_MARGIN,
        "failover took {took:?} with hostile masters beside it: {g}"
    );
}

#[test]
fn a_closed_link_shows_at_once_and_the_failover_still_waits_for_the_window() {
    let (mut master, _a, _b) = real_group();
    let masters = format!("-masters=g={}", master.addr());
    // A long interval and window: the closed link must be seen long before either.
    let daemon = Daemon::start(&[&masters, "-check_interval=1000", "-max_down_time=3"]);
    let g = group_in(&daemon, "g", "group ok", |g| g["state"] == "ok");
    assert_eq!(g["disconnected"], false, "{g}");
    let killed = Instant::now();
    master.kill();
    let g = wait_until(Duration::from_secs(5), "the link to show as down", || {
        let g = daemon.group("g");
        if g["disconnected"] == true {
            Ok(g)
        } else {
            Err(g.to_string())
        }
    });
    let seen = killed.elapsed();
    println!("link down seen {} ms after kill -9", seen.as_millis());
    assert!(
        seen < Duration::from_secs(1),
        "the closed link took {seen:?} to show, with checks 1 s apart: {g}"
    );
    assert!(
        g["last_failover"].is_null(),
        "failed over before the window: {g}"
    );
    let log = daemon.log();
    assert!(log.contains("link to master"), "{log}");
    // The failover comes, but only once the window (3 s) has passed since the last
    // successful check.
    let g = group_in(&daemon, "g", "the failover", |g| {
        g["last_failover"]["outcome"] == "succeeded"
    });
    let down_for = g["last_failover"]["down_for_ms"].as_u64().unwrap_or(0);
    assert!(
        down_for >= 3000,
        "failed over after only {down_for} ms: {g}"
    );
}
