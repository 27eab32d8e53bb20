//! Reading client commands on the Sentinel port, resuming where the last packet ended.
//!
//! A command may arrive in many packets. Parsing it from its first byte on each one
//! costs the port's single loop thread time in proportion to the bytes buffered, per
//! packet: a client trickling one byte at a time after a few thousand items held a
//! whole core. [`CommandReader`] keeps the items it has taken apart and the offset it
//! reached, so each byte is looked at a bounded number of times: the work is linear in
//! the bytes received. Only a line header (`*N` or `$N`, a few bytes) that is cut by a
//! packet is read again.

use super::protocol::{MAX_REQUEST, Request};

/// Longest `*N` or `$N` line, CRLF excluded: the numbers here stay far below it.
const MAX_HEADER_LINE: usize = 32;

/// A client's command being read, kept between packets.
#[derive(Debug, Default)]
pub struct CommandReader {
    /// Bytes of the command at the buffer's front already taken apart.
    at: usize,
    /// Items the array announced, once its header is read.
    expected: Option<usize>,
    /// Items read so far.
    words: Vec<String>,
    /// An inline command: bytes already searched for its line end.
    scanned: usize,
    /// Bytes looked at since the reader was made (what the linear-work test counts).
    #[cfg_attr(not(test), allow(dead_code))]
    work: u64,
}

impl CommandReader {
    /// Reads the command at the front of `buf`, going on from the last call. The caller
    /// consumes the `used` bytes of a [`Request::Command`] before the next call, and
    /// closes the connection after [`Request::Malformed`]; `buf` otherwise only grows
    /// at its end between calls.
    pub fn next(&mut self, buf: &[u8]) -> Request {
        let request = match buf.first() {
            None => Request::Incomplete,
            Some(b'*') => self.array(buf),
            Some(_) => self.inline(buf),
        };
        if !matches!(request, Request::Incomplete) {
            self.at = 0;
            self.expected = None;
            self.scanned = 0;
        }
        request
    }

    /// Bytes looked at so far.
    #[cfg(test)]
    pub fn work(&self) -> u64 {
        self.work
    }

    fn inline(&mut self, buf: &[u8]) -> Request {
        let from = self.scanned.min(buf.len());
        self.work += (buf.len() - from) as u64;
        let Some(end) = buf[from..]
            .iter()
            .position(|b| *b == b'\n')
            .map(|i| from + i)
        else {
            self.scanned = buf.len();
            return if buf.len() > MAX_REQUEST {
                Request::Malformed(format!("inline request longer than {MAX_REQUEST} bytes"))
            } else {
                Request::Incomplete
            };
        };
        match std::str::from_utf8(&buf[..end]) {
            Ok(line) => {
                Request::Command(line.split_whitespace().map(String::from).collect(), end + 1)
            }
            Err(_) => Request::Malformed("inline request is not UTF-8".into()),
        }
    }

    fn array(&mut self, buf: &[u8]) -> Request {
        match self.items(buf) {
            Ok(true) => Request::Command(std::mem::take(&mut self.words), self.at),
            Ok(false) if buf.len() > MAX_REQUEST => {
                self.words = Vec::new();
                Request::Malformed(format!("request longer than {MAX_REQUEST} bytes"))
            }
            Ok(false) => Request::Incomplete,
            Err(why) => {
                self.words = Vec::new();
                Request::Malformed(why)
            }
        }
    }

    /// Takes apart what arrived of the array; true once it is whole.
    fn items(&mut self, buf: &[u8]) -> Result<bool, String> {
        let expected = match self.expected {
            Some(n) => n,
            None => {
                let Some((n, next)) = self.header(buf, b'*')? else {
                    return Ok(false);
                };
                if n < 0 {
                    return Err("expected an array of bulk strings".into());
                }
                let n = n as usize;
                if n > MAX_REQUEST / 4 {
                    return Err(format!("array of {n} items is over the limit"));
                }
                self.at = next;
                self.expected = Some(n);
                self.words = Vec::with_capacity(n.min(64));
                n
            }
        };
        while self.words.len() < expected {
            if buf.get(self.at).is_some_and(|b| *b != b'$') {
                return Err("expected an array of bulk strings".into());
            }
            let Some((len, data)) = self.header(buf, b'$')? else {
                return Ok(false);
            };
            if len < 0 || len as usize > MAX_REQUEST {
                return Err(format!("bad bulk string length {len}"));
            }
            let end = data + len as usize;
            if buf.len() < end + 2 {
                return Ok(false);
            }
            self.work += len as u64 + 2;
            if &buf[end..end + 2] != b"\r\n" {
                return Err("bulk string not followed by CRLF".into());
            }
            let word = std::str::from_utf8(&buf[data..end])
                .map_err(|_| "expected an array of UTF-8 bulk strings".to_string())?;
            self.words.push(word.to_string());
            self.at = end + 2;
        }
        Ok(true)
    }

