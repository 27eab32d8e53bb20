//! TLS end to end, with real TLS-only `redis-server` processes (`--port 0 --tls-port N`,
//! client certificates required, replication over TLS) and certificates made by the
//! test (`support/tls.rs`, rcgen):
//!
//! - the failover worker's path (INFO, promotion, re-pointing, CONFIG, CLIENT PAUSE,
//!   fencing) over TLS, through the library's blocking connections;
//! - TLS errors that say what failed and name the server;
//! - the HTTP API over HTTPS, the Sentinel port over TLS (redis-py, redis-cli);
//! - a Raft cluster over mutual TLS (alone, and with `raft_secret`), refusing strangers;
//! - certificate reload on SIGHUP and `POST /api/v1/reload`;
//! - bad settings refused at start, naming the key.
//! - the whole daemon on TLS-only servers: the checker's TLS sessions, kill -9,
//!   failover, fencing; a check refused by TLS says why in the API.

mod support;

use redis_failover::Addr;
use redis_failover::clock::SystemClock;
use redis_failover::net::tls::{Tls, TlsFiles, TlsOptions};
use redis_failover::redis::{NodeOptions, RedisNode, Role};
use redis_failover::worker::promotion::promote;
use redis_failover::worker::{RedisServers, Servers};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use support::tls::{CertFiles, HttpsDaemon, Pki, TlsRedis, client_config, connect, https};
use support::{Daemon, RaftCluster, RedisServer, run_until_exit, wait_until};

fn options(ca: &Pki, own: Option<&CertFiles>) -> TlsOptions {
    TlsOptions {
        files: TlsFiles {
            ca_cert: Some(ca.ca.clone()),
            cert: own.map(|f| f.cert.clone()),
            key: own.map(|f| f.key.clone()),
            raft_ca_cert: None,
        },
        ..TlsOptions::default()
    }
}

fn node_options(tls: TlsOptions) -> NodeOptions {
    NodeOptions {
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(2),
        tls: Some(Arc::new(Tls::load(tls).expect("TLS material"))),
        ..NodeOptions::default()
    }
}

fn addr(server: &TlsRedis) -> Addr {
    Addr::parse(&server.addr()).unwrap()
}

/// A TLS-only master and two TLS-only replicas, linked over TLS.
fn tls_topology(pki: &Pki) -> (TlsRedis, TlsRedis, TlsRedis) {
    let server = pki.loopback("redis");
    let master = TlsRedis::start(pki, &server, None);
    let a = TlsRedis::start(pki, &server, Some(master.port));
    let b = TlsRedis::start(pki, &server, Some(master.port));
    master.wait_for_replicas(2);
    (master, a, b)
}

