//! The memory-server child process every mode pages to.

use std::io::{Read, Write};
use std::sync::Arc;

use anyhow::Context;
use farmem::backend::{TcpBackend, TcpConfig};
use farmem::{Backend, EmbeddedStore};
use farmem_server::{Server, ServerConfig};

use super::BackendKind;

/// A memory server in a child process (the current binary re-executed with `--serve-child`).
///
/// Every mode uses one, like a real memory server on another machine. The transparent mode could
/// not use an in-process server anyway: the server's threads would allocate large buffers in paged
/// memory and then fault on pages only the pager, waiting for that very server, could bring in.
pub(crate) struct ServerProcess {
    child: std::process::Child,
    pub(crate) addr: String,
}

impl ServerProcess {
    pub(crate) fn start(capacity: u64, lock_memory: bool) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the current binary")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args(["paging", "--serve-child", "--budget-mib"])
            .arg((capacity >> 20).max(1).to_string());
        if lock_memory {
            cmd.arg("--lock-memory");
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting the memory-server child")?;
        let mut line = String::new();
        let out = child.stdout.take().context("server child stdout")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)?;
        let addr = line.trim().to_string();
        anyhow::ensure!(!addr.is_empty(), "memory-server child printed no address");
        Ok(Self { child, addr })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        if self.child.wait().is_err() {
            let _ = self.child.kill();
        }
    }
}

/// `--serve-child`: a memory server of `capacity` bytes until stdin reaches end of file.
pub(super) fn serve_child(capacity: u64, lock_memory: bool) -> anyhow::Result<()> {
    if lock_memory {
        crate::netswap::lock_memory().context("locking the swap server's memory")?;
    }
    let server = Server::start(ServerConfig {
        capacity,
        ..Default::default()
    })?;
    println!("{}", server.addr());
    std::io::stdout().flush()?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    server.shutdown();
    Ok(())
}

/// The backend of a mode, and the loopback memory server behind it (a child process, kept alive
/// by the caller; every mode gets a fresh one).
pub(super) fn make_backend(
    kind: BackendKind,
    capacity: u64,
) -> anyhow::Result<(Arc<dyn Backend>, Option<ServerProcess>)> {
    Ok(match kind {
        BackendKind::Embedded => (Arc::new(EmbeddedStore::new()), None),
        BackendKind::Tcp => {
            let server = ServerProcess::start(capacity, false)?;
            // One server with the only copy of the pages: a stall must delay faults, not
            // have the server declared down (which aborts a pager).
            let backend = TcpBackend::connect(
                TcpConfig::new([server.addr.clone()])
                    .connections_per_server(2)
                    .without_failover(),
            )
            .context("connecting to the memory-server child")?;
            (Arc::new(backend), Some(server))
        }
    })
}
