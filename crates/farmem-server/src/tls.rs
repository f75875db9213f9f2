//! TLS for client connections (rustls with the ring provider): the server's certificate chain
//! and private key, loaded once and shared by every connection, and optionally the CA whose
//! client certificates the server requires.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::ServerError;

/// The server's TLS identity: clients verify its certificate chain against their root CA and
/// still present the token in their hello.
///
/// With [`ServerTls::client_ca`], every client must also present a certificate that CA signed
/// (mutual TLS); a client without one, or with one another CA signed, is refused during the
/// handshake, before it can send a frame. The certificate adds to the token: a server with a
/// token file checks both (the certificate says which machine may connect, the token which
/// program); a server without one lets every client holding a valid certificate in.
///
/// ```no_run
/// let cert = std::fs::read("server.crt").unwrap();
/// let key = std::fs::read("server.key").unwrap();
/// let clients_ca = std::fs::read("clients-ca.crt").unwrap();
/// let tls = farmem_server::ServerTls::from_pem(&cert, &key)
///     .unwrap()
///     .client_ca(&clients_ca)
///     .unwrap();
/// let config = farmem_server::ServerConfig {
///     tls: Some(tls),
///     ..Default::default()
/// };
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    clients_verified: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("client_certificates_required", &self.clients_verified)
            .finish_non_exhaustive()
    }
}

fn tls_error(
    what: &'static str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> ServerError {
    move |source| ServerError::Tls { what, source }
}

/// Every certificate in `pem` (at least one).
fn certificates(
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(what)(Box::new(e)))?;
    if certs.is_empty() {
        return Err(tls_error(what)("no certificate in the PEM".into()));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // ring keeps the dependency tree lean (no C++/cmake build); rustls deprecates it only for
    // lacking post-quantum key exchange.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ServerTls {
    /// A TLS identity from a PEM certificate chain (the server's certificate first) and a PEM
    /// private key (PKCS#8, PKCS#1 or SEC1). Clients are not asked for certificates.
    ///
    /// # Errors
    /// [`ServerError::Tls`] when the PEM cannot be parsed, holds no certificate, or the key
    /// does not fit the certificate.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, ServerError> {
        let chain = certificates(cert_chain, "reading the certificate chain")?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| tls_error("reading the private key")(Box::new(e)))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_error("choosing the protocol versions")(Box::new(e)))?;
        let config = builder
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| tls_error("pairing the certificate with its key")(Box::new(e)))?;
        Ok(Self {
            config: Arc::new(config),
            chain,
            key: Arc::new(key),
            clients_verified: false,
        })
    }

    /// Requires every client to present a certificate signed by one of the CA certificates in
    /// `ca_pem` (`--tls-client-ca`); see the type's documentation for how it relates to the
    /// token.
    ///
    /// # Errors
    /// [`ServerError::Tls`] when the PEM holds no usable CA certificate.
    pub fn client_ca(self, ca_pem: &[u8]) -> Result<Self, ServerError> {
        let what = "reading the client CA";
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates(ca_pem, what)? {
            roots.add(cert).map_err(|e| tls_error(what)(Box::new(e)))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| tls_error("building the client verifier")(Box::new(e)))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_error("choosing the protocol versions")(Box::new(e)))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| tls_error("pairing the certificate with its key")(Box::new(e)))?;
        Ok(Self {
            config: Arc::new(config),
            clients_verified: true,
            ..self
        })
    }

    /// Whether clients must present a certificate ([`ServerTls::client_ca`]).
    pub fn requires_client_certificates(&self) -> bool {
        self.clients_verified
    }
}
