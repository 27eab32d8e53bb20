//! The operator's controls over automatic failover (issue: maintenance, anti-flapping,
//! manual failover), all changes and so all behind `api_token`:
//!
//! - `POST`/`DELETE /api/v1/pause[?for=SECONDS]`: pause (or resume) every group.
//! - `POST`/`DELETE /api/v1/groups/NAME/pause[?for=SECONDS]`: one group.
//! - `POST /api/v1/groups/NAME/ack`: acknowledge its failovers (lifts `failover_block`).
//! - `POST /api/v1/groups/NAME/failover`: fail a master that does not answer over now,
//!   paused or blocked or not (Sentinel's `SENTINEL FAILOVER`).
//!
//! The pause and the acknowledgement are replicated state (`broker/holds.rs`); the
//! decisions are the monitor core's (`monitor/core/holds.rs`).

use super::params::{form_value, path_segment};
use crate::daemon::Daemon;
use crate::error::Error;
use crate::net::http::Request;
use std::time::Duration;

/// The longest pause with an end: a week (longer ones are until resumed).
const MAX_PAUSE_SECS: f64 = 7.0 * 86_400.0;

/// Answers the request when its path is one of the endpoints above: status and body.
pub fn route(daemon: &Daemon, request: &Request, path: &str, query: &str) -> Option<(u16, String)> {
    if path == "/api/v1/pause" {
        return Some(pause(daemon, request, None, query));
    }
    let rest = path.strip_prefix("/api/v1/groups/")?;
    let (name, action) = rest.rsplit_once('/')?;
    if !matches!(action, "pause" | "ack" | "failover") {
        return None;
    }
    let group = match path_segment(name) {
        Ok(group) if !group.is_empty() && !group.contains('/') => group,
        Ok(_) => return Some((404, format!("no such endpoint: {path}\n"))),
        Err(reason) => return Some((400, format!("{reason}\n"))),
    };
    if daemon.broker.state().find(&group).is_none() {
        return Some((404, format!("no monitored group {group:?}\n")));
    }
    Some(match action {
        "pause" => pause(daemon, request, Some(&group), query),
        "ack" if request.method == "POST" => answer(
            daemon
                .acknowledge(&group)
                .map(|()| format!("OK: failovers of {group} acknowledged\n")),
        ),
        "failover" if request.method == "POST" => {
            match daemon.manual_failovers.request(&*daemon.broker, &group) {
                Ok(master) => (
                    202,
                    format!(
                        "OK: failover of {group} (master {master}) begun; GET /api/v1/groups shows its outcome\n"
                    ),
                ),
                Err(e) => (e.status(), format!("{e}\n")),
            }
        }
        _ => (405, format!("only POST is allowed on {path}\n")),
    })
}

/// `POST` (with an optional `for`) or `DELETE` of a pause.
fn pause(daemon: &Daemon, request: &Request, group: Option<&str>, query: &str) -> (u16, String) {
    let what = group.map_or("every group".to_string(), |g| format!("group {g}"));
    match request.method.as_str() {
        "POST" => {
            let lasts = match pause_length(request, query) {
                Ok(lasts) => lasts,
                Err(reason) => return (400, format!("{reason}\n")),
            };
            answer(
                daemon
                    .pause(group, lasts)
                    .map(|pause| match pause.until_ms {
                        Some(until) => format!("OK: {what} paused until {until} (Unix ms)\n"),
                        None => format!("OK: {what} paused until resumed\n"),
                    }),
            )
        }
        "DELETE" => answer(
            daemon
                .resume(group)
                .map(|()| format!("OK: {what} resumed\n")),
        ),
        _ => (405, "use POST or DELETE on a pause\n".to_string()),
    }
}

/// `for=SECONDS` from the query string or a form body: None for no end.
fn pause_length(request: &Request, query: &str) -> Result<Option<Duration>, String> {
    let text = match form_value(query.as_bytes(), "for")? {
        Some(text) => Some(text),
        None => form_value(&request.body, "for")?,
    };
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= MAX_PAUSE_SECS => {
            Ok(Some(Duration::from_secs_f64(secs)))
        }
        _ => Err(format!(
            "for: {text:?} is not a number of seconds from 0 to {MAX_PAUSE_SECS} (leave it out to pause until resumed)"
        )),
    }
}

fn answer(result: crate::error::Result<String>) -> (u16, String) {
    match result {
        Ok(body) => (200, body),
        Err(Error::InvalidInput(reason)) => (400, format!("{reason}\n")),
        Err(other) => (503, format!("{other}\n")),
    }
}
