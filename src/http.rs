//! Shared HTTP client construction: timeouts, TLS trust (CA file, SHA-256
//! fingerprint pinning, or an explicit opt-out) and a retry policy for idempotent calls.

use std::{sync::Arc, time::Duration};

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use sha2::{Digest, Sha256};

use crate::config::TlsTrust;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("reading CA file {path}: {message}")]
    CaFile { path: String, message: String },
    #[error("building HTTP client: {0}")]
    Client(String),
}

/// A reqwest client for one endpoint. Never follows the system proxy: every
/// byte goes straight to the configured server.
pub fn client(tls: &TlsTrust, timeout: Duration) -> Result<reqwest::Client, BuildError> {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .no_proxy()
        .user_agent(concat!("homelab-operator/", env!("CARGO_PKG_VERSION")));
    let builder = match tls {
        TlsTrust::System => builder,
        TlsTrust::CaFile(path) => {
            let pem = std::fs::read(path).map_err(|e| BuildError::CaFile {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| BuildError::CaFile {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            if certs.is_empty() {
                return Err(BuildError::CaFile {
                    path: path.display().to_string(),
                    message: "no certificate in file".into(),
                });
            }
            certs.into_iter().fold(builder.tls_certs_only([]), |b, c| b.add_root_certificate(c))
        }
        TlsTrust::Fingerprint(hex) => {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| BuildError::Client(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(FingerprintVerifier {
                    sha256_hex: hex.clone(),
                    provider,
                }))
                .with_no_client_auth();
            builder.tls_backend_preconfigured(config)
        }
        TlsTrust::InsecureSkipVerify => builder.tls_danger_accept_invalid_certs(true),
    };
    builder.build().map_err(|e| BuildError::Client(e.to_string()))
}

/// SHA-256 fingerprint of a DER certificate, lower-case hex without colons.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Accepts exactly the certificate whose SHA-256 matches; the handshake
/// signature is still verified, so a stolen certificate without its key fails.
#[derive(Debug)]
struct FingerprintVerifier {
    sha256_hex: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint_sha256(end_entity.as_ref());
        if got == self.sha256_hex {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate fingerprint {got} does not match the configured fingerprint"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A reqwest error with its whole chain of causes (`error sending request: …: connection refused`).
/// Callers drop the URL first (`without_url`): it may hold a token.
pub fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The HTTP methods the Proxmox clients send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    /// GET and PUT of whole state may be repeated; POST creates and DELETE by
    /// position (PVE firewall rules) shifts what the next call addresses.
    pub fn idempotent(self) -> bool {
        matches!(self, Method::Get | Method::Put)
    }
}

/// Backoff for retrying idempotent calls on transient errors: exponential with
/// jitter and a cap, a few attempts only (the controller's own backoff takes over after).
pub fn retry_policy() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(3))
        .with_max_times(3)
        .with_jitter()
}
