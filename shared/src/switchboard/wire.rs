//! Framing of the switchboard protocol: a 2-byte big-endian length, then that many bytes whose
//! first byte is the frame type (the table is in the [module docs](super)).
//!
//! Sans-IO: [`decode`] takes what has arrived so far in a [`BytesMut`] and returns one whole
//! [`Frame`], asks for more bytes (`Ok(None)`, nothing consumed), or reports a [`WireError`].
//! Every error is fatal: the switchboard answers with an `ERROR` frame and closes, so there is
//! no resynchronisation. A `DATA` payload is split off the receive buffer without copying.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::rendezvous::SessionId;

/// Bytes in the length prefix.
pub const LEN_PREFIX: usize = 2;
/// Bytes of framing in front of a `DATA` payload: the length prefix and the type byte.
pub const DATA_OVERHEAD: usize = LEN_PREFIX + 1;
/// The largest `DATA` payload the protocol allows (a frame is then 65,001 bytes long).
pub const MAX_DATA: usize = 65_000;
/// The longest `ERROR` text; longer texts are cut by [`encode`].
pub const MAX_ERROR_TEXT: usize = 128;
/// The protocol version a `JOIN` carries.
pub const VERSION: u8 = 1;

/// The frame type bytes.
pub mod kind {
    /// Client to switchboard: join a session with a ticket.
    pub const JOIN: u8 = 0x01;
    /// Switchboard to client: the join succeeded.
    pub const JOINED: u8 = 0x02;
    /// Switchboard to client: the other peer has joined.
    pub const PEER_JOINED: u8 = 0x03;
    /// Switchboard to client: the other peer has left; the session is over.
    pub const PEER_LEFT: u8 = 0x04;
    /// Both directions: opaque bytes for the other peer.
    pub const DATA: u8 = 0x05;
    /// Switchboard to client: an error; the switchboard closes the connection after it.
    pub const ERROR: u8 = 0x06;
}

/// Length of a `JOIN` frame body after the type byte: version, session id, ticket.
const JOIN_BODY: usize = 1 + 16 + 16;

/// An `ERROR` code. The numbers are listed in the [module docs](super).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// A frame that does not parse (unknown type, wrong length, zero length).
    pub const BAD_FRAME: ErrorCode = ErrorCode(400);
    /// The ticket is unknown, used, expired or for another session (one answer for all).
    pub const TICKET_REFUSED: ErrorCode = ErrorCode(401);
    /// No `JOIN` within the join timeout.
    pub const JOIN_TIMEOUT: ErrorCode = ErrorCode(408);
    /// A well-formed frame that is not allowed now (a second `JOIN`, a server-only type).
    pub const UNEXPECTED: ErrorCode = ErrorCode(409);
    /// A frame longer than the switchboard accepts.
    pub const TOO_LARGE: ErrorCode = ErrorCode(413);
    /// A `JOIN` with a version the switchboard does not speak.
    pub const BAD_VERSION: ErrorCode = ErrorCode(426);
    /// Nothing was relayed for the idle timeout; the session is over.
    pub const IDLE: ErrorCode = ErrorCode(440);
    /// The other peer did not join in time; the session is over.
    pub const PEER_TIMEOUT: ErrorCode = ErrorCode(441);
    /// The session relayed its byte cap; the session is over.
    pub const BYTE_CAP: ErrorCode = ErrorCode(442);
    /// The switchboard is shutting down.
    pub const SHUTDOWN: ErrorCode = ErrorCode(503);
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One frame, in either direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Client to switchboard: join `session` with `ticket`.
    Join {
        /// The protocol version ([`VERSION`]).
        version: u8,
        /// The session id from the introduction (`sid=` of `ITR`).
        session: SessionId,
        /// The one-time ticket from the introduction (`ticket=` of `ITR`).
        ticket: [u8; 16],
    },
    /// Switchboard to client: the join succeeded.
    Joined {
        /// Whether the other peer is already in the session (else a [`Frame::PeerJoined`]
        /// follows when it arrives).
        peer_present: bool,
    },
    /// Switchboard to client: the other peer has joined; `DATA` now flows both ways.
    PeerJoined,
    /// Switchboard to client: the other peer has left. The session is over and the
    /// switchboard closes this connection too.
    PeerLeft,
    /// Both directions: opaque bytes, relayed unchanged to the other peer.
    Data(Bytes),
    /// Switchboard to client: an error; the switchboard closes the connection after it.
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// A short text for humans (clients go by the code).
        text: String,
    },
}

