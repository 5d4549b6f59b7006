//! Framing: the cleartext packet header and the frames inside a transport packet's plaintext.
//!
//! The layouts are tabulated in the [module docs](super#wire-format). Everything here is pure
//! byte work: parsing never panics and never allocates, encoding appends to a `Vec<u8>`.

use sha2::{Digest, Sha256};

use super::ChatError;

/// First byte of a handshake initiation (Noise message 1, initiator to responder).
pub const TAG_HANDSHAKE_INIT: u8 = 0x80;
/// First byte of a transport packet (nonce plus ciphertext).
pub const TAG_TRANSPORT: u8 = 0x81;
/// First byte of a handshake response (Noise message 2, responder to initiator).
pub const TAG_HANDSHAKE_RESPONSE: u8 = 0x82;

/// Length of the session tag that follows the kind byte.
pub const SESSION_TAG_LEN: usize = 8;
/// Kind byte plus session tag.
pub(crate) const HEADER_LEN: usize = 1 + SESSION_TAG_LEN;
/// Length of the explicit nonce in a transport packet.
pub(crate) const NONCE_LEN: usize = 8;
/// Kind byte, session tag and nonce.
pub(crate) const TRANSPORT_HEADER_LEN: usize = HEADER_LEN + NONCE_LEN;
/// ChaCha20-Poly1305 tag.
pub(crate) const AEAD_TAG_LEN: usize = 16;
/// Body of either Noise KK handshake message with an empty payload: an ephemeral key (32)
/// and the tag of the encrypted empty payload (16).
pub(crate) const HANDSHAKE_BODY_LEN: usize = 32 + AEAD_TAG_LEN;
/// A whole handshake packet.
pub(crate) const HANDSHAKE_PACKET_LEN: usize = HEADER_LEN + HANDSHAKE_BODY_LEN;
/// The shortest transport packet: header plus the tag of an empty plaintext.
pub(crate) const MIN_TRANSPORT_LEN: usize = TRANSPORT_HEADER_LEN + AEAD_TAG_LEN;

/// Eight bytes naming a session in cleartext, so one socket can carry several sessions.
///
/// Derived from the caller's session id with SHA-256; it is a routing hint, not a secret and
/// not an authenticator (the Noise prologue binds the full session id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionTag(pub [u8; SESSION_TAG_LEN]);

impl SessionTag {
    /// The tag that packets of the session with id `session_id` carry.
    pub fn from_session_id(session_id: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"p2p-chat/v1 session tag");
        h.update((session_id.len() as u64).to_be_bytes());
        h.update(session_id);
        let digest = h.finalize();
        let mut tag = [0u8; SESSION_TAG_LEN];
        tag.copy_from_slice(&digest[..SESSION_TAG_LEN]);
        Self(tag)
    }
}

/// True if `packet` looks like a chat packet: a known kind byte and at least the minimum
/// length for that kind. Cheap, for demultiplexing; says nothing about authenticity.
///
/// STUN messages (first byte `0x00` or `0x01`) are never chat packets.
pub fn is_chat_packet(packet: &[u8]) -> bool {
    match packet.first() {
        Some(&(TAG_HANDSHAKE_INIT | TAG_HANDSHAKE_RESPONSE)) => {
            packet.len() == HANDSHAKE_PACKET_LEN
        }
        Some(&TAG_TRANSPORT) => packet.len() >= MIN_TRANSPORT_LEN,
        _ => false,
    }
}

/// The session tag of a chat packet, `None` if [`is_chat_packet`] is false.
pub fn session_tag(packet: &[u8]) -> Option<SessionTag> {
    if !is_chat_packet(packet) {
        return None;
    }
    let mut tag = [0u8; SESSION_TAG_LEN];
    tag.copy_from_slice(packet.get(1..HEADER_LEN)?);
    Some(SessionTag(tag))
}

