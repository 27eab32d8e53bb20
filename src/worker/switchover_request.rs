//! What a planned switchover is asked with and answers: the request the API sends to
//! the monitor, the report or error it gets back, and [`Switchovers`], the handle the
//! API holds (`POST /api/v1/groups/<name>/switchover`; the steps are `switchover.rs`).
//!
//! The HTTP handler waits for the result on a reply channel, for a bounded time. Only
//! the acting daemon runs a switchover; a follower answers 503 naming the leader's HTTP
//! address (a redirect would make clients re-send the API token to another host, which
//! careful HTTP clients refuse to do).

use super::switchover::PAUSE_BEYOND_CATCH_UP;
use crate::address::Addr;
use crate::broker::{Broker, FailoverRecord};
use crate::redis::{ReplicaReport, ReplicationInfo, elect, is_same_server};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// How long an HTTP request waits beyond the switchover's own bounds: the worker may be
/// busy failing over another group first.
const REPLY_MARGIN: Duration = Duration::from_secs(30);

/// What the API asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchoverRequest {
    /// The group's name (or its master's address).
    pub group: String,
    /// The replica to promote; the best one when None.
    pub to: Option<Addr>,
    /// Go on without pausing writes when the master has no `CLIENT PAUSE WRITE`.
    pub force: bool,
}

/// A request on its way from the API to the monitor, with where to send the answer.
pub struct SwitchoverCommand {
    pub request: SwitchoverRequest,
    pub catch_up_timeout: Duration,
    pub reply: Sender<SwitchoverResult>,
}

impl SwitchoverCommand {
    /// Answers the caller without running anything.
    pub fn refuse(self, error: SwitchoverError) {
        log::warn!("group {}: switchover refused: {error}", self.request.group);
        // The caller may have given up waiting.
        let _ = self.reply.send(Err(error));
    }
}

/// A switchover the monitor handed to the failover worker.
pub struct SwitchoverJob {
    pub command: SwitchoverCommand,
    /// The group's master when the monitor accepted the request.
    pub master: Addr,
    pub watch_id: u64,
}

/// The answer to a switchover request.
pub type SwitchoverResult = std::result::Result<SwitchoverReport, SwitchoverError>;

/// What a successful switchover did (the body of the 200 answer).
#[derive(Debug, Clone, Serialize)]
pub struct SwitchoverReport {
    /// The record kept in the group's history.
    #[serde(flatten)]
    pub record: FailoverRecord,
    /// How long writes were paused on the old master, until `CLIENT UNPAUSE`; None when
    /// `force=true` went on without a pause.
    pub paused_ms: Option<u64>,
    /// The replication offset the new master had reached when it was promoted.
    pub offset: i64,
}

/// Why a switchover did not happen, with the HTTP status that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchoverError {
    /// No such group (404).
    NotFound(String),
    /// A bad parameter, such as `to=` naming a server that is not a replica (400).
    Invalid(String),
    /// The group cannot be switched over now: busy, master not answering, no usable
    /// replica, no `CLIENT PAUSE WRITE` (409).
    Conflict(String),
    /// The cluster or a server did not do its part in time (503).
    Unavailable(String),
    /// This daemon does not act; the leader's HTTP address when known (503).
    NotLeader { leader: Option<String> },
}

impl SwitchoverError {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            SwitchoverError::NotFound(_) => 404,
            SwitchoverError::Invalid(_) => 400,
            SwitchoverError::Conflict(_) => 409,
            SwitchoverError::Unavailable(_) | SwitchoverError::NotLeader { .. } => 503,
        }
    }
}

impl fmt::Display for SwitchoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchoverError::NotFound(m)
            | SwitchoverError::Invalid(m)
            | SwitchoverError::Conflict(m)
            | SwitchoverError::Unavailable(m) => f.write_str(m),
            SwitchoverError::NotLeader { leader: Some(addr) } => write!(
                f,
                "this daemon is not the cluster's acting leader; send the switchover to the leader, whose HTTP API is at http://{addr}"
            ),
            SwitchoverError::NotLeader { leader: None } => f.write_str(
                "this daemon is not the cluster's acting leader and knows no leader now; try again",
            ),
        }
    }
}

