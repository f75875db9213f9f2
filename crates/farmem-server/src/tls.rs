//! TLS for client connections (rustls with the ring provider): the server's certificate chain
//! and private key, loaded once and shared by every connection.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::ServerError;

/// The server's TLS identity: clients verify its certificate chain against their root CA and
/// still present the token in their hello.
///
/// ```no_run
/// let cert = std::fs::read("server.crt").unwrap();
/// let key = std::fs::read("server.key").unwrap();
/// let config = farmem_server::ServerConfig {
///     tls: Some(farmem_server::ServerTls::from_pem(&cert, &key).unwrap()),
///     ..Default::default()
/// };
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// A TLS identity from a PEM certificate chain (the server's certificate first) and a PEM
    /// private key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    /// [`ServerError::Tls`] when the PEM cannot be parsed, holds no certificate, or the key
    /// does not fit the certificate.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, ServerError> {
        let chain = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ServerError::Tls {
                what: "reading the certificate chain",
                source: Box::new(source),
            })?;
        if chain.is_empty() {
            return Err(ServerError::Tls {
                what: "reading the certificate chain",
                source: "no certificate in the PEM".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|source| ServerError::Tls {
            what: "reading the private key",
            source: Box::new(source),
        })?;
        // ring keeps the dependency tree lean (no C++/cmake build); rustls deprecates it only
        // for lacking post-quantum key exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|source| ServerError::Tls {
                what: "choosing the protocol versions",
                source: Box::new(source),
            })?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|source| ServerError::Tls {
                what: "pairing the certificate with its key",
                source: Box::new(source),
            })?;
        Ok(Self {
            config: Arc::new(config),
        })
    }
}
