//! The checker pool: a few threads that run every check of a master (`ROLE`) and every
//! refresh of a replica (`INFO`) on kept, non-blocking connections, so that no server,
//! however slow or hostile, can delay another's check.
//!
//! - The monitor hands over all the checks due in one time slot as one batch
//!   ([`Checkers::submit`]); each thread ([`shard.rs`]) owns the connections of the
//!   groups whose watch id falls to it, and answers with one [`CheckerReport`] per turn
//!   of its loop, not one message per check.
//! - A check (connect, send, the whole reply) ends by its deadline, whatever the server
//!   does: a reply is read from whatever `epoll` says is ready and never blocks once it
//!   has started, so a server that trickles, never ends a reply, or accepts and never
//!   answers costs only its own check (`conn.rs`).
//! - Kept connections stay registered for readiness between checks, so a server that
//!   closes one (EOF, RST, as after `kill -9`) is seen within milliseconds and reported
//!   as a [`LinkClosed`].
//! - Host names are resolved on a helper thread with a cache (`resolve.rs`): a slow DNS
//!   server delays only the checks of the names it serves.
//!
//! [`shard.rs`]: shard

mod conn;
mod io;
mod link;
mod resolve;
mod shard;

use crate::observe::metrics::Metrics;
use crate::redis::NodeOptions;
use crossbeam_channel::{Receiver, Sender};
use shard::Shard;

pub use super::core::probe::{
    Answer, BEACON_CHANNEL, CheckerReport, LinkClosed, Probe, ProbeKind, ProbeResult,
};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Checker threads. Each check costs a few microseconds of CPU, so one thread carries
/// tens of thousands of checks a second; more would only add wake-ups.
pub const SHARDS: usize = 1;
/// While probes are out, a checker thread waits at least this long between two looks
/// at its sockets, so the replies to a batch are read in a few passes rather than one
/// wake-up each. It is also the most a reply's arrival is noticed late.
pub const COALESCE: Duration = Duration::from_millis(1);
/// A connection that no check has used for this long is closed (a replica that left
/// the master's list, an address fencing no longer looks at).
pub const UNUSED_CONNECTION: Duration = Duration::from_secs(60);
/// A checker thread's loop turns at least this often, beating its heartbeat.
pub const TURN: Duration = Duration::from_millis(250);

/// How probes are made: credentials, the whole-probe deadline, the beacon's text.
pub struct ProbeSettings {
    pub options: NodeOptions,
    pub timeout: Duration,
    /// Published with every master check (this daemon's address).
    pub beacon: String,
}

/// What the monitor asks of a checker thread.
enum Command {
    Probes(Vec<Probe>),
    /// Close every connection of this watch (the group was removed or re-created).
    Forget(u64),
}

/// The monitor's handle on the checker threads.
pub struct Checkers {
    shards: Vec<(Sender<Command>, Arc<polling::Poller>)>,
    threads: Vec<JoinHandle<()>>,
}

impl Checkers {
    /// Starts [`SHARDS`] threads; their reports arrive on `reports`.
    pub fn start(
        options: NodeOptions,
        timeout: Duration,
        reports: Sender<CheckerReport>,
        metrics: &Metrics,
        beacon: &str,
    ) -> std::io::Result<Checkers> {
        let mut checkers = Checkers {
            shards: Vec::new(),
            threads: Vec::new(),
        };
        for index in 0..SHARDS {
            let poller = Arc::new(polling::Poller::new()?);
            let (commands, receiver) = crossbeam_channel::unbounded();
            let heartbeat = metrics.register_heartbeat(&format!("checker-{index}"));
            let settings = ProbeSettings {
                options: options.clone(),
                timeout,
                beacon: beacon.to_string(),
            };
            let channels = (receiver, reports.clone());
            let shard = Shard::new(index, poller.clone(), channels, &settings, heartbeat)?;
            let thread = std::thread::Builder::new()
                .name(format!("checker-{index}"))
                .spawn(move || shard.run())?;
            checkers.shards.push((commands, poller));
            checkers.threads.push(thread);
        }
        Ok(checkers)
    }

    /// Hands a batch of probes to the threads that own their watches.
    pub fn submit(&self, probes: Vec<Probe>) {
        if probes.is_empty() {
            return;
        }
        let mut split: Vec<Vec<Probe>> = (0..self.shards.len()).map(|_| Vec::new()).collect();
        for probe in probes {
            let shard = self.shard_of(probe.watch_id);
            split[shard].push(probe);
        }
        for (shard, mut probes) in split.into_iter().enumerate() {
            // Probes of one server process go out back to back, so it is woken once
            // for all of them: by port, then host (a server often listens on several
            // addresses at one port; a host often runs several servers).
            probes.sort_unstable_by(|a, b| {
                (a.addr.port, &a.addr.host).cmp(&(b.addr.port, &b.addr.host))
            });
            if !probes.is_empty() {
                self.send(shard, Command::Probes(probes));
            }
        }
    }

    /// Closes the connections of a watch that ended.
    pub fn forget(&self, watch_id: u64) {
        self.send(self.shard_of(watch_id), Command::Forget(watch_id));
    }

    fn shard_of(&self, watch_id: u64) -> usize {
        (watch_id % self.shards.len().max(1) as u64) as usize
    }

    fn send(&self, shard: usize, command: Command) {
        let Some((commands, poller)) = self.shards.get(shard) else {
            return;
        };
        if commands.send(command).is_ok()
            && let Err(e) = poller.notify()
        {
            log::error!("checker-{shard}: cannot wake the thread: {e}");
        }
    }

    /// Stops the threads (closing every connection) and joins them.
    pub fn shutdown(&mut self) {
        // Dropping the command senders is the stop signal; the notify wakes each thread
        // to see it.
        let pollers: Vec<Arc<polling::Poller>> =
            self.shards.drain(..).map(|(_, poller)| poller).collect();
        for poller in pollers {
            let _ = poller.notify();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A receiver the monitor can `select!` on, with the senders the threads use.
pub fn report_channel() -> (Sender<CheckerReport>, Receiver<CheckerReport>) {
    crossbeam_channel::unbounded()
}
