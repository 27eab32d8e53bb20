//! The Raft port's wire format, written from its description in
//! `src/broker/raft/transport.rs` and `auth.rs`, for tests that speak to a daemon's raft
//! port as a stranger (forged hellos and messages) or as a peer that knows the secret
//! (to check that records injected into an authenticated connection are refused).

use hmac::{Hmac, KeyInit, Mac};
use protobuf::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};
use redis_failover::MasterSpec;
use redis_failover::broker::{Action, GroupSpec};
use sha2::Sha256;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

type HmacSha256 = Hmac<Sha256>;

pub const KIND_HELLO: u8 = 1;
pub const KIND_MESSAGE: u8 = 2;
pub const KIND_AUTH_OPEN: u8 = 3;
pub const KIND_AUTH_CHALLENGE: u8 = 4;
pub const KIND_AUTH_PROOF: u8 = 5;
pub const KIND_SEALED: u8 = 6;
pub const KIND_SEALED_VIEW: u8 = 8;
pub const KIND_AUTH_ACCEPTED: u8 = 9;

/// A record: length, CRC32, kind, payload.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(payload);
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend(body);
    out
}

/// The peer id of a raft address (FNV-1a, as the daemon computes it).
pub fn peer_id(addr: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in addr.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash.max(1)
}

/// A well-formed hello claiming to be the peer at `raft_addr`.
pub fn hello(raft_addr: &str) -> Vec<u8> {
    format!(
        r#"{{"id":{},"raft_addr":"{raft_addr}","http_addr":"127.0.0.1:2"}}"#,
        peer_id(raft_addr)
    )
    .into_bytes()
}

/// A raft message, encoded.
pub fn message(kind: MessageType, from: u64, to: u64, term: u64, entries: Vec<Entry>) -> Vec<u8> {
    let mut message = Message {
        from,
        to,
        term,
        ..Message::default()
    };
    message.set_msg_type(kind);
    message.set_entries(entries.into());
    message.write_to_bytes().expect("encode a raft message")
}

/// A proposal to watch group `name` at `master`: what a follower forwards to the leader.
pub fn propose_add(from: u64, to: u64, name: &str, master: &str) -> Vec<u8> {
    let spec = MasterSpec::parse(&format!("{name}={master}")).expect("a group spec");
    let action = Action::Add(vec![GroupSpec::from(spec)]);
    let entry = Entry {
        data: serde_json::to_vec(&action).expect("encode").into(),
        ..Entry::default()
    };
    message(MessageType::MsgPropose, from, to, 0, vec![entry])
}

/// A heartbeat of a would-be leader at `term`.
pub fn heartbeat(from: u64, to: u64, term: u64) -> Vec<u8> {
    message(MessageType::MsgHeartbeat, from, to, term, Vec::new())
}

/// Opens a connection to a raft port.
pub fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the raft port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

/// Sends `bytes` on a new connection to `port`, keeps it open for `hold`, and closes it.
pub fn send_raw(port: u16, bytes: &[u8], hold: Duration) {
    let mut stream = connect(port);
    let _ = stream.write_all(bytes);
    std::thread::sleep(hold);
}

/// Reads one record; `None` when the connection was closed (or reset).
pub fn read_record(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).ok()?;
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let mut body = vec![0u8; length.min(4096)];
    stream.read_exact(&mut body).ok()?;
    let (&kind, payload) = body.split_first()?;
    Some((kind, payload.to_vec()))
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The payload of a dialer's opening (handshake version 2).
pub fn opening(nonce: &[u8; 32], to: u64, hello: &[u8]) -> Vec<u8> {
    let mut opening = vec![2u8];
    opening.extend_from_slice(nonce);
    opening.extend_from_slice(&to.to_be_bytes());
    opening.extend_from_slice(hello);
    opening
}

/// What both proofs and the session key are computed over.
pub fn transcript(dialer_nonce: &[u8], acceptor_nonce: &[u8], to: u64, hello: &[u8]) -> Vec<u8> {
    let mut transcript = dialer_nonce.to_vec();
    transcript.extend_from_slice(acceptor_nonce);
    transcript.extend_from_slice(&to.to_be_bytes());
    transcript.extend_from_slice(hello);
    transcript
}

/// The acceptor's proof that it knows `secret`, over `transcript`.
pub fn acceptor_proof(secret: &[u8], transcript: &[u8]) -> Vec<u8> {
    mac(secret, &[b"redis-failover raft acceptor v1\0", transcript])
}

/// A connection that went through the `raft_secret` handshake as the peer `raft_addr`,
/// with `secret` (right or wrong) and a fixed dialer nonce.
pub struct Dialer {
    pub stream: TcpStream,
    /// Whether the acceptor's proof was right (it knows the same secret).
    pub acceptor_proved: bool,
    session_key: Vec<u8>,
    next: u64,
}

impl Dialer {
    /// Runs the handshake; `None` if the acceptor closed the connection instead of
    /// sending its challenge.
    pub fn handshake(port: u16, to: u64, raft_addr: &str, secret: &str) -> Option<Dialer> {
        let mut stream = connect(port);
        let nonce = [0x5au8; 32];
        let hello = hello(raft_addr);
        stream
            .write_all(&frame(KIND_AUTH_OPEN, &opening(&nonce, to, &hello)))
            .ok()?;
        let (kind, challenge) = read_record(&mut stream)?;
        assert_eq!(kind, KIND_AUTH_CHALLENGE, "the answer to an opening");
        assert_eq!(challenge.len(), 32, "the acceptor's nonce alone");
        let transcript = transcript(&nonce, &challenge, to, &hello);
        let key = secret.as_bytes();
        let proof = mac(key, &[b"redis-failover raft dialer v1\0", &transcript]);
        stream.write_all(&frame(KIND_AUTH_PROOF, &proof)).ok()?;
        // The acceptor's proof follows only a right proof; else the connection closes.
        let expected = acceptor_proof(key, &transcript);
        let acceptor_proved = matches!(
            read_record(&mut stream),
            Some((KIND_AUTH_ACCEPTED, proof)) if proof == expected
        );
        Some(Dialer {
            stream,
            acceptor_proved,
            session_key: mac(key, &[b"redis-failover raft session v1\0", &transcript]),
            next: 0,
        })
    }

    /// A raft message as the next record, with its right MAC.
    pub fn sealed(&mut self, message: &[u8]) -> Vec<u8> {
        self.sealed_as(KIND_SEALED, message)
    }

    /// A view of the masters (JSON) as the next record, with its right MAC.
    pub fn sealed_view(&mut self, view: &[u8]) -> Vec<u8> {
        self.sealed_as(KIND_SEALED_VIEW, view)
    }

    fn sealed_as(&mut self, kind: u8, payload: &[u8]) -> Vec<u8> {
        let tag = mac(
            &self.session_key,
            &[&self.next.to_be_bytes(), &[kind], payload],
        );
        self.next += 1;
        frame(kind, &[payload, &tag].concat())
    }

    /// Sends bytes; false if the connection is gone.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }
}
