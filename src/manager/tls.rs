//! The webhook's serving certificate, re-read when cert-manager rotates the files.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio_rustls::rustls::{
    self, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

#[derive(Debug)]
pub struct ReloadingCertificate {
    dir: PathBuf,
    current: Mutex<(SystemTime, Arc<CertifiedKey>)>,
}

impl ReloadingCertificate {
    pub fn load(dir: PathBuf) -> anyhow::Result<Arc<Self>> {
        let (stamp, key) = read(&dir)?;
        Ok(Arc::new(Self { dir, current: Mutex::new((stamp, key)) }))
    }

    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().ok()?;
        // One stat per handshake is cheap next to the handshake itself.
        if modified(&self.dir).is_some_and(|stamp| stamp != current.0) {
            match read(&self.dir) {
                Ok(fresh) => *current = fresh,
                Err(err) => tracing::warn!(error = %err, "keeping the old webhook certificate"),
            }
        }
        Some(current.1.clone())
    }
}

fn modified(dir: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(dir.join("tls.crt")).and_then(|m| m.modified()).ok()
}

fn read(dir: &std::path::Path) -> anyhow::Result<(SystemTime, Arc<CertifiedKey>)> {
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|err| anyhow::anyhow!("reading {}: {err}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| anyhow::anyhow!("parsing {}: {err}", cert_path.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|err| anyhow::anyhow!("reading {}: {err}", key_path.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified =
        CertifiedKey::from_der(certs, key, &provider).map_err(|err| anyhow::anyhow!("webhook certificate and key do not fit together: {err}"))?;
    Ok((modified(dir).unwrap_or(SystemTime::UNIX_EPOCH), Arc::new(certified)))
}
