//! The Raft port with `tls_raft`, against connections that are not the peers they
//! claim to be, with real `redis-failover` processes and real TLS (certificates made by
//! `support/tls.rs`):
//!
//! - a TLS handshake trickled one byte at a time is closed at the whole-handshake
//!   deadline (5 s), and such connections, reopened as fast as they are closed, do not
//!   keep a real peer out;
//! - a peer's certificate must name the host of the `raft_addr` it claims, and with
//!   `tls_raft_ca_cert_file` come from that CA (not the CA of the Redis servers); a
//!   member's certificate does not let it pose as another member;
//! - a cluster whose certificates are right still forms and replicates.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::groups::*;
use support::raft_wire::{self, frame, peer_id};
use support::tls::{CertFiles, Pki, material_flags};
use support::{RaftCluster, free_port, wait_until};

/// `HANDSHAKE_TIMEOUT` in `src/broker/raft/inbound.rs`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// What a loaded machine may add to it before a closed connection is seen here.
const MARGIN: Duration = Duration::from_secs(3);
const ELECTION: Duration = Duration::from_secs(30);

/// The flags of a member over mutual TLS with `own` as its certificate.
fn tls_raft(ca: &std::path::Path, own: &CertFiles, extra: &[String]) -> Vec<String> {
    let mut args = material_flags(ca, own);
    args.push("-tls_raft".into());
    args.extend(["-check_interval=100".into(), "-max_down_time=1".into()]);
    args.extend(extra.iter().cloned());
    args
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Whether the other end has closed the connection (or sent anything, which a TLS
/// server only does here to say why it closes), without blocking.
fn closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// A connection that starts a TLS record (a handshake record of 512 bytes) and then
/// sends one byte of it at a time.
struct Trickle {
    stream: TcpStream,
    opened: Instant,
}

impl Trickle {
    fn open(port: u16) -> Option<Trickle> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).ok()?;
        stream.set_nonblocking(true).ok()?;
        Some(Trickle {
            stream,
            opened: Instant::now(),
        })
    }

    /// One more byte; false once the daemon has closed the connection.
    fn drip(&mut self) -> bool {
        !closed(&self.stream) && (&self.stream).write(&[0x01]).is_ok()
    }
}

/// `count` trickling connections to `port`, one byte each every `every`; a connection
/// the daemon closes is replaced at once when `reopen`. Returns how long each closed one
/// had been open, once `stop` is set.
fn trickle(
    port: u16,
    count: usize,
    every: Duration,
    reopen: bool,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Vec<Duration>> {
    std::thread::spawn(move || {
        let mut open: Vec<Trickle> = (0..count).filter_map(|_| Trickle::open(port)).collect();
        let mut lifetimes = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let mut kept = Vec::new();
            for mut t in open.drain(..) {
                if t.drip() {
                    kept.push(t);
                } else {
                    lifetimes.push(t.opened.elapsed());
                }
            }
            while reopen && kept.len() < count {
                match Trickle::open(port) {
                    Some(t) => kept.push(t),
                    None => break,
                }
            }
            open = kept;
            std::thread::sleep(every);
        }
        lifetimes
    })
}

