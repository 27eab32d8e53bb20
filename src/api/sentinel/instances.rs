//! The instances that `SENTINEL masters / master / replicas / sentinels` describe, as
//! Sentinel describes them (`addReplySentinelRedisInstance` in `sentinel.c`): the same
//! fields in the same order, every number a bulk string, and each field with Sentinel's
//! meaning as far as this daemon can know it.
//!
//! The `flags` words:
//!
//! - `disconnected`: this daemon's link to the master is down: the server closed it, or
//!   the last check could not connect or get an answer. It is set within milliseconds of
//!   a closed connection, as Sentinel sets it.
//! - `s_down`: this daemon calls the master down ([`subjectively_down`]): its down
//!   detector saw no successful check for `max_down_time` (state `down` or
//!   `failing_over`), or the master says it is a replica (state `not_master`), which is
//!   also Sentinel's SDOWN.
//! - `o_down`: the cluster agrees the master is down ([`objectively_down`]): enough
//!   daemons find it down, or the failover has begun.
//! - `failover_in_progress`: a failover or a planned switchover of the group is under
//!   way; a switchover, which a user asked for as with `SENTINEL FAILOVER`, adds
//!   `force_failover`. The replica being promoted is `promoted`.
//! - A replica that the replicated state knows but that the master does not list (a
//!   dead old master after a failover, say) is `s_down,slave,disconnected`, as Sentinel
//!   lists it until it returns.
//!
//! Clients read these: node-redis refuses a master flagged `s_down`, `disconnected` or
//! `failover_in_progress` and asks again every second; redis-py and redis-rs refuse
//! `s_down` and `o_down`; go-redis and node-redis drop replicas flagged `s_down`,
//! `o_down` or `disconnected`.
//!
//! Each command reads the daemon once, into a [`View`]: the replicated state, this
//! daemon's observations joined with it, and the cluster.

use super::commands::Context;
use crate::address::Addr;
use crate::broker::{Action, ClusterStatus, Outcome, ReplicatedState};
use crate::clock::{instant_to_unix_ms, now_ms};
use crate::daemon::group_statuses;
use crate::observe::status::{GroupStatus, ReplicaStatus, WatchState};

