//! Sessions outlive connections: a reset connection resumes its session with nothing lost, a
//! crashed client's objects are freed when its lease runs out, a clean exit frees them at once,
//! a forged resume is refused, and no client can reach another session's objects.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use farmem::Backend;
use farmem::backend::{TcpBackend, TcpConfig};
use farmem_proto::agent::{AgentMessage, HtPutArgs, HtValue, HtValues, op};
use farmem_proto::{
    DEFAULT_MAX_FRAME, ErrorCode, HelloInfo, Request, Response, VERSION, decode_frame,
    encode_request,
};
use support::{Proxy, ServerProc, wait_until, watchdog};

fn object(i: u64, round: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i.wrapping_mul(31) ^ round.wrapping_mul(7) ^ j as u64) as u8)
        .collect()
}

/// Server-wide object count, seen by a separate client.
fn objects_on(addr: &str) -> u64 {
    let b = TcpBackend::connect(TcpConfig::new([addr])).unwrap();
    b.server_stats().unwrap()[0].objects
}

#[test]
fn reset_connections_resume_the_session_and_lose_nothing() {
    let server = ServerProc::start(&["--session-lease", "30s"]);
    let proxy = Proxy::start(&server.addr);
    let b = Arc::new(
        TcpBackend::connect(TcpConfig::new([proxy.addr.as_str()]).connections_per_server(2))
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3u64)
        .map(|w| {
            let (b, stop) = (b.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut round = 0u64;
                let mut slowest = Duration::ZERO;
                let base = w * 1_000_000;
                while !stop.load(Ordering::Relaxed) || round < 20 {
                    round += 1;
                    let t0 = Instant::now();
                    // Puts, pipelined puts, patches over them, and a hash-table put whose answer
                    // reveals a second execution (a fresh key answers Absent exactly once).
                    let items: Vec<(u64, Vec<u8>)> = (0..32)
                        .map(|i| (base + i, object(base + i, round, 200)))
                        .collect();
                    let refs: Vec<(u64, &[u8])> =
                        items.iter().map(|(i, d)| (*i, d.as_slice())).collect();
                    b.put_many(&refs).unwrap();
                    let tickets: Vec<_> = (32..48u64)
                        .map(|i| {
                            b.submit_put(base + i, &object(base + i, round, 64))
                                .unwrap()
                        })
                        .collect();
                    for t in tickets {
                        b.wait_done(t).unwrap();
                    }
                    b.patch(base, &[(0, &round.to_le_bytes()[..])]).unwrap();
                    let put = HtPutArgs {
                        table: w + 1,
                        return_old: false,
                        entries: vec![(round.to_le_bytes().to_vec(), vec![1; 8])],
                    };
                    let out = b.compute(w + 1, op::HT_PUT, &put.encode()).unwrap();
                    let vals = HtValues::decode(&out).unwrap();
                    assert_eq!(
                        vals.values,
                        vec![HtValue::Absent],
                        "round {round} ran twice"
                    );
                    // Every value as written.
                    let ids: Vec<u64> = (0..48).map(|i| base + i).collect();
                    let got = b.get_many(&ids).unwrap();
                    let mut first = object(base, round, 200);
                    first[..8].copy_from_slice(&round.to_le_bytes());
                    assert_eq!(got[0], first, "round {round}");
                    for i in 1..48u64 {
                        let len = if i < 32 { 200 } else { 64 };
                        assert_eq!(got[i as usize], object(base + i, round, len), "{i}");
                    }
                    slowest = slowest.max(t0.elapsed());
                }
                (round, slowest)
            })
        })
        .collect();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(150));
        proxy.cut();
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let (rounds, slowest) = w.join().unwrap();
        println!("worker: {rounds} rounds, slowest round {slowest:?} (5 resets)");
    }
    assert!(b.server_health().iter().all(|h| h.down.is_none()));
    // One session: the resets never created another one.
    assert_eq!(b.server_stats().unwrap()[0].sessions, 1);
}

#[test]
fn reconnect_stall_after_a_reset() {
    let server = ServerProc::start(&[]);
    let proxy = Proxy::start(&server.addr);
    let b = TcpBackend::connect(TcpConfig::new([proxy.addr.as_str()])).unwrap();
    b.put(1, b"v").unwrap();
    let mut stalls = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        b.get(1).unwrap();
        let normal = t.elapsed();
        proxy.cut();
        let t = Instant::now();
        assert_eq!(b.get(1).unwrap(), b"v");
        stalls.push((t.elapsed(), normal));
    }
    println!("get after a reset (stall, normal): {stalls:?}");
}

