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
    let many = trickle(ports[0], 24, Duration::from_millis(200), true, stop.clone());
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
