//! One simulated daemon: the real monitor core ([`MonitorCore`]) and the real failover
//! worker, with what they believe of the cluster.
//!
//! The worker runs its real sequences (`worker::run_job`) on a thread of its own, but
//! never at the same time as the simulation: each call it makes to servers, to the
//! broker or to its clock is a message to the simulation, which answers it at the
//! simulated time the call completes and waits until the worker makes its next call
//! (or finishes). Only one thread ever runs, so a seed replays exactly.

use super::world::Ms;
use crossbeam_channel::{Receiver, Sender};
use redis_failover::Addr;
use redis_failover::broker::views::MastersView;
use redis_failover::broker::{Action, Broker, ClusterStatus, PeerStatus, ReplicatedState};
use redis_failover::clock::Clock;
use redis_failover::config::MinReplicas;
use redis_failover::error::{Error, Result};
use redis_failover::monitor::core::ClusterView;
use redis_failover::redis::{ReplicaReport, Role};
use redis_failover::worker::servers::{PromoteReply, Servers};
use redis_failover::worker::{WorkerJob, WorkerReport};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// What a daemon believes of the cluster, from its last contact with the coordinator.
#[derive(Clone)]
pub struct Belief {
    pub id: usize,
    pub members: usize,
    pub leader: bool,
    /// Until when its last contact lets it act (while `leader`).
    pub acting_until: Ms,
    pub version: u64,
    pub state: ReplicatedState,
    pub views: Vec<(usize, MastersView, Ms)>,
    pub now: Ms,
}

impl Belief {
    pub fn acting(&self) -> bool {
        self.leader && self.now < self.acting_until
    }
}

impl ClusterView for Belief {
    fn is_acting(&self) -> bool {
        self.acting()
    }

    fn quorum(&self, setting: usize) -> usize {
        if setting == 0 {
            self.members / 2 + 1
        } else {
            setting
        }
    }

    fn peer_views(&self, max_age: Duration) -> Vec<MastersView> {
        let max_age = max_age.as_millis() as Ms;
        self.views
            .iter()
            .filter(|(_, _, at)| self.now.saturating_sub(*at) <= max_age)
            .map(|(_, view, _)| view.clone())
            .collect()
    }
}

/// A call of the worker, answered by the simulation.
#[derive(Debug)]
pub enum Call {
    Infos(Vec<Addr>),
    Role(Addr),
    Promote(Addr),
    Repoint(Vec<Addr>, Addr),
    FollowAfresh(Addr, Addr),
    /// `CLIENT PAUSE <ms> WRITE` (`Some`) or `CLIENT UNPAUSE` (`None`).
    Pause(Addr, Option<u64>),
    /// `CONFIG SET min-replicas-to-write ... min-replicas-max-lag ...`.
    Configure(Addr, MinReplicas),
    Sleep(Duration),
    Propose(Action),
    /// The job is finished.
    Done(WorkerReport),
}

/// The simulation's answer to a [`Call`].
pub enum Answer {
    Infos(Vec<ReplicaReport>),
    Role(Result<Role>),
    Promote(PromoteReply),
    Failures(Vec<String>),
    Done(Result<()>),
}

/// The worker's side of the rendezvous.
#[derive(Clone)]
pub struct Bridge {
    calls: Sender<Call>,
    answers: Receiver<Answer>,
    pub belief: Arc<Mutex<Belief>>,
    /// The simulated time in ms (the epoch's offset), read by the worker's clock.
    pub time: Arc<AtomicU64>,
    pub epoch: Instant,
    pub wall_epoch: SystemTime,
    pub wall_offset: Arc<AtomicU64>,
}

fn gone() -> Error {
    Error::Server("the simulated daemon was stopped".into())
}

impl Bridge {
    fn call(&self, call: Call) -> Option<Answer> {
        self.calls.send(call).ok()?;
        self.answers.recv().ok()
    }

