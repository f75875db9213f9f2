//! TLS settings of the client: the root CA that signs the memory servers' certificates.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Why a TLS setting cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The CA PEM could not be read.
    #[error("cannot read the CA certificate")]
    Pem(#[source] rustls::pki_types::pem::Error),
    /// The PEM held no certificate.
    #[error("the CA PEM holds no certificate")]
    NoCertificate,
    /// rustls refused the certificate or the settings.
    #[error("TLS setup refused")]
    Rustls(#[source] rustls::Error),
    /// The client certificate or its key PEM could not be read.
    #[error("cannot read the client certificate or key")]
    ClientPem(#[source] rustls::pki_types::pem::Error),
}

/// Connect to the memory servers over TLS, trusting the certificates a root CA signed (the
/// token is still presented in the hello). Each server's certificate must name the host of its
/// address (DNS name or IP address) unless [`ClientTls::server_name`] says otherwise.
///
/// ```no_run
/// use farmem::backend::{ClientTls, TcpConfig};
/// let ca = std::fs::read("ca.crt").unwrap();
/// let cfg = TcpConfig::new(["mem1.example:7070"])
///     .token(b"secret".to_vec())
///     .tls(ClientTls::from_ca_pem(&ca).unwrap());
/// # let _ = cfg;
/// ```
///
/// A server started with `--tls-client-ca` also wants a client certificate:
/// [`ClientTls::client_cert`].
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
    roots: Arc<rustls::RootCertStore>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the CA certificates in `pem`.
    ///
    /// # Errors
    /// [`TlsError::Pem`] or [`TlsError::NoCertificate`] for an unusable PEM,
    /// [`TlsError::Rustls`] when a certificate is refused as a root.
    pub fn from_ca_pem(pem: &[u8]) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            roots
                .add(cert.map_err(TlsError::Pem)?)
                .map_err(TlsError::Rustls)?;
        }
        if roots.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let roots = Arc::new(roots);
        let config = builder(&roots)?.with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
            roots,
            server_name: None,
        })
    }

    /// Presents the certificate chain `cert_pem` (the client's certificate first) and its
    /// private key `key_pem` (PKCS#8, PKCS#1 or SEC1) to servers that ask for one.
    ///
    /// ```no_run
    /// use farmem::backend::ClientTls;
    /// let tls = ClientTls::from_ca_pem(&std::fs::read("ca.crt").unwrap())
    ///     .unwrap()
    ///     .client_cert(
    ///         &std::fs::read("client.crt").unwrap(),
    ///         &std::fs::read("client.key").unwrap(),
    ///     )
    ///     .unwrap();
    /// # let _ = tls;
    /// ```
    ///
    /// # Errors
    /// [`TlsError::ClientPem`] or [`TlsError::NoCertificate`] for an unusable PEM,
    /// [`TlsError::Rustls`] when the key does not fit the certificate.
    pub fn client_cert(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(TlsError::ClientPem)?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(TlsError::ClientPem)?;
        let config = builder(&self.roots)?
            .with_client_auth_cert(chain, key)
            .map_err(TlsError::Rustls)?;
        self.config = Arc::new(config);
        Ok(self)
    }

    /// Checks every server's certificate against `name` instead of its address's host.
    ///
    /// # Errors
    /// [`TlsError::Rustls`] if `name` is neither a DNS name nor an IP address.
    pub fn server_name(mut self, name: &str) -> Result<Self, TlsError> {
        let n = ServerName::try_from(name.to_string())
            .map_err(|_| TlsError::Rustls(rustls::Error::General(format!("bad name {name:?}"))))?;
        self.server_name = Some(n);
        Ok(self)
    }

    /// A client session for the server at `addr` (`host:port`).
    pub(crate) fn session(&self, addr: &str) -> Result<rustls::ClientConnection, rustls::Error> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                ServerName::try_from(host.to_string())
                    .map_err(|_| rustls::Error::General(format!("bad server name {host:?}")))?
            }
        };
        rustls::ClientConnection::new(self.config.clone(), name)
    }
}

/// A TLS 1.3 client configuration trusting `roots`, before its client authentication.
fn builder(
    roots: &Arc<rustls::RootCertStore>,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, TlsError>
{
    // ring keeps the dependency tree lean; rustls deprecates it only for lacking post-quantum
    // key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Rustls)?
        .with_root_certificates(roots.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_without_a_certificate_is_refused() {
        assert!(matches!(
            ClientTls::from_ca_pem(b"not a pem"),
            Err(TlsError::NoCertificate)
        ));
    }
}