impl Frame {
    /// An `ERROR` frame.
    pub fn error(code: ErrorCode, text: &str) -> Frame {
        Frame::Error {
            code,
            text: text.to_owned(),
        }
    }

    /// How many bytes this frame takes on the wire, length prefix included.
    pub fn wire_len(&self) -> usize {
        LEN_PREFIX
            + 1
            + match self {
                Frame::Join { .. } => JOIN_BODY,
                Frame::Joined { .. } => 1,
                Frame::PeerJoined | Frame::PeerLeft => 0,
                Frame::Data(payload) => payload.len(),
                Frame::Error { text, .. } => 2 + cut_text(text).len(),
            }
    }
}

/// Why bytes could not be framed. All of them end the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A length prefix of zero (a frame always has a type byte).
    #[error("empty frame")]
    Empty,
    /// A frame longer than the receiver accepts.
    #[error("frame of {0} bytes is too long")]
    TooLarge(usize),
    /// An unknown type byte.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// A known type with a body of the wrong size or with a bad value.
    #[error("malformed frame of type {0:#04x}")]
    Malformed(u8),
}

/// Why a [`Frame`] could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A `DATA` payload over [`MAX_DATA`].
    #[error("DATA payload of {0} bytes is over {MAX_DATA}")]
    TooLarge(usize),
}

