//! Runtime configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::backend::pool::Resolver;
use crate::error::{Error, Result};

/// Where far objects are stored.
#[derive(Clone, Default)]
pub enum BackendConfig {
    /// An [`EmbeddedStore`](crate::EmbeddedStore) inside this process (the default).
    #[default]
    Embedded,
    /// Memory servers over TCP, with the shared authentication token.
    Servers {
        /// `host:port` of each server.
        addrs: Vec<String>,
        /// Authentication token (empty: none).
        token: String,
    },
    /// Memory servers over TCP pooled with `replicas` copies of every object on distinct
    /// servers: the program keeps running when up to `replicas - 1` servers die (see
    /// [`PoolBackend`](crate::backend::PoolBackend)). Built by
    /// `BackendConfig::servers(..).replicas(n)`.
    Pool {
        /// `host:port` of each server (one pool member each).
        addrs: Vec<String>,
        /// Authentication token (empty: none).
        token: String,
        /// Copies of each object (1: no redundancy).
        replicas: usize,
    },
    /// Memory servers found by resolving a `host:port` name periodically (how a Kubernetes
    /// headless Service or Consul publishes them), pooled with `replicas` copies of every
    /// object: new addresses join, addresses that leave the answer are drained and removed.
    /// Built by `BackendConfig::discover(..)`.
    Discover {
        /// The name, e.g. `memsrv.default.svc.cluster.local:7070`.
        name: String,
        /// Authentication token (empty: none).
        token: String,
        /// Copies of each object (1: no redundancy).
        replicas: usize,
        /// How often the name is resolved again.
        every: Duration,
        /// How it is resolved (default: the system resolver).
        resolver: Arc<dyn Resolver>,
    },
    /// Any backend.
    Custom(Arc<dyn Backend>),
}

