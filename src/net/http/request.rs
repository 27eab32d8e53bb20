//! Reading HTTP/1.1 requests from a connection's input: the head with `httparse`
//! (which also takes the LF-only line endings that people type into `nc`), then the
//! body, framed by `Content-Length` or decoded from chunks, under the same size cap.
//!
//! Chunked bodies are decoded rather than refused with 411: clients that stream a body
//! of unknown length (Go's `http.Client`, Python's `requests` with a generator, curl
//! with `-H 'Transfer-Encoding: chunked'`) then work, and the cap bounds them just the
//! same. Everything here is pure and incremental: the body is taken from the input as
//! it arrives, so a trickled body costs linear time, never a re-parse per byte.

use std::net::SocketAddr;

/// Header fields accepted in one request.
pub const MAX_HEADERS: usize = 64;
/// Longest chunk-size line (with its extensions).
const MAX_CHUNK_LINE: usize = 1024;

/// Size caps of a request.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Request line and header fields, in bytes (431 beyond).
    pub max_head: usize,
    /// Body, in bytes once decoded (413 beyond).
    pub max_body: usize,
}

/// A whole request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Field names as sent, with their raw values.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
}

impl Request {
    /// The first value of a header field (names match in any case), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Whether the connection stays open after the reply: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        let has = |token: &str| {
            self.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
                .filter_map(|(_, v)| std::str::from_utf8(v).ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        if self.minor == 0 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }

    /// Whether the client waits for `100 Continue` before sending its body.
    pub fn expects_continue(&self) -> bool {
        self.minor == 1
            && self
                .header("expect")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
    }
}

/// A request refused before it is whole; the connection closes after the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: String,
}

fn reject(status: u16, reason: impl Into<String>) -> Reject {
    Reject {
        status,
        reason: reason.into(),
    }
}

/// What the front of the input holds.
#[derive(Debug)]
pub enum Head {
    /// Not the whole head yet.
    Partial,
    /// The request (body still empty) and the head's length.
    Done(Request, usize),
    Bad(Reject),
}

/// Parses the request line and header fields at the front of `buf`.
pub fn parse_head(buf: &[u8], peer: SocketAddr, caps: &Caps) -> Head {
    let too_long = || {
        Head::Bad(reject(
            431,
            format!("request header over {} bytes", caps.max_head),
        ))
    };
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    match parsed.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() > caps.max_head => too_long(),
        Ok(httparse::Status::Partial) => Head::Partial,
        Ok(httparse::Status::Complete(len)) if len > caps.max_head => too_long(),
        Ok(httparse::Status::Complete(len)) => {
            let request = Request {
                method: parsed.method.unwrap_or_default().to_string(),
                target: parsed.path.unwrap_or_default().to_string(),
                minor: parsed.version.unwrap_or(1),
                headers: parsed
                    .headers
                    .iter()
                    .map(|h| (h.name.to_string(), h.value.to_vec()))
                    .collect(),
                body: Vec::new(),
                peer,
            };
            Head::Done(request, len)
        }
        Err(httparse::Error::TooManyHeaders) => Head::Bad(reject(
            431,
            format!("more than {MAX_HEADERS} header fields"),
        )),
        Err(httparse::Error::Version) => {
            Head::Bad(reject(505, "only HTTP/1.0 and HTTP/1.1 are served"))
        }
        Err(e) => Head::Bad(reject(400, format!("malformed request: {e}"))),
    }
}

/// How a request's body is framed, and how far it has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Bytes still to come.
    Length(usize),
    Chunked(Chunk),
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    Size,
    /// Bytes of chunk data still to come.
    Data(usize),
    /// The line end after a chunk's data.
    DataEnd,
    /// Trailer fields, up to an empty line.
    Trailers,
}

/// The body's framing, from `Transfer-Encoding` and `Content-Length`; a body announced
/// over the cap is refused before it is read.
pub fn framing(request: &Request, caps: &Caps) -> Result<Framing, Reject> {
    let values = |name: &str| -> Result<Vec<String>, Reject> {
        let mut all = Vec::new();
        for (n, v) in request.headers.iter() {
            if n.eq_ignore_ascii_case(name) {
                let text = std::str::from_utf8(v)
                    .map_err(|_| reject(400, format!("{name} is not text")))?;
                all.extend(text.split(',').map(|t| t.trim().to_ascii_lowercase()));
            }
        }
        Ok(all)
    };
    let codings = values("transfer-encoding")?;
    let lengths = values("content-length")?;
    if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err(reject(
                400,
                "both Transfer-Encoding and Content-Length were sent",
            ));
        }
        return match codings.as_slice() {
            [only] if only == "chunked" => Ok(Framing::Chunked(Chunk::Size)),
            _ => Err(reject(
                501,
                format!(
                    "Transfer-Encoding {} is not supported (only chunked)",
                    codings.join(", ")
                ),
            )),
        };
    }
    let Some(first) = lengths.first() else {
        return Ok(Framing::Length(0));
    };
    if lengths.iter().any(|l| l != first) {
        return Err(reject(400, "conflicting Content-Length values"));
    }
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Err(reject(400, format!("bad Content-Length {first:?}")));
    }
    match first.parse::<usize>() {
        Ok(n) if n <= caps.max_body => Ok(Framing::Length(n)),
        _ => Err(too_big(caps)),
    }
}

