//! The daemon's settings: the Go original's `etc/failover.toml` keys, their defaults,
//! and validation that names the offending key.
//!
//! Settings are layered: defaults, then the config file, then command-line flags (see
//! `cli.rs`). Both the file and the flags produce a [`Settings`] of optional values
//! (`settings.rs`, where every setting is listed once); [`Settings::resolve`] checks the
//! merged result once and yields a [`Config`] that the rest of the crate can trust.

pub mod cli;
mod file_modes;
mod settings;
mod tls;
mod zk_auth;

pub use settings::{List, MAX_CONFIG_FILE, SECTION_KEYS, Settings};
pub use tls::TlsConfig;
pub use zk_auth::ZkAuth;

use crate::address::{Addr, MasterSpec};
use crate::error::{Error, Result};
use crate::invalid_input;
use crate::secret::Secret;
use std::path::PathBuf;
use std::time::Duration;

/// Default HTTP listen address (the Go original's).
pub const DEFAULT_ADDR: &str = "127.0.0.1:11000";
/// Default time between two checks of a master, in milliseconds.
pub const DEFAULT_CHECK_INTERVAL_MS: u64 = 1000;
/// The shortest time between two checks of a master, in milliseconds: below it the
/// checks of many groups would only burn CPU (a check takes a round trip anyway).
pub const MIN_CHECK_INTERVAL_MS: i64 = 10;
/// Default time without a successful check before a master is down, in seconds.
pub const DEFAULT_MAX_DOWN_TIME_SECS: f64 = 3.0;
/// Default time a notification script may run before it is killed (Sentinel's).
pub const DEFAULT_NOTIFY_SCRIPT_TIMEOUT_SECS: f64 = 60.0;
/// The veto script delays the failover while it runs: a short default.
pub const DEFAULT_PRE_FAILOVER_SCRIPT_TIMEOUT_SECS: f64 = 10.0;
/// Default time a switchover waits for the chosen replica to catch up, writes paused.
pub const DEFAULT_SWITCHOVER_TIMEOUT_SECS: f64 = 5.0;

/// The largest `raft_secret_file` or `zk_auth_file` read (a secret is a line of text).
pub const MAX_SECRET_FILE: u64 = 4096;

/// Default ZooKeeper session timeout, in milliseconds: within ZooKeeper's default
/// bounds (2 to 20 ticks of 2 s, so 4 s to 40 s).
pub const DEFAULT_ZK_SESSION_TIMEOUT_MS: u64 = 5000;

/// How the daemons of a cluster agree on the monitored masters and on who acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// One daemon, state in memory (the original's behaviour with no broker set).
    Standalone,
    /// Daemons agree through the built-in Raft group.
    Raft,
    /// Daemons agree through a ZooKeeper ensemble.
    Zk,
}

impl BrokerKind {
    fn parse(text: &str) -> Result<BrokerKind> {
        match text {
            "" | "none" | "standalone" => Ok(BrokerKind::Standalone),
            "raft" => Ok(BrokerKind::Raft),
            "zk" => Ok(BrokerKind::Zk),
            other => Err(invalid_input!(
                "broker: unknown broker {other:?} (expected raft, zk, or empty for standalone)"
            )),
        }
    }
}

/// Whether saved state is discarded (`new`) or merged with the configured one (`existing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartState {
    New,
    Existing,
}

impl StartState {
    fn parse(key: &str, text: &str) -> Result<StartState> {
        match text {
            "new" => Ok(StartState::New),
            "" | "existing" => Ok(StartState::Existing),
            other => Err(invalid_input!(
                "{key}: unknown value {other:?} (expected new or existing)"
            )),
        }
    }
}

/// Bounded write loss: Redis's `min-replicas-to-write` and `min-replicas-max-lag`, set
/// on every master (see `worker/bounded_loss.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinReplicas {
    pub to_write: u32,
    pub max_lag_secs: u32,
}

/// Raft broker settings after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct RaftConfig {
    pub addr: Option<Addr>,
    pub data_dir: PathBuf,
    pub log_dir: Option<PathBuf>,
    pub cluster: Vec<Addr>,
    pub cluster_state: StartState,
    pub tick_interval: Duration,
    /// `raft_secret` (or the content of `raft_secret_file`): peers prove they know it.
    pub secret: Option<Secret>,
}

