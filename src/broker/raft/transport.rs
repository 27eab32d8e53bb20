//! TCP between the daemons' `raft_addr` ports.
//!
//! Each node dials every peer it sends to, and raft messages flow on a connection from
//! the dialer to the acceptor only. The first records say who the dialer is; from its
//! hellos a node learns where every peer's HTTP API is (so followers can tell a client
//! where the leader is).
//!
//! - **Sending** (this module): one thread per peer, fed by a bounded queue. The raft
//!   thread never waits on the network: when a queue is full the message is dropped,
//!   which Raft tolerates by design (it retransmits). A failed connection is retried
//!   with exponential backoff, and the raft thread is told the peer is unreachable so it
//!   slows its probes to it.
//! - **Receiving** (`inbound.rs`): an acceptor thread and a bounded number of reader
//!   threads, with limits on connections, sizes and time.
//!
//! # Wire format
//!
//! Every record is a [`frame`]: `length (u32 BE) | crc32 (u32 BE) | kind (u8) |
//! payload`, where `length` counts the kind byte and the payload. The kinds are in
//! `wire.rs`.
//!
//! Without `raft_secret` (as before it existed, so older daemons interoperate):
//!
//! ```text
//! dialer → acceptor   kind 1  hello: JSON {"id", "raft_addr", "http_addr", "sentinel_addr"}
//! dialer → acceptor   kind 2  a raft message (protobuf), as many as needed
//! ```
//!
//! With `raft_secret` (every daemon of the cluster must have the same one; see
//! `auth.rs` for the MACs):
//!
//! ```text
//! dialer → acceptor   kind 3  opening: version 2 (u8) | dialer nonce (32) | id of the
//!                             peer dialed (u64 BE) | hello (JSON, as above)
//! acceptor → dialer   kind 4  challenge: acceptor nonce (32)
//! dialer → acceptor   kind 5  proof: dialer proof (32)
//! acceptor → dialer   kind 9  accepted: acceptor proof (32), only if the dialer's was right
//! dialer → acceptor   kind 6  a raft message (protobuf) | its MAC (32), as many as needed
//! ```
//!
//! The dialer proves first: the acceptor sends nothing keyed by the secret until the
//! dialer's proof is right (a wrong one closes the connection, and the dialer logs the
//! refusal), so connecting yields nothing to test guesses of the secret against. The
//! dialer sends raft messages only once the acceptor's proof is right; the acceptor
//! reads no raft message before the dialer's proof is right. Version 1 of the handshake
//! (the acceptor's proof sent with its nonce) is refused, naming the version. The
//! handshake records are at most 4 KiB, and the whole handshake must be done within
//! 5 s. After it, nothing flows from the acceptor to the dialer, so anything readable on
//! the dialer's end means the acceptor has gone. A connection that breaks any of this
//! (wrong kind, bad checksum, bad proof, bad MAC, a message not from the hello's peer or
//! not to this node) is dropped and logged.
//!
//! With `tls_raft`, every connection is first a mutual TLS session (`net::tls`): the
//! dialer verifies the acceptor's certificate against the cluster's CA
//! (`tls_raft_ca_cert_file`, else `tls_ca_cert_file`) and the peer's host (or
//! `tls_server_name`), and presents its own, which the acceptor requires and verifies
//! against the same CA, and then, once it has read the hello, against the host of the
//! raft address the hello claims (or `tls_server_name`): a certificate stands for the
//! member on its host, not for any member. The records above then flow inside the
//! session, unchanged; with `raft_secret` too, its challenge-response and MACs run inside TLS.
//! The acceptor sends no session tickets, so nothing flows its way after the handshake
//! either. A dialer whose certificate the acceptor refused learns it from the alert on
//! its next send, and treats the link as never made (logged, with backoff).

use super::auth::{ClusterKey, Session};
use super::frame;
use super::handshake;
use super::inbound::{Connections, Inbound};
use super::state_machine::to_bytes;
use super::wire;
use crate::error::{Error, Result};
use crate::net::tls::{Stream, Tls};
use crate::secret::Secret;
use crate::shutdown::Shutdown;
use crate::sync::lock;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use raft::eraftpb::{Message, MessageType};
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use super::inbound::{AddressBook, Event};
pub use super::wire::Hello;
use crate::broker::views::MastersView;

