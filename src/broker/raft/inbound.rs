//! The receiving side of the Raft port: accepts peers' connections and reads them, within
//! bounds a stranger cannot push.
//!
//! - At most [`MAX_INBOUND`] connections at once, each read by its own thread, so at
//!   most that many reader threads; and at most [`MAX_HANDSHAKING`] of them still in
//!   their handshake, [`MAX_HANDSHAKING_PER_HOST`] from any one host. A new connection
//!   beyond a handshake limit takes the place of the oldest one in its handshake (from
//!   that host, for the per-host limit) once that one has been at it for
//!   [`EVICT_AFTER`], far longer than a real peer takes; otherwise, and beyond
//!   [`MAX_INBOUND`], it is closed at once. Either is logged. So connections that
//!   trickle their handshake cannot keep a real peer out: its handshake takes
//!   milliseconds, theirs never ends.
//! - A connection must complete its whole handshake (with `tls_raft` the TLS handshake,
//!   which requires a client certificate from the cluster's CA; then the hello, or the
//!   `raft_secret` challenge-response of `auth.rs`, and with `tls_raft` a certificate
//!   that names the host of the hello's raft address) within [`HANDSHAKE_TIMEOUT`],
//!   however its bytes trickle. After that it may
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
use std::collections::{BTreeMap, HashMap};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Inbound connections open at once (and so reader threads). A cluster of N nodes needs
/// N - 1; the rest is room for links being made again while old ones time out.
pub const MAX_INBOUND: usize = 64;
/// Inbound connections that have not finished their handshake yet.
pub const MAX_HANDSHAKING: usize = 16;
/// Of those, from any one host.
pub const MAX_HANDSHAKING_PER_HOST: usize = 8;
/// A connection in its handshake for this long may be closed to make room for a new
/// one: a real peer's whole handshake takes a few round trips (milliseconds on a LAN,
/// even over TLS). Short, so that a stranger who keeps reopening the connections it
/// loses must do so faster than this to keep a peer out.
pub const EVICT_AFTER: Duration = Duration::from_millis(250);
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

/// How many inbound connections are open, and which of them are still in their
/// handshake (by serial number, so the oldest first: from which host, since when).
#[derive(Default)]
struct Slots {
    open: usize,
    handshaking: BTreeMap<u64, (Arc<str>, Instant)>,
}

