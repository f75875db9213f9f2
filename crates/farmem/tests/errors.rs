//! Every kind of failure is told apart by `kind()` at the backend, runtime and container levels,
//! with its cause kept as the error's source.

use std::error::Error as _;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use farmem::backend::{TcpBackend, TcpConfig};
use farmem::containers::{ContainerError, FarVec, Offload};
use farmem::{
    Backend, BackendConfig, BackendError, EmbeddedStore, Error, ErrorKind, FarBox, FarPtr, Runtime,
    RuntimeConfig,
};

/// A port nobody listens on: bound, then released.
fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

/// A listener whose one connection gets `answer` (after the client's first bytes), then is held
/// open until the test ends.
fn fake_server(answer: &'static [u8]) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer);
            // Keep the socket open: the client must give up on its own.
            std::thread::sleep(Duration::from_secs(30));
        }
    });
    addr
}

fn tcp(addr: &str) -> TcpConfig {
    TcpConfig::new([addr]).timeout(Duration::from_millis(300))
}

fn connect_err(cfg: TcpConfig) -> BackendError {
    match TcpBackend::connect(cfg) {
        Ok(_) => panic!("connected"),
        Err(e) => e,
    }
}

fn rt_on(budget: usize, backend: Arc<dyn Backend>) -> Runtime {
    Runtime::new(
        RuntimeConfig::new(budget)
            .region_size(64 << 10)
            .custom_backend(backend),
    )
    .unwrap()
}

fn kind<T>(r: Result<T, ContainerError>) -> ErrorKind {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.kind(),
    }
}

#[test]
fn closed_port_is_unreachable_at_every_level() {
    let addr = closed_port();
    let e = connect_err(tcp(&addr));
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    assert!(matches!(e, BackendError::Unreachable { .. }));
    // The I/O error is the source, not text in the message.
    let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
    assert!(io.is_some(), "{e:?}");
    // Through the runtime configuration, and as a container error.
    let cfg = RuntimeConfig::new(16 << 20).backend(BackendConfig::Servers {
        addrs: vec![addr],
        token: String::new(),
    });
    let e = Runtime::new(cfg).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    assert_eq!(ContainerError::from(e).kind(), ErrorKind::Unreachable);
}

#[test]
fn silent_server_is_a_timeout() {
    let addr = fake_server(b"");
    let e = connect_err(tcp(&addr));
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
}

#[test]
fn garbage_answer_is_a_protocol_violation() {
    let addr = fake_server(&[0xFF; 64]);
    let e = connect_err(tcp(&addr));
    assert_eq!(e.kind(), ErrorKind::ProtocolViolation, "{e}");
    // The wire decoder's error is in the source chain.
    let mut cause = e.source();
    let mut wire = false;
    while let Some(c) = cause {
        wire |= c.downcast_ref::<farmem_proto::WireError>().is_some();
        cause = c.source();
    }
    assert!(wire, "{e:?}");
}

#[test]
fn configuration_errors_are_config() {
    let e = connect_err(TcpConfig::new(Vec::<String>::new()));
    assert_eq!(e.kind(), ErrorKind::Config);
    let e = Runtime::new(RuntimeConfig::new(1)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
}

/// A scope pins only what it dereferenced: allocations under it go on far past the budget
/// (what it never touched is evicted), and the heap is exhausted only once the objects it holds
/// references to fill the budget.
#[test]
fn pinned_scope_exhausts_the_local_heap() {
    let rt = rt_on(1 << 20, Arc::new(EmbeddedStore::new()));
    let keep = FarBox::new(&rt, 5u64).unwrap();
    let s = rt.scope();
    let kept = keep.read(&s).unwrap();
    let vecs: Vec<FarVec<u64>> = (0..64)
        .map(|i| FarVec::from_slice(&rt, &[7u64; 8192]).unwrap_or_else(|e| panic!("vec {i}: {e}")))
        .collect();
    assert_eq!(*kept, 5);
    // 4 MiB of 8 KiB objects against the 1 MiB budget (and its slack).
    let boxes: Vec<FarBox<[u64; 1024]>> = (0..512u64)
        .map(|i| FarBox::new(&rt, [i; 1024]).unwrap())
        .collect();
    let mut held = Vec::new();
    let err = loop {
        let Some(b) = boxes.get(held.len()) else {
            panic!("references to four times the budget (and beyond its slack) all fit");
        };
        match b.read(&s) {
            Ok(v) => held.push(v),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::LocalHeapExhausted, "{err}");
    assert!(matches!(
        err,
        Error::LocalHeapExhausted { pinned: true, .. }
    ));
    for (i, v) in held.iter().enumerate() {
        assert!(v.iter().all(|&x| x == i as u64));
    }
    assert_eq!((*kept, vecs.len()), (5, 64));
}

#[test]
fn full_store_is_out_of_capacity() {
    let rt = rt_on(16 << 20, Arc::new(EmbeddedStore::with_capacity(4 << 10)));
    let v = FarVec::from_slice(&rt, &vec![3u64; 64 << 10]).unwrap();
    // Running the operation next to the data writes the chunks to the full store first.
    let e = v.aggregate(Offload::Remote).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfCapacity, "{e}");
    // The same store refuses a direct write the same way.
    let store = EmbeddedStore::with_capacity(100);
    let e = store.put(1, &[0; 4096]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfCapacity);
}

#[test]
fn kernel_failures_keep_their_kind_on_both_paths() {
    let rt = rt_on(16 << 20, Arc::new(EmbeddedStore::new()));
    let a = FarVec::from_slice(&rt, &(0..5000u32).collect::<Vec<_>>()).unwrap();
    let short = FarVec::from_slice(&rt, &[1u32; 10]).unwrap();
    for mode in [Offload::Remote, Offload::Local] {
        assert_eq!(
            kind(a.unique(16, mode)),
            ErrorKind::TooManyGroups,
            "{mode:?}"
        );
        let e = a.group_by_where(
            &a,
            &short.agent_input(),
            farmem::containers::Predicate::new(
                farmem::containers::Cmp::Eq,
                farmem::containers::Scalar::U(1),
            ),
            8,
            mode,
        );
        assert_eq!(kind(e), ErrorKind::LengthMismatch, "{mode:?}");
    }
    // A remote kernel's error stays typed through the backend error.
    let e = a.unique(16, Offload::Remote).unwrap_err();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut typed = false;
    while let Some(c) = cause {
        typed |= matches!(
            c.downcast_ref::<farmem_kernels::KernelError>(),
            Some(farmem_kernels::KernelError::TooManyGroups { limit: 16 })
        );
        cause = c.source();
    }
    assert!(typed, "{e:?}");
}

#[test]
fn wrong_types_and_missing_objects() {
    let rt = rt_on(16 << 20, Arc::new(EmbeddedStore::new()));
    // A pointer read back as another type.
    let p: FarPtr<u64> = FarBox::new(&rt, 9u64).unwrap().into_ptr();
    let wrong: FarPtr<[u8; 3]> = farmem::bytemuck::cast(p);
    let e = FarBox::from_ptr(&rt, wrong).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TypeMismatch, "{e}");
    assert_eq!(ContainerError::from(e).kind(), ErrorKind::TypeMismatch);
    // An index past the end.
    let v = FarVec::from_slice(&rt, &[1u8, 2, 3]).unwrap();
    assert_eq!(kind(v.get(3)), ErrorKind::OutOfBounds);
    // A missing object.
    let store = EmbeddedStore::new();
    assert_eq!(store.get(42).unwrap_err().kind(), ErrorKind::NotFound);
}
