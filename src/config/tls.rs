//! The `tls*` settings: which connections use TLS, and the files the material comes
//! from. Checked once here, files included (they are read and parsed, and the key must
//! go with the certificate), so a daemon never starts with TLS it cannot use; every
//! error names its key.

use super::{BrokerKind, Settings};
use crate::error::Result;
use crate::invalid_input;
use crate::net::tls::{Tls, TlsFiles, TlsOptions};
use std::path::PathBuf;

/// TLS settings after validation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsConfig {
    /// `tls`: every connection to a data node (checks, INFO, promotion, re-pointing,
    /// fencing) uses TLS.
    pub data_nodes: bool,
    /// `tls_http`: the HTTP API is HTTPS.
    pub http: bool,
    /// `tls_sentinel`: the Sentinel-compatible port speaks TLS.
    pub sentinel: bool,
    /// `tls_raft`: the Raft links use mutual TLS.
    pub raft: bool,
    /// The files, `tls_server_name` and `tls_insecure_skip_verify`.
    pub options: TlsOptions,
}

impl TlsConfig {
    /// Whether anything uses TLS, so the material must be loaded.
    pub fn in_use(&self) -> bool {
        self.data_nodes || self.http || self.sentinel || self.raft
    }
}

/// A path setting; empty means unset.
fn path(value: Option<&String>) -> Option<PathBuf> {
    value.filter(|p| !p.is_empty()).map(PathBuf::from)
}

impl Settings {
    /// The `tls*` settings: combinations first, then the files themselves.
    pub(super) fn tls(&self, broker: BrokerKind, sentinel_on: bool) -> Result<TlsConfig> {
        let files = TlsFiles {
            ca_cert: path(self.tls_ca_cert_file.as_ref()),
            cert: path(self.tls_cert_file.as_ref()),
            key: path(self.tls_key_file.as_ref()),
            raft_ca_cert: path(self.tls_raft_ca_cert_file.as_ref()),
        };
        let config = TlsConfig {
            data_nodes: self.tls.unwrap_or(false),
            http: self.tls_http.unwrap_or(false),
            sentinel: self.tls_sentinel.unwrap_or(false),
            raft: self.tls_raft.unwrap_or(false),
            options: TlsOptions {
                files,
                server_name: self.tls_server_name.clone().filter(|n| !n.is_empty()),
                insecure_skip_verify: self.tls_insecure_skip_verify.unwrap_or(false),
            },
        };
        check_combinations(&config, broker, sentinel_on)?;
        let files = &config.options.files;
        if files.ca_cert.is_some()
            || files.cert.is_some()
            || files.key.is_some()
            || files.raft_ca_cert.is_some()
        {
            // Read and parsed now, so that a bad file stops the start (exit status 2).
            Tls::load(config.options.clone()).map_err(|e| invalid_input!("{e}"))?;
        }
        Ok(config)
    }
}

/// Settings that make no sense together, each refused with the key to change.
fn check_combinations(config: &TlsConfig, broker: BrokerKind, sentinel_on: bool) -> Result<()> {
    let files = &config.options.files;
    let identity = files.cert.is_some() && files.key.is_some();
    match (&files.cert, &files.key) {
        (Some(_), None) => return Err(invalid_input!("tls_key_file: required with tls_cert_file")),
        (None, Some(_)) => return Err(invalid_input!("tls_cert_file: required with tls_key_file")),
        _ => {}
    }
    let options = &config.options;
    if config.data_nodes && files.ca_cert.is_none() && !options.insecure_skip_verify {
        return Err(invalid_input!(
            "tls_ca_cert_file: required with tls = true, to verify the servers' certificates (or tls_insecure_skip_verify on a test rig)"
        ));
    }
    if options.insecure_skip_verify && !config.data_nodes {
        return Err(invalid_input!(
            "tls_insecure_skip_verify: applies to connections to data nodes, and tls is off"
        ));
    }
    if options.server_name.is_some() && !config.data_nodes && !config.raft {
        return Err(invalid_input!(
            "tls_server_name: applies to connections to data nodes and raft peers, and neither tls nor tls_raft is on"
        ));
    }
    for (on, key) in [(config.http, "tls_http"), (config.sentinel, "tls_sentinel")] {
        if on && !identity {
            return Err(invalid_input!(
                "tls_cert_file: required with {key} (with tls_key_file: the certificate served)"
            ));
        }
    }
    if config.sentinel && !sentinel_on {
        return Err(invalid_input!(
            "tls_sentinel: the Sentinel port is off (set sentinel_addr)"
        ));
    }
    if files.raft_ca_cert.is_some() && !config.raft {
        return Err(invalid_input!(
            "tls_raft_ca_cert_file: applies to the raft links, and tls_raft is off"
        ));
    }
    if config.raft {
        if broker != BrokerKind::Raft {
            return Err(invalid_input!("tls_raft: needs -broker=raft"));
        }
        if files.ca_cert.is_none() && files.raft_ca_cert.is_none() {
            return Err(invalid_input!(
                "tls_raft_ca_cert_file: required with tls_raft (the cluster's CA, which every peer's certificate must be signed by), or tls_ca_cert_file"
            ));
        }
        if !identity {
            return Err(invalid_input!(
                "tls_cert_file: required with tls_raft (with tls_key_file: this daemon's certificate, presented to its peers)"
            ));
        }
    }
    Ok(())
}