/// ZooKeeper broker settings after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ZkConfig {
    pub addr: Vec<Addr>,
    pub base_dir: String,
    pub session_timeout: Duration,
    /// `zk_auth` (or the content of `zk_auth_file`): the digest identity the daemon
    /// logs in with; None: open ACLs, as before.
    pub auth: Option<ZkAuth>,
}

/// Validated settings of one daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// HTTP API listen address.
    pub addr: Addr,
    /// Sent with `AUTH` on every connection to a monitored server, when set (config key
    /// `redis_password`, or `password` as in the Go original).
    pub redis_password: Option<Secret>,
    /// With a password: `AUTH <user> <password>` (an ACL user) instead of `AUTH <password>`.
    pub redis_username: Option<String>,
    /// When set, HTTP requests that change anything must carry `Authorization: Bearer`.
    pub api_token: Option<Secret>,
    /// Reads need the token too (when one is set).
    pub api_token_reads: bool,
    /// `Host` names the HTTP API answers to besides IP addresses, `localhost` and its
    /// listen host (`*`: any); see `api/cross_site.rs`.
    pub http_allowed_hosts: Vec<String>,
    /// The log level; `RUST_LOG`, when set, wins (see `logging.rs`).
    pub log_level: log::LevelFilter,
    /// Where the Sentinel-compatible port listens, if it is on.
    pub sentinel_addr: Option<Addr>,
    /// Daemons that must find a master down before it is failed over; 0: a majority of
    /// the cluster (Sentinel's `quorum`).
    pub quorum: usize,
    /// Bounded write loss (`min_replicas_to_write`, `min_replicas_max_lag`); None: off.
    pub min_replicas: Option<MinReplicas>,
    /// Groups to monitor from the start.
    pub masters: Vec<MasterSpec>,
    pub masters_state: StartState,
    pub check_interval: Duration,
    pub max_down_time: Duration,
    /// Run on each failover, see `notify.rs`.
    pub notify_script: Option<PathBuf>,
    pub notify_script_timeout: Duration,
    /// Run before each promotion; may veto it (see `host/veto_script.rs`).
    pub pre_failover_script: Option<PathBuf>,
    pub pre_failover_script_timeout: Duration,
    /// How long a switchover waits, writes paused, for the replica to catch up.
    pub switchover_timeout: Duration,
    /// After an automatic failover, another automatic one of the group within this
    /// waits for an acknowledgement; zero: off.
    pub failover_block: Duration,
    pub broker: BrokerKind,
    pub raft: RaftConfig,
    pub zk: ZkConfig,
    /// TLS towards data nodes and on what the daemon serves (`tls*` keys).
    pub tls: TlsConfig,
    /// The config file read, if any (checked for its mode at start, `file_modes.rs`).
    pub config_file: Option<PathBuf>,
    /// Files secrets were read from (`raft_secret_file`, `zk_auth_file`).
    pub secret_files: Vec<PathBuf>,
}

impl Default for Config {
    /// The defaults of the Go original: `127.0.0.1:11000`, check every second, down after 3 s.
    fn default() -> Config {
        match Settings::default().resolve() {
            Ok(config) => config,
            Err(err) => unreachable!("the built-in defaults are valid: {err}"),
        }
    }
}

