//! [`Shard`]: one checker thread. It owns the connections of the watches that fall to
//! it, waits on all of them at once with one `epoll` poller, and runs the probes the
//! monitor hands it in batches.
//!
//! One turn of the loop: wait for readiness (at most until the nearest deadline, and at
//! most [`TURN`]); read and answer what is ready (all of it: when one wait fills the
//! event buffer, more are taken at once); take new batches from the monitor; carry on
//! after DNS answers; start the connects waiting for a slot; fail the probes whose
//! deadline passed; send everything that finished as one report.
//!
//! The thread measures its own lateness: a turn that works longer than [`LATE_GRACE`],
//! or a wait that returns later than asked (the thread starved of CPU, the process
//! stopped), adds the excess to its total. A probe's deadline moves by whatever the
//! total grew while it ran, and a probe whose reply is there, unread, when its deadline
//! comes is read, not failed: a late daemon is not a dead master. The largest lateness
//! goes to the monitor with each report, for TILT (`monitor/core/tilt.rs`).

use super::super::IdMap;
use super::conn::{Conn, Pending};
use super::io::{ConnectSlots, Deadlines, Io, Scripts};
use super::resolve::Resolver;
use super::{COALESCE, CheckerReport, Command, Probe, ProbeSettings, TURN, UNUSED_CONNECTION};
use crate::address::Addr;
use crate::net::tls::Tls;
use crate::observe::metrics::Heartbeat;
use crate::worker::fault;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use polling::{Events, Poller};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes read from a socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// Readiness events taken from one wait.
const EVENTS: NonZeroUsize = NonZeroUsize::new(4096).expect("not zero");
/// When waits keep filling the event buffer, at most this many more are taken in one
/// turn before the turn goes on (with 16,384 events handled, the rest wait a turn).
const MORE_WAITS: usize = 3;
/// Work in one turn, or oversleeping past a wait, up to this much is not lateness.
const LATE_GRACE: Duration = Duration::from_millis(5);
/// How often unused connections are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// One checker thread and its connections.
pub struct Shard {
    index: usize,
    poller: Arc<Poller>,
    commands: Receiver<Command>,
    reports: Sender<CheckerReport>,
    /// The whole-probe deadline: connect, send and the whole reply.
    timeout: Duration,
    scripts: Scripts,
    /// With `tls = true`: every connection is a TLS session, with the material current
    /// when it opens.
    tls: Option<Arc<Tls>>,
    resolver: Resolver,
    /// Connections by slot (the poller's key); `None` slots are free.
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// The slots of each watch's connections, by server (a watch has a few).
    by_watch: IdMap<Vec<(Addr, usize)>>,
    deadlines: Deadlines,
    connects: ConnectSlots,
    /// The thread's own lateness, added up (see the module docs).
    late_total: Duration,
    report: CheckerReport,
    scratch: Vec<u8>,
    heartbeat: Arc<Heartbeat>,
    last_sweep: Instant,
    /// Test hook: stall this thread once it has run this long (see `worker/fault.rs`).
    stall_after: Option<Instant>,
}

impl Shard {
    pub fn new(
        index: usize,
        poller: Arc<Poller>,
        channels: (Receiver<Command>, Sender<CheckerReport>),
        settings: &ProbeSettings,
        heartbeat: Arc<Heartbeat>,
    ) -> std::io::Result<Shard> {
        let resolver = Resolver::start(format!("resolve-{index}"), poller.clone())?;
        let (commands, reports) = channels;
        Ok(Shard {
            index,
            poller,
            commands,
            reports,
            timeout: settings.timeout,
            scripts: Scripts::new(&settings.options, &settings.beacon),
            tls: settings.options.tls.clone(),
            resolver,
            conns: Vec::new(),
            free: Vec::new(),
            by_watch: IdMap::default(),
            deadlines: Deadlines::default(),
            connects: ConnectSlots::default(),
            late_total: Duration::ZERO,
            report: CheckerReport::default(),
            scratch: vec![0; READ_CHUNK],
            heartbeat,
            last_sweep: Instant::now(),
            stall_after: (index == 0)
                .then(|| fault::duration(fault::STALL_CHECKER_AFTER))
                .flatten()
                .map(|after| Instant::now() + after),
        })
    }