    fn belief(&self) -> Belief {
        match self.belief.lock() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl Servers for Bridge {
    fn infos(&self, addrs: &[Addr]) -> Vec<ReplicaReport> {
        match self.call(Call::Infos(addrs.to_vec())) {
            Some(Answer::Infos(reports)) => reports,
            _ => addrs
                .iter()
                .map(|a| ReplicaReport {
                    addr: a.clone(),
                    info: Err(gone()),
                })
                .collect(),
        }
    }

    fn role(&self, addr: &Addr) -> Result<Role> {
        match self.call(Call::Role(addr.clone())) {
            Some(Answer::Role(role)) => role,
            _ => Err(gone()),
        }
    }

    fn promote_once(&self, addr: &Addr) -> PromoteReply {
        match self.call(Call::Promote(addr.clone())) {
            Some(Answer::Promote(reply)) => reply,
            _ => PromoteReply::NoReply(gone()),
        }
    }

    fn repoint(&self, addrs: &[Addr], to: &Addr) -> Vec<String> {
        match self.call(Call::Repoint(addrs.to_vec(), to.clone())) {
            Some(Answer::Failures(failures)) => failures,
            _ => vec![gone().to_string()],
        }
    }

    fn follow_afresh(&self, addr: &Addr, master: &Addr) -> Result<()> {
        match self.call(Call::FollowAfresh(addr.clone(), master.clone())) {
            Some(Answer::Done(done)) => done,
            _ => Err(gone()),
        }
    }

    fn bound_write_loss(&self, master: &Addr, settings: &MinReplicas) -> Result<()> {
        match self.call(Call::Configure(master.clone(), *settings)) {
            Some(Answer::Done(done)) => done,
            _ => Err(gone()),
        }
    }

    fn pause_writes(&self, master: &Addr, ms: u64) -> Result<std::result::Result<(), String>> {
        match self.call(Call::Pause(master.clone(), Some(ms))) {
            Some(Answer::Done(done)) => done.map(Ok),
            _ => Err(gone()),
        }
    }

    fn unpause_writes(&self, master: &Addr) -> Result<()> {
        match self.call(Call::Pause(master.clone(), None)) {
            Some(Answer::Done(done)) => done,
            _ => Err(gone()),
        }
    }

    fn demote(&self, master: &Addr, to: &Addr) -> Result<()> {
        match self
            .repoint(std::slice::from_ref(master), to)
            .into_iter()
            .next()
        {
            Some(failure) => Err(Error::Server(failure)),
            None => Ok(()),
        }
    }
}

impl Clock for Bridge {
    fn now(&self) -> Instant {
        self.epoch + Duration::from_millis(self.time.load(Ordering::SeqCst))
    }

    fn wall_ms(&self) -> u64 {
        let wall = self.wall_epoch + Duration::from_millis(self.time.load(Ordering::SeqCst));
        let offset = self.wall_offset.load(Ordering::SeqCst);
        wall.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            .wrapping_add(offset)
    }

    fn sleep(&self, d: Duration) {
        self.call(Call::Sleep(d));
    }
}

impl Broker for Bridge {
    fn propose(&self, action: Action) -> Result<()> {
        match self.call(Call::Propose(action)) {
            Some(Answer::Done(done)) => done,
            _ => Err(gone()),
        }
    }

    fn state(&self) -> Arc<ReplicatedState> {
        Arc::new(self.belief().state)
    }

    fn is_acting(&self) -> bool {
        self.belief().acting()
    }

    fn subscribe(&self) -> Receiver<()> {
        crossbeam_channel::never()
    }

    fn cluster(&self) -> ClusterStatus {
        let belief = self.belief();
        ClusterStatus {
            broker: "simulated".into(),
            http_addr: format!("d{}", belief.id),
            role: if belief.acting() {
                "leader"
            } else {
                "follower"
            }
            .into(),
            acting: belief.acting(),
            peers: (0..belief.members)
                .map(|i| PeerStatus {
                    id: format!("{i:016x}"),
                    raft_addr: None,
                    http_addr: Some(format!("d{i}")),
                    sentinel_addr: None,
                    voter: true,
                    match_index: None,
                    this_node: i == belief.id,
                })
                .collect(),
            ..ClusterStatus::default()
        }
    }
}

/// The simulation's side of one worker thread.
pub struct WorkerLink {
    pub jobs: Sender<WorkerJob>,
    pub calls: Receiver<Call>,
    pub answers: Sender<Answer>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerLink {
    /// Starts a worker thread running the real worker code over `bridge`'s calls.
    pub fn start(
        make_ctx: impl FnOnce(Bridge) -> redis_failover::worker::WorkerContext,
        belief: Arc<Mutex<Belief>>,
        time: Arc<AtomicU64>,
        epoch: (Instant, SystemTime),
        wall_offset: Arc<AtomicU64>,
    ) -> WorkerLink {
        let (jobs_tx, jobs) = crossbeam_channel::unbounded::<WorkerJob>();
        let (calls_tx, calls) = crossbeam_channel::unbounded();
        let (answers, answers_rx) = crossbeam_channel::unbounded();
        let bridge = Bridge {
            calls: calls_tx,
            answers: answers_rx,
            belief,
            time,
            epoch: epoch.0,
            wall_epoch: epoch.1,
            wall_offset,
        };
        let ctx = make_ctx(bridge.clone());
        let thread = std::thread::spawn(move || {
            for job in jobs {
                let report = redis_failover::worker::run_job(&ctx, job);
                if bridge.calls.send(Call::Done(report)).is_err() {
                    break;
                }
            }
        });
        WorkerLink {
            jobs: jobs_tx,
            calls,
            answers,
            thread: Some(thread),
        }
    }

    /// Hands a job to the worker and waits for its first call.
    pub fn start_job(&self, job: WorkerJob) -> Option<Call> {
        self.jobs.send(job).ok()?;
        self.calls.recv().ok()
    }

    /// Answers the worker's call and waits for its next one.
    pub fn answer(&self, answer: Answer) -> Option<Call> {
        self.answers.send(answer).ok()?;
        self.calls.recv().ok()
    }
}
