//! TLS 1.3 to the rendezvous server and the switchboard (rustls with the ring provider), and
//! how the client decides to trust a server's certificate ([`ServerTrust`]):
//!
//! - [`ServerTrust::Roots`] (`--ca FILE`): the certificate must chain to one of these roots and
//!   name the host; nothing else is accepted.
//! - [`ServerTrust::Tofu`] (the default): a certificate that verifies with the system's roots
//!   for the host name is accepted; any other is pinned on first use in the home's
//!   `known_servers` under the `HOST:PORT` the user gave, like SSH's `known_hosts`, and must
//!   present the same key on every later connection. A different key makes the verifier
//!   refuse the handshake, so nothing (no password proof, no name) is ever sent to it; the
//!   caller gets [`TlsError::KeyChanged`] naming both fingerprints. A first key is written to
//!   `known_servers` only after the handshake completed (the server's signature proved it
//!   holds the key).
//! - [`ServerTrust::Exact`]: exactly this key (the switchboard, whose key the rendezvous
//!   server tells us in `sbfp=`).
//!
//! Fingerprints are SHA-256 over the certificate's public key
//! ([`Fingerprint::of_certificate`]). Signatures are always checked by the ring provider
//! (`verify_tls13_signature`); only the question "is this the right key" is ours.
//!
//! After the handshake both ends derive the RFC 9266 `tls-exporter` channel binding, which
//! the SCRAM login carries ([`shared::rendezvous::scram::ChannelBinding`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use shared::identity::Fingerprint;
use shared::rendezvous::scram::{ChannelBinding, TLS_EXPORTER_LABEL};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::home::{Home, HomeError};

/// How to decide whether a server's certificate is the right one. See the
/// [module docs](self).
#[derive(Clone)]
#[non_exhaustive]
pub enum ServerTrust {
    /// Verify strictly against these roots, names checked (`--ca FILE`).
    Roots(Arc<RootCertStore>),
    /// Accept what the system's roots verify (when `system_roots`); pin anything else on
    /// first use in the home's `known_servers`.
    Tofu {
        /// Where `known_servers` is.
        home: Home,
        /// Whether to try the system's roots first (off in tests, for a predictable result).
        system_roots: bool,
    },
    /// Accept exactly the certificate key with this fingerprint.
    Exact(Fingerprint),
}

impl fmt::Debug for ServerTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerTrust::Roots(roots) => write!(f, "Roots({} roots)", roots.len()),
            ServerTrust::Tofu { home, system_roots } => f
                .debug_struct("Tofu")
                .field("home", home)
                .field("system_roots", system_roots)
                .finish(),
            ServerTrust::Exact(fp) => write!(f, "Exact({fp})"),
        }
    }
}

impl ServerTrust {
    /// The default: the system's roots, else pinning in `home`.
    pub fn tofu(home: Home) -> ServerTrust {
        ServerTrust::Tofu {
            home,
            system_roots: true,
        }
    }

    /// Pinning in `home` only (no system roots).
    pub fn pin_only(home: Home) -> ServerTrust {
        ServerTrust::Tofu {
            home,
            system_roots: false,
        }
    }

    /// The roots in a PEM file (`--ca FILE`): every `CERTIFICATE` block.
    pub fn from_ca_file(path: &Path) -> Result<ServerTrust, TlsError> {
        let bad = |reason: String| TlsError::CaFile {
            path: path.to_owned(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(bad("no usable CERTIFICATE in it".into()));
        }
        Ok(ServerTrust::Roots(Arc::new(roots)))
    }
}

/// Why the server (its key) was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyTrust {
    /// It verified against the `--ca` roots.
    Ca,
    /// It verified against the system's roots.
    SystemRoots,
    /// First connection: it has just been pinned in `known_servers`.
    PinnedNow,
    /// It is the key pinned in `known_servers`.
    Pinned,
    /// It is the key we were told to expect.
    Exact,
}

/// The server's key after a completed handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerKey {
    /// The server as the user named it (`HOST:PORT`): the key of `known_servers`.
    pub server: String,
    /// The fingerprint of its certificate's public key.
    pub fingerprint: Fingerprint,
    /// Why it was accepted.
    pub trust: KeyTrust,
}

