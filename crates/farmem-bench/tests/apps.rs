//! The application benchmarks end to end: every mode gives the same answers (taxi) and the same
//! responses (web) on a small data set, against a loopback memory server the binary starts.

use std::process::Command;

fn run(args: &[&str]) -> serde_json::Value {
    let out_dir = std::env::temp_dir().join(format!(
        "farmem-apps-test-{}-{}",
        std::process::id(),
        args[0]
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_farmem-bench"))
        .args(args)
        .args(["--json", "--out"])
        .arg(&out_dir)
        .output()
        .expect("running farmem-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON summary on stdout");
    let file =
        std::fs::read_to_string(out_dir.join(format!("{}.json", args[0]))).expect("results file");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&file).unwrap(), v);
    let _ = std::fs::remove_dir_all(&out_dir);
    v
}

/// Modes that ran, with the value of `key` in their details.
fn ran<'a>(v: &'a serde_json::Value, key: &str) -> Vec<(&'a str, &'a str)> {
    v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["skipped"].is_null())
        .map(|r| {
            (
                r["mode"].as_str().unwrap(),
                r["detail"][key].as_str().unwrap(),
            )
        })
        .collect()
}

#[test]
fn taxi_answers_equal_across_modes() {
    let v = run(&[
        "taxi",
        "--rows",
        "40000",
        "--modes",
        "local,object,object-noagent,paging",
    ]);
    assert_eq!(v["answers_agree"], true);
    let runs = ran(&v, "answers");
    let modes: Vec<&str> = runs.iter().map(|r| r.0).collect();
    for m in ["local", "object", "object-noagent"] {
        assert!(modes.contains(&m), "{m} did not run: {v}");
    }
    assert!(
        runs[0].1.contains("1. trips: 40000, vendors: [1, 2]"),
        "{}",
        runs[0].1
    );
    assert!(runs.iter().all(|r| r.1 == runs[0].1));
}

#[test]
fn web_responses_equal_across_modes() {
    let v = run(&[
        "web",
        "--keys",
        "20000",
        "--elements",
        "256",
        "--requests",
        "3000",
        "--warmup",
        "1000",
        "--window",
        "5",
        "--threads",
        "2",
        "--modes",
        "local,object,paging",
    ]);
    assert_eq!(v["responses_agree"], true);
    let runs = ran(&v, "digest");
    let modes: Vec<&str> = runs.iter().map(|r| r.0).collect();
    assert!(modes.contains(&"local") && modes.contains(&"object"), "{v}");
    assert!(runs.iter().all(|r| r.1 == runs[0].1));
    for r in v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["skipped"].is_null())
    {
        assert!(r["throughput"].as_f64().unwrap() > 0.0);
        assert!(r["detail"]["p99_us"].as_f64().unwrap() >= r["detail"]["p50_us"].as_f64().unwrap());
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_farmem-bench"))
        .args(["taxi", "--local-mem", "150%"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be in (0, 100%]"));
    let out = Command::new(env!("CARGO_BIN_EXE_farmem-bench"))
        .args([
            "taxi",
            "--csv",
            "/nonexistent/trips.csv",
            "--modes",
            "local",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/trips.csv"));
}
