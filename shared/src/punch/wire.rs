//! The probe and ack datagrams.
//!
//! ```text
//!  0        1                 17     18                26
//! +--------+-----------------+------+-----------------+
//! |  kind  |   session id    | role |      nonce      |   (then ignored trailing bytes)
//! +--------+-----------------+------+-----------------+
//!   0x84 probe / 0x85 ack      0 = initiator, 1 = responder
//! ```
//!
//! The kind byte has its top bit set, so a punch packet can never be mistaken for STUN (whose
//! first byte is 0x00 or 0x01, [RFC 8489 section 5]) and sits next to the chat module's 0x80
//! (handshake) and 0x81 (transport) on the same socket, in the range QUIC never uses (see the
//! chat module's wire format). The nonce is 8 random bytes, big-endian
//! on the wire; an ack carries the nonce of the probe it answers and the role of the peer that
//! sends the ack. Bytes after the nonce are ignored, so a later version can append fields.
//!
//! [RFC 8489 section 5]: https://www.rfc-editor.org/rfc/rfc8489#section-5

use super::Role;

/// First byte of a probe.
pub const PROBE_KIND: u8 = 0x84;
/// First byte of an ack.
pub const ACK_KIND: u8 = 0x85;
/// Length of the session id.
pub const SESSION_ID_LEN: usize = 16;
/// Length of an encoded probe or ack.
pub const PACKET_LEN: usize = 1 + SESSION_ID_LEN + 1 + 8;

/// Whether a datagram is a punch packet (a probe or an ack), judged by its first byte alone.
///
/// A driver that shares the endpoint socket with STUN and the chat session demultiplexes on
/// this: punch packets go to [`super::Puncher::handle_datagram`], whatever their length (a
/// malformed one is dropped there).
pub fn is_punch_packet(data: &[u8]) -> bool {
    matches!(data.first(), Some(&PROBE_KIND | &ACK_KIND))
}

/// Whether a [`Packet`] is a probe or the answer to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// "Can you hear me?": answered with an ack to where it came from.
    Probe,
    /// "I heard your probe": echoes the probe's nonce.
    Ack,
}

/// A decoded probe or ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Packet {
    /// Probe or ack.
    pub kind: PacketKind,
    /// The introduction's session id (PROTOCOL.md section 8).
    pub session: [u8; SESSION_ID_LEN],
    /// The role of the peer that sent this packet.
    pub role: Role,
    /// A probe's random nonce, or the nonce of the probe an ack answers.
    pub nonce: u64,
}

/// Why a datagram is not a valid punch packet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than [`PACKET_LEN`].
    #[error("punch packet truncated: {0} bytes, need {PACKET_LEN}")]
    Truncated(usize),
    /// The first byte is neither [`PROBE_KIND`] nor [`ACK_KIND`].
    #[error("not a punch packet (kind byte {0:#04x})")]
    UnknownKind(u8),
    /// The role byte is neither 0 nor 1.
    #[error("unknown role byte {0}")]
    UnknownRole(u8),
}

impl Packet {
    /// Encodes the packet.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PACKET_LEN);
        out.push(match self.kind {
            PacketKind::Probe => PROBE_KIND,
            PacketKind::Ack => ACK_KIND,
        });
        out.extend_from_slice(&self.session);
        out.push(match self.role {
            Role::Initiator => 0,
            Role::Responder => 1,
        });
        out.extend_from_slice(&self.nonce.to_be_bytes());
        out
    }

    /// Decodes a packet; trailing bytes after the nonce are ignored.
    pub fn decode(data: &[u8]) -> Result<Packet, WireError> {
        let kind = match data.first() {
            Some(&PROBE_KIND) => PacketKind::Probe,
            Some(&ACK_KIND) => PacketKind::Ack,
            Some(&other) => return Err(WireError::UnknownKind(other)),
            None => return Err(WireError::Truncated(0)),
        };
        let Some(body) = data.get(1..PACKET_LEN) else {
            return Err(WireError::Truncated(data.len()));
        };
        let (session, rest) = body.split_at(SESSION_ID_LEN);
        let (role, nonce) = rest.split_at(1);
        let role = match role[0] {
            0 => Role::Initiator,
            1 => Role::Responder,
            other => return Err(WireError::UnknownRole(other)),
        };
        let mut s = [0u8; SESSION_ID_LEN];
        s.copy_from_slice(session);
        let mut n = [0u8; 8];
        n.copy_from_slice(nonce);
        Ok(Packet {
            kind,
            session: s,
            role,
            nonce: u64::from_be_bytes(n),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Packet {
        Packet {
            kind: PacketKind::Probe,
            session: *b"0123456789abcdef",
            role: Role::Responder,
            nonce: 0x0102_0304_0506_0708,
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let bytes = sample().encode();
        assert_eq!(bytes.len(), PACKET_LEN);
        assert_eq!(bytes[0], 0x84);
        assert_eq!(&bytes[1..17], b"0123456789abcdef");
        assert_eq!(bytes[17], 1);
        assert_eq!(&bytes[18..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let ack = Packet {
            kind: PacketKind::Ack,
            role: Role::Initiator,
            ..sample()
        }
        .encode();
        assert_eq!((ack[0], ack[17]), (0x85, 0));
    }

    #[test]
    fn is_punch_packet_tells_punch_from_stun_and_chat() {
        assert!(is_punch_packet(&sample().encode()));
        assert!(is_punch_packet(&[ACK_KIND]));
        for first in [0x00, 0x01, 0x80, 0x81, 0x83, 0x86, 0x44] {
            assert!(!is_punch_packet(&[first, 0, 0]), "{first:#x}");
        }
        assert!(!is_punch_packet(&[]));
    }

    #[test]
    fn truncation_and_bad_bytes_are_errors() {
        let bytes = sample().encode();
        for len in 0..PACKET_LEN {
            assert_eq!(
                Packet::decode(&bytes[..len]),
                Err(WireError::Truncated(len)),
                "{len}"
            );
        }
        let mut bad_role = bytes.clone();
        bad_role[17] = 2;
        assert_eq!(Packet::decode(&bad_role), Err(WireError::UnknownRole(2)));
        let mut bad_kind = bytes.clone();
        bad_kind[0] = 0x81;
        assert_eq!(Packet::decode(&bad_kind), Err(WireError::UnknownKind(0x81)));
        let mut longer = bytes;
        longer.extend_from_slice(b"future");
        assert_eq!(Packet::decode(&longer), Ok(sample()));
    }

    proptest! {
        #[test]
        fn round_trip(ack: bool, session: [u8; 16], responder: bool, nonce: u64) {
            let p = Packet {
                kind: if ack { PacketKind::Ack } else { PacketKind::Probe },
                session,
                role: if responder { Role::Responder } else { Role::Initiator },
                nonce,
            };
            prop_assert_eq!(Packet::decode(&p.encode()), Ok(p));
        }

        #[test]
        fn decode_never_panics(data: Vec<u8>) {
            let decoded = Packet::decode(&data);
            if decoded.is_ok() {
                prop_assert!(is_punch_packet(&data));
            }
        }
    }
}