    /// The number of a `<kind>N\r\n` line at `self.at`, and where the line ends; None
    /// until the line is whole.
    fn header(&mut self, buf: &[u8], kind: u8) -> Result<Option<(i64, usize)>, String> {
        let line = &buf[self.at..];
        let window = &line[..line.len().min(MAX_HEADER_LINE + 2)];
        self.work += window.len() as u64;
        let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
            if window.len() > MAX_HEADER_LINE + 1 {
                return Err("protocol line too long".into());
            }
            return Ok(None);
        };
        let Some((&first, digits)) = line[..end].split_first() else {
            return Err("empty protocol line".into());
        };
        if first != kind {
            return Err(format!(
                "expected '{}', got byte 0x{first:02x}",
                kind as char
            ));
        }
        let number = std::str::from_utf8(digits)
            .ok()
            .and_then(|text| text.parse::<i64>().ok())
            .ok_or_else(|| format!("bad number {:?}", String::from_utf8_lossy(digits)))?;
        Ok(Some((number, self.at + end + 2)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `SENTINEL get-master-addr-by-name` with `extra` one-byte items after it.
    fn long_command(extra: usize) -> Vec<u8> {
        let mut bytes = format!(
            "*{}\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n",
            extra + 2
        )
        .into_bytes();
        for _ in 0..extra {
            bytes.extend_from_slice(b"$1\r\nx\r\n");
        }
        bytes
    }

    /// Feeds `input` in pieces of `step` bytes, as packets would arrive; returns the
    /// commands read and the reader's work.
    fn feed(input: &[u8], step: usize) -> (Vec<Request>, u64) {
        let mut reader = CommandReader::default();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match reader.next(&buf) {
                    Request::Incomplete => break,
                    Request::Command(words, used) => {
                        buf.drain(..used);
                        out.push(Request::Command(words, used));
                    }
                    malformed => {
                        out.push(malformed);
                        return (out, reader.work());
                    }
                }
            }
        }
        (out, reader.work())
    }

    #[test]
    fn commands_read_in_any_pieces() {
        let text = b"*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$5\r\ncache\r\nPING\r\n*0\r\n";
        for step in [1, 2, 3, 7, text.len()] {
            let (read, _) = feed(text, step);
            let words: Vec<Vec<String>> = read
                .into_iter()
                .map(|r| match r {
                    Request::Command(words, _) => words,
                    other => panic!("step {step}: {other:?}"),
                })
                .collect();
            assert_eq!(
                words,
                vec![
                    vec![
                        "SENTINEL".to_string(),
                        "get-master-addr-by-name".into(),
                        "cache".into()
                    ],
                    vec!["PING".to_string()],
                    vec![],
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn malformed_commands_say_why() {
        for (bad, says) in [
            (&b"*1\r\n:5\r\n"[..], "bulk strings"),
            (b"*x\r\n", "bad number"),
            (b"*-1\r\n", "bulk strings"),
            (b"*1\r\n$2\r\nabcd\r\n", "CRLF"),
            (b"*1\r\n$1\r\n\xff\r\n", "UTF-8"),
            (
                b"*1\r\n$1111111111111111111111111111111111111111\r\n",
                "too long",
            ),
            (b"*999999\r\n", "over the limit"),
        ] {
            let (read, _) = feed(bad, 1);
            match read.last() {
                Some(Request::Malformed(why)) => assert!(why.contains(says), "{bad:?}: {why}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let (read, _) = feed(&vec![b'a'; MAX_REQUEST + 10], 4096);
        assert!(matches!(read.last(), Some(Request::Malformed(_))));
    }

    /// The finding: a command of thousands of items trickled one byte per packet.
    /// Reading it from the start on every packet looked at about items x packets bytes
    /// (over 100 million here); resuming looks at each byte a bounded number of times.
    #[test]
    fn a_trickled_command_costs_linear_work() {
        let command = long_command(9000);
        assert!(command.len() < MAX_REQUEST);
        let (read, work) = feed(&command, 1);
        assert!(matches!(read.as_slice(), [Request::Command(words, _)] if words.len() == 9002));
        let bound = 40 * command.len() as u64;
        assert!(
            work < bound,
            "{work} bytes looked at for a {} byte command (bound {bound})",
            command.len()
        );
    }
}
