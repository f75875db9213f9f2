//! Reference costs measured in the same run: a bare userfaultfd fault, a bare TCP round trip,
//! a 4 KiB get from the backend.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use farmem::paging::{PAGE_SIZE, PagedRegion, PagingConfig};
use farmem::{Backend, EmbeddedStore};

/// Cost of a zero-fill userfaultfd fault through the pager (no backend I/O), in us: the best
/// mean of 5 rounds of 2048 first touches (the machine may be shared).
pub(super) fn bare_uffd_fault_us() -> anyhow::Result<f64> {
    let pages = 2048;
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let region = PagedRegion::new(
            pages * PAGE_SIZE,
            Arc::new(EmbeddedStore::new()),
            PagingConfig::new(pages * PAGE_SIZE),
        )?;
        let p = region.as_ptr();
        let t = Instant::now();
        let mut sum = 0u64;
        for i in 0..pages {
            // SAFETY: in bounds of the live region.
            sum += u64::from(unsafe { p.add(i * PAGE_SIZE).read_volatile() });
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e6 / pages as f64);
        anyhow::ensure!(sum == 0, "fresh pages must read as zero");
    }
    Ok(best)
}

/// Median 4 KiB request / 4 KiB reply round trip over loopback TCP, in us.
pub(super) fn bare_tcp_rtt_us() -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; PAGE_SIZE];
        while s.read_exact(&mut buf).is_ok() {
            s.write_all(&buf)?;
        }
        Ok(())
    });
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    let mut buf = vec![7u8; PAGE_SIZE];
    let mut samples = Vec::with_capacity(3000);
    for i in 0..3000 {
        let t = Instant::now();
        c.write_all(&buf)?;
        c.read_exact(&mut buf)?;
        if i >= 200 {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(c);
    let _ = server.join();
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

/// Mean latency of a 4 KiB `get_into` from `backend`, in us (the backend's share of a fault).
pub(super) fn backend_get_4k_us(backend: &dyn Backend) -> anyhow::Result<f64> {
    let id = u64::MAX - 7;
    backend.put(id, &[1u8; PAGE_SIZE])?;
    let mut buf = vec![0u8; PAGE_SIZE];
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        backend.get_into(id, &mut buf)?;
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    backend.free(&[id])?;
    Ok(us)
}
