//! Mutual TLS: a server started with a client CA serves clients whose certificate that CA
//! signed, refuses (with `AuthRefused`, at once) a client without a certificate or with one
//! another CA signed, and still checks the token of a client with a good certificate.

mod support;

use std::time::Duration;

use farmem::backend::{Backend, BackendError, ClientTls, TcpBackend, TcpConfig};
use farmem_server::{Server, ServerConfig, ServerHandle, ServerTls};
use support::ServerProc;
use support::pki::Pki;

/// A TLS server whose clients need a certificate `clients` signed.
fn mtls_server(pki: &Pki, clients: &Pki, token: Option<&[u8]>) -> ServerHandle {
    let tls = ServerTls::from_pem(pki.cert.as_bytes(), pki.key.as_bytes())
        .unwrap()
        .client_ca(clients.ca.as_bytes())
        .unwrap();
    assert!(tls.requires_client_certificates());
    Server::start(ServerConfig {
        tls: Some(tls),
        token: token.map(<[u8]>::to_vec),
        ..Default::default()
    })
    .unwrap()
}

/// A client trusting `pki`'s CA, presenting a certificate `signer` signed (if any).
fn config(addr: &str, pki: &Pki, signer: Option<&Pki>) -> TcpConfig {
    let mut tls = ClientTls::from_ca_pem(pki.ca.as_bytes()).unwrap();
    if let Some(s) = signer {
        let c = s.client("client-1");
        tls = tls
            .client_cert(c.cert.as_bytes(), c.key.as_bytes())
            .unwrap();
    }
    TcpConfig::new([addr])
        .timeout(Duration::from_secs(10))
        .reconnect_within(Duration::from_secs(5))
        .tls(tls)
}

#[test]
fn a_client_with_a_certificate_the_ca_signed_is_served() {
    let (pki, clients) = (Pki::new(), Pki::new());
    let server = mtls_server(&pki, &clients, None);
    let b = TcpBackend::connect(config(&server.addr().to_string(), &pki, Some(&clients))).unwrap();
    b.put(1, b"mutual").unwrap();
    assert_eq!(b.get(1).unwrap(), b"mutual");
}

#[test]
fn a_client_without_a_certificate_is_refused_with_a_typed_error() {
    let (pki, clients) = (Pki::new(), Pki::new());
    let server = mtls_server(&pki, &clients, None);
    let r = TcpBackend::connect(config(&server.addr().to_string(), &pki, None));
    assert!(matches!(r, Err(BackendError::AuthRefused { .. })), "{r:?}");
    assert_eq!(server.stats().sessions, 0);
}

#[test]
fn a_certificate_another_ca_signed_is_refused_with_a_typed_error() {
    let (pki, clients, stranger) = (Pki::new(), Pki::new(), Pki::new());
    let server = mtls_server(&pki, &clients, None);
    let r = TcpBackend::connect(config(&server.addr().to_string(), &pki, Some(&stranger)));
    assert!(matches!(r, Err(BackendError::AuthRefused { .. })), "{r:?}");
    // The server's own CA does not sign clients here either.
    let r = TcpBackend::connect(config(&server.addr().to_string(), &pki, Some(&pki)));
    assert!(matches!(r, Err(BackendError::AuthRefused { .. })), "{r:?}");
    assert_eq!(server.stats().sessions, 0);
    // A good client still gets in afterwards.
    let b = TcpBackend::connect(config(&server.addr().to_string(), &pki, Some(&clients))).unwrap();
    b.put(2, b"ok").unwrap();
}

#[test]
fn the_token_is_checked_on_top_of_the_certificate() {
    let (pki, clients) = (Pki::new(), Pki::new());
    let server = mtls_server(&pki, &clients, Some(b"sesame"));
    let addr = server.addr().to_string();
    let r = TcpBackend::connect(config(&addr, &pki, Some(&clients)).token(b"wrong".to_vec()));
    assert!(matches!(r, Err(BackendError::AuthRefused { .. })), "{r:?}");
    let r = TcpBackend::connect(config(&addr, &pki, None).token(b"sesame".to_vec()));
    assert!(matches!(r, Err(BackendError::AuthRefused { .. })), "{r:?}");
    let b =
        TcpBackend::connect(config(&addr, &pki, Some(&clients)).token(b"sesame".to_vec())).unwrap();
    b.put(3, b"both").unwrap();
    assert_eq!(b.get(3).unwrap(), b"both");
}

#[test]
fn the_binary_requires_client_certificates_from_tls_client_ca() {
    let (pki, clients) = (Pki::new(), Pki::new());
    let dir = std::env::temp_dir().join(format!("farmem-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (cert, key, ca) = (
        file("server.crt", &pki.cert),
        file("server.key", &pki.key),
        file("clients.crt", &clients.ca),
    );
    let server = ServerProc::start(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
    ]);
    let b = TcpBackend::connect(config(&server.addr, &pki, Some(&clients))).unwrap();
    b.put(4, b"from the binary").unwrap();
    assert_eq!(b.get(4).unwrap(), b"from the binary");
    let r = TcpBackend::connect(config(&server.addr, &pki, None));
    assert!(matches!(r, Err(BackendError::AuthRefused { .. })), "{r:?}");
    drop(b);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}
