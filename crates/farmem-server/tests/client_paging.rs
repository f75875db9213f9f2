//! PagedRegion: data integrity beyond the budget, concurrent faults, cache-line write-back.
//! Every test skips (passes with a message) where userfaultfd paging is unavailable, and fails
//! instead when `FARMEM_REQUIRE_PRIVILEGED` is set, as in CI.

mod support;

use std::sync::Arc;

use farmem::backend::{TcpBackend, TcpConfig};
use farmem::paging::{self, PAGE_SIZE, PagedRegion, PagingConfig, WriteBack};
use farmem::{Backend, EmbeddedStore};
use farmem_server::{Server, ServerConfig};
use rand::rngs::SmallRng;
use rand::{Rng, RngExt, SeedableRng};

fn skip() -> bool {
    match paging::available() {
        Ok(()) => false,
        Err(e) => {
            support::skip_or_fail(&format!("paging: {e}"));
            true
        }
    }
}

#[test]
fn random_reads_and_writes_match_a_shadow_copy_at_4x_the_budget() {
    if skip() {
        return;
    }
    let budget = 1 << 20;
    let len = 4 * budget;
    let store = Arc::new(EmbeddedStore::new());
    let region = PagedRegion::new(len, store.clone(), PagingConfig::new(budget)).unwrap();
    let p = region.as_ptr();
    let mut shadow = vec![0u8; len];
    let mut rng = SmallRng::seed_from_u64(0x9E37_79B9);
    for i in 0..200_000 {
        let off = rng.random_range(0..len - 8);
        if i % 3 == 0 {
            let v = rng.next_u64().to_le_bytes();
            // SAFETY: `off + 8 <= len`, the region is alive.
            unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p.add(off), 8) };
            shadow[off..off + 8].copy_from_slice(&v);
        } else {
            let mut got = [0u8; 8];
            // SAFETY: as above.
            unsafe { std::ptr::copy_nonoverlapping(p.add(off), got.as_mut_ptr(), 8) };
            assert_eq!(
                got,
                shadow[off..off + 8],
                "mismatch at offset {off}, op {i}"
            );
        }
    }
    // Sequential scan of everything (exercises readahead), then compare all bytes.
    // SAFETY: the region is alive and `len` bytes long; no one writes it concurrently.
    let all = unsafe { std::slice::from_raw_parts(p, len) };
    assert!(all == &shadow[..], "final contents differ");
    let s = region.stats();
    assert!(s.resident_pages as usize <= budget / PAGE_SIZE, "{s:?}");
    assert!(
        s.fetch_faults > 0 && s.written_back > 0 && s.evicted_clean > 0,
        "{s:?}"
    );
    assert!(s.prefetched > 0, "sequential scan should read ahead: {s:?}");
}

