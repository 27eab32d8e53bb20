//! One connection of the server (`server.rs`): its transport, its bounded input buffer,
//! its output queue, the protocol's state, and the clocks that the timeouts and the
//! eviction policy read. Also [`Io`], the protocol's view of a connection, and the table
//! the loop keeps connections in.
//!
//! Kept apart from the loop so that the rules about one connection (how much it may
//! buffer, when it has run out of time, how it closes) are in one place.

use super::transport::Transport;
use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Largest read in one call.
const READ_CHUNK: usize = 16 * 1024;
/// After a connection is closed with a last reply, its unread input is read and dropped
/// for this long (or until the peer closes), so the reply is not lost to a TCP reset.
pub const LINGER: Duration = Duration::from_secs(2);
/// ... and at most this much of it.
pub const LINGER_BYTES: usize = 1024 * 1024;
/// Buffers that grew beyond this are given back once empty, so idle connections stay
/// small.
const KEEP_CAPACITY: usize = 16 * 1024;
/// The write timeout starts again only once the peer has taken this much of its queued
/// output (or all of it): a reader taking a byte now and then cannot keep a large reply
/// buffered for ever. With the 30 s write timeouts, a peer must read about 550 bytes a
/// second while it has output waiting.
pub const WRITE_PROGRESS: usize = 16 * 1024;

/// A connection's address: its slot in the table and a serial number that is never
/// reused, so a message for a closed connection never reaches the next one in its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub(super) slot: usize,
    serial: u64,
}

impl ConnId {
    /// A number unique to this connection for the life of the port (Redis's client id).
    pub fn serial(&self) -> u64 {
        self.serial
    }
}

/// Where a connection is between requests, as its protocol says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests: the idle timeout runs (unless the connection is long-lived).
    Idle,
    /// A request has begun and is not whole: the request timeout runs.
    Reading,
    /// A whole request is with another thread: no timeout; input is buffered but the
    /// protocol is not asked to parse it until a message comes back.
    Busy,
}

/// How far a connection is in closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    Open,
    /// Its protocol asked to close: the queued output goes first.
    Flushing,
    /// Output sent and the write side shut: unread input is dropped until the peer
    /// closes, `until` passes, or [`LINGER_BYTES`] were dropped.
    Lingering {
        until: Instant,
        dropped: usize,
    },
}

/// Output waiting to be sent.
#[derive(Default)]
pub struct Output {
    buf: Vec<u8>,
    pos: usize,
    /// When the write timeout last started: the queue was filled from empty, or the
    /// peer took [`WRITE_PROGRESS`] bytes.
    since: Option<Instant>,
    /// Bytes the peer took since then.
    progress: usize,
}

impl Output {
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn push(&mut self, bytes: &[u8], now: Instant) {
        if self.pending() == 0 {
            self.buf.clear();
            self.pos = 0;
            self.restart(now);
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Queues `bytes`, taking the buffer itself when nothing else waits (no copy).
    fn push_owned(&mut self, bytes: Vec<u8>, now: Instant) {
        if self.pending() == 0 {
            self.buf = bytes;
            self.pos = 0;
            self.restart(now);
        } else {
            self.buf.extend_from_slice(&bytes);
        }
    }

    fn restart(&mut self, now: Instant) {
        self.since = Some(now);
        self.progress = 0;
    }

    fn advance(&mut self, n: usize, now: Instant) {
        self.pos += n;
        self.progress += n;
        if self.progress >= WRITE_PROGRESS || self.pos == self.buf.len() {
            self.restart(now);
        }
        if self.pos == self.buf.len() {
            self.pos = 0;
            self.buf.clear();
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            }
        }
    }
}

/// What a protocol sees of a connection while it handles input or a message.
pub struct Io<'a> {
    input: &'a mut Vec<u8>,
    output: &'a mut Output,
    now: Instant,
    outcome: Outcome,
}

/// What the protocol decided, applied to the connection afterwards.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    phase: Phase,
    long_lived: bool,
    close: bool,
    abort: bool,
    completed: bool,
    consumed: usize,
}

