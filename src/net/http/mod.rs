//! HTTP/1.1 on the connection server: requests are read on the port's event loop
//! (`request.rs`), handed whole to a fixed pool of handler threads through a channel,
//! and their replies (`response.rs`) come back to the loop through its
//! [`Remote`], which wakes it.
//!
//! So a client that sends its request slowly, or never finishes it, ties up no handler:
//! it holds a connection slot and a bounded buffer until the request timeout, then gets
//! 408 and is closed. A header block over the cap gets 431, a body over the cap 413
//! (refused from its `Content-Length` before it is read), then the connection closes.
//! Keep-alive and `Expect: 100-continue` work as clients expect.

pub mod request;
pub mod response;

pub use request::{Caps, Request};
pub use response::Response;

use super::server::{Bound, ConnId, Io, Limits, Phase, Protocol, Refusal, Remote, Running};
use super::transport::Wrap;
use crate::shutdown::Shutdown;
use crossbeam_channel::{Receiver, Sender};
use request::{Framing, Head, Reject};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

/// What answers a request; it runs on a handler thread and may block.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// The bounds of an HTTP port.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub caps: Caps,
    pub limits: Limits,
    /// Handler threads.
    pub threads: usize,
    /// Whole requests waiting for a handler; beyond, a request gets 503 at once (a
    /// waiting request's connection can be neither evicted nor timed out).
    pub queue: usize,
}

