//! Real servers for tests and benchmarks: `redis-server` (also as a Sentinel) and the
//! `redis-failover` binary, each on a free loopback port in its own temp dir, stopped by
//! PID when dropped. Plus a deadline-based `wait_until` and a tiny HTTP client. The
//! submodules hold the cluster tests' helpers (`groups`), a fake replica that cannot be
//! promoted (`fake_replica`), LedisDB servers (`ledis`), and the kill of a leader daemon
//! with its master (`liveness`), raw Raft-port records for the security tests
//! (`raft_wire`), a raw RESP2/RESP3 connection (`resp3`), node-redis's Sentinel client
//! run from `tests/node` (`node`), and certificates, TLS-only servers and TLS clients
//! (`tls`).
#![allow(dead_code)]

pub mod fake_replica;
pub mod groups;
pub mod lab;
pub mod ledis;
pub mod liveness;
pub mod node;
pub mod ports;
pub mod procstat;
pub mod raft_wire;
pub mod resp3;
pub mod tls;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

/// An environment variable parsed, or `default` when unset or unparsable (the benches'
/// knobs).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A port nobody listens on right now, below the kernel's ephemeral range (32768 and
/// up), so outgoing connections never take it. Each test process starts at its own
/// offset and hands out every port once.
///
/// The port is probed with a connect, not a bind: a socket bound here would be copied
/// into any child process that another test thread forks at that moment, and keep the
/// port busy until that child calls exec.
pub fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let base = std::process::id() * 7919 % SPAN;
    for _ in 0..SPAN {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (base + n) % SPAN) as u16;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return port,
            _ => continue,
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN)
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join("redis-failover-tests")
            .join(format!("{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// SIGKILLs a child process (if still there) and reaps it.
fn kill_child(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Waits until `probe` returns `Ok`, or panics after `timeout` with what it saw last.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Panics with a helpful message when redis-server is not installed.
pub fn require_redis() {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "redis-server is not installed: run `bash test-cluster/install-deps.sh` (apt-get install redis-server)"
    );
}

/// One `redis-server` process.
pub struct RedisServer {
    pub port: u16,
    pub dir: TempDir,
    child: Option<Child>,
    extra: Vec<String>,
    /// `user:password` or `:password` for the test's own connections, when it has auth.
    auth: Option<String>,
}

impl RedisServer {
    /// A master (no replicaof).
    pub fn master() -> RedisServer {
        RedisServer::start(&[])
    }

    /// A replica of `master_port` with the given replica-priority.
    pub fn replica_of(master_port: u16, priority: u32) -> RedisServer {
        RedisServer::start(&[
            "--replicaof".into(),
            "127.0.0.1".into(),
            master_port.to_string(),
            "--replica-priority".into(),
            priority.to_string(),
        ])
    }

    pub fn start(extra: &[String]) -> RedisServer {
        RedisServer::start_with_auth(extra, None, None)
    }

    /// A server that needs `AUTH`: the test's own commands log in as `user` (or as the
    /// default user when None) with `password`. `extra` sets up the auth itself
    /// (`--requirepass`, `--user`, ...).
    pub fn start_with_auth(
        extra: &[String],
        user: Option<&str>,
        password: Option<&str>,
    ) -> RedisServer {
        require_redis();
        let dir = TempDir::new("redis");
        let port = free_port();
        let mut server = RedisServer {
            port,
            dir,
            child: None,
            extra: extra.to_vec(),
            auth: password.map(|p| format!("{}:{p}", user.unwrap_or(""))),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log file");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(self.dir.path())
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--repl-diskless-sync-delay",
                "0",
            ])
            .args([
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
                "--enable-debug-command",
                "local",
            ])
            .args(&self.extra)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let port = self.port;
        wait_until(
            Duration::from_secs(10),
            "redis-server to answer PING",
            || {
                self.cmd(&["PING"])
                    .map(|_| ())
                    .map_err(|e| format!("port {port}: {e}"))
            },
        );
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts the server again on the same port and dir, with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs a command, returning the raw reply or the error text.
    pub fn cmd(&self, args: &[&str]) -> Result<redis::Value, String> {
        redis_cmd_url(&self.url(), args)
    }

    /// `redis://[user:password@]127.0.0.1:port/` for the redis crate.
    pub fn url(&self) -> String {
        match &self.auth {
            Some(auth) => format!("redis://{auth}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// The `role` of this server from `ROLE` ("master", "slave").
    pub fn role(&self) -> Result<String, String> {
        match self.cmd(&["ROLE"])? {
            redis::Value::Array(items) => match items.first() {
                Some(redis::Value::BulkString(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
                other => Err(format!("odd ROLE reply {other:?}")),
            },
            other => Err(format!("odd ROLE reply {other:?}")),
        }
    }

    /// A field of `INFO replication`.
    pub fn info_field(&self, field: &str) -> Result<String, String> {
        let text = match self.cmd(&["INFO", "replication"])? {
            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            redis::Value::VerbatimString { text, .. } => text,
            other => return Err(format!("odd INFO reply {other:?}")),
        };
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| format!("no {field} in INFO: {text}"))
    }

    /// Waits until this master's `ROLE` lists `n` replicas.
    pub fn wait_for_replicas(&self, n: usize) {
        wait_until(
            Duration::from_secs(20),
            &format!("{n} replicas on {}", self.addr()),
            || {
                let count = self.info_field("connected_slaves")?;
                if count == n.to_string() {
                    Ok(())
                } else {
                    Err(format!("connected_slaves:{count}"))
                }
            },
        );
        // Until a replica's first REPLCONF ACK the master may hold writes back: one write
        // acknowledged by all replicas (WAIT on the same connection) proves the stream flows.
        let client = redis::Client::open(self.url()).expect("client");
        let mut conn = client.get_connection().expect("connection");
        let _: () = redis::cmd("SET")
            .arg("__replication_check")
            .arg(1)
            .query(&mut conn)
            .expect("SET");
        let acked: usize = redis::cmd("WAIT")
            .arg(n)
            .arg(10_000)
            .query(&mut conn)
            .expect("WAIT");
        assert_eq!(
            acked, n,
            "only {acked} of {n} replicas acknowledged a write within 10 s"
        );
        // ROLE lists a replica only once it is online.
        wait_until(
            Duration::from_secs(20),
            "replicas online in ROLE",
            || match self.cmd(&["ROLE"])? {
                redis::Value::Array(items) => match items.get(2) {
                    Some(redis::Value::Array(list)) if list.len() == n => Ok(()),
                    other => Err(format!("{other:?}")),
                },
                other => Err(format!("{other:?}")),
            },
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One command on a fresh connection with short timeouts.
pub fn redis_cmd(port: u16, args: &[&str]) -> Result<redis::Value, String> {
    redis_cmd_url(&format!("redis://127.0.0.1:{port}/"), args)
}

/// One command on a fresh connection to `url` (which may carry credentials).
pub fn redis_cmd_url(url: &str, args: &[&str]) -> Result<redis::Value, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query::<redis::Value>(&mut conn)
        .map_err(|e| e.to_string())
}

/// The `redis-failover` binary, run as a user would.
pub struct Daemon {
    pub port: u16,
    pub dir: TempDir,
    child: Option<Child>,
    /// Arguments after `-addr=` and extra environment, kept for [`Daemon::restart`].
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Starts the daemon with `-addr=` on a free port plus `args`; waits for its API.
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_with_env(args, &[])
    }

    /// Like [`Daemon::start`], with environment changes: `(name, Some(value))` sets a
    /// variable, `(name, None)` removes it. `RUST_LOG=debug` is set unless changed here.
    pub fn start_with_env(args: &[&str], env: &[(&str, Option<&str>)]) -> Daemon {
        let port = free_port();
        let dir = TempDir::new("daemon");
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_redis-failover"));
        command
            .arg(format!("-addr=127.0.0.1:{port}"))
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log);
        for (name, value) in env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
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

    /// Starts the daemon with `-addr=127.0.0.1:port` plus `args` and the extra `env`,
    /// logging (appended) to `dir/daemon.log`; waits for its API. [`Daemon::restart`]
    /// runs it again the same way, on the same port.
    pub fn start_on(port: u16, dir: TempDir, args: &[String], env: &[(&str, &str)]) -> Daemon {
        let mut daemon = Daemon {
            port,
            dir,
            child: None,
            args: args.to_vec(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        daemon.spawn_again();
        daemon
    }

    /// `kill -9`; the log and the directory stay.
    pub fn kill9(&mut self) {
        kill_child(&mut self.child);
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...) to the process, if it runs.
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .args(["-s", name, &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -s {name} {pid}: {status}");
        }
    }

    /// Whether this test still holds a running process (not killed, not seen exiting).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// Kills the process if it runs, then starts it again with the same port, arguments
    /// and environment (so the same data directory); waits for its API.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn_again();
    }

    /// The arguments after `-addr=` that [`Daemon::restart`] uses.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Like [`Daemon::restart`], with other arguments (same port and environment).
    pub fn restart_with(&mut self, args: &[String]) {
        self.args = args.to_vec();
        self.restart();
    }

    /// The log of the current run only: what follows the last start marker.
    pub fn log_of_this_run(&self) -> String {
        let log = self.log();
        match log.rfind(START_MARKER) {
            Some(at) => log[at..].to_string(),
            None => log,
        }
    }

    fn spawn_again(&mut self) {
        let path = self.dir.path().join("daemon.log");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("log file");
        writeln!(log, "{START_MARKER} {}", self.args.join(" ")).expect("write log");
        let child = Command::new(env!("CARGO_BIN_EXE_redis-failover"))
            .arg(format!("-addr=127.0.0.1:{}", self.port))
            .args(&self.args)
            .env("RUST_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start redis-failover");
        self.child = Some(child);
        let port = self.port;
        wait_until(Duration::from_secs(10), "the daemon's HTTP API", || {
            if !self.is_running() {
                return Ok(Err(format!(
                    "the daemon on port {port} exited:\n{}",
                    self.log_of_this_run()
                )));
            }
            self.http("GET", "/master", "").map(|_| Ok(()))
        })
        .unwrap_or_else(|e: String| panic!("{e}"));
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Sends one HTTP request; returns (status, body).
    pub fn http(&self, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
        http_request(self.port, method, path, body)
    }

    /// Sends one HTTP request with extra header lines (`Name: value`).
    pub fn http_with(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[&str],
    ) -> Result<(u16, String), String> {
        http_request_with(self.port, method, path, body, headers)
    }

    /// `GET /api/v1/groups` parsed.
    pub fn groups(&self) -> serde_json::Value {
        let (status, body) = self
            .http("GET", "/api/v1/groups", "")
            .expect("GET /api/v1/groups");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("groups JSON")
    }

    /// The group named `name` from `GET /api/v1/groups`.
    pub fn group(&self, name: &str) -> serde_json::Value {
        self.groups()
            .as_array()
            .and_then(|groups| groups.iter().find(|g| g["name"] == name).cloned())
            .unwrap_or(serde_json::Value::Null)
    }

    /// Waits until group `name` is ok with `replicas` replicas listed.
    pub fn wait_group_ok(&self, name: &str, replicas: usize) {
        wait_until(
            Duration::from_secs(20),
            &format!("group {name} ok with {replicas} replica(s)"),
            || {
                let g = self.group(name);
                let listed = g["replicas"].as_array().map_or(0, Vec::len);
                if g["state"] == "ok" && listed == replicas {
                    Ok(())
                } else {
                    Err(g.to_string())
                }
            },
        );
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        unsafe_kill(child.id(), 15);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        kill_child(&mut self.child);
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log());
        }
    }
}

/// The line [`Daemon::start_on`] and [`Daemon::restart`] write to the log before each run.
const START_MARKER: &str = "===== test harness: starting redis-failover";

fn unsafe_kill(pid: u32, signal: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// A minimal HTTP/1.0 client (so replies are never chunked): one request per connection.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    http_request_with(port, method, path, body, &[])
}

/// [`http_request`] with extra header lines (`Name: value`).
pub fn http_request_with(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    headers: &[&str],
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let content_type = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/x-www-form-urlencoded\r\n".to_string()
    };
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{extra}{content_type}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
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
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// `redis-server --sentinel` watching one master.
pub struct Sentinel {
    pub port: u16,
    pub dir: TempDir,
    child: Option<Child>,
}

impl Sentinel {
    pub fn start(master_port: u16, name: &str, down_after_ms: u64, quorum: u32) -> Sentinel {
        require_redis();
        let dir = TempDir::new("sentinel");
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
                 sentinel monitor {name} 127.0.0.1 {master_port} {quorum}\n\
                 sentinel down-after-milliseconds {name} {down_after_ms}\n\
                 sentinel failover-timeout {name} 10000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir.path().display()
            ),
        )
        .expect("write sentinel.conf");
        let log = std::fs::File::create(dir.path().join("sentinel.log")).expect("log file");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server --sentinel");
        let sentinel = Sentinel {
            port,
            dir,
            child: Some(child),
        };
        wait_until(Duration::from_secs(10), "sentinel to answer PING", || {
            redis_cmd(port, &["PING"]).map(|_| ())
        });
        sentinel
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// Daemons forming one Raft cluster (`-broker=raft`), each with its own HTTP port, raft
/// port and data directory (`data/` in the daemon's dir), kept across restarts.
pub struct RaftCluster {
    pub nodes: Vec<Daemon>,
    /// `raft_ports[i]` is the raft port of `nodes[i]`.
    pub raft_ports: Vec<u16>,
}

impl RaftCluster {
    /// Starts `n` daemons that form a new cluster, each with `extra` arguments and `env`.
    pub fn start(n: usize, extra: &[&str], env: &[(&str, &str)]) -> RaftCluster {
        let raft_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let members = raft_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = raft_ports
            .iter()
            .map(|&raft_port| RaftCluster::start_node(raft_port, &members, extra, env))
            .collect();
        RaftCluster { nodes, raft_ports }
    }

    /// Starts one raft daemon listening on `raft_port`, with `-raft_cluster=members`.
    pub fn start_node(
        raft_port: u16,
        members: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = TempDir::new("raft-node");
        let mut args = vec![
            "-broker=raft".to_string(),
            format!("-raft_addr=127.0.0.1:{raft_port}"),
            format!("-raft_data_dir={}", dir.path().join("data").display()),
            format!("-raft_cluster={members}"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        Daemon::start_on(free_port(), dir, &args, env)
    }

    /// Starts a daemon that is not in the cluster's list: it waits to be added through
    /// `POST /api/v1/cluster/peers`. Returns its index in `nodes`.
    pub fn start_joining(&mut self, extra: &[&str]) -> usize {
        let raft_port = free_port();
        let node = RaftCluster::start_node(raft_port, &self.members(), extra, &[]);
        self.nodes.push(node);
        self.raft_ports.push(raft_port);
        self.nodes.len() - 1
    }

    /// The raft addresses of every node started, comma-separated.
    pub fn members(&self) -> String {
        self.raft_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn raft_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.raft_ports[i])
    }

    /// The data directory of node `i`.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.path().join("data")
    }

    /// The nodes whose process runs.
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect()
    }

    /// `GET /api/v1/cluster` of node `i`, parsed.
    pub fn status(&self, i: usize) -> Result<serde_json::Value, String> {
        cluster_status(&self.nodes[i])
    }

    /// Waits until the running nodes among `among` agree on one leader: exactly one
    /// of them says role leader and acting, and every one names its raft address as the
    /// leader. Returns that node's index.
    pub fn wait_for_leader(&mut self, among: &[usize], timeout: Duration) -> usize {
        let among: Vec<usize> = among
            .iter()
            .copied()
            .filter(|&i| self.nodes[i].is_running())
            .collect();
        let addrs: Vec<String> = (0..self.nodes.len()).map(|i| self.raft_addr(i)).collect();
        wait_for_agreed_leader(&self.nodes, &among, timeout, "raft_addr", &addrs, |s| {
            format!(
                "({}): role {} acting {} term {} leader {}",
                s["raft_addr"], s["role"], s["acting"], s["term"], s["leader"]["raft_addr"]
            )
        })
    }
}

/// Runs the daemon with `-addr=<free port>` plus `args`, expecting it to refuse to start;
/// returns its exit code and what it wrote to stderr. Panics if it is still running
/// after 10 s.
pub fn run_until_exit(args: &[String]) -> (Option<i32>, String) {
    let out = TempDir::new("refused");
    let log = out.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_redis-failover"))
        .arg(format!("-addr=127.0.0.1:{}", free_port()))
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("stderr file"))
        .spawn()
        .expect("start redis-failover");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return (status.code(), read());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the daemon kept running when it should refuse to start:\n{}",
                read()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The jars of Debian's `zookeeper` package: `zookeeper.jar` names its dependencies in
/// its manifest; slf4j-simple (from libslf4j-java) makes the server log to stderr.
fn zookeeper_classpath() -> String {
    let jar = "/usr/share/java/zookeeper.jar";
    assert!(
        Path::new(jar).exists(),
        "ZooKeeper is not installed ({jar} is missing): run `bash test-cluster/install-deps.sh` (apt-get install zookeeper)"
    );
    let mut classpath = jar.to_string();
    let logger = "/usr/share/java/slf4j-simple.jar";
    if Path::new(logger).exists() {
        classpath.push(':');
        classpath.push_str(logger);
    }
    classpath
}

/// One standalone ZooKeeper server (`ZooKeeperServerMain`, Debian's `zookeeper`
/// package) on a free loopback port, with its data in its own temp dir. Ticks are 250 ms,
/// so it grants session timeouts from 500 ms to 5 s. Killed by PID when dropped.
pub struct ZooKeeper {
    pub port: u16,
    pub dir: TempDir,
    child: Option<Child>,
}

impl ZooKeeper {
    pub fn start() -> ZooKeeper {
        let dir = TempDir::new("zookeeper");
        let port = free_port();
        let mut server = ZooKeeper {
            port,
            dir,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let conf = self.dir.path().join("zoo.cfg");
        std::fs::write(
            &conf,
            format!(
                "tickTime=250\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
                 admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr\n",
                self.dir.path().join("data").display(),
                self.port
            ),
        )
        .expect("write zoo.cfg");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("zookeeper.log"))
            .expect("log file");
        let child = Command::new("java")
            .args(["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg("-cp")
            .arg(zookeeper_classpath())
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start java (ZooKeeper); is a JRE installed?");
        self.child = Some(child);
        let port = self.port;
        wait_until(Duration::from_secs(30), "ZooKeeper to answer ruok", || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Ok(Err(format!(
                    "ZooKeeper exited with {status}:\n{}",
                    self.log()
                )));
            }
            four_letter_word(port, "ruok").and_then(|reply| {
                if reply == "imok" {
                    Ok(Ok(()))
                } else {
                    Err(format!("ruok answered {reply:?}"))
                }
            })
        })
        .unwrap_or_else(|e: String| panic!("{e}"));
    }

    /// `host:port` for `-zk_addr`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9`; the data directory stays.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Sends a signal by name (`STOP` freezes the server with its connections open).
    pub fn signal(&self, name: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .args(["-s", name, &pid.to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -s {name} {pid}: {status}");
        }
    }

    /// Starts the server again on the same port with the same data (sessions, znodes).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("zookeeper.log")).unwrap_or_default()
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends a ZooKeeper four-letter word and returns the reply.
pub fn four_letter_word(port: u16, word: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(word.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| e.to_string())?;
    Ok(reply)
}

/// Daemons forming one cluster through ZooKeeper (`-broker=zk`), each with its own HTTP
/// port and temp dir (kept across restarts).
pub struct ZkCluster {
    pub nodes: Vec<Daemon>,
    pub zk_addr: String,
    pub zk_path: String,
}

impl ZkCluster {
    /// Starts `n` daemons on `zk_addr` under `zk_path`, each with `extra` arguments.
    pub fn start(n: usize, zk_addr: &str, zk_path: &str, extra: &[&str]) -> ZkCluster {
        let mut cluster = ZkCluster {
            nodes: Vec::new(),
            zk_addr: zk_addr.to_string(),
            zk_path: zk_path.to_string(),
        };
        for _ in 0..n {
            cluster.add_node(extra, &[]);
        }
        cluster
    }

    /// Starts one more daemon of the cluster; returns its index.
    pub fn add_node(&mut self, extra: &[&str], env: &[(&str, &str)]) -> usize {
        let mut args = vec![
            "-broker=zk".to_string(),
            format!("-zk_addr={}", self.zk_addr),
            format!("-zk_path={}", self.zk_path),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let node = Daemon::start_on(free_port(), TempDir::new("zk-node"), &args, env);
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// `GET /api/v1/cluster` of node `i`, parsed.
    pub fn status(&self, i: usize) -> Result<serde_json::Value, String> {
        cluster_status(&self.nodes[i])
    }

    pub fn http_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].port)
    }

    /// Waits until, among the running nodes of `among`, exactly one is role leader and
    /// acting, and every one names its HTTP address as the leader's. Returns its index.
    pub fn wait_for_leader(&mut self, among: &[usize], timeout: Duration) -> usize {
        let among: Vec<usize> = among
            .iter()
            .copied()
            .filter(|&i| self.nodes[i].is_running())
            .collect();
        let addrs: Vec<String> = (0..self.nodes.len()).map(|i| self.http_addr(i)).collect();
        wait_for_agreed_leader(&self.nodes, &among, timeout, "http_addr", &addrs, |s| {
            format!(
                "({}): role {} acting {} session {} leader {} error {}",
                s["id"],
                s["role"],
                s["acting"],
                s["zk_session"],
                s["leader"]["http_addr"],
                s["error"]
            )
        })
    }
}

/// `GET /api/v1/cluster` of a daemon, parsed.
pub fn cluster_status(daemon: &Daemon) -> Result<serde_json::Value, String> {
    let (status, body) = daemon.http("GET", "/api/v1/cluster", "")?;
    if status != 200 {
        return Err(format!("GET /api/v1/cluster: {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

/// Waits until exactly one of the nodes `among` is role leader and acting, and every one
/// names it as the leader by `key` (`raft_addr` or `http_addr`, whose values are
/// `addrs[i]`). Returns its index. `describe` says what a node's status shows.
fn wait_for_agreed_leader(
    nodes: &[Daemon],
    among: &[usize],
    timeout: Duration,
    key: &str,
    addrs: &[String],
    describe: impl Fn(&serde_json::Value) -> String,
) -> usize {
    wait_until(timeout, "one leader all running nodes agree on", || {
        let mut seen = Vec::new();
        let mut statuses = Vec::new();
        for &i in among {
            let status = cluster_status(&nodes[i]).map_err(|e| format!("node {i}: {e}"))?;
            seen.push(format!("node {i} {}", describe(&status)));
            statuses.push((i, status));
        }
        let seen = seen.join("; ");
        let acting: Vec<usize> = statuses
            .iter()
            .filter(|(_, s)| s["acting"] == true && s["role"] == "leader")
            .map(|(i, _)| *i)
            .collect();
        let [leader] = acting[..] else {
            return Err(format!("{} acting leaders: {seen}", acting.len()));
        };
        let addr = &addrs[leader];
        if statuses
            .iter()
            .all(|(_, s)| s["leader"][key] == addr.as_str())
        {
            Ok(leader)
        } else {
            Err(format!("not all agree on {addr}: {seen}"))
        }
    })
}

/// VmRSS and VmHWM of a process, in kB.
pub fn memory_kb(pid: u32) -> Result<(u64, u64), String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let field = |name: &str| -> Result<u64, String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