/// A daemon watching `master` as group g over TLS (checks every 100 ms, 1 s window),
/// trusting the CA in `ca`, with a client certificate from `pki`.
fn tls_daemon(ca: &std::path::Path, pki: &Pki, master: &TlsRedis) -> Daemon {
    let mut args = support::tls::material_flags(ca, &pki.loopback("daemon"));
    args.extend([
        "-tls".to_string(),
        format!("-masters=g={}", master.addr()),
        "-check_interval=100".into(),
        "-max_down_time=1".into(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&refs)
}

fn wait_linked_to(replica: &TlsRedis, master: &TlsRedis) {
    wait_until(Duration::from_secs(20), "a replica linked over TLS", || {
        let port = replica.info_field("master_port")?;
        let link = replica.info_field("master_link_status")?;
        if port == master.port.to_string() && link == "up" {
            Ok(())
        } else {
            Err(format!("master_port {port}, link {link}"))
        }
    });
}

#[test]
fn the_worker_path_promotes_repoints_and_fences_tls_only_servers() {
    let pki = Pki::new("worker");
    let (mut master, a, b) = tls_topology(&pki);
    let options = node_options(options(&pki, Some(&pki.loopback("daemon"))));
    master.cli(&["SET", "before", "kept"]).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the key on the replicas",
        || match (a.cli(&["GET", "before"])?, b.cli(&["GET", "before"])?) {
            (x, y) if x == "kept" && y == "kept" => Ok(()),
            seen => Err(format!("{seen:?}")),
        },
    );
    master.kill();
    let servers = RedisServers::new(options.clone());
    // INFO over TLS on both replicas.
    let reports = servers.infos(&[addr(&a), addr(&b)]);
    for report in &reports {
        let info = report.info.as_ref().expect("INFO over TLS");
        assert!(info.offset > 0, "{info:?}");
    }
    // Promotion (SLAVEOF NO ONE, then ROLE until master, CONFIG REWRITE tried).
    promote(&servers, &SystemClock, &addr(&a), Duration::from_secs(5)).expect("promote over TLS");
    assert_eq!(a.cli(&["ROLE"]).unwrap().lines().next(), Some("master"));
    // Re-pointing: b now replicates from a, over TLS (tls-replication yes).
    let failed = servers.repoint(&[addr(&b)], &addr(&a));
    assert!(failed.is_empty(), "{failed:?}");
    wait_linked_to(&b, &a);
    assert_eq!(a.cli(&["GET", "before"]).unwrap(), "kept");
    // CLIENT PAUSE (the switchover's) and CONFIG over TLS.
    let mut node = RedisNode::new(addr(&a), options.clone());
    node.call(&["CLIENT", "PAUSE", "10", "WRITE"])
        .expect("CLIENT PAUSE over TLS");
    node.call(&["CLIENT", "UNPAUSE"]).unwrap();
    let rewrite = node.config_rewrite().unwrap_err().to_string();
    assert!(rewrite.contains("config file"), "{rewrite}");
    // Fencing: the old master returns as a master and is made a replica of a.
    master.restart();
    let mut old = RedisNode::new(addr(&master), options.clone());
    assert!(matches!(old.role(), Ok(Role::Master { .. })));
    old.slave_of(Some(&addr(&a))).expect("fence over TLS");
    wait_linked_to(&master, &a);
    a.wait_for_replicas(2);
}

/// What `ROLE` over TLS to `server` fails with, for these options.
fn role_error(server: &TlsRedis, tls: TlsOptions) -> String {
    let options = node_options(tls);
    match RedisNode::new(addr(server), options).role() {
        Ok(role) => panic!("ROLE succeeded: {role:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn tls_errors_say_what_failed_and_name_the_server() {
    let pki = Pki::new("errors");
    let other = Pki::new("other");
    let server = TlsRedis::start(&pki, &pki.loopback("redis"), None);
    let at = server.addr();
    let named = |e: &str| assert!(e.contains(&at), "the server is not named: {e}");

    let no_cert = role_error(&server, options(&pki, None));
    named(&no_cert);
    assert!(
        no_cert.contains("requires a client certificate") && no_cert.contains("tls_cert_file"),
        "{no_cert}"
    );

    let unknown_ca = role_error(&server, options(&other, Some(&pki.loopback("d1"))));
    named(&unknown_ca);
    assert!(
        unknown_ca.contains("not signed by a CA in tls_ca_cert_file"),
        "{unknown_ca}"
    );

    let wrong_name = role_error(
        &server,
        TlsOptions {
            server_name: Some("wrong.example".into()),
            ..options(&pki, Some(&pki.loopback("d2")))
        },
    );
    named(&wrong_name);
    assert!(
        wrong_name.contains("not valid for the name"),
        "{wrong_name}"
    );

    let refused = role_error(&server, options(&pki, Some(&other.loopback("stranger"))));
    named(&refused);
    assert!(
        refused.contains("refused this daemon's client certificate"),
        "{refused}"
    );

    // The right material works, and skipping verification works on a test rig.
    let own = pki.loopback("daemon");
    let mut node = RedisNode::new(addr(&server), node_options(options(&pki, Some(&own))));
    assert!(matches!(node.role(), Ok(Role::Master { .. })));
    let insecure = TlsOptions {
        insecure_skip_verify: true,
        ..options(&other, Some(&own))
    };
    let mut node = RedisNode::new(addr(&server), node_options(insecure));
    assert!(matches!(node.role(), Ok(Role::Master { .. })));
}

#[test]
fn bad_tls_settings_are_refused_naming_the_key() {
    let pki = Pki::new("settings");
    let own = pki.loopback("daemon");
    let other = pki.loopback("other");
    let junk = pki.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let ca = format!("-tls_ca_cert_file={}", pki.ca.display());
    let cert = format!("-tls_cert_file={}", own.cert.display());
    let key = format!("-tls_key_file={}", own.key.display());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["-tls_http".into()], "tls_cert_file"),
        (vec![cert.clone(), "-tls_http".into()], "tls_key_file"),
        (
            vec![
                cert.clone(),
                format!("-tls_key_file={}", other.key.display()),
                "-tls_http".into(),
            ],
            "tls_key_file",
        ),
        (
            vec![format!("-tls_cert_file={}", junk.display()), key.clone()],
            "tls_cert_file",
        ),
        (
            vec!["-tls_ca_cert_file=/nonexistent/ca.pem".into()],
            "tls_ca_cert_file",
        ),
        (vec!["-tls".into()], "tls_ca_cert_file"),
        (
            vec!["-tls_insecure_skip_verify".into()],
            "tls_insecure_skip_verify",
        ),
        (
            vec![ca.clone(), cert.clone(), key.clone(), "-tls_raft".into()],
            "tls_raft",
        ),
        (
            vec![cert.clone(), key.clone(), "-tls_sentinel".into()],
            "tls_sentinel",
        ),
        (
            vec![format!("-tls_raft_ca_cert_file={}", pki.ca.display())],
            "tls_raft_ca_cert_file",
        ),
        (
            vec![ca.clone(), "-tls".into(), "-tls_server_name=a b".into()],
            "tls_server_name",
        ),
    ];
    for (args, expected) in cases {
        let (code, stderr) = run_until_exit(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("redis-failover: {expected}:")),
            "{args:?} should name {expected}: {stderr}"
        );
    }
}

