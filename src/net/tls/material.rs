//! Loading the daemon's TLS material from PEM files, and building the rustls
//! configurations from it.
//!
//! Kept apart from the handle (`mod.rs`) so that "read and check the files" is one
//! function that either yields every configuration or an error naming the file and the
//! setting: the handle swaps in the result whole, or keeps what it had.

use super::TlsOptions;
use super::verify::NoVerification;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// The largest certificate, key or CA file read: far above any real one, and a bound on
/// what a wrong path (`/dev/zero`) can cost.
pub const MAX_PEM_FILE: u64 = 1024 * 1024;

/// A failure to load the material: which setting, and why (the path included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The setting whose file is at fault (`tls_cert_file`, ...).
    pub key: &'static str,
    pub reason: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Every configuration built from one reading of the files.
pub struct Built {
    /// Towards data nodes: server verified against the CA (or not at all, with
    /// `tls_insecure_skip_verify`), this daemon's certificate as the client certificate.
    /// None without a CA file (and without skipping verification).
    pub client: Option<Arc<ClientConfig>>,
    /// For the HTTP API and the Sentinel port: this daemon's certificate, no client
    /// certificates asked. None without a certificate.
    pub server: Option<Arc<ServerConfig>>,
    /// The Raft dialer: the peer verified against the Raft CA (`tls_raft_ca_cert_file`,
    /// else the CA), this daemon's certificate presented. None unless both are there.
    pub raft_client: Option<Arc<ClientConfig>>,
    /// The Raft acceptor: a client certificate from the Raft CA required. None unless
    /// both that CA and a certificate are there.
    pub raft_server: Option<Arc<ServerConfig>>,
    /// Whether a client certificate is presented to data nodes.
    pub has_client_cert: bool,
    /// One line saying what was loaded, for the log.
    pub summary: String,
}

/// This daemon's certificate chain and key.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// The crypto provider: ring (see the module doc of `tls`).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the files named in `options` and builds every configuration they allow.
pub fn build(options: &TlsOptions) -> Result<Built, LoadError> {
    let provider = provider();
    let roots = match &options.files.ca_cert {
        Some(path) => Some(Arc::new(read_roots("tls_ca_cert_file", path)?)),
        None => None,
    };
    // The Raft links trust their own CA when one is named, else the shared one.
    let raft_roots = match &options.files.raft_ca_cert {
        Some(path) => Some(Arc::new(read_roots("tls_raft_ca_cert_file", path)?)),
        None => roots.clone(),
    };
    let identity = match (&options.files.cert, &options.files.key) {
        (Some(cert), Some(key)) => Some(read_identity(cert, key, &provider)?),
        (None, None) => None,
        (Some(_), None) => return Err(err("tls_key_file", "required with tls_cert_file")),
        (None, Some(_)) => return Err(err("tls_cert_file", "required with tls_key_file")),
    };
    let fail = |key: &'static str| move |e: rustls::Error| err(key, &e.to_string());
    let client = data_node_client(options, roots.as_ref(), identity.as_ref(), &provider)
        .map_err(fail("tls_cert_file"))?;
    let server = match &identity {
        Some(id) => Some(Arc::new(
            ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(fail("tls_cert_file"))?
                .with_no_client_auth()
                .with_single_cert(id.chain.clone(), id.key.clone_key())
                .map_err(fail("tls_cert_file"))?,
        )),
        None => None,
    };
    let (raft_client, raft_server) = match (&raft_roots, &identity) {
        (Some(roots), Some(id)) => {
            let (client, server) = raft_configs(roots, id, &provider)?;
            (Some(client), Some(server))
        }
        _ => (None, None),
    };
    Ok(Built {
        client,
        server,
        raft_client,
        raft_server,
        has_client_cert: identity.is_some(),
        summary: summary(options, roots.as_deref(), identity.as_ref()),
    })
}

fn err(key: &'static str, reason: &str) -> LoadError {
    LoadError {
        key,
        reason: reason.to_string(),
    }
}

