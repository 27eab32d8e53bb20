//! One simulated run: the cluster drawn from the seed, the event loop, the driver of
//! each daemon's core and worker, and the trace of what happened.

use super::cluster::Coordinator;
use super::daemon::{Answer, Belief, Call, WorkerLink};
use super::faults::{self, Fault, Shape};
use super::invariants::Invariants;
use super::rng::Rng;
use super::world::{Ms, Net, Node, Server, SimRole, World};
use redis_failover::Addr;
use redis_failover::broker::{Action, GroupSpec, ReplicatedState};
use redis_failover::error::Error;
use redis_failover::monitor::core::probe::{
    Answer as ProbeAnswer, CheckerReport, LinkClosed, Probe, ProbeKind, ProbeResult,
};
use redis_failover::monitor::core::{CoreSettings, Input, MonitorCore, Now, Output, Sinks};
use redis_failover::redis::ReplicaReport;
use redis_failover::worker::servers::PromoteReply;
use redis_failover::worker::{WorkerContext, WorkerJob, WorkerReport};
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
        }
    }
}

/// How a run ended.
pub struct Outcome {
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    pub failovers: usize,
}

/// The proposal deadline of the real brokers.
const PROPOSAL_TIMEOUT: Ms = 5_000;
const HEARTBEAT: Ms = 100;
/// A master that answers again is fenced within this (a check, the fence's `ROLE`, the
/// worker's `SLAVEOF`, with room for a leader change).
const FENCE_SETTLE: Ms = 5_000;
const REPLICATION_STEP: Ms = 100;
const CLIENT_WRITE: Ms = 100;

enum Ev {
    Tick(usize, u64),
    Heartbeat(usize, u64),
    Probe(usize, u64, ProbeResult),
    Closed(usize, u64, LinkClosed),
    Worker(usize, u64, Answer),
    StallEnds(usize, u64, Ms),
    RestartDaemon(usize),
    Replicate,
    ClientWrite,
    Fault(Fault),
    PartitionEnds(u64),
    Heal,
    /// A frozen server runs again (the health the invariants track changes).
    Thaw,
}

struct SimDaemon {
    up: bool,
    incarnation: u64,
    core: MonitorCore,
    belief: Arc<Mutex<Belief>>,
    worker: WorkerLink,
    busy: Option<u64>,
    queue: VecDeque<WorkerJob>,
    stalled_until: Ms,
    wall_offset: Arc<AtomicU64>,
    next_tick: Ms,
    /// Kept connections: (watch id, server).
    conns: BTreeSet<(u64, usize)>,
}

/// The whole simulated world of one run.
pub struct Sim {
    settings: Settings,
    rng: Rng,
    now: Ms,
    seq: u64,
    events: BTreeMap<(Ms, u64), Ev>,
    world: World,
    net: Net,
    partitions: BTreeMap<u64, Vec<(Node, Node)>>,
    coord: Coordinator,
    daemons: Vec<SimDaemon>,
    groups: Vec<String>,
    epoch: Instant,
    wall_epoch: SystemTime,
    time: Arc<AtomicU64>,
    jobs: u64,
    inv: Invariants,
    trace: Vec<String>,
    restart_servers_at_heal: bool,
    /// The cluster's members (every daemon).
    members: usize,
}

/// Runs one seed to its end.
pub fn run_seed(seed: u64, settings: &Settings) -> Outcome {
    let mut sim = Sim::new(seed, settings.clone());
    sim.run();
    let failovers = sim
        .coord
        .state
        .history
        .iter()
        .filter(|r| r.outcome == redis_failover::Outcome::Succeeded)
        .count();
    sim.stop_workers();
    Outcome {
        violations: sim.inv.violations.clone(),
        trace: std::mem::take(&mut sim.trace),
        failovers,
    }
}

fn addr(group: usize, index: usize) -> Addr {
    Addr {
        host: format!("10.0.{group}.{}", index + 1),
        port: 6379,
    }
}

