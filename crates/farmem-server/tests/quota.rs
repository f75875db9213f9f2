//! Per-session quotas set by the operator (`--quota-bytes`, `--quota-objects`, `--quota-rps`):
//! a session over one gets a typed error and changes nothing, other sessions are unaffected,
//! and the server stays healthy.

mod support;

use std::time::Duration;

use farmem::backend::{TcpBackend, TcpConfig};
use farmem::{Backend, BackendError, ErrorKind};
use farmem_server::QuotaKind;

use support::ServerProc;
use support::ops::OpsServer;

fn client(addr: &str) -> TcpBackend {
    TcpBackend::connect(TcpConfig::new([addr]).timeout(Duration::from_secs(10))).expect("connect")
}

#[test]
fn the_object_quota_holds_per_session() {
    let server = ServerProc::start(&["--quota-objects", "3"]);
    let a = client(&server.addr);
    for id in 1..=3 {
        a.put(id, &[id as u8; 100]).unwrap();
    }
    match a.put(4, &[4; 100]) {
        Err(BackendError::QuotaExceeded {
            kind: QuotaKind::Objects,
            limit: 3,
            wanted: 4,
            ..
        }) => {}
        other => panic!("a fourth object: {other:?}"),
    }
    // Replacing an object is no new object; the refused one was not stored.
    a.put(3, &[9; 200]).unwrap();
    assert!(matches!(a.get(4), Err(BackendError::NotFound(4))));
    // Another session has a quota of its own.
    let b = client(&server.addr);
    for id in 1..=3 {
        b.put(id, &[1; 10]).unwrap();
    }
    assert!(b.put(4, &[1; 10]).is_err());
    // Freeing makes room again.
    a.free(&[1]).unwrap();
    a.put(4, &[4; 100]).unwrap();
    assert_eq!(a.get(4).unwrap(), vec![4; 100]);
}

#[test]
fn the_byte_quota_counts_payload_and_overhead() {
    // 10 KiB: two 4 KiB objects fit with their overhead, a third does not.
    let server = ServerProc::start(&["--quota-bytes", "10KiB"]);
    let a = client(&server.addr);
    a.put(1, &[1; 4096]).unwrap();
    a.put(2, &[2; 4096]).unwrap();
    let e = a.put(3, &[3; 4096]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    match e {
        BackendError::QuotaExceeded {
            kind: QuotaKind::Bytes,
            limit: 10240,
            wanted,
            ..
        } => assert!(wanted > 10240, "{wanted}"),
        other => panic!("{other:?}"),
    }
    // Growing an object past the quota is refused and keeps the old one.
    assert!(a.put(2, &[5; 8192]).is_err());
    assert_eq!(a.get(2).unwrap(), vec![2; 4096]);
    // A batch that would pass the quota stores nothing beyond it.
    let st = a.server_stats().unwrap()[0];
    assert!(st.session_used_bytes <= 10240, "{st:?}");
    assert_eq!(st.session_objects, 2);
}

#[test]
fn a_session_over_its_rate_is_told_when_to_retry_and_stays_served() {
    let server = OpsServer::start(&["--quota-rps", "2", "--quota-burst", "4"]);
    let a = client(&server.addr);
    a.put(1, b"x").unwrap();
    // Far more requests than the bucket holds, as fast as they go: one is refused.
    let refused = (0..50).find_map(|_| a.get(1).err());
    let retry_after = match refused {
        Some(BackendError::RateLimited {
            limit: 2,
            retry_after,
            ..
        }) => retry_after,
        other => panic!("50 gets at once under a rate of 2/s: {other:?}"),
    };
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_millis(500),
        "{retry_after:?}"
    );
    // Heartbeats are not counted: the client does not take the server for dead.
    std::thread::sleep(Duration::from_millis(600));
    assert!(a.server_health().iter().all(|h| h.down.is_none()));
    // After the wait it was told, the session is served again.
    std::thread::sleep(retry_after);
    assert_eq!(a.get(1).unwrap(), b"x");
    // Another session has a bucket of its own.
    let b = client(&server.addr);
    b.put(1, b"y").unwrap();
    let m = server.scrape();
    assert!(
        m[r#"farmem_quota_refusals_total{quota="rate"}"#] >= 1.0,
        "{m:?}"
    );
    assert_eq!(m[r#"farmem_quota_refusals_total{quota="bytes"}"#], 0.0);
}
