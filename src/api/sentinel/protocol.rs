//! The server side of RESP2 for the Sentinel port: what a client's command reads as
//! (`reader.rs` reads it), and writing replies.
//!
//! Commands arrive as arrays of bulk strings (what every client library and redis-cli
//! send) or as inline text lines (what a person types into `nc`). Replies are built into
//! a byte buffer with [`Out`], in RESP2 or, after `HELLO 3`, RESP3 (redis-py 8 asks for
//! RESP3 by default): field lists become maps, nulls become `_`, pub/sub messages become
//! pushes. Sentinel sends every number in its instance lists as a bulk string, and so
//! does this code: clients parse those fields as text.

/// The largest command accepted; Sentinel commands are a few words.
pub const MAX_REQUEST: usize = 64 * 1024;

/// What is at the front of the read buffer.
#[derive(Debug, PartialEq)]
pub enum Request {
    /// A whole command (its words) and how many bytes it used.
    Command(Vec<String>, usize),
    /// More bytes are needed.
    Incomplete,
    /// The bytes are not a command; the connection should be closed after saying why.
    Malformed(String),
}

/// A reply being built, for a client speaking RESP2 or RESP3.
#[derive(Default)]
pub struct Out {
    pub bytes: Vec<u8>,
    pub resp3: bool,
}

impl Out {
    pub fn new(resp3: bool) -> Out {
        Out {
            bytes: Vec::new(),
            resp3,
        }
    }

    pub fn simple(&mut self, text: &str) -> &mut Out {
        self.line('+', text)
    }

    /// An error reply; `text` starts with its code (`ERR`, `NOAUTH`, ...).
    pub fn error(&mut self, text: &str) -> &mut Out {
        // An error is one line: no CR or LF may leak into it.
        let clean: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        self.line('-', &clean)
    }

    pub fn int(&mut self, n: i64) -> &mut Out {
        self.line(':', &n.to_string())
    }

    pub fn bulk(&mut self, text: &str) -> &mut Out {
        self.line('$', &text.len().to_string());
        self.bytes.extend_from_slice(text.as_bytes());
        self.bytes.extend_from_slice(b"\r\n");
        self
    }

    /// The null bulk string (`$-1`; `_` in RESP3).
    pub fn null_bulk(&mut self) -> &mut Out {
        self.null(b"$-1\r\n")
    }

    /// The null array (`*-1`; `_` in RESP3): "no such master" for get-master-addr-by-name.
    pub fn null_array(&mut self) -> &mut Out {
        self.null(b"*-1\r\n")
    }

    fn null(&mut self, resp2: &[u8]) -> &mut Out {
        let bytes: &[u8] = if self.resp3 { b"_\r\n" } else { resp2 };
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// A map header of `len` pairs (a flat array of `2 * len` items in RESP2).
    pub fn map(&mut self, len: usize) -> &mut Out {
        if self.resp3 {
            self.line('%', &len.to_string())
        } else {
            self.array(len * 2)
        }
    }

    /// A pub/sub message header: a push in RESP3, an array in RESP2.
    pub fn push(&mut self, len: usize) -> &mut Out {
        let kind = if self.resp3 { '>' } else { '*' };
        self.line(kind, &len.to_string())
    }

    pub fn array(&mut self, len: usize) -> &mut Out {
        self.line('*', &len.to_string())
    }

    /// An array of bulk strings.
    pub fn bulks<S: AsRef<str>>(&mut self, items: &[S]) -> &mut Out {
        self.array(items.len());
        for item in items {
            self.bulk(item.as_ref());
        }
        self
    }

    /// A field/value list as Sentinel sends it: a map (a flat array in RESP2).
    pub fn fields(&mut self, pairs: &[(&str, String)]) -> &mut Out {
        self.map(pairs.len());
        for (key, value) in pairs {
            self.bulk(key);
            self.bulk(value);
        }
        self
    }

    fn line(&mut self, kind: char, text: &str) -> &mut Out {
        self.bytes.push(kind as u8);
        self.bytes.extend_from_slice(text.as_bytes());
        self.bytes.extend_from_slice(b"\r\n");
        self
    }
}

/// Redis's glob matching for `PSUBSCRIBE` patterns: `*`, `?`, `[abc]`, `[^a-z]`, `\x`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some((c, text_rest)) = text.split_first() else {
                return false;
            };
            let (negate, mut class) = match rest.split_first() {
                Some((b'^', r)) => (true, r),
                _ => (false, rest),
            };
            let mut matched = false;
            loop {
                match class {
                    [] => return false,
                    [b']', after @ ..] => {
                        class = after;
                        break;
                    }
                    [b'\\', x, after @ ..] => {
                        matched |= x == c;
                        class = after;
                    }
                    [lo, b'-', hi, after @ ..] if *hi != b']' => {
                        matched |= (lo..=hi).contains(&c);
                        class = after;
                    }
                    [x, after @ ..] => {
                        matched |= x == c;
                        class = after;
                    }
                }
            }
            matched != negate && glob_match(class, text_rest)
        }
        Some((b'\\', [x, rest @ ..])) => text.first() == Some(x) && glob_match(rest, &text[1..]),
        Some((p, rest)) => text.first() == Some(p) && glob_match(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_replies() {
        let mut out = Out::default();
        out.bulks(&["127.0.0.1", "6379"])
            .null_array()
            .error("ERR a\r\nb");
        assert_eq!(
            out.bytes,
            b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n*-1\r\n-ERR ab\r\n"
        );
        let mut out = Out::new(true);
        out.fields(&[("ip", "h".into())])
            .null_array()
            .push(1)
            .bulk("x");
        assert_eq!(
            out.bytes,
            b"%1\r\n$2\r\nip\r\n$1\r\nh\r\n_\r\n>1\r\n$1\r\nx\r\n"
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b"+switch-master"));
        assert!(glob_match(b"+s*", b"+sdown"));
        assert!(!glob_match(b"+s*", b"-sdown"));
        assert!(glob_match(b"[+-]sdown", b"-sdown"));
        assert!(glob_match(b"[^a]?", b"bc"));
        assert!(glob_match(b"h\\*", b"h*"));
        assert!(!glob_match(b"h\\*", b"hx"));
    }
}
