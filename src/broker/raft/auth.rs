//! Peer authentication on the Raft port with `raft_secret`: a mutual challenge-response
//! when a connection opens, then a MAC on every record it carries.
//!
//! A peer id is the hash of a raft address, which anyone can claim; so a hello proves
//! nothing by itself. With a secret shared by every daemon of the cluster, both ends of
//! a connection prove that they know it, over a fresh random nonce from each side (a
//! recorded handshake cannot be replayed), and derive a key for this connection alone.
//! Every record after the handshake carries a MAC over its sequence number and bytes
//! under that key, so a record injected into the connection, replayed, reordered or
//! altered is refused. Records are authenticated, not encrypted: Raft messages carry the
//! monitored masters' addresses and the cluster's membership, no credentials.
//!
//! Every MAC is HMAC-SHA256, keyed by the secret `K` or the connection's key `S`:
//!
//! ```text
//! T              = dialer nonce (32) | acceptor nonce (32) | acceptor id (u64 BE) | hello
//! acceptor proof = HMAC(K, "redis-failover raft acceptor v1\0" | T)
//! dialer proof   = HMAC(K, "redis-failover raft dialer v1\0" | T)
//! S              = HMAC(K, "redis-failover raft session v1\0" | T)
//! record MAC     = HMAC(S, sequence number (u64 BE, 0 for the first record) | kind | payload)
//! ```
//!
//! `hello` is the dialer's hello as it sent it (JSON). The labels keep one kind of proof
//! from ever standing in for another. The records that carry these values, and their
//! order, are in `transport.rs`.
//!
//! The dialer proves first: the acceptor answers an opening with its nonce alone, and
//! sends its own proof only once the dialer's is right. So a stranger who connects gets
//! nothing keyed by the secret to test guesses against offline (in version 1 of the
//! handshake the acceptor's proof came with its nonce, before the dialer proved
//! anything). A guess can only be tried online, one connection per guess, each logged.
//! The dialer only proves itself to the address of a member it dials, so what it sends
//! reaches a guesser only through a network path that guesser controls; a long random
//! secret is what keeps that out of reach.

use crate::secret::Secret;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

pub const NONCE_LEN: usize = 32;
pub const TAG_LEN: usize = 32;

/// The version byte that starts the dialer's opening record: 2 since the dialer proves
/// first (a version 1 dialer is refused, saying so).
const VERSION: u8 = 2;
const ACCEPTOR: &[u8] = b"redis-failover raft acceptor v1\0";
const DIALER: &[u8] = b"redis-failover raft dialer v1\0";
const SESSION: &[u8] = b"redis-failover raft session v1\0";

pub type Nonce = [u8; NONCE_LEN];
pub type Tag = [u8; TAG_LEN];

/// The cluster's secret, ready to key HMACs. Never printed.
#[derive(Clone)]
pub struct ClusterKey(HmacSha256);

impl ClusterKey {
    pub fn new(secret: &Secret) -> Result<ClusterKey, String> {
        HmacSha256::new_from_slice(secret.expose().as_bytes())
            .map(ClusterKey)
            .map_err(|e| format!("raft_secret cannot key HMAC-SHA256: {e}"))
    }

    fn mac(&self, label: &[u8], transcript: &[u8]) -> Tag {
        let mut mac = self.0.clone();
        mac.update(label);
        mac.update(transcript);
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

/// A fresh random nonce from the operating system.
pub fn nonce() -> Result<Nonce, String> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| format!("no random numbers from the OS: {e}"))?;
    Ok(nonce)
}

/// The dialer's opening: its nonce, the id of the peer it meant to dial, its hello.
#[derive(Debug, Clone, PartialEq)]
pub struct Opening {
    pub nonce: Nonce,
    pub to: u64,
    pub hello: Vec<u8>,
}

