//! Where a self-managed pool finds its servers: a fixed address list or a DNS name re-resolved
//! periodically (a Kubernetes headless Service, a Consul service), and how it connects to them.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, BackendError, TcpBackend, TcpConfig};

/// Turns a `host:port` name into the addresses it stands for now.
///
/// The default, [`SystemResolver`], asks the system resolver; tests and service registries plug
/// in their own.
pub trait Resolver: Send + Sync + std::fmt::Debug {
    /// The addresses `name` resolves to now.
    ///
    /// # Errors
    /// When the name cannot be resolved (the pool then keeps its members as they are).
    fn resolve(&self, name: &str) -> std::io::Result<Vec<SocketAddr>>;
}

/// [`Resolver`] through [`ToSocketAddrs`] (the system resolver: `/etc/hosts`, DNS).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, name: &str) -> std::io::Result<Vec<SocketAddr>> {
        Ok(name.to_socket_addrs()?.collect())
    }
}

/// Opens a member backend for a server address.
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// Connects to the server at `addr` (`host:port`).
    ///
    /// # Errors
    /// When the server cannot be reached or refuses the client.
    fn connect(&self, addr: &str) -> Result<Arc<dyn Backend>, BackendError>;
}

/// [`Connector`] making one [`TcpBackend`] per server, with a shared token.
#[derive(Clone)]
pub struct TcpConnector {
    token: Vec<u8>,
}

impl std::fmt::Debug for TcpConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConnector").finish_non_exhaustive()
    }
}

impl TcpConnector {
    /// Connects with authentication token `token` (empty: none).
    pub fn new(token: impl Into<Vec<u8>>) -> Self {
        Self {
            token: token.into(),
        }
    }
}

impl Connector for TcpConnector {
    fn connect(&self, addr: &str) -> Result<Arc<dyn Backend>, BackendError> {
        let mut cfg = TcpConfig::new([addr]);
        if !self.token.is_empty() {
            cfg = cfg.token(self.token.clone());
        }
        Ok(Arc::new(TcpBackend::connect(cfg)?))
    }
}

/// Where a self-managed pool's servers come from.
#[derive(Clone, Debug)]
pub enum MemberSource {
    /// A fixed list of `host:port` addresses. A member that fails is re-admitted when its
    /// server answers again at the same address.
    Static(Vec<String>),
    /// A `host:port` name resolved every `every`: new addresses join, addresses that leave the
    /// answer are drained (while they answer) and removed. A failed or empty answer changes
    /// nothing.
    Dns {
        /// The name, e.g. `memsrv.default.svc.cluster.local:7070`.
        name: String,
        /// How it is resolved.
        resolver: Arc<dyn Resolver>,
        /// How often.
        every: Duration,
    },
}

impl MemberSource {
    /// The addresses now, as member names (`ip:port` for resolved names).
    pub(crate) fn addresses(&self) -> std::io::Result<Vec<String>> {
        match self {
            Self::Static(list) => Ok(list.clone()),
            Self::Dns { name, resolver, .. } => {
                let mut out: Vec<String> = resolver
                    .resolve(name)?
                    .into_iter()
                    .map(|a| a.to_string())
                    .collect();
                out.sort();
                out.dedup();
                Ok(out)
            }
        }
    }

    /// What the source is called in messages.
    pub(crate) fn describe(&self) -> &str {
        match self {
            Self::Static(_) => "the server list",
            Self::Dns { name, .. } => name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_list_addresses() {
        let s = MemberSource::Static(vec!["b:1".into(), "a:1".into()]);
        assert_eq!(s.addresses().unwrap(), ["b:1", "a:1"]);
        let d = MemberSource::Dns {
            name: "127.0.0.1:7070".into(),
            resolver: Arc::new(SystemResolver),
            every: Duration::from_secs(1),
        };
        assert_eq!(d.addresses().unwrap(), ["127.0.0.1:7070"]);
        assert_eq!(d.describe(), "127.0.0.1:7070");
        assert!(SystemResolver.resolve("no port here").is_err());
    }
}