#[test]
fn threads_faulting_at_once_see_their_own_writes() {
    if skip() {
        return;
    }
    let budget = 512 << 10;
    let per_thread = 1 << 20;
    let threads = 4;
    let region = Arc::new(
        PagedRegion::new(
            per_thread * threads,
            Arc::new(EmbeddedStore::new()),
            PagingConfig::new(budget),
        )
        .unwrap(),
    );
    let base = region.as_ptr() as usize;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let region = region.clone();
            std::thread::spawn(move || {
                let _keep = &region;
                let start = base + t * per_thread;
                let words = per_thread / 8;
                for round in 0..3u64 {
                    for w in 0..words {
                        let v = (t as u64) << 48 | round << 32 | w as u64;
                        // SAFETY: each thread writes only its own slice of the live region.
                        unsafe { ((start + w * 8) as *mut u64).write(v) };
                    }
                    let mut rng = SmallRng::seed_from_u64(t as u64 + 1);
                    for _ in 0..20_000 {
                        let w = rng.random_range(0..words);
                        // SAFETY: as above.
                        let got = unsafe { ((start + w * 8) as *const u64).read() };
                        assert_eq!(got, (t as u64) << 48 | round << 32 | w as u64);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Threads also share pages: concurrent increments on one page under a lock-free counter.
    let counter = region.as_ptr() as usize + 3 * PAGE_SIZE + 8;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let region = region.clone();
            std::thread::spawn(move || {
                let _keep = &region;
                // SAFETY: the address is in the live region and 8-aligned; only atomics touch it.
                let c = unsafe { &*(counter as *const std::sync::atomic::AtomicU64) };
                for i in 0..2000usize {
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // Touch a page elsewhere to force evictions in between.
                    let other =
                        base + ((i * 7919) % (per_thread * threads / PAGE_SIZE)) * PAGE_SIZE;
                    // SAFETY: in the live region.
                    unsafe { std::ptr::read_volatile(other as *const u8) };
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // SAFETY: as above.
    let c = unsafe { &*(counter as *const std::sync::atomic::AtomicU64) };
    let before = (3 << 48) | (2 << 32) | ((3 * PAGE_SIZE + 8) / 8) as u64;
    let _ = before;
    let total = c.load(std::sync::atomic::Ordering::Relaxed);
    // Thread 0 wrote its final round value there before the increments.
    let initial = (2u64 << 32) | ((3 * PAGE_SIZE + 8) / 8) as u64;
    assert_eq!(total, initial + 2000 * threads as u64);
}

/// Writes 256 pages, flushes, changes one 8-byte word in each of 100 pages, flushes again and
/// checks the bytes that reached `store` (its write counter and its contents).
fn check_dirty_line_write_back(store: Arc<dyn Backend>) {
    let budget = 64 * PAGE_SIZE;
    let pages = 256;
    for mode in [WriteBack::CacheLine, WriteBack::WholePage] {
        let cfg = PagingConfig {
            write_back: mode,
            ..PagingConfig::new(budget)
        };
        let written0 = store.stats().unwrap().bytes_written;
        let region = PagedRegion::new(pages * PAGE_SIZE, store.clone(), cfg).unwrap();
        let p = region.as_ptr();
        let mut shadow = vec![0u8; pages * PAGE_SIZE];
        for (i, b) in shadow.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        // SAFETY: the region is alive and as long as `shadow`.
        unsafe { std::ptr::copy_nonoverlapping(shadow.as_ptr(), p, shadow.len()) };
        region.flush().unwrap();
        let before = store.stats().unwrap().bytes_written - written0;
        // Every page reached the store once in full (memcpy may write a page's tail before its
        // head, so a page evicted in between is completed later by a patch).
        assert!(before >= (pages * PAGE_SIZE) as u64, "{before}");
        let changed0 = region.stats().bytes_changed;
        let mut changed = 0u64;
        // Change one 8-byte word in each of 100 pages (at a varying line).
        for k in 0..100usize {
            let off = k * 2 * PAGE_SIZE % (pages * PAGE_SIZE) + (k % 64) * 64 + 8;
            let v = (0xA5A5_0000_0000_0000u64 | k as u64).to_le_bytes();
            // SAFETY: in bounds of the live region.
            unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), p.add(off), 8) };
            changed += shadow[off..off + 8]
                .iter()
                .zip(&v)
                .filter(|(a, b)| a != b)
                .count() as u64;
            shadow[off..off + 8].copy_from_slice(&v);
        }
        region.flush().unwrap();
        let sent = store.stats().unwrap().bytes_written - written0 - before;
        let s = region.stats();
        match mode {
            WriteBack::CacheLine => assert_eq!(sent, 100 * 64, "{s:?}"),
            WriteBack::WholePage => assert_eq!(sent, 100 * PAGE_SIZE as u64, "{s:?}"),
        }
        assert_eq!(s.bytes_sent, before + sent);
        assert_eq!(
            s.bytes_changed - changed0,
            changed,
            "changed-byte accounting"
        );
        // The server holds exactly the program's bytes.
        for page in 0..pages {
            let id = region.object_id(page * PAGE_SIZE);
            let stored = store.get(id).unwrap();
            assert_eq!(
                stored,
                &shadow[page * PAGE_SIZE..][..PAGE_SIZE],
                "page {page}"
            );
        }
    }
}

#[test]
fn only_dirty_lines_are_written_back_byte_exactly() {
    if skip() {
        return;
    }
    check_dirty_line_write_back(Arc::new(EmbeddedStore::new()));
}

#[test]
fn only_dirty_lines_reach_a_tcp_server_byte_exactly() {
    if skip() {
        return;
    }
    let server = Server::start(ServerConfig {
        capacity: 64 << 20,
        ..Default::default()
    })
    .unwrap();
    let backend = TcpBackend::connect(TcpConfig::new([server.addr()])).unwrap();
    check_dirty_line_write_back(Arc::new(backend));
    server.shutdown();
}

#[test]
fn discard_frees_backend_objects_and_reads_zero() {
    if skip() {
        return;
    }
    let store = Arc::new(EmbeddedStore::new());
    let region = PagedRegion::new(1 << 20, store.clone(), PagingConfig::new(128 << 10)).unwrap();
    let p = region.as_ptr();
    // SAFETY: in bounds of the live region.
    unsafe { std::ptr::write_bytes(p, 0x5A, 1 << 20) };
    region.flush().unwrap();
    assert_eq!(store.stats().unwrap().objects, 256);
    region.discard(0, 1 << 19).unwrap();
    assert_eq!(store.stats().unwrap().objects, 128);
    // SAFETY: in bounds.
    unsafe {
        assert_eq!(p.read(), 0);
        assert_eq!(p.add((1 << 19) + 5).read(), 0x5A);
    }
    assert!(
        region.discard(1 << 20, 1).is_err(),
        "out of range is a typed error"
    );
    drop(region);
    assert_eq!(store.stats().unwrap().objects, 0, "drop frees everything");
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let store: Arc<dyn Backend> = Arc::new(EmbeddedStore::new());
    assert!(matches!(
        PagedRegion::new(1 << 20, store.clone(), PagingConfig::new(4096)),
        Err(paging::PagingError::Config(_))
    ));
    assert!(matches!(
        PagedRegion::new(0, store, PagingConfig::new(1 << 20)),
        Err(paging::PagingError::Config(_))
    ));
}

/// Without privilege (and with `vm.unprivileged_userfaultfd = 0`) creating a region is a typed
/// error that says why, never a panic. Run as root, this test re-runs itself as user `nobody`.
#[test]
fn unprivileged_creation_is_a_typed_error() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("FARMEM_PAGING_UNPRIVILEGED_CHILD").is_some() {
        let r = PagedRegion::new(
            1 << 20,
            Arc::new(EmbeddedStore::new()),
            PagingConfig::new(1 << 20),
        );
        match (paging::available(), r) {
            (Ok(()), Ok(_)) => eprintln!("unprivileged userfaultfd is allowed here"),
            (Err(a), Err(paging::PagingError::Unsupported(why))) => {
                assert!(matches!(a, paging::PagingError::Unsupported(_)));
                assert!(why.contains("permission"), "{why}");
                println!("CHILD-SAW-UNSUPPORTED: {why}");
            }
            (a, r) => panic!("inconsistent: available {a:?}, new {r:?}"),
        }
        return;
    }
    let is_root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    let unpriv =
        std::fs::read_to_string("/proc/sys/vm/unprivileged_userfaultfd").unwrap_or_default();
    if !is_root || unpriv.trim() != "0" {
        support::skip_or_fail("needs root and vm.unprivileged_userfaultfd = 0");
        return;
    }
    // The test binary may sit where `nobody` cannot reach it (a checkout under /root): run a
    // copy from a fresh directory that everyone may read.
    let dir = std::env::temp_dir().join(format!("farmem-unpriv-{}", std::process::id()));
    let exe = dir.join("client_paging");
    let copied = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::copy(std::env::current_exe()?, &exe))
        .and_then(|_| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
            std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))
        });
    if let Err(e) = copied {
        let _ = std::fs::remove_dir_all(&dir);
        panic!("copying the test binary to {}: {e}", dir.display());
    }
    let out = std::process::Command::new(&exe)
        .current_dir(&dir)
        .args([
            "--exact",
            "unprivileged_creation_is_a_typed_error",
            "--nocapture",
        ])
        .env("FARMEM_PAGING_UNPRIVILEGED_CHILD", "1")
        .uid(65534)
        .gid(65534)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    match out {
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("CHILD-SAW-UNSUPPORTED"), "{stdout}");
        }
        Err(e) => support::skip_or_fail(&format!("cannot run as nobody: {e}")),
    }
}

