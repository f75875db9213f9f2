//! What the operator's side needs in tests: a `farmem-server` process with its metrics
//! endpoint ([`OpsServer`]), plain HTTP requests to it, Prometheus text parsed, and files with
//! given contents.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_farmem-server");

/// A `farmem-server` with `--metrics`; killed when dropped.
pub struct OpsServer {
    child: Child,
    /// `host:port` clients connect to.
    pub addr: String,
    /// `host:port` of the metrics and health endpoint.
    pub metrics: String,
}

impl OpsServer {
    /// Starts the binary with `--listen 127.0.0.1:0 --capacity 256MiB --metrics 127.0.0.1:0`
    /// (unless `extra` names them) and `extra`, and reads both addresses.
    ///
    /// # Panics
    /// When it does not print them within 20 s.
    pub fn start(extra: &[&str]) -> Self {
        let mut args: Vec<&str> = Vec::new();
        for (opt, default) in [
            ("--listen", "127.0.0.1:0"),
            ("--capacity", "256MiB"),
            ("--metrics", "127.0.0.1:0"),
        ] {
            if !extra.contains(&opt) {
                args.extend([opt, default]);
            }
        }
        args.extend(extra);
        let mut child = Command::new(BIN)
            .args(&args)
            .env("FARMEM_AGENT_THREADS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn farmem-server");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let second = lines.next().and_then(Result::ok).unwrap_or_default();
            let _ = tx.send((first, second));
            // Keep reading so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let (first, second) = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let addr = first.strip_prefix("listening on ").map(str::to_owned);
        let metrics = second
            .strip_prefix("metrics on http://")
            .and_then(|m| m.strip_suffix("/metrics"))
            .map(str::to_owned);
        match (addr, metrics) {
            (Some(addr), Some(metrics)) => Self {
                child,
                addr,
                metrics,
            },
            _ => {
                let _ = child.kill();
                panic!("farmem-server {args:?} printed {first:?}, {second:?}");
            }
        }
    }

    /// `GET path` on the metrics endpoint: the status code and the body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http(&self.metrics, "GET", path)
    }

    /// The metrics, `name{labels}` to value.
    pub fn scrape(&self) -> HashMap<String, f64> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        parse_metrics(&body)
    }
}

impl Drop for OpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request: the status code and the body.
pub fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (status, body.to_owned())
}

/// Prometheus text to `name{labels}` → value (comments skipped).
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// A file with `contents` in a fresh directory of its own.
pub fn file_with(name: &str, contents: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "farmem-ops-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}
