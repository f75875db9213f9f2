//! The operator's view: Prometheus metrics and health probes on `--metrics ADDR`, server-wide
//! figures for the admin token only.

mod support;

use std::time::Duration;

use farmem::backend::{TcpBackend, TcpConfig};
use farmem::{Backend, BackendError};
use farmem_server::AdminClient;

use support::Proxy;
use support::ops::{OpsServer, file_with, http};

fn client(addr: &str) -> TcpBackend {
    TcpBackend::connect(TcpConfig::new([addr]).timeout(Duration::from_secs(10))).expect("connect")
}

#[test]
fn requests_errors_latency_and_space_are_counted_by_operation() {
    let admin = file_with("admin-token", "operator secret\n");
    let server = OpsServer::start(&["--admin-token-file", admin.to_str().unwrap()]);
    let a = client(&server.addr);
    for id in 0..10u64 {
        a.put(id, &[id as u8; 1000]).unwrap();
    }
    for id in 0..5u64 {
        a.get(id).unwrap();
    }
    assert!(matches!(a.get(99), Err(BackendError::NotFound(99))));
    a.free(&[9]).unwrap();
    let m = server.scrape();
    let v = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in {m:?}"));
    assert_eq!(v(r#"farmem_requests_total{op="put"}"#), 10.0);
    assert_eq!(v(r#"farmem_requests_total{op="get"}"#), 6.0);
    assert_eq!(v(r#"farmem_errors_total{op="get"}"#), 1.0);
    assert_eq!(v(r#"farmem_errors_total{op="put"}"#), 0.0);
    assert_eq!(v(r#"farmem_requests_total{op="free"}"#), 1.0);
    assert_eq!(
        v(r#"farmem_request_duration_seconds_count{op="put"}"#),
        10.0
    );
    assert_eq!(
        v(r#"farmem_request_duration_seconds_bucket{op="put",le="+Inf"}"#),
        10.0
    );
    assert!(v(r#"farmem_request_duration_seconds_sum{op="put"}"#) > 0.0);
    // Every put carried its 1000 bytes in; every get carried them out.
    assert!(v("farmem_received_bytes_total") >= 10_000.0);
    assert!(v("farmem_sent_bytes_total") >= 5_000.0);
    assert_eq!(v("farmem_capacity_bytes"), (256u64 << 20) as f64);
    assert_eq!(v("farmem_objects"), 9.0);
    assert_eq!(v("farmem_sessions"), 1.0);
    assert!(v("farmem_connections") >= 1.0);
    assert!(v("process_resident_memory_bytes") > 0.0);
    assert!(m.contains_key("farmem_agent_cpu_seconds_total"));
    let wide = AdminClient::new(server.addr.clone(), b"operator secret".to_vec())
        .stats()
        .unwrap();
    assert_eq!(v("farmem_used_bytes"), wide.used_bytes as f64);
    assert_eq!(v("farmem_written_bytes_total"), wide.bytes_written as f64);
    // The client counted the same traffic from its side.
    let t = &a.transport_stats()[0];
    assert_eq!(t.addr, server.addr);
    assert!(t.requests >= 17, "{t:?}");
    assert!(t.errors >= 1, "{t:?}");
    assert!(t.bytes_sent >= 10_000 && t.bytes_received >= 5_000, "{t:?}");
    assert_eq!(t.reconnects, 0);
    // One request in 16 is timed.
    assert!(t.latency_buckets.iter().sum::<u64>() >= 1);
    assert!(t.mean_latency() > Duration::ZERO);
}

#[test]
fn the_client_counts_its_reconnects() {
    let server = OpsServer::start(&[]);
    let proxy = Proxy::start(&server.addr);
    let a = client(&proxy.addr);
    a.put(1, b"kept").unwrap();
    proxy.cut();
    assert_eq!(a.get(1).unwrap(), b"kept");
    let t = &a.transport_stats()[0];
    assert!(t.reconnects >= 1, "{t:?}");
}

#[test]
fn health_and_readiness_follow_the_server() {
    let admin = file_with("admin-token", "operator secret");
    let server = OpsServer::start(&["--admin-token-file", admin.to_str().unwrap()]);
    assert_eq!(server.get("/healthz"), (200, "ok\n".into()));
    assert_eq!(server.get("/readyz").0, 200);
    assert_eq!(server.get("/nothing-here").0, 404);
    assert_eq!(http(&server.metrics, "POST", "/metrics").0, 405);
    // Drained (capacity taken to zero): alive, but not ready for new clients.
    let ctl = AdminClient::new(server.addr.clone(), b"operator secret".to_vec());
    ctl.set(0, Duration::from_secs(5)).unwrap();
    assert_eq!(server.get("/healthz").0, 200);
    let (status, why) = server.get("/readyz");
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("draining"), "{why}");
    ctl.grow(256 << 20).unwrap();
    assert_eq!(server.get("/readyz").0, 200);
    // A peer that sends nothing is cut off; the endpoint keeps answering.
    let _silent = std::net::TcpStream::connect(&server.metrics).unwrap();
    assert_eq!(server.get("/healthz").0, 200);
}

#[test]
fn a_clients_stats_show_its_own_session_unless_it_is_the_operator() {
    let admin = file_with("admin-token", "operator secret");
    let server = OpsServer::start(&[
        "--admin-token-file",
        admin.to_str().unwrap(),
        "--quota-bytes",
        "1MiB",
    ]);
    let a = client(&server.addr);
    let b = client(&server.addr);
    for id in 0..3 {
        a.put(id, &[1; 1000]).unwrap();
    }
    for id in 0..5 {
        b.put(id, &[2; 1000]).unwrap();
    }
    let own = a.server_stats().unwrap()[0];
    assert_eq!(own.objects, 3);
    assert_eq!(own.used_bytes, own.session_used_bytes);
    assert_eq!(
        (own.sessions, own.connections, own.bytes_written),
        (1, 0, 0)
    );
    // Its room: within its byte quota.
    assert_eq!(own.capacity_bytes, 1 << 20);
    let wide = AdminClient::new(server.addr.clone(), b"operator secret".to_vec())
        .stats()
        .unwrap();
    assert_eq!((wide.objects, wide.sessions), (8, 2));
    assert!(wide.used_bytes > own.used_bytes);
    assert!(wide.bytes_written >= 8000);
    // A wrong admin token gets nothing.
    let wrong = AdminClient::new(server.addr.clone(), b"guess".to_vec());
    assert!(wrong.stats().is_err());
}

#[test]
fn a_server_without_an_admin_token_shows_every_client_the_whole_server() {
    let server = OpsServer::start(&[]);
    let a = client(&server.addr);
    let b = client(&server.addr);
    a.put(1, &[1; 10]).unwrap();
    b.put(1, &[1; 10]).unwrap();
    let st = a.server_stats().unwrap()[0];
    assert_eq!((st.objects, st.session_objects, st.sessions), (2, 1, 2));
}
