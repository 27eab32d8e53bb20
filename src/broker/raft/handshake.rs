//! The handshakes of a Raft connection, from both ends: with `tls_raft`, the mutual TLS
//! handshake first ([`tls_dial`], [`tls_accept`]); then the `raft_secret` handshake,
//! the records of the wire format in `transport.rs` carrying the nonces and proofs of
//! `auth.rs`.
//!
//! The dialer sends its opening, reads the acceptor's challenge (a nonce), sends its
//! proof, and then reads and checks the acceptor's. The acceptor answers the opening
//! with its nonce alone, checks the dialer's proof, and sends its own only when the
//! dialer's was right (so a stranger gets nothing to guess the secret against; see
//! `auth.rs`); a wrong proof closes the connection, which the dialer logs as a
//! refusal. Each side ends with the [`Session`] that MACs the records after the
//! handshake.

use super::auth::{self, ClusterKey, Handshake, Opening, Session};
use super::frame;
use super::wire::{self, Hello, RecordReader};
use crate::net::tls::{Stream, Tls, fingerprint};
use rustls::server::ParsedCertificate;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The dialer's connection as it will be used: with `tls`, a mutual TLS session to the
/// peer at `addr` (its certificate checked against the cluster's CA and the host of
/// `addr`, or `tls_server_name`), its handshake done within `timeout`; else plain.
pub fn tls_dial(
    tls: Option<&Tls>,
    socket: TcpStream,
    addr: &str,
    timeout: Duration,
) -> Result<Stream, String> {
    let Some(tls) = tls else {
        return Ok(Stream::plain(socket));
    };
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let stream = Stream::client(socket, tls.raft_client_connection(host)?, true);
    stream.handshake(timeout)?;
    Ok(stream)
}

/// The acceptor's connection as it will be used: with `tls`, a mutual TLS session whose
/// peer presented a certificate from the cluster's CA (a peer without one is refused
/// here, with why), its whole handshake done by `deadline`; else plain.
pub fn tls_accept(
    tls: Option<&Tls>,
    socket: TcpStream,
    deadline: Instant,
) -> Result<Stream, String> {
    let Some(tls) = tls else {
        return Ok(Stream::plain(socket));
    };
    let stream = Stream::server(socket, tls.raft_server_connection()?);
    stream.handshake(deadline.saturating_duration_since(Instant::now()))?;
    Ok(stream)
}

/// With `tls_raft`, the acceptor's check that the dialer is the member its hello
/// claims: its certificate (already verified against the Raft CA) must name the host of
/// that `raft_addr` (or `tls_server_name`, when set) in its subject alternative names,
/// as the dialer checks the acceptor's. Without it, any certificate of the CA (also
/// the Redis servers' CA, often) could pose as any member.
pub fn certificate_names_peer(
    tls: Option<&Tls>,
    stream: &Stream,
    raft_addr: &str,
) -> Result<(), String> {
    let Some(tls) = tls else {
        return Ok(());
    };
    let cert = stream
        .peer_certificate()
        .ok_or("TLS: the peer presented no certificate")?;
    let host = raft_addr
        .rsplit_once(':')
        .map_or(raft_addr, |(host, _)| host);
    let name = tls.server_name_for(host)?;
    let named = ParsedCertificate::try_from(&cert)
        .and_then(|parsed| rustls::client::verify_server_name(&parsed, &name));
    named.map_err(|e| {
        let expected = match &tls.options().server_name {
            Some(server_name) => format!("tls_server_name {server_name}"),
            None => format!("{host}, the host of the raft address {raft_addr} it claims"),
        };
        format!(
            "its certificate (SHA-256 {}) does not name {expected}: a peer's certificate must hold its raft_addr host in its subject alternative names ({e})",
            fingerprint(&cert)
        )
    })
}