/// A field list: names and values, in Sentinel's order.
pub type Fields = Vec<(&'static str, String)>;

/// What one command sees of the daemon.
pub struct View {
    pub groups: Vec<GroupStatus>,
    state: std::sync::Arc<ReplicatedState>,
    pub cluster: ClusterStatus,
    now_ms: u64,
    /// When the Sentinel port started (Unix ms).
    started_ms: u64,
    down_after_ms: u64,
    quorum: usize,
    /// Daemons, this one included, whose view of the masters is fresh.
    pub daemons_reporting: usize,
    /// When this daemon's tilt began (Unix ms), while it is in tilt.
    pub tilt_since_ms: Option<u64>,
}

/// Another daemon of the cluster, as `SENTINEL sentinels` lists it.
pub struct OtherSentinel {
    pub id: String,
    pub ip: String,
    pub port: u16,
}

impl View {
    pub fn new(ctx: &Context) -> View {
        let state = ctx.daemon.broker.state();
        let cluster = ctx.daemon.broker.cluster();
        let tilt_since_ms = ctx.daemon.metrics.tilt_since_ms();
        View {
            groups: group_statuses(
                &state,
                &ctx.daemon.observed,
                tilt_since_ms.is_some(),
                (ctx.daemon.failover_block, crate::clock::now_ms()),
            ),
            tilt_since_ms,
            state,
            quorum: cluster.quorum(ctx.quorum),
            daemons_reporting: ctx.daemon.metrics.daemons_reporting(),
            cluster,
            now_ms: now_ms(),
            started_ms: instant_to_unix_ms(ctx.started),
            down_after_ms: ctx.down_after_ms,
        }
    }

    /// `sentinel_tilt_since_seconds`: how long this daemon has been in tilt, -1 when not.
    pub fn tilt_seconds(&self) -> i64 {
        self.tilt_since_ms.map_or(-1, |since| {
            i64::try_from(self.now_ms.saturating_sub(since) / 1000).unwrap_or(i64::MAX)
        })
    }

    pub fn group(&self, name: &str) -> Option<&GroupStatus> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Other daemons of the cluster that have a Sentinel port.
    pub fn other_sentinels(&self) -> Vec<OtherSentinel> {
        self.cluster
            .peers
            .iter()
            .filter(|p| !p.this_node)
            .filter_map(|p| {
                let addr = Addr::parse(p.sentinel_addr.as_deref()?).ok()?;
                Some(OtherSentinel {
                    id: p.id.clone(),
                    ip: addr.host,
                    port: addr.port,
                })
            })
            .collect()
    }

    /// The daemons that must agree: the `quorum` setting, by default a majority of
    /// the cluster (1 when standalone).
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// Milliseconds from `at` (Unix ms) to now; 0 for the future.
    fn since(&self, at: u64) -> String {
        self.now_ms.saturating_sub(at).to_string()
    }

    /// When the group's master became its master, as far as this daemon knows: its
    /// last successful failover, or the start of this port.
    fn master_since(&self, g: &GroupStatus) -> u64 {
        let failover = self
            .state
            .last_failover(&g.name)
            .filter(|r| r.outcome == Outcome::Succeeded && r.new_master.as_ref() == Some(&g.master))
            .map(|r| r.started_at_ms.saturating_add(r.duration_ms));
        failover.unwrap_or(0).max(self.started_ms)
    }

    /// Whether this daemon's observation of the group is still about the master before
    /// the current one: its checks began to fail before the failover that installed the
    /// current master (for the moment between that failover's record and the monitor
    /// watching the new master).
    fn observed_old_master(&self, g: &GroupStatus) -> bool {
        let installed = self
            .state
            .last_failover(&g.name)
            .filter(|r| r.outcome == Outcome::Succeeded && r.new_master.as_ref() == Some(&g.master))
            .map(|r| r.started_at_ms);
        matches!((g.down_since_ms, installed), (Some(failing), Some(at)) if failing <= at)
    }

    /// The replica a failover (or switchover) of the group under way promotes.
    fn promoting(&self, group: &str) -> Option<&Addr> {
        match self.state.in_progress.get(group) {
            Some(Action::FailoverBegin { new_master, .. }) => Some(new_master),
            _ => None,
        }
    }
}

/// The down detector called the master down: no successful check for `max_down_time`.
fn detector_down(g: &GroupStatus) -> bool {
    matches!(g.state, WatchState::Down | WatchState::FailingOver)
}

/// Sentinel's `s_down`: this daemon sees the master down, by its down detector's
/// verdict, or because the master says it is a replica.
pub fn subjectively_down(g: &GroupStatus) -> bool {
    detector_down(g) || g.state == WatchState::NotMaster
}

/// Sentinel's `o_down`: enough daemons agree that the master is down to fail it over.
///
/// Every daemon checks every master and the daemons share which masters they find
/// down (`monitor/core/quorum.rs`); `down_votes` counts those that do, this one included.
/// As in Sentinel, it takes this daemon's own `s_down` verdict and [`View::quorum`]
/// votes, or a failover under way, which the acting daemon starts only once the
/// quorum agrees. A master that says it is a replica is `s_down` only: no failover
/// follows.
pub fn objectively_down(view: &View, g: &GroupStatus) -> bool {
    g.state == WatchState::FailingOver
        || (detector_down(g) && g.down_votes as usize >= view.quorum())
}

/// When the master last answered a check (Unix ms), as Sentinel's
/// `last-ok-ping-reply` counts it. While the group is `ok` its latest check succeeded:
/// now, within one check interval (healthy checks are not recorded one by one).
fn last_ok(view: &View, g: &GroupStatus) -> Option<u64> {
    if g.state == WatchState::Ok {
        Some(view.now_ms)
    } else {
        g.last_ok_ms
    }
}

/// What kind of instance, for the `flags` word and the fields that follow.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Master,
    Replica,
    Sentinel,
}

/// One instance's state, from which its flags and link fields follow.
struct Instance<'a> {
    name: String,
    ip: &'a str,
    port: u16,
    runid: &'a str,
    kind: Kind,
    /// Since when it is `s_down` / `o_down` (Unix ms).
    s_down_since: Option<u64>,
    o_down_since: Option<u64>,
    disconnected: bool,
    /// `failover-state`, when a failover is in progress; and whether a user forced it.
    failover: Option<(&'static str, bool)>,
    promoted: bool,
    /// Since when a check has gone unanswered (Unix ms).
    unanswered_since: Option<u64>,
    /// The last successful check (Unix ms).
    last_ok: Option<u64>,
}