#[test]
fn lease_expiry_frees_a_crashed_clients_objects() {
    let server = ServerProc::start(&["--session-lease", "300ms"]);
    let proxy = Proxy::start(&server.addr);
    let b = TcpBackend::connect(
        TcpConfig::new([proxy.addr.as_str()]).reconnect_within(Duration::from_millis(200)),
    )
    .unwrap();
    let items: Vec<(u64, Vec<u8>)> = (0..100).map(|i| (i, object(i, 0, 100))).collect();
    let refs: Vec<(u64, &[u8])> = items.iter().map(|(i, d)| (*i, d.as_slice())).collect();
    b.put_many(&refs).unwrap();
    assert_eq!(objects_on(&server.addr), 100);
    // The client "crashes": its connections die and it never comes back.
    proxy.refuse();
    proxy.cut();
    let took = wait_until("lease expiry", Duration::from_secs(20), || {
        objects_on(&server.addr) == 0
    });
    println!("objects freed {took:?} after the crash (lease 300 ms)");
    let err = b.get(1).unwrap_err();
    assert!(
        matches!(err, farmem::BackendError::ServerDown { .. }),
        "{err}"
    );
}

#[test]
fn a_clean_exit_frees_objects_at_once_and_a_session_survives_its_connections() {
    let server = ServerProc::start(&["--session-lease", "1h"]);
    let b = TcpBackend::connect(TcpConfig::new([server.addr.as_str()])).unwrap();
    b.put(7, &[7; 1000]).unwrap();
    assert_eq!(objects_on(&server.addr), 1);
    // With a lease of an hour, only the close frees them.
    watchdog("drop", Duration::from_secs(30), move || drop(b));
    wait_until("close", Duration::from_secs(10), || {
        objects_on(&server.addr) == 0
    });
}

fn raw_hello(addr: &str, session: u64, resume: u64) -> Result<HelloInfo, (u16, TcpStream)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let req = Request::Hello {
        version: VERSION,
        session,
        token: &[],
        resume,
    };
    encode_request(&mut buf, 1, &req);
    s.write_all(&buf).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        if let Some((f, _)) = decode_frame(&got, DEFAULT_MAX_FRAME).unwrap() {
            return match Response::decode(f.header.op, f.header.flags, f.body).unwrap() {
                Response::Hello(h) => Ok(h),
                Response::Error(e) => Err((e.code, s)),
                other => panic!("unexpected {other:?}"),
            };
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed without an answer");
        got.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn forged_resumes_are_refused_and_lose_nothing() {
    let server = ServerProc::start(&[]);
    let b = TcpBackend::connect(TcpConfig::new([server.addr.as_str()])).unwrap();
    b.put(1, b"mine").unwrap();
    let first = raw_hello(&server.addr, 0, 0).unwrap();
    assert_ne!(first.resume, 0);
    let refused = ErrorCode::SessionRefused as u16;
    // Another session's key with a wrong secret, an unknown key, no secret at all.
    for (key, secret) in [
        (first.session, first.resume ^ 1),
        (first.session ^ 0x55, first.resume),
        (first.session, 0),
    ] {
        match raw_hello(&server.addr, key, secret) {
            Err((code, mut s)) => {
                assert_eq!(code, refused);
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest); // closed by the server
            }
            Ok(h) => panic!("forged resume accepted: {h:?}"),
        }
    }
    // The right secret joins.
    let joined = raw_hello(&server.addr, first.session, first.resume).unwrap();
    assert_eq!(joined.session, first.session);
    assert_eq!(b.get(1).unwrap(), b"mine");
}

#[test]
fn no_client_reaches_another_sessions_objects() {
    let server = ServerProc::start(&[]);
    let a = TcpBackend::connect(TcpConfig::new([server.addr.as_str()])).unwrap();
    let b = TcpBackend::connect(TcpConfig::new([server.addr.as_str()])).unwrap();
    a.put(1, b"a's").unwrap();
    let table = HtPutArgs {
        table: 9,
        return_old: false,
        entries: vec![(b"k".to_vec(), b"a's".to_vec())],
    };
    a.compute(9, op::HT_PUT, &table.encode()).unwrap();
    // The same ids name nothing in another session: not found, and its writes, patches, frees
    // and table drops change only its own objects.
    assert!(matches!(b.get(1), Err(farmem::BackendError::NotFound(1))));
    assert!(matches!(
        b.patch(1, &[(0, &b"x"[..])]),
        Err(farmem::BackendError::NotFound(1))
    ));
    b.free(&[1]).unwrap();
    b.put(1, b"b's").unwrap();
    b.compute(9, op::HT_DROP, &9u64.encode()).unwrap();
    assert_eq!(a.get(1).unwrap(), b"a's");
    assert_eq!(b.get(1).unwrap(), b"b's");
    let len = a.compute(9, op::HT_LEN, &9u64.encode()).unwrap();
    assert_eq!(u64::decode(&len).unwrap(), 1);
    // Joining a's session takes its secret (see `forged_resumes_are_refused_and_lose_nothing`);
    // two sessions, each with its own objects.
    assert_eq!(a.server_stats().unwrap()[0].sessions, 2);
    assert_eq!(a.server_stats().unwrap()[0].objects, 2);
}
