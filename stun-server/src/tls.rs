//! The server's TLS: one certificate and key for both TCP services (the rendezvous and the
//! switchboard speak TLS 1.3 only, from the first byte), loaded from PEM files or generated
//! once and kept next to the database; the certificate's [`Fingerprint`]; the RFC 9266
//! `tls-exporter` channel binding; and a client configuration that trusts exactly one key,
//! for tests, benchmarks and tools that were told the server's fingerprint.
//!
//! ```no_run
//! use p2p_servers::tls::ServerTls;
//! let dir = std::env::temp_dir().join("tls-example");
//! // Generated on the first call, the same certificate on every later one.
//! let tls = ServerTls::self_signed_in(&dir, &["127.0.0.1".parse()?])?;
//! println!("TLS certificate fingerprint {}", tls.fingerprint());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The crypto provider is *ring* (`rustls::crypto::ring`): it builds with a C compiler alone
//! (no CMake or Go, unlike aws-lc-rs), has the algorithms TLS 1.3 needs, and is the provider
//! `rcgen` generates keys with here.

use std::fmt;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use shared::identity::Fingerprint;
use shared::rendezvous::scram::{ChannelBinding, TLS_EXPORTER_LABEL};

/// The generated certificate's file name, next to the database.
pub const CERT_FILE: &str = "tls-cert.pem";
/// The generated key's file name, next to the database (mode 0600).
pub const KEY_FILE: &str = "tls-key.pem";

/// Why a certificate could not be loaded, generated or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read (missing, unreadable).
    #[error("cannot read the TLS {what} {}: {error}", path.display())]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said (not a `source`: it is part of this message).
        error: std::io::Error,
    },
    /// A file holds no usable PEM section of the kind expected.
    #[error("{} holds no {what}: {detail}", path.display())]
    Pem {
        /// `PEM certificate` or `PEM private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why not.
        detail: String,
    },
    /// The key is not the certificate's.
    #[error("the TLS key {} does not belong to the certificate {}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Only one of the two generated files exists: something removed the other.
    #[error(
        "{} exists but {} does not; remove {} too to generate a new certificate \
         (clients that pinned the old one will refuse the new one)",
        present.display(), missing.display(), present.display()
    )]
    Incomplete {
        /// The file that is there.
        present: PathBuf,
        /// The file that is not.
        missing: PathBuf,
    },
    /// The directory for a generated certificate could not be created.
    #[error("cannot create directory {}: {error}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said (not a `source`: it is part of this message).
        error: std::io::Error,
    },
    /// A generated certificate could not be written.
    #[error("cannot write {}: {error}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said (not a `source`: it is part of this message).
        error: std::io::Error,
    },
    /// The certificate could not be generated.
    #[error("cannot generate a TLS certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server's TLS setup, shared by both services: a TLS 1.3-only [`ServerConfig`] with the
/// *ring* provider, and the fingerprint clients pin. Cheap to clone. Two are equal when they
/// present the same public key.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    fingerprint: Fingerprint,
    cert_path: Option<PathBuf>,
    generated: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for ServerTls {}

