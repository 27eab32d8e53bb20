//! One simulated run: the cluster drawn from the seed, the event loop, the driver of
//! each daemon's core and worker, and the trace of what happened.

use super::calls::{describe_job, refused, timed_out};
use super::cluster::Coordinator;
use super::coord::Coord;
use super::daemon::{Answer, Belief, WorkerLink};
use super::faults::{self, Fault, Shape};
use super::invariants::Invariants;
use super::raft::RaftCluster;
use super::rng::Rng;
use super::scenario::{Expect, Script, Trigger};
use super::topology::{Topology, addr};
use super::world::{Ms, Net, Node, Server, SimRole, World};
use super::writes::{Clients, Loss};
use redis_failover::Addr;
use redis_failover::broker::{Action, GroupSpec, ReplicatedState};
use redis_failover::config::MinReplicas;
use redis_failover::error::Error;
use redis_failover::monitor::core::probe::{
    Answer as ProbeAnswer, CheckerReport, LinkClosed, Probe, ProbeKind, ProbeResult,
};
use redis_failover::monitor::core::{CoreSettings, Input, MonitorCore, Now, Output, Sinks};
use redis_failover::worker::{WorkerContext, WorkerJob};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Timing of a run (simulated milliseconds).
#[derive(Debug, Clone)]
pub struct Settings {
    pub check_interval: Ms,
    pub max_down_time: Ms,
    /// A check's whole deadline.
    pub check_timeout: Ms,
    /// A worker's command's deadline.
    pub worker_timeout: Ms,
    pub session_timeout: Ms,
    pub lease: Ms,
    /// Faults happen before this; then every partition heals, every daemon runs.
    pub heal_at: Ms,
    pub end_at: Ms,
    /// Bounded write loss on (the daemons set it on every master; clients stay with
    /// their master until a write fails: see `writes.rs`).
    pub bounded_loss: Option<MinReplicas>,
    /// Clients stay with their master until a write fails (always, with bounded loss).
    pub sticky_clients: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            check_interval: 200,
            max_down_time: 1_000,
            check_timeout: 200,
            worker_timeout: 500,
            session_timeout: 1_500,
            lease: 1_000,
            heal_at: 30_000,
            end_at: 60_000,
            bounded_loss: None,
            sticky_clients: false,
        }
    }
}

/// How a run ended.
pub struct Outcome {
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    pub failovers: usize,
    pub writes: Loss,
}

/// The proposal deadline of the real brokers.
pub(super) const PROPOSAL_TIMEOUT: Ms = 5_000;
const HEARTBEAT: Ms = 100;
/// A master that answers again is fenced within this (a check, the fence's `ROLE`, the
/// worker's `SLAVEOF`, with room for a leader change).
pub(super) const FENCE_SETTLE: Ms = 5_000;
const REPLICATION_STEP: Ms = 100;
const CLIENT_WRITE: Ms = 100;

pub(super) enum Ev {
    Tick(usize, u64),
    Heartbeat(usize, u64),
    Probe(usize, u64, ProbeResult),
    Closed(usize, u64, LinkClosed),
    Worker(usize, u64, Answer),
    /// A worker's proposal not applied yet (see `calls.rs`).
    ProposalDue(usize, u64, Box<super::calls::Pending>),
    StallEnds(usize, u64, Ms),
    RestartDaemon(usize),
    Replicate,
    ClientWrite,
    Fault(Fault),
    PartitionEnds(u64),
    Heal,
    /// A frozen server runs again (the health the invariants track changes).
    Thaw,
    /// A scenario's expectation is due.
    Expect(usize),
}

pub(super) struct SimDaemon {
    pub(super) up: bool,
    pub(super) incarnation: u64,
    pub(super) core: MonitorCore,
    pub(super) belief: Arc<Mutex<Belief>>,
    pub(super) worker: WorkerLink,
    pub(super) busy: Option<u64>,
    pub(super) queue: VecDeque<WorkerJob>,
    pub(super) stalled_until: Ms,
    pub(super) wall_offset: Arc<AtomicU64>,
    pub(super) next_tick: Ms,
    /// Kept connections: (watch id, server).
    pub(super) conns: BTreeSet<(u64, usize)>,
}

