//! The receiving side of the Raft port: accepts peers' connections and reads them, within
//! bounds a stranger cannot push.
//!
//! - At most [`MAX_INBOUND`] connections at once, each read by its own thread, so at
//!   most that many reader threads; and at most [`MAX_HANDSHAKING`] of them still in
//!   their handshake. A connection beyond either limit is closed at once and logged.
//! - A connection must complete its handshake (with `tls_raft` the TLS handshake, which
//!   requires a client certificate from the cluster's CA; then the hello, or the
//!   `raft_secret` challenge-response of `auth.rs`) within [`HANDSHAKE_TIMEOUT`]. After that it may
//!   stay idle (a follower's link to another follower carries nothing for a long time),
//!   but a record, once begun, must be whole within `wire::RECORD_TIMEOUT`.
//! - Accept errors (out of file descriptors, a connection aborted before it was
//!   accepted) are logged and retried after a pause: the listener lives as long as the
//!   transport.
//! - Anything else that goes wrong drops that one connection, logged with its address at
//!   a bounded rate (`log_limit.rs`); the rest of the cluster carries on.

use super::auth::ClusterKey;
use super::frame;
use super::handshake;
use super::log_limit::{LogLimiter, host_of, suppressed_note};
use super::state_machine::from_bytes;
use super::wire::{self, Hello};
use crate::broker::views::MastersView;
use crate::net::tls::{Stream, Tls};
use crate::shutdown::Shutdown;
use crate::sync::lock;
use crossbeam_channel::Sender;
use raft::eraftpb::Message;
use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Inbound connections open at once (and so reader threads). A cluster of N nodes needs
/// N - 1; the rest is room for links being made again while old ones time out.
pub const MAX_INBOUND: usize = 64;
/// Inbound connections that have not finished their handshake yet.
pub const MAX_HANDSHAKING: usize = 16;
/// How long an inbound connection may take to say (and, with a secret, prove) who it is.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a failed accept (out of descriptors: wait for some to be freed).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Peers the address book learns of from hellos alone (the raft thread records its
/// members itself); a stranger's hellos cannot grow it past this.
const MAX_BOOK: usize = 256;

/// What the transport hands to the raft thread.
#[derive(Debug)]
pub enum Event {
    /// A message from a peer, to be stepped, with the address it came from.
    Message(Box<Message>, Arc<str>),
    /// Sending to this peer failed.
    Unreachable(u64),
    /// A snapshot message to this peer was sent (true) or could not be (false).
    SnapshotSent(u64, bool),
    /// A peer's view of the masters (`broker/views.rs`), with the peer's id.
    View(u64, MastersView),
}

/// Where a peer can be reached.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerAddrs {
    pub raft_addr: String,
    /// Known once the peer has connected to us.
    pub http_addr: Option<String>,
    pub sentinel_addr: Option<String>,
}

/// The address book, shared by the raft thread, the senders and the readers.
pub type AddressBook = Arc<Mutex<HashMap<u64, PeerAddrs>>>;

/// Open inbound connections by serial number, so a stop can unblock their readers.
pub type Connections = Arc<Mutex<HashMap<u64, TcpStream>>>;

/// How many inbound connections are open, and how many of them are authenticated.
#[derive(Default)]
struct Slots {
    open: usize,
    handshaking: usize,
}

/// What the acceptor and every reader share.
pub struct Inbound {
    pub self_id: u64,
    pub key: Option<ClusterKey>,
    /// With `tls_raft`: every connection is mutual TLS.
    pub tls: Option<Arc<Tls>>,
    pub book: AddressBook,
    pub events: Sender<Event>,
    pub stop: Shutdown,
    pub connections: Connections,
    slots: Mutex<Slots>,
    refusals: LogLimiter,
}

