//! The Raft port against strangers, and the Raft data directory against damage, with
//! real `redis-failover` processes (`-broker=raft`):
//!
//! - with `raft_secret`, a stranger gets nothing keyed by the secret (the dialer
//!   proves first), and forged hellos, forged messages, a wrong secret and records
//!   injected into an authenticated connection are refused and logged, and change
//!   nothing; without one, messages from a non-member are dropped;
//! - a daemon with the wrong secret cannot take part; the others elect and replicate;
//! - the connection cap holds, and the cluster still elects and commits; the listener
//!   outlives running out of file descriptors;
//! - a snapshot without its WAL, and a damaged last WAL record, stop the start naming
//!   the file.
//!
//! The forging is done with `support/raft_wire.rs`, written from the wire format in
//! `src/broker/raft/transport.rs`.

mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::groups::*;
use support::raft_wire::{self, Dialer, frame, send_raw};
use support::{Daemon, RaftCluster, RedisServer, free_port, run_until_exit, wait_until};

const FAST: [&str; 2] = ["-check_interval=100", "-max_down_time=1"];
const ELECTION: Duration = Duration::from_secs(15);
const SECRET: &str = "a-test-cluster-secret-0f3c9a7e51b2";
/// `MAX_HANDSHAKING` in `src/broker/raft/inbound.rs`.
const MAX_HANDSHAKING: usize = 16;

