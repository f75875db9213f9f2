//! `farmem-bench failover --quick`: three memory servers as child processes, one killed, one
//! frozen, one partitioned away in a network namespace (root), one drained; every value the
//! application stored is read back and verified. As root, kernel swap over TCP loses its server
//! too, and everything it set up must be gone afterwards.

use std::process::Command;

/// Whether every privileged part must run (as in CI).
fn privileged_required() -> bool {
    std::env::var("FARMEM_REQUIRE_PRIVILEGED").is_ok_and(|v| !v.is_empty() && v != "0")
}

#[test]
fn failover_quick_loses_nothing() {
    let out_dir = std::env::temp_dir().join(format!("farmem-failover-test-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_farmem-bench"))
        .args(["failover", "--quick", "--out"])
        .arg(&out_dir)
        .output()
        .expect("running farmem-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "failover --quick failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let file = std::fs::read_to_string(out_dir.join("failover.json")).expect("results file");
    let v: serde_json::Value = serde_json::from_str(&file).expect("JSON results");
    let _ = std::fs::remove_dir_all(&out_dir);
    // 20k keys + 1024 elements in the quick data set.
    let all = 20_000 + 1024;
    let reps = v["replicas"].as_array().expect("replica runs");
    assert_eq!(reps.len(), 3);
    for (i, r) in reps.iter().enumerate() {
        assert_eq!(r["replicas"], i + 1);
        assert_eq!(r["values_verified"], all, "{r}");
        // n copies take at least n times the application's bytes on the servers.
        assert!(
            r["used_per_app_byte"].as_f64().unwrap() >= (i + 1) as f64 * 0.9,
            "{r}"
        );
    }
    let failures = v["failures"].as_array().expect("failure runs");
    let signals: Vec<&str> = failures
        .iter()
        .map(|f| f["signal"].as_str().unwrap())
        .collect();
    assert_eq!(signals[..2], ["SIGKILL", "SIGSTOP"]);
    // The partition needs root (network namespaces).
    assert!(signals[2..] == ["partition"] || signals.len() == 2 && !privileged_required());
    for f in failures {
        assert_eq!(f["values_verified"], all, "{f}");
        assert!(
            f["restore_seconds"].is_number(),
            "redundancy not restored: {f}"
        );
        assert!(f["repair_bytes"].as_u64().unwrap() > 0, "{f}");
    }
    let drain = &v["drain"];
    assert_eq!(drain["values_verified"], all, "{drain}");
    assert!(drain["drained_bytes"].as_u64().unwrap() > 0, "{drain}");
    let kills = v["kernel_swap_kill"].as_array().expect("kernel swap kills");
    assert!(
        kills.len() == 2 || kills.is_empty() && !privileged_required(),
        "kernel swap kill skipped: {stdout}"
    );
    for k in kills {
        assert_eq!(k["leftovers"], serde_json::json!([]), "{k}");
        assert!(k["pages_on_server_at_kill"].as_u64().unwrap() > 0, "{k}");
    }
}