/// A parsed cleartext packet; bodies borrow from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Packet<'a> {
    /// Noise message 1.
    HandshakeInit { session: SessionTag, body: &'a [u8] },
    /// Noise message 2.
    HandshakeResponse { session: SessionTag, body: &'a [u8] },
    /// A transport message.
    Transport {
        session: SessionTag,
        nonce: u64,
        ciphertext: &'a [u8],
    },
}

impl<'a> Packet<'a> {
    /// Splits a datagram into header fields and body.
    pub(crate) fn parse(packet: &'a [u8]) -> Result<Self, ChatError> {
        let kind = *packet.first().ok_or(ChatError::NotChat)?;
        if !matches!(
            kind,
            TAG_HANDSHAKE_INIT | TAG_HANDSHAKE_RESPONSE | TAG_TRANSPORT
        ) {
            return Err(ChatError::NotChat);
        }
        let session = session_tag(packet).ok_or(ChatError::Malformed)?;
        let rest = packet.get(HEADER_LEN..).ok_or(ChatError::Malformed)?;
        Ok(match kind {
            TAG_HANDSHAKE_INIT => Packet::HandshakeInit {
                session,
                body: rest,
            },
            TAG_HANDSHAKE_RESPONSE => Packet::HandshakeResponse {
                session,
                body: rest,
            },
            _ => {
                let (nonce, ciphertext) = rest
                    .split_first_chunk::<NONCE_LEN>()
                    .ok_or(ChatError::Malformed)?;
                Packet::Transport {
                    session,
                    nonce: u64::from_be_bytes(*nonce),
                    ciphertext,
                }
            }
        })
    }
}

/// Appends the kind byte and session tag.
pub(crate) fn put_header(out: &mut Vec<u8>, kind: u8, session: SessionTag) {
    out.push(kind);
    out.extend_from_slice(&session.0);
}

/// Frame type bytes inside a transport plaintext.
const FRAME_PING: u8 = 0x01;
const FRAME_ACK: u8 = 0x02;
const FRAME_DATA: u8 = 0x03;
const FRAME_CLOSE: u8 = 0x04;

/// DATA flag: this chunk ends a message.
const DATA_FLAG_FIN: u8 = 0x01;

/// Bytes of the selective-ack bitmap at most (256 sequence numbers above the cumulative ack).
pub(crate) const ACK_BITMAP_BYTES: usize = 32;
/// The largest ACK frame.
pub(crate) const MAX_ACK_FRAME_LEN: usize = 1 + 8 + 1 + ACK_BITMAP_BYTES;
/// A DATA frame's bytes before its data.
pub(crate) const DATA_FRAME_OVERHEAD: usize = 1 + 8 + 1 + 2;
/// A PING frame.
pub(crate) const PING_FRAME_LEN: usize = 1;

/// A cumulative acknowledgement plus a bitmap of what arrived above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct AckFrame {
    /// Every sequence number below this has been received.
    pub cumulative: u64,
    /// Bit `i` (byte `i / 8`, bit `i % 8`) set: sequence number `cumulative + 1 + i` arrived.
    pub bitmap: [u8; ACK_BITMAP_BYTES],
}

impl AckFrame {
    /// Whether `seq` is acknowledged by this frame.
    #[cfg(test)]
    pub(crate) fn acks(&self, seq: u64) -> bool {
        if seq < self.cumulative {
            return true;
        }
        let Some(i) = seq.checked_sub(self.cumulative + 1) else {
            return false;
        };
        i < (ACK_BITMAP_BYTES * 8) as u64 && self.bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0
    }

    /// Sequence numbers above the cumulative ack that the bitmap marks.
    pub(crate) fn selective(&self) -> impl Iterator<Item = u64> + '_ {
        (0..ACK_BITMAP_BYTES * 8)
            .filter(|&i| self.bitmap[i / 8] & (1 << (i % 8)) != 0)
            .map(|i| self.cumulative + 1 + i as u64)
    }

    fn encoded_bitmap_len(&self) -> usize {
        self.bitmap
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |i| i + 1)
    }

    /// The frame's length when encoded.
    #[cfg(test)]
    pub(crate) fn encoded_len(&self) -> usize {
        1 + 8 + 1 + self.encoded_bitmap_len()
    }
}

