//! Who is at the other end of a link's QUIC connection: exactly the peer the chat session
//! authenticated.
//!
//! Each side makes a throwaway self-signed certificate for the link ([`LinkCertificate`]) and
//! sends its SHA-256 fingerprint to the peer over the link's Noise session, which is already
//! bound to both peers' identity keys. The QUIC handshake then uses mutual TLS 1.3 where each
//! side accepts exactly one certificate, the one whose fingerprint it received, and checks the
//! handshake signature against it. No CA, names or validity dates are involved: the fingerprint
//! carried by the authenticated Noise session is the whole trust decision, and a fresh key per
//! link means a leaked key is worth one link at most.

use std::fmt;
use std::sync::Arc;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

/// The ALPN protocol of a link's QUIC connection. Versioned so that a later, incompatible use
/// of the streams fails the handshake instead of confusing the peer.
pub const ALPN: &[u8] = b"p2p-link/1";

/// The server name the client asks for and the certificates carry. Fixed, because the name
/// proves nothing here (the fingerprint does); under `.invalid` (RFC 2606) so it never
/// resolves.
pub const SERVER_NAME: &str = "p2p-link.invalid";

/// The TLS alert a side sends when the peer's certificate is not the expected one
/// (`access_denied`, what rustls sends for [`CertificateError::ApplicationVerificationFailure`]).
/// Used to tell "we refused the peer" and "the peer refused us" apart from other failures.
pub(crate) const REFUSED_ALERT: u8 = 49;

/// A SHA-256 fingerprint of a certificate's DER encoding.
pub type CertFingerprint = [u8; 32];

/// Why link certificates or TLS configurations could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Key or certificate generation failed.
    #[error("cannot generate the link certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration (a bug, not a network condition).
    #[error("TLS configuration for the link refused: {0}")]
    Tls(#[from] rustls::Error),
    /// The provider lacks the cipher suite QUIC's Initial packets need (a bug).
    #[error("QUIC TLS configuration for the link refused: {0}")]
    Quic(#[from] NoInitialCipherSuite),
}

/// An ephemeral self-signed certificate (ECDSA P-256) and its key, made for one link.
pub struct LinkCertificate {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    fingerprint: CertFingerprint,
}

impl fmt::Debug for LinkCertificate {
    /// The fingerprint only: the key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkCertificate")
            .field("fingerprint", &Hex(&self.fingerprint))
            .finish_non_exhaustive()
    }
}

impl LinkCertificate {
    /// A new key pair and a self-signed certificate for [`SERVER_NAME`].
    pub fn generate() -> Result<LinkCertificate, AuthError> {
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])?;
        let cert = certified.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let fingerprint = fingerprint(&cert);
        Ok(LinkCertificate {
            cert,
            key,
            fingerprint,
        })
    }

    /// The SHA-256 of the certificate's DER: what the peer must expect, sent to it over the
    /// link's Noise session.
    pub fn fingerprint(&self) -> CertFingerprint {
        self.fingerprint
    }

    /// The certificate's DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.cert
    }

    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone()]
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// The SHA-256 of a certificate's DER encoding.
pub fn fingerprint(cert_der: &[u8]) -> CertFingerprint {
    Sha256::digest(cert_der).into()
}

/// Lower-case hex of a fingerprint, for logs and errors.
struct Hex<'a>(&'a [u8]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Accepts one certificate, by fingerprint, on either side of the handshake.
#[derive(Debug)]
struct PeerVerifier {
    expected: CertFingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn new(expected: CertFingerprint) -> PeerVerifier {
        PeerVerifier {
            expected,
            algorithms: crate::tls::provider().signature_verification_algorithms,
        }
    }

    /// The peer's whole chain must be the one expected certificate: a self-signed certificate
    /// needs no intermediates, so any is a sign of a different peer.
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        let presented = fingerprint(end_entity);
        if presented != self.expected || !intermediates.is_empty() {
            tracing::warn!(
                expected = %Hex(&self.expected),
                presented = %Hex(&presented),
                intermediates = intermediates.len(),
                "QUIC peer presented a certificate other than the one announced over the chat session; refused"
            );
            return Err(CertificateError::ApplicationVerificationFailure.into());
        }
        Ok(())
    }

    /// Checks the handshake signature with the certificate's key. The fingerprint is checked
    /// again so the signature can only ever be verified against the accepted certificate.
    fn signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check(cert, &[])?;
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

/// TLS 1.2 is never negotiated (both configurations allow TLS 1.3 only); refuse it outright.
fn no_tls12() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic)
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client side's TLS, as [`super::QuicLink`] uses it (public for benchmarks that compare
/// with quinn on a socket of its own): presents `cert`, accepts only the server certificate whose
/// fingerprint is `peer`. Session resumption is off: a resumed session would skip the
/// certificate check, and each link has one connection anyway.
pub fn client_crypto(
    cert: &LinkCertificate,
    peer: CertFingerprint,
) -> Result<QuicClientConfig, AuthError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier::new(peer)))
        .with_client_auth_cert(cert.chain(), cert.key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.resumption = rustls::client::Resumption::disabled();
    Ok(QuicClientConfig::try_from(tls)?)
}

/// The server side's TLS, as [`super::QuicLink`] uses it: presents `cert`, requires a client certificate and accepts only the
/// one whose fingerprint is `peer`. No session tickets (see [`client_crypto`]).
pub fn server_crypto(
    cert: &LinkCertificate,
    peer: CertFingerprint,
) -> Result<QuicServerConfig, AuthError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(PeerVerifier::new(peer)))
        .with_single_cert(cert.chain(), cert.key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    Ok(QuicServerConfig::try_from(tls)?)
}