#[test]
fn a_trickled_tls_handshake_is_closed_at_its_deadline_and_keeps_no_peer_out() {
    let pki = Pki::new("raft");
    let args = tls_raft(&pki.ca, &pki.loopback("member"), &[]);
    // Node 0 starts alone: with two members it cannot elect until node 1 links to it.
    let ports = [free_port(), free_port()];
    let members = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let first = RaftCluster::start_node(ports[0], &members, &refs(&args), &[]);
    wait_until(LONG, "node 0 to serve its API", || {
        support::cluster_status(&first).map(|_| ())
    });

    // A few connections, within the limits, trickle a byte every 500 ms (the old
    // per-read timeout never fired): each is closed at the deadline of the whole
    // handshake.
    let stop = Arc::new(AtomicBool::new(false));
    let few = trickle(ports[0], 4, Duration::from_millis(500), false, stop.clone());
    std::thread::sleep(HANDSHAKE_TIMEOUT + MARGIN);
    stop.store(true, Ordering::Relaxed);
    let lifetimes = few.join().expect("the trickling thread");
    eprintln!("trickled TLS handshakes closed by the daemon after {lifetimes:?}");
    assert_eq!(
        lifetimes.len(),
        4,
        "trickled handshakes still open after {:?}: closed ones lived {lifetimes:?}",
        HANDSHAKE_TIMEOUT + MARGIN
    );

    // More trickling connections than the port lets wait in their handshake, each one
    // reopened as soon as it is closed: a real peer still gets in, the two members
    // elect a leader and commit a write.
    let stop = Arc::new(AtomicBool::new(false));
    let many = trickle(ports[0], 24, Duration::from_millis(500), true, stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    let second = RaftCluster::start_node(ports[1], &members, &refs(&args), &[]);
    let mut cluster = RaftCluster {
        nodes: vec![first, second],
        raft_ports: ports.to_vec(),
    };
    let leader = cluster.wait_for_leader(&[0, 1], ELECTION);
    let master = support::RedisServer::master();
    add_everywhere(
        &cluster.nodes,
        1 - leader,
        &format!("g={}", master.addr()),
        "a write while the port is flooded",
    );
    stop.store(true, Ordering::Relaxed);
    let lifetimes = many.join().expect("the trickling thread");
    let longest = lifetimes.iter().max().copied().unwrap_or_default();
    eprintln!(
        "{} trickling connections closed by the daemon, the longest after {longest:?}",
        lifetimes.len()
    );
    assert!(
        longest <= HANDSHAKE_TIMEOUT + MARGIN,
        "a trickled handshake lived {longest:?}"
    );
    let log = cluster.nodes[0].log();
    assert!(
        log.contains("TLS handshake timed out") && log.contains("to make room for one from"),
        "node 0 did not log the deadline and the evictions"
    );
}

/// Over a TLS session to `port` with `client` as the certificate presented, a plain
/// hello claiming to be the member at `member_addr` (with `hello` as its JSON), then
/// `messages` (raft messages, encoded). Errors are the TLS refusals.
fn pose_as(
    port: u16,
    ca: &std::path::Path,
    client: &CertFiles,
    hello: &[u8],
    messages: &[Vec<u8>],
) -> Result<(), String> {
    let config = support::tls::client_config(ca, Some(client));
    let (mut stream, _) = support::tls::connect(port, config)?;
    let mut records = frame(raft_wire::KIND_HELLO, hello);
    for message in messages {
        records.extend(frame(raft_wire::KIND_MESSAGE, message));
    }
    stream.write_all(&records).map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())?;
    // A refusal comes as an alert or a close; give it the time to come.
    let mut byte = [0u8; 1];
    let _ = std::io::Read::read(&mut stream, &mut byte);
    Ok(())
}

/// Waits until the log of `node` holds `needle`.
fn wait_for_log(node: &support::Daemon, what: &str, needle: &str) {
    wait_until(LONG, what, || {
        let log = node.log();
        if log.contains(needle) {
            Ok(())
        } else {
            let tail: Vec<&str> = log.lines().rev().take(6).collect();
            Err(format!("no {needle:?}; last lines: {tail:?}"))
        }
    });
}

