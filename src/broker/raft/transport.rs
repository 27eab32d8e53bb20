//! TCP between the daemons' `raft_addr` ports.
//!
//! Every connection carries [`frame`] records in one direction only. The dialing side
//! first sends a hello (its peer id, raft address and HTTP address, as JSON), then raft
//! messages as protobuf. Each node therefore dials every peer it talks to, and learns
//! from the hellos it receives where every peer's HTTP API is (so followers can tell a
//! client where the leader is).
//!
//! - **Sending**: one thread per peer, fed by a bounded queue. The raft thread never
//!   waits on the network: when a queue is full the message is dropped, which Raft
//!   tolerates by design (it retransmits). A failed connection is retried with
//!   exponential backoff, and the raft thread is told the peer is unreachable so it
//!   slows its probes to it.
//! - **Receiving**: an acceptor thread and one reader thread per connection. Anything
//!   that is not a well-formed hello followed by well-formed messages addressed to this
//!   node is logged and that one connection dropped.

use super::frame::{self, Decoded};
use super::state_machine::{from_bytes, to_bytes};
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::sync::lock;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use raft::eraftpb::{Message, MessageType};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const KIND_HELLO: u8 = 1;
const KIND_MESSAGE: u8 = 2;

/// Messages waiting for one peer; beyond this they are dropped.
const PEER_QUEUE: usize = 1024;
/// Connect and write timeouts towards a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Backoff between reconnection attempts to a peer that is down.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The largest hello accepted (it holds two addresses and an id).
const MAX_HELLO: usize = 4096;
/// How long an inbound connection may take to say who it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Who is on the other end of a connection: the first record on each one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub id: u64,
    pub raft_addr: String,
    pub http_addr: String,
    #[serde(default)]
    pub sentinel_addr: Option<String>,
}