fn with_secret(secret: &str) -> Vec<String> {
    let mut args: Vec<String> = FAST.iter().map(|a| a.to_string()).collect();
    args.push(format!("-raft_secret={secret}"));
    args
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The peer id of node `i`.
fn id(cluster: &RaftCluster, i: usize) -> u64 {
    raft_wire::peer_id(&cluster.raft_addr(i))
}

/// After forgeries: a write of `add` through node `via`'s API still commits, every node
/// then holds exactly the groups `expected`, and none changed its (leader, term) from
/// `before`.
fn unmoved(cluster: &RaftCluster, via: usize, add: &str, expected: &str, before: &(String, u64)) {
    write_ok(
        &cluster.nodes[via],
        "POST",
        &format!("/master?masters={add}"),
    );
    wait_for_groups(
        &cluster.nodes,
        &[0, 1, 2],
        expected,
        "a write after the forgeries",
    );
    for i in 0..3 {
        assert_eq!(
            &leader_and_term(cluster, i),
            before,
            "node {i} changed leader or term"
        );
    }
}

/// (leader's raft address, term) as node `i` sees them.
fn leader_and_term(cluster: &RaftCluster, i: usize) -> (String, u64) {
    let status = cluster.status(i).expect("cluster status");
    (
        str_of(&status["leader"]["raft_addr"]),
        status["term"].as_u64().unwrap_or(0),
    )
}

/// Waits until the log of the current run of `node` holds every one of `needles`.
fn wait_for_log(node: &Daemon, what: &str, needles: &[&str]) {
    wait_until(LONG, what, || {
        let log = node.log_of_this_run();
        let missing: Vec<&&str> = needles.iter().filter(|n| !log.contains(**n)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            Err(format!("missing {missing:?}; last lines: {tail:?}"))
        }
    });
}

/// The attacks of a stranger who does not know the secret, on the raft port of node
/// `i`: posing as the member `member` with a plain hello, as a non-member, with a wrong
/// secret, and with sealed records but no handshake. Each proposes group `evil` and
/// sends a heartbeat 1000 terms ahead.
fn attack_without_the_secret(cluster: &RaftCluster, i: usize, member: usize, term: u64) {
    let (port, to) = (cluster.raft_ports[i], id(cluster, i));
    let member_addr = cluster.raft_addr(member);
    let member_id = id(cluster, member);
    let stranger = "127.0.0.1:1";
    let stranger_id = raft_wire::peer_id(stranger);
    let evil = raft_wire::propose_add(member_id, to, "evil", "127.0.0.1:9");
    let future = raft_wire::heartbeat(member_id, to, term + 1000);
    let mut plain = frame(raft_wire::KIND_HELLO, &raft_wire::hello(&member_addr));
    plain.extend(frame(raft_wire::KIND_MESSAGE, &evil));
    plain.extend(frame(raft_wire::KIND_MESSAGE, &future));
    send_raw(port, &plain, Duration::ZERO);
    let mut stranger_hello = frame(raft_wire::KIND_HELLO, &raft_wire::hello(stranger));
    let stranger_beat = raft_wire::heartbeat(stranger_id, to, term + 1000);
    stranger_hello.extend(frame(raft_wire::KIND_MESSAGE, &stranger_beat));
    send_raw(port, &stranger_hello, Duration::ZERO);
    let mut wrong = Dialer::handshake(port, to, &member_addr, "not-the-secret")
        .expect("a challenge to an opening");
    assert!(
        !wrong.acceptor_proved,
        "node {i} proved a secret it has not"
    );
    let sealed = wrong.sealed(&evil);
    let _ = wrong.send(&sealed);
    send_raw(
        port,
        &frame(raft_wire::KIND_SEALED, &[&evil[..], &[0u8; 32]].concat()),
        Duration::ZERO,
    );
}

/// A peer that knows the secret, posing as `member`, proposes group `control` to the
/// leader, and the cluster takes it: the control that shows the proposals refused
/// elsewhere would have changed the groups. Then records injected into such an
/// authenticated connection (a replay, a bad MAC) are refused.
fn injected_records_are_refused(cluster: &RaftCluster, leader: usize, member: usize, master: &str) {
    let (leader_port, leader_id) = (cluster.raft_ports[leader], id(cluster, leader));
    // The control: a peer that knows the secret, posing as a member, proposes a group,
    // and the cluster takes it. So the proposals refused below would change the groups.
    let mut peer = Dialer::handshake(leader_port, leader_id, &cluster.raft_addr(member), SECRET)
        .expect("the handshake with the right secret");
    assert!(peer.acceptor_proved, "the leader did not prove the secret");
    let member_id = id(cluster, member);
    let control = raft_wire::propose_add(member_id, leader_id, "control", master);
    let record = peer.sealed(&control);
    assert!(peer.send(&record));
    let expected = format!("control={master}");
    wait_for_groups(
        &cluster.nodes,
        &[0, 1, 2],
        &expected,
        "the control proposal",
    );

    // Injected into that authenticated connection: a replay of the record, then a
    // record whose MAC was not made with the connection's key.
    assert!(peer.send(&record), "a replay");
    wait_for_log(
        &cluster.nodes[leader],
        "the leader to refuse a replayed record",
        &["record 1 fails its MAC"],
    );
    let mut peer = Dialer::handshake(leader_port, leader_id, &cluster.raft_addr(member), SECRET)
        .expect("a second handshake");
    // A well-framed record (its checksum is right) whose MAC is off by one bit.
    let mut sealed = peer.sealed(&control)[9..].to_vec();
    let last = sealed.len() - 1;
    sealed[last] ^= 1;
    let _ = peer.send(&frame(raft_wire::KIND_SEALED, &sealed));
    wait_for_log(
        &cluster.nodes[leader],
        "the leader to refuse a record with a bad MAC",
        &["record 0 fails its MAC"],
    );
}

#[test]
fn with_a_secret_forged_hellos_and_messages_are_refused_and_change_nothing() {
    let m1 = RedisServer::master();
    let args = with_secret(SECRET);
    let mut cluster = RaftCluster::start(3, &refs(&args), &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    let member = others_of(3, leader)[0];
    injected_records_are_refused(&cluster, leader, member, &m1.addr());
    let (leader_addr, term) = leader_and_term(&cluster, leader);
    for i in 0..3 {
        attack_without_the_secret(&cluster, i, if i == member { leader } else { member }, term);
    }
    for i in 0..3 {
        wait_for_log(
            &cluster.nodes[i],
            &format!("node {i} to log the refusals"),
            &[
                "it sent a plain hello without proving it knows raft_secret",
                "wrong proof of raft_secret",
                "expected a hello, got a record of kind 6",
            ],
        );
    }
    // A write through the API still commits; nothing forged got in, and the leader and
    // term are what they were.
    let follower = others_of(3, leader)[1];
    let expected = format!("after={},control={}", m1.addr(), m1.addr());
    unmoved(
        &cluster,
        follower,
        &format!("after={}", m1.addr()),
        &expected,
        &(leader_addr, term),
    );

    // Links re-made with the handshake after a kill -9 of the leader.
    let killed_at = Instant::now();
    cluster.nodes[leader].kill9();
    let survivors = others_of(3, leader);
    let now = cluster.wait_for_leader(&survivors, ELECTION);
    eprintln!(
        "with raft_secret: new acting leader {} after {:?}",
        cluster.raft_addr(now),
        killed_at.elapsed()
    );
    write_ok(&cluster.nodes[now], "DELETE", "/master?masters=after");
    wait_for_groups(
        &cluster.nodes,
        &survivors,
        &format!("control={}", m1.addr()),
        "a write after the new election",
    );
}

/// Everything the acceptor on `port` sends to a stranger who opens a handshake with
/// version byte `version` as the member at `member_addr` and then sends a wrong
/// proof, until it closes the connection; with the dialer nonce and hello used.
fn what_a_stranger_gets(port: u16, to: u64, member_addr: &str, version: u8) -> (Vec<u8>, Vec<u8>) {
    use std::io::{Read, Write};
    let nonce = [0x33u8; 32];
    let hello = raft_wire::hello(member_addr);
    let mut opening = raft_wire::opening(&nonce, to, &hello);
    opening[0] = version;
    let mut stream = raft_wire::connect(port);
    stream
        .write_all(&frame(raft_wire::KIND_AUTH_OPEN, &opening))
        .expect("send the opening");
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let mut proved = false;
    let started = Instant::now();
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
        // After the challenge (a record header of 8 bytes, then its kind), a wrong proof.
        if !proved && received.len() > 9 {
            proved = true;
            let _ = stream.write_all(&frame(raft_wire::KIND_AUTH_PROOF, &[0u8; 32]));
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the acceptor kept the connection of a wrong proof open"
        );
    }
    (received, [&nonce[..], &hello].concat())
}

#[test]
fn a_stranger_gets_nothing_to_guess_the_secret_against() {
    // Whatever version of the handshake a stranger speaks, and whatever it sends, the
    // acceptor sends no proof (nothing keyed by the secret) before the stranger has
    // proven that it knows the secret: there is nothing to test guesses against offline.
    let args = with_secret(SECRET);
    let mut cluster = RaftCluster::start(1, &refs(&args), &[]);
    cluster.wait_for_leader(&[0], ELECTION);
    let (port, to) = (cluster.raft_ports[0], id(&cluster, 0));
    let member_addr = cluster.raft_addr(0);
    for version in [1u8, 2] {
        let (received, sent) = what_a_stranger_gets(port, to, &member_addr, version);
        let (nonce, hello) = sent.split_at(32);
        // The record after the 8-byte header and the kind: the acceptor's challenge.
        let Some(challenge) = received.get(9..) else {
            continue; // refused outright: nothing sent at all
        };
        for start in 0..challenge.len().saturating_sub(31) {
            let acceptor_nonce = &challenge[start..start + 32];
            let transcript = raft_wire::transcript(nonce, acceptor_nonce, to, hello);
            let proof = raft_wire::acceptor_proof(SECRET.as_bytes(), &transcript);
            assert!(
                !received.windows(32).any(|w| w == &proof[..]),
                "handshake version {version}: the acceptor sent its proof of the secret to a stranger ({} bytes received)",
                received.len()
            );
        }
    }
    // A real peer still proves itself, and the acceptor then proves itself too.
    let peer = raft_wire::Dialer::handshake(port, to, "127.0.0.1:1", SECRET)
        .expect("a challenge to an opening");
    assert!(peer.acceptor_proved, "no proof after a right one");
    wait_for_log(
        &cluster.nodes[0],
        "the refusals logged",
        &["handshake version 1", "wrong proof of raft_secret"],
    );
}

#[test]
fn without_a_secret_forged_messages_from_a_non_member_change_nothing() {
    let m1 = RedisServer::master();
    let mut cluster = RaftCluster::start(3, &FAST, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    add_everywhere(
        &cluster.nodes,
        leader,
        &format!("g={}", m1.addr()),
        "the first write",
    );
    let (leader_addr, term) = leader_and_term(&cluster, leader);
    let stranger = "127.0.0.1:1";
    let stranger_id = raft_wire::peer_id(stranger);
    for i in 0..3 {
        let to = id(&cluster, i);
        let mut bytes = frame(raft_wire::KIND_HELLO, &raft_wire::hello(stranger));
        let evil = raft_wire::propose_add(stranger_id, to, "evil", "127.0.0.1:9");
        bytes.extend(frame(raft_wire::KIND_MESSAGE, &evil));
        let future = raft_wire::heartbeat(stranger_id, to, term + 1000);
        bytes.extend(frame(raft_wire::KIND_MESSAGE, &future));
        send_raw(cluster.raft_ports[i], &bytes, Duration::ZERO);
    }
    let not_a_member = "the sender is not a member of this node's configuration";
    for i in 0..3 {
        let mut needles = vec!["dropped a MsgHeartbeat (term", not_a_member];
        if i == leader {
            needles.push("dropped a MsgPropose");
        }
        wait_for_log(
            &cluster.nodes[i],
            &format!("node {i} to drop the stranger's messages"),
            &needles,
        );
        assert!(
            !cluster.nodes[i].log().contains("no raft_secret is set"),
            "a loopback raft port drew the warning meant for others"
        );
    }
    let follower = others_of(3, leader)[0];
    let expected = format!("g={},h={}", m1.addr(), m1.addr());
    unmoved(
        &cluster,
        follower,
        &format!("h={}", m1.addr()),
        &expected,
        &(leader_addr, term),
    );
}

#[test]
fn a_raft_port_beyond_loopback_without_a_secret_draws_a_warning() {
    let port = free_port();
    let addr = format!("0.0.0.0:{port}");
    let data = support::TempDir::new("open");
    let open = Daemon::start(&[
        "-broker=raft",
        &format!("-raft_addr={addr}"),
        &format!("-raft_cluster={addr}"),
        &format!("-raft_data_dir={}", data.path().display()),
    ]);
    wait_for_log(
        &open,
        "the warning about the open raft port",
        &["accepts connections beyond loopback and no raft_secret is set"],
    );
}

#[test]
fn a_daemon_with_the_wrong_secret_cannot_take_part() {
    let m1 = RedisServer::master();
    let raft_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let members = raft_ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let (right, wrong) = (with_secret(SECRET), with_secret("another-secret-7d1e0b"));
    let nodes = raft_ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            let args = if i == 2 { &wrong } else { &right };
            RaftCluster::start_node(port, &members, &refs(args), &[])
        })
        .collect();
    let mut cluster = RaftCluster { nodes, raft_ports };
    let leader = cluster.wait_for_leader(&[0, 1], ELECTION);
    let follower = 1 - leader;
    write_ok(
        &cluster.nodes[follower],
        "POST",
        &format!("/master?masters=g={}", m1.addr()),
    );
    wait_for_groups(
        &cluster.nodes,
        &[0, 1],
        &format!("g={}", m1.addr()),
        "a write with one node of three shut out",
    );
    // The leader's links to node 2 fail the handshake, logged at both ends: node 2
    // refuses the leader's proof (the dialer proves first), the leader is refused.
    wait_for_log(
        &cluster.nodes[2],
        "node 2 to refuse the leader's proof",
        &["wrong proof of raft_secret"],
    );
    wait_for_log(
        &cluster.nodes[leader],
        "the leader to log that node 2 refused its proof",
        &["refused this node's proof of raft_secret"],
    );
    assert_eq!(
        group_list(&cluster.nodes[2]).unwrap(),
        "",
        "node 2 learned the groups"
    );
    let status = cluster.status(2).unwrap();
    assert!(
        status["leader"].is_null(),
        "node 2 follows someone: {status}"
    );
}

