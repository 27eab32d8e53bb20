//! A network lab for partition tests and benchmarks.
//!
//! The test runs itself again inside a network namespace of its own (`unshare --net`,
//! as root), so nothing it does touches the machine's network: there, only a loopback
//! device exists, every process gets a loopback address of its own (`127.0.1.x` for
//! Redis servers, `127.0.2.x` for the daemons' HTTP APIs, `127.0.3.x` for their Raft
//! ports, `127.0.4.x` for the test's clients), and links are cut with iptables rules:
//!
//! - a Redis server is told its own address for its outgoing connections too
//!   (`bind-source-addr`), so its traffic can be told apart;
//! - each daemon runs as a user of its own, so its outgoing packets are matched by
//!   owner, whatever address they leave from.
//!
//! Without root, `unshare` or `iptables`, a lab test says it was skipped and passes.

use super::{TempDir, wait_until};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const INSIDE: &str = "REDIS_FAILOVER_LAB";

/// Enters the lab for `test`: true inside it (run the scenario); false outside, after
/// the scenario ran inside a fresh namespace and passed (or was skipped).
pub fn enter(test: &str) -> bool {
    if std::env::var(INSIDE).as_deref() == Ok(test) {
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        assert!(
            up.is_ok_and(|s| s.success()),
            "cannot bring lo up in the lab"
        );
        return true;
    }
    let root = unsafe { libc::geteuid() } == 0;
    let have = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !root || !have("unshare") || !have("iptables") || !have("ip") {
        println!("SKIPPED {test}: a lab test needs root, unshare, ip and iptables");
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let output = Command::new("unshare")
        .args(["--net", "--"])
        .arg(exe)
        .args([
            "--exact",
            test,
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(INSIDE, test)
        .output()
        .expect("run unshare");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    println!("{text}");
    assert!(
        output.status.success() && text.contains("1 passed"),
        "{test} failed inside the lab: {}",
        output.status
    );
    false
}

/// Runs `iptables` in the lab with these arguments.
pub fn iptables(args: &[&str]) {
    let status = Command::new("iptables")
        .args(args)
        .status()
        .expect("run iptables");
    assert!(status.success(), "iptables {args:?}: {status}");
}

/// Cuts every packet a daemon (by its user) sends to `ip`.
pub fn cut_daemon_from(daemon: &LabDaemon, ip: &str) {
    let uid = daemon.uid.to_string();
    iptables(&[
        "-A",
        "OUTPUT",
        "-m",
        "owner",
        "--uid-owner",
        &uid,
        "-d",
        ip,
        "-j",
        "DROP",
    ]);
}

/// Cuts `ip` off from every address but those in `except`, both ways.
pub fn isolate(ip: &str, except: &[&str]) {
    for other in except {
        iptables(&["-A", "INPUT", "-s", other, "-d", ip, "-j", "ACCEPT"]);
        iptables(&["-A", "INPUT", "-s", ip, "-d", other, "-j", "ACCEPT"]);
    }
    iptables(&["-A", "INPUT", "-d", ip, "-j", "DROP"]);
    iptables(&["-A", "INPUT", "-s", ip, "-j", "DROP"]);
}

/// Removes every cut.
pub fn heal() {
    iptables(&["-F", "INPUT"]);
    iptables(&["-F", "OUTPUT"]);
}

/// A Redis server on an address of its own.
pub struct LabRedis {
    pub ip: String,
    pub port: u16,
    _dir: TempDir,
    child: Option<Child>,
}

impl LabRedis {
    /// A master at `ip`, or a replica of `master` when given; `extra` goes last.
    pub fn start(ip: &str, master: Option<&LabRedis>, extra: &[&str]) -> LabRedis {
        let dir = TempDir::new("lab-redis");
        let port = 6379;
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                ip,
                "--bind-source-addr",
                ip,
            ])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--repl-diskless-sync-delay", "0"]);
        if let Some(master) = master {
            command.args(["--replicaof", &master.ip, &master.port.to_string()]);
        }
        let child = command
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = LabRedis {
            ip: ip.to_string(),
            port,
            _dir: dir,
            child: Some(child),
        };
        wait_until(Duration::from_secs(10), "a lab redis-server", || {
            server.cmd(&["PING"]).map(|_| ())
        });
        server
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn cmd(&self, args: &[&str]) -> Result<redis::Value, String> {
        super::redis_cmd_url(&format!("redis://{}:{}/", self.ip, self.port), args)
    }

    /// `master` or `slave`, from ROLE.
    pub fn role(&self) -> Result<String, String> {
        match self.cmd(&["ROLE"])? {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::BulkString(b)) => Ok(String::from_utf8_lossy(b).into()),
                other => Err(format!("{other:?}")),
            },
            other => Err(format!("{other:?}")),
        }
    }

    pub fn kill(&mut self) {
        super::kill_child(&mut self.child);
    }
}

