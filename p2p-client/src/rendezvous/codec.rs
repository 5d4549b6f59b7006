//! A `tokio_util::codec` [`Decoder`]/[`Encoder`] over the sans-IO framing of
//! [`shared::rendezvous::wire`].

use bytes::BytesMut;
use shared::rendezvous::wire::{self, Direction, EncodeError, FrameError, Line};
use tokio_util::codec::{Decoder, Encoder};

/// Frames rendezvous lines (and `LST` payloads) on a byte stream.
///
/// A line that does not parse is logged and skipped (the framing resyncs on the next line);
/// only errors after which the stream cannot be framed any more end the stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct LineCodec;

/// Why the codec failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that cannot be framed (a line too long, a bad payload length).
    #[error("unframeable input: {0}")]
    Frame(#[from] FrameError),
    /// A line we were asked to send is not valid on the wire.
    #[error("cannot encode line: {0}")]
    Encode(#[from] EncodeError),
}

impl Decoder for LineCodec {
    type Item = Line;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Line>, CodecError> {
        loop {
            match wire::decode(src, Direction::ToClient) {
                Ok(line) => return Ok(line),
                Err(e) if !e.is_fatal() => {
                    tracing::warn!(error = %e, "skipping a line that does not parse");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Encoder<Line> for LineCodec {
    type Error = CodecError;

    fn encode(&mut self, line: Line, dst: &mut BytesMut) -> Result<(), CodecError> {
        wire::encode(&line, dst, Direction::ToServer)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::rendezvous::TrId;

    #[test]
    fn bad_lines_are_skipped_and_fatal_errors_end_the_stream() {
        let mut codec = LineCodec;
        let mut buf = BytesMut::from(&b"bad line\r\nNLN 0 BSY bob\r\nLST 3 x\r\n"[..]);
        let line = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((line.command.as_str(), line.trid), ("NLN", TrId(0)));
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::Frame(FrameError::BadPayload))
        ));
    }

    #[test]
    fn encodes_what_decodes() {
        let mut codec = LineCodec;
        let mut buf = BytesMut::new();
        codec
            .encode(Line::new("LST", TrId(7), []), &mut buf)
            .unwrap();
        assert_eq!(&buf[..], b"LST 7\r\n");
        let mut lst = Line::new("LST", TrId(7), []);
        lst.payload = b"bob FLN C\r\n".to_vec();
        let mut buf = BytesMut::from(&b"LST 7 11\r\nbob FLN C\r\n"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(lst));
        let spaced = Line::new("CHG", TrId(1), ["a b".to_owned()]);
        assert!(matches!(
            codec.encode(spaced, &mut buf),
            Err(CodecError::Encode(_))
        ));
    }
}