/// The dialer's side: proves this node to the peer `to`, then checks the peer's proof.
pub fn dial(
    stream: &Stream,
    key: &ClusterKey,
    to: u64,
    hello: &[u8],
    timeout: Duration,
) -> Result<Session, String> {
    let opening = Opening {
        nonce: auth::nonce()?,
        to,
        hello: hello.to_vec(),
    };
    let mut writer = stream;
    writer
        .write_all(&frame::encode(wire::KIND_AUTH_OPEN, &opening.encode()))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    let mut reader = wire::reader(stream);
    let Some((kind, payload)) = wire::read_record(&mut reader, wire::MAX_HANDSHAKE, Some(deadline))
        .map_err(|e| format!("no challenge from the peer: {e}"))?
    else {
        return Err("the peer closed the connection during the handshake (does it have the same raft_secret?)".into());
    };
    if kind != wire::KIND_AUTH_CHALLENGE {
        return Err(format!("expected a challenge, got a record of kind {kind}"));
    }
    let nonce = auth::decode_challenge(&payload)?;
    let handshake = Handshake::new(&opening, &nonce);
    writer
        .write_all(&frame::encode(
            wire::KIND_AUTH_PROOF,
            &handshake.dialer_proof(key),
        ))
        .map_err(|e| e.to_string())?;
    let refused =
        || format!("peer {to:x} refused this node's proof of raft_secret: its raft_secret differs");
    let proof = match wire::read_record(&mut reader, wire::MAX_HANDSHAKE, Some(deadline)) {
        Ok(Some((wire::KIND_AUTH_ACCEPTED, proof))) => proof,
        Ok(Some((kind, _))) => {
            return Err(format!(
                "expected the peer's proof, got a record of kind {kind}"
            ));
        }
        // The acceptor closes the connection on a wrong proof (a reset, with TLS).
        Ok(None) | Err(_) => return Err(refused()),
    };
    if !auth::proof_matches(&handshake.acceptor_proof(key), &proof) {
        return Err(format!(
            "peer {to:x} did not prove it knows raft_secret: its raft_secret differs, or it is not the peer"
        ));
    }
    handshake.session(key)
}

/// The acceptor's side: answers the dialer's `opening` (the payload of its first
/// record) with this node's nonce, checks the dialer's proof, and only then sends this
/// node's own proof, all by `deadline`. Returns who the dialer is.
pub fn answer(
    stream: &Stream,
    reader: &mut RecordReader<'_>,
    key: &ClusterKey,
    self_id: u64,
    opening: &[u8],
    deadline: Instant,
) -> Result<(Hello, Session), String> {
    let opening = Opening::decode(opening)?;
    if opening.to != self_id {
        return Err(format!(
            "it dialed peer {:x}, but this node is {self_id:x} (write each raft address the same way everywhere)",
            opening.to
        ));
    }
    let hello = Hello::parse(&opening.hello)?;
    let nonce = auth::nonce()?;
    let handshake = Handshake::new(&opening, &nonce);
    let left = deadline.saturating_duration_since(Instant::now());
    let _ = stream
        .socket()
        .set_write_timeout(Some(left.max(Duration::from_millis(1))));
    let mut writer = stream;
    writer
        .write_all(&frame::encode(wire::KIND_AUTH_CHALLENGE, &nonce))
        .map_err(|e| format!("cannot send the challenge: {e}"))?;
    let Some((kind, proof)) = wire::read_record(reader, wire::MAX_HANDSHAKE, Some(deadline))?
    else {
        return Err(
            "closed during the handshake (is its raft_secret the same as this node's?)".into(),
        );
    };
    if kind != wire::KIND_AUTH_PROOF {
        return Err(format!("expected a proof, got a record of kind {kind}"));
    }
    if !auth::proof_matches(&handshake.dialer_proof(key), &proof) {
        return Err(format!(
            "wrong proof of raft_secret from {} (peer {:x}): its raft_secret differs, or it is not a peer",
            hello.raft_addr, hello.id
        ));
    }
    writer
        .write_all(&frame::encode(
            wire::KIND_AUTH_ACCEPTED,
            &handshake.acceptor_proof(key),
        ))
        .map_err(|e| format!("cannot send this node's proof: {e}"))?;
    Ok((hello, handshake.session(key)?))
}
