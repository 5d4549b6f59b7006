//! Validating a datagram as a STUN message, and reading its attributes without copying.

use super::attribute::{RawAttribute, attr};
use super::header::{Class, HEADER_LEN, Method, TransactionId, decode_message_type};
use super::{FINGERPRINT_XOR, crc32};

/// Why a datagram is not a well-formed STUN message.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than the 20-byte header.
    #[error("shorter than a STUN header")]
    TooShort,
    /// The two top bits are not zero, so this is not STUN (RFC 7983 demultiplexing).
    #[error("not a STUN message")]
    NotStun,
    /// The header length is not a multiple of four.
    #[error("message length {0} is not a multiple of 4")]
    UnalignedLength(usize),
    /// The header length disagrees with the datagram size.
    #[error("header says {header} bytes of attributes, datagram has {actual}")]
    LengthMismatch {
        /// Attribute bytes announced by the header.
        header: usize,
        /// Attribute bytes present.
        actual: usize,
    },
    /// An attribute runs past the end of the message.
    #[error("attribute 0x{0:04x} runs past the end of the message")]
    AttributeOverflow(u16),
    /// An attribute follows FINGERPRINT, which must be last.
    #[error("FINGERPRINT is not the last attribute")]
    FingerprintNotLast,
    /// FINGERPRINT does not match the message.
    #[error("FINGERPRINT does not match")]
    FingerprintMismatch,
}

/// Total message size announced by a header (20 + length), for stream framing (RFC 8489
/// section 6.2.2). `None` if the bytes cannot start a STUN message.
pub fn message_length(header: &[u8]) -> Option<usize> {
    if header.len() < 4 || header[0] & 0xC0 != 0 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    (len % 4 == 0).then_some(HEADER_LEN + len)
}

/// A validated STUN message borrowing its datagram.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    method: Method,
    class: Class,
    transaction_id: TransactionId,
    xor_key: [u8; 16],
    integrity_at: Option<usize>,
    fingerprint_at: Option<usize>,
}

impl<'a> Message<'a> {
    /// Validates `buf` as exactly one STUN message: header, attribute framing, and FINGERPRINT
    /// if present. Never panics and never allocates, whatever the input.
    pub fn parse(buf: &'a [u8]) -> Result<Self, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::TooShort);
        }
        if buf[0] & 0xC0 != 0 {
            return Err(DecodeError::NotStun);
        }
        let (method, class) = decode_message_type(u16::from_be_bytes([buf[0], buf[1]]));
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if len % 4 != 0 {
            return Err(DecodeError::UnalignedLength(len));
        }
        if HEADER_LEN + len != buf.len() {
            return Err(DecodeError::LengthMismatch {
                header: len,
                actual: buf.len() - HEADER_LEN,
            });
        }
        let mut xor_key = [0u8; 16];
        xor_key.copy_from_slice(&buf[4..HEADER_LEN]);
        let transaction_id = TransactionId::from_header_tail(&xor_key);

        let mut integrity_at = None;
        let mut fingerprint_at = None;
        let mut pos = HEADER_LEN;
        while pos < buf.len() {
            // The length is a multiple of 4 and so is `pos`, so 4 header bytes are present.
            let typ = u16::from_be_bytes([buf[pos], buf[pos + 1]]);
            let value_len = usize::from(u16::from_be_bytes([buf[pos + 2], buf[pos + 3]]));
            if fingerprint_at.is_some() {
                return Err(DecodeError::FingerprintNotLast);
            }
            let next = pos + 4 + value_len.next_multiple_of(4);
            if next > buf.len() {
                return Err(DecodeError::AttributeOverflow(typ));
            }
            match typ {
                attr::MESSAGE_INTEGRITY if integrity_at.is_none() => integrity_at = Some(pos),
                attr::FINGERPRINT => {
                    let value = &buf[pos + 4..pos + 4 + value_len];
                    let stated =
                        <[u8; 4]>::try_from(value).map_err(|_| DecodeError::FingerprintMismatch)?;
                    if u32::from_be_bytes(stated) != crc32(&buf[..pos]) ^ FINGERPRINT_XOR {
                        return Err(DecodeError::FingerprintMismatch);
                    }
                    fingerprint_at = Some(pos);
                }
                _ => {}
            }
            pos = next;
        }
        Ok(Self {
            buf,
            method,
            class,
            transaction_id,
            xor_key,
            integrity_at,
            fingerprint_at,
        })
    }

    /// The method (Binding, ...).
    pub fn method(&self) -> Method {
        self.method
    }

    /// Request, indication, success or error response.
    pub fn class(&self) -> Class {
        self.class
    }

    /// The transaction id, in the form the sender used.
    pub fn transaction_id(&self) -> TransactionId {
        self.transaction_id
    }

    /// Whether this is a classic RFC 3489 message (no magic cookie).
    pub fn is_classic(&self) -> bool {
        self.transaction_id.is_classic()
    }

    /// The whole message as received.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Whether the message ends with a (valid) FINGERPRINT.
    pub fn has_fingerprint(&self) -> bool {
        self.fingerprint_at.is_some()
    }

    /// Byte offset of the first MESSAGE-INTEGRITY attribute, if any.
    pub(crate) fn integrity_offset(&self) -> Option<usize> {
        self.integrity_at
    }

    /// The attributes a receiver may act on: everything up to and including the first
    /// MESSAGE-INTEGRITY, then FINGERPRINT (RFC 8489 section 14.5: anything else after
    /// MESSAGE-INTEGRITY is ignored).
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            buf: self.buf,
            pos: HEADER_LEN,
            integrity_at: self.integrity_at,
            xor_key: self.xor_key,
        }
    }

    /// The first attribute of this type, if any (among those [`Message::attributes`] yields).
    pub fn get(&self, typ: u16) -> Option<RawAttribute<'a>> {
        self.attributes().find(|a| a.typ == typ)
    }
}

/// Iterator over a message's attributes; see [`Message::attributes`].
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    buf: &'a [u8],
    pos: usize,
    integrity_at: Option<usize>,
    xor_key: [u8; 16],
}

impl<'a> Iterator for Attributes<'a> {
    type Item = RawAttribute<'a>;

    fn next(&mut self) -> Option<RawAttribute<'a>> {
        loop {
            let start = self.pos;
            let header = self.buf.get(start..start + 4)?;
            let typ = u16::from_be_bytes([header[0], header[1]]);
            let value_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let value = self.buf.get(start + 4..start + 4 + value_len)?;
            self.pos = start + 4 + value_len.next_multiple_of(4);
            let after_integrity = self.integrity_at.is_some_and(|mi| start > mi);
            if after_integrity && typ != attr::FINGERPRINT {
                continue;
            }
            return Some(RawAttribute {
                typ,
                value,
                xor_key: self.xor_key,
            });
        }
    }
}
