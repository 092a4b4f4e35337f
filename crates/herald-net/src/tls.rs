//! rustls server configuration from PEM files: a certificate chain, its private key and,
//! for mutual TLS, the CA that client certificates must chain to.
//!
//! Invariant: a configuration is built once at startup; any unreadable or invalid file
//! is an error naming the file (the server does not start half-secured).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Where the PEM files are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_chain: PathBuf,
    pub private_key: PathBuf,
    /// When set, clients must present a certificate issued by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |message: String| TlsError::File {
        path: path.to_path_buf(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_error("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

impl TlsFiles {
    /// A server configuration offering `alpn` protocols (e.g. `h2`, `http/1.1`).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let chain = certificates(&self.cert_chain)?;
        let key = PrivateKeyDer::from_pem_file(&self.private_key).map_err(|e| TlsError::File {
            path: self.private_key.clone(),
            message: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates(ca)? {
                    roots.add(cert).map_err(|e| TlsError::File {
                        path: ca.clone(),
                        message: e.to_string(),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::Config(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::File {
                path: self.private_key.clone(),
                message: format!("does not match the certificate: {e}"),
            })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_from_generated_files_and_names_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let files = TlsFiles {
            cert_chain: cert.clone(),
            private_key: key.clone(),
            client_ca: Some(cert.clone()),
        };
        files.server_config(&[b"h2"]).unwrap();

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not pem").unwrap();
        let bad = TlsFiles {
            cert_chain: garbage.clone(),
            private_key: key,
            client_ca: None,
        };
        let error = bad.server_config(&[]).unwrap_err().to_string();
        assert!(error.contains("garbage.pem"), "{error}");
        let missing = TlsFiles {
            cert_chain: cert,
            private_key: dir.path().join("missing.pem"),
            client_ca: None,
        };
        let error = missing.server_config(&[]).unwrap_err().to_string();
        assert!(error.contains("missing.pem"), "{error}");
    }
}
