//! A TCP proxy in front of a server that can cut every forwarded connection (as a network
//! failure would) or refuse new ones (the server looks gone).

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Forwards connections to a target; [`Proxy::cut`] resets every forwarded connection (as a
/// network failure would), [`Proxy::refuse`] stops forwarding new ones.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: String,
    live: Arc<Mutex<Vec<TcpStream>>>,
    refusing: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
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