/// One frame of a transport plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// Keepalive / probe; elicits an ACK.
    Ping,
    /// Acknowledgement of DATA chunks; never acknowledged itself.
    Ack(AckFrame),
    /// One chunk of an application message.
    Data { seq: u64, fin: bool, data: &'a [u8] },
    /// The sender's application ended the chat (the authenticated goodbye).
    Close,
}

impl Frame<'_> {
    /// Appends the encoded frame.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Frame::Ping => out.push(FRAME_PING),
            Frame::Close => out.push(FRAME_CLOSE),
            Frame::Ack(ack) => {
                let n = ack.encoded_bitmap_len();
                out.push(FRAME_ACK);
                out.extend_from_slice(&ack.cumulative.to_be_bytes());
                out.push(n as u8);
                out.extend_from_slice(&ack.bitmap[..n]);
            }
            Frame::Data { seq, fin, data } => {
                debug_assert!(data.len() <= usize::from(u16::MAX));
                out.push(FRAME_DATA);
                out.extend_from_slice(&seq.to_be_bytes());
                out.push(if fin { DATA_FLAG_FIN } else { 0 });
                out.extend_from_slice(&(data.len() as u16).to_be_bytes());
                out.extend_from_slice(data);
            }
        }
    }

    /// Whether receiving this frame obliges the receiver to send an ACK.
    pub(crate) fn is_ack_eliciting(&self) -> bool {
        !matches!(self, Frame::Ack(_))
    }
}

/// Iterates the frames of a plaintext; yields `Err` once and stops on malformed input.
pub(crate) struct FrameReader<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> FrameReader<'a> {
    /// Reads the frames of `plaintext`.
    pub(crate) fn new(plaintext: &'a [u8]) -> Self {
        Self {
            rest: plaintext,
            failed: false,
        }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn take_u64(&mut self) -> Option<u64> {
        let (head, tail) = self.rest.split_first_chunk::<8>()?;
        self.rest = tail;
        Some(u64::from_be_bytes(*head))
    }

    fn read_frame(&mut self) -> Option<Frame<'a>> {
        let (&kind, tail) = self.rest.split_first()?;
        self.rest = tail;
        match kind {
            FRAME_PING => Some(Frame::Ping),
            FRAME_CLOSE => Some(Frame::Close),
            FRAME_ACK => {
                let cumulative = self.take_u64()?;
                let n = usize::from(*self.take(1)?.first()?);
                if n > ACK_BITMAP_BYTES {
                    return None;
                }
                let mut bitmap = [0u8; ACK_BITMAP_BYTES];
                bitmap[..n].copy_from_slice(self.take(n)?);
                Some(Frame::Ack(AckFrame { cumulative, bitmap }))
            }
            FRAME_DATA => {
                let seq = self.take_u64()?;
                let flags = *self.take(1)?.first()?;
                if flags & !DATA_FLAG_FIN != 0 {
                    return None;
                }
                let len = self.take(2)?;
                let len = usize::from(u16::from_be_bytes([*len.first()?, *len.get(1)?]));
                let data = self.take(len)?;
                Some(Frame::Data {
                    seq,
                    fin: flags & DATA_FLAG_FIN != 0,
                    data,
                })
            }
            _ => None,
        }
    }
}

