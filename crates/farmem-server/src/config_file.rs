//! The server's configuration file (TOML): the same settings as the command-line flags.
//!
//! Sizes are strings such as `"8GiB"` or a number of bytes, durations strings such as `"30s"`
//! or a number of seconds. Every key is optional (the flag's default applies); a flag given on
//! the command line overrides the file. An unknown key or a bad value is an error naming the
//! key, so a typo cannot silently leave a default in force. `deploy/farmem-server.toml` is a
//! complete example.
//!
//! ```
//! let file = farmem_server::FileConfig::parse(r#"
//!     listen = "0.0.0.0:7070"
//!     capacity = "8GiB"
//!     [quota]
//!     objects = 1000000
//! "#).unwrap();
//! assert_eq!(file.capacity, Some(8 << 30));
//! assert_eq!(file.quota.objects, Some(1_000_000));
//! assert!(farmem_server::FileConfig::parse("capacty = \"8GiB\"").is_err());
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use farmem_store::SessionQuota;
use toml::{Table, Value};

use crate::{parse_duration, parse_size};

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("configuration file is not valid TOML")]
    Syntax(#[source] toml::de::Error),
    /// A key this server does not know (a typo, or a setting of another version).
    #[error("unknown configuration key `{key}`")]
    UnknownKey {
        /// The key, dotted (`quota.bytes`).
        key: String,
    },
    /// A key whose value has the wrong type or cannot be parsed.
    #[error("bad value for configuration key `{key}`: expected {expected}, found {found}")]
    BadValue {
        /// The key, dotted.
        key: String,
        /// What the key takes.
        expected: &'static str,
        /// What was there.
        found: String,
    },
}

/// The settings of a configuration file; `None` where the file leaves the default.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct FileConfig {
    /// `listen`: the address to listen on.
    pub listen: Option<SocketAddr>,
    /// `capacity`: the hard capacity in bytes.
    pub capacity: Option<u64>,
    /// `token_file`: file holding the client token.
    pub token_file: Option<PathBuf>,
    /// `admin_token_file`: file holding the operator's admin token.
    pub admin_token_file: Option<PathBuf>,
    /// `host_reserve`: memory left to the host.
    pub host_reserve: Option<u64>,
    /// `host_reserve_deadline`: time clients get when the host runs short.
    pub host_reserve_deadline: Option<Duration>,
    /// `max_connections` (or its old name `threads`): most connections open at once.
    pub max_connections: Option<usize>,
    /// `io_threads`: threads serving the connections.
    pub io_threads: Option<usize>,
    /// `workers`: threads running long requests.
    pub workers: Option<usize>,
    /// `copy_workers`: threads running server-to-server copies.
    pub copy_workers: Option<usize>,
    /// `tls_cert`: PEM certificate chain to serve TLS with (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// `tls_key`: PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// `tls_client_ca`: PEM CA certificates; clients must present a certificate one signed.
    pub tls_client_ca: Option<PathBuf>,
    /// `max_object`: largest object accepted.
    pub max_object: Option<u64>,
    /// `agent_threads`: threads one agent operation may use.
    pub agent_threads: Option<usize>,
    /// `session_lease`: how long a disconnected session is kept.
    pub session_lease: Option<Duration>,
    /// `hello_timeout`: deadline of the whole hello.
    pub hello_timeout: Option<Duration>,
    /// `idle_timeout`: silent connections are closed after it.
    pub idle_timeout: Option<Duration>,
    /// `write_timeout`: clients that do not read are cut off after it.
    pub write_timeout: Option<Duration>,
    /// `keepalive`: TCP keepalive idle time.
    pub keepalive: Option<Duration>,
    /// `max_response`: largest answer built for one request.
    pub max_response: Option<u64>,
    /// `agent_time_limit`: longest an agent operation may run.
    pub agent_time_limit: Option<Duration>,
    /// `metrics`: address of the metrics and health endpoint.
    pub metrics: Option<SocketAddr>,
    /// `[quota]`: `bytes`, `objects`, `requests_per_second`, `burst` per session.
    pub quota: SessionQuota,
}

/// Takes the keys of one table, refusing what is left over.
struct Keys<'t> {
    table: &'t Table,
    prefix: &'static str,
    seen: Vec<&'static str>,
}

