//! The HTTP API, compatible with the Go original and extended: routes and answers.
//! The transport (connections, caps, timeouts, the handler pool) is `net/http`.
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
//! - `GET /`: the status page (`page/`); `GET /health/...` and
//!   `/api/v1/groups/<name>/master` for load balancers (`health.rs`); `GET /api/v1/history`
//!   (`history.rs`).
//! - `POST /api/v1/reload`: read the TLS certificates and keys from disk again (as
//!   SIGHUP does); a broken file is refused and the old ones stay in use.
//!
//! Parameters may also come as an `application/x-www-form-urlencoded` body. Bad input
//! gets a 4xx with a one-line reason; the server keeps running whatever it is sent.
//! With an `api_token`, requests that change something (and reads, with
//! `api_token_reads`) need `Authorization: Bearer <token>`, else 401 (see `auth.rs`).
//! Requests a browser makes for another site, or after DNS rebinding, get 403 (see
//! `cross_site.rs`).

use super::auth::{ApiAccess, Refused};
use super::cross_site::{self, AllowedHosts, Forbidden};
use super::params::{form_value, group_keys, path_segment};
use crate::address::{Addr, MasterSpec};
use crate::broker::MemberChange;
use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::net::http::{Caps, HttpServer, Request, Response, Settings};
use crate::net::server::Limits;
use crate::net::tls::Tls;
use crate::shutdown::Shutdown;
use crate::worker::switchover_request::SwitchoverRequest;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest request body read; larger ones get 413.
pub const MAX_BODY: usize = 64 * 1024;
/// Largest request line and header fields; larger ones get 431.
pub const MAX_HEAD: usize = 16 * 1024;
/// Threads answering requests. Requests are read whole on the port's event loop
/// first, so a client that sends its body slowly ties up none of them.
pub const HANDLER_THREADS: usize = 4;
/// Whole requests waiting for a handler thread; beyond, 503 at once.
pub const QUEUED_REQUESTS: usize = 64;
/// Connections open at once; see `net/server.rs` for what happens beyond.
pub const MAX_CONNECTIONS: usize = 512;
/// Connections open at once from one address (a quarter of the cap).
pub const MAX_CONNECTIONS_PER_SOURCE: usize = MAX_CONNECTIONS / 4;
/// A keep-alive connection with no request is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request must arrive whole (head and body) within this long, else 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply the client does not read closes its connection after this long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// At the connection cap, a connection that made no progress for this long may be
/// closed to let a new one in.
pub const EVICT_AFTER: Duration = Duration::from_secs(2);

/// The bounds of the HTTP port.
pub fn settings() -> Settings {
    Settings {
        caps: Caps {
            max_head: MAX_HEAD,
            max_body: MAX_BODY,
        },
        limits: Limits {
            max_connections: MAX_CONNECTIONS,
            max_per_source: MAX_CONNECTIONS_PER_SOURCE,
            // The head must fit, and body bytes pass through on their way to the body.
            max_input: 2 * MAX_HEAD,
            idle_timeout: Some(IDLE_TIMEOUT),
            request_timeout: REQUEST_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            evict_after: EVICT_AFTER,
        },
        threads: HANDLER_THREADS,
        queue: QUEUED_REQUESTS,
    }
}

/// The HTTP listener, bound and then served.
pub struct HttpApi {
    server: HttpServer,
    https: bool,
}