impl Drop for LabRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One daemon of a lab cluster, run as a user of its own.
pub struct LabDaemon {
    pub index: u8,
    pub uid: u32,
    pub http: SocketAddr,
    pub raft_addr: String,
    pub dir: TempDir,
    child: Option<Child>,
}

impl LabDaemon {
    /// Daemon `index` (1, 2, ...) of a Raft cluster of `size`, with `extra` flags.
    pub fn start(index: u8, size: u8, extra: &[&str]) -> LabDaemon {
        let dir = TempDir::new("lab-daemon");
        let uid = 61000 + u32::from(index);
        // SAFETY: chown on a path we made, to a numeric user.
        let path = std::ffi::CString::new(dir.path().to_string_lossy().as_bytes()).unwrap();
        unsafe { libc::chown(path.as_ptr(), uid, uid) };
        let cluster: Vec<String> = (1..=size).map(|i| format!("127.0.3.{i}:12000")).collect();
        let http: SocketAddr = format!("127.0.2.{index}:11000").parse().unwrap();
        let raft_addr = format!("127.0.3.{index}:12000");
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_redis-failover"))
            .arg(format!("-addr={http}"))
            .arg(format!("-sentinel_addr=127.0.2.{index}:26379"))
            .args(["-broker=raft", &format!("-raft_addr={raft_addr}")])
            .arg(format!("-raft_cluster={}", cluster.join(",")))
            .arg(format!(
                "-raft_data_dir={}",
                dir.path().join("data").display()
            ))
            .args(extra)
            .env("RUST_LOG", "debug")
            .uid(uid)
            .gid(uid)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start redis-failover");
        let daemon = LabDaemon {
            index,
            uid,
            http,
            raft_addr,
            dir,
            child: Some(child),
        };
        wait_until(Duration::from_secs(10), "a lab daemon's API", || {
            daemon.http("GET", "/master").map(|_| ())
        });
        daemon
    }

