//! TLS for every connection the daemon makes or serves, from one set of files: the
//! CA (`tls_ca_cert_file`), and this daemon's certificate and key (`tls_cert_file`,
//! `tls_key_file`), which are its client certificate towards data nodes and Raft peers
//! and its server certificate on the HTTP API, the Sentinel port and the Raft port.
//!
//! [`Tls`] is the one handle on that material. It is loaded once at start and can be
//! [reloaded](Tls::reload) from disk (SIGHUP, `POST /api/v1/reload`): a reload that
//! fails leaves the old material in use, and a reload that succeeds applies to every
//! connection opened after it (connections already open keep their session). Each new
//! connection asks the handle for the configuration current at that moment.
//!
//! - `material.rs`: reading the PEM files and building the rustls configurations.
//! - `stream.rs`: [`Stream`], a blocking connection, plain or TLS (the failover
//!   worker's data-node connections, the Raft links).
//! - `session.rs`: [`Session`], TLS over a non-blocking socket as a
//!   [`Transport`] (the HTTP API and the Sentinel
//!   port).
//! - `verify.rs`: `tls_insecure_skip_verify`, and TLS errors in plain words
//!   ([`explain`], [`explain_io`]).
//!
//! # For a non-blocking client (the monitor's checker)
//!
//! ```no_run
//! # use redis_failover::net::tls::{Tls, Session, Side, explain_io};
//! # use redis_failover::net::transport::Transport;
//! # fn demo(tls: &Tls, socket: std::net::TcpStream) -> Result<(), String> {
//! // `socket` is connected (or connecting) and non-blocking.
//! let conn = tls.client_connection("10.0.0.7")?;        // the host of the address
//! let mut session = Session::new(conn, socket);
//! // Then, driven by poll on session.socket():
//! // - session.write(&command)  queues plaintext and sends what records fit;
//! // - session.wants_write()    -> poll for writability and call session.flush();
//! // - session.read(&mut buf)   returns plaintext, Ok(0) at the end, or WouldBlock;
//! // - session.buffered()       -> plaintext is waiting: read again before polling.
//! // The handshake runs inside these calls. A failure is an io::Error that
//! // explain_io(&e, Side::Client { has_cert: tls.has_client_cert() }) puts in plain
//! // words: missing client certificate, unknown CA, wrong server name.
//! # Ok(()) }
//! ```
//!
//! # Crypto provider
//!
//! rustls with *ring*: it builds with the toolchain's C compiler alone (no cmake, no
//! Go, no OpenSSL), links into the static glibc binary of `test-cluster/build-static.sh`
//! (`+crt-static`) and the musl one, and adds less to the binary than aws-lc-rs.

mod material;
mod session;
mod stream;
#[cfg(test)]
mod tests;
mod verify;

pub use material::{LoadError, MAX_PEM_FILE};
pub use session::Session;
pub use stream::Stream;
pub use verify::{Side, explain, explain_io, tls_error};

use crate::net::transport::{Transport, Wrap};
use crate::sync::lock;
use material::Built;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The files the material is read from (and read again on reload).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `tls_ca_cert_file`: the CA(s) that sign data nodes' and Raft peers' certificates.
    pub ca_cert: Option<PathBuf>,
    /// `tls_cert_file`: this daemon's certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// `tls_key_file`: its private key.
    pub key: Option<PathBuf>,
    /// `tls_raft_ca_cert_file`: the CA(s) that sign Raft peers' certificates, when
    /// not those of `ca_cert` (which also signs the data nodes' certificates).
    pub raft_ca_cert: Option<PathBuf>,
}

/// What the handle is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub files: TlsFiles,
    /// `tls_server_name`: the name every data node's (and Raft peer's) certificate must
    /// hold; None: the host of each address.
    pub server_name: Option<String>,
    /// `tls_insecure_skip_verify`: data nodes' certificates are not verified at all.
    pub insecure_skip_verify: bool,
}

/// The daemon's TLS material, reloadable (see the module doc).
pub struct Tls {
    options: TlsOptions,
    current: Mutex<Arc<Built>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("options", &self.options)
            .finish()
    }
}

impl Tls {
    /// Reads the files; an error names the setting and the file.
    pub fn load(options: TlsOptions) -> Result<Tls, LoadError> {
        if let Some(name) = &options.server_name {
            server_name(name).map_err(|reason| LoadError {
                key: "tls_server_name",
                reason,
            })?;
        }
        let built = material::build(&options)?;
        Ok(Tls {
            options,
            current: Mutex::new(Arc::new(built)),
        })
    }

