//! The worker's failover steps run against in-memory servers ([`FakeServers`]) and a
//! clock that only moves when the worker sleeps ([`ManualClock`]), with a standalone
//! broker: proof that [`Servers`] and [`Clock`] are all the steps need, and a check of
//! the promotion's decisions (refusal, veto, timeout) in milliseconds of real time.

use super::{FailoverRequest, FenceJob, FenceResult, PromoteReply, Servers, WorkerContext};
use super::{WorkerJob, WorkerReport, failover, hooks::Hooks, run_job};
use crate::address::Addr;
use crate::broker::standalone::StandaloneBroker;
use crate::broker::{Action, Broker, FailoverRecord, GroupSpec, Outcome};
use crate::clock::Clock;
use crate::config::MinReplicas;
use crate::error::{Error, Result};
use crate::observe::events::Events;
use crate::observe::metrics::Metrics;
use crate::observe::status::Observations;
use crate::redis::{NodeOptions, ReplicaReport, ReplicationInfo, Role};
use crate::sync::lock;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time that moves only when someone sleeps on it (or the test advances it).
struct ManualClock {
    start: Instant,
    elapsed: Mutex<Duration>,
}

impl ManualClock {
    fn new() -> ManualClock {
        ManualClock {
            start: Instant::now(),
            elapsed: Mutex::new(Duration::ZERO),
        }
    }

    fn advance(&self, d: Duration) {
        *lock(&self.elapsed) += d;
    }

    fn elapsed(&self) -> Duration {
        *lock(&self.elapsed)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }

    fn wall_ms(&self) -> u64 {
        1_700_000_000_000 + self.elapsed().as_millis() as u64
    }

    fn sleep(&self, d: Duration) {
        self.advance(d);
    }
}

/// What a simulated replica does with `SLAVEOF NO ONE`.
#[derive(Clone, Copy)]
enum OnPromote {
    /// Says OK and is master at once.
    Accept,
    /// Says OK and reports master only this much (clock) time later.
    AcceptAfter(Duration),
    /// Answers with this error and stays a replica.
    Refuse(&'static str),
}

/// One simulated server.
struct FakeServer {
    up: bool,
    /// What `INFO` reports (its role is overridden once promoted).
    info: ReplicationInfo,
    on_promote: OnPromote,
    /// Master from this (clock) time on.
    master_from: Option<Instant>,
}

/// Servers in memory; every command that changes one is written to `changes`.
struct FakeServers {
    clock: Arc<ManualClock>,
    servers: Mutex<BTreeMap<Addr, FakeServer>>,
    changes: Mutex<Vec<String>>,
}

impl FakeServers {
    fn note(&self, change: String) {
        lock(&self.changes).push(change);
    }

    fn changes(&self) -> Vec<String> {
        lock(&self.changes).clone()
    }

    fn is_master(&self, server: &FakeServer) -> bool {
        match server.master_from {
            Some(at) => self.clock.now() >= at,
            None => server.info.role == "master",
        }
    }

    fn refused(addr: &Addr) -> Error {
        Error::Server(format!("{addr}: connection refused"))
    }
}

impl Servers for FakeServers {
    fn infos(&self, addrs: &[Addr]) -> Vec<ReplicaReport> {
        let servers = lock(&self.servers);
        addrs
            .iter()
            .map(|addr| ReplicaReport {
                addr: addr.clone(),
                info: match servers.get(addr) {
                    Some(s) if s.up => {
                        let mut info = s.info.clone();
                        if self.is_master(s) {
                            info.role = "master".into();
                            info.master = None;
                        }
                        Ok(info)
                    }
                    _ => Err(FakeServers::refused(addr)),
                },
            })
            .collect()
    }

    fn role(&self, addr: &Addr) -> Result<Role> {
        let servers = lock(&self.servers);
        match servers.get(addr) {
            Some(s) if s.up && self.is_master(s) => Ok(Role::Master {
                offset: s.info.offset,
                replicas: Vec::new(),
            }),
            Some(s) if s.up => Ok(Role::Replica {
                master: s.info.master.clone().unwrap_or_default(),
                state: "connect".into(),
            }),
            _ => Err(FakeServers::refused(addr)),
        }
    }

