//! rustls configuration shared by the HTTPS listener, the MQTT and REST transports and
//! `clockctl`. One crypto provider (ring) everywhere, TLS 1.2 and 1.3 only.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A TLS set-up problem, naming the file or variable involved.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain; `var` names the variable for error messages.
pub fn load_certs(path: &Path, var: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            TlsError(format!(
                "{var}={}: cannot read certificates: {e}",
                path.display()
            ))
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("{var}={}: invalid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{var}={}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path, var: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        TlsError(format!(
            "{var}={}: cannot read a PEM private key: {e}",
            path.display()
        ))
    })
}

/// The HTTPS listener's configuration (`TLS_CERT_FILE`/`TLS_KEY_FILE`).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&files.cert, "TLS_CERT_FILE")?;
    let key = load_key(&files.key, "TLS_KEY_FILE")?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsError(format!(
                "TLS_CERT_FILE/TLS_KEY_FILE: the key does not fit the certificate: {e}"
            ))
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Options for an outbound TLS client.
#[derive(Debug, Default, Clone)]
pub struct ClientTls<'a> {
    /// Extra CA to trust besides the system store (`MQTT_CA_FILE`, `CLOCK_REST_CA_FILE`).
    pub ca_file: Option<(&'a Path, &'a str)>,
    /// Client certificate and key for mutual TLS, with the variable names for errors.
    pub client_cert: Option<(&'a TlsFiles, &'a str, &'a str)>,
    /// Skip server verification (only with both insecure flags; see config).
    pub insecure_skip_verify: bool,
}

/// The system trust store (honours `SSL_CERT_FILE` and `SSL_CERT_DIR`) plus an optional CA.
pub fn root_store(ca_file: Option<(&Path, &str)>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // Unparseable system certificates are skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some((path, var)) = ca_file {
        for cert in load_certs(path, var)? {
            roots.add(cert).map_err(|e| {
                TlsError(format!(
                    "{var}={}: unusable CA certificate: {e}",
                    path.display()
                ))
            })?;
        }
    }
    Ok(roots)
}

/// A client configuration for outbound connections.
pub fn client_config(opts: &ClientTls<'_>) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS: {e}")))?;
    let builder = if opts.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    } else {
        builder.with_root_certificates(root_store(opts.ca_file)?)
    };
    match opts.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((files, cert_var, key_var)) => {
            let certs = load_certs(&files.cert, cert_var)?;
            let key = load_key(&files.key, key_var)?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                TlsError(format!(
                    "{cert_var}/{key_var}: the key does not fit the certificate: {e}"
                ))
            })
        }
    }
}

/// Accepts any server certificate (MQTT_TLS_INSECURE_SKIP_VERIFY with ALLOW_INSECURE_TLS_VERIFY).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
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

/// A client configuration that accepts only the certificate whose SHA-256 (of its DER
/// bytes) is `pin`, whatever its names, dates or issuer: how a device with a self-signed
/// certificate is reached (a LaMetric clock, SPEC 8.3). The handshake's signatures are
/// still verified with the provider's algorithms, so only the holder of that
/// certificate's key can complete it.
pub fn pinned_client_config(pin: [u8; 32]) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
            pin,
            provider: provider(),
        }))
        .with_no_client_auth())
}

/// A client configuration that accepts any server certificate (a device's
/// `insecure_tls = true`; start-up warns).
pub fn insecure_client_config() -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
        .with_no_client_auth())
}

/// Accepts the one certificate whose SHA-256 is `pin`.
#[derive(Debug)]
struct PinnedCertificate {
    pin: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

/// The error of a certificate that is not the pinned one.
#[derive(Debug, thiserror::Error)]
#[error("the certificate's SHA-256 is {0}, not the pinned cert_sha256")]
struct NotPinned(String);

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
        if digest == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        let shown: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(Arc::new(NotPinned(
                shown.join(":"),
            )))),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