/// The whole simulated world of one run.
pub struct Sim {
    pub(super) settings: Settings,
    pub(super) rng: Rng,
    pub(super) now: Ms,
    pub(super) seq: u64,
    pub(super) events: BTreeMap<(Ms, u64), Ev>,
    pub(super) world: World,
    pub(super) net: Net,
    pub(super) partitions: BTreeMap<u64, Vec<(Node, Node)>>,
    pub(super) coord: Coord,
    pub(super) daemons: Vec<SimDaemon>,
    pub(super) groups: Vec<String>,
    pub(super) epoch: Instant,
    pub(super) wall_epoch: SystemTime,
    pub(super) time: Arc<AtomicU64>,
    pub(super) jobs: u64,
    pub(super) inv: Invariants,
    pub(super) trace: Vec<String>,
    pub(super) restart_servers_at_heal: bool,
    /// A scenario's expectations and moment-triggered faults.
    pub(super) expectations: Vec<(Ms, Expect)>,
    pub(super) triggers: Vec<Trigger>,
    /// The cluster's members (every daemon).
    pub(super) members: usize,
    pub(super) clients: Clients,
}

/// Runs one seed to its end.
pub fn run_seed(seed: u64, settings: &Settings) -> Outcome {
    let mut sim = Sim::new(seed, settings.clone());
    sim.run();
    finish(sim)
}

/// What a run that has ended leaves.
fn finish(mut sim: Sim) -> Outcome {
    sim.inv.violations.extend(sim.coord.problems());
    let failovers = sim
        .coord
        .state()
        .history
        .iter()
        .filter(|r| r.outcome == redis_failover::Outcome::Succeeded)
        .count();
    let writes = sim.judge_writes();
    sim.stop_workers();
    Outcome {
        violations: sim.inv.violations.clone(),
        trace: std::mem::take(&mut sim.trace),
        failovers,
        writes,
    }
}

/// Runs a scenario (see `scenario.rs`) to its end.
pub fn run_script(script: Script, settings: &Settings) -> Outcome {
    let settings = Settings {
        heal_at: script.end_at + 1,
        end_at: script.end_at,
        bounded_loss: script.bounded_loss,
        sticky_clients: script.sticky_clients,
        ..settings.clone()
    };
    let mut sim = Sim::build(
        Rng::new(0),
        settings,
        script.topology,
        script.plan,
        (false, script.raft),
        "scenario",
    );
    for (i, (at, _)) in script.expectations.iter().enumerate() {
        sim.at(*at, Ev::Expect(i));
    }
    sim.expectations = script.expectations;
    sim.triggers = script.triggers;
    sim.run();
    let mut outcome = finish(sim);
    let longest = outcome.writes.longest_ms;
    for (within, bound) in script.loss {
        if within != (longest <= bound) {
            let want = if within { "within" } else { "over" };
            outcome.violations.push(format!(
                "the longest loss was {longest} ms ({} writes lost), expected {want} {bound} ms",
                outcome.writes.lost
            ));
        }
    }
    outcome
}

impl Sim {
    pub(super) fn new(seed: u64, settings: Settings) -> Sim {
        let mut rng = Rng::new(seed);
        let topology = Topology::draw(&mut rng);
        let shape = Shape {
            daemons: topology.daemons,
            groups: topology.groups.len(),
            servers: topology.groups.iter().map(Vec::len).sum(),
        };
        let plan = faults::plan(&mut rng, &shape, settings.heal_at - 1_000);
        let restart_servers_at_heal = rng.chance(50);
        // Not drawn from `rng`: the even seeds keep every draw they had before.
        let raft = seed % 2 == 1;
        let label = format!("seed {seed}");
        // Also not drawn: one seed in five bounds the write loss (2 s of lag).
        let settings = Settings {
            bounded_loss: (seed % 5 == 2).then_some(MinReplicas {
                to_write: 1,
                max_lag_secs: 2,
            }),
            ..settings
        };
        Sim::build(
            rng,
            settings,
            topology,
            plan,
            (restart_servers_at_heal, raft),
            &label,
        )
    }