    fn promote_once(&self, addr: &Addr) -> PromoteReply {
        let now = self.clock.now();
        let mut servers = lock(&self.servers);
        let Some(server) = servers.get_mut(addr).filter(|s| s.up) else {
            return PromoteReply::NoReply(FakeServers::refused(addr));
        };
        self.note(format!("SLAVEOF NO ONE {addr}"));
        match server.on_promote {
            OnPromote::Accept => server.master_from = Some(now),
            OnPromote::AcceptAfter(delay) => server.master_from = Some(now + delay),
            OnPromote::Refuse(error) => return PromoteReply::Refused(error.into()),
        }
        PromoteReply::Accepted
    }

    fn keep_promotion(&self, addr: &Addr) {
        self.note(format!("keep {addr}"));
    }

    fn repoint(&self, addrs: &[Addr], to: &Addr) -> Vec<String> {
        let mut servers = lock(&self.servers);
        let mut failures = Vec::new();
        for addr in addrs {
            match servers.get_mut(addr).filter(|s| s.up) {
                Some(server) => {
                    server.master_from = None;
                    server.info.role = "slave".into();
                    server.info.master = Some(to.to_string());
                    self.note(format!("SLAVEOF {to} {addr}"));
                }
                None => failures.push(FakeServers::refused(addr).to_string()),
            }
        }
        failures
    }

    fn follow_afresh(&self, addr: &Addr, master: &Addr) -> Result<()> {
        let mut servers = lock(&self.servers);
        let server = servers
            .get_mut(addr)
            .filter(|s| s.up)
            .ok_or_else(|| FakeServers::refused(addr))?;
        server.master_from = None;
        server.info.role = "slave".into();
        server.info.master = Some(master.to_string());
        self.note(format!("SLAVEOF {master} {addr} (afresh)"));
        Ok(())
    }

    fn bound_write_loss(&self, master: &Addr, settings: &MinReplicas) -> Result<()> {
        self.note(format!("min-replicas {} {master}", settings.to_write));
        Ok(())
    }

    fn pause_writes(&self, master: &Addr, ms: u64) -> Result<std::result::Result<(), String>> {
        self.note(format!("CLIENT PAUSE {ms} WRITE {master}"));
        Ok(Ok(()))
    }

    fn unpause_writes(&self, master: &Addr) -> Result<()> {
        self.note(format!("CLIENT UNPAUSE {master}"));
        Ok(())
    }

    fn demote(&self, master: &Addr, to: &Addr) -> Result<()> {
        self.repoint(std::slice::from_ref(master), to)
            .into_iter()
            .next()
            .map_or(Ok(()), |e| Err(Error::Server(e)))
    }
}

fn addr(port: u16) -> Addr {
    Addr::parse(&format!("127.0.0.1:{port}")).unwrap()
}

/// A replica of the dead master 127.0.0.1:1, its link down for a second.
fn replica(priority: u32, on_promote: OnPromote) -> FakeServer {
    FakeServer {
        up: true,
        info: ReplicationInfo {
            role: "slave".into(),
            master: Some("127.0.0.1:1".into()),
            link_up: false,
            link_down_secs: Some(1),
            last_io_secs: None,
            priority,
            offset: 100,
            run_id: None,
            replicas: Vec::new(),
            ledisdb_version: None,
        },
        on_promote,
        master_from: None,
    }
}

/// Group `g` with master 127.0.0.1:1 (down) and these replicas, checked with a one
/// second window (so a promotion times out after 2 s).
struct World {
    ctx: WorkerContext,
    servers: Arc<FakeServers>,
    clock: Arc<ManualClock>,
    broker: Arc<StandaloneBroker>,
}

impl World {
    fn new(replicas: Vec<(u16, FakeServer)>) -> World {
        let clock = Arc::new(ManualClock::new());
        let servers = Arc::new(FakeServers {
            clock: clock.clone(),
            servers: Mutex::new(replicas.into_iter().map(|(p, s)| (addr(p), s)).collect()),
            changes: Mutex::new(Vec::new()),
        });
        let broker = Arc::new(StandaloneBroker::new("127.0.0.1:0".into()));
        broker
            .propose(Action::Add(vec![GroupSpec {
                name: "g".into(),
                master: addr(1),
            }]))
            .unwrap();
        let ctx = WorkerContext {
            broker: broker.clone(),
            hooks: Arc::new(Hooks::default()),
            observed: Arc::new(Observations::default()),
            metrics: Arc::new(Metrics::new()),
            events: Arc::new(Events::default()),
            servers: servers.clone(),
            clock: clock.clone(),
            node_options: NodeOptions::default(),
            max_down_time: Duration::from_secs(1),
            fresh_io: Duration::from_secs(1),
        };
        World {
            ctx,
            servers,
            clock,
            broker,
        }
    }