impl Opening {
    /// `version (1) | nonce (32) | to (u64 BE) | hello`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + NONCE_LEN + 8 + self.hello.len());
        out.push(VERSION);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.to.to_be_bytes());
        out.extend_from_slice(&self.hello);
        out
    }

    pub fn decode(payload: &[u8]) -> Result<Opening, String> {
        let Some((&version, rest)) = payload.split_first() else {
            return Err("empty opening".into());
        };
        if version != VERSION {
            return Err(format!(
                "handshake version {version}, this node speaks {VERSION} (a daemon of an older release: run the same release on every member)"
            ));
        }
        if rest.len() < NONCE_LEN + 8 {
            return Err(format!("opening of {} bytes is too short", payload.len()));
        }
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (to, hello) = rest.split_at(8);
        Ok(Opening {
            nonce: nonce.try_into().map_err(|_| "bad nonce")?,
            to: u64::from_be_bytes(to.try_into().map_err(|_| "bad peer id")?),
            hello: hello.to_vec(),
        })
    }
}

/// The acceptor's challenge: its nonce alone (its proof follows only once the dialer
/// has proven itself).
pub fn decode_challenge(payload: &[u8]) -> Result<Nonce, String> {
    payload.try_into().map_err(|_| {
        format!(
            "challenge of {} bytes (expected a nonce of {NONCE_LEN}: is the peer of an older release?)",
            payload.len()
        )
    })
}

/// One handshake, as both sides see it once the acceptor has chosen its nonce.
pub struct Handshake {
    transcript: Vec<u8>,
}

impl Handshake {
    pub fn new(opening: &Opening, acceptor_nonce: &Nonce) -> Handshake {
        let mut transcript = Vec::with_capacity(2 * NONCE_LEN + 8 + opening.hello.len());
        transcript.extend_from_slice(&opening.nonce);
        transcript.extend_from_slice(acceptor_nonce);
        transcript.extend_from_slice(&opening.to.to_be_bytes());
        transcript.extend_from_slice(&opening.hello);
        Handshake { transcript }
    }

    pub fn acceptor_proof(&self, key: &ClusterKey) -> Tag {
        key.mac(ACCEPTOR, &self.transcript)
    }

    pub fn dialer_proof(&self, key: &ClusterKey) -> Tag {
        key.mac(DIALER, &self.transcript)
    }

    /// The MACs of the records that follow the handshake on this connection.
    pub fn session(&self, key: &ClusterKey) -> Result<Session, String> {
        let session_key = key.mac(SESSION, &self.transcript);
        let key = HmacSha256::new_from_slice(&session_key)
            .map_err(|e| format!("cannot key a session: {e}"))?;
        Ok(Session { key, next: 0 })
    }
}

/// Whether a presented proof is the expected one, in constant time.
pub fn proof_matches(expected: &Tag, presented: &[u8]) -> bool {
    expected[..].ct_eq(presented).into()
}

/// The MACs of one connection's records, in order: the dialer seals, the acceptor opens.
pub struct Session {
    key: HmacSha256,
    /// The sequence number of the next record.
    next: u64,
}

impl Session {
    fn mac(&self, kind: u8, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.key.clone();
        mac.update(&self.next.to_be_bytes());
        mac.update(&[kind]);
        mac.update(payload);
        mac
    }

    /// `payload | MAC` for the next record, of this kind.
    pub fn seal(&mut self, kind: u8, payload: &[u8]) -> Vec<u8> {
        let tag = self.mac(kind, payload).finalize().into_bytes();
        self.next += 1;
        let mut out = Vec::with_capacity(payload.len() + TAG_LEN);
        out.extend_from_slice(payload);
        out.extend_from_slice(&tag);
        out
    }

