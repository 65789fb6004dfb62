//! What `rediss` connections trust and present: `storage.ca_file` (Redis is usually behind a
//! private CA, which the public web roots do not know) and `storage.client_cert`/`client_key`
//! (Redis's `tls-auth-clients`). Read and checked once, before herald binds, so that a wrong
//! file is a configuration problem at start instead of every connection failing later.

use std::path::Path;

use redis::{ClientTlsConfig, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The files' contents, checked. Empty: the public web roots, no client certificate.
#[derive(Clone, Default)]
pub struct RedisTls {
    certs: Option<TlsCertificates>,
}

/// A file that cannot be used: the configuration key that names it, and why.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsFileError {
    /// `storage.ca_file`, `storage.client_cert` or `storage.client_key`.
    pub key: &'static str,
    pub message: String,
}

impl RedisTls {
    /// Reads `ca_file` and the client certificate and key (paths already resolved).
    pub fn load(ca_file: Option<&Path>, client: Option<(&Path, &Path)>) -> Result<RedisTls, TlsFileError> {
        let root_cert = ca_file.map(|path| read("storage.ca_file", path, check_roots)).transpose()?;
        let client_tls = client
            .map(|(cert, key)| -> Result<_, TlsFileError> {
                let client_cert = read("storage.client_cert", cert, check_chain)?;
                let client_key = read("storage.client_key", key, check_key)?;
                check_pair(&client_cert, &client_key).map_err(|message| TlsFileError {
                    key: "storage.client_key",
                    message: format!("{}: {message}", key.display()),
                })?;
                Ok(ClientTlsConfig { client_cert, client_key })
            })
            .transpose()?;
        if root_cert.is_none() && client_tls.is_none() {
            return Ok(RedisTls::default());
        }
        Ok(RedisTls { certs: Some(TlsCertificates { client_tls, root_cert }) })
    }

    /// What the Redis client is given, if anything was configured.
    pub(super) fn certificates(&self) -> Option<&TlsCertificates> {
        self.certs.as_ref()
    }
}

/// The file's bytes, once `check` finds them usable.
fn read(key: &'static str, path: &Path, check: fn(&[u8]) -> Result<(), String>) -> Result<Vec<u8>, TlsFileError> {
    let failed = |message: String| TlsFileError { key, message };
    let pem = std::fs::read(path).map_err(|e| failed(format!("cannot read {}: {e}", path.display())))?;
    check(&pem).map_err(|e| failed(format!("{}: {e}", path.display())))?;
    Ok(pem)
}

/// At least one certificate, each usable as a trust anchor (what the client does with them).
fn check_roots(pem: &[u8]) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(pem)? {
        roots.add(cert).map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    Ok(())
}

fn check_chain(pem: &[u8]) -> Result<(), String> {
    certificates(pem).map(drop)
}

fn check_key(pem: &[u8]) -> Result<(), String> {
    PrivateKeyDer::from_pem_slice(pem).map(drop).map_err(|e| format!("no PEM private key ({e})"))
}

/// The key is the certificate's (a mismatch would only show as a refused handshake).
fn check_pair(cert: &[u8], key: &[u8]) -> Result<(), String> {
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("no PEM private key ({e})"))?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(certificates(cert)?, key, &provider)
        .map(drop)
        .map_err(|e| format!("not the key of storage.client_cert ({e})"))
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs =
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| format!("invalid PEM ({e})"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_cannot_be_used_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        let e = RedisTls::load(Some(&junk), None).err().unwrap();
        assert_eq!(e.key, "storage.ca_file");
        assert!(e.message.contains("no PEM certificate"), "{e}");
        let e = RedisTls::load(Some(&missing), None).err().unwrap();
        assert!(e.message.contains("cannot read") && e.message.contains("missing.pem"), "{e}");
        let e = RedisTls::load(None, Some((&junk, &junk))).err().unwrap();
        assert_eq!(e.key, "storage.client_cert");
        assert!(RedisTls::load(None, None).unwrap().certificates().is_none());
    }

    #[test]
    fn a_private_ca_and_a_client_certificate_are_given_to_the_client() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let (ca, cert, key) =
            (fixtures.join("redis-ca.pem"), fixtures.join("redis-client.pem"), fixtures.join("redis-client.key"));
        let tls = RedisTls::load(Some(&ca), Some((&cert, &key))).unwrap();
        let certs = tls.certificates().unwrap();
        assert!(certs.root_cert.is_some() && certs.client_tls.is_some());
        redis::Client::build_with_tls("rediss://127.0.0.1:6379", certs.clone()).expect("the client takes them");
        let e = RedisTls::load(Some(&ca), Some((&cert, &ca))).err().unwrap();
        assert_eq!(e.key, "storage.client_key");
        let e = RedisTls::load(None, Some((&cert, &fixtures.join("redis-server.key")))).err().unwrap();
        assert_eq!(e.key, "storage.client_key");
        assert!(e.message.contains("not the key of storage.client_cert"), "{e}");
    }
}
