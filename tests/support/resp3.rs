//! A raw RESP2/RESP3 connection, for tests that compare two servers' replies exactly:
//! it sends commands as arrays of bulk strings and parses every RESP3 type into
//! [`Value`], keeping what a client library would hide (maps against flat arrays,
//! pushes against arrays, simple against bulk strings).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One reply, as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(String),
    /// `$-1`, `*-1` or RESP3's `_`.
    Null,
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Set(Vec<Value>),
    Push(Vec<Value>),
    Bool(bool),
    /// RESP3 doubles and big numbers, as text.
    Number(String),
    /// RESP3 verbatim strings, without their format prefix.
    Verbatim(String),
}

impl Value {
    /// The text of a simple, bulk or verbatim string.
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Simple(s) | Value::Bulk(s) | Value::Verbatim(s) => Some(s),
            _ => None,
        }
    }
}

/// A connection that sends one command at a time and reads its replies.
pub struct RespConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RespConn {
    pub fn connect(port: u16) -> Result<RespConn, String> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("connect to port {port}: {e}"))?;
        Ok(RespConn {
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends a command and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> Result<Value, String> {
        self.send(args)?;
        self.read(Duration::from_secs(5))
    }

    pub fn send(&mut self, args: &[&str]) -> Result<(), String> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        self.stream
            .write_all(&out)
            .map_err(|e| format!("send {args:?}: {e}"))
    }

    /// Reads the next reply (or pushed message), waiting at most `timeout`.
    pub fn read(&mut self, timeout: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((value, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                return Ok(value);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "no whole reply within {timeout:?}; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }
}

/// Parses one reply from the front of `buf`: the value and the bytes it used, or None
/// when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, String> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[1..end]).map_err(|e| e.to_string())?;
    let rest = end + 2;
    let int = |s: &str| {
        s.parse::<i64>()
            .map_err(|e| format!("bad length {s:?}: {e}"))
    };
    let value = match buf[0] {
        b'+' => Value::Simple(line.into()),
        b'-' => Value::Error(line.into()),
        b':' => Value::Int(int(line)?),
        b'_' => Value::Null,
        b'#' => Value::Bool(line == "t"),
        b',' | b'(' => Value::Number(line.into()),
        b'$' | b'=' => {
            let len = int(line)?;
            if len < 0 {
                return Ok(Some((Value::Null, rest)));
            }
            let len = len as usize;
            if buf.len() < rest + len + 2 {
                return Ok(None);
            }
            let text = String::from_utf8_lossy(&buf[rest..rest + len]).into_owned();
            let value = if buf[0] == b'=' {
                Value::Verbatim(text.get(4..).unwrap_or("").to_string())
            } else {
                Value::Bulk(text)
            };
            return Ok(Some((value, rest + len + 2)));
        }
        b'*' | b'~' | b'>' | b'%' => return aggregate(buf[0], int(line)?, buf, rest),
        other => return Err(format!("unknown RESP type byte {:?}", other as char)),
    };
    Ok(Some((value, rest)))
}

fn aggregate(
    kind: u8,
    len: i64,
    buf: &[u8],
    mut at: usize,
) -> Result<Option<(Value, usize)>, String> {
    if len < 0 {
        return Ok(Some((Value::Null, at)));
    }
    let count = if kind == b'%' { len * 2 } else { len };
    let mut items = Vec::new();
    for _ in 0..count {
        match parse(&buf[at..])? {
            Some((item, used)) => {
                items.push(item);
                at += used;
            }
            None => return Ok(None),
        }
    }
    let value = match kind {
        b'%' => {
            let mut pairs = Vec::new();
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            Value::Map(pairs)
        }
        b'~' => Value::Set(items),
        b'>' => Value::Push(items),
        _ => Value::Array(items),
    };
    Ok(Some((value, at)))
}