impl Io<'_> {
    /// Bytes received and not consumed yet.
    pub fn input(&self) -> &[u8] {
        self.input
    }

    /// Drops the first `n` bytes of the input (what the protocol has parsed).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.input.len());
        self.input.drain(..n);
        self.outcome.consumed += n;
    }

    /// Queues bytes to send.
    pub fn write(&mut self, bytes: &[u8]) {
        self.output.push(bytes, self.now);
    }

    /// Queues a buffer to send, without copying it when nothing else waits (a large
    /// reply).
    pub fn write_owned(&mut self, bytes: Vec<u8>) {
        self.output.push_owned(bytes, self.now);
    }

    /// Bytes queued and not sent yet.
    pub fn pending_output(&self) -> usize {
        self.output.pending()
    }

    pub fn set_phase(&mut self, phase: Phase) {
        self.outcome.phase = phase;
    }

    /// A long-lived connection (a pub/sub subscriber) has no idle timeout and is evicted
    /// last.
    pub fn set_long_lived(&mut self, long_lived: bool) {
        self.outcome.long_lived = long_lived;
    }

    /// A request was finished and accepted: the idle clock and the request clock start
    /// again, and the connection counts as a real client's for eviction. A request
    /// refused (no authentication, a wrong token, an unknown path) must not call this:
    /// refused traffic never keeps a connection alive.
    pub fn completed(&mut self) {
        self.outcome.completed = true;
    }

    /// Close once the queued output is sent.
    pub fn close(&mut self) {
        self.outcome.close = true;
    }

    /// Close now, dropping any queued output.
    pub fn abort(&mut self) {
        self.outcome.abort = true;
    }

    /// What the protocol decided, for `Connection::apply`.
    pub(super) fn finish(self) -> Outcome {
        self.outcome
    }
}

/// Why the sweep ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Close it now, silently (idle, lingering done, or not taking its output).
    Drop,
    /// Its request ran out of time: its protocol may say so, then it closes.
    Timeout,
}

/// The timeouts of a port (see `server::Limits`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle: Option<Duration>,
    pub request: Duration,
    pub write: Duration,
}

/// One connection.
pub struct Connection<C> {
    pub id: ConnId,
    /// The peer's address: the per-source cap counts by it.
    pub source: IpAddr,
    /// A request of this connection was accepted once (see [`Io::completed`]).
    pub earned: bool,
    pub transport: Box<dyn Transport>,
    pub state: C,
    pub input: Vec<u8>,
    pub output: Output,
    pub phase: Phase,
    pub long_lived: bool,
    pub closing: Closing,
    /// The peer ended its stream.
    pub peer_closed: bool,
    /// Input or state changed since the protocol last looked.
    pub dirty: bool,
    /// What the poller watches for: (readable, writable).
    pub interest: (bool, bool),
    pub last_active: Instant,
    pub request_started: Instant,
}

impl<C> Connection<C> {
    pub fn new(
        id: ConnId,
        source: IpAddr,
        transport: Box<dyn Transport>,
        state: C,
        now: Instant,
    ) -> Self {
        Connection {
            id,
            source,
            earned: false,
            transport,
            state,
            input: Vec::new(),
            output: Output::default(),
            phase: Phase::Idle,
            long_lived: false,
            closing: Closing::Open,
            peer_closed: false,
            dirty: false,
            interest: (true, false),
            last_active: now,
            request_started: now,
        }
    }

    /// The protocol's state and its view of the connection.
    pub fn split(&mut self, now: Instant) -> (&mut C, Io<'_>) {
        let outcome = Outcome {
            phase: self.phase,
            long_lived: self.long_lived,
            close: false,
            abort: false,
            completed: false,
            consumed: 0,
        };
        let io = Io {
            input: &mut self.input,
            output: &mut self.output,
            now,
            outcome,
        };
        (&mut self.state, io)
    }