impl<'t> Keys<'t> {
    fn new(table: &'t Table, prefix: &'static str) -> Self {
        Self {
            table,
            prefix,
            seen: Vec::new(),
        }
    }

    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn get(&mut self, key: &'static str) -> Option<&'t Value> {
        self.seen.push(key);
        self.table.get(key)
    }

    fn bad(&self, key: &str, expected: &'static str, v: &Value) -> ConfigError {
        ConfigError::BadValue {
            key: self.path(key),
            expected,
            found: v.to_string(),
        }
    }

    fn string(&mut self, key: &'static str) -> Result<Option<&'t str>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.bad(key, "a string", v)),
        }
    }

    /// A value given as a string (parsed by `from_str`) or an integer (`from_int`); `None`
    /// from either is a bad value, described by `what`.
    fn scalar<T>(
        &mut self,
        key: &'static str,
        what: &'static str,
        from_str: impl Fn(&str) -> Option<T>,
        from_int: impl Fn(u64) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let parsed = match v {
            Value::String(s) => from_str(s),
            Value::Integer(n) => u64::try_from(*n).ok().and_then(from_int),
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| self.bad(key, what, v))
    }

    fn count(&mut self, key: &'static str) -> Result<Option<u64>, ConfigError> {
        self.scalar(key, "a whole number of at least 0", |_| None, Some)
    }

    fn size(&mut self, key: &'static str) -> Result<Option<u64>, ConfigError> {
        const WHAT: &str = "a size such as \"512MiB\" or a number of bytes";
        self.scalar(key, WHAT, |s| parse_size(s).ok(), Some)
    }

    fn duration(&mut self, key: &'static str) -> Result<Option<Duration>, ConfigError> {
        const WHAT: &str = "a duration such as \"30s\" or \"500ms\", or a number of seconds";
        let secs = |n| Some(Duration::from_secs(n));
        self.scalar(key, WHAT, |s| parse_duration(s).ok(), secs)
    }

    fn addr(&mut self, key: &'static str) -> Result<Option<SocketAddr>, ConfigError> {
        const WHAT: &str = "an address such as \"0.0.0.0:7070\"";
        self.scalar(key, WHAT, |s| s.parse().ok(), |_| None)
    }

    fn usize(&mut self, key: &'static str) -> Result<Option<usize>, ConfigError> {
        let Some(n) = self.count(key)? else {
            return Ok(None);
        };
        usize::try_from(n)
            .map(Some)
            .map_err(|_| ConfigError::BadValue {
                key: self.path(key),
                expected: "a smaller number",
                found: n.to_string(),
            })
    }

    /// Fails on the first key that was not asked for.
    fn finish(self) -> Result<(), ConfigError> {
        match self.table.keys().find(|k| !self.seen.contains(&k.as_str())) {
            Some(k) => Err(ConfigError::UnknownKey { key: self.path(k) }),
            None => Ok(()),
        }
    }
}