    /// A run of the given cluster and faults; `options` are whether every server
    /// restarts at the heal and whether the cluster is Raft.
    pub(super) fn build(
        rng: Rng,
        settings: Settings,
        topology: Topology,
        plan: Vec<(Ms, Fault)>,
        options: (bool, bool),
        label: &str,
    ) -> Sim {
        let (restart_servers_at_heal, raft) = options;
        let daemons = topology.daemons;
        let groups = topology.groups.len();
        let mut world = World::default();
        let mut state = ReplicatedState::default();
        let mut names = Vec::new();
        for (g, servers) in topology.groups.into_iter().enumerate() {
            for (i, spec) in servers.into_iter().enumerate() {
                let role = if i == 0 {
                    SimRole::Master
                } else {
                    SimRole::Replica {
                        master: addr(g, 0),
                        link_up: true,
                        last_io: 0,
                        down_since: 0,
                    }
                };
                world.add(Server {
                    addr: addr(g, i),
                    group: g,
                    up: true,
                    role,
                    offset: 0,
                    priority: spec.priority,
                    refuses_promotion: spec.refuses_promotion,
                    run_id: spec.run_id,
                    frozen_until: 0,
                    paused_until: 0,
                    min_replicas: None,
                    data: Vec::new(),
                    last_ack: 0,
                    since: 0,
                });
            }
            let name = format!("g{g}");
            let spec = GroupSpec {
                name: name.clone(),
                master: addr(g, 0),
            };
            let _ = state.apply(Action::Add(vec![spec]));
            names.push(name);
        }
        let epoch = Instant::now();
        let coord = if raft {
            let seed = rng.peek();
            Coord::Raft(Box::new(RaftCluster::new(daemons, state, seed, epoch)))
        } else {
            Coord::Zk(Box::new(Coordinator::new(
                daemons,
                state,
                settings.session_timeout,
            )))
        };
        let sticky_clients = settings.bounded_loss.is_some() || settings.sticky_clients;
        let mut sim = Sim {
            inv: Invariants::new(&settings, daemons),
            settings,
            rng,
            now: 0,
            seq: 0,
            events: BTreeMap::new(),
            world,
            net: Net::default(),
            partitions: BTreeMap::new(),
            coord,
            daemons: Vec::new(),
            groups: names,
            epoch,
            wall_epoch: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            time: Arc::new(AtomicU64::new(0)),
            jobs: 0,
            trace: Vec::new(),
            restart_servers_at_heal,
            expectations: Vec::new(),
            triggers: Vec::new(),
            members: daemons,
            clients: Clients::new(groups, sticky_clients),
        };
        sim.log("sim", &format!(
            "{label}: {daemons} daemon(s) over {}, {groups} group(s), {} servers; faults: {plan:?}; at heal: {}",
            sim.coord.name(),
            sim.world.servers.len(),
            if restart_servers_at_heal { "restart every server" } else { "servers stay as they are" }
        ));
        for s in &sim.world.servers {
            if s.priority == 0 || s.refuses_promotion {
                let what = format!(
                    "{} priority {} refuses promotion: {}",
                    s.addr, s.priority, s.refuses_promotion
                );
                sim.trace.push(format!("{:>6} sim: {what}", 0));
            }
        }
        for d in 0..daemons {
            let daemon = sim.new_daemon(d, 0);
            sim.daemons.push(daemon);
            sim.at(0, Ev::Heartbeat(d, 0));
            sim.at(0, Ev::Tick(d, 0));
        }
        for (at, fault) in plan {
            sim.at(at, Ev::Fault(fault));
        }
        sim.at(0, Ev::Replicate);
        sim.at(0, Ev::ClientWrite);
        let heal_at = sim.settings.heal_at;
        sim.at(heal_at, Ev::Heal);
        sim
    }

    pub(super) fn new_daemon(&self, d: usize, incarnation: u64) -> SimDaemon {
        let s = &self.settings;
        let sinks = Sinks {
            observed: Default::default(),
            metrics: Default::default(),
            events: Default::default(),
        };
        let settings = CoreSettings {
            check_interval: Duration::from_millis(s.check_interval),
            max_down_time: Duration::from_millis(s.max_down_time),
            quorum: 0,
            min_replicas: s.bounded_loss,
            daemon: format!("d{d}"),
            failover_block: Duration::ZERO,
        };
        let wall_offset = Arc::new(AtomicU64::new(0));
        let core = MonitorCore::new(settings, sinks.clone(), self.now_at(self.now, 0));
        let belief = Arc::new(Mutex::new(Belief {
            id: d,
            members: self.members,
            leader: false,
            acting_until: 0,
            version: 0,
            state: ReplicatedState::default(),
            views: Vec::new(),
            now: self.now,
        }));
        let max_down_time = Duration::from_millis(s.max_down_time);
        let fresh_io = Duration::from_millis(s.check_interval).max(Duration::from_secs(1));
        let worker_sinks = sinks.clone();
        let worker = WorkerLink::start(
            move |bridge| WorkerContext {
                broker: Arc::new(bridge.clone()),
                hooks: Default::default(),
                observed: worker_sinks.observed,
                metrics: worker_sinks.metrics,
                events: worker_sinks.events,
                node_options: Default::default(),
                max_down_time,
                fresh_io,
                servers: Arc::new(bridge.clone()),
                clock: Arc::new(bridge),
            },
            belief.clone(),
            self.time.clone(),
            (self.epoch, self.wall_epoch),
            wall_offset.clone(),
        );
        SimDaemon {
            up: true,
            incarnation,
            core,
            belief,
            worker,
            busy: None,
            queue: VecDeque::new(),
            stalled_until: 0,
            wall_offset,
            next_tick: 0,
            conns: BTreeSet::new(),
        }
    }

