//! Unit tests of the core, driven step by step with a time and a cluster given by the
//! test: what it asks for (probes, jobs, views) after each input.

use super::probe::{Answer, CheckerReport, Probe, ProbeKind, ProbeResult};
use super::{ClusterView, CoreSettings, Input, MonitorCore, Now, Output, Sinks};
use crate::address::Addr;
use crate::broker::views::{DownMaster, MastersView};
use crate::broker::{Action, AttemptKind, GroupSpec, Pause, ReplicatedState};
use crate::error::Error;
use crate::redis::{ListedReplica, Role};
use crate::worker::WorkerJob;
use crate::worker::manual_failover::ManualFailoverCommand;
use crate::worker::switchover_request::SwitchoverError;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const MS: Duration = Duration::from_millis(1);

/// The cluster as a test sets it.
struct Cluster {
    acting: bool,
    members: usize,
    views: Vec<MastersView>,
}

impl ClusterView for Cluster {
    fn is_acting(&self) -> bool {
        self.acting
    }

    fn quorum(&self, setting: usize) -> usize {
        if setting == 0 {
            self.members / 2 + 1
        } else {
            setting
        }
    }

    fn peer_views(&self, _max_age: Duration) -> Vec<MastersView> {
        self.views.clone()
    }
}

fn addr(port: u16) -> Addr {
    Addr {
        host: "10.0.0.1".into(),
        port,
    }
}

/// A core (100 ms checks, 1 s window) and its clock.
struct Bench {
    core: MonitorCore,
    t0: Instant,
    now: Duration,
    cluster: Cluster,
    outputs: Vec<Output>,
}

impl Bench {
    fn new(members: usize) -> Bench {
        Bench::with_block(members, Duration::ZERO)
    }

    /// A core whose anti-flapping block is `failover_block`.
    fn with_block(members: usize, failover_block: Duration) -> Bench {
        let t0 = Instant::now();
        let settings = CoreSettings {
            check_interval: 100 * MS,
            max_down_time: 1000 * MS,
            quorum: 0,
            min_replicas: None,
            daemon: "d0".into(),
            failover_block,
        };
        let sinks = Sinks {
            observed: Default::default(),
            metrics: Default::default(),
            events: Default::default(),
        };
        let now = Now {
            mono: t0,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        };
        Bench {
            core: MonitorCore::new(settings, sinks, now),
            t0,
            now: Duration::ZERO,
            cluster: Cluster {
                acting: true,
                members,
                views: Vec::new(),
            },
            outputs: Vec::new(),
        }
    }

    fn step(&mut self, input: Input) {
        let now = Now {
            mono: self.t0 + self.now,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + self.now,
        };
        self.core.step(now, &self.cluster, input);
        self.outputs.extend(self.core.take_outputs());
    }

    /// Moves time on to `at` (since the start), one tick per 10 ms.
    fn run_to(&mut self, at: Duration) {
        while self.now < at {
            self.now = (self.now + 10 * MS).min(at);
            self.step(Input::Tick);
        }
    }

    /// The probes asked for since the last call.
    fn take_probes(&mut self) -> Vec<Probe> {
        let mut probes = Vec::new();
        self.outputs.retain(|o| match o {
            Output::Probes(batch) => {
                probes.extend(batch.iter().cloned());
                false
            }
            _ => true,
        });
        probes
    }

    fn jobs(&self) -> Vec<&WorkerJob> {
        self.outputs
            .iter()
            .filter_map(|o| match o {
                Output::Job(job) => Some(job),
                _ => None,
            })
            .collect()
    }

    /// Answers every probe out: the master with `master`, the others with `others`.
    fn answer(&mut self, master: impl Fn() -> Result<Role, String>, others: Role) {
        for probe in self.take_probes() {
            let answer = match probe.kind {
                ProbeKind::Master => master().map(Answer::Role),
                ProbeKind::Role => Ok(Answer::Role(others.clone())),
                ProbeKind::Info => Err("no INFO here".to_string()),
            };
            let at = self.t0 + self.now;
            let result = ProbeResult {
                probe,
                started: at,
                finished: at,
                answer: answer.map_err(Error::Server),
            };
            let report = CheckerReport {
                results: vec![result],
                ..CheckerReport::default()
            };
            self.step(Input::Checked(report));
        }
    }

    /// Runs to `until`, every check answered by `master`.
    fn checks_until(&mut self, until: Duration, master: impl Fn() -> Result<Role, String>) {
        while self.now < until {
            let next = self.now + 10 * MS;
            self.run_to(next);
            self.answer(&master, Role::Other("sentinel".into()));
        }
    }
}

fn state(known: Vec<Addr>, failed: Option<&str>) -> Arc<ReplicatedState> {
    let mut state = ReplicatedState::default();
    let spec = GroupSpec {
        name: "g".into(),
        master: addr(1),
    };
    state.apply(Action::Add(vec![spec])).unwrap();
    let group = state.groups.get_mut("g").unwrap();
    group.known_replicas = known;
    group.failed = failed.map(String::from);
    Arc::new(state)
}

