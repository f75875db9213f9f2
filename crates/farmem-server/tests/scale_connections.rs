//! Many connections on a few threads: 2,000 idle authenticated connections (far beyond the old
//! limit of 256 threads) are all held, cost the server little memory, and a well-behaved client
//! is still served correctly among them.

mod support;

use std::time::Duration;

use farmem::backend::{Backend, TcpBackend, TcpConfig};
use farmem_proto::Op;
use support::ServerProc;
use support::raw::{Raw, frame, hello_body, rss};

const IDLE: usize = 2000;

/// Raises this process's soft open-file limit to its hard limit (the idle connections are
/// descriptors here too).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, exclusively borrowed out pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit that setrlimit only reads.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert!(
        lim.rlim_max as usize > IDLE + 200,
        "the hard open-file limit ({}) is too low for this test",
        lim.rlim_max
    );
}

#[test]
fn thousands_of_idle_connections_are_held_and_a_busy_client_is_still_served() {
    raise_fd_limit();
    // A generous hello deadline: connecting thousands takes seconds on a loaded machine.
    let server = ServerProc::start(&["--io-threads", "2", "--hello-timeout", "120s"]);
    let pid = server.pid().expect("pid");
    let before = rss(pid);
    // Connect and say hello on each; read the answers afterwards.
    let mut idle: Vec<Raw> = (0..IDLE)
        .map(|_| {
            let mut r = Raw::connect(&server.addr);
            r.send(&frame(Op::Hello, 0, &hello_body(0)));
            r
        })
        .collect();
    for r in &mut idle {
        let a = r.recv().expect("a hello answer");
        assert_eq!(a.0.op, Op::Hello as u16);
        assert_eq!(support::raw::error_code(&a), None, "hello refused");
    }
    let mut probe = Raw::hello(&server.addr);
    let st = probe.stats(1);
    assert_eq!(st.connections, IDLE as u64 + 1);
    assert_eq!(st.sessions, IDLE as u64 + 1);
    let per_conn = rss(pid).saturating_sub(before) / IDLE as u64;
    println!("server memory per idle connection with its session: {per_conn} bytes");
    assert!(
        per_conn < 32 << 10,
        "an idle connection with its session costs the server {per_conn} bytes"
    );
    // A client among them: correct answers, many round trips.
    let b = TcpBackend::connect(
        TcpConfig::new([server.addr.as_str()]).timeout(Duration::from_secs(10)),
    )
    .expect("connect among the idle connections");
    for i in 0..2000u64 {
        let v = i.to_le_bytes().repeat(1 + (i % 16) as usize);
        b.put(i, &v).unwrap();
        assert_eq!(b.get(i).unwrap(), v);
    }
    // The idle ones are still there and answer.
    for (i, r) in idle.iter_mut().enumerate().step_by(97) {
        r.ping(2 + i as u64);
    }
    drop(idle);
    support::wait_until(
        "the idle connections to be released",
        Duration::from_secs(10),
        || {
            probe.stats(3).connections <= 3 // probe, the client's data and heartbeat connections
        },
    );
}