/// The longest prefix of `text` that fits [`MAX_ERROR_TEXT`] and ends on a char boundary.
fn cut_text(text: &str) -> &str {
    let mut end = text.len().min(MAX_ERROR_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The framing in front of a `DATA` payload of `len` bytes, or `None` if `len` is over
/// [`MAX_DATA`]. Writers that send the payload [`Bytes`] as its own buffer (vectored writes)
/// use this instead of copying the payload through [`encode`].
pub fn data_header(len: usize) -> Option<[u8; DATA_OVERHEAD]> {
    if len > MAX_DATA {
        return None;
    }
    // Cannot fail: MAX_DATA + 1 fits in a u16.
    let frame_len = u16::try_from(len + 1).ok()?.to_be_bytes();
    Some([frame_len[0], frame_len[1], kind::DATA])
}

/// Appends `frame` to `out`. Nothing is written on error. An `ERROR` text longer than
/// [`MAX_ERROR_TEXT`] bytes is cut.
pub fn encode(frame: &Frame, out: &mut BytesMut) -> Result<(), EncodeError> {
    if let Frame::Data(payload) = frame {
        let header = data_header(payload.len()).ok_or(EncodeError::TooLarge(payload.len()))?;
        out.reserve(header.len() + payload.len());
        out.put_slice(&header);
        out.put_slice(payload);
        return Ok(());
    }
    let total = frame.wire_len();
    out.reserve(total);
    // Control frames are at most 2 + 1 + 2 + MAX_ERROR_TEXT bytes, so the length fits.
    out.put_u16((total - LEN_PREFIX) as u16);
    match frame {
        Frame::Join {
            version,
            session,
            ticket,
        } => {
            out.put_u8(kind::JOIN);
            out.put_u8(*version);
            out.put_slice(&session.0);
            out.put_slice(ticket);
        }
        Frame::Joined { peer_present } => {
            out.put_u8(kind::JOINED);
            out.put_u8(u8::from(*peer_present));
        }
        Frame::PeerJoined => out.put_u8(kind::PEER_JOINED),
        Frame::PeerLeft => out.put_u8(kind::PEER_LEFT),
        Frame::Error { code, text } => {
            out.put_u8(kind::ERROR);
            out.put_u16(code.0);
            out.put_slice(cut_text(text).as_bytes());
        }
        Frame::Data(_) => {}
    }
    Ok(())
}

/// Takes one whole frame off the front of `buf`, accepting `DATA` payloads of at most
/// `max_data` bytes (capped at [`MAX_DATA`]).
///
/// `Ok(None)`: not enough bytes yet; nothing was consumed, and room for the whole frame has been
/// reserved. `Err`: the stream cannot be framed; the caller closes the connection. Never panics,
/// whatever the bytes.
pub fn decode(buf: &mut BytesMut, max_data: usize) -> Result<Option<Frame>, WireError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    if len == 0 {
        return Err(WireError::Empty);
    }
    // The largest frame is a DATA frame; every control frame is smaller than 1 + MAX_DATA.
    let limit = max_data.clamp(2 + MAX_ERROR_TEXT, MAX_DATA) + 1;
    if len > limit {
        return Err(WireError::TooLarge(len));
    }
    if buf.len() < LEN_PREFIX + len {
        buf.reserve(LEN_PREFIX + len - buf.len());
        return Ok(None);
    }
    let ty = buf[LEN_PREFIX];
    let body_len = len - 1;
    if ty == kind::DATA {
        if body_len > max_data {
            return Err(WireError::TooLarge(len));
        }
        let mut frame = buf.split_to(LEN_PREFIX + len);
        frame.advance(DATA_OVERHEAD);
        return Ok(Some(Frame::Data(frame.freeze())));
    }
    let body = &buf[DATA_OVERHEAD..LEN_PREFIX + len];
    let frame = match ty {
        kind::JOIN => {
            let (Ok(session), Ok(ticket)) = (
                <[u8; 16]>::try_from(body.get(1..17).unwrap_or_default()),
                <[u8; 16]>::try_from(body.get(17..).unwrap_or_default()),
            ) else {
                return Err(WireError::Malformed(ty));
            };
            Frame::Join {
                version: body[0],
                session: SessionId(session),
                ticket,
            }
        }
        kind::JOINED => match body {
            [0] => Frame::Joined {
                peer_present: false,
            },
            [1] => Frame::Joined { peer_present: true },
            _ => return Err(WireError::Malformed(ty)),
        },
        kind::PEER_JOINED | kind::PEER_LEFT if !body.is_empty() => {
            return Err(WireError::Malformed(ty));
        }
        kind::PEER_JOINED => Frame::PeerJoined,
        kind::PEER_LEFT => Frame::PeerLeft,
        kind::ERROR => {
            let [hi, lo, text @ ..] = body else {
                return Err(WireError::Malformed(ty));
            };
            if text.len() > MAX_ERROR_TEXT {
                return Err(WireError::Malformed(ty));
            }
            Frame::Error {
                code: ErrorCode(u16::from_be_bytes([*hi, *lo])),
                text: String::from_utf8_lossy(text).into_owned(),
            }
        }
        other => return Err(WireError::UnknownType(other)),
    };
    buf.advance(LEN_PREFIX + len);
    Ok(Some(frame))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(frame: &Frame) -> BytesMut {
        let mut out = BytesMut::new();
        encode(frame, &mut out).unwrap();
        out
    }

    #[test]
    fn join_layout_is_the_documented_one() {
        let join = Frame::Join {
            version: VERSION,
            session: SessionId([0xaa; 16]),
            ticket: [0xbb; 16],
        };
        let bytes = encoded(&join);
        assert_eq!(bytes.len(), join.wire_len());
        assert_eq!(&bytes[..4], &[0, 34, kind::JOIN, VERSION]);
        assert_eq!(&bytes[4..20], &[0xaa; 16]);
        assert_eq!(&bytes[20..], &[0xbb; 16]);
        let error = encoded(&Frame::error(ErrorCode::TICKET_REFUSED, "ticket refused"));
        assert_eq!(&error[..5], &[0, 17, kind::ERROR, 0x01, 0x91]);
        assert_eq!(&error[5..], b"ticket refused");
        assert_eq!(
            &encoded(&Frame::Joined { peer_present: true })[..],
            &[0, 2, 2, 1]
        );
        assert_eq!(&encoded(&Frame::PeerLeft)[..], &[0, 1, 4]);
    }

    #[test]
    fn data_is_split_off_without_copying() {
        let mut buf = encoded(&Frame::Data(Bytes::from_static(b"hello")));
        buf.extend_from_slice(&[0, 1]);
        let start = buf.as_ptr();
        let Some(Frame::Data(payload)) = decode(&mut buf, MAX_DATA).unwrap() else {
            panic!("not DATA");
        };
        assert_eq!(&payload[..], b"hello");
        assert_eq!(payload.as_ptr(), start.wrapping_add(DATA_OVERHEAD));
        assert_eq!(&buf[..], &[0, 1], "the next frame's bytes are left");
        assert_eq!(decode(&mut buf, MAX_DATA), Ok(None));
    }

    #[test]
    fn limits_and_bad_frames() {
        let big = Frame::Data(Bytes::from(vec![7u8; 1001]));
        let mut buf = encoded(&big);
        assert_eq!(decode(&mut buf, 1000), Err(WireError::TooLarge(1002)));
        // The length alone is enough to refuse: no waiting for 65 KB that will be refused.
        let mut buf = BytesMut::from(&[0xff, 0xff][..]);
        assert_eq!(decode(&mut buf, MAX_DATA), Err(WireError::TooLarge(65_535)));
        let mut buf = BytesMut::from(&[0, 0][..]);
        assert_eq!(decode(&mut buf, MAX_DATA), Err(WireError::Empty));
        for (bytes, err) in [
            (&[0, 1, 0x7f][..], WireError::UnknownType(0x7f)),
            (&[0, 2, kind::JOIN, 1], WireError::Malformed(kind::JOIN)),
            (
                &[0, 3, kind::JOINED, 1, 0],
                WireError::Malformed(kind::JOINED),
            ),
            (&[0, 2, kind::JOINED, 2], WireError::Malformed(kind::JOINED)),
            (
                &[0, 2, kind::PEER_LEFT, 0],
                WireError::Malformed(kind::PEER_LEFT),
            ),
            (&[0, 2, kind::ERROR, 1], WireError::Malformed(kind::ERROR)),
        ] {
            let mut buf = BytesMut::from(bytes);
            assert_eq!(decode(&mut buf, MAX_DATA), Err(err), "{bytes:?}");
        }
        let too_big = Frame::Data(Bytes::from(vec![0; MAX_DATA + 1]));
        let mut out = BytesMut::new();
        assert_eq!(
            encode(&too_big, &mut out),
            Err(EncodeError::TooLarge(MAX_DATA + 1))
        );
        assert!(out.is_empty());
        assert_eq!(data_header(MAX_DATA), Some([0xfd, 0xe9, kind::DATA]));
    }

    #[test]
    fn long_error_texts_are_cut_on_a_char_boundary() {
        let text = "é".repeat(100);
        let bytes = encoded(&Frame::error(ErrorCode::SHUTDOWN, &text));
        let Some(Frame::Error { text: got, .. }) = decode(&mut bytes.clone(), 0).unwrap() else {
            panic!("not ERROR");
        };
        assert_eq!(got, "é".repeat(64));
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (any::<u8>(), any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(v, s, t)| {
                Frame::Join {
                    version: v,
                    session: SessionId(s),
                    ticket: t,
                }
            }),
            any::<bool>().prop_map(|peer_present| Frame::Joined { peer_present }),
            Just(Frame::PeerJoined),
            Just(Frame::PeerLeft),
            proptest::collection::vec(any::<u8>(), 0..300).prop_map(|d| Frame::Data(d.into())),
            (any::<u16>(), "[ -~]{0,128}").prop_map(|(c, t)| Frame::Error {
                code: ErrorCode(c),
                text: t
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip_byte_by_byte(frames in proptest::collection::vec(arb_frame(), 1..6)) {
            let mut wire = BytesMut::new();
            for f in &frames {
                encode(f, &mut wire).unwrap();
            }
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for b in wire.iter() {
                buf.put_u8(*b);
                if let Some(f) = decode(&mut buf, MAX_DATA).unwrap() {
                    got.push(f);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400),
                                max in 0usize..70_000) {
            let mut buf = BytesMut::from(&bytes[..]);
            let mut steps = 0;
            while let Ok(Some(_)) = decode(&mut buf, max) {
                steps += 1;
                prop_assert!(steps <= bytes.len());
            }
        }

        #[test]
        fn truncated_frames_wait(frame in arb_frame(), cut in 0usize..400) {
            let wire = {
                let mut w = BytesMut::new();
                encode(&frame, &mut w).unwrap();
                w
            };
            let cut = cut.min(wire.len() - 1);
            let mut buf = BytesMut::from(&wire[..cut]);
            prop_assert_eq!(decode(&mut buf, MAX_DATA), Ok(None));
            prop_assert_eq!(buf.len(), cut);
        }
    }
}