/// Messages waiting for one peer; beyond this they are dropped.
const PEER_QUEUE: usize = 1024;
/// Connect and write timeouts towards a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a peer may take to answer this node's opening with its challenge.
const CHALLENGE_TIMEOUT: Duration = Duration::from_secs(2);
/// Backoff between reconnection attempts to a peer that is down.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The transport of one node. Owned by the raft thread.
pub struct Transport {
    self_id: u64,
    /// This node's hello (JSON), sent first on every connection it dials.
    hello: Vec<u8>,
    /// From `raft_secret`: when set, every connection is authenticated.
    key: Option<ClusterKey>,
    /// With `tls_raft`: every connection is mutual TLS.
    tls: Option<Arc<Tls>>,
    local_addr: SocketAddr,
    book: AddressBook,
    events: Sender<Event>,
    senders: HashMap<u64, Sender<Outgoing>>,
    stop: Shutdown,
    threads: Vec<JoinHandle<()>>,
}

impl Transport {
    /// Binds `listen` and starts accepting peers; with a secret, only peers that prove
    /// they know it; with `tls`, only peers with a certificate from the cluster's CA.
    pub fn start(
        hello: Hello,
        listen: &str,
        secret: Option<&Secret>,
        tls: Option<Arc<Tls>>,
        events: Sender<Event>,
    ) -> Result<Transport> {
        let key = secret
            .map(ClusterKey::new)
            .transpose()
            .map_err(Error::InvalidInput)?;
        let listener = TcpListener::bind(listen)
            .map_err(|e| Error::Io(format!("raft_addr: cannot listen on {listen}: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Io(format!("raft_addr: {e}")))?;
        let hello_bytes = serde_json::to_vec(&hello)
            .map_err(|e| Error::Io(format!("cannot encode the raft hello: {e}")))?;
        let connections: Connections = Arc::new(Mutex::new(HashMap::new()));
        let mut transport = Transport {
            self_id: hello.id,
            hello: hello_bytes,
            key,
            tls,
            local_addr,
            book: Arc::new(Mutex::new(HashMap::new())),
            events,
            senders: HashMap::new(),
            stop: Shutdown::new(),
            threads: Vec::new(),
        };
        // A stop wakes the acceptor with a connection of its own and unblocks every
        // reader by shutting its connection down.
        let open = connections.clone();
        transport.stop.on_trigger(move || {
            let _ = TcpStream::connect_timeout(&local_addr, CONNECT_TIMEOUT);
            for (_, stream) in lock(&open).drain() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        let inbound = Arc::new(Inbound::new(
            hello.id,
            transport.key.clone(),
            transport.tls.clone(),
            transport.book.clone(),
            transport.events.clone(),
            transport.stop.clone(),
            connections,
        ));
        let thread = std::thread::Builder::new()
            .name("raft-accept".into())
            .spawn(move || inbound.accept_loop(listener))
            .map_err(|e| Error::Io(format!("cannot start the raft acceptor: {e}")))?;
        transport.threads.push(thread);
        Ok(transport)
    }

    /// The address the raft port is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The shared address book.
    pub fn book(&self) -> AddressBook {
        self.book.clone()
    }

    /// Records (or changes) a peer's raft address.
    pub fn set_address(&self, id: u64, raft_addr: &str) {
        let mut book = lock(&self.book);
        let peer = book.entry(id).or_default();
        peer.raft_addr = raft_addr.to_string();
    }

    /// Queues messages for their peers; never blocks.
    pub fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            if to == self.self_id {
                continue;
            }
            let Some(queue) = self.sender(to) else {
                log::debug!("raft: no address known for peer {to}; message dropped");
                continue;
            };
            match queue.try_send(Outgoing::Raft(message)) {
                Ok(()) => {}
                Err(TrySendError::Full(Outgoing::Raft(message))) => {
                    if message.get_msg_type() == MessageType::MsgSnapshot {
                        let _ = self.events.try_send(Event::SnapshotSent(to, false));
                    }
                    log::debug!("raft: queue to peer {to} is full; message dropped");
                }
                Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => {
                    self.senders.remove(&to);
                }
            }
        }
    }

    /// Queues this daemon's view of the masters for each of `peers`; never blocks, and
    /// a view that finds a queue full is dropped (the next one follows soon).
    pub fn send_view(&mut self, peers: &[u64], view: &MastersView) {
        let bytes = Arc::new(view.to_bytes());
        for &to in peers {
            if to == self.self_id {
                continue;
            }
            if let Some(queue) = self.sender(to)
                && let Err(TrySendError::Disconnected(_)) =
                    queue.try_send(Outgoing::View(bytes.clone()))
            {
                self.senders.remove(&to);
            }
        }
    }

    /// Stops every transport thread and joins them.
    pub fn stop(&mut self) {
        self.stop.trigger();
        self.senders.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }

    fn sender(&mut self, to: u64) -> Option<&Sender<Outgoing>> {
        if !self.senders.contains_key(&to) {
            lock(&self.book).get(&to)?;
            let (tx, rx) = crossbeam_channel::bounded(PEER_QUEUE);
            let peer = PeerSender {
                id: to,
                hello: self.hello.clone(),
                key: self.key.clone(),
                tls: self.tls.clone(),
                book: self.book.clone(),
                events: self.events.clone(),
                stop: self.stop.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("raft-send-{to:x}"))
                .spawn(move || peer.run(rx));
            match thread {
                Ok(thread) => self.threads.push(thread),
                Err(e) => {
                    log::error!("raft: cannot start a sender thread: {e}");
                    return None;
                }
            }
            self.senders.insert(to, tx);
        }
        self.senders.get(&to)
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The connection to one peer and its reconnection state.
struct Link {
    conn: Option<Conn>,
    backoff: Duration,
    retry_at: Instant,
    reported_down: bool,
    /// Why the last connect failed, as logged.
    last_error: Option<String>,
}

/// What goes to a peer: raft's messages, and this daemon's view of the masters.
enum Outgoing {
    Raft(Message),
    View(Arc<Vec<u8>>),
}

impl Outgoing {
    fn is_snapshot(&self) -> bool {
        matches!(self, Outgoing::Raft(m) if m.get_msg_type() == MessageType::MsgSnapshot)
    }
}

/// An open connection to a peer: where to write, and with a secret, its record MACs.
struct Conn {
    writer: BufWriter<Stream>,
    session: Option<Session>,
    /// The link has outlived its first send. A TLS link can be refused by the peer
    /// after this end finished its handshake (a client certificate it does not trust):
    /// such a link is treated as a failed connection, not as a reachable peer.
    proven: bool,
}

impl Conn {
    fn write(&mut self, outgoing: &Outgoing) -> std::result::Result<(), String> {
        let (plain, sealed, bytes) = match outgoing {
            Outgoing::Raft(message) => {
                let bytes = to_bytes(message).map_err(|e| e.to_string())?;
                (wire::KIND_MESSAGE, wire::KIND_SEALED, bytes)
            }
            Outgoing::View(bytes) => (wire::KIND_VIEW, wire::KIND_SEALED_VIEW, bytes.to_vec()),
        };
        let record = match &mut self.session {
            None => frame::encode(plain, &bytes),
            Some(session) => frame::encode(sealed, &session.seal(sealed, &bytes)),
        };
        self.writer.write_all(&record).map_err(|e| e.to_string())
    }
}

/// Sends one peer's messages over one connection, reconnecting as needed.
struct PeerSender {
    id: u64,
    /// This node's hello (JSON).
    hello: Vec<u8>,
    key: Option<ClusterKey>,
    tls: Option<Arc<Tls>>,
    book: AddressBook,
    events: Sender<Event>,
    stop: Shutdown,
}

impl PeerSender {
    fn run(self, queue: Receiver<Outgoing>) {
        let mut link = Link {
            conn: None,
            backoff: BACKOFF_MIN,
            retry_at: Instant::now(),
            reported_down: false,
            last_error: None,
        };
        while let Ok(first) = queue.recv() {
            if self.stop.is_triggered() {
                return;
            }
            // This message and whatever else is queued go out together.
            let mut batch = vec![first];
            while batch.len() < PEER_QUEUE {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let snapshots = batch.iter().filter(|m| m.is_snapshot()).count();
            // A link the peer closed (it restarted) is only found out by writing to it,
            // and the first write after the close is lost without an error. So a link
            // that looks closed is replaced first, and a failed batch is written once
            // more on a fresh link: a lost vote would cost a whole election timeout.
            let mut result = self.send(&mut link, &batch);
            if result.is_err() && link.conn.is_none() && Instant::now() >= link.retry_at {
                result = self.send(&mut link, &batch);
            }
            for _ in 0..snapshots {
                let _ = self
                    .events
                    .try_send(Event::SnapshotSent(self.id, result.is_ok()));
            }
            if result.is_err() {
                let _ = self.events.try_send(Event::Unreachable(self.id));
            }
        }
    }

    /// Writes a batch on the link, connecting first if needed.
    fn send(&self, link: &mut Link, batch: &[Outgoing]) -> std::result::Result<(), ()> {
        self.check_link(link)?;
        if link.conn.is_none() {
            if Instant::now() < link.retry_at {
                return Err(());
            }
            match self.connect() {
                Ok(conn) => {
                    if conn.proven {
                        self.reachable(link);
                    }
                    link.conn = Some(conn);
                }
                Err(e) => {
                    self.failed(link, &e);
                    return Err(());
                }
            }
        }
        let Some(conn) = link.conn.as_mut() else {
            return Err(());
        };
        let written = batch
            .iter()
            .try_for_each(|m| conn.write(m))
            .and_then(|()| conn.writer.flush().map_err(|e| e.to_string()));
        if let Err(e) = written {
            log::warn!("raft: connection to peer {:x} lost: {e}", self.id);
            link.reported_down = true;
            link.conn = None;
            return Err(());
        }
        Ok(())
    }

    /// Drops a link the peer has closed (found without blocking). A link that has not
    /// proven itself yet counts as a failed connection: `Err`, with backoff. A link
    /// that is open and new proves itself here.
    fn check_link(&self, link: &mut Link) -> std::result::Result<(), ()> {
        let Some(conn) = link.conn.as_mut() else {
            return Ok(());
        };
        match conn.writer.get_ref().peer_gone() {
            Some(why) => {
                let proven = conn.proven;
                link.conn = None;
                if !proven {
                    self.failed(link, &why);
                    return Err(());
                }
                log::debug!("raft: link to peer {:x} ended: {why}", self.id);
            }
            None if !conn.proven => {
                conn.proven = true;
                self.reachable(link);
            }
            None => {}
        }
        Ok(())
    }

    /// The peer took a link: logged if it had been reported down; backoff reset.
    fn reachable(&self, link: &mut Link) {
        if link.reported_down {
            log::info!("raft: peer {:x} is reachable again", self.id);
        }
        link.reported_down = false;
        link.last_error = None;
        link.backoff = BACKOFF_MIN;
    }

    /// A connection that could not be made (or was refused at once): logged once per
    /// reason until the peer is reachable again (a peer still starting and then one
    /// with another raft_secret or certificate are two different problems), and
    /// retried with backoff.
    fn failed(&self, link: &mut Link, why: &str) {
        if !link.reported_down || link.last_error.as_deref() != Some(why) {
            log::warn!("raft: peer {:x} unreachable: {why}", self.id);
            link.reported_down = true;
            link.last_error = Some(why.to_string());
        }
        link.retry_at = Instant::now() + link.backoff;
        link.backoff = (link.backoff * 2).min(BACKOFF_MAX);
    }

    /// Connects to the peer and says who this node is: a hello, or with a secret, the
    /// challenge-response that authenticates both ends; with TLS, all of it inside a
    /// mutual TLS session.
    fn connect(&self) -> std::result::Result<Conn, String> {
        let addr = lock(&self.book)
            .get(&self.id)
            .map(|p| p.raft_addr.clone())
            .ok_or("no address known")?;
        let target = addr
            .to_socket_addrs()
            .map_err(|e| format!("{addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr}: no address"))?;
        let socket = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
            .map_err(|e| format!("{addr}: {e}"))?;
        let _ = socket.set_nodelay(true);
        let stream = handshake::tls_dial(self.tls.as_deref(), socket, &addr, CHALLENGE_TIMEOUT)
            .map_err(|e| format!("{addr}: {e}"))?;
        let _ = stream.socket().set_write_timeout(Some(WRITE_TIMEOUT));
        let session = match &self.key {
            None => None,
            Some(key) => Some(
                handshake::dial(&stream, key, self.id, &self.hello, CHALLENGE_TIMEOUT)
                    .map_err(|e| format!("{addr}: {e}"))?,
            ),
        };
        // With a secret, the challenge came through: the peer took this end's certificate.
        let proven = !stream.is_tls() || session.is_some();
        let mut writer = BufWriter::with_capacity(64 * 1024, stream);
        if session.is_none() {
            // Without a secret the hello goes out with the first messages.
            writer
                .write_all(&frame::encode(wire::KIND_HELLO, &self.hello))
                .map_err(|e| format!("{addr}: {e}"))?;
        }
        Ok(Conn {
            writer,
            session,
            proven,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::raft::inbound::PeerAddrs;
    use crate::broker::raft::peer_id;

    /// A loopback address nobody listens on (bound, read, released).
    fn free_addr() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }

    fn hello(addr: &str) -> Hello {
        Hello {
            id: peer_id(addr),
            raft_addr: addr.into(),
            http_addr: "127.0.0.1:1".into(),
            sentinel_addr: None,
        }
    }

    /// A transport listening on a free port, with its events.
    fn node(secret: Option<&str>) -> (Transport, crossbeam_channel::Receiver<Event>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let addr = free_addr();
        let secret = secret.map(Secret::new);
        let transport = Transport::start(hello(&addr), &addr, secret.as_ref(), None, tx).unwrap();
        (transport, rx)
    }

    fn heartbeat(from: u64, to: u64) -> Message {
        let mut message = Message {
            from,
            to,
            term: 7,
            ..Message::default()
        };
        message.set_msg_type(MessageType::MsgHeartbeat);
        message
    }

    /// Sends heartbeats from `a` to `b`; whether `b` receives one within `wait`.
    fn delivered(
        a: &mut Transport,
        b: &Transport,
        b_events: &crossbeam_channel::Receiver<Event>,
        wait: Duration,
    ) -> bool {
        let b_addr = b.local_addr().to_string();
        a.set_address(peer_id(&b_addr), &b_addr);
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            a.send(vec![heartbeat(a.self_id, b.self_id)]);
            if let Ok(Event::Message(m, _)) = b_events.recv_timeout(Duration::from_millis(200)) {
                return m.from == a.self_id && m.term == 7;
            }
        }
        false
    }

    #[test]
    fn links_carry_messages_only_between_equal_secrets() {
        // Delivery is waited for; a refusal is seen within a second (handshakes take
        // milliseconds on loopback, and the senders retry every 50 ms to 1 s).
        let (yes, no) = (Duration::from_secs(5), Duration::from_secs(1));
        let (mut a, _) = node(Some("same secret"));
        let (b, b_events) = node(Some("same secret"));
        assert!(delivered(&mut a, &b, &b_events, yes), "equal secrets");
        let (mut c, _) = node(Some("another secret"));
        assert!(!delivered(&mut c, &b, &b_events, no), "a wrong secret");
        let (mut d, _) = node(None);
        assert!(
            !delivered(&mut d, &b, &b_events, no),
            "no secret towards a secret"
        );
        let (e, e_events) = node(None);
        assert!(
            !delivered(&mut a, &e, &e_events, no),
            "a secret towards none"
        );
        assert!(
            delivered(&mut d, &e, &e_events, yes),
            "no secret on either side"
        );
    }

    /// The cost of setting up a link, with and without the handshake. Prints figures:
    /// `cargo test --release --lib link_costs -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn link_costs() {
        const LINKS: u32 = 300;
        for secret in [None, Some("a secret of some length, 32 bytes")] {
            let (b, events) = node(secret);
            let b_addr = b.local_addr().to_string();
            let book: AddressBook = Arc::new(Mutex::new(HashMap::new()));
            let peer = PeerAddrs {
                raft_addr: b_addr.clone(),
                ..PeerAddrs::default()
            };
            lock(&book).insert(peer_id(&b_addr), peer);
            let me = hello("127.0.0.1:2");
            let sender = PeerSender {
                id: peer_id(&b_addr),
                hello: serde_json::to_vec(&me).unwrap(),
                key: secret.map(|s| ClusterKey::new(&Secret::new(s)).unwrap()),
                tls: None,
                book,
                events: crossbeam_channel::unbounded().0,
                stop: Shutdown::new(),
            };
            // From the connect until the acceptor hands the first message to its raft
            // thread: what a new (or re-made) link costs before it is of use.
            let mut took = Vec::new();
            for n in 0..LINKS {
                let started = Instant::now();
                let mut conn = sender.connect().unwrap_or_else(|e| panic!("link {n}: {e}"));
                conn.write(&Outgoing::Raft(heartbeat(me.id, b.self_id)))
                    .unwrap();
                conn.writer.flush().unwrap();
                match events.recv_timeout(Duration::from_secs(5)) {
                    Ok(Event::Message(..)) => took.push(started.elapsed().as_secs_f64() * 1e6),
                    other => panic!("link {n}: {other:?}"),
                }
            }
            took.sort_by(f64::total_cmp);
            println!(
                "link set-up to first message delivered ({}): median {:.0} us, p90 {:.0} us, {LINKS} links",
                if secret.is_some() {
                    "with raft_secret"
                } else {
                    "no secret"
                },
                took[took.len() / 2],
                took[took.len() * 9 / 10]
            );
        }
    }
}