    pub fn http(&self, method: &str, path: &str) -> Result<(u16, String), String> {
        let mut stream = TcpStream::connect_timeout(&self.http, Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        // The API answers to its address, not to an invented name (DNS rebinding).
        let host = self.http;
        let request =
            format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status line in {text:?}"))?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
        Ok((status, body.unwrap_or_default()))
    }

    /// The group as `GET /api/v1/groups` shows it.
    pub fn group(&self, name: &str) -> Result<Value, String> {
        let (_, body) = self.http("GET", "/api/v1/groups")?;
        let groups: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        groups
            .as_array()
            .and_then(|all| all.iter().find(|g| g["name"] == name).cloned())
            .ok_or_else(|| format!("no group {name} in {body}"))
    }

    /// Whether this daemon acts (the cluster's leader within its lease).
    pub fn acting(&self) -> bool {
        self.http("GET", "/api/v1/cluster")
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .is_some_and(|status| status["acting"] == true)
    }

    /// A command on this daemon's Sentinel-compatible port (127.0.2.<index>:26379).
    pub fn sentinel(&self, args: &[&str]) -> Result<redis::Value, String> {
        super::redis_cmd_url(&format!("redis://127.0.2.{}:26379/", self.index), args)
    }

    /// The `flags` field of `SENTINEL MASTER <group>` on this daemon's Sentinel port.
    pub fn sentinel_flags(&self, group: &str) -> Result<String, String> {
        let reply = self.sentinel(&["SENTINEL", "MASTER", group])?;
        let redis::Value::Array(items) = reply else {
            return Err(format!("SENTINEL MASTER answered {reply:?}"));
        };
        let text: Vec<String> = items
            .iter()
            .map(|v| match v {
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        let at = text
            .iter()
            .position(|f| f == "flags")
            .ok_or("no flags field")?;
        text.get(at + 1)
            .cloned()
            .ok_or_else(|| "flags without a value".to_string())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        super::kill_child(&mut self.child);
    }
}

impl Drop for LabDaemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// For a benchmark binary: runs it again inside a fresh network namespace; returns
/// true inside (go on), false outside after it ran (or when no lab can be made).
pub fn enter_bench() -> bool {
    if std::env::var(INSIDE).as_deref() == Ok("bench") {
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        return up.is_ok_and(|s| s.success());
    }
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: the partition benchmark needs root (unshare, iptables)");
        return false;
    }
    let exe = std::env::current_exe().expect("the benchmark's path");
    let status = Command::new("unshare")
        .args(["--net", "--"])
        .arg(exe)
        .env(INSIDE, "bench")
        .status();
    if !status.is_ok_and(|s| s.success()) {
        println!("the benchmark failed inside the lab");
    }
    false
}

/// One `redis-server --sentinel` at its own address, run as a user of its own (so it
/// can be cut by owner like a daemon), monitoring `master` as group `g`.
pub struct LabSentinel {
    pub index: u8,
    pub uid: u32,
    pub ip: String,
    _dir: TempDir,
    child: Option<Child>,
}

impl LabSentinel {
    pub fn start(index: u8, master: &LabRedis, quorum: u32, down_after_ms: u64) -> LabSentinel {
        let dir = TempDir::new("lab-sentinel");
        let uid = 61100 + u32::from(index);
        let ip = format!("127.0.5.{index}");
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port 26379\nbind {ip}\nsentinel announce-ip {ip}\nprotected-mode no\ndir {}\n\
                 sentinel monitor g {} {} {quorum}\n\
                 sentinel down-after-milliseconds g {down_after_ms}\n\
                 sentinel failover-timeout g 10000\nsentinel parallel-syncs g 1\n",
                dir.path().display(),
                master.ip,
                master.port
            ),
        )
        .expect("sentinel.conf");
        // SAFETY: chown on paths we made, to a numeric user.
        for path in [dir.path().to_path_buf(), conf.clone()] {
            let c = std::ffi::CString::new(path.to_string_lossy().as_bytes()).unwrap();
            unsafe { libc::chown(c.as_ptr(), uid, uid) };
        }
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .uid(uid)
            .gid(uid)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server --sentinel");
        let sentinel = LabSentinel {
            index,
            uid,
            ip,
            _dir: dir,
            child: Some(child),
        };
        wait_until(Duration::from_secs(10), "a lab sentinel", || {
            super::redis_cmd_url(&format!("redis://{}:26379/", sentinel.ip), &["PING"]).map(|_| ())
        });
        sentinel
    }

    /// `SENTINEL <args...>` on this Sentinel.
    pub fn cmd(&self, args: &[&str]) -> Result<redis::Value, String> {
        super::redis_cmd_url(&format!("redis://{}:26379/", self.ip), args)
    }
}

impl Drop for LabSentinel {
    fn drop(&mut self) {
        super::kill_child(&mut self.child);
    }
}

/// Cuts every packet a process run as `uid` sends to `ip`.
pub fn cut_user_from(uid: u32, ip: &str) {
    let uid = uid.to_string();
    iptables(&[
        "-A",
        "OUTPUT",
        "-m",
        "owner",
        "--uid-owner",
        &uid,
        "-d",
        ip,
        "-j",
        "DROP",
    ]);
}
