//! [`Settings`]: every setting of the daemon, listed once, as both a command-line flag
//! and a config file key. Every value is optional; `resolve` in `mod.rs` applies the
//! defaults and checks the merged result.
//!
//! The one list below generates the flag parser (argh reads the `///` lines as help),
//! the config file reader and the layering of flags over the file. The Go original's
//! file nests a few keys in sections: `[raft] addr` is the flag `raft_addr`, and
//! `[zk] base_dir` the flag `zk_path` ([`SECTION_KEYS`]).

use crate::error::Result;
use crate::invalid_input;
use crate::secret::Secret;
use argh::FromArgs;
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A list that may be written as a TOML array or as one comma-separated string.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum List {
    Many(Vec<String>),
    One(String),
}

impl List {
    pub fn items(&self) -> Vec<String> {
        match self {
            List::Many(items) => items.clone(),
            List::One(text) => text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        }
    }
}

/// A flag's value is one comma-separated string.
impl std::str::FromStr for List {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> std::result::Result<List, Self::Err> {
        Ok(List::One(text.to_string()))
    }
}

macro_rules! settings {
    ($( $(#[doc = $doc:literal])* $name:ident : $ty:ty, )*) => {
        /// Watches Redis masters and fails them over to their most up-to-date replica.
        #[derive(FromArgs, Debug, Clone, Default, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            /// config file (TOML, the Go original's keys); flags override it
            #[argh(option)]
            #[serde(skip)]
            pub config: Option<PathBuf>,
            $(
                $(#[doc = $doc])*
                #[argh(option)]
                pub $name: Option<$ty>,
            )*
        }

        impl Settings {
            /// Every key, as flags spell it (with `_`).
            pub const KEYS: &'static [&'static str] = &[$(stringify!($name)),*];

            /// Layers `over` on top of `self`: every value set in `over` wins.
            pub fn overlay(mut self, over: Settings) -> Settings {
                // `password` and `redis_password` are one setting: a layer that gives
                // either replaces both of the layer below.
                if over.password.is_some() || over.redis_password.is_some() {
                    self.password = None;
                    self.redis_password = None;
                }
                // So are `raft_secret` and `raft_secret_file`.
                if over.raft_secret.is_some() || over.raft_secret_file.is_some() {
                    self.raft_secret = None;
                    self.raft_secret_file = None;
                }
                // So are `zk_auth` and `zk_auth_file`.
                if over.zk_auth.is_some() || over.zk_auth_file.is_some() {
                    self.zk_auth = None;
                    self.zk_auth_file = None;
                }
                Settings {
                    config: over.config.or(self.config),
                    $($name: over.$name.or(self.$name),)*
                }
            }
        }
    };
}

settings! {
    /// HTTP API listen address (default 127.0.0.1:11000)
    addr: String,
    /// masters to monitor, comma-separated, each host:port or name=host:port
    masters: List,
    /// new or existing: whether saved masters are discarded or kept (cluster brokers)
    masters_state: String,
    /// milliseconds between two checks of a master (default 1000)
    check_interval: i64,
    /// seconds without a successful check before failover, fractions allowed (default 3)
    max_down_time: f64,
    /// program run on each failover with Sentinel's client-reconfig-script arguments
    notify_script: String,
    /// seconds the notify_script may run before it is killed (default 60)
    notify_script_timeout: f64,
    /// program run before a replica is promoted, with <group> <old-ip> <old-port> <new-ip> <new-port>; a non-zero exit or a timeout stops the failover
    pre_failover_script: String,
    /// seconds the pre_failover_script may run before the failover is stopped (default 10)
    pre_failover_script_timeout: f64,
    /// seconds a switchover waits, writes paused, for the replica to catch up (default 5)
    switchover_timeout: f64,
    /// seconds after an automatic failover of a group in which another automatic one waits for POST /api/v1/groups/NAME/ack (default 0: off)
    failover_block: f64,
    /// cluster broker: raft or zk (empty: standalone)
    broker: String,
    /// raft listen address
    raft_addr: String,
    /// raft data directory
    raft_data_dir: String,
    /// raft log directory
    raft_log_dir: String,
    /// raft cluster addresses, comma-separated
    raft_cluster: List,
    /// new or existing: how the raft cluster membership starts
    raft_cluster_state: String,
    /// milliseconds between raft ticks (default 100; elections after 10 to 20 ticks)
    raft_tick_interval: i64,
    /// secret every raft daemon of the cluster shares and proves to the others (HMAC-SHA256)
    raft_secret: Secret,
    /// file holding raft_secret, read at start (surrounding whitespace is trimmed)
    raft_secret_file: String,
    /// zooKeeper addresses, comma-separated
    zk_addr: List,
    /// zooKeeper base path, must start with /zk
    zk_path: String,
    /// milliseconds without contact before ZooKeeper expires a session (default 5000)
    zk_session_timeout: i64,
    /// zooKeeper digest login user:password; znodes created are writable by it only
    zk_auth: Secret,
    /// file holding zk_auth (user:password), read at start (a trailing newline is trimmed)
    zk_auth_file: String,
    /// password for the monitored servers (sent with AUTH); the Go original's name
    password: Secret,
    /// password for the monitored servers (sent with AUTH on every connection)
    redis_password: Secret,
    /// ACL user for the monitored servers (AUTH user password)
    redis_username: String,
    /// token HTTP clients must send (Authorization: Bearer) to change anything
    api_token: Secret,
    /// true: reads need the api_token too (default false)
    api_token_reads: bool,
    /// host names the HTTP API answers to besides IP addresses, localhost and its listen host, comma-separated (* for any)
    http_allowed_hosts: List,
    /// error, warn, info, debug, trace or off (default info; RUST_LOG wins when set)
    log_level: String,
    /// listen address of the Sentinel-compatible port for client discovery (off by default)
    sentinel_addr: String,
    /// daemons that must find a master down before it is failed over (default: a majority of the cluster)
    quorum: i64,
    /// bounded write loss: set min-replicas-to-write on every master (default 0: off)
    min_replicas_to_write: i64,
    /// seconds of replica lag min_replicas_to_write allows (default 10, as Redis)
    min_replicas_max_lag: i64,
    /// true: every connection to the monitored servers uses TLS (default false)
    tls: bool,
    /// CA certificates (PEM) that data nodes' and raft peers' certificates must be signed by
    tls_ca_cert_file: String,
    /// this daemon's certificate (PEM): its client certificate, and the certificate of what it serves
    tls_cert_file: String,
    /// private key (PEM) of tls_cert_file
    tls_key_file: String,
    /// name the data nodes' certificates must hold (default: the host of each address)
    tls_server_name: String,
    /// true: do NOT verify the data nodes' certificates (test rigs only; logged loudly)
    tls_insecure_skip_verify: bool,
    /// true: serve the HTTP API over TLS (HTTPS) with tls_cert_file
    tls_http: bool,
    /// true: serve the Sentinel-compatible port over TLS with tls_cert_file
    tls_sentinel: bool,
    /// true: raft links use mutual TLS, certificates signed by tls_raft_ca_cert_file (or tls_ca_cert_file) and naming the peer's raft_addr host
    tls_raft: bool,
    /// CA certificates (PEM) that raft peers' certificates must be signed by (default: tls_ca_cert_file)
    tls_raft_ca_cert_file: String,
}

/// The largest config file read: far above any real one (10,000 groups take about
/// 400 KB), and a bound on what a wrong path (`-config=/dev/zero`) can cost.
pub const MAX_CONFIG_FILE: u64 = 16 * 1024 * 1024;

/// Reads a text file of at most `limit` bytes, without ever holding more than that.
pub fn read_bounded(path: &Path, limit: u64) -> std::result::Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "larger than {} MB ({limit} bytes); refusing to read more",
            limit / (1024 * 1024)
        ));
    }
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))
}