impl<'a> Iterator for FrameReader<'a> {
    type Item = Result<Frame<'a>, ChatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match self.read_frame() {
            Some(frame) => Some(Ok(frame)),
            None => {
                self.failed = true;
                Some(Err(ChatError::Malformed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode_all(frames: &[Frame<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            f.encode(&mut out);
        }
        out
    }

    #[test]
    fn frames_round_trip() {
        let mut bitmap = [0u8; ACK_BITMAP_BYTES];
        bitmap[0] = 0b101;
        bitmap[3] = 0x80;
        let frames = [
            Frame::Ack(AckFrame {
                cumulative: 77,
                bitmap,
            }),
            Frame::Ping,
            Frame::Close,
            Frame::Data {
                seq: 5,
                fin: false,
                data: b"hello ",
            },
            Frame::Data {
                seq: 6,
                fin: true,
                data: b"",
            },
        ];
        let bytes = encode_all(&frames);
        let expected_len: usize = (1 + 8 + 1 + 4) + 1 + 1 + (12 + 6) + 12;
        assert_eq!(bytes.len(), expected_len);
        let parsed: Vec<_> = FrameReader::new(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(parsed, frames);
    }

    #[test]
    fn ack_bitmap_semantics() {
        let mut bitmap = [0u8; ACK_BITMAP_BYTES];
        bitmap[0] = 0b101; // cumulative+1 and cumulative+3
        bitmap[31] = 0x80; // cumulative+256
        let ack = AckFrame {
            cumulative: 10,
            bitmap,
        };
        assert!(ack.acks(0) && ack.acks(9));
        assert!(!ack.acks(10));
        assert!(ack.acks(11) && !ack.acks(12) && ack.acks(13));
        assert!(ack.acks(266) && !ack.acks(267));
        assert_eq!(ack.selective().collect::<Vec<_>>(), vec![11, 13, 266]);
        assert_eq!(ack.encoded_len(), MAX_ACK_FRAME_LEN);
    }

    #[test]
    fn truncated_frames_are_malformed() {
        let bytes = encode_all(&[Frame::Data {
            seq: 1,
            fin: true,
            data: b"abc",
        }]);
        for cut in 1..bytes.len() {
            let r: Result<Vec<_>, _> = FrameReader::new(&bytes[..cut]).collect();
            assert_eq!(r, Err(ChatError::Malformed), "cut at {cut}");
        }
        let r: Result<Vec<_>, _> = FrameReader::new(&[0x09]).collect();
        assert_eq!(r, Err(ChatError::Malformed));
        // Unknown DATA flag bits and oversized bitmaps are refused.
        let mut bad = bytes.clone();
        bad[9] = 0x02;
        assert!(FrameReader::new(&bad).any(|f| f.is_err()));
        let mut ack = vec![FRAME_ACK];
        ack.extend_from_slice(&[0; 8]);
        ack.push(33);
        ack.extend_from_slice(&[0; 33]);
        assert!(FrameReader::new(&ack).any(|f| f.is_err()));
    }

    #[test]
    fn header_and_demux() {
        let tag = SessionTag::from_session_id(b"session-1");
        assert_ne!(tag, SessionTag::from_session_id(b"session-2"));
        let mut packet = Vec::new();
        put_header(&mut packet, TAG_TRANSPORT, tag);
        packet.extend_from_slice(&42u64.to_be_bytes());
        packet.extend_from_slice(&[0xAA; AEAD_TAG_LEN]);
        assert!(is_chat_packet(&packet));
        assert_eq!(session_tag(&packet), Some(tag));
        assert_eq!(
            Packet::parse(&packet),
            Ok(Packet::Transport {
                session: tag,
                nonce: 42,
                ciphertext: &[0xAA; AEAD_TAG_LEN]
            })
        );
        assert!(!is_chat_packet(&packet[..packet.len() - 1]));
        // A STUN Binding request header never looks like chat.
        let stun = [
            0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert!(!is_chat_packet(&stun));
        assert_eq!(Packet::parse(&stun), Err(ChatError::NotChat));
        assert_eq!(Packet::parse(&[]), Err(ChatError::NotChat));
        // Handshake packets have one exact length.
        let mut hs = Vec::new();
        put_header(&mut hs, TAG_HANDSHAKE_INIT, tag);
        hs.extend_from_slice(&[7; HANDSHAKE_BODY_LEN]);
        assert!(is_chat_packet(&hs));
        hs.push(0);
        assert!(!is_chat_packet(&hs));
        assert_eq!(session_tag(&hs), None);
    }

    proptest! {
        #[test]
        fn frame_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            // Whatever parses re-encodes to something that parses back the same.
            for frame in FrameReader::new(&bytes).map_while(Result::ok) {
                let mut out = Vec::new();
                frame.encode(&mut out);
                let again: Vec<_> = FrameReader::new(&out).collect();
                prop_assert_eq!(again, vec![Ok(frame)]);
            }
        }

        #[test]
        fn packet_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let parsed = Packet::parse(&bytes);
            prop_assert_eq!(parsed.is_ok(), bytes.first().is_some_and(|b| (0x80..=0x82).contains(b))
                && is_chat_packet(&bytes));
        }
    }
}
