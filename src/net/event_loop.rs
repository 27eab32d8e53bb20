//! The event loop behind a port (see `server.rs` for what it guarantees): waits on the
//! poller, accepts, reads and writes connections, hands input and messages to the
//! protocol, evicts at the cap, and sweeps out connections that ran out of time.

use super::accept::{self, AcceptError, Spare, Throttle};
use super::conn::{Closing, ConnId, Connection, Expiry, Phase, Table, Timeouts};
use super::server::{Limits, Protocol, Refusal};
use super::transport::Wrap;
use crossbeam_channel::Receiver;
use polling::{Event, Events, PollMode, Poller};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The poller key of the listener; connection keys are their slot plus one.
pub const LISTENER: usize = 0;
/// How often timeouts are checked.
const SWEEP: Duration = Duration::from_millis(250);
/// Connections accepted per turn of the loop, so a flood of new ones does not starve
/// the open ones.
const ACCEPT_BATCH: usize = 64;
/// A protocol is not asked for more replies while this much output waits.
const OUTPUT_HIGH: usize = 64 * 1024;
/// How often repeated warnings (refusals, accept errors) are logged.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// What a port's loop serves: its listener (registered with `poller`), how accepted
/// sockets become transports, and the messages other threads send its connections.
pub struct Port<M> {
    pub listener: TcpListener,
    pub poller: Arc<Poller>,
    pub wrap: Wrap,
    pub mailbox: Receiver<(ConnId, M)>,
}

/// Counts behind the throttled warnings.
#[derive(Default)]
struct Warnings {
    refused: u64,
    /// Refused at the per-source cap.
    refused_source: u64,
    evicted: u64,
    at_cap: Throttle,
    accept: Throttle,
}

pub struct EventLoop<P: Protocol> {
    name: String,
    listener: TcpListener,
    poller: Arc<Poller>,
    limits: Limits,
    protocol: P,
    wrap: Wrap,
    mailbox: Receiver<(ConnId, P::Message)>,
    stop: Arc<AtomicBool>,
    conns: Table<P::Conn>,
    spare: Spare,
    paused_until: Option<Instant>,
    warnings: Warnings,
}

impl<P: Protocol> EventLoop<P> {
    pub fn new(
        name: &str,
        port: Port<P::Message>,
        limits: Limits,
        protocol: P,
        stop: Arc<AtomicBool>,
    ) -> Self {
        EventLoop {
            name: name.to_string(),
            listener: port.listener,
            poller: port.poller,
            limits,
            protocol,
            wrap: port.wrap,
            mailbox: port.mailbox,
            stop,
            conns: Table::default(),
            spare: Spare::new(),
            paused_until: None,
            warnings: Warnings::default(),
        }
    }

