//! `farmem-server --config FILE`: the shipped example parses and checks, flags override the
//! file, and a wrong key or value stops the server naming the key.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use farmem::backend::{TcpBackend, TcpConfig};
use farmem::{Backend, BackendError};
use farmem_server::FileConfig;

use support::ServerProc;
use support::ops::file_with;

const BIN: &str = env!("CARGO_BIN_EXE_farmem-server");

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/farmem-server.toml")
}

#[test]
fn the_shipped_example_parses_with_the_values_it_documents() {
    let c = FileConfig::load(&example()).expect("deploy/farmem-server.toml");
    assert_eq!(c.listen, Some("0.0.0.0:7070".parse().unwrap()));
    assert_eq!(c.capacity, Some(8 << 30));
    assert_eq!(c.metrics, Some("0.0.0.0:9090".parse().unwrap()));
    assert_eq!(c.session_lease, Some(Duration::from_secs(30)));
    assert_eq!(c.max_connections, Some(16384));
    assert_eq!(c.quota.bytes, Some(4 << 30));
    assert!(c.quota.requests_per_second.is_some());
    // Secrets are not in it: the unit and the DaemonSet pass them as flags.
    assert_eq!((c.token_file, c.admin_token_file), (None, None));
}

fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--check")
        .output()
        .expect("run farmem-server --check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_the_example_and_names_a_wrong_key() {
    let ex = example();
    let (code, err) = check(&["--config", ex.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let typo = file_with(
        "typo.toml",
        "capacity = \"1GiB\"\n[quota]\nbyts = \"1GiB\"\n",
    );
    let (code, err) = check(&["--config", typo.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("`quota.byts`"), "{err}");
    let bad = file_with("bad.toml", "session_lease = \"a while\"\n");
    let (code, err) = check(&["--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("`session_lease`"), "{err}");
    let (code, err) = check(&["--config", "/nonexistent/farmem.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
    // Settings that do not fit together are refused too.
    let (code, err) = check(&["--quota-burst", "10"]);
    assert_eq!(code, 2);
    assert!(err.contains("quota.burst"), "{err}");
}

#[test]
fn flags_override_the_file_and_the_rest_of_the_file_applies() {
    let file = file_with(
        "farmem.toml",
        "capacity = \"1MiB\"\nlisten = \"127.0.0.1:1\"\n[quota]\nobjects = 2\n",
    );
    // --listen and --capacity override the file; its quota applies.
    let server = ServerProc::start(&["--config", file.to_str().unwrap(), "--capacity", "2MiB"]);
    let c = TcpBackend::connect(
        TcpConfig::new([server.addr.as_str()]).timeout(Duration::from_secs(10)),
    )
    .expect("connect");
    assert_eq!(c.server_stats().unwrap()[0].capacity_bytes, 2 << 20);
    c.put(1, b"a").unwrap();
    c.put(2, b"b").unwrap();
    assert!(matches!(
        c.put(3, b"c"),
        Err(BackendError::QuotaExceeded { .. })
    ));
}

/// `--check`'s standard output (and the exit code and standard error).
fn check_out(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--check")
        .output()
        .expect("run farmem-server --check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_loads_the_tls_files_and_the_connection_settings_of_the_file() {
    let pki = support::pki::Pki::new();
    let cert = file_with("tls.crt", &pki.cert);
    let key = file_with("tls.key", &pki.key);
    let text = format!(
        "max_connections = 5000\nio_threads = 2\nworkers = 2\ntls_cert = {:?}\ntls_key = {:?}\n",
        cert.to_str().unwrap(),
        key.to_str().unwrap()
    );
    let file = file_with("tls.toml", &text);
    let (code, out, err) = check_out(&["--config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("max_connections 5000"), "{out}");
    assert!(out.contains("tls on"), "{out}");
    // A key that is not the certificate's key, and a certificate without its key, are refused.
    let other = file_with("other.key", &support::pki::Pki::new().key);
    let (code, _, err) = check_out(&[
        "--config",
        file.to_str().unwrap(),
        "--tls-key",
        other.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("TLS"), "{err}");
    let (code, _, err) = check_out(&["--tls-cert", cert.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("tls_key"), "{err}");
    // The connection limit's old name still works; both names at once are refused.
    let old = file_with("old.toml", "threads = 300\n");
    let (code, out, err) = check_out(&["--config", old.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("max_connections 300"), "{out}");
    let both = file_with("both.toml", "threads = 300\nmax_connections = 300\n");
    let (code, _, err) = check_out(&["--config", both.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("`threads`"), "{err}");
}
