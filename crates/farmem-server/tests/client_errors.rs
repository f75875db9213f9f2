//! Over TCP, a client tells failures apart by kind as it does in-process: a full server, a
//! kernel's verdict (sent as a typed code next to the server's message), a server gone.

use std::sync::Arc;
use std::time::Duration;

use farmem::backend::{TcpBackend, TcpConfig};
use farmem::containers::{Cmp, FarVec, Offload, Predicate, Scalar};
use farmem::{BackendError, ErrorKind, Runtime, RuntimeConfig};
use farmem_server::{Server, ServerConfig, ServerHandle};
use farmem_store::agent::AgentErrorCode;

fn server(capacity: u64) -> ServerHandle {
    Server::start(ServerConfig {
        capacity,
        ..Default::default()
    })
    .expect("start server")
}

fn runtime(s: &ServerHandle) -> Runtime {
    let b = TcpBackend::connect(TcpConfig::new([s.addr()]).timeout(Duration::from_secs(10)))
        .expect("connect");
    Runtime::new(
        RuntimeConfig::new(16 << 20)
            .region_size(64 << 10)
            .custom_backend(Arc::new(b)),
    )
    .unwrap()
}

/// The agent code a memory server sent with `e`, if `e` is a remote agent failure.
fn remote_code(e: &farmem::containers::ContainerError) -> Option<AgentErrorCode> {
    match e {
        farmem::containers::ContainerError::Runtime(farmem::Error::Backend(
            BackendError::RemoteAgent { code, .. },
        )) => Some(*code),
        _ => None,
    }
}

#[test]
fn remote_kernel_failures_arrive_typed() {
    let s = server(64 << 20);
    let rt = runtime(&s);
    let a = FarVec::from_slice(&rt, &(0..5000u32).collect::<Vec<_>>()).unwrap();
    let short = FarVec::from_slice(&rt, &[1u32; 10]).unwrap();
    let e = a.unique(16, Offload::Remote).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TooManyGroups, "{e}");
    // The server's typed code, next to its message.
    let code = remote_code(&e);
    assert_eq!(code, Some(AgentErrorCode::TooManyGroups), "{e:?}");
    let e = a
        .group_by_where(
            &a,
            &short.agent_input(),
            Predicate::new(Cmp::Eq, Scalar::U(1)),
            8,
            Offload::Remote,
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LengthMismatch, "{e}");
}

#[test]
fn full_server_and_lost_server() {
    let s = server(4 << 10);
    let rt = runtime(&s);
    let v = FarVec::from_slice(&rt, &vec![3u64; 64 << 10]).unwrap();
    let e = v.aggregate(Offload::Remote).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfCapacity, "{e}");
    s.shutdown();
    let e = v.aggregate(Offload::Remote).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Disconnected | ErrorKind::Unreachable),
        "{e:?}"
    );
}

#[test]
fn an_agent_operation_past_the_time_limit_is_stopped_with_a_typed_error() {
    let mut config = ServerConfig {
        capacity: 64 << 20,
        ..Default::default()
    };
    // Shorter than any operation: the first chunk read finds the limit passed.
    config.limits.agent_time_limit = Duration::from_nanos(1);
    let s = Server::start(config).expect("start server");
    let rt = runtime(&s);
    let v = FarVec::from_slice(&rt, &vec![3u64; 64 << 10]).unwrap();
    let e = v.aggregate(Offload::Remote).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    let code = remote_code(&e);
    assert_eq!(code, Some(AgentErrorCode::TimeLimit), "{e:?}");
    // The connection and the data are fine: the same sum computed on the client.
    assert_eq!(v.aggregate(Offload::Local).unwrap().count, 64 << 10);
}
