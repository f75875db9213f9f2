//! A network namespace joined to this one by a veth pair, for partition tests (root only).
//!
//! [`NetNs::create`] makes a namespace `fm<pid><letter>` and a veth pair: `…h` here with
//! `198.18.a.b/30` (from the 198.18.0.0/15 block reserved for network benchmarks) and
//! `…n` in the namespace with the next address. A server started there
//! (`ServerProc::start_in_netns`) is reached over the pair only. A partition is
//! [`NetNs::link_down`] (the host end goes down) or [`NetNs::drop_packets`] (a token bucket with
//! a one-byte bucket on both ends: every packet is dropped, the links stay up); [`NetNs::heal`]
//! undoes either.
//!
//! Packets to the namespace's address never leave the machine: a blackhole route for the pair's
//! /30 (metric 4000) catches them whenever the connected route is gone (link down), instead of
//! the default route. Dropping the [`NetNs`] (also while a test unwinds from a panic) deletes
//! the namespace, the pair and the route.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A namespace with a veth pair to this one; removed when dropped.
#[derive(Debug)]
pub struct NetNs {
    /// Its name (under `/run/netns`).
    pub name: String,
    host_if: String,
    ns_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
    /// What `Drop` must undo.
    made_ns: bool,
    made_link: bool,
    made_route: bool,
}

/// Runs `ip`/`tc` with `args`; the error names the command and its stderr.
fn run(prog: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| format!("{prog} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{prog} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why partition tests cannot run here, if they cannot (not root, no `ip` or `tc`).
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("network namespaces need root".into());
    }
    for tool in ["ip", "tc"] {
        if !["/sbin", "/usr/sbin", "/bin", "/usr/bin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(tool).exists())
        {
            return Some(format!("`{tool}` not found"));
        }
    }
    None
}

impl NetNs {
    /// Creates the namespace, the veth pair and the safety route (see the module docs).
    ///
    /// # Errors
    /// The failing command; whatever was made is removed again.
    pub fn create() -> Result<Self, String> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        // One /30 per namespace, from the process id and a counter: 32768 of them in the block.
        let slot = (std::process::id().wrapping_mul(8).wrapping_add(seq)) % 32_768;
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + slot * 4;
        // Unique among live processes (interface names stay under 16 bytes).
        let tag = format!(
            "fm{}{}",
            std::process::id(),
            char::from(b'a' + (seq % 26) as u8)
        );
        let mut me = Self {
            name: tag.clone(),
            host_if: format!("{tag}h"),
            ns_if: format!("{tag}n"),
            host_ip: Ipv4Addr::from(base + 1),
            ns_ip: Ipv4Addr::from(base + 2),
            made_ns: false,
            made_link: false,
            made_route: false,
        };
        // Leftovers of a killed earlier process with the same pid go first.
        let _ = run("ip", &["netns", "del", &me.name]);
        let _ = run("ip", &["link", "del", &me.host_if]);
        run("ip", &["netns", "add", &me.name])?;
        me.made_ns = true;
        run(
            "ip",
            &[
                "link",
                "add",
                &me.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &me.ns_if,
                "netns",
                &me.name,
            ],
        )?;
        me.made_link = true;
        let net = Ipv4Addr::from(base);
        let blackhole = format!("{net}/30");
        run(
            "ip",
            &["route", "add", "blackhole", &blackhole, "metric", "4000"],
        )?;
        me.made_route = true;
        let (host_cidr, ns_cidr) = (format!("{}/30", me.host_ip), format!("{}/30", me.ns_ip));
        run("ip", &["addr", "add", &host_cidr, "dev", &me.host_if])?;
        run("ip", &["link", "set", &me.host_if, "up"])?;
        let n = me.name.clone();
        run("ip", &["-n", &n, "addr", "add", &ns_cidr, "dev", &me.ns_if])?;
        run("ip", &["-n", &n, "link", "set", &me.ns_if, "up"])?;
        run("ip", &["-n", &n, "link", "set", "lo", "up"])?;
        Ok(me)
    }

    /// The address of the namespace's end (listen there inside the namespace).
    pub fn ns_ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// Partition: the host end of the pair goes down (its routes go; the blackhole route takes
    /// the namespace's packets).
    ///
    /// # Errors
    /// The failing command.
    pub fn link_down(&self) -> Result<(), String> {
        run("ip", &["link", "set", &self.host_if, "down"])
    }

    /// Partition: both ends drop every packet (a token bucket filter whose bucket holds one
    /// byte); the links and routes stay.
    ///
    /// # Errors
    /// The failing command.
    pub fn drop_packets(&self) -> Result<(), String> {
        let tbf = ["tbf", "rate", "8bit", "burst", "1", "limit", "1"];
        let mut host = vec!["qdisc", "replace", "dev", &self.host_if, "root"];
        host.extend(tbf);
        run("tc", &host)?;
        let mut ns = vec![
            "-n",
            &self.name,
            "qdisc",
            "replace",
            "dev",
            &self.ns_if,
            "root",
        ];
        ns.extend(tbf);
        run("tc", &ns)
    }

    /// Ends a partition of either kind: both qdiscs removed, the host end up (with its address
    /// and route back).
    ///
    /// # Errors
    /// The failing command.
    pub fn heal(&self) -> Result<(), String> {
        let _ = run("tc", &["qdisc", "del", "dev", &self.host_if, "root"]);
        let _ = run(
            "tc",
            &["-n", &self.name, "qdisc", "del", "dev", &self.ns_if, "root"],
        );
        run("ip", &["link", "set", &self.host_if, "up"])
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let mut left = Vec::new();
        if self.made_link && run("ip", &["link", "del", &self.host_if]).is_err() {
            left.push(format!("link {}", self.host_if));
        }
        if self.made_ns
            && let Err(e) = run("ip", &["netns", "del", &self.name])
        {
            left.push(e);
        }
        if self.made_route {
            let net = Ipv4Addr::from(u32::from(self.host_ip) - 1);
            let blackhole = format!("{net}/30");
            if let Err(e) = run(
                "ip",
                &["route", "del", "blackhole", &blackhole, "metric", "4000"],
            ) {
                left.push(e);
            }
        }
        if !left.is_empty() {
            eprintln!("netns {}: could not remove {left:?}", self.name);
        }
    }
}
