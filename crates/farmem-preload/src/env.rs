//! The environment variables through which `farmem-run` configures the shim (shared by path
//! between the two crates: the shim is a cdylib, so it cannot be a Rust dependency).

/// Memory servers, comma-separated `host:port`. Without it the shim stays out of the way (every
/// call goes to the real allocator).
pub const SERVERS: &str = "FARMEM_RUN_SERVERS";
/// Local memory budget of each process, in bytes.
pub const LOCAL_MEM: &str = "FARMEM_RUN_LOCAL_MEM";
/// Copies of every page kept on distinct servers (1: no replication).
pub const REPLICAS: &str = "FARMEM_RUN_REPLICAS";
/// Smallest allocation placed in far memory, in bytes.
pub const THRESHOLD: &str = "FARMEM_RUN_THRESHOLD";
/// Virtual size of the far heap of each process, in bytes.
pub const REGION: &str = "FARMEM_RUN_REGION";
/// `1`: when far memory cannot be set up, run on local memory (with a warning) instead of exiting.
pub const FALLBACK_LOCAL: &str = "FARMEM_RUN_FALLBACK_LOCAL";
/// `0`: programs started by the program (after `exec`) run without the shim.
pub const INHERIT: &str = "FARMEM_RUN_INHERIT";
/// `1`: print the paging counters of each process to stderr when it exits.
pub const STATS: &str = "FARMEM_RUN_STATS";
/// `0`: large anonymous `mmap`s stay with the kernel (only `malloc` and friends are far).
pub const MMAP: &str = "FARMEM_RUN_MMAP";
/// Largest prefetch window in pages (default 256).
pub const READAHEAD: &str = "FARMEM_RUN_READAHEAD";
/// `0`: forked children are not served; a child keeps only the far pages that were resident at
/// the fork and dies with a message if it touches another.
pub const FORKS: &str = "FARMEM_RUN_FORKS";
/// Shared secret of the memory servers, if they require one.
pub const TOKEN: &str = "FARMEM_RUN_TOKEN";

/// Default far-allocation threshold: 64 KiB.
pub const DEFAULT_THRESHOLD: usize = 64 << 10;
/// Default virtual size of the far heap: 256 GiB (address space only).
pub const DEFAULT_REGION: usize = 256 << 30;

/// Parses a byte size such as `4GiB`, `512MiB`, `64k`, `1.5G` or `4096`: binary units (`K`,
/// `M`, `G`, `T`, optionally followed by `iB` or `B`). `None` when malformed or overflowing.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    if num.contains('.') {
        let v: f64 = num.parse().ok()?;
        let bytes = v * (1u64 << shift) as f64;
        (bytes.is_finite() && bytes >= 0.0 && bytes < usize::MAX as f64).then_some(bytes as usize)
    } else {
        num.parse::<usize>().ok()?.checked_mul(1usize << shift)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("4GiB"), Some(4 << 30));
        assert_eq!(parse_size("512 MiB"), Some(512 << 20));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("99999999999T"), None);
    }
}
