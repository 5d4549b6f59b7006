//! Rendezvous lines over [`shared::rendezvous::wire`], for either side of the connection.

use bytes::BytesMut;
use shared::rendezvous::wire::{self, Direction, EncodeError, FrameError, Line};
use tokio_util::codec::{Decoder, Encoder};

/// Which side of the connection the codec runs on: it decides which lines carry a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The server reads requests (none carries a payload) and writes answers and pushes.
    Server,
    /// The client reads answers and pushes, payloads included, and writes requests.
    Client,
}

impl Side {
    fn incoming(self) -> Direction {
        match self {
            Side::Server => Direction::ToServer,
            Side::Client => Direction::ToClient,
        }
    }

    fn outgoing(self) -> Direction {
        match self {
            Side::Server => Direction::ToClient,
            Side::Client => Direction::ToServer,
        }
    }
}

/// Frames rendezvous lines (and `LST` payloads) on a byte stream.
///
/// Decoding yields `Ok(line)` for a line and `Err(FrameError)` for a line the framing refused.
/// A [`FrameError::Syntax`] has been consumed and decoding goes on (the server answers it, the
/// client skips it); after a fatal error (see [`FrameError::is_fatal`]) the stream cannot be
/// resynchronised: the codec discards whatever arrives after it and the reader should stop.
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

    /// The side this codec runs on.
    pub fn side(&self) -> Side {
        self.side
    }
}

/// Why a stream could not be read or a line could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A line we were asked to send breaks the framing rules (nothing was written).
    #[error("cannot encode line: {0}")]
    Encode(#[from] EncodeError),
}

impl Decoder for LineCodec {
    type Item = Result<Line, FrameError>;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        if self.failed {
            // After a fatal error nothing more can be framed; discard what arrives.
            buf.clear();
            return Ok(None);
        }
        match wire::decode(buf, self.side.incoming()) {
            Ok(Some(line)) => Ok(Some(Ok(line))),
            Ok(None) => Ok(None),
            Err(e) => {
                self.failed = e.is_fatal();
                Ok(Some(Err(e)))
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
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

    fn encode(&mut self, line: Line, out: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&line, out)
    }
}

impl Encoder<&Line> for LineCodec {
    type Error = CodecError;

    fn encode(&mut self, line: &Line, out: &mut BytesMut) -> Result<(), CodecError> {
        wire::encode(line, out, self.side.outgoing())?;
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

    /// Feeds `bytes` one at a time, as the slowest network would.
    fn decode_bytewise(side: Side, bytes: &[u8]) -> Vec<Result<Line, FrameError>> {
        let mut codec = LineCodec::new(side);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for &b in bytes {
            buf.extend_from_slice(&[b]);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                out.push(item);
            }
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
        // The client side skips the same way.
        let got = decode_all(Side::Client, b"bad line\r\nNLN 0 BSY bob\r\n");
        assert!(matches!(got[0], Err(FrameError::Syntax(_))));
        let nln = got[1].as_ref().unwrap();
        assert_eq!((nln.command.as_str(), nln.trid), ("NLN", TrId(0)));
    }

    #[test]
    fn a_fatal_error_ends_decoding() {
        let mut bytes = vec![b'A'; wire::MAX_LINE + 10];
        bytes.extend_from_slice(b"\r\nPNG 1\r\n");
        let got = decode_all(Side::Server, &bytes);
        assert_eq!(got, vec![Err(FrameError::LineTooLong)]);
        // On the client side a bad payload length cannot be skipped either.
        let got = decode_all(Side::Client, b"NLN 0 BSY bob\r\nLST 3 x\r\nPNG 0\r\n");
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].is_ok());
        assert_eq!(got[1], Err(FrameError::BadPayload));
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
    fn what_one_side_writes_the_other_reads() {
        // Server to client, with a payload.
        let mut line = Line::new("LST", TrId(7), []);
        line.payload = b"bob FLN C\r\n".to_vec();
        let mut server = LineCodec::new(Side::Server);
        let mut buf = BytesMut::new();
        server.encode(&line, &mut buf).unwrap();
        assert_eq!(&buf[..], b"LST 7 11\r\nbob FLN C\r\n");
        assert_eq!(decode_bytewise(Side::Client, &buf), vec![Ok(line)]);
        // Client to server: a request never carries a payload.
        let mut client = LineCodec::new(Side::Client);
        let mut buf = BytesMut::new();
        client
            .encode(Line::new("LST", TrId(7), []), &mut buf)
            .unwrap();
        client
            .encode(Line::new("CHG", TrId(8), ["NLN".to_owned()]), &mut buf)
            .unwrap();
        assert_eq!(&buf[..], b"LST 7\r\nCHG 8 NLN\r\n");
        let got = decode_bytewise(Side::Server, &buf);
        assert_eq!(
            got,
            vec![
                Ok(Line::new("LST", TrId(7), [])),
                Ok(Line::new("CHG", TrId(8), ["NLN".to_owned()]))
            ]
        );
    }

    #[test]
    fn unencodable_lines_are_refused_and_nothing_is_written() {
        for side in [Side::Server, Side::Client] {
            let mut codec = LineCodec::new(side);
            let mut buf = BytesMut::new();
            let bad = Line::new("CHG", TrId(1), ["a b".to_owned()]);
            assert!(matches!(
                codec.encode(bad, &mut buf),
                Err(CodecError::Encode(_))
            ));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn truncated_input_waits_and_is_dropped_at_eof() {
        for side in [Side::Server, Side::Client] {
            let mut codec = LineCodec::new(side);
            let mut buf = BytesMut::from(&b"PNG 1"[..]);
            assert!(codec.decode(&mut buf).unwrap().is_none());
            assert_eq!(
                &buf[..],
                b"PNG 1",
                "a partial line is kept until it completes"
            );
            assert!(codec.decode_eof(&mut buf).unwrap().is_none());
            assert!(buf.is_empty());
        }
        // A payload cut short is not a line yet.
        let mut codec = LineCodec::new(Side::Client);
        let mut buf = BytesMut::from(&b"LST 7 11\r\nbob F"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic generator: varied bytes, many CR/LF and spaces.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let mut bytes = Vec::new();
            let len = (state % 300) as usize;
            for _ in 0..len {
                state |= 1;
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(match state % 8 {
                    0 => b'\r',
                    1 => b'\n',
                    2 => b' ',
                    3 => b'0' + (state >> 8) as u8 % 10,
                    _ => (state >> 16) as u8,
                });
            }
            for side in [Side::Server, Side::Client] {
                let _ = decode_all(side, &bytes);
                let _ = decode_bytewise(side, &bytes);
            }
        }
    }
}