/// The configuration towards data nodes, when servers can be verified (or verification
/// is skipped on purpose).
fn data_node_client(
    options: &TlsOptions,
    roots: Option<&Arc<RootCertStore>>,
    identity: Option<&Identity>,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<ClientConfig>>, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if options.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification::new(provider.clone())))
    } else {
        match roots {
            Some(roots) => builder.with_root_certificates(roots.clone()),
            None => return Ok(None),
        }
    };
    let config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(config)))
}

/// The Raft links' two ends: mutual TLS within the cluster's CA.
fn raft_configs(
    roots: &Arc<RootCertStore>,
    id: &Identity,
    provider: &Arc<CryptoProvider>,
) -> Result<(Arc<ClientConfig>, Arc<ServerConfig>), LoadError> {
    let fail = |key: &'static str| move |e: rustls::Error| err(key, &e.to_string());
    let client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(fail("tls_cert_file"))?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
        .map_err(fail("tls_cert_file"))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| err("tls_raft_ca_cert_file", &e.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(fail("tls_cert_file"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(fail("tls_cert_file"))?;
    // After the handshake nothing may flow from the acceptor to the dialer: the dialer
    // reads anything readable as "the peer has gone" (see `broker/raft/transport.rs`).
    server.send_tls13_tickets = 0;
    Ok((Arc::new(client), Arc::new(server)))
}

/// Reads a file of at most [`MAX_PEM_FILE`] bytes.
fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, LoadError> {
    let file = std::fs::File::open(path)
        .map_err(|e| err(key, &format!("{}: cannot read it: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(key, &format!("{}: cannot read it: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(err(
            key,
            &format!("{}: larger than {MAX_PEM_FILE} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

/// Every certificate of a PEM file; at least one.
fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let bytes = read_file(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(key, &format!("{}: unreadable PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(err(
            key,
            &format!(
                "{}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\" blocks)",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

fn read_roots(key: &'static str, path: &Path) -> Result<RootCertStore, LoadError> {
    let mut roots = RootCertStore::empty();
    for (n, cert) in read_certs(key, path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            err(
                key,
                &format!(
                    "{}: certificate {} is not a usable CA: {e}",
                    path.display(),
                    n + 1
                ),
            )
        })?;
    }
    Ok(roots)
}

fn read_identity(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Identity, LoadError> {
    let chain = read_certs("tls_cert_file", cert)?;
    let bytes = read_file("tls_key_file", key)?;
    let private = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        err(
            "tls_key_file",
            &format!(
                "{}: no private key in it (expected PEM \"BEGIN PRIVATE KEY\", RSA or EC): {e}",
                key.display()
            ),
        )
    })?;
    // The key must be usable, and must be the certificate's.
    rustls::sign::CertifiedKey::from_der(chain.clone(), private.clone_key(), provider).map_err(
        |e| {
            err(
                "tls_key_file",
                &format!(
                    "{}: does not go with {} ({e})",
                    key.display(),
                    cert.display()
                ),
            )
        },
    )?;
    Ok(Identity {
        chain,
        key: private,
    })
}

/// What was loaded, in one line: the files and the fingerprint of this daemon's
/// certificate (so a log shows which one is in use after a reload).
fn summary(options: &TlsOptions, roots: Option<&RootCertStore>, id: Option<&Identity>) -> String {
    let mut parts = Vec::new();
    if let (Some(id), Some(path)) = (id, &options.files.cert) {
        let fingerprint = id
            .chain
            .first()
            .map(|c| super::fingerprint(c.as_ref()))
            .unwrap_or_default();
        parts.push(format!(
            "certificate {} (SHA-256 {fingerprint})",
            path.display()
        ));
    }
    if let (Some(roots), Some(path)) = (roots, &options.files.ca_cert) {
        parts.push(format!(
            "{} CA certificate(s) from {}",
            roots.len(),
            path.display()
        ));
    }
    if let Some(path) = &options.files.raft_ca_cert {
        parts.push(format!("the Raft peers' CA from {}", path.display()));
    }
    if parts.is_empty() {
        parts.push("no certificate or CA".into());
    }
    parts.join(", ")
}