/// An HTTP port: bound first, served later (so the daemon can fail to start before it
/// answers anything).
pub struct HttpServer {
    bound: Option<Bound<Response>>,
    running: Option<Running>,
    workers: Vec<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl HttpServer {
    pub fn bind(addr: &str) -> io::Result<HttpServer> {
        let bound = Bound::bind(addr)?;
        Ok(HttpServer {
            local_addr: bound.local_addr(),
            bound: Some(bound),
            running: None,
            workers: Vec::new(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves through another transport (TLS) instead of plain TCP; before
    /// [`HttpServer::serve`].
    pub fn with_transport(&mut self, wrap: Wrap) {
        if let Some(bound) = self.bound.take() {
            self.bound = Some(bound.with_transport(wrap));
        }
    }

    /// Starts the event loop (thread `name`) and `settings.threads` handler threads
    /// (`name-0`, ...); all stop when `shutdown` is triggered.
    pub fn serve(
        &mut self,
        name: &str,
        settings: Settings,
        handler: Handler,
        shutdown: &Shutdown,
    ) -> io::Result<()> {
        let bound = self
            .bound
            .take()
            .ok_or_else(|| io::Error::other("the HTTP port is served already"))?;
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        for index in 0..settings.threads {
            let worker = Worker {
                jobs: jobs_rx.clone(),
                handler: handler.clone(),
                remote: bound.remote(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || worker.run())?;
            self.workers.push(thread);
        }
        let protocol = Http {
            caps: settings.caps,
            queue: settings.queue,
            request_timeout: settings.limits.request_timeout,
            jobs: jobs_tx,
        };
        self.running = Some(bound.start(name, settings.limits, protocol, shutdown)?);
        Ok(())
    }

    /// Joins the loop, then the handlers (each finishes the request it is answering),
    /// once the shutdown given to [`HttpServer::serve`] is triggered.
    pub fn join(&mut self) {
        if let Some(running) = &mut self.running {
            running.join();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// A whole request for the handlers.
struct Job {
    id: ConnId,
    request: Request,
}

/// One handler thread.
struct Worker {
    jobs: Receiver<Job>,
    handler: Handler,
    remote: Remote<Response>,
}

impl Worker {
    /// Answers requests until the loop drops the job channel.
    fn run(self) {
        for job in self.jobs.iter() {
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (self.handler)(&job.request)
            }));
            let response = answer.unwrap_or_else(|_| {
                log::error!(
                    "HTTP {} {}: the handler panicked",
                    job.request.method,
                    job.request.target
                );
                Response::text(500, "internal error\n")
            });
            self.remote.send(job.id, response);
        }
    }
}

/// The protocol on the loop.
struct Http {
    caps: Caps,
    queue: usize,
    request_timeout: std::time::Duration,
    jobs: Sender<Job>,
}

/// One connection's request in progress.
pub struct Conn {
    id: ConnId,
    peer: SocketAddr,
    reading: Reading,
    /// What the reply being waited for needs.
    keep_alive: bool,
    head_only: bool,
    /// `100 Continue` was sent for the request being read.
    continued: bool,
    /// Bytes of the head being read that were looked at already (see `input`).
    head_seen: usize,
}

enum Reading {
    Head,
    Body { request: Request, framing: Framing },
}

impl Http {
    /// Refuses the request being read; the connection closes after the reply.
    fn refuse(&self, conn: &mut Conn, io: &mut Io<'_>, reject: Reject) {
        log::debug!(
            "HTTP request from {} refused with {}: {}",
            conn.peer,
            reject.status,
            reject.reason
        );
        conn.reading = Reading::Head;
        let reply = Response::text(reject.status, format!("{}\n", reject.reason));
        io.write(&reply.encode(false, false));
        io.close();
    }

    /// Hands a whole request to the handlers.
    fn dispatch(&self, conn: &mut Conn, request: Request, io: &mut Io<'_>) {
        conn.keep_alive = request.keep_alive();
        conn.head_only = request.method == "HEAD";
        let job = Job {
            id: conn.id,
            request,
        };
        // The request counts as a real client's only once its answer says it was
        // accepted (`message`).
        if self.jobs.len() >= self.queue {
            log::debug!(
                "HTTP {} {} from {}: refused, {} requests wait for a handler already",
                job.request.method,
                job.request.target,
                conn.peer,
                self.jobs.len()
            );
            let reply = Response::text(503, "the API is busy; try again later\n")
                .with_header("Retry-After", "1");
            io.write(&reply.encode(conn.keep_alive, conn.head_only));
            if !conn.keep_alive {
                io.close();
            }
            return io.set_phase(Phase::Idle);
        }
        if self.jobs.send(job).is_err() {
            let reply = Response::text(503, "the daemon is shutting down\n");
            io.write(&reply.encode(false, false));
            io.close();
            return;
        }
        io.set_phase(Phase::Busy);
    }

    /// Reads the body of the request whose head was read; true when it went on to
    /// the handlers (or was refused).
    fn body(&self, conn: &mut Conn, io: &mut Io<'_>) -> bool {
        let Reading::Body { request, framing } = &mut conn.reading else {
            return false;
        };
        match request::read_body(framing, io.input(), &mut request.body, &self.caps) {
            Err(reject) => {
                self.refuse(conn, io, reject);
                true
            }
            Ok((false, used)) => {
                io.consume(used);
                if !conn.continued && request.expects_continue() {
                    conn.continued = true;
                    io.write(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                io.set_phase(Phase::Reading);
                false
            }
            Ok((true, used)) => {
                io.consume(used);
                if let Reading::Body { request, .. } =
                    std::mem::replace(&mut conn.reading, Reading::Head)
                {
                    self.dispatch(conn, request, io);
                }
                true
            }
        }
    }
}

impl Protocol for Http {
    type Conn = Conn;
    type Message = Response;

    fn open(&mut self, id: ConnId, peer: SocketAddr) -> Conn {
        Conn {
            id,
            peer,
            reading: Reading::Head,
            keep_alive: false,
            head_only: false,
            continued: false,
            head_seen: 0,
        }
    }

    fn input(&mut self, conn: &mut Conn, io: &mut Io<'_>) {
        if let Reading::Head = conn.reading {
            if io.input().is_empty() {
                io.set_phase(Phase::Idle);
                return;
            }
            // httparse reads a head from its start: it is asked again only once a line
            // has ended (at most MAX_HEADERS + 2 times per head, each under the cap),
            // so a head trickled a byte per packet costs no parse per byte.
            let input = io.input();
            let seen = conn.head_seen.min(input.len());
            conn.head_seen = input.len();
            let line_ended = input[seen..].contains(&b'\n');
            if seen > 0 && !line_ended && input.len() <= self.caps.max_head {
                return io.set_phase(Phase::Reading);
            }
            match request::parse_head(io.input(), conn.peer, &self.caps) {
                Head::Partial => return io.set_phase(Phase::Reading),
                Head::Bad(reject) => {
                    conn.head_seen = 0;
                    return self.refuse(conn, io, reject);
                }
                Head::Done(request, used) => {
                    conn.head_seen = 0;
                    io.consume(used);
                    match request::framing(&request, &self.caps) {
                        Ok(framing) => {
                            conn.continued = false;
                            conn.reading = Reading::Body { request, framing };
                        }
                        Err(reject) => return self.refuse(conn, io, reject),
                    }
                }
            }
        }
        self.body(conn, io);
    }

    fn message(&mut self, conn: &mut Conn, reply: Response, io: &mut Io<'_>) {
        let status = reply.status;
        let bytes = reply.encode(conn.keep_alive, conn.head_only);
        drop(reply);
        io.write_owned(bytes);
        io.set_phase(Phase::Idle);
        // A refusal (401, 403, 404, ...) is no activity: it keeps no connection alive.
        if !(400..500).contains(&status) {
            io.completed();
        }
        if !conn.keep_alive {
            io.close();
        }
    }

    fn timed_out(&mut self, conn: &mut Conn, io: &mut Io<'_>) {
        let reason = format!(
            "request not received in full within {} s",
            self.request_timeout.as_secs()
        );
        self.refuse(
            conn,
            io,
            Reject {
                status: 408,
                reason,
            },
        );
    }

    fn refusal(&self, why: Refusal) -> Vec<u8> {
        let reason = match why {
            Refusal::Full => "too many connections to this port; try again later\n",
            Refusal::NoDescriptors => "the daemon is out of file descriptors; try again later\n",
            Refusal::PerSource => "too many connections from your address; try again later\n",
        };
        Response::text(503, reason)
            .with_header("Retry-After", "1")
            .encode(false, false)
    }
}