    /// Applies what the protocol decided (`Io::finish`); false when the connection must
    /// go now.
    pub fn apply(&mut self, o: Outcome, now: Instant) -> bool {
        let was = self.phase;
        self.phase = o.phase;
        self.long_lived = o.long_lived;
        if o.completed {
            self.last_active = now;
            self.earned = true;
        }
        if o.phase == Phase::Reading && (was != Phase::Reading || o.completed) {
            self.request_started = now;
        }
        if o.close && self.closing == Closing::Open {
            self.closing = Closing::Flushing;
        }
        if self.input.is_empty() && self.input.capacity() > KEEP_CAPACITY {
            self.input = Vec::new();
        }
        !o.abort
    }

    /// Whether the protocol may be asked to parse input now.
    pub fn takes_input(&self, output_high: usize) -> bool {
        self.closing == Closing::Open
            && self.phase != Phase::Busy
            && self.output.pending() < output_high
    }

    /// Reads what the socket has, up to the input limit (or drops it while lingering).
    /// An error means the connection is broken and must go.
    pub fn read_available(&mut self, max_input: usize) -> io::Result<()> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            let lingering = matches!(self.closing, Closing::Lingering { .. });
            let room = if lingering {
                READ_CHUNK
            } else {
                max_input.saturating_sub(self.input.len()).min(READ_CHUNK)
            };
            if room == 0 || self.peer_closed {
                return Ok(());
            }
            match self.transport.read(&mut chunk[..room]) {
                Ok(0) => self.peer_closed = true,
                Ok(n) => {
                    if let Closing::Lingering { dropped, .. } = &mut self.closing {
                        *dropped += n;
                        if *dropped > LINGER_BYTES {
                            return Err(io::Error::other("too much input after the last reply"));
                        }
                    } else {
                        self.input.extend_from_slice(&chunk[..n]);
                        self.dirty = true;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends what the socket takes of the queued output; true when that emptied a queue
    /// that was not empty.
    pub fn flush(&mut self, now: Instant) -> io::Result<bool> {
        let had = self.output.pending() > 0;
        while self.output.pending() > 0 {
            let pending = &self.output.buf[self.output.pos..];
            match self.transport.write(pending) {
                Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "peer takes no more")),
                Ok(n) => self.output.advance(n, now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        match self.transport.flush() {
            Err(e) if e.kind() != ErrorKind::WouldBlock => return Err(e),
            _ => {}
        }
        Ok(had && self.output.pending() == 0)
    }

    /// Shuts the write side once the last reply is out, and lingers; false when the
    /// peer has gone already and the connection can simply be closed.
    pub fn half_close(&mut self, now: Instant) -> bool {
        self.transport.shutdown_write();
        self.input = Vec::new();
        self.closing = Closing::Lingering {
            until: now + LINGER,
            dropped: 0,
        };
        !self.peer_closed
    }

    /// What the poller should watch for.
    pub fn wants(&self, max_input: usize) -> (bool, bool) {
        let lingering = matches!(self.closing, Closing::Lingering { .. });
        let read = !self.peer_closed && (lingering || self.input.len() < max_input);
        let write = self.output.pending() > 0 || self.transport.wants_write();
        (read, write)
    }

    /// Whether the connection has run out of time.
    pub fn expired(&self, now: Instant, timeouts: &Timeouts) -> Option<Expiry> {
        if let Closing::Lingering { until, .. } = self.closing {
            return (now >= until).then_some(Expiry::Drop);
        }
        if let Some(since) = self.output.since.filter(|_| self.output.pending() > 0) {
            if now.saturating_duration_since(since) >= timeouts.write {
                return Some(Expiry::Drop);
            }
            return None;
        }
        if self.closing != Closing::Open {
            return None;
        }
        match self.phase {
            Phase::Busy => None,
            Phase::Reading => (now.saturating_duration_since(self.request_started)
                >= timeouts.request)
                .then_some(Expiry::Timeout),
            Phase::Idle => timeouts
                .idle
                .filter(|_| !self.long_lived)
                .filter(|idle| now.saturating_duration_since(self.last_active) >= *idle)
                .map(|_| Expiry::Drop),
        }
    }

    /// How readily the connection is evicted for a new one: (class, since when it made
    /// no progress); lower goes first. Closing connections are class 0; those that never
    /// had a request accepted (unauthenticated, refused, or silent) 1, counted from
    /// their last accepted request or their connect, whatever they send; ordinary ones
    /// 2; long-lived ones 3. One waiting on another thread is never evicted.
    pub fn eviction_key(&self) -> Option<(u8, Instant)> {
        if self.closing != Closing::Open {
            return Some((0, self.last_active));
        }
        if self.phase == Phase::Busy {
            return None;
        }
        if !self.earned {
            return Some((1, self.last_active));
        }
        let since = match self.output.since {
            Some(since) if self.output.pending() > 0 => since,
            _ if self.phase == Phase::Reading => self.request_started,
            _ => self.last_active,
        };
        Some((if self.long_lived { 3 } else { 2 }, since))
    }
}

/// The loop's connections, by slot.
pub struct Table<C> {
    slots: Vec<Option<Connection<C>>>,
    free: Vec<usize>,
    len: usize,
    serial: u64,
    /// Open connections by peer address.
    sources: HashMap<IpAddr, usize>,
}

impl<C> Default for Table<C> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            serial: 0,
            sources: HashMap::new(),
        }
    }
}

impl<C> Table<C> {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Connections open from `source`.
    pub fn open_from(&self, source: IpAddr) -> usize {
        self.sources.get(&source).copied().unwrap_or(0)
    }

