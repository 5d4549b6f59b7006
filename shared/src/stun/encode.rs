//! Writing a STUN message into a caller's buffer, one attribute at a time.

use std::net::SocketAddr;

use super::address::{address_value_len, write_address};
use super::attribute::{ChangeRequest, attr};
use super::header::{Class, HEADER_LEN, Method, TransactionId, encode_message_type};
use super::integrity::integrity_hmac;
use super::{FINGERPRINT_XOR, crc32};

/// Why a message could not be written.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small for the message.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// The message would exceed the 16-bit length field, or an attribute its 16-bit length.
    #[error("message or attribute too long")]
    TooLong,
    /// An error code outside 300..=699.
    #[error("error code {0} is outside 300..=699")]
    BadErrorCode(u16),
}

/// Writes one message into a borrowed buffer without allocating.
///
/// The header length is kept current after every attribute, so [`MessageWriter::as_bytes`] is a
/// valid message at any point and MESSAGE-INTEGRITY and FINGERPRINT can be computed over it.
#[derive(Debug)]
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    xor_key: [u8; 16],
    classic: bool,
}

impl<'b> MessageWriter<'b> {
    /// Starts a message of this method and class; the transaction id's form decides whether it
    /// is classic (RFC 3489) or modern (RFC 8489).
    pub fn new(
        buf: &'b mut [u8],
        method: Method,
        class: Class,
        transaction_id: TransactionId,
    ) -> Result<Self, EncodeError> {
        if buf.len() < HEADER_LEN {
            return Err(EncodeError::BufferTooSmall);
        }
        let xor_key = transaction_id.header_tail();
        buf[..2].copy_from_slice(&encode_message_type(method, class).to_be_bytes());
        buf[2..4].copy_from_slice(&[0, 0]);
        buf[4..HEADER_LEN].copy_from_slice(&xor_key);
        Ok(Self {
            buf,
            len: HEADER_LEN,
            xor_key,
            classic: transaction_id.is_classic(),
        })
    }

    /// Appends an attribute header and returns its value area, which the caller must fill
    /// entirely; the padding after it is zeroed.
    fn begin(&mut self, typ: u16, value_len: usize) -> Result<&mut [u8], EncodeError> {
        let value_len16 = u16::try_from(value_len).map_err(|_| EncodeError::TooLong)?;
        let total = 4 + value_len.next_multiple_of(4);
        let end = self.len + total;
        if end - HEADER_LEN > usize::from(u16::MAX) {
            return Err(EncodeError::TooLong);
        }
        if end > self.buf.len() {
            return Err(EncodeError::BufferTooSmall);
        }
        let start = self.len;
        self.buf[start..start + 2].copy_from_slice(&typ.to_be_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&value_len16.to_be_bytes());
        // Zero the padding by clearing the whole last word, which the caller then overwrites
        // with the value's tail: a fixed four-byte store instead of a variable-length fill (a
        // call to memset) for every attribute.
        if value_len % 4 != 0 {
            self.buf[end - 4..end].fill(0);
        }
        self.len = end;
        let body = u16::try_from(end - HEADER_LEN).map_err(|_| EncodeError::TooLong)?;
        self.buf[2..4].copy_from_slice(&body.to_be_bytes());
        Ok(&mut self.buf[start + 4..start + 4 + value_len])
    }

    /// Appends any attribute with a raw value.
    pub fn add_raw(&mut self, typ: u16, value: &[u8]) -> Result<(), EncodeError> {
        self.begin(typ, value.len())?.copy_from_slice(value);
        Ok(())
    }

    /// Appends a plain address attribute (MAPPED-ADDRESS, SOURCE-ADDRESS, CHANGED-ADDRESS,
    /// RESPONSE-ORIGIN, OTHER-ADDRESS, RESPONSE-ADDRESS, REFLECTED-FROM).
    pub fn add_address(&mut self, typ: u16, addr: SocketAddr) -> Result<(), EncodeError> {
        let out = self.begin(typ, address_value_len(&addr))?;
        write_address(out, &addr, None);
        Ok(())
    }