/// Whether the server side of a connection has closed it (without blocking).
fn closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[test]
fn the_raft_port_caps_its_connections_and_the_cluster_still_elects_and_commits() {
    let m1 = RedisServer::master();
    let args = with_secret(SECRET);
    let mut cluster = RaftCluster::start(3, &refs(&args), &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    // Silent connections, more than a node lets wait in their handshake.
    const JUNK: usize = 3 * MAX_HANDSHAKING;
    let mut junk: Vec<Vec<TcpStream>> = Vec::new();
    for &port in &cluster.raft_ports {
        let streams: Vec<TcpStream> = (0..JUNK)
            .map(|_| {
                let s = raft_wire::connect(port);
                s.set_nonblocking(true).expect("non-blocking");
                s
            })
            .collect();
        junk.push(streams);
    }
    for (i, streams) in junk.iter().enumerate() {
        wait_until(
            Duration::from_secs(4),
            &format!("node {i} to close the connections beyond its cap at once"),
            || {
                let shut = streams.iter().filter(|s| closed(s)).count();
                if shut >= JUNK - MAX_HANDSHAKING {
                    Ok(())
                } else {
                    Err(format!("{shut} of {JUNK} closed"))
                }
            },
        );
        assert!(
            cluster.nodes[i]
                .log()
                .contains("refused a connection from 127.0.0.1:"),
            "node {i} did not log the refusals"
        );
    }
    // The established links carry on: a write commits everywhere.
    let follower = others_of(3, leader)[0];
    add_everywhere(
        &cluster.nodes,
        follower,
        &format!("g={}", m1.addr()),
        "a write with the port full",
    );
    // A new election needs new links: they get in once the silent connections time out.
    let killed_at = Instant::now();
    cluster.nodes[leader].kill9();
    let survivors = others_of(3, leader);
    let now = cluster.wait_for_leader(&survivors, ELECTION);
    eprintln!(
        "new leader after {:?} with the port full",
        killed_at.elapsed()
    );
    write_ok(&cluster.nodes[now], "DELETE", "/master?masters=g");
    wait_for_groups(&cluster.nodes, &survivors, "", "a write after the election");
    for (i, streams) in junk.iter().enumerate().filter(|(i, _)| *i != leader) {
        wait_until(
            LONG,
            &format!("node {i} to drop the silent connections it held"),
            || {
                let open = streams.iter().filter(|s| !closed(s)).count();
                if open == 0 {
                    Ok(())
                } else {
                    Err(format!("{open} still open"))
                }
            },
        );
    }
}

/// The start of every record of a WAL, in order.
fn record_starts(wal: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 8 <= wal.len() {
        starts.push(at);
        let length = u32::from_be_bytes([wal[at], wal[at + 1], wal[at + 2], wal[at + 3]]);
        at += 8 + length as usize;
    }
    assert_eq!(at, wal.len(), "the WAL does not end on a record boundary");
    starts
}

#[test]
fn a_snapshot_without_its_wal_or_a_damaged_last_record_stops_the_start() {
    let m1 = RedisServer::master();
    let mut cluster = RaftCluster::start(1, &FAST, &[]);
    cluster.wait_for_leader(&[0], ELECTION);
    write_ok(
        &cluster.nodes[0],
        "POST",
        &format!("/master?masters=one={}", m1.addr()),
    );
    cluster.nodes[0].kill9();
    let data = cluster.data_dir(0);
    let (wal, snapshot) = (data.join("raft.wal"), data.join("raft.snapshot"));
    assert!(snapshot.exists(), "no snapshot in {}", data.display());
    let original = std::fs::read(&wal).expect("the WAL");
    let args = cluster.nodes[0].args().to_vec();
    let refused = |what: &str, says: &str| {
        let (code, stderr) = run_until_exit(&args);
        assert_eq!(code, Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains(&wal.display().to_string()) && stderr.contains(says),
            "{what}: {stderr}"
        );
    };

    std::fs::remove_file(&wal).unwrap();
    refused("a missing WAL", "missing or empty");
    assert!(!wal.exists(), "the refused start created a WAL");
    std::fs::write(&wal, b"").unwrap();
    refused("an empty WAL", "cluster/peers");

    let last = *record_starts(&original).last().unwrap();
    let mut flipped = original.clone();
    let byte = last + 8 + (original.len() - last - 8) / 2;
    flipped[byte] ^= 0x04;
    std::fs::write(&wal, &flipped).unwrap();
    refused("a bit flip in the last whole record", "corrupt");
    assert_eq!(
        std::fs::read(&wal).unwrap(),
        flipped,
        "the refused start changed the WAL"
    );

    // Put back, the same directory starts with everything it held.
    std::fs::write(&wal, &original).unwrap();
    cluster.nodes[0].restart();
    cluster.wait_for_leader(&[0], ELECTION);
    wait_for_groups(
        &cluster.nodes,
        &[0],
        &format!("one={}", m1.addr()),
        "a start on the intact directory",
    );
}

/// Sets the soft open-file limit of process `pid` (the hard one stays, so it can be
/// raised again without privileges); returns the old soft limit.
fn set_open_file_limit(pid: u32, soft: libc::rlim_t) -> libc::rlim_t {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit with no new limit only writes `old`, a plain struct on this stack.
    let read = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            std::ptr::null(),
            &mut old,
        )
    };
    assert_eq!(read, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above; `new` is read, nothing is written.
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

#[test]
fn the_raft_port_outlives_running_out_of_file_descriptors() {
    let mut cluster = RaftCluster::start(1, &FAST, &[]);
    cluster.wait_for_leader(&[0], ELECTION);
    let pid = cluster.nodes[0].pid().expect("a running daemon");
    let open_now = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the daemon's descriptors")
        .count() as libc::rlim_t;
    let old = set_open_file_limit(pid, open_now + 6);
    // Each accepted connection takes two descriptors: a few in, accept fails (EMFILE).
    let held: Vec<TcpStream> = (0..12)
        .map(|_| raft_wire::connect(cluster.raft_ports[0]))
        .collect();
    wait_for_log(
        &cluster.nodes[0],
        "the failed accepts to be logged",
        &["raft: accept failed: Too many open files"],
    );
    drop(held);
    set_open_file_limit(pid, old);
    // The listener lives on: a new connection is read, and its bad record refused.
    // The held connections' handshake slots come back as their readers see them close;
    // until then a new one from the same host may be refused (at most 8 handshaking
    // per host), so it is sent again as a real peer dials again.
    let needle = "expected a hello, got a record of kind 9";
    wait_until(LONG, "a connection after the descriptors came back", || {
        send_raw(
            cluster.raft_ports[0],
            &frame(9, b"after the descriptors came back"),
            Duration::ZERO,
        );
        let log = cluster.nodes[0].log_of_this_run();
        if log.contains(needle) {
            Ok(())
        } else {
            let tail: Vec<&str> = log.lines().rev().take(4).collect();
            Err(format!("missing {needle:?}; last lines: {tail:?}"))
        }
    });
    assert!(cluster.nodes[0].is_running(), "the daemon exited");
}
