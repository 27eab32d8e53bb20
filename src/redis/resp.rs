//! RESP2 for the failover path: a reply parser ([`parse`]), a command encoder, and one
//! connection to a server ([`Connection`]), plain or TLS, with timeouts on every read
//! and write (the checker's non-blocking connections are in `monitor/checker/conn.rs`).
//!
//! Why not the `redis` crate (it stays a dev-dependency, and a property test checks that
//! both parsers read the same bytes the same way): its per-connection parser keeps an
//! 8 KiB buffer (about 80 MB when watching 10,000 masters, one kept-open connection
//! each), and it cannot be handed a reply's bytes as they trickle in and resume where
//! it stopped, which the checker's non-blocking loop needs: [`parse`] answers "need
//! more" and is called again with the longer buffer. Checks send a few tiny commands
//! (`ROLE`, `INFO`, `SLAVEOF`, `AUTH`) and read small replies, so a small buffer that
//! grows only for the rare large reply (INFO) is enough.
//!
//! The parser is strict about limits (size, nesting): a server that answers garbage
//! gets a [`Error::Server`] describing it, never a panic or an unbounded allocation.

use crate::address::Addr;
use crate::error::{Error, Result};
use crate::net::tls::{Stream, Tls, tls_error};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest bulk string accepted (INFO replies are a few KiB).
pub const MAX_BULK: usize = 4 * 1024 * 1024;
/// Largest array accepted (a ROLE reply lists one entry per replica).
pub const MAX_ARRAY: usize = 64 * 1024;
/// Deepest nesting accepted (ROLE nests three levels).
pub const MAX_DEPTH: usize = 8;
/// Read buffer kept between replies; larger ones are released after use.
const KEEP_BUFFER: usize = 1024;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Nil,
    Int(i64),
    Simple(String),
    Bulk(Vec<u8>),
    Array(Vec<Reply>),
    /// An error reply (`-ERR ...`): the server answered, and the stream is in step.
    Error(String),
}

impl Reply {
    /// Text of a string-like reply (simple or bulk string, or an integer).
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Bulk(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            Reply::Simple(s) => Some(s.clone()),
            Reply::Int(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// An integer that may arrive as an integer or as a string of digits (LedisDB).
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            other => other.text()?.trim().parse().ok(),
        }
    }
}

/// One connection to a server, plain or TLS, with timeouts on every read and write.
pub struct Connection {
    stream: Stream,
    buffer: Vec<u8>,
    /// Bytes of `buffer` that are filled and not yet parsed: `buffer[start..end]`.
    start: usize,
    end: usize,
}

impl Connection {
    /// Connects with a timeout per resolved address, then sets read/write timeouts.
    /// With `tls`, the TLS handshake follows, within `io_timeout`; its failure says
    /// why in plain words (see `net::tls::explain`).
    pub fn open(
        addr: &Addr,
        connect_timeout: Duration,
        io_timeout: Duration,
        tls: Option<&Tls>,
    ) -> Result<Connection> {
        let mut last = None;
        for target in resolve(addr)? {
            match TcpStream::connect_timeout(&target, connect_timeout) {
                Ok(stream) => return Connection::ready(stream, addr, io_timeout, tls),
                Err(e) => last = Some(e),
            }
        }
        Err(Error::Server(match last {
            Some(e) => format!("{addr}: connect: {e}"),
            None => format!("{addr}: resolves to no address"),
        }))
    }

    /// Wraps a connected stream: blocking, with read/write timeouts, no Nagle delay,
    /// and TLS when asked for.
    fn ready(
        socket: TcpStream,
        addr: &Addr,
        io_timeout: Duration,
        tls: Option<&Tls>,
    ) -> Result<Connection> {
        let io = |e: std::io::Error| Error::Server(format!("{addr}: {e}"));
        socket.set_nonblocking(false).map_err(io)?;
        socket.set_nodelay(true).map_err(io)?;
        let stream = match tls {
            None => Stream::plain(socket),
            Some(tls) => {
                let conn = tls
                    .client_connection(&addr.host)
                    .map_err(|e| Error::Server(format!("{addr}: {e}")))?;
                let stream = Stream::client(socket, conn, tls.has_client_cert());
                stream
                    .handshake(io_timeout)
                    .map_err(|e| Error::Server(format!("{addr}: {e}")))?;
                stream
            }
        };
        let socket = stream.socket();
        socket.set_read_timeout(Some(io_timeout)).map_err(io)?;
        socket.set_write_timeout(Some(io_timeout)).map_err(io)?;
        Ok(Connection {
            stream,
            buffer: vec![0; 256],
            start: 0,
            end: 0,
        })
    }