    /// The payload of the next record, if its MAC is right.
    pub fn open<'a>(&mut self, kind: u8, sealed: &'a [u8]) -> Result<&'a [u8], String> {
        let Some(split) = sealed.len().checked_sub(TAG_LEN) else {
            return Err(format!("record {} is shorter than its MAC", self.next));
        };
        let (payload, tag) = sealed.split_at(split);
        if self.mac(kind, payload).verify_slice(tag).is_err() {
            return Err(format!(
                "record {} fails its MAC: altered, injected, replayed or out of order",
                self.next
            ));
        }
        self.next += 1;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> ClusterKey {
        ClusterKey::new(&Secret::new(text)).unwrap()
    }

    fn opening() -> Opening {
        Opening {
            nonce: nonce().unwrap(),
            to: 0x1234,
            hello: br#"{"id":1}"#.to_vec(),
        }
    }

    #[test]
    fn the_opening_round_trips_and_refuses_junk() {
        let o = opening();
        assert_eq!(Opening::decode(&o.encode()).unwrap(), o);
        assert!(Opening::decode(&[]).is_err());
        assert!(Opening::decode(&o.encode()[..20]).is_err());
        let mut other_version = o.encode();
        other_version[0] = 9;
        assert!(
            Opening::decode(&other_version)
                .unwrap_err()
                .contains("version")
        );
        assert_eq!(decode_challenge(&[7; 32]).unwrap(), [7; 32]);
        assert!(decode_challenge(&[0; 64]).is_err(), "a version 1 challenge");
        assert!(decode_challenge(&[0; 31]).is_err());
    }

    #[test]
    fn both_sides_agree_only_with_the_same_secret() {
        let o = opening();
        let acceptor_nonce = nonce().unwrap();
        let mine = Handshake::new(&o, &acceptor_nonce);
        let theirs = Handshake::new(&o, &acceptor_nonce);
        let (k, other) = (key("s3cret"), key("s3cret!"));
        assert!(proof_matches(
            &mine.acceptor_proof(&k),
            &theirs.acceptor_proof(&k)
        ));
        assert!(!proof_matches(
            &mine.acceptor_proof(&k),
            &theirs.acceptor_proof(&other)
        ));
        // A proof of one role never stands for the other, nor for another handshake.
        assert!(!proof_matches(
            &mine.dialer_proof(&k),
            &mine.acceptor_proof(&k)
        ));
        let fresh = Handshake::new(&o, &nonce().unwrap());
        assert!(!proof_matches(
            &fresh.dialer_proof(&k),
            &mine.dialer_proof(&k)
        ));
        assert!(!proof_matches(&mine.dialer_proof(&k), &[]));
    }

    #[test]
    fn sealed_records_open_in_order_and_nothing_else_does() {
        let o = opening();
        let h = Handshake::new(&o, &[3; 32]);
        let (mut dialer, mut acceptor) =
            (h.session(&key("k")).unwrap(), h.session(&key("k")).unwrap());
        let first = dialer.seal(6, b"first");
        let second = dialer.seal(6, b"second");
        // Out of order, replayed, altered, of another kind: all refused.
        assert!(acceptor.open(6, &second).is_err());
        assert_eq!(acceptor.open(6, &first).unwrap(), b"first");
        assert!(acceptor.open(6, &first).is_err(), "a replay");
        let mut altered = second.clone();
        altered[0] ^= 1;
        assert!(acceptor.open(6, &altered).is_err());
        assert!(acceptor.open(2, &second).is_err());
        assert!(acceptor.open(6, &second[..10]).is_err());
        assert_eq!(acceptor.open(6, &second).unwrap(), b"second");
        // Another connection's key opens nothing of this one.
        let other = Handshake::new(&o, &[4; 32]);
        let mut stranger = other.session(&key("k")).unwrap();
        assert!(stranger.open(6, &dialer.seal(6, b"third")).is_err());
    }

    #[test]
    fn the_key_is_never_printed() {
        assert_eq!(format!("{:?}", key("hunter2")), "ClusterKey(<redacted>)");
    }

    /// The cost of a record's MAC, sealed and opened. Prints figures:
    /// `cargo test --release --lib mac_costs -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn mac_costs() {
        let opening = Opening {
            nonce: [1; 32],
            to: 1,
            hello: b"{}".to_vec(),
        };
        let handshake = Handshake::new(&opening, &[2; 32]);
        let key = ClusterKey::new(&Secret::new("k")).unwrap();
        for size in [64usize, 1024, 64 * 1024] {
            let (mut seal, mut open) = (
                handshake.session(&key).unwrap(),
                handshake.session(&key).unwrap(),
            );
            let payload = vec![7u8; size];
            let rounds = (64 * 1024 * 1024 / size).min(200_000);
            let started = std::time::Instant::now();
            for _ in 0..rounds {
                let sealed = seal.seal(6, &payload);
                assert!(open.open(6, &sealed).is_ok());
            }
            println!(
                "MAC of a {size}-byte message, sealed and opened: {:.2} us",
                started.elapsed().as_secs_f64() * 1e6 / rounds as f64
            );
        }
    }
}