impl Settings {
    /// Applies defaults and checks every value, naming the key of the first bad one.
    pub fn resolve(self) -> Result<Config> {
        let broker = BrokerKind::parse(self.broker.as_deref().unwrap_or(""))?;
        let (redis_password, redis_username) = self.credentials()?;
        let check_interval = self.check_interval()?;
        let sentinel_addr = optional_addr("sentinel_addr", self.sentinel_addr.as_deref())?;
        Ok(Config {
            addr: listen_addr(self.addr.as_deref())?,
            tls: self.tls(broker, sentinel_addr.is_some())?,
            sentinel_addr,
            min_replicas: self.min_replicas()?,
            quorum: match self.quorum.unwrap_or(0) {
                q @ 0..=100 => q as usize,
                q => {
                    return Err(invalid_input!(
                        "quorum: {q} is out of range (0 for a majority of the cluster, or 1 to 100 daemons)"
                    ));
                }
            },
            redis_password,
            redis_username,
            api_token: self.api_token.clone().filter(|t| !t.is_empty()),
            api_token_reads: self.api_token_reads.unwrap_or(false),
            http_allowed_hosts: self.http_allowed_hosts()?,
            log_level: log_level(self.log_level.as_deref())?,
            masters: masters(self.masters.as_ref())?,
            masters_state: StartState::parse(
                "masters_state",
                self.masters_state.as_deref().unwrap_or(""),
            )?,
            check_interval,
            max_down_time: self.max_down_time(check_interval)?,
            notify_script: match self.notify_script.as_deref() {
                None | Some("") => None,
                Some(path) => Some(executable("notify_script", path)?),
            },
            notify_script_timeout: seconds(
                "notify_script_timeout",
                self.notify_script_timeout,
                DEFAULT_NOTIFY_SCRIPT_TIMEOUT_SECS,
            )?,
            pre_failover_script: match self.pre_failover_script.as_deref() {
                None | Some("") => None,
                Some(path) => Some(executable("pre_failover_script", path)?),
            },
            pre_failover_script_timeout: seconds(
                "pre_failover_script_timeout",
                self.pre_failover_script_timeout,
                DEFAULT_PRE_FAILOVER_SCRIPT_TIMEOUT_SECS,
            )?,
            switchover_timeout: seconds(
                "switchover_timeout",
                self.switchover_timeout,
                DEFAULT_SWITCHOVER_TIMEOUT_SECS,
            )?,
            failover_block: match self.failover_block.unwrap_or(0.0) {
                0.0 => Duration::ZERO,
                secs => seconds("failover_block", Some(secs), 0.0)?,
            },
            raft: self.raft(broker)?,
            zk: self.zk(broker)?,
            broker,
            config_file: self.config.clone(),
            secret_files: [&self.raft_secret_file, &self.zk_auth_file]
                .into_iter()
                .flatten()
                .filter(|path| !path.is_empty())
                .map(PathBuf::from)
                .collect(),
        })
    }

