//! `fork` and `exec` from a program under the shim: the parent's far memory is intact whatever
//! the child does; a child reading pages that were not resident fails clearly; fork + exec
//! works, and the executed program gets far memory of its own.

mod support;

use support::{assert_ok, compile, far_memory_available, run_under_shim, stats};

#[test]
fn child_touching_resident_memory_leaves_the_parent_intact() {
    if !far_memory_available() {
        return;
    }
    let exe = compile("fork");
    let out = run_under_shim("16MiB", &[], &[&exe, &"resident"]);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("child exit 0"), "{stdout}");
    assert!(stdout.contains("parent ok"), "{stdout}");
    let s = stats(&out);
    assert_eq!(s.len(), 1, "the child prints nothing: {s:?}");
    assert_eq!(
        (s[0]["live_bytes"], s[0]["server_objects"]),
        (0, 0),
        "{s:?}"
    );
}

#[test]
fn child_reading_pages_that_were_far_fails_clearly() {
    if !far_memory_available() {
        return;
    }
    let exe = compile("fork");
    let out = run_under_shim("16MiB", &[], &[&exe, &"absent"]);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("child signal 11"), "{stdout}");
    assert!(!stdout.contains("child read everything"), "{stdout}");
    assert!(stdout.contains("parent ok"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not resident at the fork"),
        "the child says why"
    );
}

#[test]
fn fork_and_exec_runs_the_new_program_with_far_memory_of_its_own() {
    if !far_memory_available() {
        return;
    }
    let exe = compile("fork");
    let big = compile("big");
    let out = run_under_shim("16MiB", &[], &[&exe, &"exec", &big]);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("big ok"), "{stdout}");
    assert!(stdout.contains("child exit 0"), "{stdout}");
    assert!(stdout.contains("parent ok"), "{stdout}");
    let s = stats(&out);
    assert_eq!(s.len(), 2, "parent and executed child: {s:?}");
    assert!(
        s.iter()
            .all(|p| p["written_back"] > 0 && p["live_bytes"] == 0),
        "{s:?}"
    );

    // With --no-inherit the executed program runs on local memory only.
    let out = run_under_shim("16MiB", &["--no-inherit"], &[&exe, &"exec", &big]);
    assert_ok(&out);
    assert_eq!(stats(&out).len(), 1, "only the parent is under the shim");
}