/// A pager's only server stalls (a busy machine can hold a loopback server back for seconds):
/// with [`TcpConfig::without_failover`] the faults wait for it instead of the server being
/// declared down by the heartbeat, which would abort the process (a fault cannot fail).
#[test]
fn faults_wait_out_a_stalled_server() {
    if skip() {
        return;
    }
    let server = support::ServerProc::start(&[]);
    let backend = Arc::new(
        TcpBackend::connect(TcpConfig::new([server.addr.clone()]).without_failover()).unwrap(),
    );
    let budget = 64 * PAGE_SIZE;
    let len = 16 * budget;
    let region = PagedRegion::new(len, backend.clone(), PagingConfig::new(budget)).unwrap();
    let p = region.as_ptr();
    let word = |i: usize| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..len / PAGE_SIZE {
        // SAFETY: the offset is inside the region, which is alive.
        unsafe { p.add(i * PAGE_SIZE).cast::<u64>().write(word(i)) };
    }
    // The first pages were evicted to the server long ago: reading them faults to it.
    server.freeze();
    let stall = std::time::Duration::from_millis(3500);
    let took = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(stall);
            server.thaw();
        });
        let t0 = std::time::Instant::now();
        for i in 0..len / PAGE_SIZE {
            // SAFETY: as above.
            let got = unsafe { p.add(i * PAGE_SIZE).cast::<u64>().read() };
            assert_eq!(got, word(i), "page {i}");
        }
        t0.elapsed()
    });
    assert!(
        took >= stall / 2,
        "the reads did not wait for the server: {took:?}"
    );
    assert!(!backend.is_down(0), "the stalled server was declared down");
}