    /// `http_allowed_hosts`: host names (a port, if given, is ignored) or `*`.
    fn http_allowed_hosts(&self) -> Result<Vec<String>> {
        let items = self
            .http_allowed_hosts
            .as_ref()
            .map(List::items)
            .unwrap_or_default();
        for item in &items {
            let fine = item == "*"
                || (!item.starts_with('-')
                    && item.chars().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']')
                    }));
            if !fine {
                return Err(invalid_input!(
                    "http_allowed_hosts: {item:?} is not a host name (letters, digits, . - _, an optional :port, or * for any)"
                ));
            }
        }
        Ok(items)
    }

    fn min_replicas(&self) -> Result<Option<MinReplicas>> {
        let to_write = self.min_replicas_to_write.unwrap_or(0);
        if !(0..=1000).contains(&to_write) {
            return Err(invalid_input!(
                "min_replicas_to_write: {to_write} is out of range (0 to turn it off, up to 1000)"
            ));
        }
        let max_lag = self.min_replicas_max_lag.unwrap_or(10);
        if !(1..=3600).contains(&max_lag) {
            return Err(invalid_input!(
                "min_replicas_max_lag: {max_lag} is out of range (1 to 3600 seconds)"
            ));
        }
        Ok((to_write > 0).then_some(MinReplicas {
            to_write: to_write as u32,
            max_lag_secs: max_lag as u32,
        }))
    }

    fn check_interval(&self) -> Result<Duration> {
        let check_ms = self
            .check_interval
            .unwrap_or(DEFAULT_CHECK_INTERVAL_MS as i64);
        if !(MIN_CHECK_INTERVAL_MS..=3_600_000).contains(&check_ms) {
            return Err(invalid_input!(
                "check_interval: {check_ms} is out of range ({MIN_CHECK_INTERVAL_MS} to 3600000 milliseconds)"
            ));
        }
        Ok(Duration::from_millis(check_ms as u64))
    }

    /// At least one check interval: a master is down only once a check had the time to
    /// fail.
    fn max_down_time(&self, check_interval: Duration) -> Result<Duration> {
        let down_secs = self.max_down_time.unwrap_or(DEFAULT_MAX_DOWN_TIME_SECS);
        if !(down_secs.is_finite() && down_secs > 0.0 && down_secs <= 86_400.0) {
            return Err(invalid_input!(
                "max_down_time: {down_secs} is out of range (more than 0, at most 86400 seconds)"
            ));
        }
        let down = Duration::from_secs_f64(down_secs);
        if down < check_interval {
            let given = if self.max_down_time.is_some() {
                ""
            } else {
                " (the default)"
            };
            return Err(invalid_input!(
                "max_down_time: {down_secs} s{given} is shorter than check_interval ({} ms); it must be at least one check interval",
                check_interval.as_millis()
            ));
        }
        Ok(down)
    }

    /// `raft_secret`, or the content of `raft_secret_file` (one of them, or neither).
    fn raft_secret(&self) -> Result<Option<Secret>> {
        let file = self.raft_secret_file.as_deref().filter(|f| !f.is_empty());
        let given = self.raft_secret.clone().filter(|s| !s.is_empty());
        match (given, file) {
            (Some(_), Some(_)) => Err(invalid_input!(
                "raft_secret ([raft] secret): give raft_secret or raft_secret_file, not both"
            )),
            (Some(secret), None) => Ok(Some(secret)),
            (None, Some(path)) => {
                read_secret_file("raft_secret_file ([raft] secret_file)", path).map(Some)
            }
            (None, None) => Ok(None),
        }
    }

    /// `redis_password` (or its Go alias `password`) and `redis_username`.
    fn credentials(&self) -> Result<(Option<Secret>, Option<String>)> {
        let password = match (&self.redis_password, &self.password) {
            (Some(a), Some(b)) if a != b => {
                return Err(invalid_input!(
                    "redis_password: differs from password, its Go-compatible alias; give one of them"
                ));
            }
            (a, b) => a.clone().or(b.clone()).filter(|p| !p.is_empty()),
        };
        let username = self.redis_username.clone().filter(|u| !u.is_empty());
        if username.is_some() && password.is_none() {
            return Err(invalid_input!(
                "redis_username: needs redis_password too (AUTH <user> <password>)"
            ));
        }
        Ok((password, username))
    }

    fn raft(&self, broker: BrokerKind) -> Result<RaftConfig> {
        let with_key = |key: &str, e: Error| invalid_input!("{key}: {e}");
        let addr = optional_addr("raft_addr ([raft] addr)", self.raft_addr.as_deref())?;
        let cluster = self
            .raft_cluster
            .as_ref()
            .map(List::items)
            .unwrap_or_default()
            .iter()
            .map(|a| Addr::parse(a).map_err(|e| with_key("raft_cluster ([raft] cluster)", e)))
            .collect::<Result<Vec<_>>>()?;
        let tick_ms = self.raft_tick_interval.unwrap_or(100);
        if !(1..=10_000).contains(&tick_ms) {
            return Err(invalid_input!(
                "raft_tick_interval ([raft] tick_interval): {tick_ms} is out of range (1 to 10000 milliseconds)"
            ));
        }
        if broker == BrokerKind::Raft && addr.is_none() {
            return Err(invalid_input!(
                "raft_addr ([raft] addr): required with -broker=raft"
            ));
        }
        Ok(RaftConfig {
            addr,
            data_dir: PathBuf::from(self.raft_data_dir.as_deref().unwrap_or("./var")),
            log_dir: self
                .raft_log_dir
                .as_deref()
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
            cluster,
            cluster_state: StartState::parse(
                "raft_cluster_state ([raft] cluster_state)",
                self.raft_cluster_state.as_deref().unwrap_or(""),
            )?,
            tick_interval: Duration::from_millis(tick_ms as u64),
            secret: self.raft_secret()?,
        })
    }

    fn zk(&self, broker: BrokerKind) -> Result<ZkConfig> {
        let with_key = |key: &str, e: Error| invalid_input!("{key}: {e}");
        let addr = self
            .zk_addr
            .as_ref()
            .map(List::items)
            .unwrap_or_default()
            .iter()
            .map(|a| Addr::parse(a).map_err(|e| with_key("zk_addr ([zk] addr)", e)))
            .collect::<Result<Vec<_>>>()?;
        let base_dir = self
            .zk_path
            .clone()
            .unwrap_or_else(|| "/zk/redis/failover".into());
        if broker == BrokerKind::Zk {
            check_zk_path(&base_dir)?;
            if addr.is_empty() {
                return Err(invalid_input!(
                    "zk_addr ([zk] addr): required with -broker=zk (host:port of each ZooKeeper server, comma-separated)"
                ));
            }
        }
        let session_ms = self
            .zk_session_timeout
            .unwrap_or(DEFAULT_ZK_SESSION_TIMEOUT_MS as i64);
        if !(100..=600_000).contains(&session_ms) {
            return Err(invalid_input!(
                "zk_session_timeout ([zk] session_timeout): {session_ms} is out of range (100 to 600000 milliseconds)"
            ));
        }
        Ok(ZkConfig {
            addr,
            base_dir,
            session_timeout: Duration::from_millis(session_ms as u64),
            auth: self.zk_auth()?,
        })
    }
}