impl Inbound {
    pub fn new(
        self_id: u64,
        key: Option<ClusterKey>,
        tls: Option<Arc<Tls>>,
        book: AddressBook,
        events: Sender<Event>,
        stop: Shutdown,
        connections: Connections,
    ) -> Inbound {
        Inbound {
            self_id,
            key,
            tls,
            book,
            events,
            stop,
            connections,
            slots: Mutex::new(Slots::default()),
            refusals: LogLimiter::new(20, Duration::from_secs(1)),
        }
    }

    /// Accepts connections until the transport stops, then joins the readers.
    pub fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        let mut readers: Vec<JoinHandle<()>> = Vec::new();
        let mut serial = 0u64;
        loop {
            let accepted = listener.accept();
            if self.stop.is_triggered() {
                break;
            }
            let (stream, from) = match accepted {
                Ok((stream, from)) => (stream, from.to_string()),
                Err(e) => {
                    self.warn("accept", &format!("raft: accept failed: {e}; retrying"));
                    self.stop.wait(ACCEPT_PAUSE);
                    continue;
                }
            };
            serial += 1;
            readers.retain(|r| !r.is_finished());
            if let Some(reader) = self.admit(stream, from, serial) {
                readers.push(reader);
            }
        }
        for (_, stream) in lock(&self.connections).drain() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        for reader in readers {
            let _ = reader.join();
        }
    }

    /// Starts a reader for a new connection, or closes it at once when the port is full.
    fn admit(
        self: &Arc<Self>,
        stream: TcpStream,
        from: String,
        serial: u64,
    ) -> Option<JoinHandle<()>> {
        {
            let mut slots = lock(&self.slots);
            let full = if slots.open >= MAX_INBOUND {
                Some(format!(
                    "{} connections are open (at most {MAX_INBOUND})",
                    slots.open
                ))
            } else if slots.handshaking >= MAX_HANDSHAKING {
                Some(format!(
                    "{} connections are in their handshake (at most {MAX_HANDSHAKING})",
                    slots.handshaking
                ))
            } else {
                None
            };
            if let Some(why) = full {
                drop(slots);
                let line = format!("raft: refused a connection from {from}: {why}");
                self.warn(host_of(&from), &line);
                return None;
            }
            slots.open += 1;
            slots.handshaking += 1;
        }
        crate::net::keep_alive(&stream);
        if let Ok(clone) = stream.try_clone() {
            lock(&self.connections).insert(serial, clone);
        }
        let slot = Slot {
            inbound: self.clone(),
            serial,
            authenticated: false,
        };
        let reader = Reader {
            inbound: self.clone(),
            from: from.into(),
            slot,
        };
        // Should the thread not start, the closure is dropped with the slot it holds.
        match std::thread::Builder::new()
            .name("raft-read".into())
            .spawn(move || reader.run(stream))
        {
            Ok(thread) => Some(thread),
            Err(e) => {
                self.warn("spawn", &format!("raft: cannot start a reader thread: {e}"));
                None
            }
        }
    }

    /// Logs a warning about `source`, unless it has had its share of lines for now.
    fn warn(&self, source: &str, line: &str) {
        if let Some(suppressed) = self.refusals.admit(source) {
            log::warn!("{line}{}", suppressed_note(suppressed));
        }
    }

    /// Records where a peer that said hello can be reached: a known peer's addresses are
    /// updated; an unknown one is added while the book is small.
    fn record_hello(&self, hello: &Hello) {
        let mut book = lock(&self.book);
        if !book.contains_key(&hello.id) && book.len() >= MAX_BOOK {
            return;
        }
        book.insert(
            hello.id,
            PeerAddrs {
                raft_addr: hello.raft_addr.clone(),
                http_addr: Some(hello.http_addr.clone()),
                sentinel_addr: hello.sentinel_addr.clone(),
            },
        );
    }
}

/// One inbound connection's place in the limits, given back when it closes.
struct Slot {
    inbound: Arc<Inbound>,
    serial: u64,
    authenticated: bool,
}

