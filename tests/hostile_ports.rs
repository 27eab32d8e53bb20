//! The HTTP port and the Sentinel port against hostile or careless clients, on the
//! running daemon binary: descriptor exhaustion, requests that never finish, oversized
//! heads and bodies, an endless header line, connection floods, LF-only requests.
//! Each port must stay bounded (connections, memory, descriptors) and keep answering
//! real clients. The bounds are the library's own constants.

mod support;

use redis_failover::api::http::{
    EVICT_AFTER, MAX_BODY, MAX_CONNECTIONS as HTTP_CAP, MAX_HEAD, REQUEST_TIMEOUT,
};
use redis_failover::api::sentinel::{
    MAX_CONNECTIONS as SENTINEL_CAP, REQUEST_TIMEOUT as SENTINEL_REQUEST_TIMEOUT,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::ports::{Fate, Held, fd_numbers, open_fds, raise_own_nofile, raw_exchange, timed_get};
use support::{Daemon, RedisServer, free_port, memory_kb, redis_cmd, wait_until};

/// How many of `held` the daemon answered with a text containing `says`, and how many
/// it closed without a word.
fn tally(held: &mut [Held], says: &str) -> (usize, usize, Vec<String>) {
    let (mut answered, mut closed, mut other) = (0, 0, Vec::new());
    for h in held.iter_mut() {
        match h.fate() {
            Fate::Open => {}
            Fate::Closed => closed += 1,
            Fate::Answered(text) if text.contains(says) => answered += 1,
            Fate::Answered(text) => other.push(text),
        }
    }
    (answered, closed, other)
}

#[test]
fn the_http_port_survives_running_out_of_descriptors() {
    raise_own_nofile();
    let mut daemon = Daemon::start_limited(&[], 64);
    let pid = daemon.pid().expect("pid");
    for round in 1..=2 {
        // Far more idle connections than 64 descriptors allow.
        let mut held: Vec<Held> = (0..150)
            .map(|_| Held::open(daemon.port, b"").expect("connect"))
            .collect();
        // Each connection the daemon has no descriptor for is answered and closed at
        // once, none left waiting in the listen queue.
        let (refused, closed) = wait_until(
            Duration::from_secs(5),
            "the connections beyond the limit refused",
            || {
                let (refused, closed, other) = tally(&mut held, "out of file descriptors");
                if !other.is_empty() {
                    return Ok(Err(format!("unexpected answers: {other:?}")));
                }
                if refused + closed >= held.len() - 64 {
                    Ok(Ok((refused, closed)))
                } else {
                    Err(format!("{refused} refused, {closed} closed"))
                }
            },
        )
        .unwrap_or_else(|e: String| panic!("round {round}: {e}"));
        eprintln!("round {round}: {refused} refused (503), {closed} closed without a word");
        assert!(refused > 0, "round {round}");
        // Descriptors inherited above the limit (cargo's jobserver) do not count.
        let below_limit = fd_numbers(pid).iter().filter(|fd| **fd < 64).count();
        eprintln!(
            "round {round}: {below_limit} descriptors below the limit, {} in all",
            open_fds(pid).expect("fds")
        );
        // A real client gets in even now: the idle connection held longest makes room
        // once it has been idle for EVICT_AFTER.
        let started = Instant::now();
        wait_until(
            EVICT_AFTER + Duration::from_secs(10),
            "GET /master with the descriptors exhausted",
            || timed_get(daemon.port, "/master"),
        );
        eprintln!(
            "round {round}: GET /master answered {:?} into the exhaustion",
            started.elapsed()
        );
        drop(held);
        wait_until(
            Duration::from_secs(10),
            "GET /master once the idle connections closed",
            || timed_get(daemon.port, "/master"),
        );
        for i in 0..20 {
            timed_get(daemon.port, "/master")
                .unwrap_or_else(|e| panic!("round {round}, GET {i} after recovery: {e}"));
        }
    }
    assert!(daemon.is_running(), "the daemon exited");
    assert!(
        daemon.log().contains("Too many open files"),
        "the daemon should have met EMFILE"
    );
}

#[test]
fn stuck_request_bodies_block_nothing_and_are_closed_after_the_request_timeout() {
    let daemon = Daemon::start(&[]);
    let never_ending =
        b"POST /master HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nmasters=\r\n";
    let slow_head =
        b"POST /master HTTP/1.1\r\nHost: localhost\r\nContent-Length: 60000\r\n\r\nmasters=";
    // As many stuck requests of each kind as there are handler threads, and more.
    let mut stuck: Vec<Held> = (0..5)
        .map(|_| Held::open(daemon.port, never_ending).expect("connect"))
        .collect();
    let mut slow: Vec<Held> = (0..5)
        .map(|_| Held::open(daemon.port, slow_head).expect("connect"))
        .collect();
    let started = Instant::now();
    let (_, took) = timed_get(daemon.port, "/master").expect("GET /master");
    assert!(
        took < Duration::from_secs(2),
        "GET /master took {took:?} behind 10 stuck requests"
    );
    let deadline = REQUEST_TIMEOUT + Duration::from_secs(10);
    let mut next_get = Instant::now();
    loop {
        // The slow bodies keep trickling, a byte every 250 ms.
        for s in slow.iter_mut() {
            let _ = s.stream.write(b"a");
        }
        let mut waiting = Vec::new();
        for (i, h) in stuck.iter_mut().chain(slow.iter_mut()).enumerate() {
            match h.fate() {
                Fate::Answered(text) if h.is_closed() => {
                    assert!(text.starts_with("HTTP/1.1 408"), "connection {i}: {text}")
                }
                fate => waiting.push(format!("{i}: {fate:?}")),
            }
        }
        if waiting.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "still open after {:?}: {waiting:?}",
            started.elapsed()
        );
        if Instant::now() >= next_get {
            let (_, took) = timed_get(daemon.port, "/master").expect("GET /master meanwhile");
            assert!(took < Duration::from_secs(2), "GET /master took {took:?}");
            next_get = Instant::now() + Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let closed_after = started.elapsed();
    eprintln!("all stuck requests got 408 and were closed after {closed_after:?}");
    assert!(
        closed_after + Duration::from_secs(1) >= REQUEST_TIMEOUT,
        "closed after {closed_after:?}, before the request timeout"
    );
}

#[test]
fn oversized_heads_and_bodies_are_refused_and_the_connection_closed() {
    let daemon = Daemon::start(&[]);
    let exchange = |request: &[u8]| {
        raw_exchange(daemon.port, request, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("no reply and close: {e}"))
            .0
    };
    let big_field = format!(
        "GET /master HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(MAX_HEAD + 1024)
    );
    let reply = exchange(big_field.as_bytes());
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert!(reply.contains(&format!("over {MAX_HEAD} bytes")), "{reply}");
    let many: String = (0..100).map(|i| format!("X-{i}: 1\r\n")).collect();
    let reply = exchange(format!("GET /master HTTP/1.1\r\n{many}\r\n").as_bytes());
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    // A body over the cap, sent in full with its length, or in chunks.
    let body = format!("masters={}", "a".repeat(MAX_BODY));
    let sized = format!(
        "POST /master HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut chunked =
        b"POST /master HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in body.as_bytes().chunks(8192) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    for request in [sized.as_bytes(), &chunked] {
        let reply = exchange(request);
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
        assert!(reply.contains(&format!("over {MAX_BODY} bytes")), "{reply}");
        assert!(reply.contains("Connection: close"), "{reply}");
    }
    // A chunked body under the cap is read and answered.
    let reply = exchange(b"POST /master HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nmasters=\r\n4\r\nh:1,\r\n0\r\n\r\n");
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(reply.contains("empty master"), "{reply}");
    assert_eq!(timed_get(daemon.port, "/master").map(|r| r.0), Ok(200));
}

#[test]
fn an_endless_header_line_does_not_grow_memory() {
    const SEND: usize = 256 * 1024 * 1024;
    let daemon = Daemon::start(&[]);
    let pid = daemon.pid().expect("pid");
    let (rss_before, hwm_before) = memory_kb(pid).expect("memory");
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).expect("connect");
    let mut reader = stream.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0;
        let _ = stream.write_all(b"GET /");
        while sent < SEND {
            match stream.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    });
    let mut peak = rss_before;
    while !writer.is_finished() {
        peak = peak.max(memory_kb(pid).expect("memory").0);
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent = writer.join().expect("writer");
    let (_, hwm_after) = memory_kb(pid).expect("memory");
    let mut reply = Vec::new();
    reader
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = reader.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    eprintln!(
        "sent {} MB before the daemon closed; RSS {rss_before} kB -> peak {peak} kB; HWM {hwm_before} -> {hwm_after} kB; reply {:?}",
        sent / 1_000_000,
        reply.lines().next()
    );
    assert!(
        sent < SEND,
        "the daemon read all {SEND} bytes of one header line"
    );
    let growth = peak.saturating_sub(rss_before).max(hwm_after - hwm_before);
    assert!(growth < 8 * 1024, "memory grew by {growth} kB");
    if !reply.is_empty() {
        assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    }
    assert_eq!(timed_get(daemon.port, "/master").map(|r| r.0), Ok(200));
}

/// Opens `cap + excess` connections (every fifth half-sent), checks the excess was
/// refused at once (or made room by eviction, when opening them took longer than
/// EVICT_AFTER) and that the daemon holds no more than `cap` of them.
fn flood(port: u16, pid: u32, cap: usize, half: &[u8], refusal: &str) -> Vec<Held> {
    let excess = 100;
    let base = open_fds(pid).expect("fds");
    let started = Instant::now();
    let mut held: Vec<Held> = (0..cap + excess)
        .map(|i| Held::open(port, if i % 5 == 0 { half } else { b"" }).expect("connect"))
        .collect();
    let filled_in = started.elapsed();
    let (refused, closed) = wait_until(Duration::from_secs(10), "the excess refused", || {
        let (refused, closed, other) = tally(&mut held, refusal);
        if !other.is_empty() {
            return Ok(Err(format!("unexpected answers: {other:?}")));
        }
        if refused + closed >= excess {
            Ok(Ok((refused, closed)))
        } else {
            Err(format!("{refused} refused, {closed} closed"))
        }
    })
    .unwrap_or_else(|e: String| panic!("{e}"));
    eprintln!(
        "opened {} connections in {filled_in:?}: {refused} refused with {refusal:?}, {closed} closed",
        cap + excess
    );
    if filled_in < EVICT_AFTER / 2 {
        // The first connections beyond the cap came when none was old enough to evict
        // (unless the daemon lagged a second behind its listen queue).
        assert!(refused > 0, "none refused at once");
    }
    let fds = open_fds(pid).expect("fds");
    assert!(
        fds <= base + cap,
        "{fds} descriptors open, {base} before the flood, cap {cap}"
    );
    held
}

#[test]
fn the_http_connection_cap_holds_and_real_clients_still_get_in() {
    raise_own_nofile();
    let daemon = Daemon::start_limited(&[], 4096);
    let pid = daemon.pid().expect("pid");
    let held = flood(
        daemon.port,
        pid,
        HTTP_CAP,
        b"GET /mas",
        "503 Service Unavailable",
    );
    let started = Instant::now();
    wait_until(
        EVICT_AFTER + Duration::from_secs(10),
        "GET /master with the cap full",
        || timed_get(daemon.port, "/master"),
    );
    eprintln!("GET /master answered {:?} later", started.elapsed());
    let fds = open_fds(pid).expect("fds");
    assert!(fds < HTTP_CAP + 64, "{fds} descriptors");
    drop(held);
}

#[test]
fn the_sentinel_connection_cap_holds_and_real_clients_still_get_in() {
    raise_own_nofile();
    let master = RedisServer::master();
    let port = free_port();
    let daemon = Daemon::start_limited(
        &[
            &format!("-sentinel_addr=127.0.0.1:{port}"),
            &format!("-masters=cache={}", master.addr()),
        ],
        4096,
    );
    let pid = daemon.pid().expect("pid");
    let held = flood(
        port,
        pid,
        SENTINEL_CAP,
        b"*3\r\n$8\r\nSENTINEL\r\n",
        "-ERR max number of clients reached",
    );
    let started = Instant::now();
    let reply = wait_until(
        EVICT_AFTER + Duration::from_secs(10),
        "SENTINEL get-master-addr-by-name with the cap full",
        || redis_cmd(port, &["SENTINEL", "get-master-addr-by-name", "cache"]),
    );
    eprintln!(
        "get-master-addr-by-name answered {:?} later",
        started.elapsed()
    );
    assert!(
        format!("{reply:?}").contains(&master.port.to_string()),
        "{reply:?}"
    );
    // The HTTP port is not affected by the Sentinel port's flood.
    assert_eq!(timed_get(daemon.port, "/master").map(|r| r.0), Ok(200));
    drop(held);
}

#[test]
fn requests_with_lf_only_line_endings_are_answered() {
    let daemon = Daemon::start(&["-masters=cache=127.0.0.1:1"]);
    let exchange = |request: &[u8]| {
        raw_exchange(daemon.port, request, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{request:?}: {e}"))
            .0
    };
    let reply = exchange(b"GET /master HTTP/1.1\nHost: localhost\nConnection: close\n\n");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("127.0.0.1:1"), "{reply}");
    let reply = exchange(b"GET /master HTTP/1.0\n\n");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // Two requests on one keep-alive connection, sent at once.
    let reply = exchange(
        b"GET /master HTTP/1.1\nHost: localhost\n\nGET /nope HTTP/1.1\nHost: localhost\nConnection: close\n\n",
    );
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 2, "{reply}");
    assert!(reply.contains("no such endpoint: /nope"), "{reply}");
}

