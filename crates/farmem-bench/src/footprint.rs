//! Where a swapping child's local memory goes, read at one moment: the process's resident set
//! (`/proc/self/status`), what its kernel-swap cgroup charges, and the pager's use of its
//! budget. Set against the application's data resident at the same moment (`mincore`), this
//! shows what each mode spends on data and what on everything else (binary, heap, stacks, page
//! tables, the pager's buffers), so that the kernel-swap slack ([`crate::modes::KSWAP_SLACK`])
//! can be checked against the pager's overhead.

use serde_json::{Map, Value, json};

/// Fields of `/proc/self/status` reported, in kB there.
const STATUS: [&str; 5] = ["VmRSS", "RssAnon", "RssFile", "RssShmem", "VmPTE"];
/// Fields of the cgroup's `memory.stat` reported (v1 and v2 names).
const CGROUP: [&str; 10] = [
    "rss",
    "cache",
    "mapped_file",
    "swap",
    "anon",
    "file",
    "kernel",
    "pagetables",
    "slab",
    "sock",
];

/// The process's figures now, with `data_bytes` of the application's data resident (its
/// `mincore` count at the same moment): a JSON object of byte counts.
pub fn snapshot(data_bytes: u64) -> Value {
    let mut m = Map::new();
    m.insert("data_resident_bytes".into(), data_bytes.into());
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if STATUS.contains(&k) {
            let kb: Option<u64> = v.split_whitespace().next().and_then(|n| n.parse().ok());
            if let Some(kb) = kb {
                m.insert(format!("{}_bytes", k.to_lowercase()), (kb * 1024).into());
            }
        }
    }
    if let Some((usage, stat)) = crate::kswap::own_memory() {
        m.insert("cgroup_usage_bytes".into(), usage.into());
        for (k, v) in stat
            .into_iter()
            .filter(|(k, _)| CGROUP.contains(&k.as_str()))
        {
            m.insert(format!("cgroup_{k}_bytes"), v.into());
        }
    }
    if let Some(u) = farmem::paging::PagingAlloc::usage() {
        m.insert(
            "pager".into(),
            json!({
                "budget_pages": u.budget_pages,
                "mapped_pages": u.mapped_pages,
                "dirty_pages": u.dirty_pages,
                "sampled_pages": u.sampled_pages,
                "staged_pages": u.staged_pages,
                "reserved_pages": u.reserved_pages,
                "free_pages": u.free_pages,
                "low_watermark": u.low_watermark,
                "high_watermark": u.high_watermark,
                "twin_buffers": u.twin_buffers,
                "spare_sample_buffers": u.spare_sample_buffers,
            }),
        );
    }
    Value::Object(m)
}

/// One line summing up a [`snapshot`], in MiB (empty when it holds nothing known).
pub fn describe(s: &Value) -> String {
    let mib = |k: &str| {
        s.get(k)
            .and_then(Value::as_u64)
            .map(|b| b as f64 / 1048576.0)
    };
    let mut parts = Vec::new();
    let data = mib("data_resident_bytes");
    if let Some(d) = data {
        parts.push(format!("data {d:.1} MiB"));
    }
    if let (Some(rss), Some(anon)) = (mib("vmrss_bytes"), mib("rssanon_bytes")) {
        parts.push(format!("RSS {rss:.1} MiB (anon {anon:.1})"));
        if let Some(d) = data {
            parts.push(format!("anon not data {:.1}", anon - d));
        }
    }
    if let Some(cg) = mib("cgroup_usage_bytes") {
        let anon = mib("cgroup_rss_bytes").or_else(|| mib("cgroup_anon_bytes"));
        let cache = mib("cgroup_cache_bytes").or_else(|| mib("cgroup_file_bytes"));
        parts.push(format!(
            "cgroup {cg:.1} MiB (anon {:.1}, page cache {:.1}), not data {:.1}",
            anon.unwrap_or(0.0),
            cache.unwrap_or(0.0),
            cg - data.unwrap_or(0.0)
        ));
    }
    if let Some(p) = s.get("pager") {
        let n = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
        parts.push(format!(
            "pager budget {} pages: mapped {} ({} dirty), sampled {}, staged {}, in flight {}, \
             free {} (watermarks {}-{}); beyond it {} twins, {} spare sample buffers",
            n("budget_pages"),
            n("mapped_pages"),
            n("dirty_pages"),
            n("sampled_pages"),
            n("staged_pages"),
            n("reserved_pages"),
            n("free_pages"),
            n("low_watermark"),
            n("high_watermark"),
            n("twin_buffers"),
            n("spare_sample_buffers"),
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reports_the_resident_set_and_describes_it() {
        let s = snapshot(1 << 20);
        assert_eq!(s["data_resident_bytes"], 1 << 20);
        assert!(s["vmrss_bytes"].as_u64().is_some_and(|b| b > 0), "{s}");
        let line = describe(&s);
        assert!(line.contains("data 1.0 MiB"), "{line}");
        assert!(line.contains("RSS "), "{line}");
        assert_eq!(describe(&json!({})), "");
    }
}
