//! Throw-away certificates for TLS tests (rcgen): a root CA and a server certificate it signs
//! for `localhost` and 127.0.0.1.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// PEM texts of a test PKI.
pub struct Pki {
    /// The root CA certificate clients trust.
    pub ca: String,
    /// The server's certificate (signed by the CA).
    pub cert: String,
    /// The server's private key.
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
        }
    }
}