    /// Sends the commands in one write and reads one reply per command.
    pub fn pipeline(&mut self, commands: &[&[&str]]) -> std::io::Result<Vec<Reply>> {
        self.send(commands)?;
        commands.iter().map(|_| self.receive()).collect()
    }

    /// Sends commands without waiting for their replies (see [`Connection::receive`]).
    pub fn send(&mut self, commands: &[&[&str]]) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(64);
        for args in commands {
            encode(args, &mut out);
        }
        let sent = self
            .stream
            .write_all(&out)
            .and_then(|()| self.stream.flush());
        sent.map_err(|e| self.explained(e))
    }

    /// The socket, for waiting on several connections at once with `poll` (with TLS,
    /// a reply may already be decrypted and buffered: poll only after a read blocked).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(self.stream.socket())
    }

    /// A TLS failure in plain words (a missing client certificate, an unknown CA), with
    /// the same kind; other errors as they are.
    fn explained(&self, e: std::io::Error) -> std::io::Error {
        if tls_error(&e).is_some() {
            std::io::Error::new(e.kind(), self.stream.explain(&e))
        } else {
            e
        }
    }

    /// Sends one command and reads its reply.
    pub fn command(&mut self, args: &[&str]) -> std::io::Result<Reply> {
        let mut replies = self.pipeline(&[args])?;
        replies
            .pop()
            .ok_or_else(|| std::io::Error::other("no reply"))
    }

    /// Reads one reply (blocking, within the read timeout).
    pub fn receive(&mut self) -> std::io::Result<Reply> {
        loop {
            match parse(&self.buffer[self.start..self.end]) {
                Ok(Some((reply, used))) => {
                    self.start += used;
                    if self.start == self.end {
                        self.start = 0;
                        self.end = 0;
                        if self.buffer.len() > KEEP_BUFFER {
                            self.buffer = vec![0; 256];
                        }
                    }
                    return Ok(reply);
                }
                Ok(None) => self.fill()?,
                Err(garbage) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        garbage,
                    ));
                }
            }
        }
    }

    /// Reads more bytes, growing the buffer when it is full.
    fn fill(&mut self) -> std::io::Result<()> {
        if self.start > 0 {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buffer.len() {
            let grown = (self.buffer.len() * 2).min(MAX_BULK + 1024);
            if grown == self.buffer.len() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "reply larger than the limit",
                ));
            }
            self.buffer.resize(grown, 0);
        }
        let n = match self.stream.read(&mut self.buffer[self.end..]) {
            Ok(n) => n,
            Err(e) => return Err(self.explained(e)),
        };
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed by the server",
            ));
        }
        self.end += n;
        Ok(())
    }
}

fn resolve(addr: &Addr) -> Result<Vec<std::net::SocketAddr>> {
    (addr.host.as_str(), addr.port)
        .to_socket_addrs()
        .map(|targets| targets.collect())
        .map_err(|e| Error::Server(format!("{addr}: cannot resolve: {e}")))
}

