//! `GET /metrics`: what the daemon counts, in Prometheus text format 0.0.4.
//!
//! [`Metrics`] is the shared registry. The monitor calls [`Metrics::on_check`] when a
//! master check completes and beats [`Metrics::monitor_heartbeat`] on every turn of its
//! loop; the failover worker calls [`Metrics::on_failover`] when an attempt ends. Those
//! are the only writers, and they take one short lock (counters) or none (the histogram
//! and the heartbeat are atomics).
//!
//! Everything else is read at scrape time from what the daemon already knows: the
//! groups, their masters and last failover from the broker's replicated state, whether
//! each master answers from the observations, and leadership from the broker. Series:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `redis_failover_master_up` | gauge | group (1 = the last check succeeded; absent until checked) |
//! | `redis_failover_master_info` | gauge, always 1 | group, addr |
//! | `redis_failover_checks_total` | counter | group |
//! | `redis_failover_check_failures_total` | counter | group |
//! | `redis_failover_check_duration_seconds` | histogram | none |
//! | `redis_failover_failovers_total` | counter | group, outcome |
//! | `redis_failover_last_failover_duration_seconds` | gauge | group |
//! | `redis_failover_last_failover_timestamp_seconds` | gauge | group |
//! | `redis_failover_is_leader` | gauge | none |
//! | `redis_failover_monitor_heartbeat_age_seconds` | gauge | none |
//! | `redis_failover_build_info` | gauge, always 1 | version |
//!
//! The check latency histogram has no group label on purpose: at 10,000 groups, eleven
//! buckets each would be 130,000 series; the per-group counters find a bad group, the
//! histogram shows how checks fare overall. Broker series (Raft term and commit index,
//! ZooKeeper session state) come from [`broker_samples`].

use crate::app::Core;
use crate::broker::{Broker, FailoverRecord, Outcome, ReplicatedState};
use crate::status::{Observations, WatchState};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upper bounds, in seconds, of the check latency histogram's buckets (`+Inf` follows).
pub const CHECK_DURATION_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const OUTCOMES: [(Outcome, &str); 3] = [
    (Outcome::Succeeded, "succeeded"),
    (Outcome::Aborted, "aborted"),
    (Outcome::Failed, "failed"),
];

/// Counters of one group, kept by this process.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct GroupCounters {
    checks: u64,
    check_failures: u64,
    /// By outcome, in [`OUTCOMES`] order.
    failovers: [u64; 3],
}

/// Proof that a thread keeps turning: it calls [`Heartbeat::beat`] on every turn of its
/// loop, and anyone can ask how long ago that was. The systemd watchdog pings only while
/// the monitor's heartbeat is fresh, so a monitor that hangs gets the daemon restarted.
pub struct Heartbeat {
    born: Instant,
    /// Milliseconds after `born` of the last beat.
    last_ms: AtomicU64,
}

