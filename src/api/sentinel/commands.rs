//! The commands the Sentinel port answers, with Sentinel's reply shapes.
//!
//! The data comes from the daemon's own view: the replicated groups (every daemon of a
//! cluster has them, so every daemon answers `get-master-addr-by-name` correctly), and
//! what this daemon observed (replicas, down state: only the acting daemon checks).
//! Field names, their order and the "every number is a bulk string" rule follow
//! `sentinel.c` (see `instances.rs` for the fields and flags), so clients that read
//! `flags`, `ip`, `port` or `num-other-sentinels` (redis-py, node-redis, Jedis, Lettuce,
//! go-redis, redis-rs) work unchanged. Argument counts and error replies follow
//! `sentinelCommand` too.

use super::instances::{
    View, master_fields, objectively_down, replica_count, replica_list, sentinel_list,
    subjectively_down,
};
use super::protocol::Out;
use crate::api::auth::ApiAccess;
use crate::daemon::Daemon;
use crate::observe::status::GroupStatus;
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
    /// The `quorum` setting (0: a majority of the cluster).
    pub quorum: usize,
}

/// The subcommands about one group: `SENTINEL <sub> <group>`.
const ABOUT_GROUP: [&str; 6] = [
    "get-master-addr-by-name",
    "master",
    "replicas",
    "slaves",
    "sentinels",
    "ckquorum",
];

/// The subcommands that would change Sentinel's configuration.
const REFUSED: [&str; 7] = [
    "monitor",
    "remove",
    "set",
    "reset",
    "failover",
    "flushconfig",
    "config",
];

/// Answers one `SENTINEL <subcommand> ...`.
pub fn sentinel(ctx: &Context, args: &[String], out: &mut Out) {
    let Some(typed) = args.first() else {
        out.error("ERR wrong number of arguments for 'sentinel' command");
        return;
    };
    let sub = typed.to_ascii_lowercase();
    let argc = args.len();
    match sub.as_str() {
        "masters" if argc == 1 => {
            let view = View::new(ctx);
            out.array(view.groups.len());
            for g in &view.groups {
                out.fields(&master_fields(&view, g));
            }
        }
        "myid" if argc == 1 => {
            out.bulk(&ctx.run_id);
        }
        "is-master-down-by-addr" if argc == 5 => is_master_down(ctx, &args[1..], out),
        s if ABOUT_GROUP.contains(&s) && argc == 2 => {
            let view = View::new(ctx);
            match view.group(&args[1]) {
                Some(group) => about_group(&view, s, group, out),
                None if s == "get-master-addr-by-name" => {
                    out.null_array();
                }
                None => {
                    out.error("ERR No such master with that name");
                }
            }
        }
        s if ABOUT_GROUP.contains(&s)
            || ["masters", "myid", "is-master-down-by-addr"].contains(&s) =>
        {
            out.error(&format!(
                "ERR wrong number of arguments for 'sentinel|{sub}' command"
            ));
        }
        s if REFUSED.contains(&s) => {
            out.error(&format!(
                "ERR SENTINEL {sub} is not supported here: change groups with the HTTP API (POST/PUT/DELETE /master)"
            ));
        }
        _ => {
            out.error(&format!(
                "ERR unknown subcommand '{typed}'. Try SENTINEL HELP."
            ));
        }
    }
}

/// The subcommands about one monitored group.
fn about_group(view: &View, sub: &str, g: &GroupStatus, out: &mut Out) {
    match sub {
        "get-master-addr-by-name" => {
            out.bulks(&[g.master.host.clone(), g.master.port.to_string()]);
        }
        "master" => {
            out.fields(&master_fields(view, g));
        }
        "replicas" | "slaves" => {
            let replicas = replica_list(view, g);
            out.array(replicas.len());
            for fields in &replicas {
                out.fields(fields);
            }
        }
        "sentinels" => {
            let sentinels = sentinel_list(view);
            out.array(sentinels.len());
            for fields in &sentinels {
                out.fields(fields);
            }
        }
        _ => ckquorum(view, out),
    }
}

/// `SENTINEL CKQUORUM`: whether enough daemons report fresh views to reach the
/// quorum, and whether a daemon leads (may authorize a failover), with Sentinel's
/// texts. Usable daemons are those whose view of the masters is fresh.
fn ckquorum(view: &View, out: &mut Out) {
    let usable = view.daemons_reporting;
    let quorum = usable >= view.quorum();
    let leads = view.cluster.acting || view.cluster.leader.is_some();
    if quorum && leads {
        out.simple(&format!(
            "OK {usable} usable Sentinels. Quorum and failover authorization can be reached"
        ));
        return;
    }
    let mut reason = format!("NOQUORUM {usable} usable Sentinels. ");
    if !quorum {
        reason.push_str(
            "Not enough available Sentinels to reach the specified quorum for this master",
        );
    }
    if !leads {
        if !quorum {
            reason.push_str(". ");
        }
        reason.push_str(
            "Not enough available Sentinels to reach the majority and authorize a failover",
        );
    }
    out.error(&reason);
}

/// `SENTINEL IS-MASTER-DOWN-BY-ADDR <ip> <port> <epoch> <runid>`: whether this daemon
/// sees the master at that address down. Daemons agree through their broker, so this
/// one never votes: the leader is always `*`, with epoch 0.
fn is_master_down(ctx: &Context, args: &[String], out: &mut Out) {
    let (Ok(port), Ok(_epoch)) = (args[1].parse::<i64>(), args[2].parse::<i64>()) else {
        out.error("ERR value is not an integer or out of range");
        return;
    };
    let view = View::new(ctx);
    let down = view.groups.iter().any(|g| {
        g.master.host == args[0] && i64::from(g.master.port) == port && subjectively_down(g)
    });
    out.array(3).int(i64::from(down)).bulk("*").int(0);
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
        text.push_str(&sentinel_section(&View::new(ctx)));
    }
    out.bulk(&text);
}

/// INFO's `# Sentinel` section, one `masterN:` line per group.
fn sentinel_section(view: &View) -> String {
    let sentinels = view.other_sentinels().len() + 1;
    let mut text = format!(
        "# Sentinel\r\nsentinel_masters:{}\r\nsentinel_tilt:{}\r\nsentinel_tilt_since_seconds:{}\r\nsentinel_running_scripts:0\r\nsentinel_scripts_queue_length:0\r\nsentinel_simulate_failure_flags:0\r\n",
        view.groups.len(),
        u8::from(view.tilt_since_ms.is_some()),
        view.tilt_seconds()
    );
    for (i, g) in view.groups.iter().enumerate() {
        let status = if objectively_down(view, g) {
            "odown"
        } else if subjectively_down(g) {
            "sdown"
        } else {
            "ok"
        };
        text.push_str(&format!(
            "master{i}:name={},status={status},address={},slaves={},sentinels={sentinels}\r\n",
            g.name,
            g.master,
            replica_count(view, g)
        ));
    }
    text
}

/// `ROLE` on a Sentinel: `["sentinel", [master names]]`.
pub fn role(ctx: &Context, out: &mut Out) {
    let names: Vec<String> = ctx.daemon.broker.state().groups.keys().cloned().collect();
    out.array(2).bulk("sentinel").bulks(&names);
}