/// Appends a command as a RESP array of bulk strings.
pub fn encode(args: &[&str], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply from the front of `input`: `Ok(None)` when more bytes are needed,
/// `Ok(Some((reply, bytes used)))`, or `Err` for input that is not RESP2.
pub fn parse(input: &[u8]) -> std::result::Result<Option<(Reply, usize)>, String> {
    parse_at(input, 0)
}

fn parse_at(input: &[u8], depth: usize) -> std::result::Result<Option<(Reply, usize)>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("reply nested deeper than {MAX_DEPTH}"));
    }
    let Some(line_end) = input.windows(2).position(|w| w == b"\r\n") else {
        if input.len() > 64 * 1024 {
            return Err("reply line longer than 64 KiB".into());
        }
        return Ok(None);
    };
    let Some((&kind, line)) = input[..line_end].split_first() else {
        return Err("empty reply line".into());
    };
    let line = std::str::from_utf8(line).map_err(|_| "reply line is not UTF-8".to_string())?;
    let after = line_end + 2;
    let number = || {
        line.parse::<i64>()
            .map_err(|_| format!("bad number {line:?} in reply"))
    };
    match kind {
        b'+' => Ok(Some((Reply::Simple(line.to_string()), after))),
        b'-' => Ok(Some((Reply::Error(line.to_string()), after))),
        b':' => Ok(Some((Reply::Int(number()?), after))),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Reply::Nil, after)));
            }
            let len = len as usize;
            if len > MAX_BULK {
                return Err(format!("bulk string of {len} bytes is over the limit"));
            }
            if input.len() < after + len + 2 {
                return Ok(None);
            }
            if &input[after + len..after + len + 2] != b"\r\n" {
                return Err("bulk string not followed by CRLF".into());
            }
            Ok(Some((
                Reply::Bulk(input[after..after + len].to_vec()),
                after + len + 2,
            )))
        }
        b'*' => {
            let len = number()?;
            if len < 0 {
                return Ok(Some((Reply::Nil, after)));
            }
            let len = len as usize;
            if len > MAX_ARRAY {
                return Err(format!("array of {len} items is over the limit"));
            }
            let mut items = Vec::with_capacity(len.min(64));
            let mut used = after;
            for _ in 0..len {
                match parse_at(&input[used..], depth + 1)? {
                    Some((item, n)) => {
                        items.push(item);
                        used += n;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(items), used)))
        }
        other => Err(format!("unexpected reply type byte 0x{other:02x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(input: &[u8]) -> Reply {
        let (reply, used) = parse(input).unwrap().unwrap();
        assert_eq!(used, input.len());
        reply
    }

    #[test]
    fn parses_every_resp2_type() {
        assert_eq!(whole(b"+OK\r\n"), Reply::Simple("OK".into()));
        assert_eq!(whole(b"-ERR no\r\n"), Reply::Error("ERR no".into()));
        assert_eq!(whole(b":-42\r\n"), Reply::Int(-42));
        assert_eq!(whole(b"$-1\r\n"), Reply::Nil);
        assert_eq!(whole(b"$3\r\na\rb\r\n"), Reply::Bulk(b"a\rb".to_vec()));
        assert_eq!(
            whole(b"*3\r\n$6\r\nmaster\r\n:7\r\n*1\r\n*3\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n$1\r\n7\r\n"),
            Reply::Array(vec![
                Reply::Bulk(b"master".to_vec()),
                Reply::Int(7),
                Reply::Array(vec![Reply::Array(vec![
                    Reply::Bulk(b"127.0.0.1".to_vec()),
                    Reply::Bulk(b"6380".to_vec()),
                    Reply::Bulk(b"7".to_vec()),
                ])]),
            ])
        );
    }

    #[test]
    fn incomplete_input_asks_for_more_at_every_cut() {
        let full = b"*2\r\n$5\r\nhello\r\n:1\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b"%garbage\r\n"[..],
            b"\r\n",
            b":12x\r\n",
            b"$5\r\nhelloXX",
            b"$99999999999\r\n",
            b"*99999999\r\n",
            b"$-5x\r\n",
            b"\xff\xfe\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = "*1\r\n".repeat(20) + ":1\r\n";
        assert!(parse(deep.as_bytes()).is_err());
        // Every byte string up to length 3 over a small alphabet: no panic.
        let alphabet = b"*$:+-1\r\n";
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    let _ = parse(&[*a, *b, *c]);
                }
            }
        }
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode(&["SLAVEOF", "NO", "ONE"], &mut out);
        assert_eq!(out, b"*3\r\n$7\r\nSLAVEOF\r\n$2\r\nNO\r\n$3\r\nONE\r\n");
    }
}
