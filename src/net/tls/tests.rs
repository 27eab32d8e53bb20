//! The TLS module against certificates made here (rcgen): loading and its errors,
//! reload, and both session kinds talking to each other over loopback.

use super::*;
use crate::testing::temp_dir;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// A CA in `dir/<name>-ca.crt` and a loopback certificate it signed in
/// `dir/<name>.crt` / `.key`.
fn pki(dir: &Path, name: &str) -> TlsFiles {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let files = TlsFiles {
        ca_cert: Some(dir.join(format!("{name}-ca.crt"))),
        cert: Some(dir.join(format!("{name}.crt"))),
        key: Some(dir.join(format!("{name}.key"))),
        raft_ca_cert: None,
    };
    std::fs::write(files.ca_cert.as_ref().unwrap(), ca.pem()).unwrap();
    std::fs::write(files.cert.as_ref().unwrap(), leaf.pem()).unwrap();
    std::fs::write(files.key.as_ref().unwrap(), leaf_key.serialize_pem()).unwrap();
    files
}

fn load(files: TlsFiles) -> Result<Tls, LoadError> {
    Tls::load(TlsOptions {
        files,
        ..TlsOptions::default()
    })
}

#[test]
fn bad_files_name_their_setting() {
    let dir = temp_dir("bad");
    let good = pki(&dir, "a");
    let other = pki(&dir, "b");
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "junk").unwrap();
    let cases = [
        (
            TlsFiles {
                ca_cert: Some(dir.join("missing.pem")),
                ..good.clone()
            },
            "tls_ca_cert_file",
        ),
        (
            TlsFiles {
                cert: Some(junk.clone()),
                ..good.clone()
            },
            "tls_cert_file",
        ),
        (
            TlsFiles {
                key: Some(junk),
                ..good.clone()
            },
            "tls_key_file",
        ),
        (
            TlsFiles {
                key: other.key.clone(),
                ..good.clone()
            },
            "tls_key_file",
        ),
        (
            TlsFiles {
                key: None,
                ..good.clone()
            },
            "tls_key_file",
        ),
    ];
    for (files, key) in cases {
        let e = load(files.clone())
            .err()
            .unwrap_or_else(|| panic!("{files:?}"));
        assert_eq!(e.key, key, "{e}");
    }
    assert!(load(good).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reload_swaps_the_material_or_keeps_the_old_one() {
    let dir = temp_dir("reload");
    let files = pki(&dir, "a");
    let tls = load(files.clone()).unwrap();
    let first = tls.summary();
    let next = pki(&dir, "b");
    std::fs::copy(next.cert.as_ref().unwrap(), files.cert.as_ref().unwrap()).unwrap();
    std::fs::copy(next.key.as_ref().unwrap(), files.key.as_ref().unwrap()).unwrap();
    let second = tls.reload().unwrap();
    assert_ne!(first, second);
    std::fs::write(files.key.as_ref().unwrap(), "broken").unwrap();
    let e = tls.reload().unwrap_err();
    assert_eq!(e.key, "tls_key_file", "{e}");
    assert_eq!(tls.summary(), second, "the material before stays");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A connected pair of sockets on loopback.
fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

#[test]
fn blocking_streams_do_mutual_tls_and_refuse_a_missing_certificate() {
    let dir = temp_dir("mtls");
    let files = pki(&dir, "a");
    let tls = load(files.clone()).unwrap();
    let (client, server) = pair();
    let acceptor = std::thread::spawn({
        let conn = tls.raft_server_connection().unwrap();
        move || {
            let stream = Stream::server(server, conn);
            stream.handshake(Duration::from_secs(5))?;
            let mut buf = [0u8; 4];
            (&stream).read_exact(&mut buf).map_err(|e| e.to_string())?;
            Ok::<_, String>(buf)
        }
    });
    let conn = tls.raft_client_connection("127.0.0.1").unwrap();
    let stream = Stream::client(client, conn, true);
    stream.handshake(Duration::from_secs(5)).unwrap();
    (&stream).write_all(b"ping").unwrap();
    assert_eq!(acceptor.join().unwrap().unwrap(), *b"ping");

    // Without a client certificate, the acceptor says so.
    let ca_only = load(TlsFiles {
        cert: None,
        key: None,
        ..files
    })
    .unwrap();
    let (client, server) = pair();
    let acceptor = std::thread::spawn({
        let conn = tls.raft_server_connection().unwrap();
        move || Stream::server(server, conn).handshake(Duration::from_secs(5))
    });
    let conn = ca_only.client_connection("127.0.0.1").unwrap();
    let stream = Stream::client(client, conn, false);
    let _ = stream.handshake(Duration::from_secs(5));
    let _ = (&stream).write_all(b"ping");
    let e = acceptor.join().unwrap().unwrap_err();
    assert!(e.contains("presented no client certificate"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_non_blocking_session_serves_a_blocking_client() {
    let dir = temp_dir("session");
    let files = pki(&dir, "a");
    let tls = load(files).unwrap();
    let (client, server) = pair();
    server.set_nonblocking(true).unwrap();
    let mut session = Session::new(tls.server_connection().unwrap(), server);
    let client = std::thread::spawn({
        let conn = tls.client_connection("127.0.0.1").unwrap();
        move || {
            let mut stream = Stream::client(client, conn, true);
            stream.handshake(Duration::from_secs(5)).unwrap();
            stream.write_all(b"ping").unwrap();
            let mut buf = [0u8; 4];
            stream.read_exact(&mut buf).unwrap();
            buf
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < 4 {
        assert!(Instant::now() < deadline, "no ping; got {got:?}");
        let mut buf = [0u8; 16];
        match session.read(&mut buf) {
            Ok(0) => panic!("closed"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                session.flush().unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, b"ping");
    assert_eq!(session.write(b"pong").unwrap(), 4);
    while session.wants_write() {
        session.flush().unwrap();
    }
    assert_eq!(client.join().unwrap(), *b"pong");
    let _ = std::fs::remove_dir_all(&dir);
}
