//! `tls_insecure_skip_verify`: a server certificate verifier that accepts any
//! certificate, for test rigs only, and plain-words explanations of TLS failures.
//!
//! The verifier still checks the handshake's signatures (so the session is bound to
//! the key in the certificate presented), but not who signed the certificate nor the
//! name in it: anyone on the path can pose as the server. The daemon logs a warning at
//! start and on every reload when it is on.
//!
//! [`explain`] turns rustls's errors into what an operator can act on, naming the
//! setting to look at: a missing client certificate, a CA the other side does not
//! trust, a certificate for another name.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use std::sync::Arc;

/// Accepts every server certificate (see the module doc).
#[derive(Debug)]
pub struct NoVerification(Arc<CryptoProvider>);

impl NoVerification {
    pub fn new(provider: Arc<CryptoProvider>) -> NoVerification {
        NoVerification(provider)
    }
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Which end of a TLS session this daemon is, for [`explain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// This daemon dialed (a data node, a Raft peer); `true` when it has a client
    /// certificate to present.
    Client { has_cert: bool },
    /// This daemon accepted (its HTTP API, Sentinel port or Raft port).
    Server,
}

/// The rustls error inside an I/O error, if it is one.
pub fn tls_error(e: &std::io::Error) -> Option<&Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<Error>())
}

/// An I/O error in plain words: a TLS failure explained (see [`explain`]), anything
/// else as it is.
pub fn explain_io(e: &std::io::Error, side: Side) -> String {
    match tls_error(e) {
        Some(tls) => explain(tls, side),
        None => e.to_string(),
    }
}

/// A TLS failure in plain words, with rustls's own text after it.
pub fn explain(e: &Error, side: Side) -> String {
    let client = matches!(side, Side::Client { .. });
    let why = match (e, side) {
        (Error::AlertReceived(AlertDescription::CertificateRequired), _)
        | (Error::AlertReceived(AlertDescription::HandshakeFailure), Side::Client { has_cert: false }) => {
            "the server requires a client certificate and this daemon presented none (set tls_cert_file and tls_key_file)".to_string()
        }
        (
            Error::AlertReceived(
                alert @ (AlertDescription::UnknownCA
                | AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown
                | AlertDescription::AccessDenied
                | AlertDescription::DecryptError),
            ),
            Side::Client { .. },
        ) => format!(
            "the server refused this daemon's client certificate ({alert:?}): is tls_cert_file signed by a CA the server trusts?"
        ),
        (
            Error::AlertReceived(
                alert @ (AlertDescription::UnknownCA
                | AlertDescription::BadCertificate
                | AlertDescription::CertificateUnknown),
            ),
            Side::Server,
        ) => format!(
            "the peer refused this daemon's certificate ({alert:?}): it trusts another CA than the one that signed tls_cert_file"
        ),
        (Error::NoCertificatesPresented, Side::Server) => {
            "the peer presented no client certificate, and one signed by tls_ca_cert_file is required".to_string()
        }
        (Error::InvalidCertificate(cert), _) => certificate(cert, client),
        (Error::InvalidMessage(_), _) => {
            "what came is not TLS: does the other end speak TLS on this port?".to_string()
        }
        _ => return format!("TLS: {e}"),
    };
    format!("TLS: {why} ({e})")
}

/// A certificate the peer presented that this daemon refused.
fn certificate(e: &CertificateError, client: bool) -> String {
    let whose = if client {
        "the server's certificate"
    } else {
        "the peer's client certificate"
    };
    match e {
        CertificateError::UnknownIssuer => {
            format!(
                "{whose} is not signed by a CA in tls_ca_cert_file (or tls_raft_ca_cert_file, on the Raft port) (unknown issuer)"
            )
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "{whose} is not valid for the name this daemon expects (wrong server name: its subject alternative names do not include the address's host, or tls_server_name)"
            )
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("{whose} has expired")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("{whose} is not valid yet (check the clocks)")
        }
        CertificateError::BadSignature => format!("{whose} has a bad signature"),
        _ => format!("{whose} was refused"),
    }
}
