//! The checker pool: a few threads that run checks against monitored servers.
//!
//! The monitor decides *when* a server is checked; the pool only runs checks. Each job
//! carries the connection it must use (kept open between checks, so a check is one
//! round trip and no new TCP connection), and every check has connect and read timeouts.
//!
//! A thread takes every master check waiting in the queue at once (up to [`BATCH`]),
//! sends `ROLE` on each connection (or starts a non-blocking connect), then waits for
//! all of them together with `poll`, handing each outcome to the monitor as soon as its
//! reply is read. A thread thus does not sleep once per check, and a master that never
//! answers, or a host that never completes a connect, delays only its own check.
//!
//! A thread is still busy until the last check of its batch ends; when jobs start to
//! wait in the queue longer than [`MAX_QUEUE_DELAY`], the pool grows by one thread (at
//! most every [`GROWTH_PAUSE`], up to [`MAX_THREADS`]). Threads idle for [`IDLE_EXIT`]
//! leave again. Replica `INFO` jobs (every 10 s per group) are plain blocking calls,
//! run after the batch's master checks.

use crate::address::Addr;
use crate::error::Result;
use crate::redis::{NodeOptions, RedisNode, ReplicationInfo, Role, Waiting};
use crate::sync::lock;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Threads the pool starts with.
pub const INITIAL_THREADS: usize = 2;
/// Threads the pool may grow to when checks pile up behind slow servers.
pub const MAX_THREADS: usize = 64;
/// A job that waited longer than this in the queue means the pool is too small.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_millis(50);
/// Time for a new thread to drain the backlog before another one is added.
pub const GROWTH_PAUSE: Duration = Duration::from_millis(250);
/// A thread beyond the initial ones that has had no job for this long exits.
pub const IDLE_EXIT: Duration = Duration::from_secs(30);
/// Most master checks one thread runs together.
pub const BATCH: usize = 128;

/// Connections to the replicas of one group, by address.
pub type ReplicaConnections = HashMap<Addr, RedisNode>;

/// What to check.
pub enum CheckJob {
    /// `ROLE` on a group's master.
    Master {
        group: String,
        watch_id: u64,
        node: Arc<Mutex<RedisNode>>,
    },
    /// `INFO` on each listed replica of a group (kept for the API and the election).
    Replicas {
        group: String,
        watch_id: u64,
        replicas: Vec<Addr>,
        nodes: Arc<Mutex<ReplicaConnections>>,
        /// Timeouts and credentials for new replica connections.
        options: NodeOptions,
    },
    /// `ROLE` on servers that should be replicas of `master` (an old master after a
    /// failover, a known replica missing from the master's list). Read only: the
    /// monitor hands those that claim master to the failover worker for fencing.
    Roles {
        group: String,
        watch_id: u64,
        master: Addr,
        targets: Vec<Addr>,
        options: NodeOptions,
    },
}

/// The result of one job, sent back to the monitor.
pub enum CheckOutcome {
    Master {
        group: String,
        watch_id: u64,
        started: Instant,
        finished: Instant,
        role: Result<Role>,
    },
    Replicas {
        group: String,
        watch_id: u64,
        infos: Vec<(Addr, Result<ReplicationInfo>)>,
    },
    Roles {
        group: String,
        watch_id: u64,
        master: Addr,
        roles: Vec<(Addr, Result<Role>)>,
    },
}

/// A growing pool of checker threads fed by one channel.
pub struct CheckerPool {
    jobs: Option<Sender<(Instant, CheckJob)>>,
    job_rx: Receiver<(Instant, CheckJob)>,
    results: Sender<CheckOutcome>,
    /// Set by a thread that took a job which had waited too long.
    lagging: Arc<AtomicBool>,
    /// Threads running now (finished ones leave their handle in `threads`).
    live: Arc<AtomicUsize>,
    last_growth: Instant,
    threads: Vec<JoinHandle<()>>,
}

impl CheckerPool {
    pub fn start(results: Sender<CheckOutcome>) -> CheckerPool {
        let (jobs, job_rx) = crossbeam_channel::unbounded();
        let mut pool = CheckerPool {
            jobs: Some(jobs),
            job_rx,
            results,
            lagging: Arc::new(AtomicBool::new(false)),
            live: Arc::new(AtomicUsize::new(0)),
            last_growth: Instant::now(),
            threads: Vec::new(),
        };
        for _ in 0..INITIAL_THREADS {
            pool.add_thread();
        }
        pool
    }