fn healthy() -> Result<Role, String> {
    Ok(Role::Master {
        offset: 10,
        replicas: vec![ListedReplica {
            addr: addr(2),
            offset: 10,
        }],
    })
}

fn dead() -> Result<Role, String> {
    Err("connection refused".into())
}

fn failovers(bench: &Bench) -> usize {
    bench
        .jobs()
        .iter()
        .filter(|j| matches!(j, WorkerJob::Failover(_)))
        .count()
}

#[test]
fn a_master_down_here_alone_waits_for_the_quorum_then_fails_over() {
    let mut b = Bench::new(3);
    b.step(Input::State(state(vec![addr(2)], None)));
    b.checks_until(500 * MS, healthy);
    b.checks_until(3000 * MS, dead);
    assert_eq!(failovers(&b), 0, "one vote of the two needed");
    // A peer's view says down too: the next exchange of views fails it over.
    b.cluster.views = vec![MastersView {
        daemon: "d1".into(),
        seq: 1,
        down: vec![DownMaster {
            group: "g".into(),
            master: addr(1),
        }],
    }];
    b.checks_until(3200 * MS, dead);
    let jobs = b.jobs();
    let Some(WorkerJob::Failover(request)) = jobs.first() else {
        panic!("no failover after the quorum: {} jobs", jobs.len());
    };
    assert_eq!(request.replicas, vec![addr(2)]);
}

#[test]
fn a_daemon_that_does_not_act_never_fails_over_nor_fences() {
    let mut b = Bench::new(1);
    b.cluster.acting = false;
    b.step(Input::State(state(vec![addr(2), addr(3)], None)));
    b.checks_until(3000 * MS, healthy);
    let probes = b.take_probes();
    assert!(
        !probes.iter().any(|p| p.kind == ProbeKind::Role),
        "a follower looked at servers to fence"
    );
    b.checks_until(6000 * MS, dead);
    assert!(b.jobs().is_empty(), "a follower handed out jobs");
}

#[test]
fn a_known_replica_missing_from_the_list_that_claims_master_is_fenced() {
    let mut b = Bench::new(1);
    // 10.0.0.1:3 is known (an old master, say) but the master lists only :2.
    b.step(Input::State(state(vec![addr(2), addr(3)], None)));
    b.run_to(10 * MS);
    let master = Role::Master {
        offset: 0,
        replicas: Vec::new(),
    };
    b.answer(healthy, master.clone());
    b.run_to(20 * MS);
    b.answer(healthy, master);
    let fenced: Vec<&WorkerJob> = b
        .jobs()
        .into_iter()
        .filter(|j| matches!(j, WorkerJob::Fence(f) if f.targets == vec![addr(3)]))
        .collect();
    assert_eq!(fenced.len(), 1, "one fence job for :3");
}

#[test]
fn a_failed_group_is_still_checked_but_never_failed_over() {
    let mut b = Bench::new(1);
    b.step(Input::State(state(vec![addr(2)], Some("no candidate"))));
    b.run_to(10 * MS);
    assert!(
        !b.take_probes().is_empty(),
        "a failed group is still checked"
    );
    b.checks_until(5000 * MS, dead);
    assert_eq!(failovers(&b), 0);
}

#[test]
fn a_daemon_in_tilt_shares_no_down_votes_and_fails_nothing_over() {
    let mut b = Bench::new(1);
    b.step(Input::State(state(vec![addr(2)], None)));
    b.checks_until(500 * MS, healthy);
    b.step(Input::Late {
        what: "the monitor loop",
        late: 3000 * MS,
    });
    assert!(b.core.in_tilt());
    // Down by the window from 1.5 s; the tilt lasts until 0.5 + 1.1 s.
    b.checks_until(1550 * MS, dead);
    assert_eq!(failovers(&b), 0, "failed over in tilt");
    let shared_down = b
        .outputs
        .iter()
        .any(|o| matches!(o, Output::ShareView(v) if !v.down.is_empty()));
    assert!(!shared_down, "a tilted daemon shared a down vote");
    // On time for the recovery (window + interval): the master is failed over.
    b.checks_until(4000 * MS, dead);
    assert!(!b.core.in_tilt());
    assert_eq!(failovers(&b), 1);
}

#[test]
fn a_new_leader_finishes_a_failover_an_earlier_one_began() {
    let mut b = Bench::new(3);
    let mut begun = (*state(vec![addr(2), addr(3)], None)).clone();
    begun
        .apply(Action::FailoverBegin {
            group: "g".into(),
            old_master: addr(1),
            new_master: addr(3),
            replicas: vec![addr(2), addr(3)],
            started_at_ms: 42,
            passed_over: Vec::new(),
        })
        .unwrap();
    b.step(Input::State(Arc::new(begun)));
    let jobs = b.jobs();
    let Some(WorkerJob::Failover(request)) = jobs.first() else {
        panic!("the unfinished failover was not taken up");
    };
    let resume = request.resume.as_ref().expect("a resume");
    assert_eq!(
        (resume.new_master.clone(), resume.started_at_ms),
        (addr(3), 42)
    );
}

