//! A blocking connection that is plain TCP or TLS over TCP, for the blocking paths: the
//! failover worker's connections to data nodes (`redis/resp.rs`) and the Raft links
//! (`broker/raft/`).
//!
//! Reads and writes also work through `&Stream` (the TLS state sits in a `RefCell`),
//! so one thread can hold a buffered reader and a writer on the same connection, as the
//! Raft handshake does with a plain `&TcpStream`. Timeouts are the socket's: set them
//! on [`Stream::socket`].

use super::verify::{Side, explain_io};
use rustls::pki_types::CertificateDer;
use rustls::{ClientConnection, ServerConnection};
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The TLS end of a connection.
enum Session {
    Client(ClientConnection),
    Server(ServerConnection),
}

/// Plain TCP, or TLS over it.
pub struct Stream {
    socket: TcpStream,
    tls: Option<RefCell<Session>>,
    side: Side,
}

impl Stream {
    pub fn plain(socket: TcpStream) -> Stream {
        Stream {
            socket,
            tls: None,
            side: Side::Server,
        }
    }

    /// TLS as the client (the handshake runs on the first read or write, or with
    /// [`Stream::handshake`]); `has_cert` says whether its configuration presents a
    /// client certificate (for the error messages).
    pub fn client(socket: TcpStream, conn: ClientConnection, has_cert: bool) -> Stream {
        Stream {
            socket,
            tls: Some(RefCell::new(Session::Client(conn))),
            side: Side::Client { has_cert },
        }
    }

    /// TLS as the server.
    pub fn server(socket: TcpStream, conn: ServerConnection) -> Stream {
        Stream {
            socket,
            tls: Some(RefCell::new(Session::Server(conn))),
            side: Side::Server,
        }
    }

    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The certificate the other end presented (its leaf), once the TLS handshake is
    /// done; None on plain TCP.
    pub fn peer_certificate(&self) -> Option<CertificateDer<'static>> {
        let session = self.tls.as_ref()?.borrow();
        let certs = match &*session {
            Session::Client(c) => c.peer_certificates(),
            Session::Server(s) => s.peer_certificates(),
        };
        certs?.first().map(|c| c.clone().into_owned())
    }

    /// Runs the TLS handshake to its end within `timeout`, however the peer's bytes
    /// trickle: one deadline for the whole handshake, not one per read (the socket's
    /// timeouts are left at `timeout` afterwards). An error is explained in plain words
    /// (see `verify::explain`). Nothing to do on plain TCP.
    pub fn handshake(&self, timeout: Duration) -> Result<(), String> {
        let Some(tls) = &self.tls else {
            return Ok(());
        };
        let timeout = timeout.max(Duration::from_millis(1));
        let mut io = DeadlineIo {
            socket: &self.socket,
            deadline: Instant::now() + timeout,
        };
        let mut session = tls.borrow_mut();
        let side = self.side;
        let outcome = loop {
            let done = match &mut *session {
                Session::Client(c) if c.is_handshaking() => c.complete_io(&mut io),
                Session::Server(s) if s.is_handshaking() => s.complete_io(&mut io),
                _ => break Ok(()),
            };
            match done {
                Ok((0, 0)) => break Err("TLS handshake: the peer closed the connection".into()),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => break Err("TLS handshake timed out".into()),
                Err(e) => break Err(format!("TLS handshake failed: {}", explain_io(&e, side))),
            }
        };
        let set = self
            .socket
            .set_read_timeout(Some(timeout))
            .and_then(|()| self.socket.set_write_timeout(Some(timeout)));
        set.map_err(|e| format!("TLS handshake: {e}"))?;
        outcome
    }

    /// Whether the peer has closed the connection (or sent anything at all, which on a
    /// one-way link means the same), found without blocking. `Some(reason)` when it has.
    pub fn peer_gone(&self) -> Option<String> {
        if self.socket.set_nonblocking(true).is_err() {
            return Some("cannot poll the socket".into());
        }
        let gone = match &self.tls {
            None => {
                let mut byte = [0u8; 1];
                match self.socket.peek(&mut byte) {
                    Ok(0) => Some("closed by the peer".to_string()),
                    Ok(_) => Some("unexpected data from the peer".to_string()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(e) => Some(e.to_string()),
                }
            }
            Some(_) => {
                let mut byte = [0u8; 1];
                match (&*self).read(&mut byte) {
                    Ok(0) => Some("closed by the peer".to_string()),
                    Ok(_) => Some("unexpected data from the peer".to_string()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(e) => Some(self.explain(&e)),
                }
            }
        };
        if self.socket.set_nonblocking(false).is_err() {
            return Some("cannot poll the socket".into());
        }
        gone
    }

    /// An I/O error on this stream in plain words (TLS failures explained).
    pub fn explain(&self, e: &io::Error) -> String {
        match &self.tls {
            Some(_) => explain_io(e, self.side),
            None => e.to_string(),
        }
    }

    /// Sends close_notify (TLS), then shuts both directions down.
    pub fn close(&self) {
        if let Some(tls) = &self.tls {
            let mut session = tls.borrow_mut();
            let mut socket = &self.socket;
            match &mut *session {
                Session::Client(c) => {
                    c.send_close_notify();
                    let _ = c.write_tls(&mut socket);
                }
                Session::Server(s) => {
                    s.send_close_notify();
                    let _ = s.write_tls(&mut socket);
                }
            }
        }
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

/// The socket during a handshake: every read and write waits at most until the
/// handshake's deadline, and fails with `TimedOut` once it has passed.
struct DeadlineIo<'a> {
    socket: &'a TcpStream,
    deadline: Instant,
}

impl DeadlineIo<'_> {
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        Ok(left)
    }
}

impl Read for DeadlineIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.set_read_timeout(Some(self.left()?))?;
        let mut socket = self.socket;
        socket.read(buf)
    }
}

impl Write for DeadlineIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.set_write_timeout(Some(self.left()?))?;
        let mut socket = self.socket;
        socket.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut socket = &self.socket;
        let Some(tls) = &self.tls else {
            return socket.read(buf);
        };
        let mut session = tls.borrow_mut();
        let read = match &mut *session {
            Session::Client(c) => rustls::Stream::new(c, &mut socket).read(buf),
            Session::Server(s) => rustls::Stream::new(s, &mut socket).read(buf),
        };
        match read {
            // A peer that closes without close_notify ends the stream as plain TCP does.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            other => other,
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut socket = &self.socket;
        let Some(tls) = &self.tls else {
            return socket.write(buf);
        };
        let mut session = tls.borrow_mut();
        match &mut *session {
            Session::Client(c) => rustls::Stream::new(c, &mut socket).write(buf),
            Session::Server(s) => rustls::Stream::new(s, &mut socket).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut socket = &self.socket;
        let Some(tls) = &self.tls else {
            return socket.flush();
        };
        let mut session = tls.borrow_mut();
        match &mut *session {
            Session::Client(c) => rustls::Stream::new(c, &mut socket).flush(),
            Session::Server(s) => rustls::Stream::new(s, &mut socket).flush(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}
