//! TLS for `mqtts://`: the trust store (system roots plus `MQTT_CA_FILE`) and the optional
//! client certificate, in the form the `mqtt5` client takes.
//!
//! The `mqtt5` client builds its own rustls configuration from certificates, so this module
//! hands it certificates rather than a `rustls::ClientConfig`. The policy is the one of
//! [`crate::tls::client_config`], which is called first so that every problem (unreadable
//! file, bad PEM, key that does not fit the certificate) stops the start-up with an error
//! naming the variable, instead of surfacing later as a failed handshake.

use std::net::{Ipv4Addr, SocketAddr};

use mqtt5::transport::TlsConfig;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

use super::CONNECT_TIMEOUT;
use crate::config::MqttConfig;
use crate::tls::{self, ClientTls, TlsError};

/// The TLS settings for the broker in `config`. The address is a placeholder: each
/// connection attempt resolves the host again and fills it in.
pub(super) fn broker_tls(config: &MqttConfig) -> Result<TlsConfig, TlsError> {
    // `mqtt5` builds its rustls configuration with the process-wide default provider. Make
    // that ring, as everywhere else here, so that a second provider linked in one day
    // cannot make rustls panic (rustls/rustls#2070). An already installed default stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_file = config.ca_file.as_deref().map(|p| (p, "MQTT_CA_FILE"));
    let client_cert = config
        .client_cert
        .as_ref()
        .map(|files| (files, "MQTT_CLIENT_CERT_FILE", "MQTT_CLIENT_KEY_FILE"));
    tls::client_config(&ClientTls {
        ca_file,
        client_cert,
        insecure_skip_verify: config.insecure_skip_verify,
    })?;

    let placeholder = SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.port));
    let mut out = TlsConfig::new(placeholder, config.host.clone())
        .with_connect_timeout(CONNECT_TIMEOUT)
        // `mqtt5`'s "system roots" are a bundled list; the system store is added below instead.
        .with_system_roots(false)
        .with_verify_server_cert(!config.insecure_skip_verify);
    if !config.insecure_skip_verify {
        let mut roots = system_roots();
        if let Some((path, var)) = ca_file {
            roots.extend(tls::load_certs(path, var)?);
        }
        if roots.is_empty() {
            return Err(TlsError(
                "MQTT_BROKER_URL uses mqtts:// but no CA is trusted: the system trust store is empty and MQTT_CA_FILE is not set".to_owned(),
            ));
        }
        out.root_certs = Some(roots);
    }
    if let Some(files) = &config.client_cert {
        out.client_cert = Some(tls::load_certs(&files.cert, "MQTT_CLIENT_CERT_FILE")?);
        out.client_key = Some(tls::load_key(&files.key, "MQTT_CLIENT_KEY_FILE")?);
    }
    Ok(out)
}

/// The system trust store (honours `SSL_CERT_FILE` and `SSL_CERT_DIR`). Certificates rustls
/// cannot use are left out here, because `mqtt5` rejects the whole list if one is unusable.
fn system_roots() -> Vec<CertificateDer<'static>> {
    let mut probe = RootCertStore::empty();
    rustls_native_certs::load_native_certs()
        .certs
        .into_iter()
        .filter(|cert| probe.add(cert.clone()).is_ok())
        .collect()
}
