//! What the shim tests share: the `farmem-run` binary with its shim built, C programs compiled
//! with `cc`, and skipping where userfaultfd paging is unavailable.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

#[path = "../../../farmem/tests/support/mod.rs"]
mod skip;
pub use skip::skip_or_fail;

/// The `farmem-run` binary.
pub fn farmem_run() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_farmem-run"))
}

/// Builds the shim next to `farmem-run` (cargo does not build a cdylib that no target links).
fn build_shim() -> Result<PathBuf, String> {
    let bin = farmem_run();
    let dir = bin.parent().ok_or("farmem-run has no directory")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "farmem-preload"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // The variables cargo set for this test (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, ...) would
    // reach dependencies' build scripts that watch them, and rebuild those and everything above
    // them at every switch between this build and a build from a shell.
    for (key, _) in std::env::vars_os() {
        let key_str = key.to_string_lossy();
        if key_str.starts_with("CARGO_")
            && !matches!(
                &*key_str,
                "CARGO_HOME" | "CARGO_TARGET_DIR" | "CARGO_BUILD_TARGET_DIR"
            )
        {
            cmd.env_remove(&key);
        }
    }
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().map_err(|e| format!("running cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the shim failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let lib = dir.join("libfarmem_preload.so");
    if lib.is_file() {
        Ok(lib)
    } else {
        Err(format!("no shim at {} after building it", lib.display()))
    }
}

/// The shim library (built once per test binary).
pub fn shim() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| build_shim().unwrap_or_else(|e| panic!("{e}")))
}

/// Whether paged far memory works here; prints why and returns `false` otherwise (or panics
/// under `FARMEM_REQUIRE_PRIVILEGED`).
pub fn far_memory_available() -> bool {
    match farmem::paging::available_user_mode() {
        Ok(()) => true,
        Err(e) => {
            skip_or_fail(&format!("far memory: {e}"));
            false
        }
    }
}

/// Compiles `tests/programs/<name>.c` (with pthreads) and returns the executable.
pub fn compile(name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/programs")
        .join(format!("{name}.c"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("shim-{name}"));
    let st = Command::new("cc")
        .args(["-O1", "-Wall", "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("running cc");
    assert!(st.success(), "compiling {} failed", src.display());
    out
}

/// `farmem-run --stats` with `--local-mem local` and the extra options, running `cmd`.
pub fn shim_command(local: &str, extra: &[&str], cmd: &[&dyn AsRef<std::ffi::OsStr>]) -> Command {
    let mut c = Command::new(farmem_run());
    c.arg("--local-mem")
        .arg(local)
        .arg("--stats")
        .arg("--preload")
        .arg(shim())
        .args(extra)
        .arg("--");
    for a in cmd {
        c.arg(a);
    }
    c
}

/// Runs `cmd` under `farmem-run --stats` with `--local-mem local` and the extra options.
pub fn run_under_shim(local: &str, extra: &[&str], cmd: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    shim_command(local, extra, cmd)
        .output()
        .expect("running farmem-run")
}

/// Runs `c` to completion with its output captured; kills it and panics (with what it printed)
/// if it has not finished within `deadline`.
pub fn output_within(mut c: Command, deadline: std::time::Duration) -> Output {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    // A group of its own: the deadline kills every process of it, including orphans that
    // would otherwise keep the pipes open (and the readers below waiting) after the command.
    let mut child = c
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the command");
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("waiting for the command") {
            break st;
        }
        if start.elapsed() > deadline {
            kill_group(child.id());
            let _ = child.wait();
            let (o, e) = (
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default(),
            );
            panic!(
                "no result within {deadline:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&o),
                String::from_utf8_lossy(&e)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // Processes it left behind (an orphaned child) may still write: their output counts, until
    // the deadline.
    while !(out.is_finished() && err.is_finished()) {
        if start.elapsed() > deadline {
            kill_group(child.id());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Sends SIGKILL to process group `pgid`.
fn kill_group(pgid: u32) {
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is shared.
    unsafe { libc::kill(-(pgid as i32), libc::SIGKILL) };
}

/// Whether forked children of a program under the shim are served (root: userfaultfd fork
/// events need `CAP_SYS_PTRACE`); prints why and returns `false` otherwise (or panics under
/// `FARMEM_REQUIRE_PRIVILEGED`).
pub fn fork_serving_available() -> bool {
    match farmem::paging::available_fork_serving() {
        Ok(()) => true,
        Err(e) => {
            skip_or_fail(&format!("serving forked children: {e}"));
            false
        }
    }
}

/// The paging counters each process printed at exit: one map per `farmem-run stats:` line.
pub fn stats(out: &Output) -> Vec<std::collections::HashMap<String, i64>> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("farmem-run stats: "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
                .collect()
        })
        .collect()
}

/// Panics with the program's output unless it exited with status 0.
pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
