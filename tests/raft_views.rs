//! The quorum over Raft counts members, not the names their views carry, with real
//! `redis-failover` processes, real `redis-server`s and a peer that knows
//! `raft_secret` (a compromised member, say) speaking the wire format of
//! `support/raft_wire.rs`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::groups::*;
use support::raft_wire::{self, Dialer};
use support::{RaftCluster, wait_until};

const SECRET: &str = "a-test-cluster-secret-0f3c9a7e51b2";
const ELECTION: Duration = Duration::from_secs(20);

#[test]
fn a_member_writing_views_under_many_names_counts_once() {
    // Three daemons, all three must find a master down (quorum 3); one of them is
    // frozen, so only two can. A peer posing as the live follower sends views under
    // other names that find the master down too: still two votes, no failover. Once
    // the frozen daemon thaws, its own view is the third vote and the failover runs.
    let (mut master, a, b) = topology(100, 100);
    let args = [
        "-check_interval=100".to_string(),
        "-max_down_time=1".to_string(),
        "-quorum=3".to_string(),
        format!("-raft_secret={SECRET}"),
    ];
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cluster = RaftCluster::start(3, &refs, &[]);
    let leader = cluster.wait_for_leader(&[0, 1, 2], ELECTION);
    let (live, frozen) = ((leader + 1) % 3, (leader + 2) % 3);
    write_ok(
        &cluster.nodes[leader],
        "POST",
        &format!("/master?masters=f={}", master.addr()),
    );
    wait_until(LONG, "group f ok on the leader", || {
        let g = cluster.nodes[leader].group("f");
        if g["state"] == "ok" {
            Ok(())
        } else {
            Err(g.to_string())
        }
    });
    cluster.nodes[frozen].signal("STOP");

    // The forger: views of group f's master down, a new name every time.
    let (port, to) = (
        cluster.raft_ports[leader],
        raft_wire::peer_id(&cluster.raft_addr(leader)),
    );
    let mut forger = Dialer::handshake(port, to, &cluster.raft_addr(live), SECRET)
        .expect("the handshake with the right secret");
    assert!(
        forger.acceptor_proved,
        "the leader did not prove the secret"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let down = master.addr();
    let sender = std::thread::spawn(move || {
        let mut seq = 1u64;
        while !stopped.load(Ordering::Relaxed) {
            let view = format!(
                r#"{{"daemon":"forged-{}","seq":{seq},"down":[{{"group":"f","master":"{down}"}}]}}"#,
                seq % 4
            );
            let record = forger.sealed_view(view.as_bytes());
            if !forger.send(&record) {
                return seq;
            }
            seq += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
        seq
    });

    master.kill();
    let until = Instant::now() + Duration::from_secs(6);
    let mut most = 0;
    while Instant::now() < until {
        let g = cluster.nodes[leader].group("f");
        most = most.max(g["down_votes"].as_u64().unwrap_or(0));
        assert!(
            g["last_failover"].is_null(),
            "failed over with one daemon frozen and quorum 3: {g}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        most <= 2,
        "{most} votes counted with two daemons able to vote"
    );
    assert!(
        most == 2,
        "the live follower's view never counted ({most} votes)"
    );

    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().expect("the forger");
    eprintln!("{sent} forged views sent; at most {most} votes counted");
    cluster.nodes[frozen].signal("CONT");
    let g = wait_until(
        Duration::from_secs(30),
        "the failover once all three agree",
        || {
            let g = cluster.nodes[leader].group("f");
            if g["last_failover"]["outcome"] == "succeeded" {
                Ok(g)
            } else {
                Err(g.to_string())
            }
        },
    );
    assert!(g["master"] == a.addr() || g["master"] == b.addr(), "{g}");
}
