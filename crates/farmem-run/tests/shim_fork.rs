//! `fork` and `exec` from a program under the shim: a forked child reads every far page as it
//! was at the fork and writes privately, while the parent's far memory stays its own whatever
//! the child does; a child whose parent ends without handing its pages over (SIGKILL,
//! `_exit`) keeps the pages it has and is stopped with a message at the first one it has not;
//! without fork serving, a child reading pages that were not resident fails clearly; fork +
//! exec works, and the executed program gets far memory of its own.

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

/// Runs `fork_kill` with P ending by `how` (`kill`: SIGKILL, `exit`: `_exit`), both without
/// exit handlers, and checks what its children read afterwards: the pages they had keep their
/// data, pages never written read as zeros, and the first far page they had not touched stops
/// them with SIGBUS and a message naming the cause, never with zeros or other wrong data.
fn child_of_a_parent_ending_without_handing_over(how: &str) {
    let exe = compile("fork_kill");
    let out = output_within(shim_command("16MiB", &[], &[&exe, &how]), DEADLINE);
    assert_ok(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ctx = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(!stdout.contains("WRONG DATA"), "{ctx}");
    let pid_of = |who: &str| -> String {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{who} pid ")))
            .unwrap_or_else(|| panic!("no pid of {who}: {ctx}"));
        line.rsplit(' ').next().unwrap_or_default().to_string()
    };
    let ending = |who: &str| -> String {
        let prefix = format!("reaped {} ", pid_of(who));
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{who} was not reaped: {ctx}"))
            .to_string()
    };
    let p_end = if how == "kill" { "signal 9" } else { "exit 0" };
    assert_eq!(ending("P"), p_end, "{ctx}");
    // Pages P never wrote read as zeros, also while B (a sibling holding copies of P's
    // descriptors) lives.
    assert!(stdout.contains("A read the unwritten block"), "{ctx}");
    assert_eq!(ending("B"), "exit 0", "{ctx}");
    // A read block 0 while P served it, and again once P was gone.
    assert_eq!(stdout.matches("A read block 0").count(), 2, "{ctx}");
    // Blocks 1 and 2 were far at the fork and never touched while P lived.
    assert!(!stdout.contains("A read block 1"), "{ctx}");
    assert!(!stdout.contains("G read block 2"), "{ctx}");
    assert_eq!(ending("A"), "signal 7", "A is stopped with SIGBUS: {ctx}");
    assert_eq!(ending("G"), "signal 7", "G is stopped with SIGBUS: {ctx}");
    assert_eq!(
        stderr
            .matches("touched far memory its parent no longer serves")
            .count(),
        2,
        "each child names the cause: {ctx}"
    );
}

#[test]
fn child_of_a_killed_parent_never_reads_zeros_for_far_pages() {
    if !far_memory_available() || !fork_serving_available() {
        return;
    }
    child_of_a_parent_ending_without_handing_over("kill");
}

#[test]
fn child_of_a_parent_ending_by_exit_never_reads_zeros_for_far_pages() {
    if !far_memory_available() || !fork_serving_available() {
        return;
    }
    child_of_a_parent_ending_without_handing_over("exit");
}

/// A parent killed at moments spread over its child's reading (while it serves the child's
/// faults, say): the child reads every block right or is stopped with SIGBUS and the message,
/// never reads wrong data.
#[test]
fn child_of_a_parent_killed_mid_read_reads_right_data_or_stops() {
    if !far_memory_available() || !fork_serving_available() {
        return;
    }
    let exe = compile("fork_kill_race");
    for ms in ["0", "5", "20", "60"] {
        let out = output_within(shim_command("16MiB", &[], &[&exe, &ms]), DEADLINE);
        assert_ok(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ctx = format!("killed after {ms} ms\nstdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(!stdout.contains("WRONG DATA"), "{ctx}");
        assert!(stdout.contains("signal 9"), "P was killed: {ctx}");
        let stopped = stderr.contains("touched far memory its parent no longer serves");
        if stdout.contains("A read all") {
            assert!(stdout.contains("exit 0") && !stopped, "{ctx}");
        } else {
            assert!(
                stdout.contains("signal 7") && stopped,
                "A is stopped: {ctx}"
            );
        }
    }
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
