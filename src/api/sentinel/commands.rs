//! The commands the Sentinel port answers, with Sentinel's reply shapes.
//!
//! The data comes from the daemon's own view: the replicated groups (every daemon of a
//! cluster has them, so every daemon answers `get-master-addr-by-name` correctly), and
//! what this daemon observed (replicas, down state: only the acting daemon checks).
//! Field names, their order and the "every number is a bulk string" rule follow
//! `sentinel.c`, so clients that read `flags`, `ip`, `port` or `num-other-sentinels`
//! (redis-py, Jedis, Lettuce, go-redis, redis-rs) work unchanged.

use super::protocol::Out;
use crate::api::auth::ApiAccess;
use crate::daemon::Daemon;
use crate::observe::status::{GroupStatus, ReplicaStatus, WatchState};
use std::sync::Arc;
use std::time::Instant;

/// What the commands need besides the daemon.
pub struct Context {
    pub daemon: Arc<Daemon>,
    /// Who may use the port (`api_token`, sent with `AUTH`).
    pub access: ApiAccess,
    /// A 40-hex-digit run id, as Sentinel's.
    pub run_id: String,
    pub port: u16,
    pub started: Instant,
    pub down_after_ms: u64,
}

impl Context {
    /// Other daemons of the cluster that have a Sentinel port: (id, ip, port).
    fn other_sentinels(&self) -> Vec<(String, String, String)> {
        self.daemon
            .broker
            .cluster()
            .peers
            .into_iter()
            .filter(|p| !p.this_node)
            .filter_map(|p| {
                let addr = crate::address::Addr::parse(p.sentinel_addr.as_deref()?).ok()?;
                Some((p.id, addr.host, addr.port.to_string()))
            })
            .collect()
    }

    fn quorum(&self) -> usize {
        let members = self.daemon.broker.cluster().peers.len().max(1);
        members / 2 + 1
    }

    fn group(&self, name: &str) -> Option<GroupStatus> {
        self.daemon.groups().into_iter().find(|g| g.name == name)
    }
}

/// Answers one `SENTINEL <subcommand> ...`.
pub fn sentinel(ctx: &Context, args: &[String], out: &mut Out) {
    let Some(sub) = args.first() else {
        out.error("ERR wrong number of arguments for 'sentinel' command");
        return;
    };
    let sub = sub.to_ascii_lowercase();
    let name = args.get(1).map(String::as_str);
    match (sub.as_str(), name) {
        ("masters", _) => {
            let groups = ctx.daemon.groups();
            out.array(groups.len());
            for g in &groups {
                out.fields(&master_fields(ctx, g));
            }
        }
        ("myid", _) => {
            out.bulk(&ctx.run_id);
        }
        ("is-master-down-by-addr", _) => {
            // Daemons agree through their broker, never through this vote.
            out.array(3).int(0).bulk("*").int(0);
        }
        ("monitor" | "remove" | "set" | "reset" | "failover" | "flushconfig" | "config", _) => {
            out.error(&format!(
                "ERR SENTINEL {sub} is not supported here: change groups with the HTTP API (POST/PUT/DELETE /master)"
            ));
        }
        (
            "get-master-addr-by-name" | "master" | "replicas" | "slaves" | "sentinels" | "ckquorum",
            Some(name),
        ) => match ctx.group(name) {
            Some(group) => about_group(ctx, &sub, &group, out),
            None if sub == "get-master-addr-by-name" => {
                out.null_array();
            }
            None => {
                out.error("ERR No such master with that name");
            }
        },
        (
            "get-master-addr-by-name" | "master" | "replicas" | "slaves" | "sentinels" | "ckquorum",
            None,
        ) => {
            out.error(&format!(
                "ERR wrong number of arguments for 'sentinel|{sub}' command"
            ));
        }
        _ => {
            out.error(&format!(
                "ERR unknown subcommand '{sub}'. Try SENTINEL HELP."
            ));
        }
    }
}

/// The subcommands about one monitored group.
fn about_group(ctx: &Context, sub: &str, g: &GroupStatus, out: &mut Out) {
    match sub {
        "get-master-addr-by-name" => {
            out.bulks(&[g.master.host.clone(), g.master.port.to_string()]);
        }
        "master" => {
            out.fields(&master_fields(ctx, g));
        }
        "replicas" | "slaves" => {
            out.array(g.replicas.len());
            for r in &g.replicas {
                out.fields(&replica_fields(ctx, g, r));
            }
        }
        "sentinels" => {
            let others = ctx.other_sentinels();
            out.array(others.len());
            for (id, ip, port) in others {
                let mut fields = instance_fields(ctx, &id, &ip, &port, &id, "sentinel");
                fields.extend([
                    ("last-hello-message", "0".into()),
                    ("voted-leader", "?".into()),
                    ("voted-leader-epoch", "0".into()),
                ]);
                out.fields(&fields);
            }
        }
        _ => ckquorum(ctx, out),
    }
}

/// `SENTINEL CKQUORUM`: whether the cluster can authorize a failover now.
fn ckquorum(ctx: &Context, out: &mut Out) {
    let cluster = ctx.daemon.broker.cluster();
    let usable = cluster.peers.len().max(1);
    if cluster.acting || cluster.leader.is_some() {
        out.simple(&format!(
            "OK {usable} usable Sentinels. Quorum and failover authorization can be reached"
        ));
    } else {
        out.error(&format!(
            "NOQUORUM {usable} usable Sentinels, but no daemon of the cluster leads: failover is not possible now"
        ));
    }
}