impl Instance<'_> {
    /// The `flags` words, in `sentinel.c`'s order.
    fn flags(&self) -> String {
        let failover = self.failover.is_some();
        let forced = self.failover.is_some_and(|(_, forced)| forced);
        [
            (self.s_down_since.is_some(), "s_down"),
            (self.o_down_since.is_some(), "o_down"),
            (self.kind == Kind::Master, "master"),
            (self.kind == Kind::Replica, "slave"),
            (self.kind == Kind::Sentinel, "sentinel"),
            (self.disconnected, "disconnected"),
            (failover, "failover_in_progress"),
            (self.promoted, "promoted"),
            (forced, "force_failover"),
        ]
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, word)| *word)
        .collect::<Vec<_>>()
        .join(",")
    }

    /// The fields every instance starts with, up to `down-after-milliseconds`.
    fn fields(&self, view: &View) -> Fields {
        let mut fields: Fields = vec![
            ("name", self.name.clone()),
            ("ip", self.ip.to_string()),
            ("port", self.port.to_string()),
            ("runid", self.runid.to_string()),
            ("flags", self.flags()),
            ("link-pending-commands", "0".into()),
            ("link-refcount", "1".into()),
        ];
        if let Some((state, _)) = self.failover {
            fields.push(("failover-state", state.into()));
        }
        // Never answered: since this port started, as Sentinel counts from the
        // instance's creation.
        let ok = view.since(self.last_ok.unwrap_or(view.started_ms));
        fields.extend([
            (
                "last-ping-sent",
                self.unanswered_since
                    .map_or_else(|| "0".into(), |at| view.since(at)),
            ),
            ("last-ok-ping-reply", ok.clone()),
            ("last-ping-reply", ok),
        ]);
        if let Some(at) = self.s_down_since {
            fields.push(("s-down-time", view.since(at)));
        }
        if let Some(at) = self.o_down_since {
            fields.push(("o-down-time", view.since(at)));
        }
        fields.push(("down-after-milliseconds", view.down_after_ms.to_string()));
        fields
    }
}

/// `SENTINEL master <group>`: the group's master.
pub fn master_fields(view: &View, g: &GroupStatus) -> Fields {
    if view.observed_old_master(g) {
        // Nothing is known of the new master yet: not its predecessor's down state.
        let fresh = GroupStatus {
            state: WatchState::Starting,
            disconnected: false,
            down_since_ms: None,
            last_ok_ms: None,
            ..g.clone()
        };
        return master_fields(view, &fresh);
    }
    // The detector calls a master down `down_after` after its failures began.
    let down_since = g
        .down_since_ms
        .map_or(view.now_ms, |at| at.saturating_add(view.down_after_ms))
        .min(view.now_ms);
    let failover = match g.state {
        WatchState::FailingOver => Some((failover_state(view, g), false)),
        WatchState::SwitchingOver => Some((failover_state(view, g), true)),
        _ => None,
    };
    let master = Instance {
        name: g.name.clone(),
        ip: &g.master.host,
        port: g.master.port,
        runid: "",
        kind: Kind::Master,
        s_down_since: subjectively_down(g).then_some(down_since),
        o_down_since: objectively_down(view, g).then_some(down_since),
        disconnected: g.disconnected,
        failover,
        promoted: false,
        unanswered_since: g.down_since_ms,
        last_ok: last_ok(view, g),
    };
    let mut fields = master.fields(view);
    let role = if g.state == WatchState::NotMaster {
        "slave"
    } else {
        "master"
    };
    let others = view.other_sentinels().len();
    fields.extend([
        (
            "info-refresh",
            last_ok(view, g).map_or("0".into(), |at| view.since(at)),
        ),
        ("role-reported", role.into()),
        ("role-reported-time", view.since(view.master_since(g))),
        ("config-epoch", config_epoch(view, g).to_string()),
        ("num-slaves", replica_count(view, g).to_string()),
        ("num-other-sentinels", others.to_string()),
        ("quorum", view.quorum().to_string()),
        ("failover-timeout", "180000".into()),
        ("parallel-syncs", "1".into()),
    ]);
    fields
}

/// Sentinel's `config-epoch`: the group's revision in the replicated state. It grows
/// with every change of the group's master (each failover and switchover, and each
/// change through the HTTP API), and every daemon of a cluster gives the same number.
fn config_epoch(view: &View, g: &GroupStatus) -> u64 {
    view.state
        .groups
        .get(&g.name)
        .map_or(0, |group| group.revision)
}