    /// Fails over `g`, whose master last answered `down_for` ago (on the clock).
    fn fail_over(&self, down_for: Duration) -> FailoverRecord {
        let last_success = self.clock.now();
        self.clock.advance(down_for);
        let replicas = lock(&self.servers.servers).keys().cloned().collect();
        let request = FailoverRequest {
            group: "g".into(),
            master: addr(1),
            replicas,
            last_success,
            master_offset: 100,
            watch_id: 7,
            resume: None,
            manual: false,
        };
        failover::run(&self.ctx, &request)
    }

    fn master(&self) -> Addr {
        self.broker.state().groups["g"].master.clone()
    }
}

#[test]
fn a_refused_promotion_passes_to_the_next_candidate_at_once() {
    let world = World::new(vec![
        (2, replica(10, OnPromote::Refuse("ERR not allowed"))),
        (3, replica(100, OnPromote::Accept)),
    ]);
    let record = world.fail_over(Duration::from_secs(3));
    assert_eq!(record.outcome, Outcome::Succeeded, "{record:?}");
    assert_eq!(record.new_master, Some(addr(3)));
    assert_eq!(record.down_for_ms, 3000);
    assert_eq!(record.duration_ms, 0, "a refusal costs no waiting");
    let passed: Vec<(u16, &str)> = record
        .passed_over
        .iter()
        .map(|p| (p.addr.port, p.reason.as_str()))
        .collect();
    assert_eq!(passed, [(2, "refused SLAVEOF NO ONE: ERR not allowed")]);
    assert_eq!(
        world.servers.changes(),
        [
            "SLAVEOF NO ONE 127.0.0.1:2",
            "SLAVEOF NO ONE 127.0.0.1:3",
            "keep 127.0.0.1:3",
            "SLAVEOF 127.0.0.1:3 127.0.0.1:2",
        ]
    );
    assert_eq!(world.master(), addr(3));
}

#[test]
fn a_replica_that_still_hears_the_master_vetoes_the_failover() {
    let mut witness = replica(100, OnPromote::Accept);
    witness.info.link_up = true;
    witness.info.link_down_secs = None;
    witness.info.last_io_secs = Some(0);
    let world = World::new(vec![(2, replica(10, OnPromote::Accept)), (3, witness)]);
    let record = world.fail_over(Duration::from_secs(3));
    assert_eq!(record.outcome, Outcome::Aborted, "{record:?}");
    let reason = record.reason.unwrap_or_default();
    assert!(
        reason.starts_with("replica 127.0.0.1:3 still reports master_link_status:up"),
        "{reason}"
    );
    assert!(world.servers.changes().is_empty(), "nothing promoted");
    assert_eq!(world.master(), addr(1));
}

#[test]
fn a_slow_promotion_times_out_after_the_promotion_timeout_of_clock_time() {
    let world = World::new(vec![
        (
            2,
            replica(10, OnPromote::AcceptAfter(Duration::from_secs(3600))),
        ),
        (3, replica(100, OnPromote::Accept)),
    ]);
    let real = Instant::now();
    let record = world.fail_over(Duration::ZERO);
    assert_eq!(record.outcome, Outcome::Succeeded, "{record:?}");
    assert_eq!(record.new_master, Some(addr(3)));
    assert_eq!(record.passed_over.len(), 1);
    let reason = &record.passed_over[0].reason;
    assert!(
        reason.starts_with("ROLE still not master after 2000 ms: Replica"),
        "{reason}"
    );
    // Polled every 20 ms until the 2 s deadline: no more, no less.
    let waited = world.clock.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited <= Duration::from_millis(2020),
        "{waited:?}"
    );
    assert_eq!(record.duration_ms, waited.as_millis() as u64);
    assert!(
        real.elapsed() < Duration::from_secs(1),
        "the clock was not real"
    );
}