#[test]
fn sentinel_half_sent_commands_time_out_while_idle_and_subscribed_clients_stay() {
    let port = free_port();
    let daemon = Daemon::start(&[
        &format!("-sentinel_addr=127.0.0.1:{port}"),
        "-check_interval=100",
        "-max_down_time=1",
    ]);
    let mut half = Held::open(port, b"*2\r\n$4\r\nPING\r\n$3\r\nab").expect("connect");
    let mut idle = Held::open(port, b"").expect("connect");
    let mut subscriber = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    subscriber
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    subscriber
        .write_all(b"SUBSCRIBE +sdown\r\n")
        .expect("subscribe");
    let mut confirmation = [0u8; 64];
    let n = subscriber.read(&mut confirmation).expect("confirmation");
    assert!(
        String::from_utf8_lossy(&confirmation[..n]).contains("subscribe"),
        "{:?}",
        String::from_utf8_lossy(&confirmation[..n])
    );
    let started = Instant::now();
    wait_until(
        SENTINEL_REQUEST_TIMEOUT + Duration::from_secs(10),
        "the half-sent command to be closed",
        || {
            if half.is_closed() {
                Ok(())
            } else {
                Err(format!("{:?}", half.fate()))
            }
        },
    );
    let closed_after = started.elapsed();
    assert!(
        closed_after + Duration::from_secs(1) >= SENTINEL_REQUEST_TIMEOUT,
        "closed after {closed_after:?}"
    );
    // The idle connection is still served.
    assert_eq!(idle.fate(), Fate::Open);
    idle.stream.write_all(b"PING\r\n").expect("PING");
    wait_until(Duration::from_secs(5), "PONG", || match idle.fate() {
        Fate::Answered(text) if text == "+PONG\r\n" => Ok(()),
        fate => Err(format!("{fate:?}")),
    });
    // The subscriber still gets events: a master that is down.
    let dead = free_port();
    let (status, body) = daemon
        .http(
            "POST",
            &format!("/master?masters=gone=127.0.0.1:{dead}"),
            "",
        )
        .expect("POST");
    assert_eq!(status, 200, "{body}");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("master gone 127.0.0.1") {
        let n = subscriber.read(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no +sdown event: {e}; got {:?}",
                String::from_utf8_lossy(&got)
            )
        });
        assert!(n > 0, "the subscriber was closed");
        got.extend_from_slice(&buf[..n]);
    }
}