    pub(super) fn now_at(&self, ms: Ms, wall_offset: u64) -> Now {
        Now {
            mono: self.epoch + Duration::from_millis(ms),
            wall: self.wall_epoch + Duration::from_millis(ms + wall_offset),
        }
    }

    pub(super) fn ms_of(&self, at: Instant) -> Ms {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        nanos.div_ceil(1_000_000) as Ms
    }

    pub(super) fn at(&mut self, t: Ms, ev: Ev) {
        self.seq += 1;
        self.events.insert((t, self.seq), ev);
    }

    pub(super) fn log(&mut self, who: &str, what: &str) {
        self.trace.push(format!("{:>6} {who}: {what}", self.now));
    }

    pub(super) fn run(&mut self) {
        while let Some(((t, _), ev)) = self.events.pop_first() {
            if t > self.settings.end_at {
                break;
            }
            self.now = t;
            self.time.store(t, Ordering::SeqCst);
            self.handle(ev);
        }
        self.now = self.settings.end_at;
        let end = self.end_report();
        self.inv.at_end(&end);
    }

    pub(super) fn stop_workers(&mut self) {
        for daemon in &mut self.daemons {
            let (jobs, _) = crossbeam_channel::unbounded();
            daemon.worker.jobs = jobs;
            let (answers, _) = crossbeam_channel::unbounded();
            daemon.worker.answers = answers;
            let (_, calls) = crossbeam_channel::unbounded();
            daemon.worker.calls = calls;
            if let Some(thread) = daemon.worker.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// Defers an event of a stalled daemon to the end of its stall; false when the
    /// event is for an earlier incarnation or a stopped daemon.
    pub(super) fn runs(&mut self, d: usize, incarnation: u64) -> bool {
        let daemon = &self.daemons[d];
        daemon.up && daemon.incarnation == incarnation
    }

    pub(super) fn stalled(&self, d: usize) -> Option<Ms> {
        let until = self.daemons[d].stalled_until;
        (until > self.now).then_some(until)
    }

    pub(super) fn handle(&mut self, ev: Ev) {
        // A stalled daemon does nothing until its stall ends.
        let daemon_of = match &ev {
            Ev::Tick(d, i)
            | Ev::Heartbeat(d, i)
            | Ev::Probe(d, i, _)
            | Ev::Closed(d, i, _)
            | Ev::Worker(d, i, _)
            | Ev::ProposalDue(d, i, _) => Some((*d, *i)),
            _ => None,
        };
        if let Some((d, i)) = daemon_of {
            if !self.runs(d, i) {
                return;
            }
            if let Some(until) = self.stalled(d) {
                return self.at(until, ev);
            }
        }
        match ev {
            Ev::Tick(d, _) => {
                self.daemons[d].next_tick = Ms::MAX;
                self.step(d, Input::Tick);
            }
            Ev::Heartbeat(d, i) => {
                self.heartbeat(d);
                self.at(self.now + HEARTBEAT, Ev::Heartbeat(d, i));
            }
            Ev::Probe(d, _, result) => {
                let report = CheckerReport {
                    results: vec![result],
                    ..CheckerReport::default()
                };
                self.step(d, Input::Checked(report));
            }
            Ev::Closed(d, _, closed) => {
                let report = CheckerReport {
                    closed: vec![closed],
                    ..CheckerReport::default()
                };
                self.step(d, Input::Checked(report));
            }
            Ev::Worker(d, _, answer) => {
                let next = self.daemons[d].worker.answer(answer);
                self.on_call(d, next);
            }
            Ev::ProposalDue(d, _, pending) => self.proposal_due(d, *pending),
            Ev::StallEnds(d, i, lasted) => {
                if self.runs(d, i) {
                    self.log(
                        &format!("d{d}"),
                        &format!("runs again after a stall of {lasted} ms"),
                    );
                    self.step(
                        d,
                        Input::Late {
                            what: "the monitor loop",
                            late: Duration::from_millis(lasted),
                        },
                    );
                }
            }
            Ev::RestartDaemon(d) => self.restart_daemon(d),
            Ev::Replicate => {
                self.world.replicate(&self.net, self.now);
                self.at(self.now + REPLICATION_STEP, Ev::Replicate);
            }
            Ev::ClientWrite => {
                self.client_writes();
                if self.now > self.settings.heal_at {
                    let stuck = self.stuck();
                    self.inv.liveness(self.now, &stuck);
                }
                self.at(self.now + CLIENT_WRITE, Ev::ClientWrite);
            }
            Ev::Fault(fault) => {
                self.inv.observe(&self.health());
                self.apply_fault(fault);
                self.inv.observe(&self.health());
            }
            Ev::PartitionEnds(id) => {
                self.inv.observe(&self.health());
                self.partitions.remove(&id);
                self.rebuild_net();
                self.log("net", &format!("partition {id} heals"));
                self.inv.observe(&self.health());
            }
            Ev::Heal => self.heal(),
            Ev::Thaw => self.inv.observe(&self.health()),
            Ev::Expect(i) => {
                if let Some((_, expect)) = self.expectations.get(i).cloned() {
                    self.check(&expect);
                }
            }
        }
    }

    /// The server the replicated state names master of group `g`.
    pub(super) fn state_master(&self, g: usize) -> Option<usize> {
        let group = self.coord.state().groups.get(&self.groups[g])?;
        self.world.index(&group.master)
    }

    /// One input to daemon `d`'s core, then what the core asked for.
    pub(super) fn step(&mut self, d: usize, input: Input) {
        let now = self.now_at(self.now, self.daemons[d].wall_offset.load(Ordering::SeqCst));
        let belief = {
            let mut b = lock(&self.daemons[d].belief);
            b.now = self.now;
            b.clone()
        };
        let daemon = &mut self.daemons[d];
        daemon.core.step(now, &belief, input);
        let outputs = daemon.core.take_outputs();
        for output in outputs {
            self.on_output(d, output);
        }
        let wake = self.ms_of(self.daemons[d].core.next_wake()).max(self.now);
        if wake < self.daemons[d].next_tick {
            self.daemons[d].next_tick = wake;
            let i = self.daemons[d].incarnation;
            self.at(wake, Ev::Tick(d, i));
        }
    }

    pub(super) fn on_output(&mut self, d: usize, output: Output) {
        match output {
            Output::Probes(probes) => {
                for probe in probes {
                    self.probe(d, probe);
                }
            }
            Output::Forget(watch_id) => self.daemons[d].conns.retain(|(w, _)| *w != watch_id),
            Output::Job(job) => {
                self.log(&format!("d{d}"), &format!("job: {}", describe_job(&job)));
                self.daemons[d].queue.push_back(job);
                self.next_job(d);
            }
            Output::Propose(action) => {
                if let Action::FailoverEnd(_) = &action {
                    let what = super::calls::describe_action(&action);
                    self.log(&format!("d{d}"), &format!("proposes {what}"));
                }
                let running = self.running();
                let done = self
                    .coord
                    .propose(d, &self.net, self.now, action, &running, false);
                if done.is_ok() {
                    self.refresh_belief(d);
                }
            }
            Output::ShareView(view) => {
                let running = self.running();
                self.coord
                    .share_view(d, &self.net, self.now, view, &running);
            }
        }
    }

    pub(super) fn probe(&mut self, d: usize, probe: Probe) {
        let i = self.daemons[d].incarnation;
        let started = self.now_at(self.now, 0).mono;
        let (answer, took) = match self.reach(d, &probe.addr) {
            Reach::Up(s) => {
                self.daemons[d].conns.insert((probe.watch_id, s));
                let answer = match probe.kind {
                    ProbeKind::Master | ProbeKind::Role => {
                        if probe.kind == ProbeKind::Master {
                            // The beacon: a write the master replicates.
                            self.world.write(s, 10, self.now);
                        }
                        ProbeAnswer::Role(self.world.role(s, &self.net))
                    }
                    ProbeKind::Info => ProbeAnswer::Info(self.world.info(s, &self.net, self.now)),
                };
                (Ok(answer), 1)
            }
            Reach::Refused => (Err(refused(&probe.addr)), 1),
            Reach::Silent => (Err(timed_out(&probe.addr)), self.settings.check_timeout),
        };
        let finished = started + Duration::from_millis(took);
        let result = ProbeResult {
            probe,
            started,
            finished,
            answer,
        };
        self.at(self.now + took, Ev::Probe(d, i, result));
    }
}

pub(super) enum Reach {
    Up(usize),
    Refused,
    Silent,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
