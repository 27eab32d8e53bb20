//! `GET /metrics`: what the daemon counts and knows, in Prometheus text format 0.0.4.
//!
//! The counters come from [`Metrics`] (kept by the monitor and the failover worker);
//! everything else is read at scrape time from what the daemon already knows: the
//! groups, their masters and last failover from the broker's replicated state, whether
//! each master answers from the observations, and leadership from the broker. Series:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `redis_failover_master_up` | gauge | group (1 = the last check succeeded; absent until checked) |
//! | `redis_failover_master_info` | gauge, always 1 | group, addr |
//! | `redis_failover_master_down_votes` | gauge | group (daemons, this one included, that find the master down) |
//! | `redis_failover_checks_total` | counter | group |
//! | `redis_failover_check_failures_total` | counter | group |
//! | `redis_failover_check_duration_seconds` | histogram | none |
//! | `redis_failover_check_lag_seconds` | histogram | none (from due to sent) |
//! | `redis_failover_failovers_total` | counter | group, outcome |
//! | `redis_failover_last_failover_duration_seconds` | gauge | group |
//! | `redis_failover_last_failover_timestamp_seconds` | gauge | group |
//! | `redis_failover_is_leader` | gauge | none |
//! | `redis_failover_daemons_reporting` | gauge | none (daemons whose view of the masters is fresh) |
//! | `redis_failover_tilt` | gauge | none (1 while this daemon is in tilt) |
//! | `redis_failover_tilt_entries_total` | counter | none |
//! | `redis_failover_monitor_heartbeat_age_seconds` | gauge | none |
//! | `redis_failover_thread_heartbeat_age_seconds` | gauge | thread (monitor, checker-N) |
//! | `redis_failover_build_info` | gauge, always 1 | version |
//!
//! The check latency histogram has no group label on purpose: at 10,000 groups, eleven
//! buckets each would be 130,000 series; the per-group counters find a bad group, the
//! histogram shows how checks fare overall. Broker series (Raft term and commit index,
//! ZooKeeper session state) come from [`broker_samples`].

use crate::broker::{Broker, FailoverRecord, ReplicatedState};
use crate::daemon::Daemon;
use crate::observe::metrics::{
    CHECK_DURATION_BUCKETS, CheckHistogram, GroupCounters, Metrics, OUTCOMES,
};
use crate::observe::status::{Observations, WatchState};
use std::collections::HashMap;
use std::fmt::Write;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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
pub fn render(daemon: &Daemon) -> String {
    let state = daemon.broker.state();
    let acting = daemon.broker.is_acting();
    let broker = broker_samples(daemon.broker.as_ref());
    render_text(&daemon.metrics, &state, &daemon.observed, acting, &broker)
}

/// The page from its parts (separate from [`render`] for tests).
pub fn render_text(
    metrics: &Metrics,
    state: &ReplicatedState,
    observed: &Observations,
    acting: bool,
    broker: &[BrokerSample],
) -> String {
    let mut page = Page {
        out: String::with_capacity(512 + state.groups.len() * 600),
        state,
    };
    page.group_series(metrics, observed);
    page.failover_series();
    page.daemon_series(metrics, acting);
    page.broker_series(broker);
    page.out
}

/// The page being written, with the groups it reports on.
struct Page<'a> {
    out: String,
    state: &'a ReplicatedState,
}

