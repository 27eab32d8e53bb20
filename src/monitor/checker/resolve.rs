//! Host names, resolved off the checker's loop.
//!
//! `getaddrinfo` blocks, for seconds when a DNS server is slow, and a checker thread must
//! never block. An address that is an IP literal needs no lookup. A name is looked up on
//! a helper thread, one name at a time, and the answer is cached for [`CACHE_FOR`]; the
//! checker thread is woken through its poller when an answer arrives, and the
//! connections waiting for it carry on. A failed lookup is cached too, briefly, so a
//! name that does not resolve is not asked again at every check.

use crate::address::Addr;
use crossbeam_channel::{Receiver, Sender};
use polling::Poller;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a name's addresses are used before they are looked up again.
pub const CACHE_FOR: Duration = Duration::from_secs(30);
/// How long a failed lookup is remembered.
pub const FAILED_FOR: Duration = Duration::from_secs(2);

type Answer = std::result::Result<SocketAddr, String>;

/// The cache and the helper thread of one checker thread.
pub struct Resolver {
    cache: HashMap<String, (Answer, Instant)>,
    asked: HashSet<String>,
    requests: Option<Sender<String>>,
    answers: Receiver<(String, Answer)>,
    thread: Option<JoinHandle<()>>,
}

impl Resolver {
    /// Starts the helper thread; it wakes `poller` whenever it has an answer.
    pub fn start(name: String, poller: Arc<Poller>) -> std::io::Result<Resolver> {
        let (requests, wanted) = crossbeam_channel::unbounded::<String>();
        let (answered, answers) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name(name)
            .stack_size(128 * 1024)
            .spawn(move || {
                for host_port in wanted {
                    let answer = look_up(&host_port);
                    if answered.send((host_port, answer)).is_err() {
                        return;
                    }
                    let _ = poller.notify();
                }
            })?;
        Ok(Resolver {
            cache: HashMap::new(),
            asked: HashSet::new(),
            requests: Some(requests),
            answers,
            thread: Some(thread),
        })
    }

    /// Where to connect for `addr`: at once for an IP literal or a cached name, `None`
    /// while a lookup runs (the caller is told through [`Resolver::take_answers`]).
    pub fn lookup(&mut self, addr: &Addr) -> Option<Answer> {
        if let Ok(ip) = addr.host.parse::<IpAddr>() {
            return Some(Ok(SocketAddr::new(ip, addr.port)));
        }
        let key = format!("{}:{}", addr.host, addr.port);
        if let Some((answer, at)) = self.cache.get(&key) {
            let fresh_for = if answer.is_ok() {
                CACHE_FOR
            } else {
                FAILED_FOR
            };
            if at.elapsed() < fresh_for {
                return Some(answer.clone());
            }
        }
        if self.asked.insert(key.clone())
            && let Some(requests) = &self.requests
            && requests.send(key.clone()).is_err()
        {
            self.asked.remove(&key);
            return Some(Err("the resolver thread is gone".into()));
        }
        None
    }

    /// Caches the answers that arrived; whether there were any.
    pub fn take_answers(&mut self) -> bool {
        let mut any = false;
        while let Ok((key, answer)) = self.answers.try_recv() {
            if let Err(e) = &answer {
                log::debug!("checker: cannot resolve {key}: {e}");
            }
            self.asked.remove(&key);
            self.cache.insert(key, (answer, Instant::now()));
            any = true;
        }
        any
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        // The helper ends when its request channel closes. It is not joined: it may be
        // inside a lookup that takes as long as the slowest DNS server, and stopping the
        // daemon must not wait for that.
        self.requests.take();
        self.thread.take();
    }
}

fn look_up(host_port: &str) -> Answer {
    match host_port.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| "resolves to no address".to_string()),
        Err(e) => Err(format!("cannot resolve: {e}")),
    }
}
