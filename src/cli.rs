//! The command line: the Go original's flags, accepted both Go-style (`-addr=x`,
//! `-addr x`) and GNU-style (`--addr x`, `--addr=x`, `--check-interval`).
//!
//! argh parses `--name value`; [`normalize_args`] rewrites the other spellings into that
//! form first, so a user of the Go version can keep their scripts.

use crate::config::{List, RaftSettings, Settings, ZkSettings};
use crate::error::Result;
use crate::secret::Secret;
use argh::FromArgs;
use std::path::PathBuf;

/// Watches Redis masters and fails them over to their most up-to-date replica.
#[derive(FromArgs, Debug, Default, PartialEq)]
pub struct Args {
    /// config file (TOML, the Go original's keys); flags override it
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// HTTP API listen address (default 127.0.0.1:11000)
    #[argh(option)]
    pub addr: Option<String>,
    /// masters to monitor, comma-separated, each host:port or name=host:port
    #[argh(option)]
    pub masters: Option<String>,
    /// new or existing: whether saved masters are discarded or kept (cluster brokers)
    #[argh(option)]
    pub masters_state: Option<String>,
    /// milliseconds between two checks of a master (default 1000)
    #[argh(option)]
    pub check_interval: Option<i64>,
    /// seconds without a successful check before failover, fractions allowed (default 3)
    #[argh(option)]
    pub max_down_time: Option<f64>,
    /// program run on each failover with Sentinel's client-reconfig-script arguments
    #[argh(option)]
    pub notify_script: Option<String>,
    /// seconds the notify_script may run before it is killed (default 60)
    #[argh(option)]
    pub notify_script_timeout: Option<f64>,
    /// seconds a switchover waits, writes paused, for the replica to catch up (default 5)
    #[argh(option)]
    pub switchover_timeout: Option<f64>,
    /// cluster broker: raft or zk (empty: standalone)
    #[argh(option)]
    pub broker: Option<String>,
    /// raft listen address
    #[argh(option)]
    pub raft_addr: Option<String>,
    /// raft data directory
    #[argh(option)]
    pub raft_data_dir: Option<String>,
    /// raft log directory
    #[argh(option)]
    pub raft_log_dir: Option<String>,
    /// raft cluster addresses, comma-separated
    #[argh(option)]
    pub raft_cluster: Option<String>,
    /// new or existing: how the raft cluster membership starts
    #[argh(option)]
    pub raft_cluster_state: Option<String>,
    /// milliseconds between raft ticks (default 100; elections after 10 to 20 ticks)
    #[argh(option)]
    pub raft_tick_interval: Option<i64>,
    /// zooKeeper addresses, comma-separated
    #[argh(option)]
    pub zk_addr: Option<String>,
    /// zooKeeper base path, must start with /zk
    #[argh(option)]
    pub zk_path: Option<String>,
    /// milliseconds without contact before ZooKeeper expires a session (default 5000)
    #[argh(option)]
    pub zk_session_timeout: Option<i64>,
    /// password for the monitored servers (sent with AUTH); the Go original's name
    #[argh(option)]
    pub password: Option<Secret>,
    /// password for the monitored servers (sent with AUTH on every connection)
    #[argh(option)]
    pub redis_password: Option<Secret>,
    /// ACL user for the monitored servers (AUTH user password)
    #[argh(option)]
    pub redis_username: Option<String>,
    /// token HTTP clients must send (Authorization: Bearer) to change anything
    #[argh(option)]
    pub api_token: Option<Secret>,
    /// true: reads need the api_token too (default false)
    #[argh(option)]
    pub api_token_reads: Option<bool>,
    /// error, warn, info, debug, trace or off (default info; RUST_LOG wins when set)
    #[argh(option)]
    pub log_level: Option<String>,
    /// listen address of the Sentinel-compatible port for client discovery (off by default)
    #[argh(option)]
    pub sentinel_addr: Option<String>,
}

/// Flags that take true or false and, as with Go's flag package, mean true when given
/// bare (`-api_token_reads`).
const BOOL_FLAGS: &[&str] = &["api-token-reads"];

/// Rewrites Go-style and `=`-joined flags into argh's `--name value` form.
///
/// `-addr=x`, `-addr x`, `--addr=x` and `-check_interval x` all become `--addr x` /
/// `--check-interval x`. A lone `-h` stays as it is for argh's help; `--` ends flags.
pub fn normalize_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len() + 4);
    let mut rest = false;
    for (index, arg) in args.iter().enumerate() {
        if rest || !arg.starts_with('-') || arg == "-" || arg == "-h" {
            out.push(arg.clone());
            continue;
        }
        if arg == "--" {
            rest = true;
            out.push(arg.clone());
            continue;
        }
        let body = arg.trim_start_matches('-');
        let (name, value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        let name = name.replace('_', "-");
        out.push(format!("--{name}"));
        if let Some(value) = value {
            out.push(value.to_string());
        } else if BOOL_FLAGS.contains(&name.as_str()) {
            let next = args.get(index + 1).map(String::as_str);
            if !matches!(next, Some("true" | "false")) {
                out.push("true".into());
            }
        }
    }
    out
}

