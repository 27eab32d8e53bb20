//! The Sentinel port: enough of Redis Sentinel's protocol that unmodified client
//! libraries discover each group's master through the daemon, and learn of failovers.
//!
//! Every major client (redis-py, Jedis, Lettuce, go-redis, redis-rs) already speaks
//! Sentinel, so after a failover applications find the new master with no change of
//! configuration: point their Sentinel list at the daemons' `sentinel_addr`. The port
//! answers `SENTINEL get-master-addr-by-name / masters / master / replicas / slaves /
//! sentinels / ckquorum / myid`, `PING`, `INFO`, `ROLE`, `HELLO`, `AUTH`, `CLIENT ...`,
//! `COMMAND`, and `SUBSCRIBE`/`PSUBSCRIBE` to events such as `+switch-master`.
//!
//! One thread per connection, like the HTTP API: Sentinel clients keep a few long-lived
//! connections. A malformed request closes that connection only; an unknown command gets
//! an error reply, as Redis does.

mod commands;
mod protocol;

use crate::address::Addr;
use crate::app::Core;
use crate::error::{Error, Result};
use crate::events::Event;
use commands::Context;
use crossbeam_channel::Receiver;
use protocol::{Out, Request, glob_match, read_request};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Connections served at once; more are refused with an error reply.
pub const MAX_CONNECTIONS: usize = 1024;
/// How often a subscribed connection looks for events while its client is quiet.
const EVENT_POLL: Duration = Duration::from_millis(50);

type Connections = Arc<Mutex<HashMap<u64, TcpStream>>>;

/// The running Sentinel listener.
pub struct SentinelPort {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Connections,
    acceptor: Option<JoinHandle<()>>,
}