impl BackendConfig {
    /// Memory servers over TCP with the shared `token` (empty: none).
    ///
    /// ```
    /// use farmem::BackendConfig;
    /// let cfg = BackendConfig::servers(["10.0.0.5:7070", "10.0.0.6:7070", "10.0.0.7:7070"], "")
    ///     .replicas(2);
    /// assert!(matches!(cfg, BackendConfig::Pool { replicas: 2, .. }));
    /// ```
    pub fn servers<I, S>(addrs: I, token: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: ToString,
    {
        Self::Servers {
            addrs: addrs.into_iter().map(|a| a.to_string()).collect(),
            token: token.into(),
        }
    }

    /// Memory servers behind the `host:port` name `name`, re-resolved every 10 s, pooled (one
    /// copy of each object unless [`BackendConfig::replicas`] says more); `token` as in
    /// [`BackendConfig::servers`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use farmem::BackendConfig;
    /// let cfg = BackendConfig::discover("memsrv.default.svc.cluster.local:7070", "")
    ///     .replicas(2)
    ///     .discover_every(Duration::from_secs(5));
    /// assert!(matches!(cfg, BackendConfig::Discover { replicas: 2, .. }));
    /// ```
    pub fn discover(name: impl Into<String>, token: impl Into<String>) -> Self {
        Self::Discover {
            name: name.into(),
            token: token.into(),
            replicas: 1,
            every: Duration::from_secs(10),
            resolver: Arc::new(crate::backend::pool::SystemResolver),
        }
    }

    /// Turns a server list into a pool keeping `n` copies of every object (a discovered pool
    /// keeps `n` copies; other backends are returned unchanged).
    #[must_use]
    pub fn replicas(self, n: usize) -> Self {
        match self {
            Self::Servers { addrs, token } | Self::Pool { addrs, token, .. } => Self::Pool {
                addrs,
                token,
                replicas: n.max(1),
            },
            Self::Discover {
                name,
                token,
                every,
                resolver,
                ..
            } => Self::Discover {
                name,
                token,
                replicas: n.max(1),
                every,
                resolver,
            },
            other => other,
        }
    }

    /// Sets how often a discovered pool resolves its name again (other backends are returned
    /// unchanged).
    #[must_use]
    pub fn discover_every(mut self, d: Duration) -> Self {
        if let Self::Discover { every, .. } = &mut self {
            *every = d;
        }
        self
    }

    /// Sets how a discovered pool resolves its name (other backends are returned unchanged).
    #[must_use]
    pub fn resolver(mut self, r: Arc<dyn Resolver>) -> Self {
        if let Self::Discover { resolver, .. } = &mut self {
            *resolver = r;
        }
        self
    }

    /// Connects a [`BackendConfig::Pool`] or [`BackendConfig::Discover`]: one
    /// [`TcpBackend`](crate::backend::TcpBackend) per server, pooled, the pool managing its own
    /// members (re-admission, discovery).
    pub(crate) fn connect_pool(&self) -> Result<Arc<dyn Backend>> {
        use crate::backend::pool::TcpConnector;
        use crate::backend::{MemberSource, Membership, PoolBackend, PoolConfig, PoolError};
        let (source, token, replicas) = match self {
            Self::Pool {
                addrs,
                token,
                replicas,
            } => (MemberSource::Static(addrs.clone()), token, *replicas),
            Self::Discover {
                name,
                token,
                replicas,
                every,
                resolver,
            } => {
                let source = MemberSource::Dns {
                    name: name.clone(),
                    resolver: resolver.clone(),
                    every: *every,
                };
                (source, token, *replicas)
            }
            _ => return Err(Error::Config("not a pool configuration".into())),
        };
        let membership = Membership::new(
            source,
            Arc::new(TcpConnector::new(token.as_bytes().to_vec())),
        );
        let cfg = PoolConfig::new(crate::backend::Redundancy::replicas(replicas));
        let pool = PoolBackend::connect(membership, cfg).map_err(|e| match e {
            PoolError::Backend(b) => Error::Backend(b),
            other => Error::Pool(other),
        })?;
        Ok(Arc::new(pool))
    }
}

impl std::fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded => f.write_str("Embedded"),
            Self::Servers { addrs, .. } => f
                .debug_struct("Servers")
                .field("addrs", addrs)
                .finish_non_exhaustive(),
            Self::Pool {
                addrs, replicas, ..
            } => f
                .debug_struct("Pool")
                .field("addrs", addrs)
                .field("replicas", replicas)
                .finish_non_exhaustive(),
            Self::Discover {
                name,
                replicas,
                every,
                ..
            } => f
                .debug_struct("Discover")
                .field("name", name)
                .field("replicas", replicas)
                .field("every", every)
                .finish_non_exhaustive(),
            Self::Custom(b) => write!(f, "Custom({})", b.describe()),
        }
    }
}

/// Configuration of a [`Runtime`](crate::Runtime).
///
/// ```
/// use farmem::RuntimeConfig;
/// let cfg = RuntimeConfig::new(64 << 20).evacuator_threads(1).watermarks(0.9, 0.8);
/// assert_eq!(cfg.local_budget, 64 << 20);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// Bytes of far objects that may be held locally (the heap may use a small documented slack
    /// on top, see [`Runtime::slack_bytes`](crate::Runtime::slack_bytes)).
    pub local_budget: usize,
    /// Where far objects live.
    pub backend: BackendConfig,
    /// Number of evacuator threads (at least 1).
    pub evacuator_threads: usize,
    /// Fraction of the budget in use at which the evacuator starts.
    pub high_watermark: f64,
    /// Fraction of the budget the evacuator evacuates down to.
    pub low_watermark: f64,
    /// Size of one log-structured region of the local heap (a power of two, 64 KiB ..= 64 MiB).
    /// Objects of a quarter region or more get a dedicated allocation.
    pub region_size: usize,
    /// Number of allocation lanes for mutator threads (each holds one open region).
    pub lanes: usize,
    /// How long an allocation outside any scope waits for the evacuator before failing.
    pub alloc_timeout: Duration,
    /// Largest batch of objects written back in one `put_many` (bytes).
    pub writeback_batch: usize,
}

