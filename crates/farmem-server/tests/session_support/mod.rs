//! Shared by the `session_*` tests: server processes, a TCP proxy that can cut connections, and
//! a watchdog.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_farmem-server");

/// A `farmem-server` process, killed when dropped.
pub struct ServerProc {
    pub child: Child,
    pub addr: String,
}

impl ServerProc {
    /// Starts the binary on a free port with `extra` options.
    pub fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--capacity", "256MiB"])
            .args(extra)
            .env("FARMEM_AGENT_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn farmem-server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the startup line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected startup line {line:?}"))
            .to_string();
        Self { child, addr }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill {sig} failed");
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// Freezes the process (SIGSTOP).
    pub fn freeze(&self) {
        self.signal("-STOP");
        // `kill` returns once the signal is queued; a thread of the server that is already
        // running may still answer a request until the group stop reaches it. Wait until every
        // thread is stopped.
        let tasks = format!("/proc/{}/task", self.child.id());
        wait_until("the server to stop", Duration::from_secs(10), || {
            std::fs::read_dir(&tasks).is_ok_and(|dir| {
                dir.flatten().all(|t| {
                    std::fs::read_to_string(t.path().join("stat")).is_ok_and(|st| {
                        // The state follows the parenthesised command name.
                        st.rsplit_once(')')
                            .and_then(|(_, rest)| rest.trim_start().chars().next())
                            .is_some_and(|c| c == 'T' || c == 't')
                    })
                })
            })
        });
    }

    /// Thaws it (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Forwards connections to a target; [`Proxy::cut`] resets every forwarded connection (as a
/// network failure would), [`Proxy::refuse`] stops forwarding new ones.
pub struct Proxy {
    pub addr: String,
    live: Arc<Mutex<Vec<TcpStream>>>,
    refusing: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: &str) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let live: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let refusing = Arc::new(AtomicBool::new(false));
        let (lv, rf, target) = (live.clone(), refusing.clone(), target.to_string());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                if rf.load(Ordering::SeqCst) {
                    drop(c);
                    continue;
                }
                let Ok(s) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = c.set_nodelay(true);
                let _ = s.set_nodelay(true);
                {
                    let mut v = lv.lock().unwrap();
                    v.push(c.try_clone().unwrap());
                    v.push(s.try_clone().unwrap());
                }
                pipe(c.try_clone().unwrap(), s.try_clone().unwrap());
                pipe(s, c);
            }
        });
        Self {
            addr,
            live,
            refusing,
        }
    }

    /// Resets every forwarded connection (both sides).
    pub fn cut(&self) {
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Stops forwarding: new connections are closed at once (the server looks gone).
    pub fn refuse(&self) {
        self.refusing.store(true, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// Runs `f` on a thread and fails the test if it does not finish within `limit` (a hang guard,
/// not a timing assertion). Returns its result and how long it took.
pub fn watchdog<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> (T, Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => (v, t0.elapsed()),
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// Polls `cond` until it holds, failing the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "{what}: not reached within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}
