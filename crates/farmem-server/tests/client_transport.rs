//! The TCP transport against real memory servers on loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use farmem::backend::{Backend, BackendError, TcpBackend, TcpConfig};
use farmem_server::{Server, ServerConfig, ServerHandle};

fn server(capacity: u64) -> ServerHandle {
    Server::start(ServerConfig {
        capacity,
        ..Default::default()
    })
    .expect("start server")
}

fn client(s: &ServerHandle) -> TcpBackend {
    TcpBackend::connect(TcpConfig::new([s.addr()]).timeout(Duration::from_secs(10)))
        .expect("connect")
}

/// Deterministic object contents with an embedded checksum of id and length.
fn object(id: u64, len: usize) -> Vec<u8> {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn basic_operations_round_trip() {
    let s = server(u64::MAX);
    let b = client(&s);
    b.put(1, b"hello").unwrap();
    assert_eq!(b.get(1).unwrap(), b"hello");
    let mut buf = [0u8; 5];
    b.get_into(1, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    assert!(matches!(
        b.get_into(1, &mut [0u8; 4]),
        Err(BackendError::SizeMismatch { .. })
    ));
    assert!(matches!(b.get(2), Err(BackendError::NotFound(2))));
    let items: Vec<(u64, Vec<u8>)> = (10..110).map(|i| (i, object(i, i as usize))).collect();
    let refs: Vec<(u64, &[u8])> = items.iter().map(|(i, d)| (*i, d.as_slice())).collect();
    b.put_many(&refs).unwrap();
    let ids: Vec<u64> = (10..110).collect();
    let got = b.get_many(&ids).unwrap();
    for ((_, want), got) in items.iter().zip(&got) {
        assert_eq!(want, got);
    }
    assert!(matches!(
        b.get_many(&[10, 999]),
        Err(BackendError::NotFound(999))
    ));
    b.patch_many(&[(10, &[(0, &[7u8; 3][..])]), (11, &[(10, &[9u8][..])])])
        .unwrap();
    assert_eq!(&b.get(10).unwrap()[..3], &[7, 7, 7]);
    assert_eq!(b.get(11).unwrap()[10], 9);
    assert!(matches!(
        b.patch(10, &[(9, &[1, 2])]),
        Err(BackendError::SizeMismatch { .. })
    ));
    assert!(matches!(
        b.patch(5, &[(0, &[1])]),
        Err(BackendError::NotFound(5))
    ));
    let st = b.stats().unwrap();
    assert_eq!(st.objects, 101);
    b.free(&ids).unwrap();
    assert_eq!(b.stats().unwrap().objects, 1);
    assert!(b.describe().starts_with("tcp://"));
}

#[test]
fn pipelined_tickets() {
    let s = server(u64::MAX);
    let b = client(&s);
    let tickets: Vec<_> = (0..200u64)
        .map(|i| b.submit_put(i, &object(i, 64)).unwrap())
        .collect();
    for t in tickets {
        b.wait_done(t).unwrap();
    }
    let tickets: Vec<_> = (0..200u64).map(|i| b.submit_get(i).unwrap()).collect();
    for (i, t) in tickets.into_iter().enumerate().rev() {
        assert_eq!(b.wait_get(t).unwrap(), object(i as u64, 64));
    }
    // Dropped tickets do not disturb later requests.
    for i in 0..10 {
        drop(b.submit_get(i).unwrap());
    }
    assert_eq!(b.get(3).unwrap(), object(3, 64));
}

#[test]
fn many_concurrent_clients_lose_nothing() {
    let s = server(u64::MAX);
    let addr = s.addr();
    let threads: Vec<_> = (0..8u64)
        .map(|c| {
            std::thread::spawn(move || {
                let b = Arc::new(
                    TcpBackend::connect(TcpConfig::new([addr]).connections_per_server(2)).unwrap(),
                );
                // Several threads share each client.
                let inner: Vec<_> = (0..3u64)
                    .map(|t| {
                        let b = b.clone();
                        std::thread::spawn(move || {
                            for i in 0..300u64 {
                                let id = (t << 32) | i;
                                let len = 1 + ((i * 37 + c) % 3000) as usize;
                                b.put(id, &object(id ^ c, len)).unwrap();
                            }
                            for i in 0..300u64 {
                                let id = (t << 32) | i;
                                let len = 1 + ((i * 37 + c) % 3000) as usize;
                                assert_eq!(b.get(id).unwrap(), object(id ^ c, len));
                            }
                        })
                    })
                    .collect();
                for t in inner {
                    t.join().unwrap();
                }
                let st = b.server_stats().unwrap();
                assert_eq!(st[0].session_objects, 900);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn capacity_exhaustion_and_recovery() {
    let s = server(64 << 10);
    let b = client(&s);
    let mut stored = Vec::new();
    let err = loop {
        let id = stored.len() as u64;
        match b.put(id, &object(id, 4000)) {
            Ok(()) => stored.push(id),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, BackendError::OutOfCapacity { .. }), "{err}");
    assert!(s.stats().used_bytes <= 64 << 10);
    for &id in &stored {
        assert_eq!(b.get(id).unwrap(), object(id, 4000));
    }
    b.free(&stored[..2]).unwrap();
    b.put(1000, &object(1000, 4000)).unwrap();
    assert_eq!(b.get(1000).unwrap(), object(1000, 4000));
}

#[test]
fn disconnect_frees_a_clients_memory() {
    let s = server(u64::MAX);
    let keep = client(&s);
    keep.put(1, &[1; 100]).unwrap();
    {
        let b = TcpBackend::connect(TcpConfig::new([s.addr()]).connections_per_server(3)).unwrap();
        let items: Vec<(u64, Vec<u8>)> = (0..50).map(|i| (i, vec![7; 1000])).collect();
        let refs: Vec<(u64, &[u8])> = items.iter().map(|(i, d)| (*i, d.as_slice())).collect();
        b.put_many(&refs).unwrap();
        assert_eq!(s.stats().objects, 51);
    }
    wait_until("session release", || s.stats().objects == 1);
    assert_eq!(s.stats().sessions, 1);
    assert_eq!(keep.get(1).unwrap(), vec![1; 100]);
}

#[test]
fn sixteen_mib_object() {
    let s = server(u64::MAX);
    let b = client(&s);
    let big = object(5, 16 << 20);
    b.put(5, &big).unwrap();
    assert_eq!(b.get(5).unwrap(), big);
    let got = b.get_many(&[5, 5]).unwrap();
    assert!(got.iter().all(|g| *g == big));
}

#[test]
fn garbage_from_one_client_does_not_disturb_another() {
    let s = server(u64::MAX);
    let good = client(&s);
    good.put(1, b"safe").unwrap();
    let mut bad = TcpStream::connect(s.addr()).unwrap();
    bad.write_all(&[0xAB; 4096]).unwrap();
    let mut sink = Vec::new();
    let _ = bad.read_to_end(&mut sink); // the server closes the connection
    // A frame with a bad checksum after a valid hello.
    let mut bad2 = TcpStream::connect(s.addr()).unwrap();
    let mut buf = Vec::new();
    farmem_proto::encode_request(
        &mut buf,
        1,
        &farmem_proto::Request::Hello {
            version: farmem_proto::VERSION,
            session: 0,
            token: &[],
            resume: 0,
        },
    );
    let start = buf.len();
    farmem_proto::encode_request(&mut buf, 2, &farmem_proto::Request::Get { id: 1 });
    buf[start + 4] ^= 1;
    bad2.write_all(&buf).unwrap();
    let _ = bad2.read_to_end(&mut sink);
    assert_eq!(good.get(1).unwrap(), b"safe");
    good.put(2, b"still").unwrap();
    assert_eq!(good.get(2).unwrap(), b"still");
}

#[test]
fn auth_required_and_refused() {
    let s = Server::start(ServerConfig {
        token: Some(b"sesame".to_vec()),
        ..Default::default()
    })
    .unwrap();
    let no = TcpBackend::connect(TcpConfig::new([s.addr()]));
    assert!(
        matches!(no, Err(BackendError::AuthRefused { .. })),
        "{:?}",
        no.err()
    );
    let wrong = TcpBackend::connect(TcpConfig::new([s.addr()]).token("sesamE"));
    assert!(matches!(wrong, Err(BackendError::AuthRefused { .. })));
    // A raw client that skips the hello is refused and nothing it sends is acted on.
    let mut raw = TcpStream::connect(s.addr()).unwrap();
    let mut buf = Vec::new();
    farmem_proto::encode_request(
        &mut buf,
        1,
        &farmem_proto::Request::Put { id: 1, data: b"x" },
    );
    raw.write_all(&buf).unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink);
    assert_eq!(s.stats().objects, 0);
    let ok = TcpBackend::connect(TcpConfig::new([s.addr()]).token("sesame")).unwrap();
    ok.put(1, b"open").unwrap();
    assert_eq!(ok.get(1).unwrap(), b"open");
}

#[test]
fn version_mismatch_is_typed() {
    let s = server(u64::MAX);
    let mut cfg = TcpConfig::new([s.addr()]);
    cfg.version = farmem_proto::VERSION + 1;
    match TcpBackend::connect(cfg) {
        Err(BackendError::VersionMismatch { server, client, .. }) => {
            assert_eq!(server, farmem_proto::VERSION);
            assert_eq!(client, farmem_proto::VERSION);
        }
        other => panic!("expected a version mismatch, got {:?}", other.err()),
    }
}

#[test]
fn dead_server_gives_typed_errors_without_hanging() {
    let s = server(u64::MAX);
    let addr = s.addr();
    let b = Arc::new(client(&s));
    b.put(1, b"x").unwrap();
    // Requests in flight when the server goes away fail promptly.
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || {
                let t0 = Instant::now();
                loop {
                    match b.get(1) {
                        Ok(_) => continue,
                        Err(e) => return (e, t0.elapsed()),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    s.shutdown();
    for w in waiters {
        let (e, _) = w.join().unwrap();
        assert!(matches!(e, BackendError::ServerDown { .. }), "{e}");
    }
    let t0 = Instant::now();
    assert!(matches!(b.get(1), Err(BackendError::ServerDown { .. })));
    assert!(t0.elapsed() < Duration::from_secs(1));
    let r = TcpBackend::connect(TcpConfig::new([addr]).timeout(Duration::from_secs(2)));
    assert!(
        matches!(r, Err(BackendError::Unreachable { .. })),
        "{:?}",
        r.err()
    );
}

#[test]
fn objects_spread_over_several_servers() {
    let (s1, s2) = (server(u64::MAX), server(u64::MAX));
    let b = TcpBackend::connect(TcpConfig::new([s1.addr(), s2.addr()])).unwrap();
    let items: Vec<(u64, Vec<u8>)> = (0..400).map(|i| (i, object(i, 100))).collect();
    let refs: Vec<(u64, &[u8])> = items.iter().map(|(i, d)| (*i, d.as_slice())).collect();
    b.put_many(&refs).unwrap();
    let (n1, n2) = (s1.stats().objects, s2.stats().objects);
    assert_eq!(n1 + n2, 400);
    assert!(n1 > 100 && n2 > 100, "{n1} / {n2}");
    let ids: Vec<u64> = (0..400).collect();
    assert_eq!(
        b.get_many(&ids).unwrap(),
        items.into_iter().map(|(_, d)| d).collect::<Vec<_>>()
    );
    assert_eq!(b.stats().unwrap().objects, 400);
}

#[test]
fn timeout_is_typed() {
    // A listener that accepts but never answers.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let hold = std::thread::spawn(move || l.accept().map(|(s, _)| s));
    let t0 = Instant::now();
    let r = TcpBackend::connect(TcpConfig::new([addr]).timeout(Duration::from_millis(300)));
    assert!(
        matches!(r, Err(BackendError::Timeout { .. })),
        "{:?}",
        r.err()
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    drop(hold.join());
}

#[test]
fn sliding_window_pipelining() {
    let s = server(u64::MAX);
    let b = client(&s);
    let data = [5u8; 64];
    for puts in [true, false] {
        let mut inflight = std::collections::VecDeque::new();
        for i in 0..50_000u64 {
            if inflight.len() == 16 {
                let t = inflight.pop_front().unwrap();
                if puts {
                    b.wait_done(t).unwrap();
                } else {
                    assert_eq!(b.wait_get(t).unwrap(), data);
                }
            }
            let id = i % 4096;
            inflight.push_back(if puts {
                b.submit_put(id, &data).unwrap()
            } else {
                b.submit_get(id).unwrap()
            });
        }
        for t in inflight {
            if puts {
                b.wait_done(t).unwrap();
            } else {
                assert_eq!(b.wait_get(t).unwrap(), data);
            }
        }
    }
}

#[test]
fn silent_connections_are_dropped_but_idle_clients_keep_their_objects() {
    let mut config = ServerConfig::default();
    config.limits.hello_timeout = Duration::from_millis(200);
    let s = Server::start(config).unwrap();
    let b = client(&s);
    b.put(1, b"kept").unwrap();
    // A connection that never says hello is told so (a refusal with request id 0) and closed
    // after the hello timeout.
    let mut silent = TcpStream::connect(s.addr()).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    let _ = silent.read_to_end(&mut got);
    let (refusal, _) = farmem_proto::decode_frame(&got, 1 << 20).unwrap().unwrap();
    assert_eq!(refusal.header.req_id, 0);
    assert!(t0.elapsed() < Duration::from_secs(5));
    // A client that said hello may stay quiet for longer than that.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.get(1).unwrap(), b"kept");
}

#[test]
fn pipelined_computes_complete_in_any_wait_order() {
    use farmem_proto::agent::{AgentMessage, HtPutArgs, op};
    let s = server(u64::MAX);
    let b = client(&s);
    let len_of = |r: Result<Vec<u8>, BackendError>| u64::decode(&r.unwrap()).unwrap();
    for t in 1..=8u64 {
        let put = HtPutArgs {
            table: t,
            return_old: false,
            entries: (0..t)
                .map(|i| (i.to_le_bytes().to_vec(), vec![1]))
                .collect(),
        };
        b.compute(t, op::HT_PUT, &put.encode()).unwrap();
    }
    // Eight operations in flight, collected in reverse order.
    let pending: Vec<_> = (1..=8u64)
        .map(|t| (t, b.submit_compute(t, op::HT_LEN, &t.encode())))
        .collect();
    for (t, p) in pending.into_iter().rev() {
        assert_eq!(len_of(p.wait()), t);
    }
    // A failing operation is a typed error and does not disturb the next one.
    let bad = b.submit_compute(1, u16::MAX, &[]);
    let good = b.submit_compute(3, op::HT_LEN, &3u64.encode());
    let e = bad.wait().unwrap_err();
    assert!(
        matches!(
            e,
            BackendError::RemoteAgent {
                code: farmem_store::agent::AgentErrorCode::UnknownOp,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.kind(), farmem::ErrorKind::ProtocolViolation);
    assert_eq!(len_of(good.wait()), 3);
    // An abandoned operation's answer is discarded.
    drop(b.submit_compute(2, op::HT_LEN, &2u64.encode()));
    assert_eq!(len_of(b.compute(2, op::HT_LEN, &2u64.encode())), 2);
    // In flight when the server goes away: a prompt typed error.
    let p = b.submit_compute(1, op::HT_LEN, &1u64.encode());
    s.shutdown();
    match p.wait() {
        Ok(v) => assert_eq!(u64::decode(&v).unwrap(), 1),
        Err(e) => assert!(matches!(e, BackendError::ServerDown { .. }), "{e}"),
    }
    let late = b.submit_compute(1, op::HT_LEN, &1u64.encode()).wait();
    assert!(
        matches!(late, Err(BackendError::ServerDown { .. })),
        "{late:?}"
    );
}
