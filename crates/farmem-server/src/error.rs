/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The TLS certificate or key cannot be used.
    #[error("TLS setup failed {what}")]
    Tls {
        /// The step that failed.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The data directory could not be opened or recovered.
    #[error("cannot use the data directory")]
    Durable(#[from] farmem_store::DurableError),
    /// Another I/O error (spawning threads, ...).
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
}
