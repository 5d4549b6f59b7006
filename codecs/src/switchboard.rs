//! Switchboard frames over [`shared::switchboard::wire`], for either side of the connection.

use bytes::BytesMut;
use shared::switchboard::wire::{self, EncodeError, WireError};
use shared::switchboard::{Frame, MAX_DATA};
use tokio_util::codec::{Decoder, Encoder};

/// [`shared::switchboard::wire`] as a [`Decoder`] and [`Encoder`]. The framing is the same in
/// both directions; the client reads with `Framed`, the server's reader decodes a whole read
/// at a time with it.
#[derive(Clone, Copy, Debug)]
pub struct SbCodec {
    max_data: usize,
}

impl SbCodec {
    /// A codec that accepts `DATA` payloads of at most `max_data` bytes (at most
    /// [`MAX_DATA`]).
    pub fn new(max_data: usize) -> SbCodec {
        SbCodec {
            max_data: max_data.min(MAX_DATA),
        }
    }
}

impl Default for SbCodec {
    /// Accepts the protocol's largest frames.
    fn default() -> Self {
        SbCodec::new(MAX_DATA)
    }
}

/// Why a switchboard stream could not be framed or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes are not switchboard frames.
    #[error("bad switchboard frame: {0}")]
    Wire(#[from] WireError),
    /// A frame could not be encoded.
    #[error("cannot encode a switchboard frame: {0}")]
    Encode(#[from] EncodeError),
    /// The connection failed.
    #[error("switchboard connection: {0}")]
    Io(#[from] std::io::Error),
}

impl Decoder for SbCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(wire::decode(src, self.max_data)?)
    }
}

impl Encoder<Frame> for SbCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(wire::encode(&frame, dst)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use bytes::Bytes;
    use shared::rendezvous::SessionId;
    use shared::switchboard::{ErrorCode, VERSION};

    fn server_frames() -> Vec<Frame> {
        vec![
            Frame::Joined {
                peer_present: false,
            },
            Frame::PeerJoined,
            Frame::Data(Bytes::from_static(b"\xC1packet")),
            Frame::PeerLeft,
            Frame::error(ErrorCode::IDLE, "idle"),
        ]
    }

    #[test]
    fn the_client_reads_what_the_server_writes_byte_by_byte() {
        let mut buf = BytesMut::new();
        let mut server = SbCodec::default();
        for frame in server_frames() {
            server.encode(frame, &mut buf).unwrap();
        }
        // A frame comes out only when it is whole.
        let mut client = SbCodec::default();
        let mut fed = BytesMut::new();
        let mut got = Vec::new();
        for byte in buf {
            fed.extend_from_slice(&[byte]);
            while let Some(frame) = client.decode(&mut fed).unwrap() {
                got.push(frame);
            }
        }
        assert_eq!(got, server_frames());
    }

    #[test]
    fn the_server_reads_what_the_client_writes() {
        let join = Frame::Join {
            version: VERSION,
            session: SessionId([2; 16]),
            ticket: [1; 16],
        };
        let mut out = BytesMut::new();
        SbCodec::default().encode(join.clone(), &mut out).unwrap();
        assert_eq!(&out[..4], &[0, 34, 0x01, VERSION]);
        assert_eq!(&out[4..20], &[2; 16]);
        assert_eq!(&out[20..36], &[1; 16]);
        SbCodec::default()
            .encode(Frame::Data(Bytes::from_static(b"hi")), &mut out)
            .unwrap();
        let mut server = SbCodec::new(1024);
        assert_eq!(server.decode(&mut out).unwrap(), Some(join));
        assert_eq!(
            server.decode(&mut out).unwrap(),
            Some(Frame::Data(Bytes::from_static(b"hi")))
        );
        assert_eq!(server.decode(&mut out).unwrap(), None);
    }

    #[test]
    fn truncated_frames_wait_for_the_rest() {
        let mut whole = BytesMut::new();
        SbCodec::default()
            .encode(Frame::Data(Bytes::from(vec![7u8; 300])), &mut whole)
            .unwrap();
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(SbCodec::default().decode(&mut part).unwrap(), None, "{cut}");
            assert_eq!(
                part.len(),
                cut,
                "nothing is consumed before a frame is whole"
            );
        }
    }

    #[test]
    fn oversized_data_is_refused_on_both_sides() {
        let mut buf = BytesMut::new();
        SbCodec::default()
            .encode(Frame::Data(Bytes::from(vec![0u8; 100])), &mut buf)
            .unwrap();
        assert!(matches!(
            SbCodec::new(50).decode(&mut buf),
            Err(CodecError::Wire(_))
        ));
        let mut out = BytesMut::new();
        let too_big = Frame::Data(Bytes::from(vec![0u8; MAX_DATA + 1]));
        assert!(matches!(
            SbCodec::default().encode(too_big, &mut out),
            Err(CodecError::Encode(_))
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut codec = SbCodec::default();
        let mut buf = BytesMut::from(&[0u8, 1, 0x7f][..]);
        assert!(codec.decode(&mut buf).is_err());
        let mut buf = BytesMut::from(&[0u8, 0][..]);
        assert!(codec.decode(&mut buf).is_err());
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let len = (state >> 33) as usize % 64;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (state.rotate_left(i as u32 * 7) >> 24) as u8)
                .collect();
            let mut buf = BytesMut::from(&bytes[..]);
            let mut codec = SbCodec::default();
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
        }
    }
}
