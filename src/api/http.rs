//! The HTTP API (tiny_http), compatible with the Go original and extended.
//!
//! - `GET /master`: the current master addresses, comma-separated.
//! - `POST /master?masters=a,b`: watch these masters (`host:port` or `name=host:port`).
//! - `PUT /master?masters=a,b`: watch exactly these (an empty list clears all).
//! - `DELETE /master?masters=a,b`: stop watching (by name or by master address).
//! - `GET /api/v1/groups`: every group as JSON, with replicas, state and last failover.
//! - `POST /api/v1/groups/<name>/switchover[?to=host:port][&force=true]`: move the
//!   master to a replica with no acknowledged write lost (see `worker/switchover.rs`).
//! - `GET /api/v1/cluster`: this daemon's view of the cluster (role, term, leader, peers).
//! - `POST`/`DELETE /api/v1/cluster/peers?addr=host:port`: add or remove a Raft member.
//! - `GET /metrics`: Prometheus text format (see `metrics.rs`).
//!
//! Parameters may also come as an `application/x-www-form-urlencoded` body. Bad input
//! gets a 4xx with a one-line reason; the server keeps running whatever it is sent.
//! With an `api_token`, requests that change something (and reads, with
//! `api_token_reads`) need `Authorization: Bearer <token>`, else 401 (see `auth.rs`).

use super::auth::{ApiAccess, Refused};
use super::params::{form_value, group_keys, path_segment};
use crate::address::{Addr, MasterSpec};
use crate::broker::MemberChange;
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::worker::switchover_request::SwitchoverRequest;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use tiny_http::{Header, Method, Request, Response, Server};

/// Largest request body read; larger ones get 413.
pub const MAX_BODY: usize = 64 * 1024;

/// Threads answering requests: one client that sends its body slowly ties up one.
pub const HANDLER_THREADS: usize = 4;

/// The running HTTP listener and its handler threads.
pub struct HttpApi {
    server: Arc<Server>,
    threads: Vec<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl HttpApi {
    /// Binds the listener; requests wait until [`HttpApi::serve`].
    pub fn bind(addr: &Addr) -> Result<HttpApi> {
        let server = Server::http(addr.to_string())
            .map_err(|e| Error::Io(format!("addr: cannot listen on {addr}: {e}")))?;
        let local_addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| Error::Io(format!("addr: {addr} is not an IP listener")))?;
        Ok(HttpApi {
            server: Arc::new(server),
            threads: Vec::new(),
            local_addr,
        })
    }

