//! A fake replica written for the tests: it registers on a real master as a replica
//! (`REPLCONF listening-port`, `PSYNC ? -1`, then `REPLCONF ACK <huge offset>` every
//! 100 ms, discarding whatever the master streams), so the master lists it in `ROLE`,
//! and it answers the daemon on its listening port as a replica that looks like the
//! best candidate (priority 1, a huge offset, link down) but cannot be promoted.

use super::free_port;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The offset the fake claims, far beyond any real replica's.
pub const HUGE_OFFSET: i64 = 1 << 40;

/// How the fake answers `SLAVEOF NO ONE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `-ERR ...`: it refuses outright.
    Error,
    /// `+OK`, but its `ROLE` stays slave: a promotion that never completes.
    Stall,
}

/// The fake replica; its threads stop (and its sockets close) when dropped.
pub struct FakeReplica {
    pub port: u16,
    master_port: u16,
    stop: Arc<AtomicBool>,
    /// Every command the daemon sent it, as space-separated text.
    commands: Arc<Mutex<Vec<String>>>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
}

impl FakeReplica {
    /// Listens on a free port, then registers on the master at `master_port`.
    pub fn start(master_port: u16, refusal: Refusal) -> FakeReplica {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the fake replica");
        let fake = FakeReplica {
            port,
            master_port,
            stop: Arc::new(AtomicBool::new(false)),
            commands: Arc::new(Mutex::new(Vec::new())),
            sockets: Arc::new(Mutex::new(Vec::new())),
        };
        let serving = Server {
            port,
            master_port,
            refusal,
            commands: fake.commands.clone(),
        };
        let (stop, sockets) = (fake.stop.clone(), fake.sockets.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                if let Ok(copy) = conn.try_clone() {
                    sockets.lock().unwrap_or_else(|e| e.into_inner()).push(copy);
                }
                let serving = serving.clone();
                std::thread::spawn(move || serving.serve(conn));
            }
        });
        fake.register();
        fake
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The commands received so far.
    pub fn commands(&self) -> Vec<String> {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The replication link: handshake, then discard the stream and send acks.
    fn register(&self) {
        let mut link =
            TcpStream::connect(("127.0.0.1", self.master_port)).expect("connect to the master");
        let port = self.port.to_string();
        // The master refuses PSYNC while a reply to us is pending: one step at a time.
        link.write_all(&command(&["REPLCONF", "listening-port", &port]))
            .expect("REPLCONF listening-port");
        let mut reply = [0u8; 5];
        link.read_exact(&mut reply).expect("the reply to REPLCONF");
        assert_eq!(&reply, b"+OK\r\n", "REPLCONF listening-port refused");
        link.write_all(&command(&["PSYNC", "?", "-1"]))
            .expect("PSYNC");
        if let Ok(copy) = link.try_clone() {
            self.sockets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(copy);
        }
        let mut reader = link.try_clone().expect("clone the link");
        std::thread::spawn(move || {
            let mut sink = [0u8; 64 * 1024];
            while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
        });
        let stop = self.stop.clone();
        std::thread::spawn(move || {
            let ack = command(&["REPLCONF", "ACK", &HUGE_OFFSET.to_string()]);
            while !stop.load(Ordering::Relaxed) && link.write_all(&ack).is_ok() {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
}

impl Drop for FakeReplica {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for socket in self
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = socket.shutdown(Shutdown::Both);
        }
        // Wakes the accept loop so it sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// What one connection to the fake needs.
#[derive(Clone)]
struct Server {
    port: u16,
    master_port: u16,
    refusal: Refusal,
    commands: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn serve(&self, conn: TcpStream) {
        let Ok(mut out) = conn.try_clone() else {
            return;
        };
        let mut input = BufReader::new(conn);
        while let Some(args) = read_command(&mut input) {
            self.commands
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(args.join(" "));
            if out.write_all(&self.answer(&args)).is_err() {
                return;
            }
        }
    }

    fn answer(&self, args: &[String]) -> Vec<u8> {
        let upper: Vec<String> = args.iter().map(|a| a.to_ascii_uppercase()).collect();
        let words: Vec<&str> = upper.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["PING", ..] => b"+PONG\r\n".to_vec(),
            ["AUTH", ..] | ["CONFIG", ..] | ["CLIENT", ..] => b"+OK\r\n".to_vec(),
            ["INFO", ..] => bulk(&self.info()),
            ["ROLE"] => format!(
                "*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:{}\r\n$7\r\nconnect\r\n:-1\r\n",
                self.master_port
            )
            .into_bytes(),
            ["SLAVEOF" | "REPLICAOF", "NO", "ONE"] => match self.refusal {
                Refusal::Error => b"-ERR fake replica: it never becomes master\r\n".to_vec(),
                Refusal::Stall => b"+OK\r\n".to_vec(),
            },
            ["SLAVEOF" | "REPLICAOF", _, _] => b"+OK\r\n".to_vec(),
            _ => format!("-ERR unknown command '{}'\r\n", args.join(" ")).into_bytes(),
        }
    }

    /// `INFO`: the server and replication sections of a replica that looks best.
    fn info(&self) -> String {
        format!(
            "# Server\r\nredis_version:7.0.0\r\nrun_id:0000000000000000000000000000000000000000\r\n\
             tcp_port:{}\r\n\r\n# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\n\
             master_port:{}\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\n\
             master_sync_in_progress:0\r\nslave_read_repl_offset:{HUGE_OFFSET}\r\n\
             slave_repl_offset:{HUGE_OFFSET}\r\nmaster_link_down_since_seconds:1\r\n\
             slave_priority:1\r\nslave_read_only:1\r\nreplica_announced:1\r\n\
             connected_slaves:0\r\n",
            self.port, self.master_port
        )
    }
}

/// A command as RESP: an array of bulk strings.
fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n{arg}\r\n", arg.len()).into_bytes());
    }
    out
}

fn bulk(text: &str) -> Vec<u8> {
    format!("${}\r\n{text}\r\n", text.len()).into_bytes()
}

/// Reads one command (an array of bulk strings, or an inline command); None at the end
/// of the stream or on anything else.
fn read_command(input: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let line = read_line(input)?;
    let Some(count) = line.strip_prefix('*') else {
        return Some(line.split_whitespace().map(String::from).collect());
    };
    let count: usize = count.parse().ok()?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        let len: usize = read_line(input)?.strip_prefix('$')?.parse().ok()?;
        let mut arg = vec![0u8; len + 2];
        input.read_exact(&mut arg).ok()?;
        arg.truncate(len);
        args.push(String::from_utf8_lossy(&arg).into_owned());
    }
    Some(args)
}

fn read_line(input: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    match input.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_string()),
    }
}