/// Parses the process arguments (without the program name) into [`Args`].
///
/// `Err` carries argh's output: the help text (`exit_ok`) or a usage error.
pub fn parse_args(program: &str, args: &[String]) -> std::result::Result<Args, argh::EarlyExit> {
    let normalized = normalize_args(args);
    let refs: Vec<&str> = normalized.iter().map(String::as_str).collect();
    Args::from_args(&[program], &refs)
}

impl Args {
    /// Loads the config file (when given) and layers the flags on top of it.
    pub fn settings(&self) -> Result<Settings> {
        let file = match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        Ok(file.overlay(self.flag_settings()))
    }

    fn flag_settings(&self) -> Settings {
        let list = |v: &Option<String>| v.clone().map(List::One);
        Settings {
            addr: self.addr.clone(),
            password: self.password.clone(),
            redis_password: self.redis_password.clone(),
            redis_username: self.redis_username.clone(),
            api_token: self.api_token.clone(),
            api_token_reads: self.api_token_reads,
            log_level: self.log_level.clone(),
            sentinel_addr: self.sentinel_addr.clone(),
            masters: list(&self.masters),
            masters_state: self.masters_state.clone(),
            check_interval: self.check_interval,
            max_down_time: self.max_down_time,
            notify_script: self.notify_script.clone(),
            notify_script_timeout: self.notify_script_timeout,
            switchover_timeout: self.switchover_timeout,
            broker: self.broker.clone(),
            raft: RaftSettings {
                addr: self.raft_addr.clone(),
                data_dir: self.raft_data_dir.clone(),
                log_dir: self.raft_log_dir.clone(),
                cluster: list(&self.raft_cluster),
                cluster_state: self.raft_cluster_state.clone(),
                tick_interval: self.raft_tick_interval,
            },
            zk: ZkSettings {
                addr: list(&self.zk_addr),
                base_dir: self.zk_path.clone(),
                session_timeout: self.zk_session_timeout,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn go_style_and_gnu_style_flags_are_the_same() {
        let go = parse_args(
            "redis-failover",
            &args(&[
                "-addr=127.0.0.1:11001",
                "-masters=127.0.0.1:6379",
                "-check_interval=100",
            ]),
        )
        .unwrap();
        let gnu = parse_args(
            "redis-failover",
            &args(&[
                "--addr",
                "127.0.0.1:11001",
                "--masters=127.0.0.1:6379",
                "--check_interval",
                "100",
            ]),
        )
        .unwrap();
        assert_eq!(go, gnu);
        assert_eq!(go.addr.as_deref(), Some("127.0.0.1:11001"));
        let spaced = parse_args("x", &args(&["-max_down_time", "0.5"])).unwrap();
        assert_eq!(spaced.max_down_time, Some(0.5));
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = std::env::temp_dir().join(format!("rf-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f.toml");
        std::fs::write(&file, "addr = \"127.0.0.1:1\"\ncheck_interval = 50\n").unwrap();
        let a = parse_args(
            "x",
            &args(&[&format!("-config={}", file.display()), "-addr=127.0.0.1:2"]),
        )
        .unwrap();
        let c = a.settings().unwrap().resolve().unwrap();
        assert_eq!(c.addr.port, 2);
        assert_eq!(c.check_interval, Duration::from_millis(50));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bool_flags_may_be_given_bare_like_in_go() {
        for (given, expected) in [
            (&["-api_token_reads"][..], Some(true)),
            (&["-api_token_reads", "-log_level=warn"], Some(true)),
            (&["-api_token_reads=false"], Some(false)),
            (&["--api-token-reads", "false"], Some(false)),
            (&["-log_level=warn"], None),
        ] {
            let parsed = parse_args("x", &args(given)).unwrap();
            assert_eq!(parsed.api_token_reads, expected, "{given:?}");
        }
        let parsed = parse_args("x", &args(&["-redis_password=pw-8e2", "-api_token=t"])).unwrap();
        assert!(!format!("{parsed:?}").contains("pw-8e2"), "{parsed:?}");
        let c = parsed.settings().unwrap().resolve().unwrap();
        assert_eq!(
            c.redis_password.map(|p| p.expose().to_string()),
            Some("pw-8e2".into())
        );
        assert!(c.api_token.is_some());
    }

    #[test]
    fn unknown_flags_and_bad_values_are_errors() {
        assert!(parse_args("x", &args(&["-nope=1"])).is_err());
        assert!(parse_args("x", &args(&["-check_interval=abc"])).is_err());
        let a = parse_args("x", &args(&["-broker=etcd"])).unwrap();
        let err = a.settings().unwrap().resolve().unwrap_err().to_string();
        assert!(err.contains("unknown broker \"etcd\""), "{err}");
    }
}