#[test]
fn a_promotion_within_the_timeout_waits_for_role_master() {
    let world = World::new(vec![
        (
            2,
            replica(10, OnPromote::AcceptAfter(Duration::from_millis(1500))),
        ),
        (3, replica(100, OnPromote::Accept)),
    ]);
    let record = world.fail_over(Duration::ZERO);
    assert_eq!(record.outcome, Outcome::Succeeded, "{record:?}");
    assert_eq!(record.new_master, Some(addr(2)));
    assert!(record.passed_over.is_empty());
    let waited = world.clock.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_millis(1520),
        "{waited:?}"
    );
    assert_eq!(world.master(), addr(2));
}

#[test]
fn fencing_through_run_job_converts_only_servers_that_claim_master() {
    let mut old_master = replica(100, OnPromote::Accept);
    old_master.info.role = "master".into();
    old_master.info.master = None;
    let mut down = replica(100, OnPromote::Accept);
    down.up = false;
    let world = World::new(vec![
        (1, old_master),
        (2, replica(100, OnPromote::Accept)),
        (3, down),
    ]);
    let job = FenceJob {
        group: "g".into(),
        watch_id: 7,
        master: addr(2),
        targets: vec![addr(1), addr(2), addr(3)],
    };
    let WorkerReport::Fenced { results, .. } = run_job(&world.ctx, WorkerJob::Fence(job)) else {
        panic!("not a fencing report");
    };
    let found: Vec<(u16, &str)> = results
        .iter()
        .map(|(a, r)| {
            let r = match r {
                FenceResult::Converted => "converted",
                FenceResult::NotMaster => "not master",
                FenceResult::Unreachable(_) => "unreachable",
                FenceResult::Failed(_) => "failed",
            };
            (a.port, r)
        })
        .collect();
    assert_eq!(
        found,
        [(1, "converted"), (2, "not master"), (3, "unreachable")]
    );
    assert_eq!(
        world.servers.changes(),
        ["SLAVEOF 127.0.0.1:2 127.0.0.1:1 (afresh)"]
    );
}

#[test]
fn a_failover_begun_by_an_earlier_leader_is_finished_with_its_replica() {
    let world = World::new(vec![
        (2, replica(100, OnPromote::Accept)),
        (3, replica(10, OnPromote::Accept)),
    ]);
    let started_at_ms = world.clock.wall_ms();
    world
        .broker
        .propose(Action::FailoverBegin {
            group: "g".into(),
            old_master: addr(1),
            new_master: addr(2),
            replicas: vec![addr(2), addr(3)],
            started_at_ms,
            passed_over: Vec::new(),
        })
        .unwrap();
    let request = FailoverRequest {
        group: "g".into(),
        master: addr(1),
        replicas: vec![addr(2), addr(3)],
        last_success: world.clock.now(),
        master_offset: 100,
        watch_id: 7,
        resume: Some(super::Resume {
            new_master: addr(2),
            started_at_ms,
        }),
        manual: false,
    };
    let WorkerReport::Attempted { outcome, .. } = run_job(&world.ctx, WorkerJob::Failover(request))
    else {
        panic!("not an attempt report");
    };
    assert_eq!(outcome, Outcome::Succeeded);
    // The earlier leader's choice, though 3 ranks first now.
    assert_eq!(world.master(), addr(2));
    assert_eq!(
        world.servers.changes(),
        [
            "SLAVEOF NO ONE 127.0.0.1:2",
            "keep 127.0.0.1:2",
            "SLAVEOF 127.0.0.1:2 127.0.0.1:3",
        ]
    );
}
