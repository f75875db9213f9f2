//! Where a server process's resident memory is, from `/proc/PID/smaps`: the allocator's heap,
//! anonymous mappings that existed at an earlier snapshot (thread stacks, the runtime's own),
//! anonymous mappings made since (the store's segments, large allocations) and file-backed
//! pages (code).

use std::collections::HashSet;

/// Resident bytes of one process by kind of mapping.
#[derive(Clone, Debug, Default)]
pub struct Smaps {
    /// `[heap]`: the C allocator's main arena.
    pub heap: u64,
    /// Anonymous mappings (stacks included) that start where one started at the `since`
    /// snapshot.
    pub anon_old: u64,
    /// Other anonymous mappings.
    pub anon_new: u64,
    /// File-backed mappings.
    pub file: u64,
    /// Start addresses of the anonymous mappings.
    starts: HashSet<u64>,
}

impl Smaps {
    /// Reads `/proc/PID/smaps`, counting as `anon_old` the anonymous mappings whose start is in
    /// `since` (none without it); `None` when the process is gone.
    pub fn read(pid: i32, since: Option<&Smaps>) -> Option<Smaps> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
        let mut out = Smaps::default();
        // (start, kind) of the mapping whose fields follow: 0 heap, 1 anonymous, 2 file.
        let mut cur: Option<(u64, u8)> = None;
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let Some(first) = words.next() else { continue };
            if let Some((lo, _)) = first.split_once('-')
                && let Ok(start) = u64::from_str_radix(lo, 16)
            {
                let path = words.nth(4);
                let kind = match path {
                    Some("[heap]") => 0,
                    None | Some("[stack]") | Some("[anon]") => 1,
                    Some(p) if p.starts_with('[') => 3,
                    Some(_) => 2,
                };
                if kind == 1 {
                    out.starts.insert(start);
                }
                cur = Some((start, kind));
            } else if first == "Rss:"
                && let Some((start, kind)) = cur
            {
                let kib: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                let b = kib << 10;
                match kind {
                    0 => out.heap += b,
                    1 if since.is_some_and(|s| s.starts.contains(&start)) => out.anon_old += b,
                    1 => out.anon_new += b,
                    2 => out.file += b,
                    _ => {}
                }
            }
        }
        Some(out)
    }

    /// A line of this snapshot's growth over `base`, in MiB.
    pub fn growth(&self, base: &Smaps) -> String {
        let mib = |a: u64, b: u64| (a as f64 - b as f64) / f64::from(1 << 20);
        format!(
            "heap {:+.2}, old anonymous {:+.2}, new anonymous {:+.2}, file {:+.2} MiB",
            mib(self.heap, base.heap),
            mib(self.anon_old, base.anon_old + base.anon_new),
            mib(self.anon_new, 0),
            mib(self.file, base.file)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_mapping_counts_as_new() {
        let pid = std::process::id() as i32;
        let before = Smaps::read(pid, None).expect("this process runs");
        assert!(before.file > 0, "code pages are file-backed");
        // A mapping of its own (a `Vec` could come from an arena that other tests' threads
        // mapped before the first snapshot).
        let len = 8usize << 20;
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: `p` is `len` writable bytes that only this test uses.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 1, len) };
        let after = Smaps::read(pid, Some(&before)).expect("this process runs");
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(p, len) };
        assert!(after.anon_new >= len as u64, "{after:?}");
        assert!(after.growth(&before).contains("new anonymous"));
    }
}
