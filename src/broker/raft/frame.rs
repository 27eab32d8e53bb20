//! Checksummed, length-prefixed records: the one byte layout shared by the write-ahead
//! log, the snapshot file and the TCP transport.
//!
//! ```text
//! | length: u32 BE | crc32: u32 BE | kind: u8 | payload: length - 1 bytes |
//! ```
//!
//! `length` counts the kind byte and the payload; the CRC (IEEE, as in zlib) covers the
//! same bytes. A reader can therefore tell a record cut short by a crash (too few bytes
//! left) from one whose bytes were damaged (checksum mismatch), and refuse both without
//! ever trusting a length it has not checked against a limit.

/// Bytes before the kind byte: length and checksum.
pub const HEADER: usize = 8;

/// The largest record accepted: far above any snapshot of a realistic state (10,000
/// groups encode to about 1 MB), far below what would exhaust memory.
pub const MAX_RECORD: usize = 64 * 1024 * 1024;

/// Encodes one record.
pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
    let length = payload.len() + 1;
    let mut out = Vec::with_capacity(HEADER + length);
    out.extend_from_slice(&(length as u32).to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(payload);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded<'a> {
    /// A whole, intact record; `size` bytes of the buffer were used.
    Record {
        kind: u8,
        payload: &'a [u8],
        size: usize,
    },
    /// The buffer ends inside the record: more bytes are needed (or, at the end of a
    /// file, the last write was torn).
    Incomplete,
    /// The bytes cannot be a record: bad length or checksum.
    Corrupt(String),
}

/// Decodes the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    let Some(header) = buf.get(..HEADER) else {
        return Decoded::Incomplete;
    };
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let expected = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if length == 0 || length > MAX_RECORD {
        return Decoded::Corrupt(format!("record length {length} is out of range"));
    }
    let Some(body) = buf.get(HEADER..HEADER + length) else {
        return Decoded::Incomplete;
    };
    let actual = crc32fast::hash(body);
    if actual != expected {
        return Decoded::Corrupt(format!(
            "checksum mismatch (stored {expected:08x}, computed {actual:08x})"
        ));
    }
    Decoded::Record {
        kind: body[0],
        payload: &body[1..],
        size: HEADER + length,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let bytes = encode(7, b"hello");
        assert_eq!(
            decode(&bytes),
            Decoded::Record {
                kind: 7,
                payload: b"hello",
                size: bytes.len()
            }
        );
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        assert!(matches!(decode(&flipped), Decoded::Corrupt(_)));
        let huge = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1];
        assert!(matches!(decode(&huge), Decoded::Corrupt(_)));
    }
}
