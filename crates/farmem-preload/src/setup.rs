//! Start-up (in the library constructor) and the exit report: reads the configuration from the
//! environment, connects to the memory servers and creates the far heap.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use farmem::Backend;
use farmem::backend::{BackendError, PoolBackend, PoolConfig, PoolError, Redundancy};
use farmem::backend::{TcpBackend, TcpConfig};
use farmem::paging::{InternalGuard, PagedRegion, PagingConfig, PagingError};

use crate::env;
use crate::heap::Heap;
use crate::{HEAP, THRESHOLD, warn};

/// Why the far heap could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// An environment variable has a value the shim cannot use.
    #[error("bad value {value:?} of {name}")]
    Config {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// The memory servers could not be reached.
    #[error("connecting to the memory servers failed")]
    Connect(#[source] BackendError),
    /// The replicated pool could not be formed.
    #[error("forming the replicated memory pool failed")]
    Pool(#[source] PoolError),
    /// The paged region could not be created.
    #[error("far memory unavailable")]
    Paging(#[source] PagingError),
}

/// The backend kept for the exit report.
static BACKEND: std::sync::OnceLock<Arc<dyn Backend>> = std::sync::OnceLock::new();

fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn size_var(name: &'static str, default: usize) -> Result<usize, SetupError> {
    match var(name) {
        None => Ok(default),
        Some(v) => env::parse_size(&v).ok_or(SetupError::Config { name, value: v }),
    }
}

/// The settings read from the environment.
struct Settings {
    servers: Vec<String>,
    local_mem: usize,
    replicas: usize,
    threshold: usize,
    region: usize,
    token: Option<String>,
    readahead: Option<usize>,
}

fn settings(servers: String) -> Result<Settings, SetupError> {
    let replicas = match var(env::REPLICAS) {
        None => 1,
        Some(v) => v.parse().map_err(|_| SetupError::Config {
            name: env::REPLICAS,
            value: v,
        })?,
    };
    Ok(Settings {
        servers: servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        local_mem: size_var(env::LOCAL_MEM, 4 << 30)?,
        replicas,
        threshold: size_var(env::THRESHOLD, env::DEFAULT_THRESHOLD)?.max(1),
        region: size_var(env::REGION, env::DEFAULT_REGION)?,
        token: var(env::TOKEN),
        readahead: match var(env::READAHEAD) {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| SetupError::Config {
                name: env::READAHEAD,
                value: v,
            })?),
        },
    })
}

fn connect(s: &Settings) -> Result<Arc<dyn Backend>, SetupError> {
    let tcp = |servers: &[String]| {
        // Without replicas a server declared down cannot be replaced, and a page fault that
        // cannot be served aborts the program: no heartbeat, only the request timeout (a busy
        // machine can hold a loopback server's answer back for seconds). With replicas, a
        // lenient heartbeat finds dead servers so the pool can fail over.
        let mut cfg = if s.replicas <= 1 {
            TcpConfig::new(servers).without_failover()
        } else {
            TcpConfig::new(servers)
                .heartbeat(Duration::from_millis(500), Duration::from_secs(5))
                .reconnect_within(Duration::from_secs(10))
        };
        if let Some(t) = &s.token {
            cfg = cfg.token(t.as_bytes().to_vec());
        }
        TcpBackend::connect(cfg).map_err(SetupError::Connect)
    };
    if s.replicas <= 1 {
        return Ok(Arc::new(tcp(&s.servers)?));
    }
    let members = s
        .servers
        .iter()
        .map(|a| Ok(Arc::new(tcp(std::slice::from_ref(a))?) as Arc<dyn Backend>))
        .collect::<Result<Vec<_>, SetupError>>()?;
    let pool = PoolBackend::new(members, PoolConfig::new(Redundancy::replicas(s.replicas)))
        .map_err(SetupError::Pool)?;
    Ok(Arc::new(pool))
}

fn build(servers: String) -> Result<(), SetupError> {
    let s = settings(servers)?;
    let backend = connect(&s)?;
    let mut config = PagingConfig {
        allow_user_mode_only: true,
        // Programs run under farmem-run stream through large arrays (numpy, pandas): write
        // dirty pages back in 1 MiB requests, like the prefetch windows.
        evict_batch_pages: 256,
        // A forked child (multiprocessing's fork workers) reads the far heap as of the fork.
        serve_forks: var(env::FORKS).as_deref() != Some("0"),
        ..PagingConfig::new(s.local_mem)
    };
    if let Some(r) = s.readahead {
        config.readahead_max_pages = r;
    }
    let region = PagedRegion::new(s.region, backend.clone(), config).map_err(SetupError::Paging)?;
    let _ = BACKEND.set(backend);
    if HEAP.set(Heap::new(region, s.threshold)).is_ok() {
        crate::fork::install();
        crate::MMAP_FAR.store(var(env::MMAP).as_deref() != Some("0"), Ordering::Relaxed);
        THRESHOLD.store(s.threshold, Ordering::Release);
    }
    Ok(())
}

/// Removes the shim from `LD_PRELOAD`, so that programs this one executes run without it.
fn stop_inheritance() {
    let Ok(list) = std::env::var("LD_PRELOAD") else {
        return;
    };
    let kept: Vec<&str> = list
        .split([':', ' '])
        .filter(|e| !e.is_empty() && !e.contains("libfarmem_preload"))
        .collect();
    // SAFETY: called from the library constructor, before the program's main and before any
    // thread of the shim exists; nothing else reads the environment concurrently.
    unsafe {
        if kept.is_empty() {
            std::env::remove_var("LD_PRELOAD");
        } else {
            std::env::set_var("LD_PRELOAD", kept.join(":"));
        }
    }
}

/// Sets up the far heap when `FARMEM_RUN_SERVERS` is set; on failure exits or, with
/// `FARMEM_RUN_FALLBACK_LOCAL=1`, carries on with local memory only.
pub fn init() {
    let _internal = InternalGuard::new();
    let Some(servers) = var(env::SERVERS) else {
        return;
    };
    if var(env::INHERIT).as_deref() == Some("0") {
        stop_inheritance();
    }
    if let Err(e) = build(servers) {
        let mut msg = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            msg.push_str(&format!(": {c}"));
            cause = c.source();
        }
        if var(env::FALLBACK_LOCAL).as_deref() == Some("1") {
            warn(format_args!("{msg}; running on local memory only"));
            return;
        }
        warn(format_args!(
            "{msg} (use --fallback-local to run on local memory instead)"
        ));
        // SAFETY: exiting at start-up, before the program ran; no handler needs to run.
        unsafe { libc::_exit(1) };
    }
}

