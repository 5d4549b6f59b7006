//! Encoding and strict decoding of the transfer's control frames.
//!
//! The layouts are tabulated in the [module docs](super#wire-format). Decoding never panics,
//! allocates only for the name and refusal text, and rejects anything it does not fully
//! understand: an unknown version or kind, a short or over-long body, bytes after the last
//! field, invalid UTF-8.

use std::str::Utf8Error;

use thiserror::Error;

use super::name::MAX_NAME_LEN;

/// The protocol version every frame carries; a receiver of another version refuses the frame.
pub const VERSION: u8 = 1;
/// Largest frame body (version byte onwards). Control frames are small; the limit bounds what
/// a peer can make us buffer before we have checked anything.
pub const MAX_FRAME_BODY: usize = 1024;
/// Length of the big-endian length prefix.
pub const LEN_PREFIX: usize = 2;
/// Longest refusal text, in bytes.
pub const MAX_DETAIL_LEN: usize = 512;

const KIND_FILE_HEADER: u8 = 0x01;
const KIND_END: u8 = 0x02;
const KIND_ACCEPT: u8 = 0x03;
const KIND_REFUSE: u8 = 0x04;
const KIND_TRAILER: u8 = 0x05;
const KIND_ACK: u8 = 0x06;
const KIND_END_ACK: u8 = 0x07;

/// What identifies one version of a source file, so that a partial copy is resumed only
/// from the same content: its size and modification time.
///
/// A changed file almost always changes one of them; the final SHA-256 catches the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResumeKey {
    /// Size in bytes; also the number of bytes the sender will send in total.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch, 0 if unknown.
    pub modified_ns: u64,
}

const SIDECAR_MAGIC: &[u8; 4] = b"P2PK";
/// Length of [`ResumeKey::to_sidecar`]'s output.
pub const SIDECAR_LEN: usize = 4 + 1 + 8 + 8;

impl ResumeKey {
    /// The bytes of the receiver's sidecar file: magic `P2PK`, [`VERSION`], size and
    /// modification time, big-endian.
    pub fn to_sidecar(&self) -> [u8; SIDECAR_LEN] {
        let mut out = [0u8; SIDECAR_LEN];
        out[..4].copy_from_slice(SIDECAR_MAGIC);
        out[4] = VERSION;
        out[5..13].copy_from_slice(&self.size.to_be_bytes());
        out[13..].copy_from_slice(&self.modified_ns.to_be_bytes());
        out
    }

    /// Parses a sidecar; `None` for anything else (another version, a truncated file), which
    /// the receiver treats as "no resumable partial".
    pub fn from_sidecar(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != SIDECAR_LEN || &bytes[..4] != SIDECAR_MAGIC || bytes[4] != VERSION {
            return None;
        }
        let mut r = Reader(&bytes[5..]);
        Some(Self {
            size: r.u64().ok()?,
            modified_ns: r.u64().ok()?,
        })
    }
}

/// Why the receiver refuses a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// The name fails [`validate_name`](super::validate_name).
    BadName,
    /// Something (a file, a directory, a symlink) already has that name in the output
    /// directory; the receiver never overwrites.
    Exists,
    /// The receiver could not prepare the file (permissions, disk full, ...).
    Io,
    /// A code from a newer version, kept so that it can be reported.
    Other(u8),
}

impl RefuseReason {
    fn code(self) -> u8 {
        match self {
            Self::BadName => 1,
            Self::Exists => 2,
            Self::Io => 3,
            Self::Other(c) => c,
        }
    }

    fn from_code(code: u8) -> Self {
        match code {
            1 => Self::BadName,
            2 => Self::Exists,
            3 => Self::Io,
            c => Self::Other(c),
        }
    }
}

impl std::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadName => f.write_str("bad name"),
            Self::Exists => f.write_str("already exists"),
            Self::Io => f.write_str("receiver I/O error"),
            Self::Other(c) => write!(f, "reason {c}"),
        }
    }
}

/// The receiver's verdict on a whole file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Hash matched; the file is in place under its name.
    Ok,
    /// The SHA-256 of what the receiver has differs from the trailer; the partial was deleted.
    HashMismatch,
}

