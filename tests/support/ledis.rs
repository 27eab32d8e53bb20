//! LedisDB servers for tests and benchmarks: `ledis-server -rpl` on a free loopback
//! port in its own temp dir, stopped by PID when dropped, like [`super::RedisServer`].
//!
//! The binary comes from `LEDIS_SERVER` (CI: `../shared/ledisdb/ledis-server`; a relative
//! path is taken from the repository root). When it is unset, [`ledis_or_skip`] prints
//! that the test is skipped. [`ScriptedSlave`] is a stand-in that answers like a
//! LedisDB slave with a chosen priority, which a real LedisDB cannot report.

use super::{TempDir, free_port, redis_cmd, wait_until};
use redis::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The LedisDB binary named by `LEDIS_SERVER`, or None when the variable is unset. A
/// path that does not exist is a broken set-up: it panics rather than skip.
pub fn ledis_binary() -> Option<PathBuf> {
    let value = std::env::var_os("LEDIS_SERVER").filter(|v| !v.is_empty())?;
    let mut path = PathBuf::from(value);
    if path.is_relative() {
        path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    }
    assert!(
        path.is_file(),
        "LEDIS_SERVER names {}, which is not a file",
        path.display()
    );
    Some(path)
}

/// The LedisDB binary, or None after printing that `test` is skipped.
pub fn ledis_or_skip(test: &str) -> Option<PathBuf> {
    let found = ledis_binary();
    if found.is_none() {
        eprintln!(
            "SKIPPED {test}: LEDIS_SERVER is not set (CI sets LEDIS_SERVER=../shared/ledisdb/ledis-server)"
        );
    }
    found
}

/// One `ledis-server -rpl` process.
pub struct LedisServer {
    pub port: u16,
    pub dir: TempDir,
    binary: PathBuf,
    child: Option<Child>,
}

impl LedisServer {
    /// A master: a fresh server, replication on.
    pub fn master(binary: &Path) -> LedisServer {
        let port = free_port();
        let mut server = LedisServer {
            port,
            dir: TempDir::new("ledis"),
            binary: binary.to_path_buf(),
            child: None,
        };
        server.spawn();
        server
    }

