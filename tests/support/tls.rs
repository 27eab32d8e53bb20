//! TLS for the tests: certificates made here with rcgen (no key material is kept in
//! the repository), TLS-only `redis-server` processes (`--port 0 --tls-port N`), a
//! daemon served over HTTPS, and a small TLS client.

use super::{TempDir, free_port, wait_until};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// The certificate's DER, to compare with what a server presents.
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_file(&self.cert)
            .expect("read certificate")
            .to_vec()
    }
}

/// A CA and the certificates it issues, written under one temporary directory.
pub struct Pki {
    pub dir: TempDir,
    /// The CA's certificate (PEM).
    pub ca: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
    serial: std::cell::Cell<u32>,
}

impl Pki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Pki {
        let dir = TempDir::new(&format!("pki-{name}"));
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, issuer.pem()).expect("write CA");
        Pki {
            dir,
            ca,
            issuer,
            serial: std::cell::Cell::new(0),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses), good for both TLS server
    /// and client use, written as `<file>.crt` and `<file>.key`.
    pub fn issue(&self, file: &str, names: &[&str]) -> CertFiles {
        self.serial.set(self.serial.get() + 1);
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{file} {}", self.serial.get()));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let files = CertFiles {
            cert: self.dir.path().join(format!("{file}.crt")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    /// A certificate for loopback (`127.0.0.1` and `localhost`).
    pub fn loopback(&self, file: &str) -> CertFiles {
        self.issue(file, &["127.0.0.1", "localhost"])
    }
}

/// The daemon's flags for its TLS material.
pub fn material_flags(ca: &Path, own: &CertFiles) -> Vec<String> {
    vec![
        format!("-tls_ca_cert_file={}", ca.display()),
        format!("-tls_cert_file={}", own.cert.display()),
        format!("-tls_key_file={}", own.key.display()),
    ]
}

/// A `redis-server` that speaks TLS only, with client certificates required (Redis's
/// default) and, for replicas, replication over TLS.
pub struct TlsRedis {
    pub port: u16,
    pub dir: TempDir,
    child: Option<Child>,
    args: Vec<String>,
    /// What the test's own redis-cli presents.
    ca: PathBuf,
    client: CertFiles,
}

impl TlsRedis {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A master (`replica_of` None) or a replica of the TLS-only server on that port.
    pub fn start(pki: &Pki, server: &CertFiles, replica_of: Option<u16>) -> TlsRedis {
        TlsRedis::start_with(pki, server, replica_of, &[])
    }

    /// The same, with more `redis-server` arguments (later ones win).
    pub fn start_with(
        pki: &Pki,
        server: &CertFiles,
        replica_of: Option<u16>,
        extra: &[String],
    ) -> TlsRedis {
        super::require_redis();
        let port = free_port();
        let dir = TempDir::new("tls-redis");
        let mut args: Vec<String> = [
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",
            "0",
            "--protected-mode",
            "no",
            "--tls-replication",
            "yes",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend([
            "--tls-port".to_string(),
            port.to_string(),
            "--tls-cert-file".to_string(),
            server.cert.display().to_string(),
            "--tls-key-file".to_string(),
            server.key.display().to_string(),
            "--tls-ca-cert-file".to_string(),
            pki.ca.display().to_string(),
            "--dir".to_string(),
            dir.path().display().to_string(),
        ]);
        if let Some(master) = replica_of {
            args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
        }
        args.extend(extra.iter().cloned());
        let mut redis = TlsRedis {
            port,
            dir,
            child: None,
            args,
            ca: pki.ca.clone(),
            client: server.clone(),
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log");
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        wait_until(Duration::from_secs(10), "a TLS redis-server", || {
            self.cli(&["PING"])
        });
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, on the same port and with the same arguments (an old master
    /// comes back as a master).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `redis-cli --tls` with the test's client certificate; the reply as text.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.client.cert)
            .arg("--key")
            .arg(&self.client.key)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || text.starts_with("ERR") || text.contains("Could not connect") {
            return Err(format!(
                "{text} {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(text)
    }

    /// A field of `INFO replication`.
    pub fn info_field(&self, field: &str) -> Result<String, String> {
        let info = self.cli(&["INFO", "replication"])?;
        info.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_string())
            .ok_or_else(|| format!("no {field} in {info}"))
    }

    /// Waits until `n` replicas are linked.
    pub fn wait_for_replicas(&self, n: usize) {
        wait_until(Duration::from_secs(20), "replicas linked over TLS", || {
            let linked = self.info_field("connected_slaves")?;
            if linked == n.to_string() {
                Ok(())
            } else {
                Err(linked)
            }
        });
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TLS client configuration trusting `ca`, presenting `client` when given.
pub fn client_config(ca: &Path, client: Option<&CertFiles>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA file") {
        roots.add(cert.expect("CA cert")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    Arc::new(match client {
        Some(files) => {
            let chain = vec![CertificateDer::from_pem_file(&files.cert).expect("cert")];
            let key = PrivateKeyDer::from_pem_file(&files.key).expect("key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
        None => builder.with_no_client_auth(),
    })
}

/// A TLS session to 127.0.0.1:port with its handshake done; the certificate the server
/// presented.
pub fn connect(
    port: u16,
    config: Arc<rustls::ClientConfig>,
) -> Result<
    (
        rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
        Vec<u8>,
    ),
    String,
> {
    let socket = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(conn, socket);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    let presented = stream
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Ok((stream, presented))
}

/// One HTTPS request (HTTP/1.0, so the body ends with the connection): (status, body,
/// the server's certificate).
pub fn https(
    port: u16,
    ca: &Path,
    method: &str,
    path: &str,
    headers: &[&str],
) -> Result<(u16, String, Vec<u8>), String> {
    let (mut stream, presented) = connect(port, client_config(ca, None))?;
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request =
        format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{extra}Content-Length: 0\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        // A server that closes without close_notify: what came is the answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body, presented))
}

/// A daemon whose HTTP API is HTTPS (so [`super::Daemon`]'s plain client cannot wait
/// for it): started with `-addr=127.0.0.1:port` plus `args`, logging to its directory.
pub struct HttpsDaemon {
    pub port: u16,
    pub dir: TempDir,
    pub ca: PathBuf,
    child: Option<Child>,
}

impl HttpsDaemon {
    pub fn start(ca: &Path, args: &[String]) -> HttpsDaemon {
        let port = free_port();
        let dir = TempDir::new("https-daemon");
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_redis-failover"))
            .arg(format!("-addr=127.0.0.1:{port}"))
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start redis-failover");
        let daemon = HttpsDaemon {
            port,
            dir,
            ca: ca.to_path_buf(),
            child: Some(child),
        };
        wait_until(Duration::from_secs(10), "the daemon's HTTPS API", || {
            daemon.get("/master").map(|_| ())
        });
        daemon
    }

    /// `GET path` over HTTPS: (status, body, the certificate served).
    pub fn get(&self, path: &str) -> Result<(u16, String, Vec<u8>), String> {
        https(self.port, &self.ca, "GET", path, &[])
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Sends a signal by name (`HUP`, ...).
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args(["-s", name, &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -s {name}: {status}");
        }
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for HttpsDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log());
        }
    }
}