impl Heartbeat {
    pub fn new() -> Heartbeat {
        Heartbeat {
            born: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub fn beat(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last beat (since creation when there was none).
    pub fn age(&self) -> Duration {
        let now = self.born.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

impl Default for Heartbeat {
    fn default() -> Heartbeat {
        Heartbeat::new()
    }
}

/// The registry shared by the monitor, the failover worker and the HTTP API.
pub struct Metrics {
    groups: Mutex<HashMap<String, GroupCounters>>,
    /// Checks per bucket (not cumulative); the last slot is above every bound.
    check_buckets: [AtomicU64; CHECK_DURATION_BUCKETS.len() + 1],
    check_sum_micros: AtomicU64,
    monitor_heartbeat: Heartbeat,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            groups: Mutex::new(HashMap::new()),
            check_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            check_sum_micros: AtomicU64::new(0),
            monitor_heartbeat: Heartbeat::new(),
        }
    }

    /// A master check of `group` completed after `took`, successfully or not.
    pub fn on_check(&self, group: &str, took: Duration, ok: bool) {
        let secs = took.as_secs_f64();
        let slot = CHECK_DURATION_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(CHECK_DURATION_BUCKETS.len());
        self.check_buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.check_sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.update(group, |c| {
            c.checks += 1;
            if !ok {
                c.check_failures += 1;
            }
        });
    }

    /// A failover attempt of `group` ended with `outcome`.
    pub fn on_failover(&self, group: &str, outcome: Outcome) {
        let slot = OUTCOMES
            .iter()
            .position(|(o, _)| *o == outcome)
            .unwrap_or(0);
        self.update(group, |c| c.failovers[slot] += 1);
    }

    /// The monitor loop's heartbeat (see [`Heartbeat`]).
    pub fn monitor_heartbeat(&self) -> &Heartbeat {
        &self.monitor_heartbeat
    }

    fn update(&self, group: &str, change: impl FnOnce(&mut GroupCounters)) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        // Look up before inserting: this runs on every check, and `entry` would allocate
        // the key each time.
        match groups.get_mut(group) {
            Some(counters) => change(counters),
            None => change(groups.entry(group.to_string()).or_default()),
        }
    }

    /// Counters of the groups in `state`; those of groups no longer monitored are
    /// dropped (a group added again starts from zero, which Prometheus reads as a reset).
    fn counters_for(&self, state: &ReplicatedState) -> HashMap<String, GroupCounters> {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.retain(|name, _| state.groups.contains_key(name));
        groups.clone()
    }
}

/// One series contributed by the broker, such as the Raft term.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerSample {
    /// Full metric name, `redis_failover_` prefixed (`redis_failover_raft_term`).
    pub name: &'static str,
    pub help: &'static str,
    /// `gauge` or `counter`.
    pub kind: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// Broker series, from the broker's view of its cluster: for Raft the term, commit and
/// applied index and the number of members; for ZooKeeper whether the session is
/// connected and how many daemons are in the election. The standalone broker has none.
pub fn broker_samples(broker: &dyn Broker) -> Vec<BrokerSample> {
    let cluster = broker.cluster();
    if cluster.broker == "zk" {
        let connected = cluster.zk_session.as_deref() == Some("connected");
        return vec![
            BrokerSample {
                name: "redis_failover_zk_session_connected",
                help: "Whether this daemon's ZooKeeper session is connected (1) or not (0).",
                kind: "gauge",
                labels: Vec::new(),
                value: if connected { 1.0 } else { 0.0 },
            },
            BrokerSample {
                name: "redis_failover_zk_daemons",
                help: "Daemons in the ZooKeeper election, this one included.",
                kind: "gauge",
                labels: Vec::new(),
                value: cluster.peers.len() as f64,
            },
        ];
    }
    if cluster.broker != "raft" {
        return Vec::new();
    }
    let gauge = |name, help, value: Option<u64>| {
        value.map(|v| BrokerSample {
            name,
            help,
            kind: "gauge",
            labels: Vec::new(),
            value: v as f64,
        })
    };
    [
        gauge(
            "redis_failover_raft_term",
            "Raft term this daemon is in.",
            cluster.term,
        ),
        gauge(
            "redis_failover_raft_commit_index",
            "Highest Raft log index known to be committed.",
            cluster.commit_index,
        ),
        gauge(
            "redis_failover_raft_applied_index",
            "Highest Raft log index applied to this daemon's state.",
            cluster.applied_index,
        ),
        gauge(
            "redis_failover_raft_peers",
            "Members of the Raft cluster, this daemon included.",
            Some(cluster.peers.len() as u64),
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The whole `/metrics` page for a running daemon.
pub fn render(core: &Core) -> String {
    let state = core.broker.state();
    let leader = core.broker.is_leader();
    let broker = broker_samples(core.broker.as_ref());
    render_text(&core.metrics, &state, &core.observed, leader, &broker)
}

/// The page from its parts (separate from [`render`] for tests).
pub fn render_text(
    metrics: &Metrics,
    state: &ReplicatedState,
    observed: &Observations,
    leader: bool,
    broker: &[BrokerSample],
) -> String {
    let counters = metrics.counters_for(state);
    let up: HashMap<String, Option<bool>> = {
        let observed = observed.lock();
        state
            .groups
            .keys()
            .map(|name| {
                let up = observed.get(name).and_then(|o| match o.state {
                    WatchState::Ok | WatchState::SwitchingOver => Some(true),
                    // Not checked (yet, or by this daemon): no sample at all.
                    WatchState::Starting | WatchState::Follower => None,
                    _ => Some(false),
                });
                (name.clone(), up)
            })
            .collect()
    };
    let mut last: HashMap<&str, &FailoverRecord> = HashMap::new();
    for record in &state.history {
        last.insert(record.group.as_str(), record);
    }
    let zero = GroupCounters::default();
    let of = |name: &str| counters.get(name).unwrap_or(&zero);

    let mut out = String::with_capacity(512 + state.groups.len() * 600);
    header(
        &mut out,
        "redis_failover_master_up",
        "gauge",
        "Whether the group's master answered its last check with role master (1) or not (0).",
    );
    for name in state.groups.keys() {
        if let Some(Some(is_up)) = up.get(name) {
            sample(
                &mut out,
                "redis_failover_master_up",
                &[("group", name)],
                u8::from(*is_up),
            );
        }
    }
    header(
        &mut out,
        "redis_failover_master_info",
        "gauge",
        "The group's current master address; always 1.",
    );
    for group in state.groups.values() {
        let addr = group.master.to_string();
        sample(
            &mut out,
            "redis_failover_master_info",
            &[("group", &group.name), ("addr", &addr)],
            1,
        );
    }
    header(
        &mut out,
        "redis_failover_checks_total",
        "counter",
        "Master checks (ROLE) completed by this daemon.",
    );
    for name in state.groups.keys() {
        let n = of(name).checks;
        sample(
            &mut out,
            "redis_failover_checks_total",
            &[("group", name)],
            n,
        );
    }
    header(
        &mut out,
        "redis_failover_check_failures_total",
        "counter",
        "Master checks that failed: no connection, a timeout, garbage, or a role other than master.",
    );
    for name in state.groups.keys() {
        let n = of(name).check_failures;
        sample(
            &mut out,
            "redis_failover_check_failures_total",
            &[("group", name)],
            n,
        );
    }
    histogram(&mut out, metrics);
    header(
        &mut out,
        "redis_failover_failovers_total",
        "counter",
        "Failover attempts run by this daemon, by outcome (succeeded, aborted, failed).",
    );
    for name in state.groups.keys() {
        for (slot, (_, outcome)) in OUTCOMES.iter().enumerate() {
            let n = of(name).failovers[slot];
            sample(
                &mut out,
                "redis_failover_failovers_total",
                &[("group", name), ("outcome", outcome)],
                n,
            );
        }
    }
    header(
        &mut out,
        "redis_failover_last_failover_duration_seconds",
        "gauge",
        "How long the group's last failover attempt took, whatever its outcome.",
    );
    for name in state.groups.keys() {
        if let Some(record) = last.get(name.as_str()) {
            let secs = record.duration_ms as f64 / 1000.0;
            sample(
                &mut out,
                "redis_failover_last_failover_duration_seconds",
                &[("group", name)],
                secs,
            );
        }
    }
    header(
        &mut out,
        "redis_failover_last_failover_timestamp_seconds",
        "gauge",
        "Unix time at which the group's last failover attempt began.",
    );
    for name in state.groups.keys() {
        if let Some(record) = last.get(name.as_str()) {
            let secs = record.started_at_ms as f64 / 1000.0;
            sample(
                &mut out,
                "redis_failover_last_failover_timestamp_seconds",
                &[("group", name)],
                secs,
            );
        }
    }
    header(
        &mut out,
        "redis_failover_is_leader",
        "gauge",
        "Whether this daemon leads its cluster and so checks and fails over (1), or not (0).",
    );
    sample(&mut out, "redis_failover_is_leader", &[], u8::from(leader));
    header(
        &mut out,
        "redis_failover_monitor_heartbeat_age_seconds",
        "gauge",
        "Seconds since the monitor loop last turned; it turns at least twice a second.",
    );
    let age = metrics.monitor_heartbeat.age().as_secs_f64();
    sample(
        &mut out,
        "redis_failover_monitor_heartbeat_age_seconds",
        &[],
        age,
    );
    header(
        &mut out,
        "redis_failover_build_info",
        "gauge",
        "The version of this daemon; always 1.",
    );
    sample(
        &mut out,
        "redis_failover_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    let mut named: Vec<&'static str> = Vec::new();
    for s in broker {
        if !named.contains(&s.name) {
            named.push(s.name);
            header(&mut out, s.name, s.kind, s.help);
        }
        let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sample(&mut out, s.name, &labels, s.value);
    }
    out
}

fn histogram(out: &mut String, metrics: &Metrics) {
    let name = "redis_failover_check_duration_seconds";
    header(
        out,
        name,
        "histogram",
        "Time from sending ROLE (or starting to connect) to the reply or the timeout.",
    );
    let counts: Vec<u64> = metrics
        .check_buckets
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let mut cumulative = 0;
    for (bound, count) in CHECK_DURATION_BUCKETS.iter().zip(&counts) {
        cumulative += count;
        let le = bound.to_string();
        sample(out, &format!("{name}_bucket"), &[("le", &le)], cumulative);
    }
    let total: u64 = counts.iter().sum();
    sample(out, &format!("{name}_bucket"), &[("le", "+Inf")], total);
    let sum = metrics.check_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
    sample(out, &format!("{name}_sum"), &[], sum);
    sample(out, &format!("{name}_count"), &[], total);
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// HELP text escapes backslash and newline.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{Addr, MasterSpec};
    use crate::broker::{Action, GroupSpec};

    fn state(specs: &str) -> ReplicatedState {
        let mut s = ReplicatedState::default();
        let specs = MasterSpec::parse_list(specs).unwrap();
        s.apply(Action::Add(
            specs.into_iter().map(GroupSpec::from).collect(),
        ))
        .unwrap();
        s
    }

    fn lines_starting<'a>(page: &'a str, prefix: &str) -> Vec<&'a str> {
        page.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn counts_checks_per_group_and_fills_the_histogram() {
        let m = Metrics::new();
        m.on_check("a", Duration::from_micros(800), true);
        m.on_check("a", Duration::from_millis(30), false);
        m.on_check("b", Duration::from_secs(2), false);
        m.on_failover("a", Outcome::Aborted);
        let observed = Observations::default();
        observed.update("a", |o| o.state = WatchState::Ok);
        observed.update("b", |o| o.state = WatchState::Suspect);
        let page = render_text(&m, &state("a=h:1,b=h:2,c=h:3"), &observed, true, &[]);
        for line in [
            "redis_failover_master_up{group=\"a\"} 1",
            "redis_failover_master_up{group=\"b\"} 0",
            "redis_failover_master_info{group=\"c\",addr=\"h:3\"} 1",
            "redis_failover_checks_total{group=\"a\"} 2",
            "redis_failover_check_failures_total{group=\"a\"} 1",
            "redis_failover_checks_total{group=\"c\"} 0",
            "redis_failover_failovers_total{group=\"a\",outcome=\"aborted\"} 1",
            "redis_failover_failovers_total{group=\"a\",outcome=\"succeeded\"} 0",
            "redis_failover_check_duration_seconds_bucket{le=\"0.001\"} 1",
            "redis_failover_check_duration_seconds_bucket{le=\"0.025\"} 1",
            "redis_failover_check_duration_seconds_bucket{le=\"0.05\"} 2",
            "redis_failover_check_duration_seconds_bucket{le=\"1\"} 2",
            "redis_failover_check_duration_seconds_bucket{le=\"+Inf\"} 3",
            "redis_failover_check_duration_seconds_count 3",
            "redis_failover_check_duration_seconds_sum 2.0308",
            "redis_failover_is_leader 1",
        ] {
            assert!(page.lines().any(|l| l == line), "no {line:?} in\n{page}");
        }
        assert!(
            lines_starting(&page, "redis_failover_master_up{group=\"c\"").is_empty(),
            "a group not checked yet has no up sample"
        );
        // Every series has exactly one HELP and one TYPE line.
        let types = lines_starting(&page, "# TYPE ");
        let mut names: Vec<&str> = types.iter().filter_map(|l| l.split(' ').nth(2)).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), types.len());
        assert_eq!(lines_starting(&page, "# HELP ").len(), types.len());
    }

    #[test]
    fn deleted_groups_disappear_and_the_last_failover_shows() {
        let m = Metrics::new();
        m.on_check("gone", Duration::from_millis(1), true);
        let mut s = state("g=h:1");
        // A promotion is applied only with its failover-begin.
        s.apply(Action::FailoverBegin {
            group: "g".into(),
            old_master: Addr::parse("h:1").unwrap(),
            new_master: Addr::parse("h:2").unwrap(),
            replicas: vec![],
            started_at_ms: 1_500,
        })
        .unwrap();
        s.apply(Action::FailoverEnd(FailoverRecord {
            group: "g".into(),
            old_master: Addr::parse("h:1").unwrap(),
            new_master: Some(Addr::parse("h:2").unwrap()),
            started_at_ms: 1_500,
            down_for_ms: 1000,
            duration_ms: 250,
            outcome: Outcome::Succeeded,
            reason: None,
            begun: true,
        }))
        .unwrap();
        let page = render_text(&m, &s, &Observations::default(), false, &[]);
        assert!(!page.contains("gone"), "{page}");
        assert!(page.contains("redis_failover_last_failover_duration_seconds{group=\"g\"} 0.25"));
        assert!(page.contains("redis_failover_last_failover_timestamp_seconds{group=\"g\"} 1.5"));
        assert!(page.contains("redis_failover_master_info{group=\"g\",addr=\"h:2\"} 1"));
        assert!(page.contains("redis_failover_is_leader 0"));
    }

    #[test]
    fn broker_samples_get_one_header_each() {
        let samples = [
            BrokerSample {
                name: "redis_failover_raft_term",
                help: "Raft term.",
                kind: "gauge",
                labels: vec![],
                value: 7.0,
            },
            BrokerSample {
                name: "redis_failover_raft_peer_up",
                help: "Peer reachable.",
                kind: "gauge",
                labels: vec![("peer", "a\"b".into())],
                value: 1.0,
            },
        ];
        let page = render_text(
            &Metrics::new(),
            &ReplicatedState::default(),
            &Observations::default(),
            true,
            &samples,
        );
        assert!(
            page.contains("# TYPE redis_failover_raft_term gauge\nredis_failover_raft_term 7\n")
        );
        assert!(page.contains("redis_failover_raft_peer_up{peer=\"a\\\"b\"} 1\n"));
    }

    #[test]
    fn heartbeat_age_grows_until_the_next_beat() {
        let h = Heartbeat::new();
        h.beat();
        assert!(h.age() < Duration::from_secs(1));
    }
}