    /// Reads the files again. On success the new material serves every connection
    /// opened from now on, and the answer says what was loaded; on failure nothing
    /// changes and the error says why.
    pub fn reload(&self) -> Result<String, LoadError> {
        let built = material::build(&self.options)?;
        let summary = built.summary.clone();
        *lock(&self.current) = Arc::new(built);
        if self.options.insecure_skip_verify {
            warn_insecure();
        }
        Ok(summary)
    }

    /// What is loaded now, in one line (files and certificate fingerprint).
    pub fn summary(&self) -> String {
        self.built().summary.clone()
    }

    pub fn options(&self) -> &TlsOptions {
        &self.options
    }

    /// Whether a client certificate is presented to data nodes and Raft peers.
    pub fn has_client_cert(&self) -> bool {
        self.built().has_client_cert
    }

    fn built(&self) -> Arc<Built> {
        lock(&self.current).clone()
    }

    /// The name a server at `host` must prove: `tls_server_name`, or `host` itself.
    pub fn server_name_for(&self, host: &str) -> Result<ServerName<'static>, String> {
        server_name(self.options.server_name.as_deref().unwrap_or(host))
    }

    /// The current configuration towards data nodes.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        self.built().client.clone().ok_or_else(|| {
            "TLS: no tls_ca_cert_file to verify servers with (or tls_insecure_skip_verify)"
                .to_string()
        })
    }

    /// A new client session towards the data node at `host` (the host of its address),
    /// with the current material.
    pub fn client_connection(&self, host: &str) -> Result<ClientConnection, String> {
        let name = self.server_name_for(host)?;
        ClientConnection::new(self.client_config()?, name).map_err(|e| format!("TLS: {e}"))
    }

    /// A new client session towards the Raft peer at `host`: mutual TLS.
    pub fn raft_client_connection(&self, host: &str) -> Result<ClientConnection, String> {
        let config = self.built().raft_client.clone().ok_or_else(|| {
            "TLS: tls_raft needs tls_ca_cert_file, tls_cert_file and tls_key_file".to_string()
        })?;
        ClientConnection::new(config, self.server_name_for(host)?).map_err(|e| format!("TLS: {e}"))
    }

    /// A new server session for the HTTP API or the Sentinel port.
    pub fn server_connection(&self) -> Result<ServerConnection, String> {
        let config = self.server_config()?;
        ServerConnection::new(config).map_err(|e| format!("TLS: {e}"))
    }

    fn server_config(&self) -> Result<Arc<ServerConfig>, String> {
        self.built()
            .server
            .clone()
            .ok_or_else(|| "TLS: serving needs tls_cert_file and tls_key_file".to_string())
    }

    /// A new server session on the Raft port: a client certificate from the CA is
    /// required.
    pub fn raft_server_connection(&self) -> Result<ServerConnection, String> {
        let config = self.built().raft_server.clone().ok_or_else(|| {
            "TLS: tls_raft needs tls_ca_cert_file, tls_cert_file and tls_key_file".to_string()
        })?;
        ServerConnection::new(config).map_err(|e| format!("TLS: {e}"))
    }

    /// How the connection server (`net/server.rs`) turns an accepted socket into a TLS
    /// session with the material current at that moment.
    pub fn server_wrap(self: &Arc<Self>) -> Wrap {
        let tls = self.clone();
        Box::new(move |socket| {
            let conn = tls.server_connection().map_err(std::io::Error::other)?;
            Ok(Box::new(Session::new(conn, socket)) as Box<dyn Transport>)
        })
    }

    /// Logs, at start, what is loaded and the loud warning about skipped verification.
    pub fn log_loaded(&self) {
        log::info!("TLS: loaded {}", self.summary());
        if self.options.insecure_skip_verify {
            warn_insecure();
        }
    }
}

fn warn_insecure() {
    log::warn!(
        "TLS: tls_insecure_skip_verify is on: the data nodes' certificates are NOT verified, so anyone on the network path can pose as a Redis server; use it on test rigs only"
    );
}

/// A server name from text: a DNS name or an IP address (IPv6 with or without
/// brackets).
fn server_name(text: &str) -> Result<ServerName<'static>, String> {
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_string())
        .map_err(|e| format!("{text:?} is not a DNS name or an IP address: {e}"))
}

/// The SHA-256 of a certificate (DER), as hex: how the log names a certificate.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