/// The HTTP address node `of` has, as node `seen_by` lists it among its peers.
fn listed_http_addr(cluster: &RaftCluster, seen_by: usize, of: usize) -> String {
    let status = cluster.status(seen_by).unwrap_or_default();
    let raft_addr = cluster.raft_addr(of);
    status["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["raft_addr"] == raft_addr.as_str())
        .map(|p| p["http_addr"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[test]
fn a_certificate_must_name_the_member_it_claims_and_a_hello_moves_no_address() {
    let pki = Pki::new("shared");
    let args = tls_raft(&pki.ca, &pki.loopback("member"), &[]);
    let master = support::RedisServer::master();
    let mut cluster = RaftCluster::start(3, &refs(&args), &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    let member = (leader + 1) % 3;
    let (member_addr, member_id) = (
        cluster.raft_addr(member),
        peer_id(&cluster.raft_addr(member)),
    );
    let leader_id = peer_id(&cluster.raft_addr(leader));
    let real_http = cluster.status(member).expect("status")["http_addr"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    wait_until(LONG, "the member's announced address", || {
        let listed = listed_http_addr(&cluster, leader, member);
        if listed == real_http {
            Ok(())
        } else {
            Err(listed)
        }
    });

    // A certificate from the cluster's CA, but for another host (a Redis server's,
    // say), poses as a member and proposes a group: refused, logged.
    let elsewhere = pki.issue("redis-server", &["redis.example"]);
    let evil = raft_wire::propose_add(member_id, leader_id, "evil", &master.addr());
    let _ = pose_as(
        cluster.raft_ports[leader],
        &pki.ca,
        &elsewhere,
        &raft_wire::hello(&member_addr),
        &[evil],
    );
    wait_for_log(
        &cluster.nodes[leader],
        "the refusal of a certificate for another host",
        "does not name 127.0.0.1, the host of the raft address",
    );

    // A certificate that does name the host: its hello cannot move the address the
    // member announced through the log (which SENTINEL sentinels hands to clients).
    let forged = format!(
        r#"{{"id":{member_id},"raft_addr":"{member_addr}","http_addr":"10.6.6.6:11000","sentinel_addr":"10.6.6.6:26379"}}"#
    );
    let wrong_to = raft_wire::heartbeat(member_id, 12345, 1);
    pose_as(
        cluster.raft_ports[leader],
        &pki.ca,
        &pki.loopback("another-member"),
        forged.as_bytes(),
        &[wrong_to],
    )
    .expect("a TLS session with a member's certificate");
    wait_for_log(
        &cluster.nodes[leader],
        "the forged hello read",
        "on the connection of peer",
    );
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let listed = listed_http_addr(&cluster, leader, member);
        assert_eq!(
            listed, real_http,
            "a hello moved a member's announced address"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Nothing forged got in; the cluster carries on.
    add_everywhere(
        &cluster.nodes,
        member,
        &format!("after={}", master.addr()),
        "a write after the forgeries",
    );
}

#[test]
fn with_tls_raft_ca_cert_file_only_that_ca_signs_peers() {
    // The Redis servers' CA in tls_ca_cert_file, the members' own in
    // tls_raft_ca_cert_file: a certificate of the Redis CA, even one naming the host,
    // is refused on the Raft port; the members form a cluster.
    let redis_ca = Pki::new("redis");
    let raft_ca = Pki::new("raft-peers");
    let extra = [format!("-tls_raft_ca_cert_file={}", raft_ca.ca.display())];
    let args = tls_raft(&redis_ca.ca, &raft_ca.loopback("member"), &extra);
    let master = support::RedisServer::master();
    let mut cluster = RaftCluster::start(3, &refs(&args), &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    add_everywhere(
        &cluster.nodes,
        (leader + 1) % 3,
        &format!("g={}", master.addr()),
        "a write through the cluster",
    );
    let member = (leader + 2) % 3;
    let member_id = peer_id(&cluster.raft_addr(member));
    let leader_id = peer_id(&cluster.raft_addr(leader));
    let evil = raft_wire::propose_add(member_id, leader_id, "evil", &master.addr());
    let _ = pose_as(
        cluster.raft_ports[leader],
        &raft_ca.ca,
        &redis_ca.loopback("redis-server"),
        &raft_wire::hello(&cluster.raft_addr(member)),
        &[evil],
    );
    wait_for_log(
        &cluster.nodes[leader],
        "the refusal of a certificate from the Redis CA",
        "not signed by a CA in tls_ca_cert_file (or tls_raft_ca_cert_file",
    );
    write_ok(&cluster.nodes[leader], "DELETE", "/master?masters=g");
    wait_for_groups(&cluster.nodes, &[0, 1, 2], "", "a write after the refusal");
}
