//! Python with numpy through the shim: a reduction over an array four times the local budget,
//! and `subprocess` (fork + exec) from a program under the shim.

mod support;

use std::process::Command;

use support::{assert_ok, far_memory_available, run_under_shim, skip_or_fail, stats};

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
