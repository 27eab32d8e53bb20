//! One client connection to the Sentinel port, and the port's protocol on the event
//! loop ([`Sentinel`]): reads commands, answers them, and delivers events to a
//! subscribed client as soon as its subscription wakes the loop.

use super::auth_limit::AuthLimiter;
use super::commands::{self, Context};
use super::protocol::{Out, Request, glob_match};
use super::reader::CommandReader;
use crate::net::server::{ConnId, Io, Phase, Protocol, Refusal, Remote};
use crate::observe::events::Event;
use crossbeam_channel::Receiver;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Commands are not answered while this much output waits for the client (it reads
/// slowly, or pipelines more than it reads).
const OUTPUT_HIGH: usize = 64 * 1024;
/// A subscriber with this much undelivered output is not keeping up, and is closed
/// (like Redis's pub/sub output buffer limit).
pub const MAX_SUBSCRIBER_BACKLOG: usize = 1024 * 1024;

/// A subscription's wake-up: events are waiting for the connection.
pub struct Wake;

/// The port's protocol: answers commands on the loop thread.
pub struct Sentinel {
    ctx: Arc<Context>,
    remote: Remote<Wake>,
    /// Failed `AUTH` attempts by source address.
    auth_limit: AuthLimiter,
}

impl Sentinel {
    pub fn new(ctx: Arc<Context>, remote: Remote<Wake>) -> Sentinel {
        Sentinel {
            ctx,
            remote,
            auth_limit: AuthLimiter::default(),
        }
    }
}

impl Protocol for Sentinel {
    type Conn = Client;
    type Message = Wake;

    fn open(&mut self, id: ConnId, peer: SocketAddr) -> Client {
        Client::new(self.ctx.clone(), id, peer.ip(), self.remote.clone())
    }

    fn input(&mut self, client: &mut Client, io: &mut Io<'_>) {
        client.input(io, &mut self.auth_limit);
    }

    fn message(&mut self, client: &mut Client, _wake: Wake, io: &mut Io<'_>) {
        client.deliver_events(io);
        if io.pending_output() > MAX_SUBSCRIBER_BACKLOG {
            log::warn!(
                "sentinel: closing subscriber {}: over {MAX_SUBSCRIBER_BACKLOG} bytes of events unread",
                client.id.serial()
            );
            io.abort();
        }
    }

    fn refusal(&self, _why: Refusal) -> Vec<u8> {
        b"-ERR max number of clients reached\r\n".to_vec()
    }
}

/// One client connection.
pub struct Client {
    ctx: Arc<Context>,
    id: ConnId,
    /// The peer's address, for the failed `AUTH` limit.
    source: IpAddr,
    remote: Remote<Wake>,
    authenticated: bool,
    channels: Vec<String>,
    patterns: Vec<String>,
    events: Option<Receiver<Event>>,
    /// The client asked for RESP3 with `HELLO 3`.
    resp3: bool,
    /// The command being read, kept between packets.
    reader: CommandReader,
}

/// What to do after a command.
enum Next {
    Continue,
    Close,
}

/// How a password presented with `AUTH` or `HELLO ... AUTH` fared.
enum Password {
    Right,
    Wrong,
    /// Too many failures from this address: not checked.
    Limited,
}

impl Client {
    /// A new connection's state; it needs `AUTH` first when a token is set.
    fn new(ctx: Arc<Context>, id: ConnId, source: IpAddr, remote: Remote<Wake>) -> Client {
        Client {
            authenticated: !ctx.access.has_token(),
            ctx,
            id,
            source,
            remote,
            channels: Vec::new(),
            patterns: Vec::new(),
            events: None,
            resp3: false,
            reader: CommandReader::default(),
        }
    }

    /// Answers every whole command received, while the client reads its replies. Only
    /// an authenticated client's commands count as activity (`Io::completed`): refused
    /// ones keep no connection alive and earn it no place at the cap.
    fn input(&mut self, io: &mut Io<'_>, limit: &mut AuthLimiter) {
        while io.pending_output() < OUTPUT_HIGH {
            match self.reader.next(io.input()) {
                Request::Incomplete => break,
                Request::Malformed(why) => {
                    let mut out = Out::new(self.resp3);
                    out.error(&format!("ERR Protocol error: {why}"));
                    io.write(&out.bytes);
                    io.close();
                    return;
                }
                Request::Command(words, used) => {
                    io.consume(used);
                    let mut out = Out::new(self.resp3);
                    let next = self.command(&words, &mut out, limit);
                    if self.authenticated {
                        io.completed();
                    }
                    io.write(&out.bytes);
                    if let Next::Close = next {
                        io.close();
                        return;
                    }
                }
            }
        }
        let phase = if io.input().is_empty() {
            Phase::Idle
        } else {
            Phase::Reading
        };
        io.set_phase(phase);
        io.set_long_lived(self.events.is_some());
    }

    fn deliver_events(&mut self, io: &mut Io<'_>) {
        let Some(events) = &self.events else {
            return;
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
        io.write(&out.bytes);
    }

    fn command(&mut self, words: &[String], out: &mut Out, limit: &mut AuthLimiter) -> Next {
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
            "auth" => return self.auth(args, out, limit),
            "hello" => return self.hello(args, out, limit),
            _ if !self.authenticated => {
                out.error("NOAUTH Authentication required.");
            }
            // RESP3 clients may send any command while subscribed, as Redis allows.
            _ if self.events.is_some() && !self.resp3 => self.subscribed_command(&name, args, out),
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
            "client" => client(args, self.id.serial(), out),
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

    /// Commands allowed while subscribed with RESP2 (as in Redis).
    fn subscribed_command(&mut self, name: &str, args: &[String], out: &mut Out) {
        match name {
            "subscribe" | "psubscribe" => self.subscribe(name, args, out),
            "unsubscribe" | "punsubscribe" => self.unsubscribe(name, args, out),
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

    /// Checks a password, under the failed `AUTH` limit.
    fn password(&mut self, presented: &str, limit: &mut AuthLimiter) -> Password {
        let now = Instant::now();
        if !limit.may_try(self.source, now) {
            return Password::Limited;
        }
        if self.ctx.access.accepts(presented) {
            self.authenticated = true;
            Password::Right
        } else {
            limit.failed(self.source, now);
            Password::Wrong
        }
    }

    fn auth(&mut self, args: &[String], out: &mut Out, limit: &mut AuthLimiter) -> Next {
        let Some(password) = args.last().filter(|_| args.len() <= 2) else {
            out.error("ERR wrong number of arguments for 'auth' command");
            return Next::Continue;
        };
        match self.password(password, limit) {
            Password::Right => {
                out.simple("OK");
            }
            Password::Wrong => {
                out.error("WRONGPASS invalid username-password pair or user is disabled.");
            }
            Password::Limited => return limited(out),
        }
        Next::Continue
    }

    fn hello(&mut self, args: &[String], out: &mut Out, limit: &mut AuthLimiter) -> Next {
        let mut resp3 = self.resp3;
        if let Some(version) = args.first() {
            match version.parse::<u32>() {
                Ok(2) => resp3 = false,
                Ok(3) => resp3 = true,
                Ok(_) => {
                    out.error("NOPROTO sorry, this protocol version is not supported.");
                    return Next::Continue;
                }
                Err(_) => {
                    out.error("ERR Protocol version is not an integer or out of range");
                    return Next::Continue;
                }
            }
        }
        let mut rest = args.iter().skip(1);
        while let Some(option) = rest.next() {
            match option.to_ascii_lowercase().as_str() {
                "auth" => {
                    let (Some(_user), Some(password)) = (rest.next(), rest.next()) else {
                        out.error("ERR Syntax error in HELLO option 'auth'");
                        return Next::Continue;
                    };
                    match self.password(password, limit) {
                        Password::Right => {}
                        Password::Wrong => {
                            out.error(
                                "WRONGPASS invalid username-password pair or user is disabled.",
                            );
                            return Next::Continue;
                        }
                        Password::Limited => return limited(out),
                    }
                }
                "setname" => {
                    rest.next();
                }
                other => {
                    out.error(&format!("ERR Syntax error in HELLO option '{other}'"));
                    return Next::Continue;
                }
            }
        }
        if !self.authenticated {
            out.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
            return Next::Continue;
        }
        self.resp3 = resp3;
        out.resp3 = resp3;
        // Sentinel's HELLO has no `role` field (Redis adds it outside sentinel mode).
        out.map(6)
            .bulk("server")
            .bulk("redis")
            .bulk("version")
            .bulk("7.0.0")
            .bulk("proto")
            .int(if resp3 { 3 } else { 2 })
            .bulk("id")
            .int(self.id.serial() as i64)
            .bulk("mode")
            .bulk("sentinel")
            .bulk("modules")
            .array(0);
        Next::Continue
    }

    fn subscribe(&mut self, name: &str, args: &[String], out: &mut Out) {
        if args.is_empty() {
            out.error(&format!(
                "ERR wrong number of arguments for '{name}' command"
            ));
            return;
        }
        if self.events.is_none() {
            let (remote, id) = (self.remote.clone(), self.id);
            let wake = move || {
                remote.send(id, Wake);
            };
            self.events = Some(self.ctx.daemon.events.subscribe_with_waker(wake));
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

/// The answer to a password attempt over the failed `AUTH` limit; the connection closes.
fn limited(out: &mut Out) -> Next {
    out.error("ERR too many failed AUTH attempts from your address; try again in a few seconds");
    Next::Close
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