/// Why a TLS connection was not made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The server presented another key than the one pinned for it: the handshake was
    /// refused before anything was sent.
    #[error(
        "the server {server} presented the key {presented}, not the key {pinned} pinned for it \
         in {}; nothing was sent (if the server's key really changed, delete its line there)",
        file.display()
    )]
    KeyChanged {
        /// The server (`HOST:PORT`).
        server: String,
        /// The pinned key.
        pinned: Fingerprint,
        /// The key it presented.
        presented: Fingerprint,
        /// The `known_servers` file.
        file: PathBuf,
    },
    /// The server presented another key than the one we were told to expect.
    #[error("{server} presented the key {presented}, not the expected {expected}")]
    WrongKey {
        /// The server.
        server: String,
        /// The key expected.
        expected: Fingerprint,
        /// The key it presented.
        presented: Fingerprint,
    },
    /// The handshake failed (an untrusted certificate, a server that does not speak TLS 1.3,
    /// a network failure).
    #[error("TLS with {server} failed: {reason}")]
    Handshake {
        /// The server.
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// The `--ca` file cannot be used.
    #[error("cannot use the CA file {}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The home (its `known_servers`) cannot be read or written.
    #[error(transparent)]
    Home(#[from] HomeError),
}

/// A completed TLS connection.
pub(crate) struct Connected {
    /// The stream.
    pub(crate) stream: TlsStream<TcpStream>,
    /// The server's key and why it is trusted.
    pub(crate) key: ServerKey,
    /// The `tls-exporter` channel binding of this session.
    pub(crate) binding: ChannelBinding,
}

/// The ring provider with its default cipher suites and X25519 as the first key exchange
/// (configs built with it are restricted to TLS 1.3).
///
/// ring's default order puts secp384r1 first, whose ring implementation is generic big-number
/// code costing about 1 ms per handshake on each side; the server prefers X25519 too, so the
/// client's first key share is the one used.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    // Deprecated only because ring has no post-quantum key exchange; X25519 it has.
    #[allow(deprecated)]
    let make = || {
        use rustls::crypto::ring::kx_group::{SECP256R1, SECP384R1, X25519};
        let mut provider = rustls::crypto::ring::default_provider();
        provider.kx_groups = vec![X25519, SECP256R1, SECP384R1];
        Arc::new(provider)
    };
    PROVIDER.get_or_init(make).clone()
}

/// The system's roots, loaded once; `None` when none can be loaded.
fn system_roots() -> Option<Arc<RootCertStore>> {
    static ROOTS: OnceLock<Option<Arc<RootCertStore>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::debug!(error = %e, "system root certificates");
            }
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(found.certs);
            (!roots.is_empty()).then(|| Arc::new(roots))
        })
        .clone()
}

/// What the verifier decided, for the caller to read after the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Accepted(Fingerprint, KeyTrust),
    Mismatch {
        expected: Fingerprint,
        presented: Fingerprint,
    },
}

/// What a verifier falls back to when there is no WebPKI verifier or it refuses.
#[derive(Clone, Copy, Debug)]
enum Fallback {
    /// Nothing: the WebPKI verdict stands (`--ca`).
    Refuse,
    /// Trust on first use: the pinned key, if any.
    Pin(Option<Fingerprint>),
    /// Exactly this key.
    Exact(Fingerprint),
}

#[derive(Debug)]
struct TrustVerifier {
    provider: Arc<CryptoProvider>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    webpki_trust: KeyTrust,
    fallback: Fallback,
    decision: Arc<Mutex<Option<Decision>>>,
}

impl TrustVerifier {
    fn decide(&self, decision: Decision) {
        *self.decision.lock().unwrap_or_else(PoisonError::into_inner) = Some(decision);
    }
}

