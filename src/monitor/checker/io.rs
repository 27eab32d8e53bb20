//! What a checker thread lends its connections while they work ([`Io`]): the poller,
//! the encoded commands, the deadlines, the connect slots, the report being filled, and
//! the thread's own lateness.

use super::super::timers::Timers;
use super::resolve::Resolver;
use super::{BEACON_CHANNEL, CheckerReport, LinkClosed};
use crate::address::Addr;
use crate::net::tls::Tls;
use crate::redis::{INFO_COMMANDS, NodeOptions, resp};
use polling::Poller;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Connects under way at once, per checker thread; more wait in line. On loopback a
/// connect runs the whole handshake inside the caller, and ten thousand at once (a
/// daemon starting, a burst of new groups, every link lost together) kept the loop
/// from reading the replies it had asked for until their deadlines passed.
pub const MAX_CONNECTING: usize = 256;

/// The connect slots of one checker thread, and the connections waiting for one.
#[derive(Default)]
pub struct ConnectSlots {
    in_flight: usize,
    waiting: VecDeque<usize>,
}

impl ConnectSlots {
    pub fn take(&mut self) -> bool {
        let free = self.in_flight < MAX_CONNECTING;
        if free {
            self.in_flight += 1;
        }
        free
    }

    pub fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Puts the connection in `slot` in line for a connect slot.
    pub fn queue(&mut self, slot: usize) {
        self.waiting.push_back(slot);
    }

    /// The next connection in line, once a slot is free.
    pub fn next_waiting(&mut self) -> Option<usize> {
        if self.in_flight >= MAX_CONNECTING {
            return None;
        }
        self.waiting.pop_front()
    }
}

/// The commands each probe sends, encoded once.
pub struct Scripts {
    pub auth: Option<Vec<u8>>,
    pub role: Vec<u8>,
    /// `ROLE` and the beacon.
    pub master: Vec<u8>,
    pub info: Vec<u8>,
}

impl Scripts {
    pub fn new(options: &NodeOptions, beacon: &str) -> Scripts {
        let encode = |commands: &[&[&str]]| {
            let mut out = Vec::new();
            for command in commands {
                resp::encode(command, &mut out);
            }
            out
        };
        Scripts {
            auth: options.auth_command().map(|auth| encode(&[&auth])),
            role: encode(&[&["ROLE"]]),
            master: encode(&[&["ROLE"], &["PUBLISH", BEACON_CHANNEL, beacon]]),
            info: encode(INFO_COMMANDS),
        }
    }
}

/// Probe deadlines, nearest first; entries of probes that ended are skipped (each
/// names a connection's slot and the generation of the probe it timed).
#[derive(Default)]
pub struct Deadlines {
    timers: Timers<(usize, u64)>,
    /// Entries taken from a due bucket and not handed out yet.
    due: Vec<(usize, u64)>,
}

impl Deadlines {
    pub fn push(&mut self, at: Instant, slot: usize, generation: u64) {
        self.timers.push(at, (slot, generation));
    }

    /// Whether any probe is out (a deadline set, or due and not handed out yet).
    pub fn any(&self) -> bool {
        self.timers.next().is_some() || !self.due.is_empty()
    }

    pub fn next(&self) -> Option<Instant> {
        self.timers.next()
    }

    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u64)> {
        if self.due.is_empty()
            && let Some((_, due)) = self.timers.pop_due(now)
        {
            self.due = due;
        }
        self.due.pop()
    }
}

/// What a connection needs from its thread while it works.
pub struct Io<'a> {
    pub poller: &'a Poller,
    pub scripts: &'a Scripts,
    pub tls: Option<&'a Tls>,
    pub resolver: &'a mut Resolver,
    pub deadlines: &'a mut Deadlines,
    pub connects: &'a mut ConnectSlots,
    /// The whole-probe deadline.
    pub timeout: Duration,
    /// The thread's lateness so far (see `shard.rs`).
    pub late_total: Duration,
    pub report: &'a mut CheckerReport,
    pub scratch: &'a mut [u8],
}

impl Io<'_> {
    /// Reports a kept connection the server closed.
    pub fn closed(&mut self, watch_id: u64, addr: &Addr, why: String) {
        self.report.closed.push(LinkClosed {
            watch_id,
            addr: addr.clone(),
            why,
        });
    }
}