impl Slot {
    fn authenticated(&mut self) {
        if !self.authenticated {
            self.authenticated = true;
            let mut slots = lock(&self.inbound.slots);
            slots.handshaking = slots.handshaking.saturating_sub(1);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = lock(&self.inbound.slots);
        slots.open = slots.open.saturating_sub(1);
        if !self.authenticated {
            slots.handshaking = slots.handshaking.saturating_sub(1);
        }
        drop(slots);
        lock(&self.inbound.connections).remove(&self.serial);
    }
}

/// Reads one inbound connection: the handshake, then messages.
struct Reader {
    inbound: Arc<Inbound>,
    from: Arc<str>,
    slot: Slot,
}

impl Reader {
    fn run(mut self, socket: TcpStream) {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let stream = match handshake::tls_accept(self.inbound.tls.as_deref(), socket) {
            Ok(stream) => stream,
            Err(why) => {
                let line = format!("raft: refused the connection from {}: {why}", self.from);
                self.inbound.warn(host_of(&self.from), &line);
                return;
            }
        };
        match self.read_all(&stream, deadline) {
            Ok(()) => log::debug!("raft: connection from {} closed", self.from),
            Err(why) => {
                let line = format!("raft: dropped the connection from {}: {why}", self.from);
                self.inbound.warn(host_of(&self.from), &line);
            }
        }
    }

    fn read_all(&mut self, stream: &Stream, deadline: Instant) -> Result<(), String> {
        let mut reader = wire::reader(stream);
        let Some((kind, payload)) =
            wire::read_record(&mut reader, wire::MAX_HANDSHAKE, Some(deadline))?
        else {
            return Ok(());
        };
        let (hello, mut session) = match (&self.inbound.key, kind) {
            (None, wire::KIND_HELLO) => (Hello::parse(&payload)?, None),
            (Some(key), wire::KIND_AUTH_OPEN) => {
                let id = self.inbound.self_id;
                let (hello, session) =
                    handshake::answer(stream, &mut reader, key, id, &payload, deadline)?;
                (hello, Some(session))
            }
            (Some(_), wire::KIND_HELLO) => {
                return Err("it sent a plain hello without proving it knows raft_secret (a daemon without raft_secret, or not a peer)".into());
            }
            (None, wire::KIND_AUTH_OPEN) => {
                return Err("it authenticates with a raft_secret, and this node has none: give every daemon the same raft_secret".into());
            }
            (_, other) => return Err(format!("expected a hello, got a record of kind {other}")),
        };
        self.slot.authenticated();
        self.inbound.record_hello(&hello);
        while let Some((kind, payload)) = wire::read_record(&mut reader, frame::MAX_RECORD, None)? {
            let (bytes, view) = match (&mut session, kind) {
                (None, wire::KIND_MESSAGE) => (&payload[..], false),
                (None, wire::KIND_VIEW) => (&payload[..], true),
                (Some(session), wire::KIND_SEALED) => (session.open(kind, &payload)?, false),
                (Some(session), wire::KIND_SEALED_VIEW) => (session.open(kind, &payload)?, true),
                (_, other) => return Err(format!("unexpected record of kind {other}")),
            };
            if view {
                let view = MastersView::from_bytes(bytes)?;
                if self
                    .inbound
                    .events
                    .send(Event::View(hello.id, view))
                    .is_err()
                {
                    return Ok(());
                }
                continue;
            }
            let message: Message = from_bytes(bytes, "raft message").map_err(|e| e.to_string())?;
            if message.to != self.inbound.self_id || message.from != hello.id {
                return Err(format!(
                    "message from {:x} to {:x} on the connection of peer {:x} to this node {:x}",
                    message.from, message.to, hello.id, self.inbound.self_id
                ));
            }
            let event = Event::Message(Box::new(message), self.from.clone());
            if self.inbound.events.send(event).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}
