//! `farmem-server` processes for tests: start on a free port (or a given one, or inside a network
//! namespace), wait for the `listening on` line, kill -9, freeze (SIGSTOP) and thaw (SIGCONT),
//! restart at the same address, terminate (SIGTERM); killed when dropped.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::wait_until;

const BIN: &str = env!("CARGO_BIN_EXE_farmem-server");

/// How long a server may take to print its `listening on` line.
const START_LIMIT: Duration = Duration::from_secs(20);

/// A `farmem-server` process; killed (SIGKILL) and reaped when dropped.
///
/// Defaults added unless `extra` names them: `--listen 127.0.0.1:0` and `--capacity 256MiB`;
/// agent operations use one thread (`FARMEM_AGENT_THREADS=1`).
pub struct ServerProc {
    child: Option<Child>,
    /// `host:port` it listens on (the same after [`ServerProc::restart`]).
    pub addr: String,
    args: Vec<String>,
    netns: Option<String>,
}

impl std::fmt::Debug for ServerProc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProc")
            .field("addr", &self.addr)
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("netns", &self.netns)
            .finish()
    }
}

impl ServerProc {
    /// Starts the binary with `extra` options (see the type's defaults) and waits until it
    /// listens.
    ///
    /// # Panics
    /// When it does not start or print its address within 20 s.
    pub fn start(extra: &[&str]) -> Self {
        Self::launch(extra, None)
    }

    /// As [`ServerProc::start`], inside the network namespace `netns` (a name under
    /// `/run/netns`, as `ip netns add` makes); `extra` should name a `--listen` address of that
    /// namespace.
    ///
    /// # Panics
    /// As [`ServerProc::start`], and when the namespace cannot be entered.
    pub fn start_in_netns(netns: &str, extra: &[&str]) -> Self {
        Self::launch(extra, Some(netns.to_owned()))
    }

    fn launch(extra: &[&str], netns: Option<String>) -> Self {
        let mut args: Vec<String> = Vec::new();
        for (opt, default) in [("--listen", "127.0.0.1:0"), ("--capacity", "256MiB")] {
            if !extra.contains(&opt) {
                args.extend([opt.to_owned(), default.to_owned()]);
            }
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut me = Self {
            child: None,
            addr: String::new(),
            args,
            netns,
        };
        let (child, addr) = me.spawn(&me.args).unwrap_or_else(|e| panic!("{e}"));
        me.child = Some(child);
        me.addr = addr;
        me
    }

    /// Spawns the process with `args` and reads its address.
    fn spawn(&self, args: &[String]) -> Result<(Child, String), String> {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("FARMEM_AGENT_THREADS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let ns = match &self.netns {
            Some(name) => Some(
                File::open(format!("/run/netns/{name}"))
                    .map_err(|e| format!("network namespace {name}: {e}"))?,
            ),
            None => None,
        };
        let ns_fd = ns.as_ref().map(AsRawFd::as_raw_fd);
        // SAFETY: the closure runs in the child between fork and exec and only makes two system
        // calls (async-signal-safe); `ns_fd` is an open descriptor the parent keeps until after
        // the spawn.
        unsafe {
            cmd.pre_exec(move || {
                // The server dies with the test process, whatever ends it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = ns_fd
                    && libc::setns(fd, libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn farmem-server: {e}"))?;
        drop(ns);
        let out = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(START_LIMIT).unwrap_or_default();
        match line.trim().strip_prefix("listening on ") {
            Some(addr) => Ok((child, addr.to_owned())),
            None => {
                let _ = child.kill();
                let status = child.wait();
                Err(format!(
                    "farmem-server {args:?} printed {line:?} instead of its address ({status:?})"
                ))
            }
        }
    }

    /// The process id (`None` once killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process runs (started and not killed or exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn signal(&self, sig: i32) {
        let pid = self.pid().expect("the server was killed") as i32;
        // SAFETY: kill(2) on our own child, not yet reaped, so the pid names it.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// `kill -9` and reap. Does nothing when already killed.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the process (SIGSTOP) and waits until every one of its threads has stopped.
    ///
    /// # Panics
    /// When it was killed, or its threads do not all stop within 10 s.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
        // `kill` returns once the signal is queued; a thread of the server that is already
        // running may still answer a request until the group stop reaches it.
        let tasks = format!("/proc/{}/task", self.pid().unwrap_or(0));
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
    ///
    /// # Panics
    /// When it was killed.
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Starts a fresh process (empty, new sessions) at the same address with the same options,
    /// killing the old one first if it still runs. Retries for a few seconds while the port is
    /// not free yet.
    ///
    /// # Panics
    /// When no process could listen at the address within 10 s.
    pub fn restart(&mut self) {
        self.kill9();
        let mut args = self.args.clone();
        if let Some(i) = args.iter().position(|a| a == "--listen") {
            args[i + 1] = self.addr.clone();
        }
        let t0 = Instant::now();
        loop {
            match self.spawn(&args) {
                Ok((child, addr)) => {
                    assert_eq!(addr, self.addr, "restarted at another address");
                    self.child = Some(child);
                    return;
                }
                Err(e) if t0.elapsed() < Duration::from_secs(10) => {
                    eprintln!("restart of {} failed, retrying: {e}", self.addr);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Asks the server to stop (SIGTERM) and returns its exit status.
    ///
    /// # Panics
    /// When it was killed, or does not exit within 10 s.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("the server was killed");
        let t0 = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for the server") {
                return status;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}
