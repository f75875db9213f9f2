//! A durable server behind the event loop: many pipelining connections on one I/O thread (their
//! answers held back for group commits made off that thread), hellos and session closes run on
//! the workers (they wait for the disk); a restart rebuilds exactly the sessions whose clients
//! did not close them, with every acknowledged object. (That an answer never precedes its
//! commit is what `durable_restart.rs` checks with `kill -9`.)

use std::time::Duration;

use farmem::Backend;
use farmem::backend::{TcpBackend, TcpConfig};
use farmem_server::{Server, ServerConfig};
use farmem_store::{DurableConfig, SyncPolicy};

const CLIENTS: u64 = 6;
const OBJECTS: u64 = 300;

fn config(dir: &std::path::Path, sync: SyncPolicy) -> ServerConfig {
    ServerConfig {
        durable: Some(DurableConfig::new(dir).sync(sync)),
        io_threads: 1,
        workers: 2,
        session_lease: Duration::from_secs(60),
        ..ServerConfig::default()
    }
}

fn connect(addr: &str) -> TcpBackend {
    TcpBackend::connect(TcpConfig::new([addr]).timeout(Duration::from_secs(20))).unwrap()
}

fn run(sync: SyncPolicy, name: &str) {
    let dir = std::env::temp_dir().join(format!(
        "farmem-durable-conns-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let server = Server::start(config(&dir, sync)).unwrap();
    let addr = server.addr().to_string();
    let clients: Vec<TcpBackend> = (0..CLIENTS).map(|_| connect(&addr)).collect();
    std::thread::scope(|s| {
        for (c, b) in clients.iter().enumerate() {
            s.spawn(move || {
                // Sixteen puts in flight at a time: the answers of one read wait for one commit.
                for chunk in (0..OBJECTS).collect::<Vec<_>>().chunks(16) {
                    let tickets: Vec<_> = chunk
                        .iter()
                        .map(|&i| {
                            let v = vec![c as u8; 64 + i as usize];
                            b.submit_put(c as u64 * OBJECTS + i, &v).unwrap()
                        })
                        .collect();
                    b.flush();
                    for t in tickets {
                        b.wait_done(t).unwrap();
                    }
                }
            });
        }
    });
    // A client that closes its session: its end is logged, so the restart does not rebuild it.
    let closer = connect(&addr);
    closer.put(u64::MAX - 1, b"gone with its session").unwrap();
    drop(closer);
    assert_eq!(server.stats().sessions, CLIENTS);
    server.shutdown();

    let server = Server::start(config(&dir, sync)).unwrap();
    let st = server.stats();
    assert_eq!(st.sessions, CLIENTS, "the closed session is not rebuilt");
    assert_eq!(st.objects, CLIENTS * OBJECTS);
    server.shutdown();
    drop(clients);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn many_pipelining_connections_keep_their_writes_and_a_closed_session_ends_sync_always() {
    run(SyncPolicy::Always, "always");
}

#[test]
fn many_pipelining_connections_keep_their_writes_and_a_closed_session_ends_sync_none() {
    run(SyncPolicy::None, "none");
}