impl SentinelPort {
    /// Binds `addr` and serves Sentinel clients from `core`.
    pub fn start(addr: &Addr, core: Arc<Core>, down_after_ms: u64) -> Result<SentinelPort> {
        let listener = TcpListener::bind(addr.to_string())
            .map_err(|e| Error::Io(format!("sentinel_addr: cannot listen on {addr}: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::Io(format!("sentinel_addr: {e}")))?;
        let ctx = Arc::new(Context {
            core,
            run_id: run_id(local_addr),
            port: local_addr.port(),
            started: Instant::now(),
            down_after_ms,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let connections: Connections = Arc::default();
        let acceptor = {
            let stop = stop.clone();
            let connections = connections.clone();
            std::thread::Builder::new()
                .name("sentinel-accept".into())
                .spawn(move || accept(listener, ctx, stop, connections))
                .map_err(|e| Error::Io(format!("cannot start the sentinel listener: {e}")))?
        };
        log::info!("Sentinel-compatible port listening on {local_addr}");
        Ok(SentinelPort {
            local_addr,
            stop,
            connections,
            acceptor: Some(acceptor),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Closes the listener and every connection, and joins their threads.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.local_addr, Duration::from_millis(500));
        for (_, stream) in lock(&self.connections).drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Drop for SentinelPort {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Sentinel run id: 40 hex digits, stable for one listening address.
fn run_id(addr: SocketAddr) -> String {
    let seed = crate::broker::raft::peer_id(&format!("sentinel {addr} {}", std::process::id()));
    format!(
        "{seed:016x}{:016x}{:08x}",
        seed.rotate_left(17) ^ 0x5a5a,
        seed as u32
    )
}

fn accept(
    listener: TcpListener,
    ctx: Arc<Context>,
    stop: Arc<AtomicBool>,
    connections: Connections,
) {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut serial = 0u64;
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut stream) = stream else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        threads.retain(|t| !t.is_finished());
        if threads.len() >= MAX_CONNECTIONS {
            let _ = stream.write_all(b"-ERR max number of clients reached\r\n");
            continue;
        }
        serial += 1;
        crate::tcp::keep_alive(&stream);
        if let Ok(clone) = stream.try_clone() {
            lock(&connections).insert(serial, clone);
        }
        let client = Client {
            ctx: ctx.clone(),
            serial,
            connections: connections.clone(),
            authenticated: !ctx.core.access.has_token(),
            channels: Vec::new(),
            patterns: Vec::new(),
            events: None,
            resp3: false,
        };
        match std::thread::Builder::new()
            .name("sentinel-conn".into())
            .spawn(move || client.serve(stream))
        {
            Ok(thread) => threads.push(thread),
            Err(e) => log::error!("sentinel: cannot start a connection thread: {e}"),
        }
    }
    for (_, stream) in lock(&connections).drain() {
        let _ = stream.shutdown(Shutdown::Both);
    }
    for thread in threads {
        let _ = thread.join();
    }
}

/// One client connection.
struct Client {
    ctx: Arc<Context>,
    serial: u64,
    connections: Connections,
    authenticated: bool,
    channels: Vec<String>,
    patterns: Vec<String>,
    events: Option<Receiver<Event>>,
    /// The client asked for RESP3 with `HELLO 3`.
    resp3: bool,
}

/// What to do after a command.
enum Next {
    Continue,
    Close,
}

impl Client {
    fn serve(mut self, mut stream: TcpStream) {
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        if let Err(e) = self.run(&mut stream) {
            log::debug!("sentinel: connection from {peer} ended: {e}");
        }
        lock(&self.connections).remove(&self.serial);
    }

    fn run(&mut self, stream: &mut TcpStream) -> std::io::Result<()> {
        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        loop {
            // Answer every whole command already received.
            loop {
                match read_request(&buf) {
                    Request::Incomplete => break,
                    Request::Malformed(why) => {
                        let mut out = Out::new(self.resp3);
                        out.error(&format!("ERR Protocol error: {why}"));
                        stream.write_all(&out.bytes)?;
                        return Ok(());
                    }
                    Request::Command(words, used) => {
                        buf.drain(..used);
                        let mut out = Out::new(self.resp3);
                        let next = self.command(&words, &mut out);
                        stream.write_all(&out.bytes)?;
                        if let Next::Close = next {
                            return Ok(());
                        }
                    }
                }
            }
            let subscribed = self.events.is_some();
            stream.set_read_timeout(subscribed.then_some(EVENT_POLL))?;
            match stream.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
            self.deliver_events(stream)?;
        }
    }

    fn deliver_events(&mut self, stream: &mut TcpStream) -> std::io::Result<()> {
        let Some(events) = &self.events else {
            return Ok(());
        };
        let mut out = Out::new(self.resp3);
        while let Ok(event) = events.try_recv() {
            let channel = event.channel();
            let message = event.message();
            if self.channels.iter().any(|c| c == channel) {
                out.push(3).bulk("message").bulk(channel).bulk(&message);
            }
            for pattern in &self.patterns {
                if glob_match(pattern.as_bytes(), channel.as_bytes()) {
                    out.push(4)
                        .bulk("pmessage")
                        .bulk(pattern)
                        .bulk(channel)
                        .bulk(&message);
                }
            }
        }
        if !out.bytes.is_empty() {
            stream.write_all(&out.bytes)?;
        }
        Ok(())
    }

    fn command(&mut self, words: &[String], out: &mut Out) -> Next {
        let Some(name) = words.first() else {
            return Next::Continue;
        };
        let name = name.to_ascii_lowercase();
        let args = &words[1..];
        match name.as_str() {
            "quit" => {
                out.simple("OK");
                return Next::Close;
            }
            "auth" => self.auth(args, out),
            "hello" => self.hello(args, out),
            _ if !self.authenticated => {
                out.error("NOAUTH Authentication required.");
            }
            _ if self.events.is_some() => self.subscribed_command(&name, args, out),
            "ping" => match args.first() {
                Some(text) => {
                    out.bulk(text);
                }
                None => {
                    out.simple("PONG");
                }
            },
            "echo" if args.len() == 1 => {
                out.bulk(&args[0]);
            }
            "sentinel" => commands::sentinel(&self.ctx, args, out),
            "info" => commands::info(&self.ctx, args, out),
            "role" => commands::role(&self.ctx, out),
            "client" => client(args, self.serial, out),
            "command" => {
                out.array(0);
            }
            "subscribe" | "psubscribe" => self.subscribe(&name, args, out),
            "unsubscribe" | "punsubscribe" => self.unsubscribe(&name, args, out),
            _ => {
                let start: Vec<String> = args.iter().take(3).map(|a| format!("'{a}'")).collect();
                out.error(&format!(
                    "ERR unknown command '{name}', with args beginning with: {}",
                    start.join(" ")
                ));
            }
        }
        Next::Continue
    }

    /// Commands allowed while subscribed (as in Redis's RESP2).
    fn subscribed_command(&mut self, name: &str, args: &[String], out: &mut Out) {
        match name {
            "subscribe" | "psubscribe" => self.subscribe(name, args, out),
            "unsubscribe" | "punsubscribe" => self.unsubscribe(name, args, out),
            "ping" if self.resp3 => {
                out.simple("PONG");
            }
            "ping" => {
                out.array(2)
                    .bulk("pong")
                    .bulk(args.first().map_or("", String::as_str));
            }
            _ => {
                out.error(&format!(
                    "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                ));
            }
        }
    }

    fn auth(&mut self, args: &[String], out: &mut Out) {
        let Some(password) = args.last().filter(|_| args.len() <= 2) else {
            out.error("ERR wrong number of arguments for 'auth' command");
            return;
        };
        if self.ctx.core.access.accepts(password) {
            self.authenticated = true;
            out.simple("OK");
        } else {
            out.error("WRONGPASS invalid username-password pair or user is disabled.");
        }
    }

    fn hello(&mut self, args: &[String], out: &mut Out) {
        let mut resp3 = self.resp3;
        if let Some(version) = args.first() {
            match version.parse::<u32>() {
                Ok(2) => resp3 = false,
                Ok(3) => resp3 = true,
                Ok(_) => {
                    out.error("NOPROTO sorry, this protocol version is not supported.");
                    return;
                }
                Err(_) => {
                    out.error("ERR Protocol version is not an integer or out of range");
                    return;
                }
            }
        }
        let mut rest = args.iter().skip(1);
        while let Some(option) = rest.next() {
            match option.to_ascii_lowercase().as_str() {
                "auth" => {
                    let (Some(_user), Some(password)) = (rest.next(), rest.next()) else {
                        out.error("ERR Syntax error in HELLO option 'auth'");
                        return;
                    };
                    if !self.ctx.core.access.accepts(password) {
                        out.error("WRONGPASS invalid username-password pair or user is disabled.");
                        return;
                    }
                    self.authenticated = true;
                }
                "setname" => {
                    rest.next();
                }
                other => {
                    out.error(&format!("ERR Syntax error in HELLO option '{other}'"));
                    return;
                }
            }
        }
        if !self.authenticated {
            out.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
            return;
        }
        self.resp3 = resp3;
        out.resp3 = resp3;
        out.map(7)
            .bulk("server")
            .bulk("redis")
            .bulk("version")
            .bulk("7.0.0")
            .bulk("proto")
            .int(if resp3 { 3 } else { 2 })
            .bulk("id")
            .int(self.serial as i64)
            .bulk("mode")
            .bulk("sentinel")
            .bulk("role")
            .bulk("sentinel")
            .bulk("modules")
            .array(0);
    }

    fn subscribe(&mut self, name: &str, args: &[String], out: &mut Out) {
        if args.is_empty() {
            out.error(&format!(
                "ERR wrong number of arguments for '{name}' command"
            ));
            return;
        }
        if self.events.is_none() {
            self.events = Some(self.ctx.core.events.subscribe());
        }
        let pattern = name == "psubscribe";
        for target in args {
            let list = if pattern {
                &mut self.patterns
            } else {
                &mut self.channels
            };
            if !list.contains(target) {
                list.push(target.clone());
            }
            let count = self.channels.len() + self.patterns.len();
            out.push(3).bulk(name).bulk(target).int(count as i64);
        }
    }

    fn unsubscribe(&mut self, name: &str, args: &[String], out: &mut Out) {
        let kind = if name == "punsubscribe" {
            &mut self.patterns
        } else {
            &mut self.channels
        };
        let targets: Vec<String> = if args.is_empty() {
            std::mem::take(kind)
        } else {
            kind.retain(|c| !args.contains(c));
            args.to_vec()
        };
        if targets.is_empty() {
            out.push(3).bulk(name).null_bulk();
            out.int((self.channels.len() + self.patterns.len()) as i64);
        }
        for target in targets {
            let count = self.channels.len() + self.patterns.len();
            out.push(3).bulk(name).bulk(&target).int(count as i64);
        }
        if self.channels.is_empty() && self.patterns.is_empty() {
            self.events = None;
        }
    }
}

/// `CLIENT ...`: names and library info are accepted and forgotten.
fn client(args: &[String], id: u64, out: &mut Out) {
    match args.first().map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("getname") => {
            out.null_bulk();
        }
        Some("id") => {
            out.int(id as i64);
        }
        Some(_) => {
            out.simple("OK");
        }
        None => {
            out.error("ERR wrong number of arguments for 'client' command");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
