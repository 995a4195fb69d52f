//! TLS on the client and peer ports (rustls), configured by etcd's flags: `--cert-file`,
//! `--key-file`, `--trusted-ca-file`, `--client-cert-auth` and their `--peer-*` twins.
//!
//! With client-certificate auth, a connection whose certificate does not chain to the
//! trusted CA fails in the handshake, before any request is read; the common name of an
//! accepted certificate reaches every request on the connection as a [`ClientIdentity`],
//! which auth takes as the user when the request carries no token (etcd's CN auth).
//!
//! The certificate and key are read again when their files change, checked at most once
//! per [`RELOAD_CHECK_INTERVAL`], so an operator can rotate them without a restart; a pair
//! that does not load keeps the previous one in service and is logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};

/// The TLS files of one side (client or peer), as the flags name them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub trusted_ca: Option<PathBuf>,
    /// `--client-cert-auth`: a connecting party must present a certificate signed by
    /// `trusted_ca`. As in etcd, a trusted CA requires that anyway; the flag without a CA is
    /// refused.
    pub client_cert_auth: bool,
}

/// A TLS listener's settings: the acceptor, and the one common name a connecting party's
/// certificate must carry, if the operator named one (`--peer-cert-allowed-cn`).
#[derive(Clone)]
pub struct Listener {
    pub acceptor: TlsAcceptor,
    pub allowed_common_name: Option<String>,
}

/// The common name of the verified client certificate of the connection a request came on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity(pub String);

/// How often at most a handshake looks at the certificate files' modification times.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The acceptor for a listener of `files`. Fails at startup on files that do not load, as
/// etcd does, rather than on the first connection.
pub fn acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    // As etcd's TLSInfo: a trusted CA means client certificates are required and checked,
    // with or without the cert-auth flag (which config refuses without a CA).
    let builder = match &files.trusted_ca {
        Some(ca) => {
            let roots = Arc::new(root_store(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .context("client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let resolver =
        Arc::new(ReloadingCert::load(files.cert.clone(), files.key.clone(), RELOAD_CHECK_INTERVAL)?);
    let mut config = builder.with_cert_resolver(resolver);
    // gRPC needs HTTP/2; the JSON gateway and /health also take HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The CA certificates in `path`, for verifying the other side.
pub fn root_store(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).with_context(|| format!("{}: not a usable CA certificate", path.display()))?;
    }
    Ok(roots)
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("read {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: malformed PEM", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in the file", path.display());
    }
    Ok(certs)
}

fn load_pair(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain = read_certs(cert)?;
    let key_der =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("{}: no private key", key.display()))?;
    let signing = ring::sign::any_supported_type(&key_der)
        .with_context(|| format!("{}: unsupported key", key.display()))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().with_context(|| format!("{} does not match {}", key.display(), cert.display()))?;
    Ok(pair)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The server certificate, read again when its files change.
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    /// How often at most the files' modification times are looked at.
    check_every: Duration,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    pair: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl ReloadingCert {
    fn load(cert: PathBuf, key: PathBuf, check_every: Duration) -> anyhow::Result<ReloadingCert> {
        let stamps = (modified(&cert), modified(&key));
        let pair = Arc::new(load_pair(&cert, &key)?);
        let state = Mutex::new(Loaded { pair, stamps, checked: Instant::now() });
        Ok(ReloadingCert { cert, key, check_every, state })
    }

    /// The certificate to present now: the files' if they changed and load, else the last.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.checked.elapsed() >= self.check_every {
            state.checked = Instant::now();
            let stamps = (modified(&self.cert), modified(&self.key));
            if stamps != state.stamps {
                match load_pair(&self.cert, &self.key) {
                    Ok(pair) => {
                        tracing::info!(cert = %self.cert.display(), "reloaded the TLS certificate");
                        state.pair = Arc::new(pair);
                        state.stamps = stamps;
                    }
                    // Half-written files during a rotation land here; the next check retries.
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "TLS certificate reload failed")
                    }
                }
            }
        }
        state.pair.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The common name (CN) in the subject of a DER certificate, if it has one.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let name = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(name)
}

/// The client TLS settings this member dials its `https` peers with: the peer CA, and its
/// own peer certificate for peers that require one.
pub fn peer_client_config(files: &TlsFiles) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    let read = |path: &Path| std::fs::read(path).with_context(|| format!("read {}", path.display()));
    let mut config = tonic::transport::ClientTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(read(&files.cert)?, read(&files.key)?));
    if let Some(ca) = &files.trusted_ca {
        config = config.ca_certificate(tonic::transport::Certificate::from_pem(read(ca)?));
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let pair = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("certificate");
        let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&cert, pair.cert.pem()).expect("write");
        std::fs::write(&key, pair.signing_key.serialize_pem()).expect("write");
        (cert, key)
    }

    /// Replaced files are served from the next check on; files that do not load (a
    /// rotation half done) keep the last good certificate in service.
    #[test]
    fn certificates_reload_when_their_files_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = write_pair(dir.path(), "live");
        let resolver = ReloadingCert::load(cert.clone(), key.clone(), Duration::ZERO).expect("load");
        let first = resolver.current().cert[0].clone();
        assert_eq!(resolver.current().cert[0], first, "unchanged files, same certificate");

        // Replaced files get modification times of their own, whatever the file system's
        // timestamp resolution.
        let touch = |path: &Path, seconds: u64| {
            let file = std::fs::File::options().write(true).open(path).expect("open");
            file.set_modified(SystemTime::now() + Duration::from_secs(seconds)).expect("set the time");
        };
        let (new_cert, new_key) = write_pair(dir.path(), "next");
        std::fs::copy(&new_cert, &cert).expect("replace the certificate");
        std::fs::copy(&new_key, &key).expect("replace the key");
        touch(&cert, 10);
        touch(&key, 10);
        let second = resolver.current().cert[0].clone();
        assert_ne!(second, first, "the replaced certificate was not picked up");

        std::fs::write(&cert, "not a certificate").expect("break the certificate");
        touch(&cert, 20);
        assert_eq!(resolver.current().cert[0], second, "a broken file replaced a good certificate");
    }
}