#[test]
fn the_http_api_is_served_over_https_and_reload_needs_the_token() {
    let pki = Pki::new("https");
    let own = pki.loopback("daemon");
    let master = RedisServer::master();
    let mut args = support::tls::material_flags(&pki.ca, &own);
    args.extend([
        "-tls_http".to_string(),
        format!("-masters=g={}", master.addr()),
        "-api_token=s3cret".into(),
    ]);
    let daemon = HttpsDaemon::start(&pki.ca, &args);
    let (status, body, served) = daemon.get("/master").unwrap();
    assert_eq!((status, body.as_str()), (200, master.addr().as_str()));
    assert_eq!(served, own.der(), "the daemon's certificate is served");
    // curl, as an operator would.
    if Command::new("curl").arg("--version").output().is_ok() {
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&pki.ca)
            .arg(format!("https://127.0.0.1:{}/master", daemon.port))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text,
            master.addr(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Plain HTTP on the HTTPS port gets no answer, and the port goes on serving.
    assert!(support::http_request(daemon.port, "GET", "/master", "").is_err());
    let reload = |headers: &[&str]| https(daemon.port, &pki.ca, "POST", "/api/v1/reload", headers);
    assert_eq!(reload(&[]).unwrap().0, 401);
    let (status, body, _) = reload(&["Authorization: Bearer s3cret"]).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("reloaded"), "{body}");
}

#[test]
fn sighup_reloads_the_served_certificate_and_a_broken_file_keeps_the_old_one() {
    let pki = Pki::new("reload");
    let own = pki.loopback("daemon");
    let mut args = support::tls::material_flags(&pki.ca, &own);
    args.extend(["-tls_http".to_string(), "-api_token=s3cret".into()]);
    let mut daemon = HttpsDaemon::start(&pki.ca, &args);
    let first = daemon.get("/master").unwrap().2;
    assert_eq!(first, own.der());

    // A new certificate and key in the same files, then SIGHUP.
    let next = pki.loopback("next");
    std::fs::copy(&next.cert, &own.cert).unwrap();
    std::fs::copy(&next.key, &own.key).unwrap();
    daemon.signal("HUP");
    wait_until(
        Duration::from_secs(10),
        "the new certificate served",
        || {
            let served = daemon.get("/master")?.2;
            if served == next.der() {
                Ok(())
            } else {
                Err("the old one".into())
            }
        },
    );
    assert!(
        daemon.log().contains("SIGHUP: TLS reloaded"),
        "{}",
        daemon.log()
    );

    // A broken key: an error in the log, and the certificate loaded before stays.
    std::fs::write(&own.key, "-----BEGIN PRIVATE KEY-----\nbroken\n").unwrap();
    daemon.signal("HUP");
    wait_until(Duration::from_secs(10), "the failed reload logged", || {
        let log = daemon.log();
        if log.contains("SIGHUP: TLS reload failed") && log.contains("tls_key_file") {
            Ok(())
        } else {
            Err(log)
        }
    });
    assert_eq!(daemon.get("/master").unwrap().2, next.der());
    let port = daemon.port;
    let post = |h: &[&str]| https(port, &pki.ca, "POST", "/api/v1/reload", h).unwrap();
    let (status, body, _) = post(&["Authorization: Bearer s3cret"]);
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("tls_key_file") && body.contains("stay in use"),
        "{body}"
    );
    assert!(daemon.is_running(), "SIGHUP must not stop the daemon");
    // Fixed files load again through the API.
    std::fs::copy(&next.key, &own.key).unwrap();
    assert_eq!(post(&["Authorization: Bearer s3cret"]).0, 200);
}

