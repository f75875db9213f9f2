//! TLS between the client library and the server: data round-trips (small, large, pipelined
//! from several threads), the token is still checked, a client that does not trust the
//! server's CA is refused for good, a clear-text client cannot talk to a TLS server, and the
//! binary serves TLS from `--tls-cert`/`--tls-key` files.

mod support;

use std::sync::Arc;
use std::time::Duration;

use farmem::backend::{Backend, BackendError, ClientTls, TcpBackend, TcpConfig};
use farmem_server::{Server, ServerConfig, ServerHandle, ServerTls};
use support::ServerProc;
use support::pki::Pki;

fn tls_server(pki: &Pki, token: Option<&[u8]>) -> ServerHandle {
    Server::start(ServerConfig {
        tls: Some(ServerTls::from_pem(pki.cert.as_bytes(), pki.key.as_bytes()).unwrap()),
        token: token.map(<[u8]>::to_vec),
        ..Default::default()
    })
    .unwrap()
}

fn config(addr: &str, pki: &Pki) -> TcpConfig {
    TcpConfig::new([addr])
        .timeout(Duration::from_secs(10))
        .tls(ClientTls::from_ca_pem(pki.ca.as_bytes()).unwrap())
}

fn object(id: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (id as usize * 31 + i * 7) as u8).collect()
}

#[test]
fn data_round_trips_over_tls() {
    let pki = Pki::new();
    let server = tls_server(&pki, Some(b"sesame"));
    let b = Arc::new(
        TcpBackend::connect(
            config(&server.addr().to_string(), &pki)
                .token(b"sesame".to_vec())
                .connections_per_server(2),
        )
        .unwrap(),
    );
    b.put(1, b"hello").unwrap();
    assert_eq!(b.get(1).unwrap(), b"hello");
    // Larger than a TLS record and than the server's read buffer.
    let big = object(2, 3 << 20);
    b.put(2, &big).unwrap();
    assert_eq!(b.get(2).unwrap(), big);
    // Pipelined requests from several threads sharing the connections.
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let b = b.clone();
            std::thread::spawn(move || {
                for round in 0..20u64 {
                    let ids: Vec<u64> = (0..32).map(|i| 1000 * (t + 1) + i).collect();
                    let tickets: Vec<_> = ids
                        .iter()
                        .map(|&id| b.submit_put(id, &object(id ^ round, 100)).unwrap())
                        .collect();
                    b.flush();
                    for tk in tickets {
                        b.wait_done(tk).unwrap();
                    }
                    for &id in &ids {
                        assert_eq!(b.get(id).unwrap(), object(id ^ round, 100));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.stats().objects, 2 + 4 * 32);
}

#[test]
fn the_token_is_still_required_over_tls() {
    let pki = Pki::new();
    let server = tls_server(&pki, Some(b"sesame"));
    let r = TcpBackend::connect(config(&server.addr().to_string(), &pki).token(b"wrong".to_vec()));
    assert!(matches!(r, Err(BackendError::AuthRefused { .. })), "{r:?}");
}

#[test]
fn a_server_whose_certificate_is_not_trusted_is_refused() {
    let pki = Pki::new();
    let other = Pki::new();
    let server = tls_server(&pki, None);
    let r = TcpBackend::connect(config(&server.addr().to_string(), &other));
    let Err(BackendError::Unreachable { source, .. }) = r else {
        panic!("connected to an untrusted server: {r:?}");
    };
    assert_eq!(source.kind(), std::io::ErrorKind::InvalidData);
    // Nor one whose certificate names another host.
    let tls = ClientTls::from_ca_pem(pki.ca.as_bytes())
        .unwrap()
        .server_name("elsewhere.example")
        .unwrap();
    let r = TcpBackend::connect(
        TcpConfig::new([server.addr()])
            .timeout(Duration::from_secs(10))
            .tls(tls),
    );
    assert!(matches!(r, Err(BackendError::Unreachable { .. })), "{r:?}");
}

#[test]
fn clear_text_and_tls_do_not_mix() {
    let pki = Pki::new();
    let server = tls_server(&pki, None);
    let r = TcpBackend::connect(
        TcpConfig::new([server.addr()])
            .timeout(Duration::from_secs(2))
            .reconnect_within(Duration::from_secs(1)),
    );
    assert!(
        r.is_err(),
        "a clear-text hello was answered by a TLS server"
    );
    // The server still serves TLS clients.
    let b = TcpBackend::connect(config(&server.addr().to_string(), &pki)).unwrap();
    b.put(7, b"still here").unwrap();
    assert_eq!(b.get(7).unwrap(), b"still here");
    // A TLS client against a clear-text server fails too.
    let plain = Server::start(ServerConfig::default()).unwrap();
    let r = TcpBackend::connect(config(&plain.addr().to_string(), &pki));
    assert!(r.is_err(), "a TLS client talked to a clear-text server");
}

#[test]
fn the_binary_serves_tls_from_pem_files() {
    let pki = Pki::new();
    let dir = std::env::temp_dir().join(format!("farmem-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert, &pki.cert).unwrap();
    std::fs::write(&key, &pki.key).unwrap();
    let server = ServerProc::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let b = TcpBackend::connect(config(&server.addr, &pki)).unwrap();
    b.put(3, b"over tls").unwrap();
    assert_eq!(b.get(3).unwrap(), b"over tls");
    drop(b);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}
