//! The failover worker: the one thread that changes servers' roles.
//!
//! It consumes [`WorkerJob`]s from a channel: failovers of down masters
//! (`failover.rs`), planned switchovers (`switchover.rs`) and the fencing of servers
//! that claim to be master when they should not (`fence.rs`). One thread for all three,
//! so two changes of a group can never interleave and the log reads in order. Each job
//! answers the monitor with a [`WorkerReport`]. Attempts share their record and step log
//! (`attempt.rs`); a failover promotes its candidates in election order
//! (`promotion.rs`, which also sets the promotion timeout); the before- and
//! after-failover hooks of an embedding program live in `hooks.rs`.
//!
//! The worker reaches servers only through [`Servers`] (`servers.rs`; the switchover
//! also through its own connections) and time only through [`Clock`]: both are in the
//! [`WorkerContext`], so a simulation can run the real steps ([`run_job`]) on simulated
//! servers and simulated time.

mod attempt;
pub mod bounded_loss;
pub mod failover;
mod failover_request;
pub mod fault;
pub mod fence;
pub mod hooks;
pub mod manual_failover;
pub mod promotion;
pub mod servers;
pub mod switchover;
pub mod switchover_request;
#[cfg(test)]
mod tests;

use crate::broker::{Broker, Outcome};
use crate::clock::Clock;
use crate::observe::events::Events;
use crate::observe::metrics::Metrics;
use crate::observe::status::Observations;
use crate::redis::NodeOptions;
use bounded_loss::ConfigureJob;
use crossbeam_channel::{Receiver, Sender};
use hooks::Hooks;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use switchover::SwitchoverJob;

pub use failover_request::{FailoverRequest, Resume};
pub use fence::{FenceJob, FenceResult};
pub use servers::{PromoteReply, RedisServers, Servers};

/// What the worker needs to act.
pub struct WorkerContext {
    pub broker: Arc<dyn Broker>,
    pub hooks: Arc<Hooks>,
    pub observed: Arc<Observations>,
    pub metrics: Arc<Metrics>,
    pub events: Arc<Events>,
    /// The servers the failover, fencing and bounded-loss steps act on
    /// ([`RedisServers`], or a simulation's).
    pub servers: Arc<dyn Servers>,
    /// Where every step reads the time and sleeps ([`crate::clock::SystemClock`], or a
    /// simulation's).
    pub clock: Arc<dyn Clock>,
    /// Timeouts and credentials for the switchover's own connections (longer than a
    /// check's; [`RedisServers`] is built with the same).
    pub node_options: NodeOptions,
    pub max_down_time: Duration,
    /// A replica whose last I/O from its master is at most this old still hears it
    /// (see `redis::master_seen_alive`): the beacon period, at least a second.
    pub fresh_io: Duration,
}

/// What the worker is asked to do.
pub enum WorkerJob {
    /// Fail over a master the detector found down (or finish a failover an earlier
    /// leader began).
    Failover(FailoverRequest),
    /// Move a live master to a replica (`POST /api/v1/groups/<name>/switchover`).
    Switchover(SwitchoverJob),
    /// Make servers that claim master replicas of the group's master.
    Fence(FenceJob),
    /// Bound the write loss of a master (`min_replicas_to_write`).
    Configure(ConfigureJob),
}

/// What the worker tells the monitor when a job is done.
#[derive(Debug)]
pub enum WorkerReport {
    /// A failover or switchover attempt ended with `outcome`.
    Attempted {
        group: String,
        watch_id: u64,
        outcome: Outcome,
    },
    /// A master was configured, or could not be (what happened is in the log).
    Configured {
        group: String,
        master: crate::address::Addr,
        ok: bool,
    },
    /// Fencing ran; what it found at each address.
    Fenced {
        job: FenceJob,
        results: Vec<(crate::address::Addr, FenceResult)>,
    },
}

/// Starts the single failover worker thread. It stops when `jobs` closes (the monitor,
/// which owns the sender, is gone) or the monitor stops listening.
pub fn spawn(
    ctx: WorkerContext,
    jobs: Receiver<WorkerJob>,
    reports: Sender<WorkerReport>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("failover".into())
        .spawn(move || {
            for job in jobs {
                if reports.send(run_job(&ctx, job)).is_err() {
                    break;
                }
            }
        })
}

/// Runs one job to its end, as the worker thread does, and says how it ended.
pub fn run_job(ctx: &WorkerContext, job: WorkerJob) -> WorkerReport {
    match job {
        WorkerJob::Failover(request) => {
            let (group, watch_id) = (request.group.clone(), request.watch_id);
            attempted(group, watch_id, || failover::run(ctx, &request).outcome)
        }
        WorkerJob::Switchover(job) => {
            let (group, watch_id) = (job.command.request.group.clone(), job.watch_id);
            attempted(group, watch_id, || switchover::run(ctx, job))
        }
        WorkerJob::Configure(job) => {
            let ok = catch_unwind(AssertUnwindSafe(|| bounded_loss::run(ctx, &job)))
                .unwrap_or_else(|_| {
                    log::error!("group {}: configuring the master panicked", job.group);
                    false
                });
            WorkerReport::Configured {
                group: job.group,
                master: job.master,
                ok,
            }
        }
        WorkerJob::Fence(job) => {
            let results =
                catch_unwind(AssertUnwindSafe(|| fence::run(ctx, &job))).unwrap_or_else(|_| {
                    log::error!("group {}: fencing panicked", job.group);
                    Vec::new()
                });
            WorkerReport::Fenced { job, results }
        }
    }
}

/// Runs a failover or switchover attempt. A bug here must not end failovers for every
/// group: a panic is logged and the attempt counts as aborted.
fn attempted(group: String, watch_id: u64, attempt: impl FnOnce() -> Outcome) -> WorkerReport {
    let outcome = catch_unwind(AssertUnwindSafe(attempt)).unwrap_or_else(|_| {
        log::error!(
            "group {group}: the failover or switchover attempt panicked; it is treated as aborted"
        );
        Outcome::Aborted
    });
    WorkerReport::Attempted {
        group,
        watch_id,
        outcome,
    }
}
