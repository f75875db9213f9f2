//! References and load for `farmem-bench transport`: Redis measured on the same machine in the
//! same run (`redis-benchmark` with the same value size, pipeline depth and connections), and
//! thousands of idle authenticated connections held open while the client is measured.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use farmem_proto::{Request, Response, VERSION, decode_frame, encode_request};

use crate::common;

/// A `redis-server` this run started; stopped when dropped.
struct RedisServer {
    child: Child,
    port: u16,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl RedisServer {
    fn start(cpu: Option<usize>) -> anyhow::Result<Self> {
        let port = free_port()?;
        // Spawned from a thread pinned to `cpu`: the process inherits the pinning.
        let child = common::on_cpu(cpu, move || {
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .context("starting redis-server (apt-get install redis-server redis-tools)")?;
        let me = Self { child, port };
        let t0 = Instant::now();
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                s.write_all(b"PING\r\n")?;
                let mut b = [0u8; 7];
                if s.read_exact(&mut b).is_ok() && &b == b"+PONG\r\n" {
                    return Ok(me);
                }
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("redis-server did not answer within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `redis-benchmark` (pinned to `cpu`) and returns the requests per second it reports.
    fn bench(&self, cpu: Option<usize>, args: &[String]) -> anyhow::Result<f64> {
        let mut all = vec!["-p".to_string(), self.port.to_string(), "--csv".into()];
        all.extend_from_slice(args);
        let out = common::on_cpu(cpu, move || {
            Command::new("redis-benchmark").args(&all).output()
        })
        .context("running redis-benchmark")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter(|l| !l.starts_with("\"test\""))
            .find_map(|l| l.split(',').nth(1)?.trim_matches('"').parse::<f64>().ok())
            .with_context(|| format!("no rate in redis-benchmark's output: {text}"))
    }
}

/// Redis GETs of `size`-byte values over `keys` keys, `depth` pipelined per connection, on
/// `conns` connections, for about `seconds`: requests per second.
pub fn redis_gets(
    size: usize,
    depth: usize,
    conns: usize,
    keys: u64,
    seconds: f64,
    server_cpu: Option<usize>,
    client_cpu: Option<usize>,
) -> anyhow::Result<f64> {
    let redis = RedisServer::start(server_cpu)?;
    let common_args = |n: u64, t: &str, p: usize| -> Vec<String> {
        [
            "-t",
            t,
            "-d",
            &size.to_string(),
            "-r",
            &keys.to_string(),
            "-n",
            &n.to_string(),
            "-P",
            &p.to_string(),
            "-c",
            &conns.to_string(),
        ]
        .iter()
        .map(|s| (*s).to_string())
        .collect()
    };
    redis.bench(client_cpu, &common_args(keys * 4, "set", 64))?;
    // Calibrate, then run for about `seconds`.
    let probe = redis.bench(client_cpu, &common_args(50_000, "get", depth))?;
    let n = ((probe * seconds) as u64).max(50_000);
    redis.bench(client_cpu, &common_args(n, "get", depth))
}

/// `n` connections that said hello (each with its own session) and then stay silent.
pub struct IdleConnections {
    conns: Vec<TcpStream>,
}

impl IdleConnections {
    /// Opens them against `addr` (raises this process's open-file limit first).
    pub fn open(addr: &str, n: usize, token: Option<&[u8]>) -> anyhow::Result<Self> {
        raise_fd_limit();
        let mut hello = Vec::new();
        let req = Request::Hello {
            version: VERSION,
            session: 0,
            token: token.unwrap_or(&[]),
            resume: 0,
        };
        encode_request(&mut hello, 0, &req);
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = TcpStream::connect(addr)
                .with_context(|| format!("idle connection {i} of {n} to {addr}"))?;
            s.write_all(&hello)?;
            conns.push(s);
        }
        let mut buf = Vec::new();
        for s in &mut conns {
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            buf.clear();
            let mut chunk = [0u8; 256];
            loop {
                if let Some((f, _)) = decode_frame(&buf, 1 << 20)? {
                    match Response::decode(f.header.op, f.header.flags, f.body)? {
                        Response::Hello(_) => break,
                        other => bail!("an idle connection's hello was answered {other:?}"),
                    }
                }
                let k = s.read(&mut chunk)?;
                anyhow::ensure!(k > 0, "the server closed an idle connection");
                buf.extend_from_slice(&chunk[..k]);
            }
        }
        Ok(Self { conns })
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.conns.len()
    }
}

/// Raises the soft open-file limit to the hard limit (best effort).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, exclusively borrowed out pointer for getrlimit, and setrlimit
    // only reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