    /// Queues a job; grows the pool when queued jobs have been waiting too long.
    pub fn submit(&mut self, job: CheckJob) {
        let Some(jobs) = &self.jobs else { return };
        if jobs.send((Instant::now(), job)).is_err() {
            return;
        }
        if self.last_growth.elapsed() >= GROWTH_PAUSE
            && self.lagging.swap(false, Ordering::Relaxed)
            && self.threads() < MAX_THREADS
        {
            self.threads.retain(|handle| !handle.is_finished());
            self.add_thread();
            self.last_growth = Instant::now();
            log::info!(
                "checks wait for a free checker (a slow or hanging server?): {} checker threads now",
                self.threads()
            );
        }
    }

    /// Checker threads running now.
    pub fn threads(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    fn add_thread(&mut self) {
        let jobs = self.job_rx.clone();
        let results = self.results.clone();
        let lagging = self.lagging.clone();
        let live = self.live.clone();
        let index = self.threads.len();
        let spawned = std::thread::Builder::new()
            .name(format!("checker-{index}"))
            .stack_size(256 * 1024)
            .spawn(move || {
                loop {
                    let (queued_at, job) = match jobs.recv_timeout(IDLE_EXIT) {
                        Ok(queued) => queued,
                        Err(RecvTimeoutError::Timeout) if leave_if_spare(&live) => return,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    };
                    if queued_at.elapsed() > MAX_QUEUE_DELAY && jobs.len() >= 2 {
                        lagging.store(true, Ordering::Relaxed);
                    }
                    let mut batch = vec![job];
                    while batch.len() < BATCH {
                        match jobs.try_recv() {
                            Ok((_, job)) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    if run_batch(batch, &results).is_err() {
                        break;
                    }
                }
                live.fetch_sub(1, Ordering::Relaxed);
            });
        match spawned {
            Ok(handle) => {
                self.live.fetch_add(1, Ordering::Relaxed);
                self.threads.push(handle);
            }
            Err(e) => log::error!("cannot start a checker thread: {e}"),
        }
    }

    /// Stops taking jobs and joins every thread (each finishes its current check).
    pub fn shutdown(&mut self) {
        self.jobs = None;
        // Drain queued jobs so threads see the channel close promptly.
        while self.job_rx.try_recv().is_ok() {}
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for CheckerPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An idle thread leaves while more than the initial threads run.
fn leave_if_spare(live: &AtomicUsize) -> bool {
    live.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        (n > INITIAL_THREADS).then(|| n - 1)
    })
    .is_ok()
}

/// A master check under way: its node is locked until the outcome is known.
struct MasterCheck<'a> {
    group: String,
    watch_id: u64,
    started: Instant,
    node: std::sync::MutexGuard<'a, RedisNode>,
    waiting: Waiting,
    deadline: Instant,
}

/// Runs a batch; `Err` when the monitor is gone.
fn run_batch(batch: Vec<CheckJob>, results: &Sender<CheckOutcome>) -> std::result::Result<(), ()> {
    let mut masters = Vec::new();
    let mut replica_jobs = Vec::new();
    for job in batch {
        match job {
            CheckJob::Master {
                group,
                watch_id,
                node,
            } => masters.push((group, watch_id, node)),
            replicas => replica_jobs.push(replicas),
        }
    }
    let mut pending = Vec::with_capacity(masters.len());
    for (group, watch_id, node) in &masters {
        let started = Instant::now();
        let mut node = lock(node);
        match node.start_check() {
            Ok(waiting) => {
                let limit = match waiting {
                    Waiting::Connect(_) => node.connect_timeout(),
                    Waiting::Reply(_) => node.io_timeout(),
                };
                pending.push(MasterCheck {
                    group: group.clone(),
                    watch_id: *watch_id,
                    started,
                    node,
                    waiting,
                    deadline: started + limit,
                });
            }
            Err(e) => {
                let outcome = master_outcome(group.clone(), *watch_id, started, Err(e));
                results.send(outcome).map_err(|_| ())?;
            }
        }
    }
    while !pending.is_empty() {
        let now = Instant::now();
        let wait = pending
            .iter()
            .map(|c| c.deadline.saturating_duration_since(now))
            .min()
            .unwrap_or_default();
        let ready = poll_ready(pending.iter().map(|c| c.waiting), wait);
        let now = Instant::now();
        let mut still_waiting = Vec::with_capacity(pending.len());
        for (mut check, is_ready) in pending.drain(..).zip(ready) {
            let outcome = match (check.waiting, is_ready) {
                (_, false) if check.deadline > now => {
                    still_waiting.push(check);
                    continue;
                }
                (Waiting::Connect(_), false) => Err(check.node.abandon("connect timed out")),
                (Waiting::Reply(_), false) => Err(check.node.abandon("ROLE: read timed out")),
                (Waiting::Connect(_), true) => match check.node.connected() {
                    Ok(fd) => {
                        check.waiting = Waiting::Reply(fd);
                        check.deadline = Instant::now() + check.node.io_timeout();
                        still_waiting.push(check);
                        continue;
                    }
                    Err(e) => Err(e),
                },
                (Waiting::Reply(_), true) => check.node.receive_role(),
            };
            let outcome = master_outcome(check.group, check.watch_id, check.started, outcome);
            results.send(outcome).map_err(|_| ())?;
        }
        pending = still_waiting;
    }
    // Replica INFO (every 10 s per group) runs after the batch's master checks are done.
    for job in replica_jobs {
        let outcome = match job {
            CheckJob::Replicas {
                group,
                watch_id,
                replicas,
                nodes,
                options,
            } => run_replicas(group, watch_id, replicas, &nodes, &options),
            CheckJob::Roles {
                group,
                watch_id,
                master,
                targets,
                options,
            } => run_roles(group, watch_id, master, targets, &options),
            CheckJob::Master { .. } => continue,
        };
        results.send(outcome).map_err(|_| ())?;
    }
    Ok(())
}

/// `ROLE` on each target, one after the other.
fn run_roles(
    group: String,
    watch_id: u64,
    master: Addr,
    targets: Vec<Addr>,
    options: &NodeOptions,
) -> CheckOutcome {
    let roles = targets
        .into_iter()
        .map(|addr| {
            let role = RedisNode::new(addr.clone(), options.clone()).role();
            (addr, role)
        })
        .collect();
    CheckOutcome::Roles {
        group,
        watch_id,
        master,
        roles,
    }
}

/// Waits up to `timeout` until some sockets are ready: writable for a connect, readable
/// for a reply (or closed, or in error); returns one flag per socket. An interrupted or
/// failed poll reports none ready, and the caller's deadlines end the wait.
fn poll_ready(waiting: impl Iterator<Item = Waiting>, timeout: Duration) -> Vec<bool> {
    let mut polls: Vec<libc::pollfd> = waiting
        .map(|w| match w {
            Waiting::Connect(fd) => libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            },
            Waiting::Reply(fd) => libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
        })
        .collect();
    // Round up so a wait never ends just before a deadline and spins.
    let millis = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `polls` is a valid, exclusively borrowed array of `polls.len()` pollfds.
    let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, millis) };
    if n <= 0 {
        return vec![false; polls.len()];
    }
    polls.iter().map(|p| p.revents != 0).collect()
}

fn master_outcome(
    group: String,
    watch_id: u64,
    started: Instant,
    role: Result<Role>,
) -> CheckOutcome {
    CheckOutcome::Master {
        group,
        watch_id,
        started,
        finished: Instant::now(),
        role,
    }
}

/// `INFO` on each replica of a group, one after the other (every 10 s per group).
fn run_replicas(
    group: String,
    watch_id: u64,
    replicas: Vec<Addr>,
    nodes: &Mutex<ReplicaConnections>,
    options: &NodeOptions,
) -> CheckOutcome {
    let mut nodes = lock(nodes);
    nodes.retain(|addr, _| replicas.contains(addr));
    let infos = replicas
        .into_iter()
        .map(|addr| {
            let node = nodes
                .entry(addr.clone())
                .or_insert_with(|| RedisNode::new(addr.clone(), options.clone()));
            let info = node.replication_info();
            (addr, info)
        })
        .collect();
    CheckOutcome::Replicas {
        group,
        watch_id,
        infos,
    }
}
