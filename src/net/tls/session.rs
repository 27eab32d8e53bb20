//! A TLS session over a non-blocking socket, as a [`Transport`]: what the connection
//! server (`net/server.rs`) serves the HTTP API and the Sentinel port through with TLS
//! on, and what the checker's non-blocking connections can wrap a `ClientConnection`
//! in (see the module doc of `tls`).
//!
//! Every call returns `WouldBlock` rather than wait. `read` feeds the socket's
//! ciphertext to rustls and returns plaintext; `write` hands plaintext to rustls and
//! sends what records the socket takes; records that did not fit stay in rustls, and
//! [`Transport::wants_write`] says so, so the caller polls for writability and calls
//! [`Transport::flush`]. The handshake happens along the way, on the first reads and
//! flushes. [`Transport::buffered`] tells of plaintext rustls has decrypted and the
//! caller has not read yet: the socket will not become readable for it.

use crate::net::transport::Transport;
use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;

/// One TLS session over a non-blocking socket.
pub struct Session {
    conn: rustls::Connection,
    socket: TcpStream,
    /// Plaintext decrypted and not read yet.
    pending: usize,
}

impl Session {
    /// Wraps a connected, non-blocking socket; `conn` is a `ClientConnection` (this end
    /// dialed) or a `ServerConnection` (this end accepted).
    pub fn new(conn: impl Into<rustls::Connection>, socket: TcpStream) -> Session {
        Session {
            conn: conn.into(),
            socket,
            pending: 0,
        }
    }

    /// Whether the handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Sends the records rustls holds, as far as the socket takes them.
    fn send_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.socket) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads ciphertext from the socket and decrypts it; `Ok(false)` at the end of the
    /// socket's stream.
    fn receive(&mut self) -> io::Result<bool> {
        let n = self.conn.read_tls(&mut self.socket)?;
        match self.conn.process_new_packets() {
            Ok(state) => self.pending = state.plaintext_bytes_to_read(),
            Err(e) => {
                // The alert telling the peer why, if the socket takes it.
                let _ = self.send_records();
                return Err(io::Error::new(ErrorKind::InvalidData, e));
            }
        }
        // Handshake messages to answer go out now; what does not fit waits for a flush.
        self.send_records()?;
        Ok(n > 0)
    }
}

impl Transport for Session {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => {
                    self.pending = self.pending.saturating_sub(n);
                    return Ok(n);
                }
                // The peer closed without close_notify: the end of its stream all the
                // same (nothing here relies on the length being authenticated).
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if !self.receive()? {
                // Whatever was decrypted is read above first; then the end.
                if self.pending == 0 {
                    return Ok(0);
                }
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let taken = self.conn.writer().write(buf)?;
        self.send_records()?;
        if taken == 0 && !buf.is_empty() {
            // rustls's send buffer is full: later, once the socket takes records.
            return Err(ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_records()
    }

    fn buffered(&self) -> bool {
        self.pending > 0
    }

    fn shutdown_write(&mut self) {
        self.conn.send_close_notify();
        let _ = self.send_records();
        let _ = self.socket.shutdown(std::net::Shutdown::Write);
    }

    fn socket(&self) -> &TcpStream {
        &self.socket
    }
}
