//! Throw-away certificates for TLS tests (rcgen): a root CA and a server certificate it signs
//! for `localhost` and 127.0.0.1, and client certificates it signs.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// PEM texts of a test PKI.
pub struct Pki {
    /// The root CA certificate clients trust.
    pub ca: String,
    /// The server's certificate (signed by the CA).
    pub cert: String,
    /// The server's private key.
    pub key: String,
    /// The CA, to sign client certificates.
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// PEM texts of a client's certificate and key.
pub struct ClientCert {
    /// The certificate (signed by the test CA).
    pub cert: String,
    /// Its private key.
    pub key: String,
}

impl Pki {
    /// A fresh CA and server certificate.
    pub fn new() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        Self {
            ca: ca.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
            issuer: ca,
        }
    }
}

impl Pki {
    /// A client certificate for `name`, signed by this PKI's CA.
    #[allow(dead_code)] // not every test binary uses it
    pub fn client(&self, name: &str) -> ClientCert {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ClientCert {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}