impl Page<'_> {
    /// One sample per group for which `value` has one.
    fn per_group<V: std::fmt::Display>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&str) -> Option<V>,
    ) {
        header(&mut self.out, name, kind, help);
        for group in self.state.groups.keys() {
            if let Some(v) = value(group) {
                sample(&mut self.out, name, &[("group", group)], v);
            }
        }
    }

    /// Whether each master answers, where it is, and how its checks went.
    fn group_series(&mut self, metrics: &Metrics, observed: &Observations) {
        let (up, votes): (HashMap<String, bool>, HashMap<String, u32>) = {
            let observed = observed.lock();
            let votes = self
                .state
                .groups
                .keys()
                .filter_map(|name| Some((name.clone(), observed.get(name)?.down_votes)))
                .collect();
            let up = self
                .state
                .groups
                .keys()
                .filter_map(|name| {
                    let up = observed.get(name).and_then(|o| match o.state {
                        WatchState::Ok | WatchState::SwitchingOver => Some(true),
                        // Not checked (yet, or by this daemon): no sample at all.
                        WatchState::Starting | WatchState::Follower => None,
                        _ => Some(false),
                    })?;
                    Some((name.clone(), up))
                })
                .collect();
            (up, votes)
        };
        self.per_group(
            "redis_failover_master_up",
            "gauge",
            "Whether the group's master answered its last check with role master (1) or not (0).",
            |name| up.get(name).map(|is_up| u8::from(*is_up)),
        );
        let now_ms = crate::clock::now_ms();
        let all = self.state.paused_all.is_some_and(|p| p.active(now_ms));
        let paused: HashMap<String, bool> = self
            .state
            .groups
            .values()
            .map(|g| {
                let own = g.paused.is_some_and(|p| p.active(now_ms));
                (g.name.clone(), all || own)
            })
            .collect();
        self.per_group(
            "redis_failover_paused",
            "gauge",
            "Whether automatic failover of the group is paused for maintenance (1) or not (0).",
            |name| paused.get(name).map(|p| u8::from(*p)),
        );
        self.per_group(
            "redis_failover_master_down_votes",
            "gauge",
            "Daemons of the cluster, this one included, that find the group's master down now.",
            |name| votes.get(name).copied(),
        );
        header(
            &mut self.out,
            "redis_failover_master_info",
            "gauge",
            "The group's current master address; always 1.",
        );
        for group in self.state.groups.values() {
            let addr = group.master.to_string();
            sample(
                &mut self.out,
                "redis_failover_master_info",
                &[("group", &group.name), ("addr", &addr)],
                1,
            );
        }
        let counters = metrics.counters_for(self.state);
        let zero = GroupCounters::default();
        let of = |name: &str| counters.get(name).unwrap_or(&zero).clone();
        self.per_group(
            "redis_failover_checks_total",
            "counter",
            "Master checks (ROLE) completed by this daemon.",
            |name| Some(of(name).checks),
        );
        self.per_group(
            "redis_failover_check_failures_total",
            "counter",
            "Master checks that failed: no connection, a timeout, garbage, or a role other than master.",
            |name| Some(of(name).check_failures),
        );
        histogram(
            &mut self.out,
            "redis_failover_check_duration_seconds",
            "Time from sending ROLE (or starting to connect) to the reply or the timeout.",
            metrics.check_histogram(),
        );
        histogram(
            &mut self.out,
            "redis_failover_check_lag_seconds",
            "Time from when a check was due to when it was sent: how far checks run late.",
            metrics.lag_histogram(),
        );
        header(
            &mut self.out,
            "redis_failover_failovers_total",
            "counter",
            "Failover attempts run by this daemon, by outcome (succeeded, aborted, failed).",
        );
        for name in self.state.groups.keys() {
            for (slot, (_, outcome)) in OUTCOMES.iter().enumerate() {
                sample(
                    &mut self.out,
                    "redis_failover_failovers_total",
                    &[("group", name), ("outcome", outcome)],
                    of(name).failovers[slot],
                );
            }
        }
    }

    /// When each group's last failover happened and how long it took.
    fn failover_series(&mut self) {
        let mut last: HashMap<&str, &FailoverRecord> = HashMap::new();
        for record in &self.state.history {
            last.insert(record.group.as_str(), record);
        }
        self.per_group(
            "redis_failover_last_failover_duration_seconds",
            "gauge",
            "How long the group's last failover attempt took, whatever its outcome.",
            |name| last.get(name).map(|r| r.duration_ms as f64 / 1000.0),
        );
        self.per_group(
            "redis_failover_last_failover_timestamp_seconds",
            "gauge",
            "Unix time at which the group's last failover attempt began.",
            |name| last.get(name).map(|r| r.started_at_ms as f64 / 1000.0),
        );
    }

    /// Series about this daemon itself.
    fn daemon_series(&mut self, metrics: &Metrics, acting: bool) {
        let out = &mut self.out;
        header(
            out,
            "redis_failover_is_leader",
            "gauge",
            "Whether this daemon leads its cluster and so checks and fails over (1), or not (0).",
        );
        sample(out, "redis_failover_is_leader", &[], u8::from(acting));
        header(
            out,
            "redis_failover_daemons_reporting",
            "gauge",
            "Daemons, this one included, whose view of the masters is fresh: those that can count toward the quorum.",
        );
        sample(
            out,
            "redis_failover_daemons_reporting",
            &[],
            metrics.daemons_reporting(),
        );
        header(
            out,
            "redis_failover_tilt",
            "gauge",
            "Whether this daemon is in tilt (1): its own loops ran late, so it checks on but starts no failover and counts no master down.",
        );
        sample(
            out,
            "redis_failover_tilt",
            &[],
            u8::from(metrics.tilt_since_ms().is_some()),
        );
        header(
            out,
            "redis_failover_tilt_entries_total",
            "counter",
            "Times this daemon entered tilt.",
        );
        sample(
            out,
            "redis_failover_tilt_entries_total",
            &[],
            metrics.tilt_entries(),
        );
        header(
            out,
            "redis_failover_monitor_heartbeat_age_seconds",
            "gauge",
            "Seconds since the monitor loop last turned; it turns at least twice a second.",
        );
        let age = metrics.monitor_heartbeat().age().as_secs_f64();
        sample(
            out,
            "redis_failover_monitor_heartbeat_age_seconds",
            &[],
            age,
        );
        header(
            out,
            "redis_failover_thread_heartbeat_age_seconds",
            "gauge",
            "Seconds since each thread whose loop must keep turning (monitor, checkers) last turned.",
        );
        for (thread, age) in metrics.heartbeat_ages() {
            let labels = [("thread", thread.as_str())];
            let age = age.as_secs_f64();
            sample(
                out,
                "redis_failover_thread_heartbeat_age_seconds",
                &labels,
                age,
            );
        }
        header(
            out,
            "redis_failover_build_info",
            "gauge",
            "The version of this daemon; always 1.",
        );
        let version = env!("CARGO_PKG_VERSION");
        sample(out, "redis_failover_build_info", &[("version", version)], 1);
    }

    /// The broker's own series, one header per name.
    fn broker_series(&mut self, broker: &[BrokerSample]) {
        let mut named: Vec<&'static str> = Vec::new();
        for s in broker {
            if !named.contains(&s.name) {
                named.push(s.name);
                header(&mut self.out, s.name, s.kind, s.help);
            }
            let labels: Vec<(&str, &str)> =
                s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            sample(&mut self.out, s.name, &labels, s.value);
        }
    }
}

fn histogram(out: &mut String, name: &str, help: &str, histogram: CheckHistogram) {
    header(out, name, "histogram", help);
    let mut cumulative = 0;
    for (bound, count) in CHECK_DURATION_BUCKETS.iter().zip(&histogram.counts) {
        cumulative += count;
        let le = bound.to_string();
        sample(out, &format!("{name}_bucket"), &[("le", &le)], cumulative);
    }
    let total: u64 = histogram.counts.iter().sum();
    sample(out, &format!("{name}_bucket"), &[("le", "+Inf")], total);
    sample(out, &format!("{name}_sum"), &[], histogram.sum_secs);
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
    use crate::broker::{Action, GroupSpec, Outcome};
    use crate::observe::metrics::Metrics;
    use std::time::Duration;

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
            passed_over: vec![],
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
            passed_over: vec![],
            count: 1,
            first_started_at_ms: None,
            kind: Default::default(),
            steps: Vec::new(),
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
}