/// The config file's sections: `[section] key` is the setting named here.
pub const SECTION_KEYS: &[(&str, &str, &str)] = &[
    ("raft", "addr", "raft_addr"),
    ("raft", "data_dir", "raft_data_dir"),
    ("raft", "log_dir", "raft_log_dir"),
    ("raft", "cluster", "raft_cluster"),
    ("raft", "cluster_state", "raft_cluster_state"),
    ("raft", "tick_interval", "raft_tick_interval"),
    ("raft", "secret", "raft_secret"),
    ("raft", "secret_file", "raft_secret_file"),
    ("zk", "addr", "zk_addr"),
    ("zk", "base_dir", "zk_path"),
    ("zk", "session_timeout", "zk_session_timeout"),
    ("zk", "auth", "zk_auth"),
    ("zk", "auth_file", "zk_auth_file"),
];

impl Settings {
    /// Reads a TOML config file of at most [`MAX_CONFIG_FILE`] bytes; errors name the
    /// file and the key.
    pub fn from_file(path: &Path) -> Result<Settings> {
        let text = read_bounded(path, MAX_CONFIG_FILE)
            .map_err(|e| invalid_input!("config file {}: {e}", path.display()))?;
        Settings::from_toml(&text)
            .map_err(|e| invalid_input!("config file {}: {e}", path.display()))
    }

    /// Parses TOML text; unknown keys are refused.
    pub fn from_toml(text: &str) -> Result<Settings> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| invalid_input!("{}", e.to_string().trim_end()))?;
        for section in ["raft", "zk"] {
            let Some(value) = table.remove(section) else {
                continue;
            };
            let toml::Value::Table(keys) = value else {
                return Err(invalid_input!("[{section}]: must be a section (a table)"));
            };
            for (key, value) in keys {
                let setting = SECTION_KEYS
                    .iter()
                    .find(|(s, k, _)| *s == section && *k == key)
                    .map(|(_, _, setting)| *setting)
                    .ok_or_else(|| {
                        let known: Vec<&str> = SECTION_KEYS
                            .iter()
                            .filter(|(s, ..)| *s == section)
                            .map(|(_, k, _)| *k)
                            .collect();
                        invalid_input!(
                            "[{section}] {key}: unknown key (expected one of {})",
                            known.join(", ")
                        )
                    })?;
                table.insert(setting.to_string(), value);
            }
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| invalid_input!("{}", e.to_string().trim_end()))
    }
}
