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
//!   a full port for at most `evict_after` against real clients. Only accepted requests
//!   count as progress ([`Io::completed`]): connections that never had one (refused
//!   `NOAUTH`, 401, 403, 404, or silence) go before any real client, whatever they send.
//! - **A cap per source address** (`max_per_source`): a new connection beyond it evicts
//!   one of that address's own, by the same rules, or is refused.
//! - **Bounded input**: at most `max_input` bytes buffered per connection; the protocol
//!   parses from that buffer and refuses what would not fit.
//! - **Timeouts**: idle (between requests), request (a request begun and not whole),
//!   write (replies the peer does not take: it starts again only once the peer took
//!   `conn::WRITE_PROGRESS` bytes, so a reader taking a byte a second is closed and
//!   its buffer freed).
//! - **An accept loop that never ends**: out of descriptors, it evicts an idle
//!   connection, or else refuses one queued connection with the spare descriptor
//!   (`accept.rs`); other errors are logged, throttled, and retried after a pause.
//!
//! A protocol ([`Protocol`]) sees a connection through [`Io`]: it consumes what it can
//! parse, queues output and says what [`Phase`] the connection is in. Other threads
//! reach a connection with [`Remote::send`], which wakes the loop. Timeouts are checked
//! by a sweep four times a second: they are whole seconds, and a timer per connection
//! would cost more than it buys.

pub use super::conn::{ConnId, Io, Phase};
use super::event_loop::{EventLoop, LISTENER, Port};
use super::transport::{self, Wrap};
use crate::shutdown::Shutdown;
use crossbeam_channel::{Receiver, Sender};
use polling::{Event, PollMode, Poller};
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The listen queue: connections the kernel has completed and the loop has not taken
/// yet. The loop drains it continuously (refusing at the cap), so it only absorbs
/// bursts; std's 128 made a burst of connects wait a second for a SYN retransmit.
const BACKLOG: i32 = 1024;

/// The bounds of one port.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one peer address; a new one beyond evicts one of
    /// that address's own, or is refused.
    pub max_per_source: usize,
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
    /// The peer's address has as many connections open as one address may.
    PerSource,
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
        let port = Port {
            listener: self.listener,
            poller: self.poller,
            wrap: self.wrap,
            mailbox: self.rx,
        };
        let event_loop = EventLoop::new(name, port, limits, protocol, stop);
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