impl Slots {
    /// Makes room for one more connection in its handshake from `host`: `Ok(None)`
    /// when there is room, `Ok(Some(serial))` when the connection `serial` must give
    /// up its place (taken out of the handshaking ones here), `Err(why)` when the new
    /// one must be refused.
    fn room_for(&mut self, host: &str, now: Instant) -> Result<Option<u64>, String> {
        if self.open >= MAX_INBOUND {
            return Err(format!(
                "{} connections are open (at most {MAX_INBOUND})",
                self.open
            ));
        }
        let from_host = self
            .handshaking
            .values()
            .filter(|(h, _)| &**h == host)
            .count();
        let (full, of_host) = if from_host >= MAX_HANDSHAKING_PER_HOST {
            (
                format!(
                    "{from_host} connections from {host} are in their handshake (at most {MAX_HANDSHAKING_PER_HOST})"
                ),
                true,
            )
        } else if self.handshaking.len() >= MAX_HANDSHAKING {
            (
                format!(
                    "{} connections are in their handshake (at most {MAX_HANDSHAKING})",
                    self.handshaking.len()
                ),
                false,
            )
        } else {
            return Ok(None);
        };
        let oldest = self
            .handshaking
            .iter()
            .find(|(_, (h, _))| !of_host || &**h == host)
            .map(|(&serial, &(_, since))| (serial, since));
        match oldest {
            Some((serial, since)) if now.saturating_duration_since(since) >= EVICT_AFTER => {
                self.handshaking.remove(&serial);
                Ok(Some(serial))
            }
            _ => Err(full),
        }
    }
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
        let host: Arc<str> = host_of(&from).into();
        let evicted = {
            let mut slots = lock(&self.slots);
            match slots.room_for(&host, Instant::now()) {
                Ok(evicted) => {
                    slots.open += 1;
                    slots
                        .handshaking
                        .insert(serial, (host.clone(), Instant::now()));
                    evicted
                }
                Err(why) => {
                    drop(slots);
                    let line = format!("raft: refused a connection from {from}: {why}");
                    self.warn(&host, &line);
                    return None;
                }
            }
        };
        if let Some(old) = evicted {
            // Its reader sees the connection end, and gives back its slot.
            if let Some(stream) = lock(&self.connections).get(&old) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
            let line = format!(
                "raft: closed a connection still in its handshake after {} ms or more, to make room for one from {from}",
                EVICT_AFTER.as_millis()
            );
            self.warn(&host, &line);
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

    /// Records where a peer that said hello can be reached, where nothing else says:
    /// an unknown peer is added while the book is small; a known one keeps the raft
    /// address the log (or the configuration) gave it, and gets the HTTP and Sentinel
    /// addresses of its hello, which the addresses a member announced through the log
    /// outrank (see `node.rs`, `publish`).
    fn record_hello(&self, hello: &Hello) {
        let mut book = lock(&self.book);
        if !book.contains_key(&hello.id) && book.len() >= MAX_BOOK {
            return;
        }
        let peer = book.entry(hello.id).or_insert_with(|| PeerAddrs {
            raft_addr: hello.raft_addr.clone(),
            ..PeerAddrs::default()
        });
        peer.http_addr = Some(hello.http_addr.clone());
        peer.sentinel_addr = hello.sentinel_addr.clone();
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
            lock(&self.inbound.slots).handshaking.remove(&self.serial);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut slots = lock(&self.inbound.slots);
        slots.open = slots.open.saturating_sub(1);
        slots.handshaking.remove(&self.serial);
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
        let stream = match handshake::tls_accept(self.inbound.tls.as_deref(), socket, deadline) {
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
        handshake::certificate_names_peer(self.inbound.tls.as_deref(), stream, &hello.raft_addr)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn slots_with(hosts: &[&str], since: Instant) -> Slots {
        let mut slots = Slots::default();
        for (serial, host) in hosts.iter().enumerate() {
            slots.open += 1;
            slots
                .handshaking
                .insert(serial as u64, ((*host).into(), since));
        }
        slots
    }

    #[test]
    fn a_handshake_that_drags_on_makes_room_for_a_new_one() {
        let now = Instant::now();
        let old = now - EVICT_AFTER;
        // Room: nobody evicted.
        assert_eq!(slots_with(&["a"; 3], now).room_for("a", now), Ok(None));
        // Full of fresh handshakes: refused, naming the limit.
        let hosts: Vec<&str> = (0..MAX_HANDSHAKING)
            .map(|i| if i % 2 == 0 { "a" } else { "b" })
            .collect();
        let why = slots_with(&hosts, now).room_for("c", now).unwrap_err();
        assert!(why.contains("in their handshake"), "{why}");
        // Full of old ones: the oldest gives up its place.
        let mut slots = slots_with(&hosts, old);
        assert_eq!(slots.room_for("c", now), Ok(Some(0)));
        assert_eq!(slots.handshaking.len(), MAX_HANDSHAKING - 1);
        // One host at its own limit: only its oldest is evicted, others are not.
        let mut hosts = vec!["b"];
        hosts.extend([&"a"; MAX_HANDSHAKING_PER_HOST]);
        let mut slots = slots_with(&hosts, old);
        assert_eq!(slots.room_for("a", now), Ok(Some(1)));
        assert_eq!(slots.room_for("b", now), Ok(None));
        let why = slots_with(&["a"; MAX_HANDSHAKING_PER_HOST], now)
            .room_for("a", now)
            .unwrap_err();
        assert!(why.contains("from a"), "{why}");
    }
}
