//! The HTTP API as users drive it with curl: the Go original's /master plus /api/v1/groups,
//! and bad input answered with a 4xx and a reason while the daemon keeps serving.

mod support;

use std::io::{Read, Write};
use std::time::Duration;
use support::{Daemon, RedisServer, wait_until};

fn masters(daemon: &Daemon) -> String {
    let (status, body) = daemon.http("GET", "/master", "").unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn add_set_and_delete_masters_like_the_go_original() {
    let m1 = RedisServer::master();
    let m2 = RedisServer::master();
    let daemon = Daemon::start(&["-check_interval=100"]);
    assert_eq!(masters(&daemon), "");

    let (status, body) = daemon
        .http("POST", &format!("/master?masters={}", m1.addr()), "")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(masters(&daemon), m1.addr());

    // A form body works as well as the query string, and names are kept.
    let (status, body) = daemon
        .http("POST", "/master", &format!("masters=cache%3D{}", m2.addr()))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    wait_until(Duration::from_secs(10), "both groups ok", || {
        let groups = daemon.groups();
        let ok = groups
            .as_array()
            .map(|g| g.iter().filter(|g| g["state"] == "ok").count());
        if ok == Some(2) {
            Ok(())
        } else {
            Err(groups.to_string())
        }
    });
    assert_eq!(daemon.group("cache")["master"], m2.addr());

    // PUT replaces the whole set.
    let (status, _) = daemon
        .http("PUT", &format!("/master?masters={}", m2.addr()), "")
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(masters(&daemon), m2.addr());
    assert!(
        daemon.group("cache").is_null(),
        "PUT with a bare address names the group by it"
    );

    // DELETE by address.
    let (status, _) = daemon
        .http("DELETE", &format!("/master?masters={}", m2.addr()), "")
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(masters(&daemon), "");
}

#[test]
fn bad_requests_get_a_reason_and_the_daemon_keeps_serving() {
    let daemon = Daemon::start(&[]);
    for (method, path, body, status, says) in [
        ("POST", "/master", "", 400, "missing parameter: masters"),
        ("POST", "/master?masters=127.0.0.1", "", 400, "no port"),
        (
            "POST",
            "/master?masters=127.0.0.1:99999",
            "",
            400,
            "invalid port",
        ),
        ("POST", "/master?masters=a:1,,b:2", "", 400, "empty master"),
        ("POST", "/master?masters=x=a:1,x=b:2", "", 400, "twice"),
        ("POST", "/master?masters=x=a:1,x%3Db:2", "", 400, "twice"),
        (
            "POST",
            "/master?masters==a:1",
            "",
            400,
            "group name is empty",
        ),
        (
            "POST",
            "/master?masters=%20=a:1",
            "",
            400,
            "group name is empty",
        ),
        (
            "POST",
            "/master?masters=a%20b=h:1",
            "",
            400,
            "may only hold",
        ),
        ("POST", "/master?masters=h%0A:1", "", 400, "invalid host"),
        // A group or host beginning with '-' would read as an option to a script.
        (
            "POST",
            "/master?masters=-oProxyCommand=h:1",
            "",
            400,
            "may not begin with '-'",
        ),
        (
            "POST",
            "/master?masters=-h:1",
            "",
            400,
            "may not begin with '-'",
        ),
        ("PUT", "/master?masters=[::1:6379", "", 400, "invalid"),
        ("DELETE", "/master?masters=,", "", 400, "empty master"),
        ("POST", "/master", "masters=%FF%FE:1", 400, "not UTF-8"),
        ("POST", "/master?masters=%FF%FE:1", "", 400, "UTF-8"),
        (
            "DELETE",
            "/master?masters=127.0.0.1:1",
            "",
            400,
            "no monitored group",
        ),
        (
            "PATCH",
            "/master?masters=127.0.0.1:1",
            "",
            405,
            "not allowed",
        ),
        ("POST", "/api/v1/groups", "", 405, "only GET"),
        ("GET", "/nope", "", 404, "no such endpoint"),
    ] {
        let (got, reply) = daemon.http(method, path, body).unwrap();
        assert_eq!(got, status, "{method} {path}: {reply}");
        assert!(
            reply.contains(says),
            "{method} {path}: {reply:?} lacks {says:?}"
        );
    }
    let big = format!("masters={}", "a".repeat(70 * 1024));
    let (status, _) = daemon.http("POST", "/master", &big).unwrap();
    assert_eq!(status, 413);
    // A body announced over the limit is refused before it is sent, whatever the path.
    for path in ["/master?masters=127.0.0.1:1", "/api/v1/groups"] {
        let mut raw = std::net::TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        raw.write_all(
            format!("POST {path} HTTP/1.0\r\nContent-Length: 1000000000\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let mut reply = Vec::new();
        let _ = raw.read_to_end(&mut reply);
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.starts_with("HTTP/1.0 413") || reply.starts_with("HTTP/1.1 413"),
            "{path}: {reply}"
        );
        assert!(reply.contains("over 65536 bytes"), "{reply}");
    }
    // Raw bytes that are not UTF-8 in a form body.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"POST /master HTTP/1.0\r\nContent-Length: 11\r\n\r\nmasters=\xff:1")
        .unwrap();
    let mut reply = Vec::new();
    let _ = raw.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.contains(" 400 ") && reply.contains("not UTF-8"),
        "{reply}"
    );

    // Raw garbage on the socket does not take the listener down.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink);
    assert_eq!(masters(&daemon), "");
}

#[test]
fn groups_json_shows_replicas_and_state() {
    let master = RedisServer::master();
    let _replica = RedisServer::replica_of(master.port, 42);
    master.wait_for_replicas(1);
    let daemon = Daemon::start(&[
        &format!("-masters=web={}", master.addr()),
        "-check_interval=100",
    ]);
    let g = wait_until(
        Duration::from_secs(20),
        "replica details in the API",
        || {
            let g = daemon.group("web");
            if g["state"] == "ok" && g["replicas"][0]["priority"] == 42 {
                Ok(g)
            } else {
                Err(g.to_string())
            }
        },
    );
    assert_eq!(g["replicas"][0]["link"], "up", "{g}");
    assert!(g["last_failover"].is_null());
}

#[test]
fn a_client_that_stalls_mid_body_does_not_block_the_api() {
    let daemon = Daemon::start(&[]);
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    stalled
        .write_all(b"POST /master HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 60000\r\n\r\nmasters=")
        .unwrap();
    // Give the daemon time to start reading that body, then ask it something else.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(masters(&daemon), "");
    drop(stalled);
}