impl HttpApi {
    /// Binds the listener; requests wait until [`HttpApi::serve`]. With `https`, the
    /// port speaks TLS with the current material of that handle.
    pub fn bind(addr: &Addr, https: Option<&Arc<Tls>>) -> Result<HttpApi> {
        let mut server = HttpServer::bind(&addr.to_string())
            .map_err(|e| Error::Io(format!("addr: cannot listen on {addr}: {e}")))?;
        if let Some(tls) = https {
            server.with_transport(tls.server_wrap());
        }
        Ok(HttpApi {
            server,
            https: https.is_some(),
        })
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// Starts the event loop and the handler threads; they stop when `shutdown` is
    /// triggered. `tls` is what `POST /api/v1/reload` reloads (None: TLS is off).
    pub fn serve(
        &mut self,
        daemon: Arc<Daemon>,
        access: ApiAccess,
        tls: Option<Arc<Tls>>,
        shutdown: &Shutdown,
    ) -> Result<()> {
        access.warn_if_exposed(self.local_addr());
        let hosts = AllowedHosts::new(
            access.allowed_hosts(),
            &cross_site::listen_host(self.local_addr()),
        );
        let api = Api {
            daemon,
            access,
            hosts,
            tls,
        };
        let handler = Arc::new(move |request: &Request| handle(&api, request));
        self.server
            .serve("http", settings(), handler, shutdown)
            .map_err(|e| Error::Io(format!("cannot start the HTTP API: {e}")))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Joins the loop and the handler threads once the shutdown given to
    /// [`HttpApi::serve`] is triggered (each handler finishes the request it is
    /// answering).
    pub fn join(&mut self) {
        self.server.join();
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
    /// The `Host` names the API answers to.
    hosts: AllowedHosts,
    tls: Option<Arc<Tls>>,
}

/// Answers one request (on a handler thread). Bodies over [`MAX_BODY`] never get here:
/// the transport refused them with 413.
fn handle(api: &Api, request: &Request) -> Response {
    let reply = route(api, request);
    if reply.status >= 400
        && !(reply.status == 503 && super::health::is_health_check(&request.target))
    {
        log::info!(
            "HTTP {} {} -> {}: {}",
            request.method,
            request.target,
            reply.status,
            reply.body.trim_end()
        );
    }
    let response = Response::new(reply.status, reply.content_type, reply.body);
    if reply.status == 401 {
        return response.with_header("WWW-Authenticate", "Bearer");
    }
    response
}

fn route(api: &Api, request: &Request) -> Answer {
    let daemon = &api.daemon;
    let read = matches!(request.method.as_str(), "GET" | "HEAD");
    let token = api.access.token_presented(authorization(request));
    if let Err(Forbidden(reason)) = cross_site::check(&api.hosts, request, !read, token) {
        return Answer::text(403, format!("{reason}\n"));
    }
    let url = request.target.as_str();
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    // The status page holds no data (its script asks with the token): served before the check.
    if let Some((status, content_type, body)) = super::page::route(&request.method, path) {
        return Answer {
            status,
            body,
            content_type,
        };
    }
    if let Err(Refused(reason)) = api.access.check(read, authorization(request)) {
        return Answer::text(401, format!("{reason}\n"));
    }
    if let Some((status, body)) = super::health::route(daemon, &request.method, path, query) {
        return Answer::text(status, body);
    }
    if let Some((status, content_type, body)) =
        super::history::route(daemon, &request.method, path, query)
    {
        return Answer {
            status,
            body,
            content_type,
        };
    }
    if let Some(name) = switchover_group(path) {
        return switchover(daemon, request, name, query);
    }
    if let Some((status, body)) = super::operate::route(daemon, request, path, query) {
        return Answer::text(status, body);
    }
    match path {
        "/master" => master(daemon, request, query),
        "/api/v1/groups" => match request.method.as_str() {
            "GET" => json(&daemon.groups()),
            _ => Answer::text(405, "only GET is allowed on /api/v1/groups\n"),
        },
        "/api/v1/cluster" => match request.method.as_str() {
            "GET" => json(&daemon.broker.cluster()),
            _ => Answer::text(405, "only GET is allowed on /api/v1/cluster\n"),
        },
        "/api/v1/cluster/peers" => peers(daemon, request, query),
        "/api/v1/reload" => reload(api.tls.as_deref(), request),
        "/metrics" => match request.method.as_str() {
            "GET" => Answer {
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
fn peers(daemon: &Daemon, request: &Request, query: &str) -> Answer {
    let change = match request.method.as_str() {
        "POST" => MemberChange::Add,
        "DELETE" => MemberChange::Remove,
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

/// `POST /api/v1/reload`: the TLS files read again. 200 with what is loaded now; 500
/// with the reason when a file is broken (the old material stays in use); 400 when TLS
/// is off.
fn reload(tls: Option<&Tls>, request: &Request) -> Answer {
    if request.method != "POST" {
        return Answer::text(405, "only POST is allowed on /api/v1/reload\n");
    }
    let Some(tls) = tls else {
        return Answer::text(400, "TLS is off: there is nothing to reload\n");
    };
    match tls.reload() {
        Ok(summary) => {
            log::info!("TLS: reloaded (POST /api/v1/reload): {summary}");
            Answer::text(200, format!("OK: reloaded {summary}\n"))
        }
        Err(e) => {
            log::error!(
                "TLS: reload (POST /api/v1/reload) failed, the previous certificates stay in use: {e}"
            );
            Answer::text(
                500,
                format!("reload failed, the previous certificates stay in use: {e}\n"),
            )
        }
    }
}

/// The status for an error from the daemon: 400 for the caller's mistakes, 503 else.
fn failure(e: Error) -> Answer {
    match e {
        Error::InvalidInput(reason) => Answer::text(400, format!("{reason}\n")),
        other => Answer::text(503, format!("{other}\n")),
    }
}

fn master(daemon: &Daemon, request: &Request, query: &str) -> Answer {
    let method = request.method.as_str();
    if method == "GET" {
        let masters: Vec<String> = daemon.masters().iter().map(|a| a.to_string()).collect();
        return Answer::text(200, masters.join(","));
    }
    if !matches!(method, "POST" | "PUT" | "DELETE") {
        return Answer::text(405, format!("method {method} is not allowed on /master\n"));
    }
    let masters = match param(request, query, "masters") {
        Ok(Some(value)) => value,
        Ok(None) => return Answer::text(400, "missing parameter: masters\n"),
        Err(reply) => return reply,
    };
    let result = match method {
        "PUT" if masters.trim().is_empty() => daemon.set(Vec::new()),
        "PUT" => MasterSpec::parse_list(&masters).and_then(|specs| daemon.set(specs)),
        "POST" => MasterSpec::parse_list(&masters).and_then(|specs| daemon.add(specs)),
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
fn switchover(daemon: &Daemon, request: &Request, name: &str, query: &str) -> Answer {
    if request.method != "POST" {
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
    let value = |key: &str| match form_value(query.as_bytes(), key)? {
        Some(value) => Ok(Some(value)),
        None => form_value(&request.body, key),
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
fn param(request: &Request, query: &str, key: &str) -> std::result::Result<Option<String>, Answer> {
    let bad = |reason: String| Answer::text(400, format!("{reason}\n"));
    if let Some(value) = form_value(query.as_bytes(), key).map_err(bad)? {
        return Ok(Some(value));
    }
    form_value(&request.body, key).map_err(bad)
}

/// The `Authorization` header's value, if there is one and it is text.
fn authorization(request: &Request) -> Option<&str> {
    request.header("Authorization")
}