    /// A fresh id for the connection about to be inserted.
    pub fn next_id(&mut self) -> ConnId {
        self.serial += 1;
        let slot = self.free.last().copied().unwrap_or(self.slots.len());
        ConnId {
            slot,
            serial: self.serial,
        }
    }

    /// Inserts a connection made with the last [`Table::next_id`].
    pub fn insert(&mut self, conn: Connection<C>) {
        let slot = conn.id.slot;
        *self.sources.entry(conn.source).or_default() += 1;
        if self.free.last() == Some(&slot) {
            self.free.pop();
            self.slots[slot] = Some(conn);
        } else {
            self.slots.push(Some(conn));
        }
        self.len += 1;
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Connection<C>> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// The connection `id` names, if it is still open.
    pub fn by_id(&mut self, id: ConnId) -> Option<&mut Connection<C>> {
        self.get_mut(id.slot).filter(|c| c.id == id)
    }

    pub fn remove(&mut self, slot: usize) -> Option<Connection<C>> {
        let conn = self.slots.get_mut(slot)?.take()?;
        self.free.push(slot);
        self.len -= 1;
        if let Some(count) = self.sources.get_mut(&conn.source) {
            *count -= 1;
            if *count == 0 {
                self.sources.remove(&conn.source);
            }
        }
        Some(conn)
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &Connection<C>)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| c.as_ref().map(|c| (slot, c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the output of a peer reading `bytes` every `every` seconds out of a
    /// 1 MB reply runs out of the 30 s write timeout within ten minutes, the way
    /// `Connection::expired` reads it.
    fn times_out(bytes: usize, every: u64) -> bool {
        let write = Duration::from_secs(30);
        let start = Instant::now();
        let mut output = Output::default();
        output.push(&vec![b'x'; 1024 * 1024], start);
        for second in (every..600).step_by(every as usize) {
            let now = start + Duration::from_secs(second);
            let since = output.since.unwrap_or(start);
            if now.saturating_duration_since(since) >= write {
                return true;
            }
            output.advance(bytes.min(output.pending()), now);
            if output.pending() == 0 {
                return false;
            }
        }
        false
    }

    /// The finding: a reader taking a byte a second kept its whole reply buffered, its
    /// write timeout starting again at each byte.
    #[test]
    fn a_trickling_reader_runs_out_of_time_and_a_slow_one_does_not() {
        assert!(times_out(1, 1), "one byte a second");
        assert!(times_out(400, 1), "400 bytes a second");
        assert!(times_out(1024, 29), "1 KB every 29 s");
        assert!(!times_out(WRITE_PROGRESS, 20), "16 KB every 20 s");
        assert!(!times_out(64 * 1024, 1), "64 KB a second");
    }
}