impl ServerTls {
    /// Loads a certificate chain (end entity first) and its private key from PEM files
    /// (`--tls-cert`, `--tls-key`).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|error| TlsError::Read {
                what,
                path: path.to_owned(),
                error,
            })
        };
        let cert_pem = read("certificate", cert)?;
        let key_pem = read("key", key)?;
        let chain = parse_chain(&cert_pem, cert)?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            what: "PEM private key",
            path: key.to_owned(),
            detail: e.to_string(),
        })?;
        let mut tls = ServerTls::from_der(chain, key_der).map_err(|e| match e {
            TlsError::Rustls(rustls::Error::InconsistentKeys(_)) => TlsError::Mismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            },
            TlsError::Pem { what, detail, .. } => TlsError::Pem {
                what,
                path: cert.to_owned(),
                detail,
            },
            other => other,
        })?;
        tls.cert_path = Some(cert.to_owned());
        Ok(tls)
    }

    /// The self-signed certificate kept in `dir` ([`CERT_FILE`], [`KEY_FILE`]): loaded when
    /// both files exist, else generated with the names "localhost" and `ips` and written there
    /// (the key with mode 0600, `dir` created if missing). An operator who wants new names or
    /// a new key removes both files; clients that pinned the old key will then refuse the
    /// server until they are told.
    pub fn self_signed_in(dir: &Path, ips: &[IpAddr]) -> Result<ServerTls, TlsError> {
        let cert = dir.join(CERT_FILE);
        let key = dir.join(KEY_FILE);
        if !key.exists() {
            if cert.exists() {
                return Err(TlsError::Incomplete {
                    present: cert,
                    missing: key,
                });
            }
            if generate_into(dir, &cert, &key, ips)? {
                let mut tls = ServerTls::from_pem_files(&cert, &key)?;
                tls.generated = true;
                return Ok(tls);
            }
        }
        // The key is there. A process that generates the pair at the same moment publishes
        // the key first: give it a moment to publish the certificate.
        for _ in 0..50 {
            if cert.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if !cert.exists() {
            return Err(TlsError::Incomplete {
                present: key,
                missing: cert,
            });
        }
        ServerTls::from_pem_files(&cert, &key)
    }

    /// A self-signed certificate for "localhost" and 127.0.0.1 that lives only in memory: for
    /// tests and benchmarks, and the default of the services' options (every start a new key).
    pub fn ephemeral() -> Result<ServerTls, TlsError> {
        let (cert_pem, key_pem) = generate_pem(&[IpAddr::from([127, 0, 0, 1])])?;
        let chain = parse_chain(cert_pem.as_bytes(), Path::new("(generated)"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem {
            what: "PEM private key",
            path: PathBuf::from("(generated)"),
            detail: e.to_string(),
        })?;
        let mut tls = ServerTls::from_der(chain, key)?;
        tls.generated = true;
        Ok(tls)
    }

    /// A configuration around a DER certificate chain (end entity first) and its key.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<ServerTls, TlsError> {
        let end_entity = chain.first().ok_or_else(|| TlsError::Pem {
            what: "PEM certificate",
            path: PathBuf::new(),
            detail: "no CERTIFICATE section".into(),
        })?;
        let fingerprint = Fingerprint::of_certificate(end_entity).ok_or_else(|| TlsError::Pem {
            what: "PEM certificate",
            path: PathBuf::new(),
            detail: "the first CERTIFICATE is not an X.509 certificate".into(),
        })?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        // No resumption: every connection is a full handshake (our clients do not resume), so
        // the server keeps no per-session state and sends no tickets.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(ServerTls {
            config: Arc::new(config),
            fingerprint,
            cert_path: None,
            generated: false,
        })
    }

    /// The rustls configuration both services accept connections with.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// SHA-256 of the certificate's public key (`SHA256:...`), what clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The certificate file, when it came from (or was written to) one.
    pub fn cert_path(&self) -> Option<&Path> {
        self.cert_path.as_deref()
    }

    /// Whether this certificate was generated just now (by [`ServerTls::self_signed_in`] on
    /// first start, or [`ServerTls::ephemeral`]).
    pub fn generated(&self) -> bool {
        self.generated
    }
}

/// The *ring* provider every configuration here uses, with X25519 as the preferred key
/// exchange. (rustls 0.23.48 deprecates the ring provider for lacking post-quantum key
/// exchange; the choice is deliberate, see the module docs.)
///
/// ring's default order puts secp384r1 first, and ring's P-384 is generic big-number code:
/// measured with `rendezvous-bench`, it made every handshake cost about 1 ms of CPU on each
/// side. X25519 first (P-256, then P-384, still offered) gives the same security for a
/// fraction of the cost; the client orders them the same way, so no HelloRetryRequest.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![X25519, SECP256R1, SECP384R1];
    Arc::new(provider)
}

fn parse_chain(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |detail: String| TlsError::Pem {
        what: "PEM certificate",
        path: path.to_owned(),
        detail,
    };
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if chain.is_empty() {
        return Err(bad("no CERTIFICATE section".into()));
    }
    Ok(chain)
}

/// A new ECDSA P-256 key and a certificate for it naming "localhost" and `ips` (wildcard
/// addresses left out), both as PEM.
fn generate_pem(ips: &[IpAddr]) -> Result<(String, String), TlsError> {
    let mut names = vec!["localhost".to_owned()];
    for ip in ips {
        let name = ip.to_string();
        if !ip.is_unspecified() && !names.contains(&name) {
            names.push(name);
        }
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "p2p-toolkit stun-server");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Generates a key and certificate and publishes them as `key` and `cert` in `dir` (created if
/// missing). Returns `false` when another process published a key first (then nothing of
/// ours is left behind). Both are written to names of their own first; the key is published
/// with a hard link, which fails if the name exists, then the certificate is renamed into
/// place: a crash leaves at worst a key without certificate ([`TlsError::Incomplete`]).
fn generate_into(dir: &Path, cert: &Path, key: &Path, ips: &[IpAddr]) -> Result<bool, TlsError> {
    let (cert_pem, key_pem) = generate_pem(ips)?;
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |error| TlsError::Write { path, error }
    };
    std::fs::create_dir_all(dir).map_err(|error| TlsError::CreateDir {
        path: dir.to_owned(),
        error,
    })?;
    let pid = std::process::id();
    let key_tmp = dir.join(format!(".{KEY_FILE}.{pid}.tmp"));
    let cert_tmp = dir.join(format!(".{CERT_FILE}.{pid}.tmp"));
    let result = (|| {
        write_private(&key_tmp, key_pem.as_bytes()).map_err(write_err(&key_tmp))?;
        std::fs::write(&cert_tmp, cert_pem.as_bytes()).map_err(write_err(&cert_tmp))?;
        match std::fs::hard_link(&key_tmp, key) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(write_err(key)(e)),
        }
        std::fs::rename(&cert_tmp, cert).map_err(write_err(cert))?;
        Ok(true)
    })();
    let _ = std::fs::remove_file(&key_tmp);
    let _ = std::fs::remove_file(&cert_tmp);
    result
}

