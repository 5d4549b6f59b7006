//! What a link says inside its end-to-end session, beside the application's own messages.
//!
//! A link ([`crate::chat::ChatSession`] underneath: Noise KK between the two device identity
//! keys, reliable and ordered) carries the application's messages and a few messages of the
//! link itself. Every message starts with a kind byte:
//!
//! | kind | body | meaning |
//! |---|---|---|
//! | `0x00` | the application's bytes | a message for the application ([`LinkMessage::App`]) |
//! | `0x01` | 32 bytes | the SHA-256 of the certificate this side's QUIC endpoint presents ([`LinkMessage::QuicCertificate`]) |
//!
//! The QUIC certificate is ephemeral and self-signed; what makes it trustworthy is that its
//! fingerprint arrives here, inside the session only the holders of the two pinned identity
//! keys can complete. Each QUIC side then accepts exactly the certificate with that
//! fingerprint, so the QUIC streams are bound to the same identities as the session. Unknown
//! kinds are dropped with a log line by the receiver, so later versions can add kinds.

/// The kind byte of an application message.
pub const KIND_APP: u8 = 0x00;
/// The kind byte of a QUIC certificate fingerprint.
pub const KIND_QUIC_CERTIFICATE: u8 = 0x01;

/// One message of a link's session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkMessage {
    /// The application's bytes.
    App(Vec<u8>),
    /// The SHA-256 fingerprint of the sender's QUIC certificate (DER).
    QuicCertificate([u8; 32]),
}

/// Why a message could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkMessageError {
    /// The message was empty (no kind byte).
    #[error("an empty link message")]
    Empty,
    /// A kind this version does not know.
    #[error("unknown link message kind {0:#04x}")]
    UnknownKind(u8),
    /// The body's length does not fit the kind.
    #[error("a link message of kind {kind:#04x} with {len} body bytes")]
    BadLength {
        /// The kind.
        kind: u8,
        /// The body's length.
        len: usize,
    },
}

impl LinkMessage {
    /// The bytes to hand to the session.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            LinkMessage::App(bytes) => {
                let mut out = Vec::with_capacity(1 + bytes.len());
                out.push(KIND_APP);
                out.extend_from_slice(bytes);
                out
            }
            LinkMessage::QuicCertificate(fingerprint) => {
                let mut out = Vec::with_capacity(33);
                out.push(KIND_QUIC_CERTIFICATE);
                out.extend_from_slice(fingerprint);
                out
            }
        }
    }

    /// Reads a message the session delivered.
    pub fn decode(bytes: &[u8]) -> Result<LinkMessage, LinkMessageError> {
        let (&kind, body) = bytes.split_first().ok_or(LinkMessageError::Empty)?;
        match kind {
            KIND_APP => Ok(LinkMessage::App(body.to_vec())),
            KIND_QUIC_CERTIFICATE => {
                body.try_into()
                    .map(LinkMessage::QuicCertificate)
                    .map_err(|_| LinkMessageError::BadLength {
                        kind,
                        len: body.len(),
                    })
            }
            other => Err(LinkMessageError::UnknownKind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kinds_round_trip_and_bad_input_is_named() {
        let cert = LinkMessage::QuicCertificate([7; 32]);
        assert_eq!(LinkMessage::decode(&cert.encode()), Ok(cert));
        let empty_app = LinkMessage::App(Vec::new());
        assert_eq!(empty_app.encode(), vec![KIND_APP]);
        assert_eq!(LinkMessage::decode(&[KIND_APP]), Ok(empty_app));
        assert_eq!(LinkMessage::decode(&[]), Err(LinkMessageError::Empty));
        assert_eq!(
            LinkMessage::decode(&[KIND_QUIC_CERTIFICATE, 1, 2]),
            Err(LinkMessageError::BadLength { kind: 1, len: 2 })
        );
        assert_eq!(
            LinkMessage::decode(&[0x42, 1]),
            Err(LinkMessageError::UnknownKind(0x42))
        );
    }

    proptest! {
        #[test]
        fn app_messages_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let message = LinkMessage::App(bytes);
            prop_assert_eq!(LinkMessage::decode(&message.encode()), Ok(message));
        }
    }
}
