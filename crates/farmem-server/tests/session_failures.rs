//! Degrade, never collapse: with one of several servers killed or frozen, its objects fail fast
//! with `ServerDown` naming it, everything else keeps working, and dropping never hangs.

mod support;

use std::time::{Duration, Instant};

use farmem::backend::{TcpBackend, TcpConfig};
use farmem::{Backend, BackendConfig, BackendError, FarBox, Runtime, RuntimeConfig};
use support::{ServerProc, wait_until, watchdog};

fn object(i: u64) -> Vec<u8> {
    (0..64).map(|j| (i.wrapping_mul(13) ^ j) as u8).collect()
}

fn down_addr(e: &BackendError) -> Option<&str> {
    match e {
        BackendError::ServerDown { addr, .. } => Some(addr),
        _ => None,
    }
}

#[test]
fn a_killed_server_of_three_takes_only_its_own_objects() {
    let mut servers: Vec<ServerProc> = (0..3).map(|_| ServerProc::start(&[])).collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let b = TcpBackend::connect(TcpConfig::new(addrs.clone())).unwrap();
    let items: Vec<(u64, Vec<u8>)> = (0..300).map(|i| (i, object(i))).collect();
    let refs: Vec<(u64, &[u8])> = items.iter().map(|(i, d)| (*i, d.as_slice())).collect();
    b.put_many(&refs).unwrap();
    let dead = 1;
    let killed_at = Instant::now();
    servers[dead].kill9();
    // The idle backend learns it from the heartbeat.
    let detected = wait_until("kill detection", Duration::from_secs(20), || {
        b.is_down(dead)
    });
    println!("killed server detected after {detected:?} (idle client)");
    let _ = killed_at;
    let health = b.server_health();
    assert!(health[dead].down.is_some() && health[0].down.is_none() && health[2].down.is_none());
    let (b, _) = watchdog("reads after the kill", Duration::from_secs(30), move || {
        for (id, data) in &items {
            let owner = b.server_of_object(*id);
            let t = Instant::now();
            match b.get(*id) {
                Ok(d) => {
                    assert_ne!(owner, dead);
                    assert_eq!(&d, data);
                }
                Err(e) => {
                    assert_eq!(owner, dead, "{e}");
                    assert_eq!(down_addr(&e), Some(addrs[dead].as_str()), "{e}");
                    assert!(t.elapsed() < Duration::from_secs(5), "not fast: {e}");
                }
            }
        }
        // New objects on live servers work; on the dead one they fail, naming it.
        for id in 1000..1100u64 {
            let r = b.put(id, b"new");
            if b.server_of_object(id) == dead {
                assert_eq!(down_addr(&r.unwrap_err()), Some(addrs[dead].as_str()));
            } else {
                r.unwrap();
                assert_eq!(b.get(id).unwrap(), b"new");
            }
        }
        // A batch touching the dead server fails as a whole, naming it; frees never fail.
        let ids: Vec<u64> = (0..300).collect();
        assert!(down_addr(&b.get_many(&ids).unwrap_err()).is_some());
        b.free(&ids).unwrap();
        assert!(b.stats().unwrap().objects > 0);
        b
    });
    let ((), took) = watchdog("drop", Duration::from_secs(30), move || drop(b));
    println!("dropping the backend took {took:?}");
}

#[test]
fn a_frozen_server_is_detected_by_the_heartbeat() {
    let servers: Vec<ServerProc> = (0..2).map(|_| ServerProc::start(&[])).collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let b = TcpBackend::connect(TcpConfig::new(addrs.clone())).unwrap();
    let id = (0..).find(|&i| b.server_of_object(i) == 0).unwrap();
    let other = (0..).find(|&i| b.server_of_object(i) == 1).unwrap();
    b.put(id, b"frozen").unwrap();
    b.put(other, b"alive").unwrap();
    servers[0].freeze();
    let (b, took) = watchdog(
        "a read from a frozen server",
        Duration::from_secs(30),
        move || {
            let e = b.get(id).unwrap_err();
            assert_eq!(down_addr(&e), Some(addrs[0].as_str()), "{e}");
            b
        },
    );
    println!("a read from the frozen server failed after {took:?}");
    assert!(b.is_down(0) && !b.is_down(1));
    assert_eq!(b.get(other).unwrap(), b"alive");
    let ((), took) = watchdog("drop", Duration::from_secs(30), move || drop(b));
    println!("dropping the backend took {took:?}");
    servers[0].thaw();
}

#[test]
fn without_failover_a_frozen_server_only_delays_requests() {
    let server = ServerProc::start(&[]);
    let b = TcpBackend::connect(TcpConfig::new([server.addr.clone()]).without_failover()).unwrap();
    b.put(7, b"stalled").unwrap();
    server.freeze();
    // Frozen for longer than the default heartbeat needs to declare a server down.
    let stall = Duration::from_millis(3500);
    let (got, took) = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(stall);
            server.thaw();
        });
        let t0 = Instant::now();
        (b.get(7), t0.elapsed())
    });
    assert_eq!(got.unwrap(), b"stalled");
    assert!(
        took >= stall / 2,
        "the read did not wait for the server: {took:?}"
    );
    assert!(!b.is_down(0));
}

#[test]
fn a_runtime_survives_a_killed_server_and_drops_quickly() {
    let mut servers: Vec<ServerProc> = (0..3).map(|_| ServerProc::start(&[])).collect();
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let rt = Runtime::new(RuntimeConfig::new(8 << 20).backend(BackendConfig::Servers {
        addrs,
        token: String::new(),
    }))
    .unwrap();
    // 32 MiB of 4 KiB objects through an 8 MiB heap: most are far.
    let mut boxes = Vec::new();
    for i in 0..8192u64 {
        boxes.push(FarBox::new(&rt, [i; 512]).unwrap());
    }
    servers[2].kill9();
    let (rt, took) = watchdog("work after the kill", Duration::from_secs(120), move || {
        let (mut ok, mut lost) = (0u64, 0u64);
        for (i, b) in boxes.iter().enumerate() {
            let s = rt.scope();
            match b.read(&s) {
                Ok(v) => {
                    assert_eq!(v[0], i as u64);
                    ok += 1;
                }
                Err(e) => {
                    assert!(e.to_string().contains("down"), "{e}");
                    lost += 1;
                }
            }
        }
        println!("after the kill: {ok} objects readable, {lost} lost with the server");
        assert!(ok > 0);
        // New allocations keep working (the heap does not fill with unwritable objects).
        let more: Vec<_> = (0..4096u64)
            .map(|i| FarBox::new(&rt, [i; 512]).unwrap())
            .collect();
        drop(more);
        drop(boxes);
        rt
    });
    println!("reading and allocating after the kill took {took:?}");
    let ((), took) = watchdog("runtime drop", Duration::from_secs(60), move || drop(rt));
    println!("dropping the runtime took {took:?}");
}