#[test]
fn sighup_without_tls_is_logged_and_the_daemon_goes_on() {
    let mut daemon = Daemon::start(&[]);
    daemon.signal("HUP");
    wait_until(Duration::from_secs(10), "the SIGHUP logged", || {
        let log = daemon.log();
        if log.contains("SIGHUP: TLS is off") {
            Ok(())
        } else {
            Err(log)
        }
    });
    assert!(daemon.is_running());
    assert_eq!(daemon.http("GET", "/master", "").unwrap().0, 200);
    let (status, body) = daemon.http("POST", "/api/v1/reload", "").unwrap();
    assert_eq!(status, 400, "{body}");
}

/// redis-py's Sentinel client over TLS, finding the master by the group's name.
const REDIS_PY_TLS: &str = r#"
import sys
from redis.sentinel import Sentinel
port, ca = int(sys.argv[1]), sys.argv[2]
tls = {"ssl": True, "ssl_ca_certs": ca}
sentinel = Sentinel([("127.0.0.1", port)], socket_timeout=2, sentinel_kwargs=tls)
host, p = sentinel.discover_master("g")
print("%s:%d" % (host, p))
"#;

#[test]
fn the_sentinel_port_speaks_tls_to_redis_py_and_redis_cli() {
    let pki = Pki::new("sentinel");
    let own = pki.loopback("daemon");
    let master = RedisServer::master();
    let sentinel_port = support::free_port();
    let mut args: Vec<String> = support::tls::material_flags(&pki.ca, &own);
    args.extend([
        format!("-masters=g={}", master.addr()),
        format!("-sentinel_addr=127.0.0.1:{sentinel_port}"),
        "-tls_sentinel".into(),
        "-check_interval=100".into(),
        "-max_down_time=1".into(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&refs);
    wait_until(Duration::from_secs(20), "group g ok", || {
        let g = daemon.group("g");
        if g["state"] == "ok" {
            Ok(())
        } else {
            Err(g.to_string())
        }
    });
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(&pki.ca)
        .args(["-p", &sentinel_port.to_string()])
        .args(["SENTINEL", "get-master-addr-by-name", "g"])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        vec!["127.0.0.1", &master.port.to_string()[..]],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py = Command::new("python3")
        .args(["-c", REDIS_PY_TLS, &sentinel_port.to_string()])
        .arg(&pki.ca)
        .output()
        .expect("python3");
    assert!(
        py.status.success(),
        "redis-py: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), master.addr());
}

#[test]
fn a_raft_cluster_over_mutual_tls_elects_replicates_and_refuses_strangers() {
    raft_over_tls(None);
}

#[test]
fn mutual_tls_and_raft_secret_combine() {
    raft_over_tls(Some("-raft_secret=a shared secret of some length"));
}

/// Three members over mutual TLS (and `raft_secret`, when given) elect a leader and
/// replicate a change; a TLS client without a certificate, and a daemon whose
/// certificate comes from another CA, are refused and logged, and the cluster carries
/// on undisturbed.
fn raft_over_tls(secret: Option<&str>) {
    let pki = Pki::new("raft");
    let own = pki.loopback("member");
    let mut extra = support::tls::material_flags(&pki.ca, &own);
    extra.push("-tls_raft".to_string());
    extra.extend(secret.map(String::from));
    extra.extend(["-check_interval=100".into(), "-max_down_time=1".into()]);
    let refs: Vec<&str> = extra.iter().map(String::as_str).collect();
    let master = RedisServer::master();
    let mut cluster = RaftCluster::start(3, &refs, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], Duration::from_secs(20));
    let (status, body) = cluster.nodes[leader]
        .http("POST", &format!("/master?masters=g={}", master.addr()), "")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    for node in &cluster.nodes {
        wait_until(Duration::from_secs(10), "the group on every member", || {
            let (_, masters) = node.http("GET", "/master", "")?;
            if masters == master.addr() {
                Ok(())
            } else {
                Err(masters)
            }
        });
    }
    let term = cluster.status(leader).unwrap()["term"].clone();

    // A TLS client with no certificate is refused by a member, and logged.
    let port = cluster.raft_ports[leader];
    let _ = connect(port, client_config(&pki.ca, None)).and_then(|(mut s, _)| {
        use std::io::Read;
        s.read(&mut [0u8; 1]).map_err(|e| e.to_string())
    });
    // A daemon with a certificate from another CA (trusting the cluster's) claims a
    // place in the cluster.
    let other = Pki::new("stranger");
    let mut stranger_args = support::tls::material_flags(&pki.ca, &other.loopback("s"));
    stranger_args.push("-tls_raft".into());
    stranger_args.extend(secret.map(String::from));
    let stranger_port = support::free_port();
    let members = format!("{},127.0.0.1:{stranger_port}", cluster.members());
    let refs: Vec<&str> = stranger_args.iter().map(String::as_str).collect();
    let stranger = RaftCluster::start_node(stranger_port, &members, &refs, &[]);
    wait_until(Duration::from_secs(20), "the refusals logged", || {
        let logs: String = cluster.nodes.iter().map(|n| n.log()).collect();
        let no_cert = logs.contains("presented no client certificate");
        let unknown = logs.contains("refused the connection")
            && logs.contains("not signed by a CA in tls_ca_cert_file");
        if no_cert && unknown {
            Ok(())
        } else {
            Err(format!("no_cert {no_cert}, unknown CA {unknown}"))
        }
    });
    wait_until(Duration::from_secs(10), "the stranger told why", || {
        let log = stranger.log();
        if log.contains("refused this daemon's client certificate") {
            Ok(())
        } else {
            Err(log)
        }
    });
    // The cluster carried on undisturbed.
    let now = cluster.wait_for_leader(&[0, 1, 2], Duration::from_secs(10));
    assert_eq!(now, leader);
    assert_eq!(cluster.status(leader).unwrap()["term"], term);

    // A failover through the cluster: the members' views of the dead master (the
    // quorum's votes) travel over the TLS links.
    let (mut watched, a, b) = support::groups::topology(100, 100);
    let group = format!("/master?masters=f={}", watched.addr());
    let (status, body) = cluster.nodes[leader].http("POST", &group, "").unwrap();
    assert_eq!(status, 200, "{body}");
    wait_until(Duration::from_secs(20), "group f ok", || {
        let g = cluster.nodes[leader].group("f");
        if g["state"] == "ok" {
            Ok(())
        } else {
            Err(g.to_string())
        }
    });
    watched.kill();
    let g = wait_until(Duration::from_secs(30), "the failover of f", || {
        let g = cluster.nodes[leader].group("f");
        if g["last_failover"]["outcome"] == "succeeded" {
            Ok(g)
        } else {
            Err(g.to_string())
        }
    });
    assert!(g["master"] == a.addr() || g["master"] == b.addr(), "{g}");
}

/// The whole daemon over TLS-only servers: detection by the checker, kill -9, failover,
/// re-pointing over TLS, the key read back on the new master.
#[test]
fn a_killed_tls_only_master_fails_over_and_the_replicas_link_over_tls() {
    let pki = Pki::new("failover");
    let (mut master, a, b) = tls_topology(&pki);
    let daemon = tls_daemon(&pki.ca, &pki, &master);
    daemon.wait_group_ok("g", 2);
    master.cli(&["SET", "before", "kept"]).unwrap();
    wait_until(Duration::from_secs(10), "the key replicated", || {
        match (a.cli(&["GET", "before"])?, b.cli(&["GET", "before"])?) {
            (x, y) if x == "kept" && y == "kept" => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    });
    master.kill();
    let g = wait_until(Duration::from_secs(20), "the failover", || {
        let g = daemon.group("g");
        if g["last_failover"]["outcome"] == "succeeded" {
            Ok(g)
        } else {
            Err(g.to_string())
        }
    });
    let (new, other) = if g["master"] == a.addr() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(new.cli(&["GET", "before"]).unwrap(), "kept");
    wait_linked_to(other, new);
    // The old master returns and is fenced: made a replica of the new one, over TLS.
    master.restart();
    wait_linked_to(&master, new);
}

/// A check that TLS refuses fails with the reason in the API, and a check of a plain
/// server by a TLS daemon fails too: neither is taken for a live master.
#[test]
fn a_check_refused_by_tls_says_why_in_the_api() {
    let pki = Pki::new("check-errors");
    let tls_only = TlsRedis::start(&pki, &pki.loopback("redis"), None);
    let plain = RedisServer::master();
    // The CA but no client certificate: the server requires one.
    let args = [
        format!("-tls_ca_cert_file={}", pki.ca.display()),
        "-tls".to_string(),
        format!("-masters=t={},p={}", tls_only.addr(), plain.addr()),
        "-check_interval=100".into(),
        "-max_down_time=1".into(),
    ];
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&refs);
    for (group, wanted) in [("t", "client certificate"), ("p", "TLS handshake")] {
        wait_until(
            Duration::from_secs(20),
            "the check's TLS failure in the API",
            || {
                let g = daemon.group(group);
                let error = g["last_error"].as_str().unwrap_or_default();
                if g["state"] != "ok" && error.contains(wanted) {
                    Ok(())
                } else {
                    Err(g.to_string())
                }
            },
        );
    }
}

/// The servers' certificates come to be signed by a CA the daemon does not trust (here
/// its CA file is replaced and reloaded, and the master restarts, so every connection
/// is new): the daemon can verify neither the master nor any replica. That is not a
/// dead master: the master's checks fail, naming the certificate problem, and its
/// failover is attempted, but no replica the daemon cannot verify is promoted, and the
/// group is not given up (fixing the CA file and reloading is enough).
#[test]
fn a_ca_the_daemon_does_not_trust_promotes_no_replica() {
    let pki = Pki::new("untrusted");
    let other = Pki::new("another-ca");
    let (mut master, a, b) = tls_topology(&pki);
    let dir = support::TempDir::new("untrusted-ca");
    let ca = dir.path().join("ca.crt");
    std::fs::copy(&pki.ca, &ca).unwrap();
    let daemon = tls_daemon(&ca, &pki, &master);
    daemon.wait_group_ok("g", 2);
    std::fs::copy(&other.ca, &ca).unwrap();
    daemon.signal("HUP");
    master.restart();
    let g = wait_until(Duration::from_secs(20), "a failover attempt", || {
        let g = daemon.group("g");
        if g["last_failover"].is_null() {
            Err(g.to_string())
        } else {
            Ok(g)
        }
    });
    let failover = &g["last_failover"];
    // Nothing changed and the replicas may be reachable later: stopped, tried again
    // after each window, not given up.
    assert_eq!(failover["outcome"], "aborted", "{g}");
    assert_ne!(g["state"], "failed", "{g}");
    let reason = failover["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&a.addr()) && reason.contains(&b.addr()) && reason.contains("CA"),
        "the attempt should name both replicas and the certificate problem: {g}"
    );
    assert!(
        g["last_error"].as_str().unwrap_or_default().contains("CA"),
        "the master's check error should name the certificate problem: {g}"
    );
    assert_eq!(g["master"], master.addr(), "{g}");
    for replica in [&a, &b] {
        assert_eq!(replica.info_field("role").unwrap(), "slave", "{g}");
    }
    assert_eq!(master.info_field("role").unwrap(), "master");
    // The right CA back and reloaded: the same group is ok again, on its old master.
    std::fs::copy(&pki.ca, &ca).unwrap();
    daemon.signal("HUP");
    wait_until(Duration::from_secs(20), "group g ok again", || {
        let g = daemon.group("g");
        if g["state"] == "ok" && g["master"] == master.addr() {
            Ok(())
        } else {
            Err(g.to_string())
        }
    });
}