    /// Runs until the monitor drops its handle.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        let mut last_look = Instant::now();
        loop {
            let work_done = Instant::now();
            self.heartbeat.beat();
            if self.stall_after.is_some_and(|at| Instant::now() >= at) {
                self.stall_after = None;
                log::warn!(
                    "checker-{}: stalling for 60 s ({})",
                    self.index,
                    fault::STALL_CHECKER_AFTER
                );
                std::thread::sleep(Duration::from_secs(60));
            }
            // Probes out: let their replies gather for a moment (see COALESCE).
            let mut nap = Duration::ZERO;
            if self.deadlines.any() {
                nap = COALESCE.saturating_sub(work_done.saturating_duration_since(last_look));
                if !nap.is_zero() {
                    std::thread::sleep(nap);
                }
            }
            let now = Instant::now();
            let wait = self
                .deadlines
                .next()
                .map_or(TURN, |at| at.saturating_duration_since(now).min(TURN));
            self.wait(&mut events, wait);
            let woke = Instant::now();
            // Lateness: work beyond the grace, and waking later than asked.
            let worked = work_done.saturating_duration_since(last_look);
            let asleep = woke.saturating_duration_since(work_done);
            let late =
                worked.saturating_sub(LATE_GRACE) + asleep.saturating_sub(nap + wait + LATE_GRACE);
            self.late_total += late;
            self.report.late = self.report.late.max(late);
            last_look = woke;
            // Readiness first: a link closed since the last turn is seen before a new
            // probe would be sent on it.
            self.on_events(&mut events);
            if !self.take_commands() {
                break;
            }
            if self.resolver.take_answers() {
                self.resume_resolving();
            }
            self.start_waiting_connects();
            self.expire(Instant::now());
            self.sweep();
            if !self.report.is_empty() {
                let report = std::mem::take(&mut self.report);
                if self.reports.send(report).is_err() {
                    break;
                }
            }
        }
        self.close_all();
    }

    fn wait(&self, events: &mut Events, wait: Duration) {
        events.clear();
        if let Err(e) = self.poller.wait(events, Some(wait))
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            log::error!("checker-{}: cannot wait for sockets: {e}", self.index);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Handles the readiness of the last wait, and, while waits fill the buffer, takes
    /// more at once: every reply that is there is read before any deadline is judged.
    fn on_events(&mut self, events: &mut Events) {
        for round in 0..=MORE_WAITS {
            for event in events.iter() {
                self.with_conn(event.key, |conn, io| conn.on_event(event, io));
            }
            if events.len() < events.capacity().get() || round == MORE_WAITS {
                return;
            }
            self.wait(events, Duration::ZERO);
        }
    }

    /// Starts the connects that waited for a slot, as slots are free.
    fn start_waiting_connects(&mut self) {
        let now = Instant::now();
        while let Some(slot) = self.connects.next_waiting() {
            self.with_conn(slot, |conn, io| conn.dequeued(now, io));
        }
    }

    /// Runs `f` on the connection in `slot` with the thread's I/O context.
    fn with_conn(&mut self, slot: usize, f: impl FnOnce(&mut Conn, &mut Io)) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        let mut io = Io {
            poller: &self.poller,
            scripts: &self.scripts,
            tls: self.tls.as_deref(),
            resolver: &mut self.resolver,
            deadlines: &mut self.deadlines,
            connects: &mut self.connects,
            timeout: self.timeout,
            late_total: self.late_total,
            report: &mut self.report,
            scratch: &mut self.scratch,
        };
        f(conn, &mut io);
    }

    /// Takes the monitor's commands; false once the monitor is gone.
    fn take_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Probes(probes)) => self.start(probes),
                Ok(Command::Forget(watch_id)) => self.forget(watch_id),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn start(&mut self, probes: Vec<Probe>) {
        let now = Instant::now();
        for probe in probes {
            let slot = self.slot_for(probe.watch_id, &probe.addr, now);
            let pending = Pending {
                probe,
                started: now,
                deadline: now + self.timeout,
                late_at_start: self.late_total,
            };
            self.with_conn(slot, |conn, io| conn.submit(pending, io));
        }
    }

    /// The slot of the connection for a watch's server, made when missing.
    fn slot_for(&mut self, watch_id: u64, addr: &Addr, now: Instant) -> usize {
        let known = self
            .by_watch
            .get(&watch_id)
            .and_then(|conns| conns.iter().find(|(a, _)| a == addr).map(|(_, slot)| *slot));
        if let Some(slot) = known {
            return slot;
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        self.conns[slot] = Some(Conn::new(watch_id, addr.clone(), slot, now));
        self.by_watch
            .entry(watch_id)
            .or_default()
            .push((addr.clone(), slot));
        slot
    }

    fn drop_slot(&mut self, slot: usize, why: &str) {
        self.with_conn(slot, |conn, io| conn.abandon(why, io));
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::take) {
            if let Some(conns) = self.by_watch.get_mut(&conn.watch_id) {
                conns.retain(|(_, s)| *s != slot);
                if conns.is_empty() {
                    self.by_watch.remove(&conn.watch_id);
                }
            }
            self.free.push(slot);
        }
    }

    /// Closes a watch's connections; its probes still running are failed.
    fn forget(&mut self, watch_id: u64) {
        let slots: Vec<usize> = self
            .by_watch
            .get(&watch_id)
            .map(|conns| conns.iter().map(|(_, slot)| *slot).collect())
            .unwrap_or_default();
        for slot in slots {
            self.drop_slot(slot, "the group is no longer watched");
        }
    }

    fn resume_resolving(&mut self) {
        let waiting: Vec<usize> = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.as_ref().is_some_and(Conn::is_resolving))
            .map(|(slot, _)| slot)
            .collect();
        for slot in waiting {
            self.with_conn(slot, |conn, io| conn.resolved(io));
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((slot, generation)) = self.deadlines.pop_due(now) {
            self.with_conn(slot, |conn, io| conn.expire(generation, now, io));
        }
    }

    /// Closes connections no probe has used for a while.
    fn sweep(&mut self) {
        if self.last_sweep.elapsed() < SWEEP_EVERY {
            return;
        }
        self.last_sweep = Instant::now();
        let unused: Vec<usize> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| {
                let c = c.as_ref()?;
                (c.is_idle() && c.last_used.elapsed() > UNUSED_CONNECTION).then_some(slot)
            })
            .collect();
        for slot in unused {
            self.drop_slot(slot, "unused");
        }
    }

    fn close_all(&mut self) {
        for slot in 0..self.conns.len() {
            self.drop_slot(slot, "the daemon is stopping");
        }
    }
}