/// One control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Sender, first frame of a file stream: the file's name and resume key.
    FileHeader {
        /// Base name of the file, UTF-8, at most [`MAX_NAME_LEN`] bytes (semantics checked
        /// separately by [`validate_name`](super::validate_name)).
        name: String,
        /// Size and modification time.
        key: ResumeKey,
    },
    /// Sender, only frame of the last stream: no more files.
    End {
        /// How many files the sender sent in this session.
        files: u32,
    },
    /// Receiver: send from `offset` on (0, or the length of a matching partial).
    Accept {
        /// Bytes the receiver already has.
        offset: u64,
    },
    /// Receiver: will not take this file.
    Refuse {
        /// Machine-readable reason.
        reason: RefuseReason,
        /// Human-readable detail, at most [`MAX_DETAIL_LEN`] bytes.
        detail: String,
    },
    /// Sender, after the data: SHA-256 of the whole file, prefix included.
    Trailer {
        /// The digest.
        sha256: [u8; 32],
    },
    /// Receiver, last frame of a file stream.
    Ack {
        /// Whether the file is in place.
        status: AckStatus,
    },
    /// Receiver: acknowledges [`Message::End`].
    EndAck {
        /// Files the receiver completed in this session.
        files: u32,
    },
}

/// A frame that cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The length prefix announces more than [`MAX_FRAME_BODY`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLong {
        /// Announced or encoded length.
        len: usize,
        /// [`MAX_FRAME_BODY`].
        max: usize,
    },
    /// Frame of a protocol version we do not speak.
    #[error("unsupported transfer protocol version {0}")]
    UnsupportedVersion(u8),
    /// Unknown frame kind.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// The body ends before its last field.
    #[error("frame body truncated")]
    Truncated,
    /// Bytes after the last field.
    #[error("{0} unexpected bytes after the frame's fields")]
    TrailingBytes(usize),
    /// A name or text field longer than its limit.
    #[error("field of {len} bytes exceeds the {max}-byte limit")]
    FieldTooLong {
        /// Length of the field.
        len: usize,
        /// Its limit.
        max: usize,
    },
    /// A name or text field that is not UTF-8.
    #[error("text field is not UTF-8")]
    Utf8(#[source] Utf8Error),
    /// An ack status byte other than 0 or 1.
    #[error("unknown ack status {0}")]
    UnknownStatus(u8),
}

impl Message {
    /// Appends the frame (length prefix included) to `out`. Fails only on an over-long name
    /// or detail, leaving `out` as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let start = out.len();
        out.extend_from_slice(&[0, 0, VERSION]);
        let result = self.encode_fields(out);
        let body_len = out.len() - start - LEN_PREFIX;
        if let Err(e) = result {
            out.truncate(start);
            return Err(e);
        }
        if body_len > MAX_FRAME_BODY {
            out.truncate(start);
            return Err(WireError::FrameTooLong {
                len: body_len,
                max: MAX_FRAME_BODY,
            });
        }
        // body_len <= MAX_FRAME_BODY fits u16.
        out[start..start + LEN_PREFIX].copy_from_slice(&(body_len as u16).to_be_bytes());
        Ok(())
    }

    /// The frame as a new vector; see [`Message::encode`].
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::with_capacity(64);
        self.encode(&mut out)?;
        Ok(out)
    }

    fn encode_fields(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        match self {
            Self::FileHeader { name, key } => {
                out.push(KIND_FILE_HEADER);
                out.extend_from_slice(&key.size.to_be_bytes());
                out.extend_from_slice(&key.modified_ns.to_be_bytes());
                put_text(out, name, MAX_NAME_LEN)?;
            }
            Self::End { files } => {
                out.push(KIND_END);
                out.extend_from_slice(&files.to_be_bytes());
            }
            Self::Accept { offset } => {
                out.push(KIND_ACCEPT);
                out.extend_from_slice(&offset.to_be_bytes());
            }
            Self::Refuse { reason, detail } => {
                out.push(KIND_REFUSE);
                out.push(reason.code());
                put_text(out, detail, MAX_DETAIL_LEN)?;
            }
            Self::Trailer { sha256 } => {
                out.push(KIND_TRAILER);
                out.extend_from_slice(sha256);
            }
            Self::Ack { status } => {
                out.push(KIND_ACK);
                out.push(match status {
                    AckStatus::Ok => 0,
                    AckStatus::HashMismatch => 1,
                });
            }
            Self::EndAck { files } => {
                out.push(KIND_END_ACK);
                out.extend_from_slice(&files.to_be_bytes());
            }
        }
        Ok(())
    }
}

