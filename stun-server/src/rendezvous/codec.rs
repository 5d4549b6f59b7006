//! `tokio_util::codec` adapters around the sans-IO framing in [`shared::rendezvous::wire`].

use bytes::BytesMut;
use shared::rendezvous::wire::{self, Direction, EncodeError, FrameError, Line};
use tokio_util::codec::{Decoder, Encoder};

/// Which side of the connection the codec runs on: it decides which lines carry a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The server reads requests (none carries a payload) and writes answers and pushes.
    Server,
    /// The client reads answers and pushes, payloads included.
    Client,
}

/// Frames rendezvous lines.
///
/// Decoding yields `Ok(line)` for a line and `Err(FrameError)` for a line the framing refused:
/// a [`FrameError::Syntax`] has been consumed and decoding goes on; after a fatal error (see
/// [`FrameError::is_fatal`]) the stream cannot be resynchronised and the reader must stop.
/// Frame errors are items rather than `Decoder` errors because a `Decoder` error ends a
/// `FramedRead` stream, and most of them must not.
#[derive(Debug)]
pub struct LineCodec {
    side: Side,
    failed: bool,
}

impl LineCodec {
    /// A codec for one side of the connection.
    pub fn new(side: Side) -> LineCodec {
        LineCodec {
            side,
            failed: false,
        }
    }
}

/// Why a line could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The line breaks the framing rules.
    #[error("cannot encode line: {0}")]
    Encode(#[from] EncodeError),
}

impl LineCodec {
    fn incoming(&self) -> Direction {
        match self.side {
            Side::Server => Direction::ToServer,
            Side::Client => Direction::ToClient,
        }
    }

    fn outgoing(&self) -> Direction {
        match self.side {
            Side::Server => Direction::ToClient,
            Side::Client => Direction::ToServer,
        }
    }
}

impl Decoder for LineCodec {
    type Item = Result<Line, FrameError>;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        if self.failed {
            // After a fatal error nothing more can be framed; discard what arrives.
            buf.clear();
            return Ok(None);
        }
        let decoded = wire::decode(buf, self.incoming());
        match decoded {
            Ok(Some(line)) => Ok(Some(Ok(line))),
            Ok(None) => Ok(None),
            Err(e) => {
                self.failed = e.is_fatal();
                Ok(Some(Err(e)))
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        // A partial line at end of stream is dropped: the peer is gone and cannot be answered.
        let item = self.decode(buf)?;
        if item.is_none() {
            buf.clear();
        }
        Ok(item)
    }
}

impl Encoder<Line> for LineCodec {
    type Error = CodecError;

    fn encode(&mut self, line: Line, out: &mut BytesMut) -> Result<(), Self::Error> {
        self.encode(&line, out)
    }
}

impl Encoder<&Line> for LineCodec {
    type Error = CodecError;

    fn encode(&mut self, line: &Line, out: &mut BytesMut) -> Result<(), Self::Error> {
        wire::encode(line, out, self.outgoing())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use shared::rendezvous::TrId;

    fn decode_all(side: Side, bytes: &[u8]) -> Vec<Result<Line, FrameError>> {
        let mut codec = LineCodec::new(side);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn syntax_errors_are_items_and_decoding_goes_on() {
        let got = decode_all(Side::Server, b"VER 1 P2P1\r\nbad\r\nPNG 2\r\npartial");
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].as_ref().unwrap().command.as_str(), "VER");
        assert!(matches!(got[1], Err(FrameError::Syntax(_))));
        assert_eq!(got[2].as_ref().unwrap().trid, TrId(2));
    }

    #[test]
    fn a_fatal_error_ends_decoding() {
        let mut bytes = vec![b'A'; wire::MAX_LINE + 10];
        bytes.extend_from_slice(b"\r\nPNG 1\r\n");
        let got = decode_all(Side::Server, &bytes);
        assert_eq!(got, vec![Err(FrameError::LineTooLong)]);
    }

    #[test]
    fn a_client_lst_request_has_no_payload() {
        let got = decode_all(Side::Server, b"LST 7\r\nLST 8 5\r\nPNG 9\r\n");
        let lst = got[0].as_ref().unwrap();
        assert_eq!(lst.command.as_str(), "LST");
        assert!(lst.params.is_empty() && lst.payload.is_empty(), "{lst:?}");
        // An extra parameter is the core's business (201), not a payload length.
        assert_eq!(got[1].as_ref().unwrap().params, vec!["5"]);
        assert_eq!(got[2].as_ref().unwrap().trid, TrId(9));
        let got = decode_all(Side::Server, b"LST x\r\nPNG 3\r\n");
        assert!(matches!(got[0], Err(FrameError::Syntax(_))));
        assert_eq!(got[1].as_ref().unwrap().trid, TrId(3));
    }

    #[test]
    fn the_client_side_reads_lst_payloads_and_encoding_round_trips() {
        let mut line = Line::new("LST", TrId(7), []);
        line.payload = b"bob FLN C\r\n".to_vec();
        let mut server = LineCodec::new(Side::Server);
        let mut buf = BytesMut::new();
        server.encode(&line, &mut buf).unwrap();
        assert_eq!(&buf[..], b"LST 7 11\r\nbob FLN C\r\n");
        let mut codec = LineCodec::new(Side::Client);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Ok(line)));
        let bad = Line::new("CHG", TrId(1), ["a b".to_owned()]);
        assert!(matches!(
            codec.encode(bad, &mut buf),
            Err(CodecError::Encode(_))
        ));
    }
}
