//! The records on a Raft connection: their kinds, the hello, and reading one record from
//! a socket within a size limit and a time limit.
//!
//! The byte layout of a record is [`frame`]'s; the order of records on a connection is
//! described in `transport.rs`. Reading is where a stranger can hold on to a node's
//! resources, so every read here has bounds:
//!
//! - a **size** limit, checked against the length field before anything is buffered,
//!   and the payload read as it arrives (a claim of 64 MiB costs nothing until 64 MiB
//!   come);
//! - a **deadline** for the record to *begin* (used during the handshake: a silent
//!   connection is dropped), and once its first byte has come, [`RECORD_TIMEOUT`] for
//!   the whole of it, so a peer that starts a record and trickles it is dropped too.

use super::frame::{self, Decoded};
use crate::net::tls::Stream;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::time::{Duration, Instant};

/// The dialer's hello without `raft_secret`: JSON [`Hello`].
pub const KIND_HELLO: u8 = 1;
/// A raft message (protobuf), without `raft_secret`.
pub const KIND_MESSAGE: u8 = 2;
/// With `raft_secret`: the dialer's opening (version, nonce, whom it dialed, hello).
pub const KIND_AUTH_OPEN: u8 = 3;
/// With `raft_secret`: the acceptor's answer to the opening (its nonce).
pub const KIND_AUTH_CHALLENGE: u8 = 4;
/// With `raft_secret`: the dialer's proof.
pub const KIND_AUTH_PROOF: u8 = 5;
/// With `raft_secret`: a raft message (protobuf) followed by its MAC.
pub const KIND_SEALED: u8 = 6;
/// A daemon's view of the masters (JSON, `broker/views.rs`), without `raft_secret`.
pub const KIND_VIEW: u8 = 7;
/// With `raft_secret`: a view followed by its MAC.
pub const KIND_SEALED_VIEW: u8 = 8;
/// With `raft_secret`: the acceptor's proof, sent once the dialer's proof was right.
pub const KIND_AUTH_ACCEPTED: u8 = 9;

/// The largest handshake record accepted (a hello holds two addresses and an id).
pub const MAX_HANDSHAKE: usize = 4096;
/// Once a record has begun, all of it must have arrived within this long. A snapshot of
/// a realistic state is about 1 MB, which a slow link carries in well under a second.
pub const RECORD_TIMEOUT: Duration = Duration::from_secs(30);
/// Read buffer of one connection.
const READ_BUFFER: usize = 16 * 1024;

/// Who is on the other end of a connection: in the first record on each one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub id: u64,
    pub raft_addr: String,
    pub http_addr: String,
    #[serde(default)]
    pub sentinel_addr: Option<String>,
}

impl Hello {
    /// Parses a hello and checks that its id is the one of its raft address.
    pub fn parse(bytes: &[u8]) -> Result<Hello, String> {
        let hello: Hello =
            serde_json::from_slice(bytes).map_err(|e| format!("unreadable hello: {e}"))?;
        let expected = super::peer_id(&hello.raft_addr);
        if hello.id != expected {
            return Err(format!(
                "hello claims id {:x} for {}, which has id {expected:x}",
                hello.id, hello.raft_addr
            ));
        }
        Ok(hello)
    }
}

/// A connection (plain or TLS) whose reads fail with `TimedOut` once `until` has
/// passed.
pub struct TimedStream<'a> {
    stream: &'a Stream,
    until: Option<Instant>,
}

impl Read for TimedStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let timeout = match self.until {
            None => None,
            Some(until) => {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ErrorKind::TimedOut.into());
                }
                Some(left)
            }
        };
        self.stream.socket().set_read_timeout(timeout)?;
        let mut stream = self.stream;
        stream
            .read(buf)
            .map_err(|e| match crate::net::tls::tls_error(&e) {
                Some(_) => std::io::Error::new(e.kind(), self.stream.explain(&e)),
                None => e,
            })
    }
}

/// A buffered reader of records on one connection.
pub type RecordReader<'a> = BufReader<TimedStream<'a>>;

pub fn reader(stream: &Stream) -> RecordReader<'_> {
    BufReader::with_capacity(
        READ_BUFFER,
        TimedStream {
            stream,
            until: None,
        },
    )
}

/// Reads one record of at most `limit` bytes; `None` at a clean end of stream before
/// it began. It must begin by `begin_by` (`None`: no limit) and, once begun, be whole
/// within [`RECORD_TIMEOUT`] (and by `begin_by`).
pub fn read_record(
    reader: &mut RecordReader<'_>,
    limit: usize,
    begin_by: Option<Instant>,
) -> Result<Option<(u8, Vec<u8>)>, String> {
    reader.get_mut().until = begin_by;
    match reader.fill_buf() {
        Ok([]) => return Ok(None),
        Ok(_) => {}
        Err(e) if timed_out(&e) => return Err("silent for too long".into()),
        Err(e) => return Err(e.to_string()),
    }
    let whole_by = Instant::now() + RECORD_TIMEOUT;
    reader.get_mut().until = Some(begin_by.map_or(whole_by, |b| b.min(whole_by)));
    let incomplete = |e: std::io::Error| {
        if timed_out(&e) {
            "a record begun was not complete in time".to_string()
        } else {
            format!("record cut short: {e}")
        }
    };
    let mut header = [0u8; frame::HEADER];
    reader.read_exact(&mut header).map_err(incomplete)?;
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if length == 0 || length > limit {
        return Err(format!(
            "record length {length} is out of range (at most {limit})"
        ));
    }
    // Grown as bytes arrive, never sized from the length field.
    let mut buf = header.to_vec();
    let body = reader
        .take(length as u64)
        .read_to_end(&mut buf)
        .map_err(incomplete)?;
    if body < length {
        return Err(format!("record cut short: {body} of {length} bytes"));
    }
    match frame::decode(&buf) {
        Decoded::Record { kind, payload, .. } => Ok(Some((kind, payload.to_vec()))),
        Decoded::Corrupt(why) => Err(why),
        Decoded::Incomplete => Err("record cut short".into()),
    }
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    /// A connected pair of sockets on loopback.
    fn pair() -> (TcpStream, Stream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, Stream::plain(server))
    }

    #[test]
    fn reads_records_and_refuses_oversized_ones() {
        let (mut client, server) = pair();
        client.write_all(&frame::encode(7, b"one")).unwrap();
        client.write_all(&frame::encode(8, &[0; 100])).unwrap();
        let mut reader = reader(&server);
        assert_eq!(
            read_record(&mut reader, 50, None).unwrap(),
            Some((7, b"one".to_vec()))
        );
        let err = read_record(&mut reader, 50, None).unwrap_err();
        assert!(err.contains("out of range"), "{err}");
        drop(client);
    }

    #[test]
    fn a_silent_peer_and_a_trickled_record_time_out() {
        let (mut client, server) = pair();
        let mut reader = reader(&server);
        let soon = Instant::now() + Duration::from_millis(100);
        let err = read_record(&mut reader, 50, Some(soon)).unwrap_err();
        assert!(err.contains("silent"), "{err}");
        // Half a record, then nothing: refused by the deadline, not held forever.
        client.write_all(&frame::encode(7, b"hello")[..6]).unwrap();
        let soon = Instant::now() + Duration::from_millis(200);
        let started = Instant::now();
        let err = read_record(&mut reader, 50, Some(soon)).unwrap_err();
        assert!(err.contains("not complete in time"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_clean_close_before_a_record_is_the_end() {
        let (client, server) = pair();
        drop(client);
        assert_eq!(read_record(&mut reader(&server), 50, None).unwrap(), None);
    }
}
