//! The byte transport of one connection: the one seam between the event loop and the
//! socket.
//!
//! The loop only ever reads, writes, flushes and half-closes through [`Transport`], and
//! registers [`Transport::socket`] with the poller. Plain TCP is [`Plain`]; TLS is
//! `tls::Session` (a rustls `ServerConnection` over the non-blocking socket), behind the
//! same calls: `read` feeds it ciphertext and returns plaintext, `write` hands it
//! plaintext, `wants_write` and `flush` move its pending records, `buffered` tells of
//! plaintext already decrypted (the socket will not wake the loop for it), and
//! `shutdown_write` sends close_notify before the FIN. The server is given such a layer
//! with `Bound::with_transport`; no protocol code changes.

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// One connection's bytes, over a non-blocking socket. Every call may return
/// `WouldBlock`, which means "later": the loop polls the socket and calls again.
pub trait Transport: Send {
    /// Application bytes received; `Ok(0)` is the end of the peer's stream.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Takes application bytes to send; returns how many it took.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Whether it holds bytes of its own to send (TLS records), so the loop should poll
    /// for writability even with no application output pending.
    fn wants_write(&self) -> bool {
        false
    }
    /// Sends what it holds of its own.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Whether it holds application bytes already received (decrypted TLS records), so
    /// `read` has something to return though the socket may not be readable.
    fn buffered(&self) -> bool {
        false
    }
    /// No more output: the peer sees the end of the stream.
    fn shutdown_write(&mut self);
    /// The socket, for the poller.
    fn socket(&self) -> &TcpStream;
}

/// Turns an accepted, non-blocking socket into a [`Transport`] (plain TCP by default).
pub type Wrap = Box<dyn Fn(TcpStream) -> io::Result<Box<dyn Transport>> + Send>;

/// Plain TCP.
pub struct Plain(pub TcpStream);

impl Transport for Plain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn shutdown_write(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Write);
    }

    fn socket(&self) -> &TcpStream {
        &self.0
    }
}

/// The default [`Wrap`]: plain TCP.
pub fn plain() -> Wrap {
    Box::new(|stream| Ok(Box::new(Plain(stream)) as Box<dyn Transport>))
}