/// What the transport hands to the raft thread.
#[derive(Debug)]
pub enum Event {
    /// A message from a peer, to be stepped.
    Message(Box<Message>),
    /// Sending to this peer failed.
    Unreachable(u64),
    /// A snapshot message to this peer was sent (true) or could not be (false).
    SnapshotSent(u64, bool),
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

/// Open inbound connections by serial number, so `stop` can unblock their readers.
type Connections = Arc<Mutex<HashMap<u64, TcpStream>>>;

/// The transport of one node. Owned by the raft thread.
pub struct Transport {
    self_id: u64,
    hello: Vec<u8>,
    book: AddressBook,
    events: Sender<Event>,
    senders: HashMap<u64, Sender<Message>>,
    stop: Shutdown,
    connections: Connections,
    threads: Vec<JoinHandle<()>>,
}

impl Transport {
    /// Binds `listen` and starts accepting peers.
    pub fn start(hello: Hello, listen: &str, events: Sender<Event>) -> Result<Transport> {
        let listener = TcpListener::bind(listen)
            .map_err(|e| Error::Io(format!("raft_addr: cannot listen on {listen}: {e}")))?;
        let listen_addr = listener
            .local_addr()
            .map_err(|e| Error::Io(format!("raft_addr: {e}")))?;
        let hello_bytes = serde_json::to_vec(&hello)
            .map_err(|e| Error::Io(format!("cannot encode the raft hello: {e}")))?;
        let mut transport = Transport {
            self_id: hello.id,
            hello: frame::encode(KIND_HELLO, &hello_bytes),
            book: Arc::new(Mutex::new(HashMap::new())),
            events,
            senders: HashMap::new(),
            stop: Shutdown::new(),
            connections: Arc::new(Mutex::new(HashMap::new())),
            threads: Vec::new(),
        };
        // A stop wakes the acceptor with a connection of its own and unblocks every
        // reader by shutting its connection down.
        let connections = transport.connections.clone();
        transport.stop.on_trigger(move || {
            let _ = TcpStream::connect_timeout(&listen_addr, CONNECT_TIMEOUT);
            for (_, stream) in lock(&connections).drain() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        let acceptor = Acceptor {
            self_id: hello.id,
            book: transport.book.clone(),
            events: transport.events.clone(),
            stop: transport.stop.clone(),
            connections: transport.connections.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("raft-accept".into())
            .spawn(move || acceptor.run(listener))
            .map_err(|e| Error::Io(format!("cannot start the raft acceptor: {e}")))?;
        transport.threads.push(thread);
        Ok(transport)
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
            match queue.try_send(message) {
                Ok(()) => {}
                Err(TrySendError::Full(message)) => {
                    if message.get_msg_type() == MessageType::MsgSnapshot {
                        let _ = self.events.try_send(Event::SnapshotSent(to, false));
                    }
                    log::debug!("raft: queue to peer {to} is full; message dropped");
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.senders.remove(&to);
                }
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

    fn sender(&mut self, to: u64) -> Option<&Sender<Message>> {
        if !self.senders.contains_key(&to) {
            lock(&self.book).get(&to)?;
            let (tx, rx) = crossbeam_channel::bounded(PEER_QUEUE);
            let peer = PeerSender {
                id: to,
                hello: self.hello.clone(),
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
    conn: Option<BufWriter<TcpStream>>,
    backoff: Duration,
    retry_at: Instant,
    reported_down: bool,
}

/// Whether the peer has closed (or reset) a link. Links carry data one way only, so
/// anything readable on our end means the peer is gone.
fn peer_closed(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let closed = match stream.peek(&mut byte) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    closed || stream.set_nonblocking(false).is_err()
}

/// Sends one peer's messages over one connection, reconnecting as needed.
struct PeerSender {
    id: u64,
    hello: Vec<u8>,
    book: AddressBook,
    events: Sender<Event>,
    stop: Shutdown,
}

impl PeerSender {
    fn run(self, queue: Receiver<Message>) {
        let mut link = Link {
            conn: None,
            backoff: BACKOFF_MIN,
            retry_at: Instant::now(),
            reported_down: false,
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
            let snapshots = batch
                .iter()
                .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
                .count();
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
    fn send(&self, link: &mut Link, batch: &[Message]) -> std::result::Result<(), ()> {
        if link.conn.as_ref().is_some_and(|c| peer_closed(c.get_ref())) {
            link.conn = None;
        }
        if link.conn.is_none() {
            if Instant::now() < link.retry_at {
                return Err(());
            }
            match self.connect() {
                Ok(stream) => {
                    if link.reported_down {
                        log::info!("raft: peer {:x} is reachable again", self.id);
                    }
                    link.reported_down = false;
                    link.backoff = BACKOFF_MIN;
                    link.conn = Some(stream);
                }
                Err(e) => {
                    if !link.reported_down {
                        log::warn!("raft: peer {:x} unreachable: {e}", self.id);
                        link.reported_down = true;
                    }
                    link.retry_at = Instant::now() + link.backoff;
                    link.backoff = (link.backoff * 2).min(BACKOFF_MAX);
                    return Err(());
                }
            }
        }
        let Some(stream) = link.conn.as_mut() else {
            return Err(());
        };
        let written = batch
            .iter()
            .try_for_each(|m| write_message(stream, m))
            .and_then(|()| stream.flush().map_err(|e| e.to_string()));
        if let Err(e) = written {
            log::warn!("raft: connection to peer {:x} lost: {e}", self.id);
            link.reported_down = true;
            link.conn = None;
            return Err(());
        }
        Ok(())
    }

    fn connect(&self) -> std::result::Result<BufWriter<TcpStream>, String> {
        let addr = lock(&self.book)
            .get(&self.id)
            .map(|p| p.raft_addr.clone())
            .ok_or("no address known")?;
        let target = addr
            .to_socket_addrs()
            .map_err(|e| format!("{addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr}: no address"))?;
        let stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
            .map_err(|e| format!("{addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let mut writer = BufWriter::with_capacity(64 * 1024, stream);
        writer
            .write_all(&self.hello)
            .map_err(|e| format!("{addr}: {e}"))?;
        Ok(writer)
    }
}

fn write_message(
    stream: &mut BufWriter<TcpStream>,
    message: &Message,
) -> std::result::Result<(), String> {
    let bytes = to_bytes(message).map_err(|e| e.to_string())?;
    stream
        .write_all(&frame::encode(KIND_MESSAGE, &bytes))
        .map_err(|e| e.to_string())
}

/// Accepts peer connections and starts a reader for each.
struct Acceptor {
    self_id: u64,
    book: AddressBook,
    events: Sender<Event>,
    stop: Shutdown,
    connections: Connections,
}

impl Acceptor {
    fn run(self, listener: TcpListener) {
        let mut readers: Vec<JoinHandle<()>> = Vec::new();
        let mut serial = 0u64;
        for stream in listener.incoming() {
            if self.stop.is_triggered() {
                break;
            }
            let stream = match stream {
                Ok(stream) => stream,
                Err(e) => {
                    log::warn!("raft: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let from = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "?".into());
            serial += 1;
            crate::net::keep_alive(&stream);
            if let Ok(clone) = stream.try_clone() {
                lock(&self.connections).insert(serial, clone);
            }
            readers.retain(|r| !r.is_finished());
            let reader = Reader {
                self_id: self.self_id,
                book: self.book.clone(),
                events: self.events.clone(),
                from,
                serial,
                connections: self.connections.clone(),
            };
            match std::thread::Builder::new()
                .name("raft-read".into())
                .spawn(move || reader.run(stream))
            {
                Ok(thread) => readers.push(thread),
                Err(e) => log::error!("raft: cannot start a reader thread: {e}"),
            }
        }
        for (_, stream) in lock(&self.connections).drain() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        for reader in readers {
            let _ = reader.join();
        }
    }
}

/// Reads one inbound connection: a hello, then messages.
struct Reader {
    self_id: u64,
    book: AddressBook,
    events: Sender<Event>,
    from: String,
    serial: u64,
    connections: Connections,
}

impl Reader {
    fn run(self, stream: TcpStream) {
        match self.read_all(stream) {
            Ok(()) => log::debug!("raft: connection from {} closed", self.from),
            Err(why) => log::warn!("raft: dropped the connection from {}: {why}", self.from),
        }
        lock(&self.connections).remove(&self.serial);
    }

    fn read_all(&self, mut stream: TcpStream) -> std::result::Result<(), String> {
        // A peer says hello at once; a silent client is not a peer.
        let _ = stream.set_read_timeout(Some(HELLO_TIMEOUT));
        let Some((kind, payload)) = read_record(&mut stream, MAX_HELLO)? else {
            return Ok(());
        };
        let _ = stream.set_read_timeout(None);
        if kind != KIND_HELLO {
            return Err(format!("expected a hello, got a record of kind {kind}"));
        }
        let hello: Hello =
            serde_json::from_slice(&payload).map_err(|e| format!("unreadable hello: {e}"))?;
        if hello.id != super::peer_id(&hello.raft_addr) {
            return Err(format!(
                "hello claims id {:x} for {}, which has id {:x}",
                hello.id,
                hello.raft_addr,
                super::peer_id(&hello.raft_addr)
            ));
        }
        lock(&self.book).insert(
            hello.id,
            PeerAddrs {
                raft_addr: hello.raft_addr.clone(),
                http_addr: Some(hello.http_addr.clone()),
                sentinel_addr: hello.sentinel_addr.clone(),
            },
        );
        while let Some((kind, payload)) = read_record(&mut stream, frame::MAX_RECORD)? {
            if kind != KIND_MESSAGE {
                return Err(format!("unexpected record of kind {kind}"));
            }
            let message: Message =
                from_bytes(&payload, "raft message").map_err(|e| e.to_string())?;
            if message.to != self.self_id || message.from != hello.id {
                return Err(format!(
                    "message from {:x} to {:x} on the connection of peer {:x} to this node {:x}",
                    message.from, message.to, hello.id, self.self_id
                ));
            }
            if self.events.send(Event::Message(Box::new(message))).is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Reads one record of at most `limit` bytes; `None` at a clean end of stream.
///
/// The payload is read as it arrives rather than into a buffer sized from the length
/// field: a stranger claiming a 64 MiB record costs nothing until it sends 64 MiB.
fn read_record(
    stream: &mut impl Read,
    limit: usize,
) -> std::result::Result<Option<(u8, Vec<u8>)>, String> {
    let mut header = [0u8; frame::HEADER];
    match stream.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if length == 0 || length > limit {
        return Err(format!(
            "record length {length} is out of range (at most {limit})"
        ));
    }
    let mut buf = header.to_vec();
    let body = stream
        .take(length as u64)
        .read_to_end(&mut buf)
        .map_err(|e| format!("record cut short: {e}"))?;
    if body < length {
        return Err(format!("record cut short: {body} of {length} bytes"));
    }
    match frame::decode(&buf) {
        Decoded::Record { kind, payload, .. } => Ok(Some((kind, payload.to_vec()))),
        Decoded::Corrupt(why) => Err(why),
        Decoded::Incomplete => Err("record cut short".into()),
    }
}