impl Sim {
    fn new(seed: u64, settings: Settings) -> Sim {
        let mut rng = Rng::new(seed);
        let daemons = [1, 2, 3, 3, 3, 5][rng.pick(6)];
        let groups = rng.range(1, 2) as usize;
        let mut world = World::default();
        let mut state = ReplicatedState::default();
        let mut names = Vec::new();
        for g in 0..groups {
            let replicas = rng.range(1, 3) as usize;
            for i in 0..=replicas {
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
                    priority: if i > 0 && rng.chance(15) { 0 } else { 100 },
                    refuses_promotion: i > 0 && rng.chance(20),
                    run_id: format!("{:040x}", rng.next_u64()),
                    frozen_until: 0,
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
        let shape = Shape {
            daemons,
            groups,
            servers: world.servers.len(),
        };
        let plan = faults::plan(&mut rng, &shape, settings.heal_at - 1_000);
        let restart_servers_at_heal = rng.chance(50);
        let coord = Coordinator::new(daemons, state, settings.session_timeout);
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
            epoch: Instant::now(),
            wall_epoch: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            time: Arc::new(AtomicU64::new(0)),
            jobs: 0,
            trace: Vec::new(),
            restart_servers_at_heal,
            members: daemons,
        };
        sim.log("sim", &format!(
            "seed {seed}: {daemons} daemon(s), {groups} group(s), {} servers; faults: {plan:?}; at heal: {}",
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

    fn new_daemon(&self, d: usize, incarnation: u64) -> SimDaemon {
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
            min_replicas: None,
            daemon: format!("d{d}"),
        };
        let wall_offset = Arc::new(AtomicU64::new(0));
        let core = MonitorCore::new(settings, sinks.clone(), self.now_at(self.now, 0));
        let belief = Arc::new(Mutex::new(Belief {
            id: d,
            members: self.members,
            leader: false,
            last_contact: 0,
            lease: s.lease,
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

    fn now_at(&self, ms: Ms, wall_offset: u64) -> Now {
        Now {
            mono: self.epoch + Duration::from_millis(ms),
            wall: self.wall_epoch + Duration::from_millis(ms + wall_offset),
        }
    }

    fn ms_of(&self, at: Instant) -> Ms {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        nanos.div_ceil(1_000_000) as Ms
    }

    fn at(&mut self, t: Ms, ev: Ev) {
        self.seq += 1;
        self.events.insert((t, self.seq), ev);
    }

    fn log(&mut self, who: &str, what: &str) {
        self.trace.push(format!("{:>6} {who}: {what}", self.now));
    }

    fn run(&mut self) {
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

    fn stop_workers(&mut self) {
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
    fn runs(&mut self, d: usize, incarnation: u64) -> bool {
        let daemon = &self.daemons[d];
        daemon.up && daemon.incarnation == incarnation
    }

    fn stalled(&self, d: usize) -> Option<Ms> {
        let until = self.daemons[d].stalled_until;
        (until > self.now).then_some(until)
    }

    fn handle(&mut self, ev: Ev) {
        // A stalled daemon does nothing until its stall ends.
        let daemon_of = match &ev {
            Ev::Tick(d, i)
            | Ev::Heartbeat(d, i)
            | Ev::Probe(d, i, _)
            | Ev::Closed(d, i, _)
            | Ev::Worker(d, i, _) => Some((*d, *i)),
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
                for g in 0..self.groups.len() {
                    if let Some(m) = self.state_master(g) {
                        self.world.write(m, 100);
                    }
                }
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
        }
    }

    /// The server the replicated state names master of group `g`.
    fn state_master(&self, g: usize) -> Option<usize> {
        let group = self.coord.state.groups.get(&self.groups[g])?;
        self.world.index(&group.master)
    }

    /// One input to daemon `d`'s core, then what the core asked for.
    fn step(&mut self, d: usize, input: Input) {
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

    fn on_output(&mut self, d: usize, output: Output) {
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
                let done = self.coord.propose(d, &self.net, self.now, action);
                if done.is_ok() {
                    self.refresh_belief(d);
                }
            }
            Output::ShareView(view) => self.coord.share_view(d, &self.net, self.now, view),
        }
    }

    /// Starts the next queued job when the worker is idle.
    fn next_job(&mut self, d: usize) {
        if self.daemons[d].busy.is_some() {
            return;
        }
        let Some(job) = self.daemons[d].queue.pop_front() else {
            return;
        };
        self.jobs += 1;
        self.daemons[d].busy = Some(self.jobs);
        let call = self.daemons[d].worker.start_job(job);
        self.on_call(d, call);
    }

    /// The worker's next call: carried out, its answer due when it completes.
    fn on_call(&mut self, d: usize, call: Option<Call>) {
        let Some(call) = call else {
            self.daemons[d].busy = None;
            return;
        };
        let who = format!("d{d}");
        let job = self.daemons[d].busy.unwrap_or(0);
        let timeout = self.settings.worker_timeout;
        let (answer, took) = match call {
            Call::Done(report) => {
                self.daemons[d].busy = None;
                let attempted = matches!(report, WorkerReport::Attempted { .. });
                if let WorkerReport::Attempted { group, outcome, .. } = &report {
                    self.log(&who, &format!("attempt on {group} ended: {outcome:?}"));
                }
                self.step(d, Input::Worker(report));
                if attempted {
                    let state = lock(&self.daemons[d].belief).state.clone();
                    self.step(d, Input::State(state));
                }
                return self.next_job(d);
            }
            Call::Sleep(how_long) => (Answer::Done(Ok(())), how_long.as_millis() as Ms),
            Call::Infos(addrs) => {
                let mut took = 1;
                let reports = addrs
                    .iter()
                    .map(|a| {
                        let info = match self.reach(d, a) {
                            Reach::Up(s) => Ok(self.world.info(s, &self.net, self.now)),
                            Reach::Refused => Err(refused(a)),
                            Reach::Silent => {
                                took = timeout;
                                Err(timed_out(a))
                            }
                        };
                        ReplicaReport {
                            addr: a.clone(),
                            info,
                        }
                    })
                    .collect();
                (Answer::Infos(reports), took)
            }
            Call::Role(a) => match self.reach(d, &a) {
                Reach::Up(s) => (Answer::Role(Ok(self.world.role(s, &self.net))), 1),
                Reach::Refused => (Answer::Role(Err(refused(&a))), 1),
                Reach::Silent => (Answer::Role(Err(timed_out(&a))), timeout),
            },
            Call::Promote(a) => match self.reach(d, &a) {
                Reach::Up(s) => {
                    let group = self.world.servers[s].group;
                    self.inv
                        .on_command(group, d, job, self.now, &format!("SLAVEOF NO ONE on {a}"));
                    let master = self
                        .state_master(group)
                        .filter(|&m| self.world.servers[m].role == SimRole::Master);
                    let reply = self.world.promote(s);
                    self.log(&who, &format!("SLAVEOF NO ONE on {a}: {reply:?}"));
                    if reply.is_ok() {
                        let health = self.health();
                        self.inv.on_promotion(group, master, s, &health);
                    }
                    let reply = match reply {
                        Ok(()) => PromoteReply::Accepted,
                        Err(text) => PromoteReply::Refused(text),
                    };
                    (Answer::Promote(reply), 1)
                }
                Reach::Refused => (Answer::Promote(PromoteReply::NoReply(refused(&a))), 1),
                Reach::Silent => (
                    Answer::Promote(PromoteReply::NoReply(timed_out(&a))),
                    timeout,
                ),
            },
            Call::Repoint(addrs, to) => {
                let mut took = 1;
                let mut failures = Vec::new();
                for a in &addrs {
                    match self.reach(d, a) {
                        Reach::Up(s) => {
                            let group = self.world.servers[s].group;
                            self.inv.on_command(
                                group,
                                d,
                                job,
                                self.now,
                                &format!("SLAVEOF {to} on {a}"),
                            );
                            self.world.follow(s, &to, self.now);
                        }
                        Reach::Refused => failures.push(refused(a).to_string()),
                        Reach::Silent => {
                            took = timeout;
                            failures.push(timed_out(a).to_string());
                        }
                    }
                }
                self.log(
                    &who,
                    &format!(
                        "re-point {} to {to}: {} failed",
                        list(&addrs),
                        failures.len()
                    ),
                );
                (Answer::Failures(failures), took)
            }
            Call::FollowAfresh(a, master) => match self.reach(d, &a) {
                Reach::Up(s) => {
                    let group = self.world.servers[s].group;
                    self.inv
                        .on_command(group, d, job, self.now, &format!("fence {a} to {master}"));
                    self.world.follow(s, &master, self.now);
                    self.log(&who, &format!("fenced {a}: now a replica of {master}"));
                    (Answer::Done(Ok(())), 1)
                }
                Reach::Refused => (Answer::Done(Err(refused(&a))), 1),
                Reach::Silent => (Answer::Done(Err(timed_out(&a))), timeout),
            },
            Call::Propose(action) => {
                let what = describe_action(&action);
                if let Action::FailoverEnd(record) = &action
                    && record.outcome == redis_failover::Outcome::Failed
                {
                    let g = self.groups.iter().position(|n| *n == record.group);
                    if let Some(g) = g {
                        let candidate = self.promotable(d, g, record.down_for_ms);
                        let reason = record.reason.clone().unwrap_or_default();
                        self.inv.on_failed(g, self.now, candidate, &reason);
                    }
                }
                match self.coord.propose(d, &self.net, self.now, action) {
                    Ok(()) => {
                        self.log(&who, &format!("recorded {what}"));
                        self.refresh_belief(d);
                        (Answer::Done(Ok(())), 2)
                    }
                    Err(e) => {
                        self.log(&who, &format!("cannot record {what}: {e}"));
                        let took = if self.net.connected(Node::Daemon(d), Node::Coordinator) {
                            2
                        } else {
                            PROPOSAL_TIMEOUT
                        };
                        (Answer::Done(Err(Error::Server(e))), took)
                    }
                }
            }
        };
        let i = self.daemons[d].incarnation;
        self.at(self.now + took, Ev::Worker(d, i, answer));
    }

    /// The daemon's belief after its own proposal was applied (the real brokers apply
    /// a committed change locally before `propose` returns).
    fn refresh_belief(&mut self, d: usize) {
        let mut b = lock(&self.daemons[d].belief);
        b.state = self.coord.state.clone();
        b.version = self.coord.version;
    }

    /// A replica of group `g`'s current master that daemon `d` can reach and that
    /// would accept promotion, if any.
    /// One whose link has been down for ten windows more than the master's outage
    /// (`down_for`) holds data too old (Sentinel's rule, `redis/election.rs`).
    fn promotable(&self, d: usize, g: usize, down_for: Ms) -> Option<String> {
        let master = &self.coord.state.groups.get(&self.groups[g])?.master;
        let stale_after = (down_for + 10 * self.settings.max_down_time) / 1000;
        self.world
            .servers
            .iter()
            .find(|s| {
                s.group == g
                    && s.priority > 0
                    && !s.refuses_promotion
                    && matches!(&s.role, SimRole::Replica { master: m, link_up, down_since, .. }
                        if m == master && (*link_up || (self.now - down_since) / 1000 <= stale_after))
                    && matches!(self.reach(d, &s.addr), Reach::Up(_))
            })
            .map(|s| s.addr.to_string())
    }

    fn reach(&self, d: usize, a: &Addr) -> Reach {
        let Some(s) = self.world.index(a) else {
            return Reach::Refused;
        };
        if !self.net.connected(Node::Daemon(d), Node::Server(s)) {
            Reach::Silent
        } else if !self.world.servers[s].up {
            Reach::Refused
        } else if !self.world.servers[s].answers(self.now) {
            Reach::Silent
        } else {
            Reach::Up(s)
        }
    }

    fn probe(&mut self, d: usize, probe: Probe) {
        let i = self.daemons[d].incarnation;
        let started = self.now_at(self.now, 0).mono;
        let (answer, took) = match self.reach(d, &probe.addr) {
            Reach::Up(s) => {
                self.daemons[d].conns.insert((probe.watch_id, s));
                let answer = match probe.kind {
                    ProbeKind::Master | ProbeKind::Role => {
                        if probe.kind == ProbeKind::Master {
                            // The beacon: a write the master replicates.
                            self.world.write(s, 10);
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

    fn heartbeat(&mut self, d: usize) {
        let known = lock(&self.daemons[d].belief).version;
        let Some(contact) = self.coord.contact(d, &self.net, self.now, known) else {
            return;
        };
        let (changed, state) = {
            let mut b = lock(&self.daemons[d].belief);
            let was_leader = b.leader;
            b.leader = contact.leader;
            b.last_contact = self.now;
            b.views = contact.views;
            let new_state = contact.state.is_some();
            if let Some((version, state)) = contact.state {
                b.version = version;
                b.state = state;
            }
            (new_state || was_leader != b.leader, b.state.clone())
        };
        if changed {
            if lock(&self.daemons[d].belief).leader {
                self.log(&format!("d{d}"), "leads");
            }
            self.step(d, Input::State(state));
        }
    }

    fn restart_daemon(&mut self, d: usize) {
        let incarnation = self.daemons[d].incarnation + 1;
        self.coord.daemon_restarted(d);
        let fresh = self.new_daemon(d, incarnation);
        let old = std::mem::replace(&mut self.daemons[d], fresh);
        drop(old);
        self.log(&format!("d{d}"), "starts again with nothing in memory");
        self.at(self.now, Ev::Heartbeat(d, incarnation));
        self.at(self.now, Ev::Tick(d, incarnation));
    }

    fn apply_fault(&mut self, fault: Fault) {
        self.log("fault", &format!("{fault:?}"));
        match fault {
            Fault::KillMaster(g) => {
                if let Some(m) = self.state_master(g) {
                    self.kill_server(m);
                }
            }
            Fault::KillServer(s) => self.kill_server(s),
            Fault::FreezeMaster { group, lasts } => {
                if let Some(m) = self.state_master(group) {
                    self.world.servers[m].frozen_until = self.now + lasts;
                    let until = self.now + lasts;
                    self.at(until, Ev::Thaw);
                }
            }
            Fault::RestartServer(s) => {
                self.world.servers[s].up = true;
            }
            Fault::IsolateMaster {
                group,
                from_replicas,
                lasts,
            } => {
                let Some(m) = self.state_master(group) else {
                    return;
                };
                let mut cuts = Vec::new();
                for d in 0..self.daemons.len() {
                    cuts.push((Node::Daemon(d), Node::Server(m)));
                    cuts.push((Node::Server(m), Node::Daemon(d)));
                }
                if from_replicas {
                    for s in 0..self.world.servers.len() {
                        if s != m {
                            cuts.push((Node::Server(m), Node::Server(s)));
                            cuts.push((Node::Server(s), Node::Server(m)));
                        }
                    }
                }
                self.partition(cuts, lasts);
            }
            Fault::IsolateDaemonFromServers { daemon, lasts } => {
                let cuts = (0..self.world.servers.len())
                    .flat_map(|s| {
                        [
                            (Node::Daemon(daemon), Node::Server(s)),
                            (Node::Server(s), Node::Daemon(daemon)),
                        ]
                    })
                    .collect();
                self.partition(cuts, lasts);
            }
            Fault::IsolateDaemon { daemon, lasts } => {
                let mut cuts = vec![
                    (Node::Daemon(daemon), Node::Coordinator),
                    (Node::Coordinator, Node::Daemon(daemon)),
                ];
                for other in 0..self.daemons.len() {
                    if other != daemon {
                        cuts.push((Node::Daemon(daemon), Node::Daemon(other)));
                    }
                }
                self.partition(cuts, lasts);
            }
            Fault::CutReplication { group, lasts } => {
                let Some(m) = self.state_master(group) else {
                    return;
                };
                let replicas: Vec<usize> = (0..self.world.servers.len())
                    .filter(|&s| s != m && self.world.servers[s].group == group)
                    .collect();
                if replicas.is_empty() {
                    return;
                }
                let r = replicas[self.rng.pick(replicas.len())];
                self.partition(vec![(Node::Server(m), Node::Server(r))], lasts);
            }
            Fault::Stall { daemon, lasts } => {
                if self.daemons[daemon].up {
                    let until = self.now + lasts;
                    self.daemons[daemon].stalled_until = until;
                    let i = self.daemons[daemon].incarnation;
                    self.at(until, Ev::StallEnds(daemon, i, lasts));
                }
            }
            Fault::KillDaemon { daemon, down_for } => {
                if self.daemons[daemon].up {
                    self.daemons[daemon].up = false;
                    self.at(self.now + down_for, Ev::RestartDaemon(daemon));
                }
            }
            Fault::ClockJump { daemon, by_ms } => {
                let offset = &self.daemons[daemon].wall_offset;
                offset.fetch_add(by_ms, Ordering::SeqCst);
            }
        }
    }

    fn kill_server(&mut self, s: usize) {
        self.world.servers[s].up = false;
        // Every kept connection to it is reset: its daemons see the link close.
        for d in 0..self.daemons.len() {
            let i = self.daemons[d].incarnation;
            let closed: Vec<u64> = self.daemons[d]
                .conns
                .iter()
                .filter(|(_, c)| *c == s)
                .map(|(w, _)| *w)
                .collect();
            self.daemons[d].conns.retain(|(_, c)| *c != s);
            if !self.net.connected(Node::Daemon(d), Node::Server(s)) {
                continue;
            }
            for watch_id in closed {
                let closed = LinkClosed {
                    watch_id,
                    addr: self.world.servers[s].addr.clone(),
                    why: "connection reset".into(),
                };
                self.at(self.now + 1, Ev::Closed(d, i, closed));
            }
        }
    }

    fn partition(&mut self, cuts: Vec<(Node, Node)>, lasts: Ms) {
        self.seq += 1;
        let id = self.seq;
        self.partitions.insert(id, cuts);
        self.rebuild_net();
        self.at(self.now + lasts, Ev::PartitionEnds(id));
    }

    fn rebuild_net(&mut self) {
        self.net.heal_all();
        for cuts in self.partitions.values() {
            for (from, to) in cuts {
                self.net.cut(*from, *to);
            }
        }
    }

    /// The end of the faults: every partition heals, every daemon runs; servers are
    /// restarted or left as they are (drawn per seed).
    fn heal(&mut self) {
        self.inv.observe(&self.health());
        self.partitions.clear();
        self.rebuild_net();
        for d in 0..self.daemons.len() {
            if !self.daemons[d].up {
                self.restart_daemon(d);
            }
            self.daemons[d].stalled_until = self.daemons[d].stalled_until.min(self.now);
        }
        if self.restart_servers_at_heal {
            for s in &mut self.world.servers {
                s.up = true;
            }
        }
        self.log("sim", "heal: partitions gone, every daemon runs");
        self.inv.observe(&self.health());
    }

    /// Which daemon sees which server healthy now (see `invariants.rs`).
    fn health(&self) -> super::invariants::Health {
        let mut up = Vec::new();
        for d in 0..self.daemons.len() {
            let daemon = &self.daemons[d];
            let runs = daemon.up && daemon.stalled_until <= self.now;
            let row = (0..self.world.servers.len())
                .map(|s| {
                    // A server that thaws now was silent until now.
                    runs && self.world.servers[s].up
                        && self.world.servers[s].frozen_until < self.now
                        && self.net.connected(Node::Daemon(d), Node::Server(s))
                })
                .collect();
            up.push(row);
        }
        super::invariants::Health {
            now: self.now,
            sees_up: up,
        }
    }

    /// Per group: whether its master is dead while a replica could be promoted.
    fn stuck(&self) -> Vec<(usize, bool, String)> {
        (0..self.groups.len())
            .map(|g| {
                let group = self.coord.state.groups.get(&self.groups[g]);
                let master_dead = self
                    .state_master(g)
                    .is_none_or(|m| !self.world.servers[m].answers(self.now));
                let candidate = super::invariants::eligible_in(&self.world.servers, g);
                let detail = format!(
                    "master {} dead, {} could be promoted{}",
                    group.map_or(String::new(), |g| g.master.to_string()),
                    candidate.clone().unwrap_or_default(),
                    group
                        .and_then(|g| g.failed.clone())
                        .map_or(String::new(), |f| format!(
                            "; the group is switched off: {f}"
                        ))
                );
                let off = group.is_some_and(|g| g.failed.is_some());
                (g, master_dead && candidate.is_some() && !off, detail)
            })
            .collect()
    }

    fn end_report(&self) -> super::invariants::End {
        super::invariants::End {
            now: self.now,
            state: self.coord.state.clone(),
            groups: self.groups.clone(),
            servers: self.world.servers.clone(),
            masters_up: (0..self.groups.len())
                .map(|g| self.world.masters_up(g, self.now, FENCE_SETTLE))
                .collect(),
            named_answers: (0..self.groups.len())
                .map(|g| {
                    self.state_master(g).is_some_and(|m| {
                        self.world
                            .masters_up(g, self.now, FENCE_SETTLE)
                            .contains(&m)
                    })
                })
                .collect(),
            restarted_servers: self.restart_servers_at_heal,
            heal_at: self.settings.heal_at,
        }
    }
}

enum Reach {
    Up(usize),
    Refused,
    Silent,
}

fn refused(a: &Addr) -> Error {
    Error::Server(format!("{a}: connection refused"))
}

fn timed_out(a: &Addr) -> Error {
    Error::Server(format!("{a}: timed out"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn list(addrs: &[Addr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn describe_job(job: &WorkerJob) -> String {
    match job {
        WorkerJob::Failover(r) => format!(
            "failover of {} master {}{}",
            r.group,
            r.master,
            r.resume
                .as_ref()
                .map_or(String::new(), |x| format!(" (resume to {})", x.new_master))
        ),
        WorkerJob::Fence(f) => format!("fence {} in {} to {}", list(&f.targets), f.group, f.master),
        WorkerJob::Switchover(_) => "switchover".into(),
        WorkerJob::Configure(c) => format!("configure {}", c.master),
    }
}

fn describe_action(action: &Action) -> String {
    match action {
        Action::FailoverBegin {
            group,
            new_master,
            passed_over,
            ..
        } => {
            format!(
                "failover-begin of {group} to {new_master} ({} passed over)",
                passed_over.len()
            )
        }
        Action::FailoverEnd(r) => format!(
            "failover-end of {}: {:?} {:?}",
            r.group, r.outcome, r.reason
        ),
        Action::KnownReplicas {
            group, replicas, ..
        } => format!("known replicas of {group}: {}", list(replicas)),
        other => format!("{other:?}"),
    }
}