fn too_big(caps: &Caps) -> Reject {
    reject(413, format!("request body over {} bytes", caps.max_body))
}

/// Moves body bytes from the front of `input` into `body`. Returns whether the body is
/// whole, and how many input bytes were used.
pub fn read_body(
    framing: &mut Framing,
    input: &[u8],
    body: &mut Vec<u8>,
    caps: &Caps,
) -> Result<(bool, usize), Reject> {
    match framing {
        Framing::Length(remaining) => {
            let take = (*remaining).min(input.len());
            body.extend_from_slice(&input[..take]);
            *remaining -= take;
            Ok((*remaining == 0, take))
        }
        Framing::Chunked(chunk) => read_chunks(chunk, input, body, caps),
    }
}

fn read_chunks(
    chunk: &mut Chunk,
    input: &[u8],
    body: &mut Vec<u8>,
    caps: &Caps,
) -> Result<(bool, usize), Reject> {
    let mut at = 0;
    loop {
        let rest = &input[at..];
        match *chunk {
            Chunk::Size => match chunk_size(rest)? {
                None => return Ok((false, at)),
                Some((used, 0)) => {
                    at += used;
                    *chunk = Chunk::Trailers;
                }
                Some((used, size)) if size <= caps.max_body.saturating_sub(body.len()) => {
                    at += used;
                    *chunk = Chunk::Data(size);
                }
                Some(_) => return Err(too_big(caps)),
            },
            Chunk::Data(remaining) => {
                let take = remaining.min(rest.len());
                body.extend_from_slice(&rest[..take]);
                at += take;
                if take < remaining {
                    *chunk = Chunk::Data(remaining - take);
                    return Ok((false, at));
                }
                *chunk = Chunk::DataEnd;
            }
            Chunk::DataEnd => {
                at += match rest {
                    [b'\r', b'\n', ..] => 2,
                    [b'\n', ..] => 1,
                    [] | [b'\r'] => return Ok((false, at)),
                    _ => return Err(reject(400, "chunk data is longer than its size")),
                };
                *chunk = Chunk::Size;
            }
            Chunk::Trailers => {
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                return match httparse::parse_headers(rest, &mut fields) {
                    Ok(httparse::Status::Complete((used, _))) => Ok((true, at + used)),
                    Ok(httparse::Status::Partial) if rest.len() > caps.max_head => Err(reject(
                        431,
                        format!("trailer fields over {} bytes", caps.max_head),
                    )),
                    Ok(httparse::Status::Partial) => Ok((false, at)),
                    Err(e) => Err(reject(400, format!("malformed trailer fields: {e}"))),
                };
            }
        }
    }
}