/// The HTTP listen address; Go's `-addr=:11000` means every interface.
fn listen_addr(text: Option<&str>) -> Result<Addr> {
    let text = text.unwrap_or(DEFAULT_ADDR);
    let text = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_string(),
    };
    Addr::parse(&text).map_err(|e| invalid_input!("addr: {e}"))
}

/// An address that may be left empty.
fn optional_addr(key: &str, text: Option<&str>) -> Result<Option<Addr>> {
    match text {
        None | Some("") => Ok(None),
        Some(text) => Addr::parse(text)
            .map(Some)
            .map_err(|e| invalid_input!("{key}: {e}")),
    }
}

/// The masters to watch, each group named once.
fn masters(list: Option<&List>) -> Result<Vec<MasterSpec>> {
    let mut masters: Vec<MasterSpec> = Vec::new();
    for item in list.map(List::items).unwrap_or_default() {
        let spec = MasterSpec::parse(&item).map_err(|e| invalid_input!("masters: {e}"))?;
        if masters.iter().any(|m| m.name == spec.name) {
            return Err(invalid_input!(
                "masters: group {:?} is given twice",
                spec.name
            ));
        }
        masters.push(spec);
    }
    Ok(masters)
}

fn log_level(text: Option<&str>) -> Result<log::LevelFilter> {
    match text {
        None | Some("") => Ok(log::LevelFilter::Info),
        Some(text) => text.parse().map_err(|_| {
            invalid_input!(
                "log_level: unknown level {text:?} (expected error, warn, info, debug, trace or off)"
            )
        }),
    }
}

/// A ZooKeeper base path: the original's `/zk` prefix, and a path ZooKeeper accepts
/// (absolute, no empty, `.` or `..` component, no trailing slash).
fn check_zk_path(path: &str) -> Result<()> {
    let key = "zk_path ([zk] base_dir)";
    if !path.starts_with("/zk") {
        return Err(invalid_input!("{key}: {path:?} must start with /zk"));
    }
    let bad = path
        .split('/')
        .skip(1)
        .find(|part| part.is_empty() || *part == "." || *part == "..");
    if let Some(part) = bad {
        return Err(invalid_input!(
            "{key}: {path:?} is not a ZooKeeper path (component {part:?}; write it as /zk/a/b)"
        ));
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(invalid_input!(
            "{key}: {path:?} contains control characters"
        ));
    }
    Ok(())
}

/// The secret in a file (`raft_secret_file`, `zk_auth_file`, named by `key`): read
/// once, at most [`MAX_SECRET_FILE`] bytes, without the whitespace around it (a
/// trailing newline), and not empty.
fn read_secret_file(key: &str, path: &str) -> Result<Secret> {
    let text = settings::read_bounded(std::path::Path::new(path), MAX_SECRET_FILE)
        .map_err(|e| invalid_input!("{key}: {path}: {e}"))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(invalid_input!("{key}: {path} is empty"));
    }
    Ok(Secret::new(secret))
}