    /// Starts the handler threads; they stop when `shutdown` is triggered.
    pub fn serve(
        &mut self,
        daemon: Arc<Daemon>,
        access: ApiAccess,
        shutdown: &Shutdown,
    ) -> Result<()> {
        access.warn_if_exposed(self.local_addr);
        let api = Arc::new(Api { daemon, access });
        for index in 0..HANDLER_THREADS {
            let serving = self.server.clone();
            let api = api.clone();
            let thread = std::thread::Builder::new()
                .name(format!("http-{index}"))
                .spawn(move || {
                    for request in serving.incoming_requests() {
                        handle(&api, request);
                    }
                })
                .map_err(|e| Error::Io(format!("cannot start an HTTP thread: {e}")))?;
            self.threads.push(thread);
        }
        // Each unblock wakes one waiting handler.
        let server = self.server.clone();
        let handlers = self.threads.len();
        shutdown.on_trigger(move || {
            for _ in 0..handlers {
                server.unblock();
            }
        });
        Ok(())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Joins the handler threads once the shutdown given to [`HttpApi::serve`] is
    /// triggered (each finishes the request it is answering).
    pub fn join(&mut self) {
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// An HTTP answer: status, body and its content type.
struct Answer {
    status: u16,
    body: String,
    content_type: &'static str,
}

impl Answer {
    fn text(status: u16, body: impl Into<String>) -> Answer {
        Answer {
            status,
            body: body.into(),
            content_type: "text/plain; charset=utf-8",
        }
    }
}

/// What a handler thread serves from.
struct Api {
    daemon: Arc<Daemon>,
    access: ApiAccess,
}

fn handle(api: &Api, mut request: Request) {
    let reply = route(api, &mut request);
    if reply.status >= 400 {
        log::info!(
            "HTTP {} {} -> {}: {}",
            request.method(),
            request.url(),
            reply.status,
            reply.body.trim_end()
        );
    }
    let mut response = Response::from_string(reply.body).with_status_code(reply.status);
    if let Ok(header) = Header::from_bytes("Content-Type", reply.content_type) {
        response.add_header(header);
    }
    if reply.status == 401
        && let Ok(header) = Header::from_bytes("WWW-Authenticate", "Bearer")
    {
        response.add_header(header);
    }
    if let Err(e) = request.respond(response) {
        log::debug!("HTTP: cannot send a reply: {e}");
    }
}

fn route(api: &Api, request: &mut Request) -> Answer {
    let daemon = &api.daemon;
    let read = matches!(request.method(), Method::Get | Method::Head);
    if let Err(Refused(reason)) = api.access.check(read, authorization(request)) {
        return Answer::text(401, format!("{reason}\n"));
    }
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return Answer::text(413, format!("request body over {MAX_BODY} bytes\n"));
    }
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    if let Some(name) = switchover_group(path) {
        return switchover(daemon, request, name, query);
    }
    match path {
        "/master" => master(daemon, request, query),
        "/api/v1/groups" => match request.method() {
            Method::Get => json(&daemon.groups()),
            _ => Answer::text(405, "only GET is allowed on /api/v1/groups\n"),
        },
        "/api/v1/cluster" => match request.method() {
            Method::Get => json(&daemon.broker.cluster()),
            _ => Answer::text(405, "only GET is allowed on /api/v1/cluster\n"),
        },
        "/api/v1/cluster/peers" => peers(daemon, request, query),
        "/metrics" => match request.method() {
            Method::Get => Answer {
                status: 200,
                body: super::metrics::render(daemon),
                content_type: super::metrics::CONTENT_TYPE,
            },
            _ => Answer::text(405, "only GET is allowed on /metrics\n"),
        },
        _ => Answer::text(404, format!("no such endpoint: {path}\n")),
    }
}

fn json(value: &impl serde::Serialize) -> Answer {
    match serde_json::to_string_pretty(value) {
        Ok(body) => Answer {
            status: 200,
            body: body + "\n",
            content_type: "application/json",
        },
        Err(e) => Answer::text(500, format!("cannot encode the answer: {e}\n")),
    }
}

/// `POST`/`DELETE /api/v1/cluster/peers?addr=host:port`.
fn peers(daemon: &Daemon, request: &mut Request, query: &str) -> Answer {
    let change = match request.method() {
        Method::Post => MemberChange::Add,
        Method::Delete => MemberChange::Remove,
        _ => return Answer::text(405, "use POST or DELETE on /api/v1/cluster/peers\n"),
    };
    let addr = match param(request, query, "addr") {
        Ok(Some(value)) => value,
        Ok(None) => return Answer::text(400, "missing parameter: addr (the raft address)\n"),
        Err(reply) => return reply,
    };
    let result = Addr::parse(addr.trim()).and_then(|addr| {
        daemon.broker.change_members(change, &addr)?;
        Ok(addr)
    });
    match result {
        Ok(addr) => Answer::text(200, format!("OK: membership change for {addr} committed\n")),
        Err(e) => failure(e),
    }
}

/// The status for an error from the daemon: 400 for the caller's mistakes, 503 else.
fn failure(e: Error) -> Answer {
    match e {
        Error::InvalidInput(reason) => Answer::text(400, format!("{reason}\n")),
        other => Answer::text(503, format!("{other}\n")),
    }
}

fn master(daemon: &Daemon, request: &mut Request, query: &str) -> Answer {
    let method = request.method().clone();
    if method == Method::Get {
        let masters: Vec<String> = daemon.masters().iter().map(|a| a.to_string()).collect();
        return Answer::text(200, masters.join(","));
    }
    if !matches!(method, Method::Post | Method::Put | Method::Delete) {
        return Answer::text(405, format!("method {method} is not allowed on /master\n"));
    }
    let masters = match param(request, query, "masters") {
        Ok(Some(value)) => value,
        Ok(None) => return Answer::text(400, "missing parameter: masters\n"),
        Err(reply) => return reply,
    };
    let result = match method {
        Method::Put if masters.trim().is_empty() => daemon.set(Vec::new()),
        Method::Put => MasterSpec::parse_list(&masters).and_then(|specs| daemon.set(specs)),
        Method::Post => MasterSpec::parse_list(&masters).and_then(|specs| daemon.add(specs)),
        _ => group_keys(&masters).and_then(|keys| daemon.remove(keys)),
    };
    match result {
        Ok(()) => Answer::text(200, "OK\n"),
        Err(e) => failure(e),
    }
}

/// The `<name>` of `/api/v1/groups/<name>/switchover`, still percent-encoded.
fn switchover_group(path: &str) -> Option<&str> {
    path.strip_prefix("/api/v1/groups/")?
        .strip_suffix("/switchover")
}

/// `POST /api/v1/groups/<name>/switchover`, with `to` and `force` from the query string
/// or a form body. Answers the switchover's record as JSON, or an error with its reason.
fn switchover(daemon: &Daemon, request: &mut Request, name: &str, query: &str) -> Answer {
    if request.method() != &Method::Post {
        return Answer::text(
            405,
            "only POST is allowed on /api/v1/groups/<name>/switchover\n",
        );
    }
    let bad = |reason: String| Answer::text(400, format!("{reason}\n"));
    let group = match path_segment(name) {
        Ok(group) if !group.is_empty() && !group.contains('/') => group,
        Ok(_) => {
            return Answer::text(
                404,
                format!("no such endpoint: /api/v1/groups/{name}/switchover\n"),
            );
        }
        Err(reason) => return bad(reason),
    };
    let body = match read_body(request) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let value = |key: &str| match form_value(query.as_bytes(), key)? {
        Some(value) => Ok(Some(value)),
        None => form_value(&body, key),
    };
    let to = match value("to") {
        Ok(None) => None,
        Ok(Some(text)) if text.trim().is_empty() => None,
        Ok(Some(text)) => match Addr::parse(text.trim()) {
            Ok(addr) => Some(addr),
            Err(e) => return bad(format!("to: {e}")),
        },
        Err(reason) => return bad(reason),
    };
    let force = match value("force") {
        Ok(None) => false,
        Ok(Some(text)) => match text.trim() {
            "" | "false" | "0" | "no" => false,
            "true" | "1" | "yes" => true,
            other => return bad(format!("force: {other:?} is not true or false")),
        },
        Err(reason) => return bad(reason),
    };
    let request = SwitchoverRequest { group, to, force };
    match daemon.switchovers.request(&*daemon.broker, request) {
        Ok(report) => json(&report),
        Err(e) => Answer::text(e.status(), format!("{e}\n")),
    }
}

/// A parameter from the query string, or else from an urlencoded body.
fn param(
    request: &mut Request,
    query: &str,
    key: &str,
) -> std::result::Result<Option<String>, Answer> {
    let bad = |reason: String| Answer::text(400, format!("{reason}\n"));
    if let Some(value) = form_value(query.as_bytes(), key).map_err(bad)? {
        return Ok(Some(value));
    }
    let body = read_body(request)?;
    form_value(&body, key).map_err(bad)
}

/// The request body, at most [`MAX_BODY`] bytes.
fn read_body(request: &mut Request) -> std::result::Result<Vec<u8>, Answer> {
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body);
    if let Err(e) = read {
        return Err(Answer::text(
            400,
            format!("cannot read the request body: {e}\n"),
        ));
    }
    if body.len() > MAX_BODY {
        return Err(Answer::text(
            413,
            format!("request body over {MAX_BODY} bytes\n"),
        ));
    }
    Ok(body)
}

/// The `Authorization` header's value, if there is one and it is text.
fn authorization(request: &Request) -> Option<&str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str())
}
