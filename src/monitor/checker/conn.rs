//! [`Conn`]: one kept, non-blocking connection from a checker thread to one server, and
//! the probes that run on it one after the other.
//!
//! A probe's life: connect (unless the connection is open), send `AUTH` (on a new
//! connection) and the probe's commands in one write, read the replies from whatever the
//! socket has when `epoll` says it is readable, and finish when every reply is in. Reads
//! never wait: a reply cut into pieces is kept in the connection's buffer until the rest
//! arrives. Whatever happens, the probe ends by its deadline; the shard fails it then
//! ([`Conn::expire`]) and the connection, out of step, is closed.
//!
//! Between probes the connection stays registered for readiness: if the server closes it
//! (EOF, a reset) or sends something unasked, the connection is closed at once and the
//! shard reports the closed link.
//!
//! With `tls = true` the socket is wrapped in a TLS session once the connect finishes
//! ([`Link`]): the probe's commands are handed to rustls at once and go out when the
//! handshake is done, within the same deadline; records rustls could not send yet keep
//! the socket registered for writability, and plaintext it already decrypted is read
//! before waiting again.

use super::io::Io;
use super::link::Link;
use super::{Answer, Probe, ProbeKind, ProbeResult};
use crate::address::Addr;
use crate::error::Error;
use crate::net::tls::{Session, Side, explain_io};
use crate::redis::resp::{self, Reply};
use crate::redis::{parse_role, read_replication_info};
use polling::{Event, PollMode};
use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The largest reply accepted: a bulk string at the parser's limit, and some room.
pub const MAX_REPLY: usize = resp::MAX_BULK + 64 * 1024;
/// A buffer grown past this for a large reply (INFO) is released once it is read.
const KEEP_BUFFER: usize = 512;

/// A probe on its way, with its own deadline.
#[derive(Debug)]
pub struct Pending {
    pub probe: Probe,
    pub started: Instant,
    /// The deadline, before the thread's own lateness is added (see `shard.rs`).
    pub deadline: Instant,
    /// The thread's total lateness when the probe started: whatever it adds while the
    /// probe runs moves the probe's deadline, for the daemon's slowness is not the
    /// server's.
    pub late_at_start: Duration,
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No socket.
    Closed,
    /// Waiting for the resolver to name the address.
    Resolving,
    /// Waiting for a connect slot: `io::MAX_CONNECTING` are under way.
    Queued,
    /// A non-blocking connect under way (registered writable).
    Connecting,
    /// Connected (registered readable); a probe is running when `current` is set.
    Open,
}

/// One server, seen from one checker thread for one watch.
pub struct Conn {
    pub watch_id: u64,
    pub addr: Addr,
    /// The shard's key for this connection (its slot).
    slot: usize,
    link: Option<Link>,
    state: State,
    /// Where a connection waiting for a connect slot will connect.
    target: Option<SocketAddr>,
    current: Option<Pending>,
    queue: VecDeque<Pending>,
    /// Bytes of replies read and not yet parsed.
    input: Vec<u8>,
    /// Bytes to send that the socket did not take yet.
    output: Vec<u8>,
    /// Replies expected for the current probe, `AUTH`'s first when it was sent.
    expected: usize,
    auth_sent: bool,
    replies: Vec<Reply>,
    /// The current probe runs on a connection opened for an earlier one.
    reused: bool,
    /// The socket is registered for writability too (output is waiting).
    wants_write: bool,
    /// The server answered the beacon with an error: it is not sent again.
    beacon_refused: bool,
    /// Bumped whenever a probe starts, so a stale deadline is recognised.
    pub generation: u64,
    /// The latest instant a deadline entry of the current probe is set for.
    armed: Option<Instant>,
    pub last_used: Instant,
}

/// How a failure leaves the connection.
enum Failure {
    /// The probe failed; the connection is out of step and is closed.
    Probe(String),
    /// A kept connection turned out closed before any reply byte came: the probe is
    /// tried once more on a fresh connection, within its deadline.
    Stale(String),
}