/// Sentinel's `flags` for a master as this daemon sees it.
fn master_flags(g: &GroupStatus) -> String {
    let mut flags = match g.state {
        WatchState::Down | WatchState::FailingOver => "s_down,o_down,master",
        WatchState::NotMaster => "s_down,master",
        _ => "master",
    }
    .to_string();
    if g.disconnected {
        flags.push_str(",disconnected");
    }
    flags
}

fn ms_since(unix_ms: Option<u64>) -> String {
    unix_ms
        .map(|at| crate::clock::now_ms().saturating_sub(at))
        .unwrap_or(0)
        .to_string()
}

/// The fields every instance (master, replica, sentinel) starts with, in `sentinel.c`'s
/// order, up to `down-after-milliseconds`.
fn instance_fields(
    ctx: &Context,
    name: &str,
    ip: &str,
    port: &str,
    run_id: &str,
    flags: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("name", name.into()),
        ("ip", ip.into()),
        ("port", port.into()),
        ("runid", run_id.into()),
        ("flags", flags.into()),
        ("link-pending-commands", "0".into()),
        ("link-refcount", "1".into()),
        ("last-ping-sent", "0".into()),
        ("last-ok-ping-reply", "0".into()),
        ("last-ping-reply", "0".into()),
        ("down-after-milliseconds", ctx.down_after_ms.to_string()),
    ]
}

fn master_fields(ctx: &Context, g: &GroupStatus) -> Vec<(&'static str, String)> {
    let port = g.master.port.to_string();
    let flags = master_flags(g);
    let mut fields = instance_fields(ctx, &g.name, &g.master.host, &port, "", &flags);
    if let Some(ok) = fields.iter_mut().find(|(k, _)| *k == "last-ok-ping-reply") {
        ok.1 = ms_since(g.down_since_ms);
    }
    if matches!(g.state, WatchState::Down | WatchState::FailingOver) {
        // Before down-after-milliseconds, as Sentinel orders them.
        let at = fields.len() - 1;
        fields.insert(at, ("o-down-time", ms_since(g.down_since_ms)));
        fields.insert(at, ("s-down-time", ms_since(g.down_since_ms)));
    }
    fields.extend([
        ("info-refresh", "0".into()),
        ("role-reported", "master".into()),
        ("role-reported-time", "0".into()),
        ("config-epoch", "0".into()),
        ("num-slaves", g.replicas.len().to_string()),
        (
            "num-other-sentinels",
            ctx.other_sentinels().len().to_string(),
        ),
        ("quorum", ctx.quorum().to_string()),
        ("failover-timeout", "180000".into()),
        ("parallel-syncs", "1".into()),
    ]);
    fields
}

fn replica_fields(
    ctx: &Context,
    g: &GroupStatus,
    r: &ReplicaStatus,
) -> Vec<(&'static str, String)> {
    let (flags, link) = match r.link {
        "up" => ("slave", "ok"),
        "down" => ("slave", "err"),
        _ => ("s_down,slave", "err"),
    };
    let name = r.addr.to_string();
    let port = r.addr.port.to_string();
    let mut fields = instance_fields(ctx, &name, &r.addr.host, &port, "", flags);
    fields.extend([
        ("info-refresh", "0".into()),
        ("role-reported", "slave".into()),
        ("role-reported-time", "0".into()),
        ("master-link-down-time", "0".into()),
        ("master-link-status", link.into()),
        ("master-host", g.master.host.clone()),
        ("master-port", g.master.port.to_string()),
        ("slave-priority", r.priority.unwrap_or(100).to_string()),
        ("slave-repl-offset", r.offset.to_string()),
        ("replica-announced", "1".into()),
    ]);
    fields
}

/// `INFO [section]`: the server and Sentinel sections.
pub fn info(ctx: &Context, args: &[String], out: &mut Out) {
    let section = args.first().map(|s| s.to_ascii_lowercase());
    let wants = |name: &str| {
        section
            .as_deref()
            .is_none_or(|s| s == name || s == "all" || s == "default" || s == "everything")
    };
    let mut text = String::new();
    if wants("server") {
        text.push_str(&format!(
            "# Server\r\nredis_version:7.0.0\r\nredis_mode:sentinel\r\nserver_name:redis-failover\r\nredis_failover_version:{}\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            ctx.run_id,
            ctx.port,
            ctx.started.elapsed().as_secs()
        ));
    }
    if wants("sentinel") {
        let groups = ctx.daemon.groups();
        let sentinels = ctx.other_sentinels().len() + 1;
        text.push_str(&format!(
            "# Sentinel\r\nsentinel_masters:{}\r\nsentinel_tilt:0\r\nsentinel_tilt_since_seconds:-1\r\nsentinel_running_scripts:0\r\nsentinel_scripts_queue_length:0\r\nsentinel_simulate_failure_flags:0\r\n",
            groups.len()
        ));
        for (i, g) in groups.iter().enumerate() {
            let status = match g.state {
                WatchState::Down | WatchState::FailingOver => "odown",
                WatchState::NotMaster => "sdown",
                _ => "ok",
            };
            text.push_str(&format!(
                "master{i}:name={},status={status},address={},slaves={},sentinels={sentinels}\r\n",
                g.name,
                g.master,
                g.replicas.len()
            ));
        }
    }
    out.bulk(&text);
}

/// `ROLE` on a Sentinel: `["sentinel", [master names]]`.
pub fn role(ctx: &Context, out: &mut Out) {
    let names: Vec<String> = ctx.daemon.groups().into_iter().map(|g| g.name).collect();
    out.array(2).bulk("sentinel").bulks(&names);
}
