//! Kernel swap over TCP (`farmem-bench netswap`): a child touches 64 MiB under a 16 MiB memory
//! cgroup; its pages must go to the memory server and come back intact, and every system change
//! must be gone afterwards. Needs root, /dev/fuse and loop devices; skips without them
//! (fails instead when `FARMEM_REQUIRE_PRIVILEGED` is set, as in CI).

mod support;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Both tests compare the system's swap devices before and after: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Runs the binary with a deadline so a broken kernel path fails the test instead of hanging it.
fn run_with_deadline(args: &[&str], limit: Duration) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_farmem-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting farmem-bench");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waiting for farmem-bench") {
            let out = child.wait_with_output().expect("collecting output");
            return (
                status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if start.elapsed() > limit {
            // SIGINT first: the harness cleans up on Ctrl-C.
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            panic!("farmem-bench netswap did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that no swap device, FUSE mount or loop device of ours is left.
fn assert_clean(swaps_before: &str) {
    assert_eq!(read("/proc/swaps"), swaps_before, "swap device left behind");
    assert!(
        !read("/proc/mounts").contains("farmem-netswap"),
        "FUSE mount left behind"
    );
    for dev in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let backing = read(&format!("{}/loop/backing_file", dev.path().display()));
        assert!(
            !backing.contains("farmem-netswap"),
            "loop device {:?} left behind",
            dev.file_name()
        );
    }
}

#[test]
fn pages_swap_to_the_memory_server_and_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let swaps_before = read("/proc/swaps");
    let json =
        std::env::temp_dir().join(format!("farmem-netswap-test-{}.json", std::process::id()));
    let json_arg = json.display().to_string();
    let (ok, stdout, stderr) = run_with_deadline(
        &[
            "netswap",
            "--mib",
            "64",
            "--limit-mib",
            "16",
            "--random-reads",
            "2000",
            "--json",
            &json_arg,
        ],
        Duration::from_secs(120),
    );
    if stdout.contains("skipped") {
        support::skip_or_fail(&format!("kernel swap over TCP: {}", stdout.trim()));
        return;
    }
    assert!(ok, "netswap failed: {stdout}{stderr}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("result file")).unwrap();
    let _ = std::fs::remove_file(&json);
    let num = |p: &str| v.pointer(p).and_then(serde_json::Value::as_u64).unwrap();
    assert_eq!(num("/child/bad_pages"), 0, "pages came back wrong: {v}");
    assert_eq!(num("/child/pages"), 64 * 256);
    // At least the 48 MiB beyond the limit must have been swapped out to the server...
    let written = num("/net/daemon/pages_written");
    assert!(written >= 48 * 256, "only {written} pages swapped out: {v}");
    assert!(num("/net/server_bytes_written") >= written * 4096, "{v}");
    // ...and read back to verify them.
    assert!(num("/net/daemon/pages_read") >= 40 * 256, "{v}");
    assert_eq!(num("/net/daemon/backend_errors"), 0, "{v}");
    let peak = num("/cgroup_peak_bytes");
    assert!(
        peak == 0 || peak <= 16 << 20,
        "cgroup peak {peak} over its limit"
    );
    assert_clean(&swaps_before);
}

#[test]
fn a_dead_memory_server_fails_the_run_without_hanging_or_leaking() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let swaps_before = read("/proc/swaps");
    // A memory server in its own process, killed while the child is swapping to it.
    let mut server = Command::new(env!("CARGO_BIN_EXE_farmem-bench"))
        .args(["paging", "--serve-child", "--budget-mib", "4096"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting a memory server");
    let mut addr = String::new();
    let out = server.stdout.take().expect("server stdout");
    std::io::BufReader::new(out)
        .read_line(&mut addr)
        .expect("server address");
    let pid = server.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        let _ = server.kill();
        let _ = server.wait();
    });
    let (ok, stdout, stderr) = run_with_deadline(
        &[
            "netswap",
            "--mib",
            "2048",
            "--limit-mib",
            "16",
            "--random-reads",
            "100000000",
            "--server",
            addr.trim(),
        ],
        Duration::from_secs(90),
    );
    let _ = killer.join();
    if stdout.contains("skipped") {
        support::skip_or_fail(&format!("kernel swap over TCP: {}", stdout.trim()));
        return;
    }
    assert!(
        !ok,
        "the run succeeded although memory server {pid} was killed: {stdout}{stderr}"
    );
    assert_clean(&swaps_before);
}
