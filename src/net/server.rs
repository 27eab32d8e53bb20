//! A bounded, non-blocking connection server: one event-loop thread per port (epoll,
//! through the `polling` crate), with a protocol plugged in.
//!
//! It replaces tiny_http (one blocking thread per request in progress, no cap on a
//! header line, an accept loop that gave up for good on EMFILE) and the Sentinel port's
//! thread per connection. Every port gets the same guarantees, set by [`Limits`]:
//!
//! - **A connection cap.** A connection beyond it evicts the connection that has made no
//!   progress for the longest time, if that is at least `evict_after`: closing ones
//!   first, then ordinary ones (idle, half-sent, or not reading their replies), and
//!   long-lived ones (pub/sub subscribers) last; a connection waiting on a handler is
//!   never evicted. With nothing to evict, the new connection gets the protocol's
//!   refusal at once and is closed, never queued. So idle or half-sent connections hold
//!   a full port for at most `evict_after` against real clients.
//! - **Bounded input**: at most `max_input` bytes buffered per connection; the protocol
//!   parses from that buffer and refuses what would not fit.
//! - **Timeouts**: idle (between requests), request (a request begun and not whole),
//!   write (replies the peer does not take).
//! - **An accept loop that never ends**: out of descriptors, it evicts an idle
//!   connection, or else refuses one queued connection with the spare descriptor
//!   (`accept.rs`); other errors are logged, throttled, and retried after a pause.
//!
//! A protocol ([`Protocol`]) sees a connection through [`Io`]: it consumes what it can
//! parse, queues output and says what [`Phase`] the connection is in. Other threads
//! reach a connection with [`Remote::send`], which wakes the loop. Timeouts are checked
//! by a sweep four times a second: they are whole seconds, and a timer per connection
//! would cost more than it buys.

use super::accept::{self, AcceptError, Spare, Throttle};
use super::conn::{Closing, Connection, Expiry, Table, Timeouts};
pub use super::conn::{ConnId, Io, Phase};
use super::transport::{self, Wrap};
use crate::shutdown::Shutdown;
use crossbeam_channel::{Receiver, Sender};
use polling::{Event, Events, PollMode, Poller};
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The poller key of the listener; connection keys are their slot plus one.
const LISTENER: usize = 0;
/// How often timeouts are checked.
const SWEEP: Duration = Duration::from_millis(250);
/// Connections accepted per turn of the loop, so a flood of new ones does not starve
/// the open ones.
const ACCEPT_BATCH: usize = 64;
/// A protocol is not asked for more replies while this much output waits.
const OUTPUT_HIGH: usize = 64 * 1024;
/// How often repeated warnings (refusals, accept errors) are logged.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// The listen queue: connections the kernel has completed and the loop has not taken
/// yet. The loop drains it continuously (refusing at the cap), so it only absorbs
/// bursts; std's 128 made a burst of connects wait a second for a SYN retransmit.
const BACKLOG: i32 = 1024;

/// The bounds of one port.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Bytes buffered per connection before its protocol has consumed them.
    pub max_input: usize,
    /// A connection between requests is closed after this long (None: never).
    pub idle_timeout: Option<Duration>,
    /// A request begun must be whole within this long.
    pub request_timeout: Duration,
    /// Queued output must make progress within this long.
    pub write_timeout: Duration,
    /// At the cap, a connection that made no progress for this long may be evicted.
    pub evict_after: Duration,
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The port is at its connection cap and no connection could be evicted.
    Full,
    /// The process is out of file descriptors.
    NoDescriptors,
}

