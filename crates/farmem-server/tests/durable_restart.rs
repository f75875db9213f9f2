//! Durable servers (`--data-dir`): killed with `kill -9` while many writers run, a server
//! restarts with every acknowledged change and no torn object, and its client resumes its
//! session and reads everything; snapshots, a torn log tail, a damaged or locked directory and
//! a full log.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use farmem::Backend;
use farmem::backend::{BackendError, ProtocolError, TcpBackend, TcpConfig};
use support::{ServerProc, wait_until, watchdog};

const BIN: &str = env!("CARGO_BIN_EXE_farmem-server");

fn data_dir(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("farmem-durable-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// A client that waits out a restart: it resumes its session instead of declaring the server
/// down.
fn client(addr: &str, conns: usize) -> TcpBackend {
    let cfg = TcpConfig::new([addr])
        .connections_per_server(conns)
        .reconnect_within(Duration::from_secs(30))
        .await_restart(true)
        .heartbeat(Duration::from_millis(200), Duration::from_secs(30));
    TcpBackend::connect(cfg).unwrap()
}

/// Object `id` as written in `round`: every byte derives from both, so a torn or mixed
/// object cannot pass for a whole one.
fn object(id: u64, round: u64) -> Vec<u8> {
    let len = 64 + (id * 37 + round * 11) % 900;
    (0..len)
        .map(|j| (id.wrapping_mul(131) ^ round.wrapping_mul(17) ^ j.wrapping_mul(7)) as u8)
        .collect()
}

/// What an object may hold: the value of its last acknowledged change, or, when a change
/// failed (its outcome unknown), that value or the failed change's.
type Model = HashMap<u64, Vec<Option<Vec<u8>>>>;

fn record(model: &mut Model, id: u64, v: Option<Vec<u8>>, acked: bool) {
    let e = model.entry(id).or_default();
    if acked {
        e.clear();
    }
    e.push(v);
}

/// One writer: puts (single, batched, pipelined), patches and frees over its own ids until
/// `stop`; returns its model.
fn writer(b: &TcpBackend, w: u64, stop: &AtomicBool) -> Model {
    let mut model = Model::new();
    let base = w * 1_000_000;
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) || round < 5 {
        round += 1;
        let ids: Vec<u64> = (0..12).map(|i| base + i).collect();
        let vals: Vec<Vec<u8>> = ids.iter().map(|&id| object(id, round)).collect();
        let items: Vec<(u64, &[u8])> = ids
            .iter()
            .copied()
            .zip(vals.iter().map(|v| &v[..]))
            .collect();
        let ok = b.put_many(&items).is_ok();
        for (id, v) in ids.iter().zip(&vals) {
            record(&mut model, *id, Some(v.clone()), ok);
        }
        let piped: Vec<(u64, Vec<u8>)> = (12..20)
            .map(|i| (base + i, object(base + i, round)))
            .collect();
        let tickets: Vec<_> = piped.iter().map(|(id, v)| b.submit_put(*id, v)).collect();
        for (t, (id, v)) in tickets.into_iter().zip(piped) {
            let ok = t.and_then(|t| b.wait_done(t)).is_ok();
            record(&mut model, id, Some(v), ok);
        }
        // A patch over object `base`, known to hold round's value only if its put was acked.
        let id = base;
        if let [Some(cur)] = model[&id].as_slice() {
            let mut patched = cur.clone();
            patched[..8].copy_from_slice(&round.to_le_bytes());
            let ok = b.patch(id, &[(0, &round.to_le_bytes())]).is_ok();
            record(&mut model, id, Some(patched), ok);
        }
        // Objects that come and go.
        let gone = base + 100 + round % 8;
        let ok = b.free(&[gone]).is_ok();
        record(&mut model, gone, None, ok);
        let back = base + 100 + (round + 4) % 8;
        let v = object(back, round);
        let ok = b.put(back, &v).is_ok();
        record(&mut model, back, Some(v), ok);
    }
    model
}

fn check(b: &TcpBackend, models: &[Model]) -> u64 {
    let mut present = 0;
    for m in models {
        for (id, allowed) in m {
            let got = match b.get(*id) {
                Ok(v) => Some(v),
                Err(BackendError::NotFound(_)) => None,
                Err(e) => panic!("object {id:#x}: {e}"),
            };
            present += u64::from(got.is_some());
            assert!(
                allowed.contains(&got),
                "object {id:#x} holds {:?} bytes, none of the {} allowed values",
                got.as_ref().map(Vec::len),
                allowed.len()
            );
        }
    }
    present
}

fn kill9_mid_write(sync: &str) {
    let dir = data_dir(&format!("kill-{sync}"));
    let d = dir.to_str().unwrap();
    let mut server =
        ServerProc::start(&["--data-dir", d, "--sync", sync, "--session-lease", "60s"]);
    let b = Arc::new(client(&server.addr, 3));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (1..=6u64)
        .map(|w| {
            let (b, stop) = (b.clone(), stop.clone());
            std::thread::spawn(move || writer(&b, w, &stop))
        })
        .collect();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(400));
        server.restart(); // kill -9, then the same options and data directory
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (models, _) = watchdog("the writers", Duration::from_secs(120), move || {
        writers
            .into_iter()
            .map(|w| w.join().unwrap())
            .collect::<Vec<_>>()
    });
    // The session survived both kills: the same client reads everything.
    let present = check(&b, &models);
    assert!(present > 6 * 20, "only {present} objects present");
    assert_eq!(b.server_stats().unwrap()[0].objects, present);
    // Once more, killed while idle: a fresh recovery finds the same state.
    server.restart();
    assert_eq!(check(&b, &models), present);
    drop(b);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn killed_mid_write_with_sync_always_it_keeps_every_acknowledged_change() {
    kill9_mid_write("always");
}

#[test]
fn killed_mid_write_with_sync_none_it_keeps_every_acknowledged_change() {
    kill9_mid_write("none");
}

fn files(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_snapshot_bounds_the_log_and_a_restart_after_it_loses_nothing() {
    let dir = data_dir("snap");
    let d = dir.to_str().unwrap();
    let mut server = ServerProc::start(&[
        "--data-dir",
        d,
        "--sync",
        "none",
        "--snapshot-after",
        "1MiB",
    ]);
    let b = client(&server.addr, 1);
    let mut model = Model::new();
    // 4 MiB of overwrites of 64 objects: the log outgrows its threshold several times.
    for round in 0..64u64 {
        let vals: Vec<(u64, Vec<u8>)> = (0..64)
            .map(|i| (i, vec![(round + i) as u8; 1000]))
            .collect();
        let items: Vec<(u64, &[u8])> = vals.iter().map(|(i, v)| (*i, &v[..])).collect();
        b.put_many(&items).unwrap();
        for (i, v) in vals {
            record(&mut model, i, Some(v), true);
        }
    }
    wait_until("a snapshot", Duration::from_secs(20), || {
        files(&dir, ".snap") == 1
    });
    server.restart();
    check(&b, &[model]);
    drop(b);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The newest log segment and the end of the data written to it (the rest is preallocated
/// zeros).
fn last_segment(dir: &Path) -> (PathBuf, usize) {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .filter(|p| std::fs::read(p).is_ok_and(|d| d.iter().any(|&b| b != 0)))
        .collect();
    segs.sort();
    let seg = segs.pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    (seg, end)
}

#[test]
fn a_torn_log_tail_is_cut_and_the_objects_before_it_are_whole() {
    let dir = data_dir("torn");
    let d = dir.to_str().unwrap();
    let mut server = ServerProc::start(&["--data-dir", d, "--sync", "none"]);
    let b = client(&server.addr, 1);
    for i in 0..10u64 {
        b.put(i, &object(i, 1)).unwrap();
    }
    server.kill9();
    // Tear the last record, as a crash in the middle of its write would.
    let (seg, end) = last_segment(&dir);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(end as u64 - 100).unwrap();
    drop(f);
    server.restart();
    for i in 0..9u64 {
        assert_eq!(b.get(i).unwrap(), object(i, 1), "object {i}");
    }
    assert!(matches!(b.get(9), Err(BackendError::NotFound(9))));
    drop(b);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs the binary on `dir` expecting it to refuse to start; returns what it printed.
fn refused(dir: &Path) -> String {
    let out = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--capacity",
            "64MiB",
            "--data-dir",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_damaged_or_locked_data_directory_is_refused_with_a_reason() {
    let dir = data_dir("bad");
    let d = dir.to_str().unwrap();
    let mut server = ServerProc::start(&["--data-dir", d, "--sync", "none"]);
    let err = refused(&dir);
    assert!(err.contains("in use by another server"), "{err}");
    let b = client(&server.addr, 1);
    for i in 0..10u64 {
        b.put(i, &object(i, 1)).unwrap();
    }
    drop(b);
    server.kill9();
    // A restart then moves the log to a new segment, so the damaged one is not the tail.
    server.restart();
    server.kill9();
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    let mut bytes = std::fs::read(&segs[0]).unwrap();
    bytes[100] ^= 0x5a;
    std::fs::write(&segs[0], &bytes).unwrap();
    let err = refused(&dir);
    assert!(err.contains("damaged"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A file where the directory should be.
    let file = data_dir("file");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = refused(&file);
    assert!(err.contains("data directory"), "{err}");
    std::fs::remove_file(&file).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_log_refuses_changes_with_a_storage_error_and_keeps_what_it_acknowledged() {
    let dir = data_dir("full");
    let d = dir.to_str().unwrap();
    let mut server = ServerProc::start(&["--data-dir", d, "--sync", "none", "--log-limit", "1MiB"]);
    let b = client(&server.addr, 1);
    let mut stored = 0u64;
    let err = loop {
        match b.put(stored, &object(stored, 2)) {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 10_000, "the log limit is not enforced");
    };
    assert!(
        matches!(
            err,
            BackendError::Protocol(ProtocolError::ServerError { code, .. })
                if code == farmem_proto::ErrorCode::StorageFailed as u16
        ),
        "{err:?}"
    );
    // The connection stays usable; reads go on.
    assert_eq!(b.get(0).unwrap(), object(0, 2));
    server.restart();
    for i in 0..stored {
        assert_eq!(b.get(i).unwrap(), object(i, 2), "object {i}");
    }
    assert!(matches!(b.get(stored), Err(BackendError::NotFound(_))));
    drop(b);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}