    /// Serves until the stop flag is set, then closes everything.
    pub fn run(mut self) {
        let mut events = Events::new();
        let mut next_sweep = Instant::now() + SWEEP;
        while !self.stop.load(Ordering::SeqCst) {
            events.clear();
            let now = Instant::now();
            let wake_at = self.paused_until.map_or(next_sweep, |p| p.min(next_sweep));
            if let Err(e) = self
                .poller
                .wait(&mut events, Some(wake_at.saturating_duration_since(now)))
            {
                log::error!("{}: waiting for events failed: {e}", self.name);
                std::thread::sleep(SWEEP);
                continue;
            }
            let mut accept = false;
            for event in events.iter() {
                if event.key == LISTENER {
                    accept = true;
                } else {
                    self.ready(event);
                }
            }
            self.deliver_messages();
            let now = Instant::now();
            if self.paused_until.is_some_and(|until| now >= until) {
                self.resume_accepting();
                accept = true;
            }
            if accept && self.paused_until.is_none() {
                self.accept();
            }
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP;
            }
        }
        self.finish();
    }

    /// Reads and writes what a connection's socket allows, then lets it go on.
    fn ready(&mut self, event: Event) {
        let slot = event.key - 1;
        let max_input = self.limits.max_input;
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let now = Instant::now();
        let mut broken = None;
        if event.readable {
            if conn.interest.0 {
                broken = conn.read_available(max_input).err();
            } else if event.is_interrupt() || event.is_err() == Some(true) {
                broken = Some(io::Error::other("hung up"));
            }
        }
        if event.writable && broken.is_none() {
            match conn.flush(now) {
                Ok(true) => {
                    conn.dirty = true;
                    // A reply sent counts only for a client that was ever answered
                    // for real: refusals keep no one alive.
                    if conn.earned {
                        conn.last_active = now;
                    }
                }
                Ok(false) => {}
                Err(e) => broken = Some(e),
            }
        }
        match broken {
            Some(e) => {
                log::debug!("{}: connection {} ended: {e}", self.name, slot);
                self.close(slot);
            }
            None => self.advance(slot, now),
        }
    }

    /// Lets the protocol consume input, sends replies, moves closing connections on,
    /// and updates what the poller watches for.
    fn advance(&mut self, slot: usize, now: Instant) {
        let max_input = self.limits.max_input;
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        // Each turn consumes input or stops, so this ends.
        loop {
            // Plaintext that a TLS session decrypted and that did not fit the input
            // buffer: the socket will not wake the loop for it.
            let room = conn.input.len() < max_input && conn.closing == Closing::Open;
            if room && conn.transport.buffered() && conn.read_available(max_input).is_err() {
                return self.close(slot);
            }
            if !(conn.dirty && conn.takes_input(OUTPUT_HIGH)) {
                break;
            }
            conn.dirty = false;
            let before = conn.input.len();
            let (state, mut io) = conn.split(now);
            self.protocol.input(state, &mut io);
            let outcome = io.finish();
            if !conn.apply(outcome, now) {
                return self.close(slot);
            }
            match conn.flush(now) {
                Ok(drained) => {
                    conn.dirty = drained && conn.input.len() < before && !conn.input.is_empty();
                }
                Err(_) => return self.close(slot),
            }
        }
        if conn.output.pending() == 0 {
            if conn.closing == Closing::Flushing && !conn.half_close(now) {
                return self.close(slot);
            }
            let waiting = conn.phase == Phase::Busy;
            let stuck = conn.input.len() >= max_input && conn.closing == Closing::Open;
            if (conn.peer_closed || stuck) && !waiting {
                return self.close(slot);
            }
        }
        let wanted = conn.wants(max_input);
        if wanted != conn.interest {
            let event = Event::new(slot + 1, wanted.0, wanted.1);
            match self
                .poller
                .modify_with_mode(conn.transport.socket(), event, PollMode::Level)
            {
                Ok(()) => conn.interest = wanted,
                Err(e) => {
                    log::debug!("{}: cannot watch connection {slot}: {e}", self.name);
                    self.close(slot);
                }
            }
        }
    }

    /// Hands messages from other threads to their connections.
    fn deliver_messages(&mut self) {
        while let Ok((id, message)) = self.mailbox.try_recv() {
            let now = Instant::now();
            let Some(conn) = self.conns.by_id(id) else {
                continue;
            };
            let (state, mut io) = conn.split(now);
            self.protocol.message(state, message, &mut io);
            let outcome = io.finish();
            if !conn.apply(outcome, now) {
                self.close(id.slot);
                continue;
            }
            conn.dirty = true;
            match conn.flush(now) {
                Ok(_) => self.advance(id.slot, now),
                Err(_) => self.close(id.slot),
            }
        }
    }

    /// Accepts what is queued, up to a batch.
    fn accept(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            let error = match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.admit(stream, peer);
                    continue;
                }
                Err(e) => e,
            };
            match accept::classify(&error) {
                AcceptError::Empty => return,
                AcceptError::Retry => continue,
                AcceptError::Descriptors => {
                    self.warn_accept(&error, "evicting an idle connection or refusing one");
                    if self.evict(Instant::now(), None) {
                        continue;
                    }
                    let answer = self.protocol.refusal(Refusal::NoDescriptors);
                    if self.spare.shed(&self.listener, &answer) {
                        self.warnings.refused += 1;
                        continue;
                    }
                    return self.pause_accepting();
                }
                AcceptError::Pause => {
                    self.warn_accept(&error, "pausing");
                    return self.pause_accepting();
                }
            }
        }
    }

    fn warn_accept(&mut self, error: &io::Error, doing: &str) {
        if let Some(held) = self.warnings.accept.allow(Instant::now(), WARN_EVERY) {
            log::warn!(
                "{}: error accepting a connection: {error}; {doing}, and retrying ({held} more such errors since the last warning)",
                self.name
            );
        }
    }

    fn pause_accepting(&mut self) {
        self.paused_until = Some(Instant::now() + accept::PAUSE);
        let _ =
            self.poller
                .modify_with_mode(&self.listener, Event::none(LISTENER), PollMode::Level);
    }

    fn resume_accepting(&mut self) {
        self.paused_until = None;
        if let Err(e) =
            self.poller
                .modify_with_mode(&self.listener, Event::readable(LISTENER), PollMode::Level)
        {
            log::error!("{}: cannot watch the listener again: {e}", self.name);
            self.paused_until = Some(Instant::now() + accept::PAUSE);
        }
    }

    /// Takes a new connection in, making room by eviction or refusing it at the cap.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        let now = Instant::now();
        let source = peer.ip();
        // One source at its own cap can only push out its own connections.
        if self.conns.open_from(source) >= self.limits.max_per_source
            && !self.evict(now, Some(source))
        {
            self.warnings.refused_source += 1;
            accept::refuse(stream, &self.protocol.refusal(Refusal::PerSource));
            return;
        }
        if self.conns.len() >= self.limits.max_connections && !self.evict(now, None) {
            self.warnings.refused += 1;
            accept::refuse(stream, &self.protocol.refusal(Refusal::Full));
            return;
        }
        let setup = stream
            .set_nonblocking(true)
            .and_then(|()| stream.set_nodelay(true));
        if let Err(e) = setup {
            log::debug!("{}: cannot set up a connection from {peer}: {e}", self.name);
            return;
        }
        super::keep_alive(&stream);
        super::cap_send_buffer(&stream);
        let transport = match (self.wrap)(stream) {
            Ok(transport) => transport,
            Err(e) => {
                log::debug!("{}: connection from {peer} refused: {e}", self.name);
                return;
            }
        };
        let id = self.conns.next_id();
        // SAFETY: every connection is deleted from the poller before it is dropped
        // (`close`, `finish`).
        let added = unsafe {
            self.poller.add_with_mode(
                transport.socket(),
                Event::readable(id.slot + 1),
                PollMode::Level,
            )
        };
        if let Err(e) = added {
            log::warn!("{}: cannot watch a connection from {peer}: {e}", self.name);
            return;
        }
        let state = self.protocol.open(id, peer);
        self.conns
            .insert(Connection::new(id, source, transport, state, now));
    }

    /// Closes the connection that is the best to lose (among those from `source`, when
    /// given), if any may go; true if one did.
    fn evict(&mut self, now: Instant, source: Option<IpAddr>) -> bool {
        let evict_after = self.limits.evict_after;
        let victim = self
            .conns
            .iter()
            .filter(|(_, conn)| source.is_none_or(|ip| conn.source == ip))
            .filter_map(|(slot, conn)| conn.eviction_key().map(|key| (key, slot)))
            .filter(|((class, since), _)| {
                *class == 0 || now.saturating_duration_since(*since) >= evict_after
            })
            .min();
        match victim {
            Some((_, slot)) => {
                self.warnings.evicted += 1;
                self.close(slot);
                true
            }
            None => false,
        }
    }

    /// Ends connections that ran out of time, and logs what the cap did.
    fn sweep(&mut self, now: Instant) {
        let timeouts = Timeouts {
            idle: self.limits.idle_timeout,
            request: self.limits.request_timeout,
            write: self.limits.write_timeout,
        };
        let expired: Vec<(usize, Expiry)> = self
            .conns
            .iter()
            .filter_map(|(slot, conn)| conn.expired(now, &timeouts).map(|e| (slot, e)))
            .collect();
        for (slot, expiry) in expired {
            let Some(conn) = self.conns.get_mut(slot) else {
                continue;
            };
            if expiry == Expiry::Drop {
                self.close(slot);
                continue;
            }
            let (state, mut io) = conn.split(now);
            self.protocol.timed_out(state, &mut io);
            io.close();
            let outcome = io.finish();
            if conn.apply(outcome, now) && conn.flush(now).is_ok() {
                self.advance(slot, now);
            } else {
                self.close(slot);
            }
        }
        let (refused, evicted) = (self.warnings.refused, self.warnings.evicted);
        let by_source = self.warnings.refused_source;
        if refused + evicted + by_source > 0
            && self.warnings.at_cap.allow(now, WARN_EVERY).is_some()
        {
            log::warn!(
                "{}: {} connections open (cap {}, {} per source address); refused {refused} at the cap, {by_source} at a source's cap, and evicted {evicted} since the last warning",
                self.name,
                self.conns.len(),
                self.limits.max_connections,
                self.limits.max_per_source
            );
            self.warnings.refused = 0;
            self.warnings.refused_source = 0;
            self.warnings.evicted = 0;
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(conn) = self.conns.remove(slot) {
            let _ = self.poller.delete(conn.transport.socket());
        }
    }

    /// Closes every connection and the listener.
    fn finish(&mut self) {
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.close(slot);
        }
        let _ = self.poller.delete(&self.listener);
        log::debug!("{}: stopped", self.name);
    }
}