/// A protocol served by the loop. All calls run on the loop thread and must not block.
pub trait Protocol: Send + 'static {
    /// Per-connection state.
    type Conn: Send;
    /// What other threads send to a connection (a handler's reply, a wake-up).
    type Message: Send + 'static;

    fn open(&mut self, id: ConnId, peer: SocketAddr) -> Self::Conn;
    /// New input (or a chance to go on after a reply was sent): consume what parses,
    /// queue replies, set the phase. Called only when the phase is not [`Phase::Busy`].
    fn input(&mut self, conn: &mut Self::Conn, io: &mut Io<'_>);
    /// A message for this connection from another thread.
    fn message(&mut self, conn: &mut Self::Conn, message: Self::Message, io: &mut Io<'_>);
    /// The request under way ran out of time: last words before the connection closes.
    fn timed_out(&mut self, _conn: &mut Self::Conn, _io: &mut Io<'_>) {}
    /// What a refused connection is told.
    fn refusal(&self, why: Refusal) -> Vec<u8>;
}

/// How another thread reaches a connection: a message, and a wake-up for the loop.
pub struct Remote<M> {
    tx: Sender<(ConnId, M)>,
    poller: Arc<Poller>,
}

impl<M> Clone for Remote<M> {
    fn clone(&self) -> Self {
        Remote {
            tx: self.tx.clone(),
            poller: self.poller.clone(),
        }
    }
}

impl<M: Send + 'static> Remote<M> {
    /// Sends `message` to connection `to` (dropped if it has closed); false once the
    /// loop has stopped.
    pub fn send(&self, to: ConnId, message: M) -> bool {
        if self.tx.send((to, message)).is_err() {
            return false;
        }
        if let Err(e) = self.poller.notify() {
            log::warn!("cannot wake an event loop: {e}");
        }
        true
    }
}

/// A bound listener, not served yet: connections queue in the kernel until
/// [`Bound::start`].
pub struct Bound<M> {
    listener: TcpListener,
    poller: Arc<Poller>,
    tx: Sender<(ConnId, M)>,
    rx: Receiver<(ConnId, M)>,
    local_addr: SocketAddr,
    wrap: Wrap,
}

impl<M: Send + 'static> Bound<M> {
    pub fn bind(addr: &str) -> io::Result<Bound<M>> {
        let listener = listen(addr)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let poller = Arc::new(Poller::new()?);
        let (tx, rx) = crossbeam_channel::unbounded();
        Ok(Bound {
            listener,
            poller,
            tx,
            rx,
            local_addr,
            wrap: transport::plain(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How other threads will reach this port's connections.
    pub fn remote(&self) -> Remote<M> {
        Remote {
            tx: self.tx.clone(),
            poller: self.poller.clone(),
        }
    }

    /// Serves connections through another transport (TLS) instead of plain TCP.
    pub fn with_transport(mut self, wrap: Wrap) -> Self {
        self.wrap = wrap;
        self
    }

    /// Starts the loop thread `name`; it stops when `shutdown` is triggered.
    pub fn start<P: Protocol<Message = M>>(
        self,
        name: &str,
        limits: Limits,
        protocol: P,
        shutdown: &Shutdown,
    ) -> io::Result<Running> {
        // SAFETY: the listener is deleted from the poller (`EventLoop::finish`) before
        // the loop drops it.
        unsafe {
            self.poller.add_with_mode(
                &self.listener,
                Event::readable(LISTENER),
                PollMode::Level,
            )?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        {
            let stop = stop.clone();
            let poller = self.poller.clone();
            shutdown.on_trigger(move || {
                stop.store(true, Ordering::SeqCst);
                let _ = poller.notify();
            });
        }
        let event_loop = EventLoop {
            name: name.to_string(),
            listener: self.listener,
            poller: self.poller,
            limits,
            protocol,
            wrap: self.wrap,
            mailbox: self.rx,
            stop,
            conns: Table::default(),
            spare: Spare::new(),
            paused_until: None,
            warnings: Warnings::default(),
        };
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || event_loop.run())?;
        Ok(Running {
            thread: Some(thread),
        })
    }
}

/// Binds and listens on the first of `addr`'s addresses that works, as
/// `TcpListener::bind` does, with a longer listen queue.
fn listen(addr: &str) -> io::Result<TcpListener> {
    let mut last = None;
    for addr in addr.to_socket_addrs()? {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        let bound = socket
            .set_reuse_address(true)
            .and_then(|()| socket.bind(&addr.into()))
            .and_then(|()| socket.listen(BACKLOG));
        match bound {
            Ok(()) => return Ok(socket.into()),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to listen on")))
}

/// A running loop.
pub struct Running {
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// Waits for the loop to end (after the shutdown given to [`Bound::start`]).
    pub fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Counts behind the throttled warnings.
#[derive(Default)]
struct Warnings {
    refused: u64,
    evicted: u64,
    at_cap: Throttle,
    accept: Throttle,
}

struct EventLoop<P: Protocol> {
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
    fn run(mut self) {
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
                    conn.last_active = now;
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
        while conn.dirty && conn.takes_input(OUTPUT_HIGH) {
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
            conn.last_active = now;
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
                    if self.evict(Instant::now()) {
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
        if self.conns.len() >= self.limits.max_connections && !self.evict(now) {
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
            .insert(Connection::new(id, transport, state, now));
    }

    /// Closes the connection that is the best to lose, if any may go; true if one did.
    fn evict(&mut self, now: Instant) -> bool {
        let evict_after = self.limits.evict_after;
        let victim = self
            .conns
            .iter()
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
        if refused + evicted > 0 && self.warnings.at_cap.allow(now, WARN_EVERY).is_some() {
            log::warn!(
                "{}: {} connections open (cap {}); refused {refused} and evicted {evicted} since the last warning",
                self.name,
                self.conns.len(),
                self.limits.max_connections
            );
            self.warnings.refused = 0;
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
