//! [`Link`]: a checker connection's byte stream, the socket itself or a TLS session
//! over it, behind one set of calls.

use crate::net::tls::Session;
use crate::net::transport::Transport;
use std::io::{Read, Write};
use std::net::TcpStream;

/// The connection's byte stream: the socket itself, or a TLS session over it.
pub enum Link {
    Plain(TcpStream),
    Tls(Box<Session>),
}

impl Link {
    pub fn socket(&self) -> &TcpStream {
        match self {
            Link::Plain(socket) => socket,
            Link::Tls(session) => session.socket(),
        }
    }

    pub fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Link::Plain(socket) => socket.read(buf),
            Link::Tls(session) => session.read(buf),
        }
    }

    pub fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Link::Plain(socket) => socket.write(buf),
            Link::Tls(session) => session.write(buf),
        }
    }

    /// TLS records waiting for the socket to take them.
    pub fn wants_write(&self) -> bool {
        matches!(self, Link::Tls(session) if session.wants_write())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Link::Plain(_) => Ok(()),
            Link::Tls(session) => session.flush(),
        }
    }

    /// Plaintext decrypted and not read yet: the socket will not signal it.
    pub fn buffered(&self) -> bool {
        matches!(self, Link::Tls(session) if session.buffered())
    }

    pub fn handshaking(&self) -> bool {
        matches!(self, Link::Tls(session) if session.is_handshaking())
    }
}
