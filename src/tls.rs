//! What TLS needs, for the XMPP link and the webhook client alike: the process-wide crypto
//! provider, and the client configuration that trusts the roots of a `tls_ca_file` or else the
//! system's.

/// rustls needs one process-wide crypto provider; installing it twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A TLS client configuration that trusts `roots` (from a `tls_ca_file`) when given, else the
/// system's roots through the platform verifier. Only the latter can fail.
pub(crate) fn client_config(
    roots: Option<&rustls::RootCertStore>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    use rustls_platform_verifier::ConfigVerifierExt as _;
    install_crypto_provider();
    match roots {
        Some(roots) => Ok(rustls::ClientConfig::builder()
            .with_root_certificates(roots.clone())
            .with_no_client_auth()),
        None => rustls::ClientConfig::with_platform_verifier(),
    }
}