    /// Appends an XORed address attribute (XOR-MAPPED-ADDRESS).
    pub fn add_xor_address(&mut self, typ: u16, addr: SocketAddr) -> Result<(), EncodeError> {
        let key = self.xor_key;
        let out = self.begin(typ, address_value_len(&addr))?;
        write_address(out, &addr, Some(&key));
        Ok(())
    }

    /// Appends CHANGE-REQUEST.
    pub fn add_change_request(&mut self, change: ChangeRequest) -> Result<(), EncodeError> {
        self.add_raw(attr::CHANGE_REQUEST, &change.to_bits().to_be_bytes())
    }

    /// Appends RESPONSE-PORT.
    pub fn add_response_port(&mut self, port: u16) -> Result<(), EncodeError> {
        let p = port.to_be_bytes();
        self.add_raw(attr::RESPONSE_PORT, &[p[0], p[1], 0, 0])
    }

    /// Appends PADDING of `len` zero bytes.
    pub fn add_padding(&mut self, len: usize) -> Result<(), EncodeError> {
        self.begin(attr::PADDING, len)?.fill(0);
        Ok(())
    }

    /// Appends SOFTWARE.
    pub fn add_software(&mut self, software: &str) -> Result<(), EncodeError> {
        self.add_raw(attr::SOFTWARE, software.as_bytes())
    }

    /// Appends USERNAME.
    pub fn add_username(&mut self, username: &str) -> Result<(), EncodeError> {
        self.add_raw(attr::USERNAME, username.as_bytes())
    }

    /// Appends ERROR-CODE. In a classic message the reason is padded with spaces to a multiple
    /// of four bytes, as RFC 3489 section 11.2.9 requires.
    pub fn add_error_code(&mut self, code: u16, reason: &str) -> Result<(), EncodeError> {
        if !(300..=699).contains(&code) {
            return Err(EncodeError::BadErrorCode(code));
        }
        let reason_len = if self.classic {
            reason.len().next_multiple_of(4)
        } else {
            reason.len()
        };
        let out = self.begin(attr::ERROR_CODE, 4 + reason_len)?;
        out[..2].fill(0);
        // Both fit in a byte: the class is 3..=6 and the number below 100.
        out[2] = (code / 100) as u8;
        out[3] = (code % 100) as u8;
        out[4..4 + reason.len()].copy_from_slice(reason.as_bytes());
        out[4 + reason.len()..].fill(b' ');
        Ok(())
    }

    /// Appends UNKNOWN-ATTRIBUTES. In a classic message an odd list repeats its last type so the
    /// value stays a multiple of four (RFC 3489 section 11.2.10).
    pub fn add_unknown_attributes(&mut self, types: &[u16]) -> Result<(), EncodeError> {
        let repeat_last = self.classic && types.len() % 2 == 1;
        let count = types.len() + usize::from(repeat_last);
        let out = self.begin(attr::UNKNOWN_ATTRIBUTES, 2 * count)?;
        for (slot, typ) in out
            .chunks_exact_mut(2)
            .zip(types.iter().chain(types.last()))
        {
            slot.copy_from_slice(&typ.to_be_bytes());
        }
        Ok(())
    }

    /// Appends MESSAGE-INTEGRITY computed with `key` over everything written so far.
    pub fn add_message_integrity(&mut self, key: &[u8]) -> Result<(), EncodeError> {
        let at = self.len;
        self.begin(attr::MESSAGE_INTEGRITY, 20)?;
        let mac = integrity_hmac(self.buf, at, self.classic, key);
        self.buf[at + 4..at + 24].copy_from_slice(&mac);
        Ok(())
    }

    /// Appends FINGERPRINT; it must be the last attribute.
    pub fn add_fingerprint(&mut self) -> Result<(), EncodeError> {
        let at = self.len;
        self.begin(attr::FINGERPRINT, 4)?;
        let value = crc32(&self.buf[..at]) ^ FINGERPRINT_XOR;
        self.buf[at + 4..at + 8].copy_from_slice(&value.to_be_bytes());
        Ok(())
    }

    /// The message so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether only the header has been written.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// Ends the message, returning its length.
    pub fn finish(self) -> usize {
        self.len
    }
}
