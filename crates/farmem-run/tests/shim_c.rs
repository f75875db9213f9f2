//! C programs through the shim: large buffers beyond the local budget through every allocation
//! function, realloc across the threshold, and threads allocating and freeing concurrently.
//! Skips where userfaultfd paging is unavailable (fails under `FARMEM_REQUIRE_PRIVILEGED`).

mod support;

use support::{assert_ok, compile, far_memory_available, run_under_shim, stats};

#[test]
fn large_buffers_beyond_the_budget_are_paged_verified_and_given_back() {
    if !far_memory_available() {
        return;
    }
    let exe = compile("big");
    let out = run_under_shim("16MiB", &[], &[&exe]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("big ok"));
    let s = stats(&out);
    assert_eq!(s.len(), 1, "one process: {s:?}");
    let s = &s[0];
    assert!(
        s["written_back"] > 0 && s["fetch_faults"] + s["prefetched"] > 0,
        "it paged: {s:?}"
    );
    assert!(s["resident_pages"] <= (16 << 20) / 4096, "{s:?}");
    assert_eq!(s["live_bytes"], 0, "every block freed: {s:?}");
    assert_eq!(
        s["server_objects"], 0,
        "the servers hold nothing any more: {s:?}"
    );
}

#[test]
fn realloc_crosses_the_threshold_both_ways() {
    if !far_memory_available() {
        return;
    }
    let exe = compile("realloc");
    let out = run_under_shim("8MiB", &[], &[&exe]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("realloc ok"));
    let s = &stats(&out)[0];
    assert!(
        s["written_back"] > 0,
        "the vector outgrew the budget: {s:?}"
    );
    assert_eq!((s["live_bytes"], s["server_objects"]), (0, 0), "{s:?}");
}

#[test]
fn threads_allocate_and_free_concurrently() {
    if !far_memory_available() {
        return;
    }
    let exe = compile("threads");
    let out = run_under_shim("8MiB", &[], &[&exe]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("threads ok"));
    let s = &stats(&out)[0];
    assert!(s["written_back"] > 0, "{s:?}");
    assert_eq!((s["live_bytes"], s["server_objects"]), (0, 0), "{s:?}");
}

#[test]
fn allocations_below_the_threshold_stay_local() {
    if !far_memory_available() {
        return;
    }
    let exe = compile("big");
    // A threshold above every buffer: the program runs on the real allocator only.
    let out = run_under_shim("16MiB", &["--threshold", "64MiB"], &[&exe]);
    assert_ok(&out);
    let s = &stats(&out)[0];
    assert_eq!(s["zero_faults"] + s["written_back"], 0, "{s:?}");
}

#[test]
fn unreachable_servers_fail_clearly_or_fall_back_to_local_memory() {
    if !far_memory_available() {
        return;
    }
    let exe = compile("big");
    // Nothing listens on port 1.
    let out = run_under_shim("16MiB", &["--servers", "127.0.0.1:1"], &[&exe]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fallback-local"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("big ok"));

    let out = run_under_shim(
        "16MiB",
        &["--servers", "127.0.0.1:1", "--fallback-local"],
        &[&exe],
    );
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("big ok"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("running on local memory only"));
    assert!(stats(&out).is_empty(), "no far heap");
}

#[test]
fn anonymous_mmaps_are_far_and_unmapped_pieces_given_back() {
    if !far_memory_available() {
        return;
    }
    let exe = compile("mmap");
    let out = run_under_shim("4MiB", &[], &[&exe]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("mmap ok"));
    let s = &stats(&out)[0];
    assert!(s["written_back"] > 0, "the mappings were paged: {s:?}");
    assert_eq!((s["live_bytes"], s["server_objects"]), (0, 0), "{s:?}");

    let out = run_under_shim("4MiB", &["--no-mmap"], &[&exe]);
    assert_ok(&out);
    let s = &stats(&out)[0];
    assert_eq!(s["zero_faults"], 0, "with --no-mmap nothing is far: {s:?}");
}
