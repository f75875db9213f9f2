//! `fork` and `exec` from a program under the shim: a forked child reads every far page as it
//! was at the fork and writes privately, while the parent's far memory stays its own whatever
//! the child does; without fork serving, a child reading pages that were not resident fails
//! clearly; fork + exec works, and the executed program gets far memory of its own.

mod support;

use std::time::Duration;

use support::{
    assert_ok, compile, far_memory_available, fork_serving_available, output_within,
    run_under_shim, shim_command, stats,
};

/// Longest a fork test may take (a loaded CI machine is slow; a hang must not last forever).
const DEADLINE: Duration = Duration::from_secs(300);

#[test]
fn forked_child_reads_far_pages_as_at_the_fork_and_writes_privately() {
    if !far_memory_available() || !fork_serving_available() {
        return;
    }
    let exe = compile("fork_far");
    // Four 16 MiB blocks against a 16 MiB budget: most pages are far at the fork.
    let out = output_within(shim_command("16MiB", &[], &[&exe, &"16"]), DEADLINE);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("child ok"), "{stdout}");
    assert!(stdout.contains("parent ok"), "{stdout}");
    let s = stats(&out);
    assert_eq!(s.len(), 1, "children print nothing: {s:?}");
    assert!(s[0]["written_back"] > 0, "the blocks went far: {s:?}");
    assert_eq!(s[0]["live_bytes"], 0, "{s:?}");
}

#[test]
fn forked_child_outliving_its_parent_keeps_its_far_pages() {
    if !far_memory_available() || !fork_serving_available() {
        return;
    }
    let exe = compile("fork_far");
    // The output pipes close when the child, which inherited them, is done too.
    let out = output_within(
        shim_command("16MiB", &[], &[&exe, &"16", &"orphan"]),
        DEADLINE,
    );
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("parent exits"), "{stdout}");
    assert!(stdout.contains("orphan ok"), "{stdout}");
}

#[test]
fn forked_child_reads_pages_that_were_not_resident() {
    if !far_memory_available() || !fork_serving_available() {
        return;
    }
    let exe = compile("fork");
    let out = output_within(shim_command("16MiB", &[], &[&exe, &"absent"]), DEADLINE);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("child read everything"), "{stdout}");
    assert!(stdout.contains("child exit 0"), "{stdout}");
    assert!(stdout.contains("parent ok"), "{stdout}");
}

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
fn without_fork_serving_a_child_reading_pages_that_were_far_fails_clearly() {
    if !far_memory_available() {
        return;
    }
    let exe = compile("fork");
    let mut cmd = shim_command("16MiB", &[], &[&exe, &"absent"]);
    cmd.env("FARMEM_RUN_FORKS", "0");
    let out = output_within(cmd, DEADLINE);
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