    /// A fresh server made a slave of `master` with `SLAVEOF`, linked.
    pub fn slave_of(binary: &Path, master: &LedisServer) -> LedisServer {
        let server = LedisServer::master(binary);
        let port = master.port.to_string();
        server
            .cmd(&["SLAVEOF", "127.0.0.1", &port])
            .unwrap_or_else(|e| panic!("SLAVEOF on {}: {e}", server.addr()));
        server.wait_linked_to(master.port);
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("ledis.log"))
            .expect("ledis log file");
        let child = Command::new(&self.binary)
            .arg(format!("-addr=127.0.0.1:{}", self.port))
            .arg(format!(
                "-data_dir={}",
                self.dir.path().join("data").display()
            ))
            .args(["-db_name=goleveldb", "-rpl"])
            .stdout(log.try_clone().expect("ledis log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let addr = self.addr();
        wait_until(
            Duration::from_secs(10),
            "ledis-server to answer PING",
            || {
                self.cmd(&["PING"])
                    .map(|_| ())
                    .map_err(|e| format!("{addr}: {e}"))
            },
        );
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9` by PID, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data directory (it comes back as a
    /// master, with the data it had).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sends a signal by name (`STOP`, `CONT`) to the process, if it runs.
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .args(["-s", name, &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -s {name} {pid}: {status}");
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ledis.log")).unwrap_or_default()
    }

    /// One command on a fresh connection.
    pub fn cmd(&self, args: &[&str]) -> Result<Value, String> {
        redis_cmd(self.port, args)
    }

    /// `ROLE`: ("master", offset, []) or ("slave", master port, state).
    pub fn role(&self) -> Result<(String, Vec<String>), String> {
        let Value::Array(items) = self.cmd(&["ROLE"])? else {
            return Err("ROLE: not an array".into());
        };
        let texts: Vec<String> = items.iter().map(text).collect();
        let kind = texts.first().cloned().unwrap_or_default();
        Ok((kind, texts))
    }

    /// The ports of the slaves this master's `ROLE` lists.
    pub fn listed_slaves(&self) -> Result<Vec<u16>, String> {
        let Value::Array(items) = self.cmd(&["ROLE"])? else {
            return Err("ROLE: not an array".into());
        };
        let Some(Value::Array(list)) = items.get(2) else {
            return Err(format!("ROLE: no slave list: {items:?}"));
        };
        let mut ports: Vec<u16> = list
            .iter()
            .filter_map(|entry| match entry {
                Value::Array(fields) => text(fields.get(1)?).parse().ok(),
                _ => None,
            })
            .collect();
        ports.sort_unstable();
        Ok(ports)
    }

    /// A field of `INFO replication`.
    pub fn info_field(&self, field: &str) -> Result<String, String> {
        let reply = self.cmd(&["INFO", "replication"])?;
        let body = text(&reply);
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| format!("no {field} in INFO: {body}"))
    }

    /// Waits until this server is a slave of `master_port` with its link up.
    pub fn wait_linked_to(&self, master_port: u16) {
        let want = format!("127.0.0.1:{master_port}");
        wait_until(
            Duration::from_secs(20),
            &format!("{} linked to {want}", self.addr()),
            || {
                let slaveof = self.info_field("slaveof")?;
                let link = self.info_field("master_link_status")?;
                if slaveof == want && link == "up" {
                    Ok(())
                } else {
                    Err(format!("slaveof:{slaveof} master_link_status:{link}"))
                }
            },
        );
    }

    /// Waits until this master's `ROLE` lists exactly `ports`.
    pub fn wait_for_slaves(&self, ports: &[u16]) {
        let mut want = ports.to_vec();
        want.sort_unstable();
        wait_until(
            Duration::from_secs(20),
            &format!("{} listing slaves {want:?}", self.addr()),
            || match self.listed_slaves()? {
                seen if seen == want => Ok(()),
                seen => Err(format!("{seen:?}")),
            },
        );
    }

    /// Waits until `GET key` answers `value`.
    pub fn wait_for_key(&self, key: &str, value: &str) {
        wait_until(
            Duration::from_secs(20),
            &format!("{key}={value} on {}", self.addr()),
            || match self.cmd(&["GET", key])? {
                Value::BulkString(v) if v == value.as_bytes() => Ok(()),
                seen => Err(format!("{seen:?}")),
            },
        );
    }
}

impl Drop for LedisServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- ledis-server {} log ---\n{}", self.addr(), self.log());
        }
    }
}

/// The text of a string-like reply ("" otherwise).
pub fn text(value: &Value) -> String {
    match value {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Okay => "OK".into(),
        _ => String::new(),
    }
}

/// A stand-in for a LedisDB slave whose `slave_priority` is chosen: a real LedisDB
/// always reports 100 (its `server/info.go`: "all the slaves have same priority now").
///
/// It registers with a real master the way a LedisDB slave does (`REPLCONF
/// listening-port`), so the master's `ROLE` lists it, and answers `ROLE`, `INFO`,
/// `SLAVEOF` and `CONFIG REWRITE` in the shapes captured from LedisDB (commit d35789e),
/// with its link down and the given offset. It holds no data.
pub struct ScriptedSlave {
    pub port: u16,
    stop: Arc<AtomicBool>,
    /// The connection that keeps it on the master's slave list.
    _registration: TcpStream,
}

/// What the stand-in replicates from: Some(master) or None once promoted.
type Following = Arc<Mutex<Option<String>>>;

impl ScriptedSlave {
    pub fn start(master: &LedisServer, priority: u32, offset: u64) -> ScriptedSlave {
        // A port below 32768: LedisDB reads ports as 16-bit signed integers.
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the stand-in");
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let following: Following = Arc::new(Mutex::new(Some(master.addr())));
        let (stop2, following2) = (stop.clone(), following.clone());
        std::thread::spawn(move || accept_loop(listener, stop2, following2, priority, offset));
        let mut registration = TcpStream::connect(master.addr()).expect("connect to master");
        let port_text = port.to_string();
        let command = encode(&["REPLCONF", "listening-port", &port_text]);
        registration.write_all(&command).expect("send REPLCONF");
        let mut reply = [0u8; 16];
        let n = registration.read(&mut reply).expect("REPLCONF reply");
        assert!(
            reply[..n].starts_with(b"+OK"),
            "REPLCONF: {:?}",
            String::from_utf8_lossy(&reply[..n])
        );
        ScriptedSlave {
            port,
            stop,
            _registration: registration,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for ScriptedSlave {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    following: Following,
    priority: u32,
    offset: u64,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let following = following.clone();
                std::thread::spawn(move || serve(stream, following, priority, offset));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Answers commands on one connection until it closes.
fn serve(mut stream: TcpStream, following: Following, priority: u32, offset: u64) {
    let _ = stream.set_nonblocking(false);
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
        while let Ok(Some((reply, used))) = redis_failover::redis::resp::parse(&buffer) {
            buffer.drain(..used);
            let args: Vec<String> = match reply {
                redis_failover::redis::Reply::Array(items) => items
                    .iter()
                    .map(|a| a.text().unwrap_or_default().to_ascii_lowercase())
                    .collect(),
                _ => Vec::new(),
            };
            let answer = answer(&args, &following, priority, offset);
            if !answer.is_empty() && stream.write_all(&answer).is_err() {
                return;
            }
        }
    }
}

/// The stand-in's reply to one command, in LedisDB's captured shapes.
fn answer(args: &[String], following: &Following, priority: u32, offset: u64) -> Vec<u8> {
    let mut master = following.lock().unwrap_or_else(|e| e.into_inner());
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["ping"] => b"+PONG\r\n".to_vec(),
        ["slaveof", "no", "one"] => {
            *master = None;
            b"+OK\r\n".to_vec()
        }
        ["slaveof", host, port] => {
            *master = Some(format!("{host}:{port}"));
            b"+OK\r\n".to_vec()
        }
        ["config", "rewrite"] => b"-Running without a config file\r\n".to_vec(),
        // A real slave re-pointed here: accepted, then its SYNC is never answered, so
        // it waits quietly instead of retrying in a tight loop.
        ["replconf", ..] => b"+OK\r\n".to_vec(),
        ["sync", ..] | ["fullsync", ..] => Vec::new(),
        ["role"] => match master.as_deref().and_then(|m| m.rsplit_once(':')) {
            None => format!("*3\r\n$6\r\nmaster\r\n:{offset}\r\n*0\r\n").into_bytes(),
            Some((host, port)) => format!(
                "*5\r\n$5\r\nslave\r\n${}\r\n{host}\r\n:{port}\r\n$7\r\nconnect\r\n:{offset}\r\n",
                host.len()
            )
            .into_bytes(),
        },
        ["info", ..] => {
            let body = info_text(args, master.as_deref(), priority, offset);
            format!("${}\r\n{body}\r\n", body.len()).into_bytes()
        }
        _ => b"-command not found\r\n".to_vec(),
    }
}

/// `INFO server` / `INFO replication` as LedisDB writes them (no run_id, slaveof:).
fn info_text(args: &[String], master: Option<&str>, priority: u32, offset: u64) -> String {
    let section = args.get(1).map(String::as_str).unwrap_or("");
    let server = "# Server\r\nos:linux\r\nreadonly:true\r\nledisdb_version:0.5\r\n";
    let replication = match master {
        Some(m) => format!(
            "# Replication\r\nrole:slave\r\npub_log_num:0\r\npub_log_ack_per_time:0\r\nslaveof:{m}\r\nlast_log_id:{offset}\r\nfirst_log_id:1\r\ncommit_log_id:{offset}\r\nmaster_last_log_id:{offset}\r\nmaster_link_status:down\r\nslave_priority:{priority}\r\nslave_repl_offset:{offset}\r\n"
        ),
        None => format!(
            "# Replication\r\nrole:master\r\npub_log_num:0\r\npub_log_ack_per_time:0\r\nslaveof:\r\nlast_log_id:{offset}\r\nfirst_log_id:1\r\ncommit_log_id:{offset}\r\nmaster_last_log_id:{offset}\r\n"
        ),
    };
    match section {
        "server" => server.to_string(),
        "replication" => replication,
        _ => format!("{server}\r\n{replication}"),
    }
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}