fn put_text(out: &mut Vec<u8>, text: &str, max: usize) -> Result<(), WireError> {
    if text.len() > max {
        return Err(WireError::FieldTooLong {
            len: text.len(),
            max,
        });
    }
    // text.len() <= max <= MAX_FRAME_BODY fits u16.
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// The body length a length prefix announces, checked against [`MAX_FRAME_BODY`]. For
/// drivers that read the prefix and then exactly the body.
pub fn body_len(prefix: [u8; LEN_PREFIX]) -> Result<usize, WireError> {
    let len = usize::from(u16::from_be_bytes(prefix));
    if len > MAX_FRAME_BODY {
        return Err(WireError::FrameTooLong {
            len,
            max: MAX_FRAME_BODY,
        });
    }
    Ok(len)
}

/// Decodes the first frame in `buf`: `Ok(None)` if `buf` does not hold a whole frame yet,
/// otherwise the message and the bytes it took.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Message, usize)>, WireError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let len = body_len([prefix[0], prefix[1]])?;
    let Some(body) = buf.get(LEN_PREFIX..LEN_PREFIX + len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, LEN_PREFIX + len)))
}

/// Decodes one frame body (version byte onwards), all of it.
pub fn decode_body(body: &[u8]) -> Result<Message, WireError> {
    if body.len() > MAX_FRAME_BODY {
        return Err(WireError::FrameTooLong {
            len: body.len(),
            max: MAX_FRAME_BODY,
        });
    }
    let mut r = Reader(body);
    let version = r.u8()?;
    if version != VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    let message = match r.u8()? {
        KIND_FILE_HEADER => {
            let size = r.u64()?;
            let modified_ns = r.u64()?;
            let name = r.text(MAX_NAME_LEN)?;
            Message::FileHeader {
                name,
                key: ResumeKey { size, modified_ns },
            }
        }
        KIND_END => Message::End { files: r.u32()? },
        KIND_ACCEPT => Message::Accept { offset: r.u64()? },
        KIND_REFUSE => Message::Refuse {
            reason: RefuseReason::from_code(r.u8()?),
            detail: r.text(MAX_DETAIL_LEN)?,
        },
        KIND_TRAILER => {
            let mut sha256 = [0u8; 32];
            sha256.copy_from_slice(r.take(32)?);
            Message::Trailer { sha256 }
        }
        KIND_ACK => Message::Ack {
            status: match r.u8()? {
                0 => AckStatus::Ok,
                1 => AckStatus::HashMismatch,
                s => return Err(WireError::UnknownStatus(s)),
            },
        },
        KIND_END_ACK => Message::EndAck { files: r.u32()? },
        kind => return Err(WireError::UnknownKind(kind)),
    };
    if !r.0.is_empty() {
        return Err(WireError::TrailingBytes(r.0.len()));
    }
    Ok(message)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn text(&mut self, max: usize) -> Result<String, WireError> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        let len = usize::from(u16::from_be_bytes(b));
        if len > max {
            return Err(WireError::FieldTooLong { len, max });
        }
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(WireError::Utf8)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn header(name: &str) -> Message {
        Message::FileHeader {
            name: name.to_owned(),
            key: ResumeKey {
                size: 5,
                modified_ns: 7,
            },
        }
    }

    #[test]
    fn file_header_layout() {
        let bytes = header("ab").to_vec().unwrap();
        let mut expected = vec![0, 22, VERSION, KIND_FILE_HEADER];
        expected.extend_from_slice(&5u64.to_be_bytes());
        expected.extend_from_slice(&7u64.to_be_bytes());
        expected.extend_from_slice(&[0, 2, b'a', b'b']);
        assert_eq!(bytes, expected);
        assert_eq!(decode_frame(&bytes).unwrap(), Some((header("ab"), 24)));
    }

    #[test]
    fn incomplete_frames_ask_for_more() {
        let bytes = header("name").to_vec().unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(decode_frame(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn strict_decoding() {
        assert_eq!(
            decode_body(&[2, KIND_END, 0, 0, 0, 1]),
            Err(WireError::UnsupportedVersion(2))
        );
        assert_eq!(
            decode_body(&[VERSION, 0x7f]),
            Err(WireError::UnknownKind(0x7f))
        );
        assert_eq!(
            decode_body(&[VERSION, KIND_END, 0, 0, 1]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            decode_body(&[VERSION, KIND_END, 0, 0, 0, 1, 9]),
            Err(WireError::TrailingBytes(1))
        );
        assert_eq!(
            decode_body(&[VERSION, KIND_ACK, 2]),
            Err(WireError::UnknownStatus(2))
        );
        assert!(matches!(
            decode_body(&[VERSION, KIND_REFUSE, 1, 0, 1, 0xff]),
            Err(WireError::Utf8(_))
        ));
        assert_eq!(
            body_len([0xff, 0xff]),
            Err(WireError::FrameTooLong {
                len: 0xffff,
                max: MAX_FRAME_BODY
            })
        );
        let mut long_name = vec![VERSION, KIND_FILE_HEADER];
        long_name.extend_from_slice(&[0; 16]);
        long_name.extend_from_slice(&((MAX_NAME_LEN + 1) as u16).to_be_bytes());
        long_name.resize(long_name.len() + MAX_NAME_LEN + 1, b'x');
        assert_eq!(
            decode_body(&long_name),
            Err(WireError::FieldTooLong {
                len: MAX_NAME_LEN + 1,
                max: MAX_NAME_LEN
            })
        );
    }

    #[test]
    fn over_long_fields_are_not_encoded() {
        let mut out = vec![1, 2, 3];
        assert!(matches!(
            header(&"x".repeat(MAX_NAME_LEN + 1)).encode(&mut out),
            Err(WireError::FieldTooLong { .. })
        ));
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn unknown_refuse_reasons_survive() {
        let m = Message::Refuse {
            reason: RefuseReason::Other(200),
            detail: String::new(),
        };
        let bytes = m.to_vec().unwrap();
        assert_eq!(decode_frame(&bytes).unwrap(), Some((m, bytes.len())));
    }

    #[test]
    fn sidecar_round_trip_and_rejects() {
        let key = ResumeKey {
            size: u64::MAX,
            modified_ns: 1_700_000_000_123_456_789,
        };
        let bytes = key.to_sidecar();
        assert_eq!(ResumeKey::from_sidecar(&bytes), Some(key));
        assert_eq!(ResumeKey::from_sidecar(&bytes[..SIDECAR_LEN - 1]), None);
        let mut other = bytes;
        other[4] = 2;
        assert_eq!(ResumeKey::from_sidecar(&other), None);
        assert_eq!(ResumeKey::from_sidecar(b"garbage garbage garbage"), None);
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let key = (any::<u64>(), any::<u64>())
            .prop_map(|(size, modified_ns)| ResumeKey { size, modified_ns });
        prop_oneof![
            ("\\PC{0,50}", key).prop_map(|(name, key)| Message::FileHeader { name, key }),
            any::<u32>().prop_map(|files| Message::End { files }),
            any::<u64>().prop_map(|offset| Message::Accept { offset }),
            (any::<u8>(), "\\PC{0,100}").prop_map(|(code, detail)| Message::Refuse {
                reason: RefuseReason::from_code(code),
                detail
            }),
            any::<[u8; 32]>().prop_map(|sha256| Message::Trailer { sha256 }),
            prop_oneof![Just(AckStatus::Ok), Just(AckStatus::HashMismatch)]
                .prop_map(|status| Message::Ack { status }),
            any::<u32>().prop_map(|files| Message::EndAck { files }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(messages in proptest::collection::vec(arb_message(), 1..5)) {
            let mut stream = Vec::new();
            for m in &messages {
                m.encode(&mut stream).unwrap();
            }
            let mut rest = &stream[..];
            for m in &messages {
                let (decoded, used) = decode_frame(rest).unwrap().unwrap();
                prop_assert_eq!(&decoded, m);
                rest = &rest[used..];
            }
            prop_assert!(rest.is_empty());
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_frame(&bytes);
            let _ = decode_body(&bytes);
        }
    }
}