/// A duration in seconds (fractions allowed) between a millisecond and a day.
fn seconds(key: &str, value: Option<f64>, default: f64) -> Result<Duration> {
    let secs = value.unwrap_or(default);
    if !(secs.is_finite() && (0.001..=86_400.0).contains(&secs)) {
        return Err(invalid_input!(
            "{key}: {secs} is out of range (0.001 to 86400 seconds)"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A path to an executable file, as Sentinel checks its scripts at start.
fn executable(key: &str, path: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| invalid_input!("{key}: cannot use {path:?}: {e}"))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(invalid_input!("{key}: {path:?} is not an executable file"));
    }
    Ok(PathBuf::from(path))
}

/// The error `resolve` gives for a config file, as text (tests of bad settings).
#[cfg(test)]
fn resolve_error(toml: &str) -> String {
    Settings::from_toml(toml)
        .expect("the TOML parses")
        .resolve()
        .expect_err("the settings are refused")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_go_original() {
        let c = Config::default();
        assert_eq!(c.addr.to_string(), "127.0.0.1:11000");
        assert_eq!(c.check_interval, Duration::from_millis(1000));
        assert_eq!(c.max_down_time, Duration::from_secs(3));
        assert_eq!(c.broker, BrokerKind::Standalone);
    }

    #[test]
    fn the_shipped_example_config_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/failover.toml");
        let c = Settings::from_file(&path).unwrap().resolve().unwrap();
        assert_eq!(c.masters[0].addr.to_string(), "127.0.0.1:6379");
        assert_eq!(c.raft.cluster.len(), 1);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (toml, key) in [
            ("addr = \"127.0.0.1\"", "addr"),
            ("check_interval = 0", "check_interval"),
            ("max_down_time = -1", "max_down_time"),
            ("masters = [\"x\"]", "masters"),
            ("broker = \"etcd\"", "broker"),
            ("masters_state = \"old\"", "masters_state"),
            ("[raft]\ncluster = [\"a\"]", "raft_cluster"),
            ("broker = \"zk\"\n[zk]\nbase_dir = \"/redis\"", "zk_path"),
            ("log_level = \"loud\"", "log_level"),
            ("redis_username = \"u\"", "redis_username"),
            ("password = \"a\"\nredis_password = \"b\"", "redis_password"),
            (
                "broker = \"zk\"\n[zk]\naddr = \"h:1\"\nbase_dir = \"/zk/a/\"",
                "zk_path",
            ),
            ("broker = \"zk\"\n[zk]\nbase_dir = \"/zk/a\"", "zk_addr"),
            ("[zk]\nsession_timeout = 5", "zk_session_timeout"),
            ("[zk]\nauth = \"nopassword\"", "zk_auth"),
            ("[zk]\nauth = \"a:b\"\nauth_file = \"/x\"", "zk_auth"),
            ("[zk]\nauth_file = \"/nonexistent\"", "zk_auth_file"),
            ("notify_script = \"/nonexistent/x.sh\"", "notify_script"),
            ("notify_script = \"/etc\"", "notify_script"),
            ("notify_script_timeout = 0", "notify_script_timeout"),
            ("switchover_timeout = -2", "switchover_timeout"),
        ] {
            let err = resolve_error(toml);
            assert!(err.starts_with(key), "{toml:?} gave {err:?}");
        }
        let err = Settings::from_toml("chek_interval = 5")
            .unwrap_err()
            .to_string();
        assert!(err.contains("chek_interval"), "{err}");
        let err = Settings::from_toml("check_interval = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("check_interval"), "{err}");
    }

    #[test]
    fn fractional_down_time_and_string_lists() {
        // (With checks every 100 ms: max_down_time is at least one check interval.)
        let c = Settings::from_toml(
            "max_down_time = 0.5\ncheck_interval = 100\nmasters = \"a:1, b=c:2\"",
        )
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(c.max_down_time, Duration::from_millis(500));
        assert_eq!(c.masters.len(), 2);
        let any = Settings::from_toml("addr = \":11000\"")
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(any.addr.to_string(), "0.0.0.0:11000", "Go's -addr=:port");
    }

    #[test]
    fn later_layers_win() {
        let file = Settings::from_toml("addr = \"127.0.0.1:1\"\ncheck_interval = 50").unwrap();
        let flags = Settings {
            addr: Some("127.0.0.1:2".into()),
            ..Settings::default()
        };
        let c = file.overlay(flags).resolve().unwrap();
        assert_eq!(c.addr.port, 2);
        assert_eq!(c.check_interval, Duration::from_millis(50));
    }

    #[test]
    fn password_is_an_alias_of_redis_password_and_secrets_are_redacted() {
        let c = Settings::from_toml("password = \"pw-7f3a\"\napi_token = \"tok-91c2\"")
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(
            c.redis_password.as_ref().map(Secret::expose),
            Some("pw-7f3a")
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("pw-7f3a") && !shown.contains("tok-91c2"),
            "{shown}"
        );
        // A later layer's redis_password replaces the file's password.
        let file = Settings::from_toml("password = \"old\"").unwrap();
        let flags = Settings {
            redis_password: Some(Secret::new("new")),
            ..Settings::default()
        };
        let c = file.overlay(flags).resolve().unwrap();
        assert_eq!(c.redis_password.as_ref().map(Secret::expose), Some("new"));
        let c = Settings::from_toml("log_level = \"WARN\"\napi_token_reads = true")
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(c.log_level, log::LevelFilter::Warn);
        assert!(c.api_token_reads);
    }
}

#[cfg(test)]
mod limit_tests;