/// A chunk-size line at the front of `buf`: (bytes used, size), or None until the line
/// is whole. Hex digits, then optional extensions after `;`; CRLF or LF ends it.
fn chunk_size(buf: &[u8]) -> Result<Option<(usize, usize)>, Reject> {
    let Some(end) = buf
        .iter()
        .take(MAX_CHUNK_LINE + 1)
        .position(|b| *b == b'\n')
    else {
        if buf.len() > MAX_CHUNK_LINE {
            return Err(reject(400, "chunk-size line too long"));
        }
        return Ok(None);
    };
    let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    let digits = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let bad = || reject(400, "malformed chunk-size line");
    if digits.is_empty() || digits.len() > 15 {
        return Err(bad());
    }
    let text = std::str::from_utf8(digits).map_err(|_| bad())?;
    let size = usize::from_str_radix(text, 16).map_err(|_| bad())?;
    Ok(Some((end + 1, size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        max_head: 1024,
        max_body: 64,
    };

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    fn head(buf: &[u8]) -> Head {
        parse_head(buf, peer(), &CAPS)
    }

    #[test]
    fn heads_with_crlf_or_lf_only() {
        for text in [
            &b"GET /master?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET /master?x=1 HTTP/1.1\nHost: a\n\n",
        ] {
            let Head::Done(request, used) = head(text) else {
                panic!("{text:?}")
            };
            assert_eq!(used, text.len());
            assert_eq!(
                (request.method.as_str(), request.target.as_str()),
                ("GET", "/master?x=1")
            );
            assert_eq!(request.header("HOST"), Some("a"));
            assert!(request.keep_alive());
        }
        assert!(matches!(head(b"GET / HTTP/1.1\r\nHost"), Head::Partial));
    }

    #[test]
    fn bad_heads_get_a_status() {
        let status = |buf: &[u8]| match head(buf) {
            Head::Bad(r) => r.status,
            other => panic!("{other:?}"),
        };
        assert_eq!(status(b"\x00\x01garbage\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status(&[b'a'; 1100]), 431);
        let many: String = (0..70).map(|i| format!("X-{i}: 1\r\n")).collect();
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            431
        );
    }

    fn request(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "POST".into(),
            target: "/".into(),
            minor: 1,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: Vec::new(),
            peer: peer(),
        }
    }

    #[test]
    fn framing_from_headers() {
        let framing_of = |h: &[(&str, &str)]| framing(&request(h), &CAPS).map_err(|r| r.status);
        assert_eq!(framing_of(&[]), Ok(Framing::Length(0)));
        assert_eq!(
            framing_of(&[("Content-Length", "12")]),
            Ok(Framing::Length(12))
        );
        assert_eq!(framing_of(&[("content-length", "65")]), Err(413));
        assert_eq!(
            framing_of(&[("Content-Length", "99999999999999999999999")]),
            Err(413)
        );
        assert_eq!(framing_of(&[("Content-Length", "-1")]), Err(400));
        assert_eq!(
            framing_of(&[("Content-Length", "1"), ("Content-Length", "2")]),
            Err(400)
        );
        assert_eq!(
            framing_of(&[("Transfer-Encoding", "Chunked")]),
            Ok(Framing::Chunked(Chunk::Size))
        );
        assert_eq!(
            framing_of(&[("Transfer-Encoding", "gzip, chunked")]),
            Err(501)
        );
        assert_eq!(
            framing_of(&[("Transfer-Encoding", "chunked"), ("Content-Length", "1")]),
            Err(400)
        );
    }

    /// Feeds `input` to a chunked reader `step` bytes at a time, as the loop would.
    fn chunked(input: &[u8], step: usize) -> Result<Vec<u8>, u16> {
        let mut framing = Framing::Chunked(Chunk::Size);
        let mut body = Vec::new();
        let mut buffered = Vec::new();
        for piece in input.chunks(step) {
            buffered.extend_from_slice(piece);
            let (done, used) =
                read_body(&mut framing, &buffered, &mut body, &CAPS).map_err(|r| r.status)?;
            buffered.drain(..used);
            if done {
                assert!(buffered.is_empty(), "left over: {buffered:?}");
                return Ok(body);
            }
        }
        Err(0)
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        let text = b"4\r\nmast\r\n5;ext=1\r\ners=a\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, text.len()] {
            assert_eq!(
                chunked(text, step),
                Ok(b"masters=a".to_vec()),
                "step {step}"
            );
        }
        assert_eq!(chunked(b"3\nabc\n0\n\n", 1), Ok(b"abc".to_vec()));
        assert_eq!(chunked(b"41\r\n", 1), Err(413), "one chunk over the cap");
        let many: Vec<u8> = (0..20).flat_map(|_| b"4\r\nxxxx\r\n".to_vec()).collect();
        assert_eq!(chunked(&many, 5), Err(413), "chunks adding up over the cap");
        assert_eq!(chunked(b"zz\r\n", 1), Err(400));
        assert_eq!(chunked(b"2\r\nabc\r\n", 1), Err(400));
        assert_eq!(chunked(&[b'1'; 2000], 100), Err(400));
        assert_eq!(chunked(b"4\r\nabcd\r\n", 1), Err(0), "never ends");
    }

    #[test]
    fn keep_alive_follows_the_version() {
        let mut r = request(&[]);
        assert!(r.keep_alive());
        r.headers.push(("Connection".into(), b"close".to_vec()));
        assert!(!r.keep_alive());
        let mut old = request(&[("Connection", "Keep-Alive")]);
        old.minor = 0;
        assert!(old.keep_alive());
        old.headers.clear();
        assert!(!old.keep_alive());
    }
}