/// Where a failover stands, in Sentinel's words: a replica is being chosen until the
/// cluster has recorded which one, then it is being promoted.
fn failover_state(view: &View, g: &GroupStatus) -> &'static str {
    if view.promoting(&g.name).is_some() {
        "wait_promotion"
    } else {
        "select_slave"
    }
}

/// One replica entry: what it is, and the fields only replicas have.
struct ReplicaEntry<'a> {
    addr: &'a Addr,
    /// The master lists it; otherwise it is only known from the replicated state.
    listed: Option<&'a ReplicaStatus>,
}

/// The group's replicas: those its master lists, then (when this daemon checks the
/// group) the known ones it does not list.
fn replicas<'a>(view: &'a View, g: &'a GroupStatus) -> Vec<ReplicaEntry<'a>> {
    let mut entries: Vec<ReplicaEntry<'a>> = g
        .replicas
        .iter()
        .map(|r| ReplicaEntry {
            addr: &r.addr,
            listed: Some(r),
        })
        .collect();
    let checked = matches!(
        g.state,
        WatchState::Ok
            | WatchState::Suspect
            | WatchState::Down
            | WatchState::FailingOver
            | WatchState::SwitchingOver
    );
    let known = view
        .state
        .groups
        .get(&g.name)
        .map(|group| &group.known_replicas);
    for addr in known.into_iter().flatten() {
        if checked && *addr != g.master && !entries.iter().any(|e| e.addr == addr) {
            entries.push(ReplicaEntry { addr, listed: None });
        }
    }
    entries
}

/// How many replica entries `SENTINEL replicas <group>` lists (`num-slaves`).
pub fn replica_count(view: &View, g: &GroupStatus) -> usize {
    replicas(view, g).len()
}

/// `SENTINEL replicas <group>`: every replica entry's fields.
pub fn replica_list(view: &View, g: &GroupStatus) -> Vec<Fields> {
    replicas(view, g)
        .iter()
        .map(|entry| replica_fields(view, g, entry))
        .collect()
}

fn replica_fields(view: &View, g: &GroupStatus, entry: &ReplicaEntry<'_>) -> Fields {
    let gone_since = view.master_since(g);
    let replica = Instance {
        name: entry.addr.to_string(),
        ip: &entry.addr.host,
        port: entry.addr.port,
        runid: "",
        kind: Kind::Replica,
        s_down_since: entry.listed.is_none().then_some(gone_since),
        o_down_since: None,
        disconnected: entry.listed.is_none(),
        failover: None,
        promoted: view.promoting(&g.name) == Some(entry.addr),
        unanswered_since: entry.listed.is_none().then_some(gone_since),
        // A listed replica was seen through its master's last answer.
        last_ok: entry.listed.and(last_ok(view, g)),
    };
    let mut fields = replica.fields(view);
    let (link, master_host, master_port, priority, offset) = match entry.listed {
        Some(r) => (
            if r.link == "up" { "ok" } else { "err" },
            g.master.host.clone(),
            g.master.port,
            r.priority.unwrap_or(100),
            r.offset,
        ),
        None => ("err", "?".to_string(), 0, 100, 0),
    };
    fields.extend([
        ("info-refresh", "0".into()),
        ("role-reported", "slave".into()),
        ("role-reported-time", view.since(gone_since)),
        ("master-link-down-time", "0".into()),
        ("master-link-status", link.into()),
        ("master-host", master_host),
        ("master-port", master_port.to_string()),
        ("slave-priority", priority.to_string()),
        ("slave-repl-offset", offset.to_string()),
        ("replica-announced", "1".into()),
    ]);
    fields
}

/// `SENTINEL sentinels <group>`: the other daemons with a Sentinel port.
pub fn sentinel_list(view: &View) -> Vec<Fields> {
    view.other_sentinels()
        .iter()
        .map(|other| {
            let sentinel = Instance {
                name: other.id.clone(),
                ip: &other.ip,
                port: other.port,
                runid: &other.id,
                kind: Kind::Sentinel,
                s_down_since: None,
                o_down_since: None,
                disconnected: false,
                failover: None,
                promoted: false,
                unanswered_since: None,
                last_ok: Some(view.now_ms),
            };
            let mut fields = sentinel.fields(view);
            fields.extend([
                ("last-hello-message", "0".into()),
                ("voted-leader", "?".into()),
                ("voted-leader-epoch", "0".into()),
            ]);
            fields
        })
        .collect()
}

#[cfg(test)]
#[path = "instances_tests.rs"]
mod tests;