impl FileConfig {
    /// Reads and parses the configuration file at `path`.
    ///
    /// # Errors
    /// [`ConfigError::Read`] when it cannot be read, others as [`FileConfig::parse`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses the text of a configuration file.
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] for invalid TOML, [`ConfigError::UnknownKey`] and
    /// [`ConfigError::BadValue`] naming the key.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let table: Table = toml::from_str(text).map_err(ConfigError::Syntax)?;
        let mut k = Keys::new(&table, "");
        let mut c = FileConfig {
            listen: k.addr("listen")?,
            capacity: k.size("capacity")?,
            token_file: k.string("token_file")?.map(PathBuf::from),
            admin_token_file: k.string("admin_token_file")?.map(PathBuf::from),
            host_reserve: k.size("host_reserve")?,
            host_reserve_deadline: k.duration("host_reserve_deadline")?,
            max_connections: k.usize("max_connections")?,
            io_threads: k.usize("io_threads")?,
            workers: k.usize("workers")?,
            copy_workers: k.usize("copy_workers")?,
            tls_cert: k.string("tls_cert")?.map(PathBuf::from),
            tls_key: k.string("tls_key")?.map(PathBuf::from),
            tls_client_ca: k.string("tls_client_ca")?.map(PathBuf::from),
            max_object: k.size("max_object")?,
            agent_threads: k.usize("agent_threads")?,
            session_lease: k.duration("session_lease")?,
            hello_timeout: k.duration("hello_timeout")?,
            idle_timeout: k.duration("idle_timeout")?,
            write_timeout: k.duration("write_timeout")?,
            keepalive: k.duration("keepalive")?,
            max_response: k.size("max_response")?,
            agent_time_limit: k.duration("agent_time_limit")?,
            metrics: k.addr("metrics")?,
            quota: SessionQuota::default(),
        };
        // `threads` named the connection limit when each connection had a thread.
        if let Some(n) = k.usize("threads")? {
            if c.max_connections.is_some() {
                let v = Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
                return Err(k.bad(
                    "threads",
                    "no value next to max_connections (its new name)",
                    &v,
                ));
            }
            c.max_connections = Some(n);
        }
        match k.get("quota") {
            None => {}
            Some(Value::Table(q)) => {
                let mut qk = Keys::new(q, "quota.");
                c.quota = SessionQuota {
                    bytes: qk.size("bytes")?,
                    objects: qk.count("objects")?,
                    requests_per_second: qk.count("requests_per_second")?,
                    burst: qk.count("burst")?,
                };
                qk.finish()?;
            }
            Some(v) => return Err(k.bad("quota", "a table ([quota])", v)),
        }
        k.finish()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses() {
        let c = FileConfig::parse(
            r#"
            listen = "127.0.0.1:7071"
            capacity = 1048576
            token_file = "/run/t"
            admin_token_file = "/run/a"
            host_reserve = "1GiB"
            host_reserve_deadline = 20
            max_connections = 4096
            io_threads = 2
            workers = 3
            tls_cert = "/etc/farmem/tls.crt"
            tls_key = "/etc/farmem/tls.key"
            tls_client_ca = "/etc/farmem/clients-ca.crt"
            max_object = "16MiB"
            agent_threads = 2
            session_lease = "1m"
            hello_timeout = "5s"
            idle_timeout = "0"
            write_timeout = "10s"
            keepalive = "30s"
            max_response = "64MiB"
            agent_time_limit = "2m"
            metrics = "127.0.0.1:9090"
            [quota]
            bytes = "1GiB"
            objects = 10
            requests_per_second = 100
            burst = 200
            "#,
        )
        .unwrap();
        assert_eq!(c.capacity, Some(1 << 20));
        assert_eq!(c.host_reserve_deadline, Some(Duration::from_secs(20)));
        assert_eq!(c.idle_timeout, Some(Duration::ZERO));
        assert_eq!(c.max_connections, Some(4096));
        assert_eq!((c.io_threads, c.workers), (Some(2), Some(3)));
        assert_eq!(c.tls_key.as_deref(), Some(Path::new("/etc/farmem/tls.key")));
        let ca = c.tls_client_ca.as_deref();
        assert_eq!(ca, Some(Path::new("/etc/farmem/clients-ca.crt")));
        let old = FileConfig::parse("threads = 256").unwrap();
        assert_eq!(old.max_connections, Some(256));
        assert_eq!(c.agent_time_limit, Some(Duration::from_secs(120)));
        assert_eq!(c.token_file.as_deref(), Some(Path::new("/run/t")));
        assert_eq!(
            c.quota,
            SessionQuota {
                bytes: Some(1 << 30),
                objects: Some(10),
                requests_per_second: Some(100),
                burst: Some(200),
            }
        );
        assert_eq!(FileConfig::parse("").unwrap(), FileConfig::default());
    }

    #[test]
    fn errors_name_the_key() {
        let key = |text: &str| match FileConfig::parse(text) {
            Err(ConfigError::UnknownKey { key }) => format!("unknown {key}"),
            Err(ConfigError::BadValue { key, .. }) => format!("bad {key}"),
            Err(ConfigError::Syntax(_)) => "syntax".into(),
            other => panic!("{other:?}"),
        };
        assert_eq!(key("capacty = \"1GiB\""), "unknown capacty");
        assert_eq!(key("[quota]\nbyte = 5"), "unknown quota.byte");
        assert_eq!(key("capacity = \"8 parsecs\""), "bad capacity");
        assert_eq!(key("threads = -1"), "bad threads");
        assert_eq!(key("max_connections = -1"), "bad max_connections");
        assert_eq!(key("threads = 5\nmax_connections = 5"), "bad threads");
        assert_eq!(key("tls_cert = 5"), "bad tls_cert");
        assert_eq!(key("threads = \"many\""), "bad threads");
        assert_eq!(key("listen = \"nowhere\""), "bad listen");
        assert_eq!(key("session_lease = \"soon\""), "bad session_lease");
        assert_eq!(key("quota = 5"), "bad quota");
        assert_eq!(key("[quota]\nobjects = 1.5"), "bad quota.objects");
        assert_eq!(key("capacity = "), "syntax");
    }
}
