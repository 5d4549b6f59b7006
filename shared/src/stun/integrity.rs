//! MESSAGE-INTEGRITY: HMAC-SHA1 over the message up to the attribute
//! ([RFC 8489 section 14.5](https://www.rfc-editor.org/rfc/rfc8489#section-14.5)).

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

use super::Message;
use super::header::HEADER_LEN;

type HmacSha1 = Hmac<Sha1>;

/// Why MESSAGE-INTEGRITY did not verify.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// The message has no MESSAGE-INTEGRITY attribute.
    #[error("no MESSAGE-INTEGRITY attribute")]
    Missing,
    /// The HMAC does not match the key.
    #[error("MESSAGE-INTEGRITY does not match")]
    Mismatch,
}

/// The long-term credential key, MD5(username ":" realm ":" password) (RFC 8489 section 9.2.2;
/// SASLprep is the caller's business: pass already-prepared strings).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(username.as_bytes());
    md5.update(b":");
    md5.update(realm.as_bytes());
    md5.update(b":");
    md5.update(password.as_bytes());
    md5.finalize().into()
}

/// The HMAC input for an attribute at `mi_offset`, fed straight into the MAC.
///
/// Both forms hash the header with its length adjusted to end just after MESSAGE-INTEGRITY
/// (RFC 8489 section 14.5). Classic ones then pad the text with zeroes to a multiple of 64
/// bytes (RFC 3489 section 11.2.8).
///
/// RFC 3489 hashes the header "as sent", but there MESSAGE-INTEGRITY is always the last
/// attribute, so its length already ends there and the two rules agree. Hashing the header as
/// received instead would make a classic message with anything after MESSAGE-INTEGRITY (such as
/// the FINGERPRINT [`super::MessageWriter`] lets it carry) fail to verify against the MAC its
/// own writer computed before that attribute was appended.
pub(crate) fn integrity_hmac(buf: &[u8], mi_offset: usize, classic: bool, key: &[u8]) -> [u8; 20] {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = match HmacSha1::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    let adjusted = u16::try_from(mi_offset + 24 - HEADER_LEN).unwrap_or(u16::MAX);
    mac.update(&buf[..2]);
    mac.update(&adjusted.to_be_bytes());
    mac.update(&buf[4..mi_offset]);
    if classic {
        let pad = mi_offset.next_multiple_of(64) - mi_offset;
        mac.update(&[0u8; 64][..pad]);
    }
    mac.finalize().into_bytes().into()
}

impl Message<'_> {
    /// Checks MESSAGE-INTEGRITY with `key` (the password for short-term credentials, or
    /// [`long_term_key`]). The comparison is constant-time.
    ///
    /// An attribute whose length is not 20 is malformed and never verifies: otherwise the 20
    /// bytes after its header, which then belong partly to the next attribute, would be taken
    /// for the MAC, so a captured MAC could be replayed inside a reframed message.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<(), IntegrityError> {
        let at = self.integrity_offset().ok_or(IntegrityError::Missing)?;
        let buf = self.as_bytes();
        if buf.get(at + 2..at + 4) != Some(&20u16.to_be_bytes()[..]) {
            return Err(IntegrityError::Mismatch);
        }
        let stated = buf.get(at + 4..at + 24).ok_or(IntegrityError::Missing)?;
        let expected = integrity_hmac(buf, at, self.is_classic(), key);
        let mut diff = 0u8;
        for (a, b) in stated.iter().zip(expected.iter()) {
            diff |= a ^ b;
        }
        if diff == 0 {
            Ok(())
        } else {
            Err(IntegrityError::Mismatch)
        }
    }
}