/// The API's handle for switchovers: sends requests to the monitor and waits.
pub struct Switchovers {
    commands: Sender<SwitchoverCommand>,
    catch_up_timeout: Duration,
}

impl Default for Switchovers {
    /// A handle with no monitor behind it: every request is refused.
    fn default() -> Switchovers {
        Switchovers {
            commands: crossbeam_channel::bounded(1).0,
            catch_up_timeout: Duration::from_secs(5),
        }
    }
}

impl Switchovers {
    /// A handle and the receiver the monitor listens on.
    pub fn new(catch_up_timeout: Duration) -> (Switchovers, Receiver<SwitchoverCommand>) {
        let (commands, receiver) = crossbeam_channel::unbounded();
        let handle = Switchovers {
            commands,
            catch_up_timeout,
        };
        (handle, receiver)
    }

    /// Runs a switchover and waits for its outcome (for a bounded time).
    pub fn request(&self, broker: &dyn Broker, mut request: SwitchoverRequest) -> SwitchoverResult {
        if !broker.is_acting() {
            let leader = broker.cluster().other_leader_http();
            return Err(SwitchoverError::NotLeader { leader });
        }
        request.group = broker.state().find(&request.group).ok_or_else(|| {
            SwitchoverError::NotFound(format!("no monitored group {:?}", request.group))
        })?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        let command = SwitchoverCommand {
            request,
            catch_up_timeout: self.catch_up_timeout,
            reply,
        };
        if self.commands.send(command).is_err() {
            return Err(SwitchoverError::Unavailable(
                "the monitor is not running (the daemon is stopping)".into(),
            ));
        }
        let bound = self.catch_up_timeout + PAUSE_BEYOND_CATCH_UP + REPLY_MARGIN;
        match answer.recv_timeout(bound) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(SwitchoverError::Unavailable(format!(
                "the switchover did not finish within {} s; it may still be under way: GET /api/v1/groups shows its outcome",
                bound.as_secs()
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(SwitchoverError::Unavailable(
                "the failover worker dropped the switchover (it stopped, or a bug); GET /api/v1/groups shows the group's state".into(),
            )),
        }
    }
}

/// Why a LedisDB master cannot be switched over (409), whatever `force` says.
///
/// LedisDB has no `CLIENT PAUSE` (it answers `-command not found`), so writes cannot be
/// held while the target catches up. `force=true` does not help as it does for an old
/// Redis: the old master would keep the writes it took after the catch-up, and
/// LedisDB's plain `SLAVEOF` resumes from the demoted server's own log instead of
/// resynchronising, so it would keep them and silently differ from the new master.
pub fn ledisdb_refusal(master: &Addr, version: &str) -> SwitchoverError {
    SwitchoverError::Conflict(format!(
        "{master} is LedisDB (ledisdb_version {version}), which has no CLIENT PAUSE: writes cannot be held while a replica catches up, so a planned switchover is refused before anything changes (force=true does not override this on LedisDB: the demoted master would keep writes the new one never got). A failover of a dead LedisDB master works"
    ))
}

/// Chooses the replica to promote: the one named (listed by the master, link up), or
/// the best one with its link up by the failover's rules.
pub fn choose_target(
    master: &Addr,
    reports: &[ReplicaReport],
    to: Option<&Addr>,
    max_down_time: Duration,
) -> std::result::Result<Addr, SwitchoverError> {
    let linked = |info: &ReplicationInfo| {
        info.link_up
            && info
                .master
                .as_deref()
                .is_some_and(|m| is_same_server(m, master))
    };
    let Some(to) = to else {
        let candidates: Vec<ReplicaReport> = reports
            .iter()
            .filter(|r| r.info.as_ref().is_ok_and(linked))
            .cloned()
            .collect();
        if candidates.is_empty() {
            return Err(SwitchoverError::Conflict(format!(
                "no replica of {master} has its link up: {}",
                describe(reports)
            )));
        }
        return elect(master, &candidates, Duration::ZERO, max_down_time)
            .and_then(|ranked| {
                ranked
                    .into_iter()
                    .next()
                    .ok_or_else(|| "no replicas".to_string())
            })
            .map_err(|why| SwitchoverError::Conflict(format!("no replica can take over: {why}")));
    };
    let report = reports
        .iter()
        .find(|r| r.addr == *to || is_same_server(&r.addr.to_string(), to))
        .ok_or_else(|| {
            SwitchoverError::Invalid(format!(
                "to={to} is not a replica of {master} (its replicas: {})",
                if reports.is_empty() {
                    "none".to_string()
                } else {
                    reports
                        .iter()
                        .map(|r| r.addr.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))
        })?;
    match &report.info {
        Ok(info) if linked(info) => Ok(report.addr.clone()),
        Ok(info) => Err(SwitchoverError::Conflict(format!(
            "{} cannot take over now: its link to {master} is not up (role {}, master {}, link {})",
            report.addr,
            info.role,
            info.master.as_deref().unwrap_or("none"),
            if info.link_up { "up" } else { "down" }
        ))),
        Err(e) => Err(SwitchoverError::Conflict(format!(
            "{} cannot take over now: it does not answer INFO ({e})",
            report.addr
        ))),
    }
}

fn describe(reports: &[ReplicaReport]) -> String {
    if reports.is_empty() {
        return "it lists no replicas".into();
    }
    reports
        .iter()
        .map(|r| match &r.info {
            Ok(i) => format!("{} link {}", r.addr, if i.link_up { "up" } else { "down" }),
            Err(e) => format!("{} unreachable ({e})", r.addr),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "127.0.0.1:6379";

    fn report(port: u16, priority: u32, offset: i64, link_up: bool) -> ReplicaReport {
        ReplicaReport {
            addr: Addr::parse(&format!("127.0.0.1:{port}")).unwrap(),
            info: Ok(ReplicationInfo {
                role: "slave".into(),
                master: Some(MASTER.into()),
                link_up,
                link_down_secs: None,
                last_io_secs: None,
                priority,
                offset,
                run_id: None,
                replicas: Vec::new(),
                ledisdb_version: None,
            }),
        }
    }

    fn choose(reports: &[ReplicaReport], to: Option<&str>) -> Result<u16, SwitchoverError> {
        let to = to.map(|t| Addr::parse(t).unwrap());
        choose_target(
            &Addr::parse(MASTER).unwrap(),
            reports,
            to.as_ref(),
            Duration::from_secs(1),
        )
        .map(|a| a.port)
    }

    #[test]
    fn the_best_linked_replica_by_the_failover_rules() {
        let reports = [
            report(1, 10, 5, false),
            report(2, 100, 9, true),
            report(3, 50, 1, true),
            report(4, 0, 99, true),
        ];
        assert_eq!(choose(&reports, None), Ok(3));
        let down = [report(1, 10, 5, false)];
        let err = choose(&down, None).unwrap_err();
        assert_eq!(err.status(), 409, "{err}");
        assert_eq!(choose(&[], None).unwrap_err().status(), 409);
    }

    #[test]
    fn a_named_target_must_be_a_linked_replica() {
        let reports = [report(1, 100, 5, true), report(2, 100, 9, false)];
        assert_eq!(choose(&reports, Some("127.0.0.1:1")), Ok(1));
        assert_eq!(choose(&reports, Some("localhost:1")), Ok(1));
        let err = choose(&reports, Some("127.0.0.1:7")).unwrap_err();
        assert_eq!(err.status(), 400, "{err}");
        assert!(err.to_string().contains("not a replica"), "{err}");
        let err = choose(&reports, Some("127.0.0.1:2")).unwrap_err();
        assert_eq!(err.status(), 409, "{err}");
    }

    #[test]
    fn ledisdb_is_refused_with_409_naming_what_it_lacks() {
        let err = ledisdb_refusal(&Addr::parse(MASTER).unwrap(), "0.5");
        assert_eq!(err.status(), 409);
        let text = err.to_string();
        for needle in ["LedisDB", "0.5", "CLIENT PAUSE", "force=true", MASTER] {
            assert!(text.contains(needle), "{needle} not in {text}");
        }
    }

    #[test]
    fn a_follower_names_the_leader() {
        let err = SwitchoverError::NotLeader {
            leader: Some("10.0.0.2:11000".into()),
        };
        assert_eq!(err.status(), 503);
        assert!(err.to_string().contains("http://10.0.0.2:11000"), "{err}");
    }
}
