//! Python with numpy through the shim: a reduction over an array four times the local budget,
//! `subprocess` (fork + exec) from a program under the shim, and `multiprocessing` workers
//! started with `fork` reading and writing an array that was far at the fork.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{
    assert_ok, far_memory_available, fork_serving_available, output_within, run_under_shim,
    shim_command, skip_or_fail, stats,
};

fn numpy_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import numpy"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip_or_fail("python3 with numpy is not installed");
    }
    ok
}

const SCRIPT: &str = r#"
import subprocess, numpy as np
n = 16 * 1024 * 1024                      # 128 MiB of float64, 4x the 32 MiB budget
a = np.arange(n, dtype=np.float64)
assert a.sum() == n * (n - 1) / 2
b = a * 3.0
assert b[::4096].sum() == 3.0 * np.arange(0, n, 4096, dtype=np.float64).sum()
assert float(b.sum()) == 3.0 * n * (n - 1) / 2
del b
out = subprocess.run(["echo", "from a child"], capture_output=True, text=True).stdout
assert out.strip() == "from a child", out
print("numpy ok")
"#;

#[test]
fn numpy_reduction_over_four_times_the_budget_matches() {
    if !far_memory_available() || !numpy_available() {
        return;
    }
    let out = run_under_shim("32MiB", &[], &[&"python3", &"-c", &SCRIPT]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("numpy ok"));
    let s = stats(&out);
    let py = s
        .iter()
        .max_by_key(|p| p["written_back"])
        .expect("python printed its counters");
    assert!(
        py["written_back"] > 0 && py["fetch_faults"] + py["prefetched"] > 0,
        "{s:?}"
    );
    assert!(py["resident_pages"] <= (32 << 20) / 4096, "{s:?}");
}

const MULTIPROCESSING: &str = r#"
import multiprocessing as mp, numpy as np
n = 16 * 1024 * 1024                      # 128 MiB of float64, 4x the 32 MiB budget
a = np.arange(n, dtype=np.float64)
chunk = n // 4

def part(k):
    return float(a[k * chunk:(k + 1) * chunk].sum())

def scribble(q):
    a[:] = -1.0                           # private to this child
    q.put(float(a.sum()))

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        s1 = sum(pool.map(part, range(4)))
        a *= 2.0                          # the parent's new version; the workers keep theirs
        s2 = sum(pool.map(part, range(4)))
    assert s1 == n * (n - 1) / 2 and s2 == s1, (s1, s2)
    q = ctx.Queue()
    p = ctx.Process(target=scribble, args=(q,))
    p.start()
    assert q.get(timeout=120) == -float(n)
    p.join(120)
    assert p.exitcode == 0, p.exitcode
    assert float(a.sum()) == n * (n - 1), "the parent's array is its own"
    print("multiprocessing ok")
"#;

#[test]
fn multiprocessing_fork_workers_read_the_array_as_at_the_fork() {
    if !far_memory_available() || !fork_serving_available() || !numpy_available() {
        return;
    }
    let cmd = shim_command("32MiB", &[], &[&"python3", &"-c", &MULTIPROCESSING]);
    let out = output_within(cmd, Duration::from_secs(300));
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("multiprocessing ok"));
    let s = stats(&out);
    assert!(
        s.iter().any(|p| p["written_back"] > 0),
        "the array went far: {s:?}"
    );
}