impl RuntimeConfig {
    /// A configuration with the given local budget and defaults for everything else.
    pub fn new(local_budget: usize) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            local_budget,
            backend: BackendConfig::Embedded,
            evacuator_threads: 1,
            high_watermark: 0.90,
            low_watermark: 0.80,
            region_size: 1 << 20,
            lanes: cpus.clamp(1, 16),
            alloc_timeout: Duration::from_secs(30),
            writeback_batch: 256 << 10,
        }
    }

    /// Sets the backend.
    pub fn backend(mut self, backend: BackendConfig) -> Self {
        self.backend = backend;
        self
    }

    /// Uses any backend.
    pub fn custom_backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = BackendConfig::Custom(backend);
        self
    }

    /// Sets the number of evacuator threads.
    pub fn evacuator_threads(mut self, n: usize) -> Self {
        self.evacuator_threads = n;
        self
    }

    /// Sets the start (`high`) and target (`low`) fractions of the budget for evacuation.
    pub fn watermarks(mut self, high: f64, low: f64) -> Self {
        self.high_watermark = high;
        self.low_watermark = low;
        self
    }

    /// Sets the region size.
    pub fn region_size(mut self, bytes: usize) -> Self {
        self.region_size = bytes;
        self
    }

    /// Sets the number of mutator allocation lanes.
    pub fn lanes(mut self, n: usize) -> Self {
        self.lanes = n;
        self
    }

    /// Sets how long an allocation outside a scope waits for room.
    pub fn alloc_timeout(mut self, t: Duration) -> Self {
        self.alloc_timeout = t;
        self
    }

    /// Sets the largest write-back batch (bytes per `put_many`).
    pub fn writeback_batch(mut self, bytes: usize) -> Self {
        self.writeback_batch = bytes;
        self
    }

    /// Regions the heap may use beyond the budget. Only two kinds of allocation may use them,
    /// because they cannot wait for the evacuator: mutators moving an object the evacuator has
    /// marked (at most one evacuation round's regions per evacuator), and threads whose own scope
    /// the evacuator is waiting for (a fresh open region per lane, plus a reserve of four).
    pub(crate) fn slack_regions(&self) -> usize {
        self.lanes + 1 + self.evacuator_threads * (1 + crate::runtime::MAX_EVACUATION_REGIONS) + 16
    }

    /// The smallest budget accepted: eight regions.
    pub fn minimum_budget(&self) -> usize {
        8 * self.region_size
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`Error::BudgetTooSmall`] or [`Error::Config`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if !self.region_size.is_power_of_two() || !(64 << 10..=64 << 20).contains(&self.region_size)
        {
            return Err(Error::Config(format!(
                "region_size {} is not a power of two between 64 KiB and 64 MiB",
                self.region_size
            )));
        }
        if self.local_budget < self.minimum_budget() {
            return Err(Error::BudgetTooSmall {
                budget: self.local_budget,
                minimum: self.minimum_budget(),
            });
        }
        if !(1..=64).contains(&self.evacuator_threads) {
            return Err(Error::Config(format!(
                "evacuator_threads {} is not between 1 and 64",
                self.evacuator_threads
            )));
        }
        if !(1..=256).contains(&self.lanes) {
            return Err(Error::Config(format!(
                "lanes {} is not between 1 and 256",
                self.lanes
            )));
        }
        let (hi, lo) = (self.high_watermark, self.low_watermark);
        if !(lo > 0.0 && lo < hi && hi <= 1.0) {
            return Err(Error::Config(format!(
                "watermarks must satisfy 0 < low < high <= 1, got low {lo}, high {hi}"
            )));
        }
        if self.writeback_batch == 0 {
            return Err(Error::Config("writeback_batch must be positive".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_rejects_bad_values() {
        assert!(RuntimeConfig::new(64 << 20).validate().is_ok());
        assert!(matches!(
            RuntimeConfig::new(1 << 20).validate(),
            Err(Error::BudgetTooSmall { .. })
        ));
        assert!(matches!(
            RuntimeConfig::new(64 << 20).region_size(3000).validate(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            RuntimeConfig::new(64 << 20).watermarks(0.5, 0.9).validate(),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            RuntimeConfig::new(64 << 20).evacuator_threads(0).validate(),
            Err(Error::Config(_))
        ));
    }
}
