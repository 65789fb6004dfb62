//! HTTPS on the public listener: rustls with HTTP/2 and HTTP/1.1 offered by ALPN, and the
//! certificate reloaded without a restart when its files change or on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the certificate files are checked for changes.
const WATCH_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate {path}: {source}")]
    Cert { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("cannot read private key {path}: {source}")]
    Key { path: PathBuf, source: rustls::pki_types::pem::Error },
    #[error("{0}: no certificate in the file")]
    Empty(PathBuf),
    #[error("certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The current TLS configuration, swapped whole when the files change.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    config: RwLock<Arc<ServerConfig>>,
    /// Modification times of cert and key when last loaded.
    loaded: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl Tls {
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Arc<Tls>, TlsError> {
        let config = Arc::new(server_config(&cert, &key)?);
        let loaded = (modified(&cert), modified(&key));
        Ok(Arc::new(Tls { cert, key, config: RwLock::new(config), loaded: Mutex::new(loaded) }))
    }

    /// The configuration a new connection's handshake uses.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        self.config.read().unwrap().clone()
    }

    /// Loads the files again when they changed since the last load (or always, when `force`).
    /// A broken new pair is logged and the running configuration kept.
    pub fn reload(&self, force: bool) {
        let now = (modified(&self.cert), modified(&self.key));
        if !force && *self.loaded.lock().unwrap() == now {
            return;
        }
        match server_config(&self.cert, &self.key) {
            Ok(config) => {
                *self.config.write().unwrap() = Arc::new(config);
                *self.loaded.lock().unwrap() = now;
                info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => warn!(error = %e, "TLS certificate not reloaded, keeping the current one"),
        }
    }

    /// Reloads on file changes (checked every few seconds) and on SIGHUP, until shutdown.
    pub fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGHUP; certificate files are still watched");
                    None
                }
            };
            let mut tick = tokio::time::interval(WATCH_EVERY);
            loop {
                let force = tokio::select! {
                    _ = tick.tick() => false,
                    Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                    _ = shutdown.cancelled() => return,
                };
                self.reload(force);
            }
        });
    }
}

fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Cert { path: cert.into(), source })?;
    if certs.is_empty() {
        return Err(TlsError::Empty(cert.into()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key { path: key.into(), source })?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
