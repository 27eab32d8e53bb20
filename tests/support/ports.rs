//! Helpers for the tests and the bench that push the daemon's ports to their limits
//! (`tests/hostile_ports.rs`, `benches/ports.rs`): a daemon under a low open-file
//! limit, what `/proc` says of a process, and raw connections that report whether
//! the daemon refused or closed them.

use super::{Daemon, START_MARKER, TempDir, free_port, wait_until};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

impl Daemon {
    /// Like [`Daemon::start`], with the daemon's open-file limit (soft and hard) set to
    /// `nofile` before it starts.
    pub fn start_limited(args: &[&str], nofile: libc::rlim_t) -> Daemon {
        let port = free_port();
        let dir = TempDir::new("daemon");
        let mut log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
        writeln!(
            log,
            "{START_MARKER} (RLIMIT_NOFILE {nofile}) {}",
            args.join(" ")
        )
        .expect("log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_redis-failover"));
        command
            .arg(format!("-addr=127.0.0.1:{port}"))
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log);
        set_nofile_in_child(&mut command, nofile);
        let child = command.spawn().expect("start redis-failover");
        let daemon = Daemon {
            port,
            dir,
            child: Some(child),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
        };
        wait_until(Duration::from_secs(10), "the daemon's HTTP API", || {
            daemon.http("GET", "/master", "").map(|_| ())
        });
        daemon
    }
}

/// Makes `command`'s process start with RLIMIT_NOFILE `nofile` (soft and hard).
pub fn set_nofile_in_child(command: &mut Command, nofile: libc::rlim_t) {
    // SAFETY: setrlimit is async-signal-safe, and the closure touches nothing else.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Raises this process's soft open-file limit to its hard limit (tests open thousands
/// of connections); returns the soft limit now in force.
pub fn raise_own_nofile() -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> Result<usize, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .map_err(|e| format!("/proc/{pid}/fd: {e}"))
}

/// The numbers of a process's open file descriptors.
pub fn fd_numbers(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Threads of a process.
pub fn threads(pid: u32) -> Result<usize, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no Threads in /proc/{pid}/status"))
}

/// What became of a connection the test holds open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Still open, nothing received.
    Open,
    /// The daemon sent this, then closed it (or is about to).
    Answered(String),
    /// Closed (or reset) with nothing said.
    Closed,
}

/// A connection opened by the test, possibly after sending some bytes.
pub struct Held {
    pub stream: TcpStream,
    received: Vec<u8>,
    closed: bool,
}

impl Held {
    /// Connects and sends `first` (which may be empty: an idle connection).
    pub fn open(port: u16, first: &[u8]) -> Result<Held, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        if !first.is_empty() {
            stream.write_all(first).map_err(|e| e.to_string())?;
        }
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        Ok(Held {
            stream,
            received: Vec::new(),
            closed: false,
        })
    }

    /// Reads what has arrived, without waiting, and says what became of it.
    pub fn fate(&mut self) -> Fate {
        let mut buf = [0u8; 4096];
        while !self.closed {
            match self.stream.read(&mut buf) {
                Ok(0) => self.closed = true,
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => self.closed = true,
            }
        }
        match (self.received.is_empty(), self.closed) {
            (true, false) => Fate::Open,
            (true, true) => Fate::Closed,
            (false, _) => Fate::Answered(String::from_utf8_lossy(&self.received).into_owned()),
        }
    }

    /// Whether the daemon has closed its side.
    pub fn is_closed(&mut self) -> bool {
        let _ = self.fate();
        self.closed
    }
}

/// Sends raw bytes as one request on a new connection and reads until the daemon
/// closes it (or `timeout`); returns what came back and how long that took.
pub fn raw_exchange(
    port: u16,
    request: &[u8],
    timeout: Duration,
) -> Result<(String, Duration), String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream.write_all(request).map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !got.is_empty() => break,
            Err(e) => {
                return Err(format!(
                    "{e} after {:?}, having read {:?}",
                    started.elapsed(),
                    String::from_utf8_lossy(&got)
                ));
            }
        }
    }
    Ok((
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    ))
}

/// `GET path` over HTTP/1.0; returns the status and how long the exchange took.
pub fn timed_get(port: u16, path: &str) -> Result<(u16, Duration), String> {
    let started = Instant::now();
    let (status, body) = super::http_request(port, "GET", path, "")?;
    if status != 200 {
        return Err(format!("GET {path}: {status} {body}"));
    }
    Ok((status, started.elapsed()))
}
