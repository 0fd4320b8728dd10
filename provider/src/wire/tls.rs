//! go-plugin's AutoMTLS: a fresh server certificate per start, and a TLS server that accepts only
//! the one client certificate Terraform announced in `PLUGIN_CLIENT_CERT`.
//!
//! Terraform's client certificate is a self-signed ECDSA P-521 certificate marked as a CA, so the
//! usual WebPKI verifier (which rejects CA certificates as end entities) cannot be used; and pinning
//! the exact DER is stronger anyway: no other certificate, however it was signed, is accepted.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

/// The server's certificate, as announced in the handshake line, and its TLS configuration.
pub struct ServerTls {
    /// The certificate's DER, base64-encoded without padding for the handshake line.
    pub cert_base64: String,
    /// The rustls configuration.
    pub config: Arc<ServerConfig>,
}

/// Why AutoMTLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Terraform's announced certificate does not parse.
    #[error("PLUGIN_CLIENT_CERT is not a PEM certificate: {0}")]
    ClientCert(rustls::pki_types::pem::Error),
    /// The server certificate could not be made.
    #[error("cannot create the server certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("cannot configure TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// Creates a server certificate and a TLS configuration that pins `client_cert_pem`.
pub fn server_tls(client_cert_pem: &str) -> Result<ServerTls, TlsError> {
    let client =
        CertificateDer::from_pem_slice(client_cert_pem.as_bytes()).map_err(TlsError::ClientCert)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());

    // go-plugin's client trusts exactly this certificate and checks the name "localhost".
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "gpucap");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
        rcgen::KeyUsagePurpose::KeyCertSign,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = time_now();
    params.not_before = now - std::time::Duration::from_secs(30);
    params.not_after = now + std::time::Duration::from_secs(24 * 3600 * 30);
    let cert = params.self_signed(&key)?;
    let cert_der = cert.der().clone();

    let verifier = Arc::new(PinnedClientCert {
        pinned: client.into_owned(),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert_der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    // grpc-go refuses servers that do not negotiate HTTP/2 through ALPN.
    config.alpn_protocols = vec![b"h2".to_vec()];
    use base64::Engine as _;
    Ok(ServerTls {
        cert_base64: base64::engine::general_purpose::STANDARD_NO_PAD.encode(cert_der.as_ref()),
        config: Arc::new(config),
    })
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Accepts exactly one client certificate, byte for byte.
#[derive(Debug)]
struct PinnedClientCert {
    pinned: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for PinnedClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    // The handshake signature proves the client holds the pinned certificate's private key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