/// The state with every group paused (or not), and the group's last automatic failover
/// at `failed_over_at_ms`.
fn held_state(paused: bool, failed_over_at_ms: Option<u64>) -> Arc<ReplicatedState> {
    let mut state = (*state(vec![addr(2)], None)).clone();
    if paused {
        let pause = Pause {
            since_ms: 0,
            until_ms: None,
        };
        state.apply(Action::Pause { group: None, pause }).unwrap();
    }
    state.groups.get_mut("g").unwrap().failed_over_at_ms = failed_over_at_ms;
    Arc::new(state)
}

/// The reasons of the held-back attempts proposed so far.
fn held_back(bench: &Bench) -> Vec<String> {
    bench
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Propose(Action::FailoverEnd(r)) if r.kind == AttemptKind::HeldBack => {
                r.reason.clone()
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_paused_group_is_held_back_and_recorded_then_failed_over_once_resumed() {
    let mut b = Bench::new(1);
    b.step(Input::State(held_state(true, None)));
    b.checks_until(500 * MS, healthy);
    b.checks_until(5000 * MS, dead);
    assert_eq!(failovers(&b), 0, "failed over while paused");
    let held = held_back(&b);
    assert!(
        !held.is_empty() && held.iter().all(|r| r.contains("every group is paused")),
        "held-back attempts recorded: {held:?}"
    );
    // Resumed: within one more window the master is failed over.
    b.step(Input::State(held_state(false, None)));
    b.checks_until(6500 * MS, dead);
    assert_eq!(failovers(&b), 1, "not failed over after the resume");
}

#[test]
fn a_second_automatic_failover_within_the_block_waits_for_an_acknowledgement() {
    let mut b = Bench::with_block(1, Duration::from_secs(3600));
    // The group was failed over automatically a minute before the bench's start.
    let wall_start_ms = 1_800_000_000_000;
    b.step(Input::State(held_state(
        false,
        Some(wall_start_ms - 60_000),
    )));
    b.checks_until(500 * MS, healthy);
    b.checks_until(4000 * MS, dead);
    assert_eq!(failovers(&b), 0, "failed over within the block");
    let held = held_back(&b);
    assert!(
        held.iter().any(|r| r.contains("/api/v1/groups/g/ack")),
        "{held:?}"
    );
    let mut acked = (*held_state(false, Some(wall_start_ms - 60_000))).clone();
    acked
        .apply(Action::Acknowledge {
            group: "g".into(),
            at_ms: wall_start_ms,
        })
        .unwrap();
    b.step(Input::State(Arc::new(acked)));
    b.checks_until(5500 * MS, dead);
    assert_eq!(
        failovers(&b),
        1,
        "not failed over after the acknowledgement"
    );
}

#[test]
fn a_manual_failover_needs_a_master_that_does_not_answer_and_ignores_a_pause() {
    let mut b = Bench::new(1);
    b.step(Input::State(held_state(true, None)));
    b.checks_until(500 * MS, healthy);
    let (reply, answer) = crossbeam_channel::bounded(1);
    let group = "g".to_string();
    b.step(Input::ManualFailover(ManualFailoverCommand {
        group: group.clone(),
        reply: reply.clone(),
    }));
    match answer.try_recv() {
        Ok(Err(SwitchoverError::Conflict(why))) => assert!(why.contains("switchover"), "{why}"),
        other => panic!("a live master: {other:?}"),
    }
    b.checks_until(700 * MS, dead);
    b.step(Input::ManualFailover(ManualFailoverCommand {
        group,
        reply,
    }));
    assert_eq!(answer.try_recv().ok(), Some(Ok(addr(1).to_string())));
    let jobs = b.jobs();
    let Some(WorkerJob::Failover(request)) = jobs.first() else {
        panic!("no failover job");
    };
    assert!(request.manual, "the job is not marked manual");
}

#[test]
fn one_daemon_counts_once_however_many_views_carry_its_name() {
    // Five members: three must find the master down. One peer's view, four times over,
    // is one vote: with this daemon's, two.
    let mut b = Bench::new(5);
    b.step(Input::State(state(vec![addr(2)], None)));
    b.checks_until(500 * MS, healthy);
    let down = MastersView {
        daemon: "d1".into(),
        seq: 1,
        down: vec![
            DownMaster {
                group: "g".into(),
                master: addr(1),
            };
            2
        ],
    };
    b.cluster.views = vec![down; 4];
    b.checks_until(3500 * MS, dead);
    assert_eq!(failovers(&b), 0, "one peer counted as several");
}