/// At exit of a process that forked children which still run: gives them every far page they
/// may still read, since they are not served once this process is gone.
pub fn hand_over() {
    if crate::FORKED.load(Ordering::Relaxed) {
        return;
    }
    if let Some(heap) = HEAP.get() {
        let _internal = InternalGuard::new();
        heap.region().hand_over_forks();
    }
}

/// Prints the counters of this process to stderr when `FARMEM_RUN_STATS=1`.
pub fn report() {
    if crate::FORKED.load(Ordering::Relaxed) || var(env::STATS).as_deref() != Some("1") {
        return;
    }
    let Some(heap) = HEAP.get() else {
        return;
    };
    let _internal = InternalGuard::new();
    let s = heap.stats();
    let objects = BACKEND
        .get()
        .and_then(|b| b.stats().ok())
        .map_or(-1, |st| st.objects as i64);
    eprintln!(
        "farmem-run stats: pid={} fetch_faults={} zero_faults={} prefetched={} written_back={} \
         dropped_behind={} resident_pages={} live_bytes={} server_objects={}",
        std::process::id(),
        s.fetch_faults,
        s.zero_faults,
        s.prefetched,
        s.written_back,
        s.dropped_behind,
        s.resident_pages,
        heap.live_bytes(),
        objects
    );
}