impl Conn {
    pub fn new(watch_id: u64, addr: Addr, slot: usize, now: Instant) -> Conn {
        Conn {
            watch_id,
            addr,
            slot,
            link: None,
            state: State::Closed,
            target: None,
            current: None,
            queue: VecDeque::new(),
            input: Vec::new(),
            output: Vec::new(),
            expected: 0,
            auth_sent: false,
            replies: Vec::new(),
            reused: false,
            wants_write: false,
            beacon_refused: false,
            generation: 0,
            armed: None,
            last_used: now,
        }
    }

    /// Whether nothing is running or waiting on this connection.
    pub fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty()
    }

    pub fn is_resolving(&self) -> bool {
        self.state == State::Resolving
    }

    /// Starts a probe if the connection is free, or queues it. A free connection never
    /// touches its queue, so the queue of most connections stays unallocated.
    pub fn submit(&mut self, pending: Pending, io: &mut Io) {
        self.last_used = pending.started;
        if self.current.is_none() && self.queue.is_empty() {
            self.begin(pending, io);
        } else {
            self.queue.push_back(pending);
        }
        self.start_next(io);
    }

    /// Starts the next queued probe, if none is running.
    fn start_next(&mut self, io: &mut Io) {
        while self.current.is_none() {
            let Some(next) = self.queue.pop_front() else {
                return;
            };
            self.begin(next, io);
        }
    }

    /// Starts `next` on this free connection (or fails it when its deadline passed).
    fn begin(&mut self, next: Pending, io: &mut Io) {
        if next.deadline <= Instant::now() {
            self.finish(
                next,
                Err("timed out waiting for the probe before it".into()),
                io,
            );
            return;
        }
        self.generation += 1;
        io.deadlines.push(next.deadline, self.slot, self.generation);
        self.armed = Some(next.deadline);
        self.current = Some(next);
        match self.state {
            State::Open => {
                self.reused = true;
                self.send(io);
            }
            State::Closed => self.connect(io),
            State::Resolving | State::Queued | State::Connecting => {}
        }
    }

    /// Starts connecting (after resolving the address if it is a name).
    fn connect(&mut self, io: &mut Io) {
        self.reused = false;
        match io.resolver.lookup(&self.addr) {
            None => self.state = State::Resolving,
            Some(Err(e)) => self.fail(Failure::Probe(e), io),
            Some(Ok(target)) => self.connect_to(target, io),
        }
    }

    /// The resolver answered for this connection's address.
    pub fn resolved(&mut self, io: &mut Io) {
        if self.state == State::Resolving {
            self.state = State::Closed;
            if self.current.is_some() {
                self.connect(io);
            }
        }
    }

    fn connect_to(&mut self, target: SocketAddr, io: &mut Io) {
        if !io.connects.take() {
            self.state = State::Queued;
            self.target = Some(target);
            io.connects.queue(self.slot);
            return;
        }
        let started = (|| {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(target),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )?;
            socket.set_nonblocking(true)?;
            socket.set_nodelay(true)?;
            match socket.connect(&target.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            let stream: TcpStream = socket.into();
            // SAFETY: the socket is removed from the poller in `close` before it drops.
            unsafe {
                io.poller
                    .add_with_mode(&stream, Event::writable(self.slot), PollMode::Level)?;
            }
            Ok(stream)
        })();
        match started {
            Ok(stream) => {
                self.link = Some(Link::Plain(stream));
                self.state = State::Connecting;
            }
            Err(e) => {
                io.connects.release();
                self.fail(Failure::Probe(format!("connect: {e}")), io)
            }
        }
    }

    /// A connect slot is free for this connection, which waited in line: the time it
    /// waited was the daemon's, so the probe's whole deadline starts `now`.
    pub fn dequeued(&mut self, now: Instant, io: &mut Io) {
        if self.state != State::Queued {
            return;
        }
        self.state = State::Closed;
        let (Some(current), Some(target)) = (self.current.as_mut(), self.target.take()) else {
            return;
        };
        current.deadline = now + io.timeout;
        self.connect_to(target, io);
    }

    /// Readiness reported by the poller.
    pub fn on_event(&mut self, event: Event, io: &mut Io) {
        match self.state {
            State::Connecting if event.writable || event.readable => self.connected(io),
            State::Open => {
                let records = self.link.as_ref().is_some_and(Link::wants_write);
                if event.writable && (!self.output.is_empty() || records) {
                    self.flush(io);
                }
                if event.readable && self.state == State::Open {
                    self.receive(io);
                }
            }
            _ => {}
        }
    }

    /// The connect finished, one way or the other.
    fn connected(&mut self, io: &mut Io) {
        if self.state == State::Connecting {
            self.state = State::Open;
            io.connects.release();
        }
        let error = match &self.link {
            Some(link) => match link.socket().take_error() {
                Ok(None) => link.socket().peer_addr().err(),
                Ok(Some(e)) | Err(e) => Some(e),
            },
            None => return,
        };
        if let Some(e) = error {
            return self.fail(Failure::Probe(format!("connect: {e}")), io);
        }
        if let Some(tls) = io.tls
            && let Some(Link::Plain(socket)) = self.link.take()
        {
            match tls.client_connection(&self.addr.host) {
                Ok(session) => self.link = Some(Link::Tls(Box::new(Session::new(session, socket)))),
                Err(e) => {
                    self.link = Some(Link::Plain(socket));
                    return self.fail(Failure::Probe(format!("TLS: {e}")), io);
                }
            }
        }
        self.state = State::Open;
        self.wants_write = false;
        if let Some(link) = &self.link
            && let Err(e) = io.poller.modify_with_mode(
                link.socket(),
                Event::readable(self.slot),
                PollMode::Level,
            )
        {
            return self.fail(Failure::Probe(format!("poller: {e}")), io);
        }
        self.auth_sent = false;
        if self.current.is_some() {
            self.send(io);
        }
    }

    /// Sends the current probe's commands (after `AUTH` on a new connection).
    fn send(&mut self, io: &mut Io) {
        let Some(current) = &self.current else {
            return;
        };
        self.output.clear();
        self.expected = 0;
        self.replies.clear();
        self.input.clear();
        if !self.reused
            && let Some(auth) = &io.scripts.auth
        {
            self.output.extend_from_slice(auth);
            self.expected += 1;
            self.auth_sent = true;
        } else {
            self.auth_sent = false;
        }
        let (bytes, replies) = match current.probe.kind {
            ProbeKind::Master if !self.beacon_refused => (&io.scripts.master, 2),
            ProbeKind::Master | ProbeKind::Role => (&io.scripts.role, 1),
            ProbeKind::Info => (&io.scripts.info, 2),
        };
        self.output.extend_from_slice(bytes);
        self.expected += replies;
        self.flush(io);
    }

    /// Writes what the socket takes; the rest waits for it to be writable.
    fn flush(&mut self, io: &mut Io) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let written = loop {
            if self.output.is_empty() {
                break link.flush().map(|()| 0);
            }
            match link.write(&self.output) {
                Ok(n) => break Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(0),
                Err(e) => break Err(e),
            }
        };
        match written {
            Ok(n) => {
                self.output.drain(..n);
                self.update_interest(io);
            }
            Err(e) => {
                let why = format!("send: {}", self.explain(&e, io));
                let failure = self.stale_or(why);
                self.fail(failure, io);
            }
        }
    }

    /// Polls for writability only while output (or TLS records) waits. The registration
    /// changes only when the interest does: a syscall saved on nearly every probe,
    /// whose few bytes the socket takes at once.
    fn update_interest(&mut self, io: &mut Io) {
        let Some(link) = self.link.as_ref() else {
            return;
        };
        let wants_write = !self.output.is_empty() || link.wants_write();
        if wants_write == self.wants_write {
            return;
        }
        self.wants_write = wants_write;
        let interest = if wants_write {
            Event::all(self.slot)
        } else {
            Event::readable(self.slot)
        };
        if let Err(e) = io
            .poller
            .modify_with_mode(link.socket(), interest, PollMode::Level)
        {
            self.fail(Failure::Probe(format!("poller: {e}")), io);
        }
    }

    /// An I/O error in plain words (a TLS failure says what was refused).
    fn explain(&self, e: &std::io::Error, io: &Io) -> String {
        match io.tls {
            Some(tls) => explain_io(
                e,
                Side::Client {
                    has_cert: tls.has_client_cert(),
                },
            ),
            None => e.to_string(),
        }
    }

    /// Reads what is there and parses whole replies; never waits for more (plaintext a
    /// TLS session already decrypted is read too: the socket will not signal it).
    fn receive(&mut self, io: &mut Io) {
        loop {
            let Some(link) = self.link.as_mut() else {
                return;
            };
            let handshaking = link.handshaking();
            let read = loop {
                match link.read(io.scratch) {
                    Ok(n) => break Ok(n),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break Err(None),
                    Err(e) => break Err(Some(e)),
                }
            };
            let n = match read {
                Ok(0) => {
                    return self.closed_by_server("connection closed by the server".into(), io);
                }
                Ok(n) => n,
                // Nothing to read (for TLS: records processed, no plaintext yet); a
                // handshake may have records to send.
                Err(None) => return self.update_interest(io),
                Err(Some(e)) => {
                    let what = if handshaking {
                        "TLS handshake"
                    } else {
                        "connection lost"
                    };
                    let why = format!("{what}: {}", self.explain(&e, io));
                    return self.closed_by_server(why, io);
                }
            };
            if self.current.is_none() {
                // Nothing was asked: a server that talks unasked is out of step.
                return self
                    .closed_by_server(format!("{n} unexpected byte(s) from the server"), io);
            }
            if self.input.len() + n > MAX_REPLY {
                return self.fail(
                    Failure::Probe(format!("reply larger than {MAX_REPLY} bytes")),
                    io,
                );
            }
            self.input.extend_from_slice(&io.scratch[..n]);
            self.parse_replies(io);
            if !self.link.as_ref().is_some_and(Link::buffered) {
                return;
            }
        }
    }

    /// Takes every whole reply from the buffer; finishes the probe once all are in.
    fn parse_replies(&mut self, io: &mut Io) {
        let mut used = 0;
        while self.replies.len() < self.expected {
            match resp::parse(&self.input[used..]) {
                Ok(Some((reply, n))) => {
                    used += n;
                    self.replies.push(reply);
                }
                Ok(None) => break,
                Err(garbage) => {
                    return self.fail(Failure::Probe(format!("garbage reply: {garbage}")), io);
                }
            }
        }
        self.input.drain(..used);
        if self.replies.len() < self.expected {
            return;
        }
        if !self.input.is_empty() {
            let extra = self.input.len();
            return self.fail(
                Failure::Probe(format!("{extra} byte(s) after the reply")),
                io,
            );
        }
        if self.input.capacity() > KEEP_BUFFER {
            self.input = Vec::new();
        }
        let answer = self.answer();
        if self.auth_sent && answer.as_ref().is_err_and(|e| e.starts_with("AUTH")) {
            // Not logged in: the next probe must not run on this connection unseen.
            return self.fail(Failure::Probe(answer.err().unwrap_or_default()), io);
        }
        if let Some(done) = self.current.take() {
            self.finish(done, answer, io);
        }
        self.start_next(io);
    }

    /// The current probe's answer from its replies.
    fn answer(&mut self) -> Result<Answer, String> {
        let mut replies = std::mem::take(&mut self.replies);
        if self.auth_sent {
            let auth = replies.remove(0);
            if let Reply::Error(e) = auth {
                return Err(format!("AUTH: {e}"));
            }
        }
        let kind = self.current.as_ref().map(|c| c.probe.kind);
        if let (Some(ProbeKind::Master), [_, Reply::Error(e)]) = (kind, replies.as_slice()) {
            // LedisDB has no PUBLISH; an ACL user may lack +publish. The check stands.
            log::info!(
                "{}: refuses the beacon ({e}); replicas' last I/O will not show that it lives",
                self.addr
            );
            self.beacon_refused = true;
        }
        match (kind, replies.as_slice()) {
            (Some(ProbeKind::Role | ProbeKind::Master), [Reply::Error(e), ..]) => Err(e.clone()),
            (Some(ProbeKind::Role | ProbeKind::Master), [role, ..]) => {
                parse_role(role).map(Answer::Role)
            }
            (Some(ProbeKind::Info), replies) => read_replication_info(replies).map(Answer::Info),
            _ => Err("unexpected replies".into()),
        }
    }

    /// The server closed the connection, or it broke.
    fn closed_by_server(&mut self, why: String, io: &mut Io) {
        if self.current.is_some() {
            let failure = self.stale_or(why);
            return self.fail(failure, io);
        }
        self.close(io);
        io.closed(self.watch_id, &self.addr, why);
    }

    /// A probe that failed on a reused connection before any reply byte came is tried
    /// again on a fresh one: the server may have closed the idle connection meanwhile.
    fn stale_or(&self, why: String) -> Failure {
        if self.reused && self.input.is_empty() && self.replies.is_empty() {
            Failure::Stale(why)
        } else {
            Failure::Probe(why)
        }
    }

    fn fail(&mut self, failure: Failure, io: &mut Io) {
        self.close(io);
        match failure {
            Failure::Stale(why) => {
                io.closed(self.watch_id, &self.addr, why);
                // The same probe, the same deadline, a new connection.
                if self.current.is_some() {
                    self.connect(io);
                }
            }
            Failure::Probe(why) => {
                if let Some(done) = self.current.take() {
                    self.finish(done, Err(why), io);
                }
                self.start_next(io);
            }
        }
    }

    /// The deadline of the probe started as `generation` passed.
    pub fn expire(&mut self, generation: u64, now: Instant, io: &mut Io) {
        let Some(current) = self.current.as_ref() else {
            return;
        };
        if generation != self.generation {
            return;
        }
        // The daemon's own lateness since the probe started is not the server's.
        let due = current.deadline + io.late_total.saturating_sub(current.late_at_start);
        if due > now {
            if self.armed.is_none_or(|armed| armed < due) {
                io.deadlines.push(due, self.slot, self.generation);
                self.armed = Some(due);
            }
            return;
        }
        // A reply that is there, unread, is not a timeout.
        if self.state == State::Open {
            self.receive(io);
            if generation != self.generation || self.current.is_none() {
                return;
            }
        }
        let command = match self.current.as_ref().map(|c| c.probe.kind) {
            Some(ProbeKind::Info) => "INFO",
            _ => "ROLE",
        };
        let handshaking = self.link.as_ref().is_some_and(Link::handshaking);
        let why = match self.state {
            State::Resolving => "timed out resolving the address".to_string(),
            State::Queued => "timed out waiting for a connect slot".to_string(),
            State::Connecting => "connect timed out".to_string(),
            _ if handshaking => "TLS handshake timed out".to_string(),
            _ if self.input.is_empty() && self.replies.is_empty() => {
                format!("{command}: read timed out (no reply)")
            }
            _ => format!("{command}: read timed out (the reply did not end in time)"),
        };
        self.fail(Failure::Probe(why), io);
    }

    fn finish(&self, done: Pending, answer: Result<Answer, String>, io: &mut Io) {
        io.report.results.push(ProbeResult {
            probe: done.probe,
            started: done.started,
            finished: Instant::now(),
            answer: answer.map_err(|e| Error::Server(format!("{}: {e}", self.addr))),
        });
    }

    /// Closes the socket (removing it from the poller first); queued probes stay.
    pub fn close(&mut self, io: &mut Io) {
        if let Some(link) = self.link.take() {
            let _ = io.poller.delete(link.socket());
        }
        match self.state {
            State::Connecting => io.connects.release(),
            // Still in line: `dequeued` will find it closed and pass it over.
            State::Queued => self.target = None,
            _ => {}
        }
        self.state = State::Closed;
        self.wants_write = false;
        self.input = Vec::new();
        self.output = Vec::new();
        self.replies.clear();
    }

    /// Fails everything running or queued (the connection is being dropped).
    pub fn abandon(&mut self, why: &str, io: &mut Io) {
        self.close(io);
        let pending: Vec<Pending> = self
            .current
            .take()
            .into_iter()
            .chain(self.queue.drain(..))
            .collect();
        for done in pending {
            self.finish(done, Err(why.into()), io);
        }
    }
}