/// Creates `path` readable by its owner only, and writes `bytes`.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The RFC 9266 `tls-exporter` channel binding of an established TLS 1.3 connection: 32
/// bytes exported with the label `EXPORTER-Channel-Binding` and no context. Both ends compute
/// the same value; a man in the middle who terminates TLS has two different ones.
pub fn channel_binding<D>(
    conn: &rustls::ConnectionCommon<D>,
) -> Result<ChannelBinding, rustls::Error> {
    let bytes = conn.export_keying_material([0u8; 32], TLS_EXPORTER_LABEL, None)?;
    Ok(ChannelBinding(bytes))
}

/// A client configuration (TLS 1.3, *ring*) that accepts exactly the server key with this
/// fingerprint, whatever the certificate's names, issuer or dates: for tests, benchmarks and
/// tools that were told the server's fingerprint (the real client's trust rules are its own).
pub fn pinned_client_config(fingerprint: Fingerprint) -> Arc<ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(PinnedServerKey {
        fingerprint,
        provider: provider.clone(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Arc::new(config)
}

/// The server name a client pinned by [`pinned_client_config`] may send: any will do, the
/// verifier does not look at names.
pub fn any_server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("a valid DNS name")
}

/// Accepts the one server key whose [`Fingerprint`] it was given; handshake signatures are
/// checked by the provider as usual.
#[derive(Debug)]
pub struct PinnedServerKey {
    fingerprint: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl PinnedServerKey {
    /// A verifier for the key with `fingerprint`.
    pub fn new(fingerprint: Fingerprint) -> PinnedServerKey {
        PinnedServerKey {
            fingerprint,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedServerKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match Fingerprint::of_certificate(end_entity) {
            Some(seen) if seen == self.fingerprint => Ok(ServerCertVerified::assertion()),
            Some(_) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stun-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn generated_once_then_reloaded_with_the_same_fingerprint_and_a_private_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("persist");
        let ips = ["127.0.0.1".parse().unwrap(), "0.0.0.0".parse().unwrap()];
        let first = ServerTls::self_signed_in(&dir, &ips).unwrap();
        assert!(first.generated());
        let again = ServerTls::self_signed_in(&dir, &ips).unwrap();
        assert!(!again.generated());
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert_eq!(again.cert_path(), Some(dir.join(CERT_FILE).as_path()));
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        // The fingerprint is the certificate's, as a client computes it.
        let pem = std::fs::read(dir.join(CERT_FILE)).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(Fingerprint::of_certificate(&der), Some(first.fingerprint()));
        // Another directory, another key.
        assert_ne!(ServerTls::ephemeral().unwrap(), first);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let dir = temp_dir("mismatch");
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_a, _) = generate_pem(&[]).unwrap();
        let (_, key_b) = generate_pem(&[]).unwrap();
        let (cert, key) = (dir.join("a.pem"), dir.join("b.key"));
        std::fs::write(&cert, cert_a).unwrap();
        std::fs::write(&key, key_b).unwrap();
        let err = ServerTls::from_pem_files(&cert, &key).unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("does not belong"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_swapped_and_half_present_files_are_clear_errors() {
        let dir = temp_dir("errors");
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_pem, key_pem) = generate_pem(&[]).unwrap();
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&cert, &cert_pem).unwrap();
        std::fs::write(&key, &key_pem).unwrap();
        let missing = dir.join("nope.pem");
        let err = ServerTls::from_pem_files(&missing, &key).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read the TLS certificate"),
            "{err}"
        );
        let err = ServerTls::from_pem_files(&cert, &missing).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot read the TLS key"),
            "{err}"
        );
        // Swapped: the key file where the certificate should be.
        let err = ServerTls::from_pem_files(&key, &cert).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        assert!(ServerTls::from_pem_files(&cert, &key).is_ok());
        // Only the key of a generated pair: not silently replaced.
        let half = dir.join("half");
        std::fs::create_dir_all(&half).unwrap();
        std::fs::write(half.join(KEY_FILE), &key_pem).unwrap();
        let err = ServerTls::self_signed_in(&half, &[]).unwrap_err();
        assert!(matches!(err, TlsError::Incomplete { .. }), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
