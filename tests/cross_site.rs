//! The HTTP API against the requests a web browser sends for a page the operator never
//! chose (issue 23, finding 2): a form posted from another site, `fetch` with and
//! without `no-cors`, and a DNS-rebinding page (its own name, re-pointed at 127.0.0.1).
//! Each is refused with 403 and a reason, and changes nothing; the curl forms the Go
//! original's users type keep working.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::{Daemon, RedisServer, run_until_exit};

/// Sends `head` (request line and header lines, `\r\n`-separated, no blank line) with
/// `body`; returns the status, the header block and the body.
fn raw(port: u16, head: &str, body: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let request = format!(
        "{head}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("read the reply");
    let text = String::from_utf8_lossy(&reply).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, headers.to_string(), body.to_string())
}

fn masters(daemon: &Daemon) -> String {
    let (status, body) = daemon.http("GET", "/master", "").expect("GET /master");
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn browser_requests_for_other_sites_are_refused_and_change_nothing() {
    let redis = RedisServer::master();
    let daemon = Daemon::start(&["-check_interval=100"]);
    let port = daemon.port;
    let form = format!("masters=pwned%3D{}", redis.addr());
    let own = format!("Host: 127.0.0.1:{port}");
    for (what, head, body, says) in [
        (
            "the reviewer's probe: a form post after DNS rebinding",
            format!(
                "POST /master HTTP/1.1\r\nHost: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\nContent-Type: application/x-www-form-urlencoded"
            ),
            form.clone(),
            "not a name this API answers to",
        ),
        (
            "a form on another site posting to 127.0.0.1",
            format!(
                "POST /master HTTP/1.1\r\n{own}\r\nOrigin: http://evil.example\r\nContent-Type: application/x-www-form-urlencoded\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: navigate"
            ),
            form.clone(),
            "cross-site request refused",
        ),
        (
            "fetch(url, {method: 'POST', mode: 'no-cors', body: 'masters=...'})",
            format!(
                "POST /master HTTP/1.1\r\n{own}\r\nOrigin: http://evil.example\r\nContent-Type: text/plain;charset=UTF-8\r\nSec-Fetch-Mode: no-cors"
            ),
            form.clone(),
            "cross-site request refused",
        ),
        (
            "fetch with no-cors, the query string and no body",
            format!(
                "POST /master?{form} HTTP/1.1\r\n{own}\r\nOrigin: http://evil.example\r\nSec-Fetch-Mode: no-cors"
            ),
            String::new(),
            "cross-site request refused",
        ),
        (
            "fetch in cors mode with JSON: the POST itself",
            format!(
                "POST /master?{form} HTTP/1.1\r\n{own}\r\nOrigin: http://evil.example\r\nContent-Type: application/json\r\nSec-Fetch-Mode: cors"
            ),
            "{}".to_string(),
            "cross-site request refused",
        ),
        (
            "a sandboxed frame (Origin: null) posting a text/plain form",
            format!("POST /master HTTP/1.1\r\n{own}\r\nOrigin: null\r\nContent-Type: text/plain"),
            form.clone(),
            "cross-site request refused",
        ),
        (
            "a browser form with no Origin (an old browser) but a Referer",
            format!(
                "POST /master HTTP/1.1\r\n{own}\r\nReferer: http://evil.example/page\r\nContent-Type: application/x-www-form-urlencoded"
            ),
            form.clone(),
            "form post from a browser",
        ),
        (
            "a text/plain form body without any browser header",
            format!("POST /master HTTP/1.1\r\n{own}\r\nContent-Type: text/plain"),
            form.clone(),
            "needs Authorization",
        ),
        (
            "a forced switchover from another site",
            format!(
                "POST /api/v1/groups/pwned/switchover HTTP/1.1\r\n{own}\r\nOrigin: https://evil.example\r\nContent-Type: application/x-www-form-urlencoded"
            ),
            "force=true".to_string(),
            "cross-site request refused",
        ),
        (
            "a Raft voter added from another site",
            format!(
                "POST /api/v1/cluster/peers?addr=10.6.6.6:12000 HTTP/1.1\r\n{own}\r\nOrigin: http://evil.example"
            ),
            String::new(),
            "cross-site request refused",
        ),
    ] {
        let (status, _, reply) = raw(port, &head, &body);
        assert_eq!(status, 403, "{what}: {reply}");
        assert!(reply.contains(says), "{what}: {reply:?} lacks {says:?}");
    }
    assert_eq!(masters(&daemon), "", "a refused request added a group");

    // The preflight of a cors-mode fetch is refused and grants nothing.
    let (status, headers, _) = raw(
        port,
        &format!(
            "OPTIONS /master HTTP/1.1\r\n{own}\r\nOrigin: http://evil.example\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type"
        ),
        "",
    );
    assert_eq!(status, 403, "{headers}");
    assert!(
        !headers
            .to_ascii_lowercase()
            .contains("access-control-allow"),
        "{headers}"
    );

    // After DNS rebinding the page is same-origin to the browser: reading is refused too.
    for path in ["/master", "/api/v1/groups", "/api/v1/cluster", "/metrics"] {
        let (status, _, reply) = raw(
            port,
            &format!("GET {path} HTTP/1.1\r\nHost: rebind.evil.example:{port}"),
            "",
        );
        assert_eq!(status, 403, "GET {path} after rebinding: {reply}");
    }
}

#[test]
fn the_curl_forms_of_the_go_original_keep_working() {
    let m1 = RedisServer::master();
    let m2 = RedisServer::master();
    let m3 = RedisServer::master();
    let daemon = Daemon::start(&["-check_interval=100"]);
    let port = daemon.port;
    // curl -X POST 'http://127.0.0.1:11000/master?masters=...'
    let (status, _, reply) = raw(
        port,
        &format!(
            "POST /master?masters={} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*",
            m1.addr()
        ),
        "",
    );
    assert_eq!(status, 200, "{reply}");
    // curl -d 'masters=...' http://localhost:11000/master
    let (status, _, reply) = raw(
        port,
        &format!(
            "POST /master HTTP/1.1\r\nHost: localhost:{port}\r\nUser-Agent: curl/8.5.0\r\nContent-Type: application/x-www-form-urlencoded"
        ),
        &format!("masters=b%3D{}", m2.addr()),
    );
    assert_eq!(status, 200, "{reply}");
    // curl -X POST 'http://[::1]:11000/...' names the API by address too, as does
    // HTTP/1.0 with no Host at all.
    let (status, _, reply) = raw(
        port,
        &format!("POST /master?masters=c={} HTTP/1.0", m3.addr()),
        "",
    );
    assert_eq!(status, 200, "{reply}");
    let (status, _, reply) = raw(
        port,
        &format!("GET /master HTTP/1.1\r\nHost: [::1]:{port}"),
        "",
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply.split(',').count(), 3, "{reply}");
}

#[test]
fn allowed_host_names_and_the_token_let_browsers_in() {
    let redis = RedisServer::master();
    let daemon = Daemon::start(&[
        "-check_interval=100",
        "-http_allowed_hosts=failover.internal,ops.example:8080",
        "-api_token=tok-51f0",
    ]);
    let port = daemon.port;
    let (status, _, reply) = raw(
        port,
        &format!("GET /master HTTP/1.1\r\nHost: Failover.Internal:{port}"),
        "",
    );
    assert_eq!(status, 200, "a name in http_allowed_hosts: {reply}");
    let (status, _, reply) = raw(
        port,
        &format!("GET /master HTTP/1.1\r\nHost: other.internal:{port}"),
        "",
    );
    assert_eq!(status, 403, "a name not in http_allowed_hosts: {reply}");
    // A form post from a browser with the token: no page can add that header to a
    // request for another site.
    let (status, _, reply) = raw(
        port,
        "POST /master HTTP/1.1\r\nHost: ops.example:8080\r\nOrigin: http://ops.example:8080\r\nAuthorization: Bearer tok-51f0\r\nContent-Type: text/plain",
        &format!("masters=g%3D{}", redis.addr()),
    );
    assert_eq!(status, 200, "{reply}");
    // The same without the token.
    let (status, _, reply) = raw(
        port,
        "POST /master HTTP/1.1\r\nHost: ops.example:8080\r\nOrigin: http://ops.example:8080\r\nContent-Type: text/plain",
        "masters=h%3D10.0.0.1:6379",
    );
    assert_eq!(status, 403, "{reply}");
    assert_eq!(masters(&daemon), redis.addr());
}

#[test]
fn bad_allowed_hosts_and_dash_names_stop_the_daemon_with_a_reason() {
    for (arg, says) in [
        ("-http_allowed_hosts=a b", "http_allowed_hosts"),
        ("-masters=-x=127.0.0.1:6379", "may not begin with '-'"),
        ("-masters=-h:6379", "may not begin with '-'"),
    ] {
        let (code, stderr) = run_until_exit(&[arg.to_string()]);
        assert_ne!(code, Some(0), "{arg}");
        assert!(stderr.contains(says), "{arg}: {stderr}");
    }
}