impl ServerCertVerifier for TrustVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of_certificate(end_entity.as_ref()).ok_or(
            rustls::Error::InvalidCertificate(CertificateError::BadEncoding),
        )?;
        if let Fallback::Exact(expected) = self.fallback {
            return if presented == expected {
                self.decide(Decision::Accepted(presented, KeyTrust::Exact));
                Ok(ServerCertVerified::assertion())
            } else {
                self.decide(Decision::Mismatch {
                    expected,
                    presented,
                });
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            };
        }
        // A key pinned for this server always wins: a certificate some public CA issued for
        // the name (a mis-issuance, someone who took over the DNS name) must not replace the
        // key the user's client has already seen. Moving a pinned server to a CA certificate
        // means removing its line from known_servers.
        let pinned_already = matches!(self.fallback, Fallback::Pin(Some(_)));
        if let Some(webpki) = self.webpki.as_ref().filter(|_| !pinned_already) {
            match webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(verified) => {
                    self.decide(Decision::Accepted(presented, self.webpki_trust));
                    return Ok(verified);
                }
                Err(e) if matches!(self.fallback, Fallback::Refuse) => return Err(e),
                Err(e) => tracing::debug!(error = %e, "not verified by the system's roots"),
            }
        }
        match self.fallback {
            Fallback::Pin(None) => {
                self.decide(Decision::Accepted(presented, KeyTrust::PinnedNow));
                Ok(ServerCertVerified::assertion())
            }
            Fallback::Pin(Some(pinned)) if pinned == presented => {
                self.decide(Decision::Accepted(presented, KeyTrust::Pinned));
                Ok(ServerCertVerified::assertion())
            }
            Fallback::Pin(Some(expected)) => {
                self.decide(Decision::Mismatch {
                    expected,
                    presented,
                });
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
            Fallback::Refuse | Fallback::Exact(_) => Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
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

/// A server named the way users write it: `HOST`, `HOST:PORT`, `IP:PORT` or `[IPv6]:PORT`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerLabel {
    /// The host (a name or an IP address, without brackets), lower-case.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl ServerLabel {
    /// The forms [`ServerLabel::parse`] accepts, for messages.
    pub const FORMS: &'static str = "HOST, HOST:PORT, IPv6 or [IPv6]:PORT";

    /// Parses `text`; a missing port is `default_port`. `None` for an empty host or a bad
    /// port.
    ///
    /// This is the one parser for every `--server` of the client: `HOST`, `HOST:PORT`,
    /// `IP:PORT`, a bare IPv6 address (`::1`) and `[IPv6]:PORT`; names are resolved later.
    pub fn parse(text: &str, default_port: u16) -> Option<ServerLabel> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            match after.strip_prefix(':') {
                Some(port) => (host, port.parse().ok()?),
                None if after.is_empty() => (host, default_port),
                None => return None,
            }
        } else if text.matches(':').count() > 1 {
            // A bare IPv6 address.
            (text, default_port)
        } else if let Some((host, port)) = text.split_once(':') {
            (host, port.parse().ok()?)
        } else {
            (text, default_port)
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return None;
        }
        Some(ServerLabel {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Why `--server` does not name a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerAddrError {
    /// Not one of [`ServerLabel::FORMS`].
    #[error("cannot resolve {text:?}: expected {}", ServerLabel::FORMS)]
    Syntax {
        /// What was given.
        text: String,
    },
    /// The name lookup failed or gave no address.
    #[error("cannot resolve {text:?}: {error}")]
    Lookup {
        /// What was given.
        text: String,
        /// Why.
        error: std::io::Error,
    },
}

/// Parses `text` with [`ServerLabel::parse`] and resolves it (a blocking lookup for a name;
/// an IP address needs none) to its first address.
pub fn resolve_server(
    text: &str,
    default_port: u16,
) -> Result<std::net::SocketAddr, ServerAddrError> {
    use std::net::ToSocketAddrs;
    let label = ServerLabel::parse(text, default_port).ok_or_else(|| ServerAddrError::Syntax {
        text: text.to_owned(),
    })?;
    let lookup = |error| ServerAddrError::Lookup {
        text: text.to_owned(),
        error,
    };
    (label.host.as_str(), label.port)
        .to_socket_addrs()
        .map_err(lookup)?
        .next()
        .ok_or_else(|| {
            lookup(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no address",
            ))
        })
}

impl fmt::Display for ServerLabel {
    /// `HOST:PORT`, an IPv6 address in brackets: the key of `known_servers`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Runs the TLS handshake on `tcp` with the server `label`, deciding with `trust`; pins a
/// first key (trust on first use) once the handshake has completed, and derives the channel
/// binding.
pub(crate) async fn handshake(
    tcp: TcpStream,
    label: &ServerLabel,
    trust: &ServerTrust,
) -> Result<Connected, TlsError> {
    let server = label.to_string();
    let provider = provider();
    let failed = |reason: String| TlsError::Handshake {
        server: server.clone(),
        reason,
    };
    let build = |roots: Arc<RootCertStore>| {
        WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| failed(e.to_string()))
    };
    let (webpki, webpki_trust, fallback) = match trust {
        ServerTrust::Roots(roots) => (Some(build(roots.clone())?), KeyTrust::Ca, Fallback::Refuse),
        ServerTrust::Tofu { home, system_roots } => {
            let pinned = home.known_server(&server)?;
            let webpki = match system_roots.then(self::system_roots).flatten() {
                Some(roots) => Some(build(roots)?),
                None => None,
            };
            (webpki, KeyTrust::SystemRoots, Fallback::Pin(pinned))
        }
        ServerTrust::Exact(fp) => (None, KeyTrust::Exact, Fallback::Exact(*fp)),
    };
    let decision = Arc::new(Mutex::new(None));
    let verifier = Arc::new(TrustVerifier {
        provider: provider.clone(),
        webpki,
        webpki_trust,
        fallback,
        decision: decision.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| failed(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name = ServerName::try_from(label.host.clone())
        .map_err(|_| failed(format!("{:?} is not a host name", label.host)))?;
    let result = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    let decided = *decision.lock().unwrap_or_else(PoisonError::into_inner);
    let stream = match (result, decided) {
        (Ok(stream), _) => stream,
        (
            Err(_),
            Some(Decision::Mismatch {
                expected,
                presented,
            }),
        ) => {
            return Err(match trust {
                ServerTrust::Tofu { home, .. } => TlsError::KeyChanged {
                    server,
                    pinned: expected,
                    presented,
                    file: home.known_servers_path(),
                },
                _ => TlsError::WrongKey {
                    server,
                    expected,
                    presented,
                },
            });
        }
        (Err(e), _) => return Err(failed(crate::rendezvous::io_text(&e))),
    };
    let Some(Decision::Accepted(fingerprint, how)) = decided else {
        return Err(failed("the certificate was not checked".into()));
    };
    if how == KeyTrust::PinnedNow
        && let ServerTrust::Tofu { home, .. } = trust
    {
        // The handshake proved the server holds the key: pin it now. Another process may
        // have pinned a key for this server meanwhile.
        let pinned = home.pin_server(&server, fingerprint)?;
        if pinned != fingerprint {
            return Err(TlsError::KeyChanged {
                server,
                pinned,
                presented: fingerprint,
                file: home.known_servers_path(),
            });
        }
    }
    let (_, connection) = stream.get_ref();
    let binding = connection
        .export_keying_material([0u8; 32], TLS_EXPORTER_LABEL, None)
        .map_err(|e| failed(format!("no channel binding: {e}")))?;
    Ok(Connected {
        stream,
        key: ServerKey {
            server,
            fingerprint,
            trust: how,
        },
        binding: ChannelBinding(binding),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn labels_parse_like_users_write_them() {
        let l = |s: &str| ServerLabel::parse(s, 1863).map(|l| l.to_string());
        assert_eq!(l("127.0.0.1:1863").as_deref(), Some("127.0.0.1:1863"));
        assert_eq!(l("Example.ORG").as_deref(), Some("example.org:1863"));
        assert_eq!(l("localhost:99").as_deref(), Some("localhost:99"));
        assert_eq!(l("[::1]:1865").as_deref(), Some("[::1]:1865"));
        assert_eq!(l("[::1]").as_deref(), Some("[::1]:1863"));
        assert_eq!(l("::1").as_deref(), Some("[::1]:1863"));
        let v6 = ServerLabel::parse("[2001:db8::1]:5", 1).unwrap();
        assert_eq!(v6.host, "2001:db8::1");
        for bad in ["", ":1863", "host:port", "host:99999", "[::1]x", "a b:1"] {
            assert_eq!(l(bad), None, "{bad}");
        }
    }

    #[test]
    fn servers_resolve_with_the_default_port_when_none_is_given() {
        let r = |s: &str| resolve_server(s, 3478).map(|a| a.to_string());
        assert_eq!(r("127.0.0.1").unwrap(), "127.0.0.1:3478");
        assert_eq!(r("127.0.0.1:9").unwrap(), "127.0.0.1:9");
        assert_eq!(r("::1").unwrap(), "[::1]:3478");
        assert_eq!(r("[::1]").unwrap(), "[::1]:3478");
        assert_eq!(r("[::1]:9").unwrap(), "[::1]:9");
        let e = r("127.0.0.1:notaport").unwrap_err().to_string();
        assert!(
            e.contains("expected HOST, HOST:PORT, IPv6 or [IPv6]:PORT"),
            "{e}"
        );
    }
}
