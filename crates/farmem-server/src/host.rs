//! The host reserve: the server gives memory back when the host runs short and takes it again
//! when the host recovers.
//!
//! Every interval the server samples the host's available memory (`MemAvailable`) and its own
//! resident set. The data it may hold is what it holds now above its resident set at start plus
//! what the host has available beyond the reserve:
//! `cap = (resident - resident_at_start) + available - reserve`, at most the configured
//! capacity. Counting the resident set (rather than the bytes used) keeps the cap steady when
//! freed memory stays with the process, and when the server grows (its resident set rises as
//! much as the host's available memory falls). A cap below use starts a reclaim (clients are
//! asked to move the excess away) with [`HostReserve::deadline`] to complete.

use std::io;
use std::sync::Arc;
use std::time::Duration;

/// One sample of the host's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostSample {
    /// Memory the host can still give to programs without swapping (`MemAvailable`), bytes.
    pub available: u64,
    /// This process's resident set, bytes.
    pub resident: u64,
}

/// Where the server learns about the host's memory (injectable for tests).
pub trait HostMemory: Send + Sync + std::fmt::Debug {
    /// Samples the host's memory now.
    ///
    /// # Errors
    /// When the source cannot be read.
    fn sample(&self) -> io::Result<HostSample>;
}

/// [`HostMemory`] from Linux's `/proc/meminfo` (`MemAvailable`) and `/proc/self/statm`.
#[derive(Clone, Debug, Default)]
pub struct ProcMeminfo;

impl HostMemory for ProcMeminfo {
    fn sample(&self) -> io::Result<HostSample> {
        let meminfo = std::fs::read_to_string("/proc/meminfo")?;
        let statm = std::fs::read_to_string("/proc/self/statm")?;
        parse(&meminfo, &statm, 4096)
    }
}

fn parse(meminfo: &str, statm: &str, page: u64) -> io::Result<HostSample> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| bad("no MemAvailable line in /proc/meminfo"))?;
    let pages = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| bad("no resident field in /proc/self/statm"))?;
    Ok(HostSample {
        available: kib.saturating_mul(1024),
        resident: pages.saturating_mul(page),
    })
}

/// Settings of the host reserve ([`crate::ServerConfig::host_reserve`]).
#[derive(Clone, Debug)]
pub struct HostReserve {
    /// Memory to leave to the host, bytes.
    pub reserve: u64,
    /// Where samples come from.
    pub source: Arc<dyn HostMemory>,
    /// How often to sample.
    pub interval: Duration,
    /// How long clients get to move data away after the host ran short.
    pub deadline: Duration,
}

impl HostReserve {
    /// Leaves `reserve` bytes to the host, sampling `/proc` every second, 30 s to move data.
    pub fn new(reserve: u64) -> Self {
        Self {
            reserve,
            source: Arc::new(ProcMeminfo),
            interval: Duration::from_secs(1),
            deadline: Duration::from_secs(30),
        }
    }

    /// The cap for `now`, given the resident set at start.
    pub(crate) fn cap(&self, start_resident: u64, now: HostSample, max: u64) -> u64 {
        let data = now.resident.saturating_sub(start_resident);
        (data.saturating_add(now.available))
            .saturating_sub(self.reserve)
            .min(max)
    }

    /// Changes smaller than this are not applied (sampling noise).
    pub(crate) fn hysteresis(&self) -> u64 {
        (self.reserve / 256).max(1 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files_and_computes_the_cap() {
        let meminfo = "MemTotal:  16000000 kB\nMemFree: 100 kB\nMemAvailable:    2097152 kB\n";
        let s = parse(meminfo, "5000 256 10 1 0 100 0\n", 4096).unwrap();
        assert_eq!(s.available, 2 << 30);
        assert_eq!(s.resident, 1 << 20);
        assert!(parse("MemTotal: 1 kB\n", "1 2", 4096).is_err());
        assert!(parse(meminfo, "", 4096).is_err());
        let r = HostReserve::new(1 << 30);
        // 1 GiB above the reserve, 100 MiB held since start: 1.1 GiB, capped at 512 MiB.
        let now = HostSample {
            available: 2 << 30,
            resident: 300 << 20,
        };
        assert_eq!(r.cap(200 << 20, now, u64::MAX), (1 << 30) + (100 << 20));
        assert_eq!(r.cap(200 << 20, now, 512 << 20), 512 << 20);
        // Below the reserve: only part of what is held may stay.
        let short = HostSample {
            available: (1 << 30) - (60 << 20),
            resident: 300 << 20,
        };
        assert_eq!(r.cap(200 << 20, short, u64::MAX), 40 << 20);
        assert!(ProcMeminfo.sample().is_ok_and(|s| s.available > 0));
    }
}
