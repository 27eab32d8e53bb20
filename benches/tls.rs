//! What TLS costs a failover: `cargo bench --bench tls`.
//!
//! Each round starts a master with two replicas and one daemon (`-check_interval=100
//! -max_down_time=1`), waits until the daemon sees the group ok, kills the master with
//! `kill -9`, and measures from that instant (a) until a replica's `ROLE` says master
//! and (b) until the other replica is linked to it. The same rounds run on plain TCP
//! and on TLS-only servers (`--port 0 --tls-port N`, client certificates required,
//! replication over TLS) watched with `-tls`, alternating, so both see the same
//! machine. The pollers use the library's own connections (TLS ones for the TLS
//! rounds), one kept per replica. `BENCH_ROUNDS` (5). Prints every round and the
//! medians; asserts nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use redis_failover::Addr;
use redis_failover::net::tls::{Tls, TlsFiles, TlsOptions};
use redis_failover::redis::{NodeOptions, RedisNode, Role};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::tls::{Pki, TlsRedis};
use support::{Daemon, RedisServer};

/// One master and its two replicas, plain or TLS-only.
enum Servers {
    Plain(RedisServer, RedisServer, RedisServer),
    Tls(TlsRedis, TlsRedis, TlsRedis),
}

impl Servers {
    fn start(pki: Option<&Pki>) -> Servers {
        match pki {
            None => {
                let master = RedisServer::master();
                let a = RedisServer::replica_of(master.port, 100);
                let b = RedisServer::replica_of(master.port, 100);
                Servers::Plain(master, a, b)
            }
            Some(pki) => {
                let cert = pki.loopback("redis");
                let master = TlsRedis::start(pki, &cert, None);
                let a = TlsRedis::start(pki, &cert, Some(master.port));
                let b = TlsRedis::start(pki, &cert, Some(master.port));
                master.wait_for_replicas(2);
                Servers::Tls(master, a, b)
            }
        }
    }

    fn addrs(&self) -> [String; 3] {
        match self {
            Servers::Plain(m, a, b) => [m.addr(), a.addr(), b.addr()],
            Servers::Tls(m, a, b) => [m.addr(), a.addr(), b.addr()],
        }
    }

    fn kill_master(&mut self) {
        match self {
            Servers::Plain(m, _, _) => m.kill(),
            Servers::Tls(m, _, _) => m.kill(),
        }
    }
}

fn node_options(pki: Option<&Pki>) -> NodeOptions {
    let tls = pki.map(|pki| {
        let own = pki.loopback("poller");
        let options = TlsOptions {
            files: TlsFiles {
                ca_cert: Some(pki.ca.clone()),
                cert: Some(own.cert),
                key: Some(own.key),
                raft_ca_cert: None,
            },
            ..TlsOptions::default()
        };
        Arc::new(Tls::load(options).expect("the poller's TLS material"))
    });
    NodeOptions {
        connect_timeout: Duration::from_millis(500),
        io_timeout: Duration::from_millis(500),
        tls,
        ..NodeOptions::default()
    }
}

/// (a) and (b) of one round, in ms after the kill.
fn round(pki: Option<&Pki>) -> Result<(u128, u128), String> {
    let mut servers = Servers::start(pki);
    let [master, a, b] = servers.addrs();
    let mut args = vec![
        format!("-masters=g={master}"),
        "-check_interval=100".to_string(),
        "-max_down_time=1".to_string(),
    ];
    if let Some(pki) = pki {
        args.extend(support::tls::material_flags(
            &pki.ca,
            &pki.loopback("daemon"),
        ));
        args.push("-tls".into());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&refs);
    daemon.wait_group_ok("g", 2);
    let options = node_options(pki);
    let mut pollers: Vec<RedisNode> = [&a, &b]
        .iter()
        .map(|addr| Addr::parse(addr).map(|addr| RedisNode::new(addr, options.clone())))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    servers.kill_master();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(20);
    let mut promoted: Option<(usize, u128)> = None;
    while Instant::now() < deadline {
        match promoted {
            None => {
                for (i, poller) in pollers.iter_mut().enumerate() {
                    if matches!(poller.role(), Ok(Role::Master { .. })) {
                        promoted = Some((i, killed.elapsed().as_millis()));
                    }
                }
            }
            Some((i, at)) => {
                let new_port = [&a, &b][i]
                    .rsplit(':')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let other = &mut pollers[1 - i];
                if let Ok(Role::Replica { master, state }) = other.role()
                    && master.ends_with(&format!(":{new_port}"))
                    && state == "connected"
                {
                    return Ok((at, killed.elapsed().as_millis()));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Err(format!("no failover within 20 s: {}", daemon.group("g")))
}

fn median(mut values: Vec<u128>) -> String {
    if values.is_empty() {
        return "-".into();
    }
    values.sort_unstable();
    values[values.len() / 2].to_string()
}

fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let pki = Pki::new("bench-tls");
    let mut plain = Vec::new();
    let mut tls = Vec::new();
    for i in 0..rounds {
        for (label, pki, results) in [("plain", None, &mut plain), ("tls", Some(&pki), &mut tls)] {
            match round(pki) {
                Ok((a, b)) => {
                    println!("round {i} {label:>5}: (a) {a} ms, (b) {b} ms");
                    results.push((a, b));
                }
                Err(e) => println!("round {i} {label:>5}: FAILED: {e}"),
            }
        }
    }
    println!();
    println!("ms after kill -9, median of {rounds}      plain TCP   TLS only");
    for (name, pick) in [
        ("(a) a replica reports master", 0usize),
        ("(b) the other replica linked", 1),
    ] {
        let of = |v: &[(u128, u128)]| {
            median(
                v.iter()
                    .map(|r| if pick == 0 { r.0 } else { r.1 })
                    .collect(),
            )
        };
        println!("{name:<34} {:>10} {:>10}", of(&plain), of(&tls));
    }
    println!(
        "rounds completed: plain {}/{rounds}, TLS {}/{rounds}",
        plain.len(),
        tls.len()
    );
}
