//! A DataFrame caller tells the kinds of failure apart with `FrameError::kind`: local heap
//! exhausted, servers full, server unreachable, type mismatch, ...

use std::error::Error as _;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use farmem::backend::{TcpBackend, TcpConfig};
use farmem::containers::Offload;
use farmem::{
    Backend, BackendError, EmbeddedStore, ErrorKind, FarBox, ObjectId, Runtime, RuntimeConfig,
    StoreStats,
};
use farmem_frame::{Column, DType, DataFrame, FarPlacement, FrameError, PlacementRef};

fn runtime(budget: usize, backend: Arc<dyn Backend>) -> Runtime {
    Runtime::new(
        RuntimeConfig::new(budget)
            .region_size(64 << 10)
            .custom_backend(backend),
    )
    .unwrap()
}

fn kind<T>(r: Result<T, FrameError>) -> ErrorKind {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.kind(),
    }
}

/// A TCP backend that connects for every call: with nobody listening, each call fails the way
/// a server that went away would.
struct Redial(String);

impl Redial {
    fn conn(&self) -> Result<TcpBackend, BackendError> {
        TcpBackend::connect(TcpConfig::new([&self.0]).timeout(Duration::from_millis(300)))
    }
}

impl Backend for Redial {
    fn put(&self, id: ObjectId, data: &[u8]) -> Result<(), BackendError> {
        self.conn()?.put(id, data)
    }
    fn get(&self, id: ObjectId) -> Result<Vec<u8>, BackendError> {
        self.conn()?.get(id)
    }
    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>, BackendError> {
        self.conn()?.get_many(ids)
    }
    fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<(), BackendError> {
        self.conn()?.put_many(items)
    }
    fn free(&self, ids: &[ObjectId]) -> Result<(), BackendError> {
        self.conn()?.free(ids)
    }
    fn stats(&self) -> Result<StoreStats, BackendError> {
        self.conn()?.stats()
    }
    fn compute(&self, route: ObjectId, op: u16, args: &[u8]) -> Result<Vec<u8>, BackendError> {
        self.conn()?.compute(route, op, args)
    }
    fn describe(&self) -> String {
        format!("redial {}", self.0)
    }
}

fn ints(p: &FarPlacement, n: i64) -> Column {
    Column::from_vec("x", DType::I64, (0..n).collect::<Vec<i64>>(), p).unwrap()
}

#[test]
fn unreachable_server_surfaces_as_unreachable() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let rt = runtime(16 << 20, Arc::new(Redial(addr)));
    let p = FarPlacement::new(rt, Offload::Remote);
    let c = ints(&p, 10_000);
    // The agent needs the column on the server: the write-back cannot connect.
    let e = c.max().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
    // The socket error is still there at the bottom of the chain.
    let mut cause = e.source();
    let mut io = false;
    while let Some(c) = cause {
        io |= c.downcast_ref::<std::io::Error>().is_some();
        cause = c.source();
    }
    assert!(io, "{e:?}");
}

#[test]
fn full_servers_surface_as_out_of_capacity() {
    let rt = runtime(16 << 20, Arc::new(EmbeddedStore::with_capacity(4 << 10)));
    let p = FarPlacement::new(rt, Offload::Remote);
    let c = ints(&p, 100_000);
    assert_eq!(kind(c.sum()), ErrorKind::OutOfCapacity);
}

#[test]
fn pinned_scope_surfaces_as_local_heap_exhausted() {
    let rt = runtime(1 << 20, Arc::new(EmbeddedStore::new()));
    // A scope holds references to as much as the 1 MiB budget takes (a scope pins only what
    // it dereferenced, so it must hold that much to leave no room).
    let boxes: Vec<FarBox<[u64; 1024]>> = (0..512u64)
        .map(|i| FarBox::new(&rt, [i; 1024]).unwrap())
        .collect();
    let s = rt.scope();
    let mut held = Vec::new();
    let full = boxes.iter().any(|b| match b.read(&s) {
        Ok(v) => {
            held.push(v);
            false
        }
        Err(_) => true,
    });
    assert!(full, "references to 4 MiB all fit a 1 MiB budget");
    let p = FarPlacement::new(rt.clone(), Offload::Local);
    // 8 MiB of column under that budget, while the scope pins what it holds.
    let e = Column::from_vec("x", DType::I64, vec![5i64; 1 << 20], &p).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LocalHeapExhausted, "{e}");
    assert!(held.iter().enumerate().all(|(i, v)| v[0] == i as u64));
}

#[test]
fn frame_misuse_is_typed() {
    let rt = runtime(16 << 20, Arc::new(EmbeddedStore::new()));
    let far = FarPlacement::new(rt, Offload::Remote);
    let p: PlacementRef = Arc::new(far.clone());
    let f = Column::from_vec("f", DType::F64, vec![1.5f64; 100], &far).unwrap();
    // Integer sum of a float column; a float column built from integers.
    assert_eq!(kind(f.sum_int()), ErrorKind::TypeMismatch);
    assert_eq!(
        kind(Column::from_vec("g", DType::F64, vec![1i64; 4], &far)),
        ErrorKind::TypeMismatch
    );
    let df = DataFrame::from_columns(p.clone(), vec![f]).unwrap();
    assert_eq!(kind(df.column("nope")), ErrorKind::NotFound);
    let short = Column::from_vec("s", DType::I64, vec![1i64; 3], &far).unwrap();
    assert_eq!(
        kind(df.clone().with_column(short)),
        ErrorKind::LengthMismatch
    );
    assert_eq!(
        kind(df.column("f").unwrap().get(100)),
        ErrorKind::OutOfBounds
    );
}
