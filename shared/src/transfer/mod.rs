//! File transfer between two peers: the wire format and the rules both ends follow.
//!
//! This module is pure: it encodes and decodes frames and decides names and resume offsets.
//! The driver that moves bytes over a QUIC connection and touches the disk is
//! `p2p_client::transfer`.
//!
//! # Protocol
//! The sender opens **one bidirectional stream per file**, one file at a time, so that a
//! file's control frames and data share one ordered byte stream and one file's failure
//! (a refusal, a hash mismatch) is reported on its own stream. On each file stream:
//!
//! 1. sender → [`Message::FileHeader`]: the file's base name and its [`ResumeKey`] (size and
//!    modification time in ns).
//! 2. receiver → [`Message::Accept`] with the offset to send from (0, or the length of a
//!    partial copy whose stored resume key equals the header's, see [`resume_offset`]), or
//!    [`Message::Refuse`] with a [`RefuseReason`] and a text, after which both ends stop.
//! 3. sender → exactly `size - offset` raw bytes of the file from `offset` on, then
//!    [`Message::Trailer`] with the SHA-256 of the **whole** file: the sender hashes the
//!    skipped prefix too, and the receiver hashes its partial prefix from disk plus the new
//!    bytes, so a resumed file is checked end to end.
//! 4. receiver → [`Message::Ack`]: [`AckStatus::Ok`] once the file is synced and renamed to
//!    its name, [`AckStatus::HashMismatch`] after deleting the partial copy.
//!
//! After the last file the sender opens one more stream with [`Message::End`]; the receiver
//! answers [`Message::EndAck`] and the session is over. A receiver that refuses a file or
//! sees a hash mismatch ends the session with an error; the sender does too.
//!
//! # Wire format
//! Control frames are length-prefixed and versioned; integers are big-endian; text is a
//! `u16` length and UTF-8.
//!
//! ```text
//! frame   = len:u16 body              len <= MAX_FRAME_BODY (1024)
//! body    = version:u8 (=1) kind:u8 fields
//! 0x01 FileHeader  size:u64 modified_ns:u64 name:text   name <= 200 bytes
//! 0x02 End         files:u32
//! 0x03 Accept      offset:u64
//! 0x04 Refuse      reason:u8 detail:text                reason 1 bad name, 2 exists, 3 I/O
//! 0x05 Trailer     sha256:[u8; 32]
//! 0x06 Ack         status:u8                            0 ok, 1 hash mismatch
//! 0x07 EndAck      files:u32
//! ```
//!
//! Decoding is strict ([`WireError`]): unknown versions and kinds, truncated bodies, trailing
//! bytes, over-long fields and invalid UTF-8 are errors.
//!
//! # Names
//! A name is one path component chosen by the peer; [`validate_name`] accepts only plain
//! names that stay inside the output directory (no `/`, `\`, `.`, `..`, empty, NUL or control
//! characters, at most [`MAX_NAME_LEN`] bytes, not one of the receiver's temporary names).
//! Until verified, a file lives at [`partial_name`] with its resume key in [`sidecar_name`]
//! ([`ResumeKey::to_sidecar`]).

mod name;
mod wire;

pub use name::{
    MAX_NAME_LEN, NameError, PARTIAL_SUFFIX, SIDECAR_SUFFIX, partial_name, sidecar_name,
    validate_name,
};
pub use wire::{
    AckStatus, LEN_PREFIX, MAX_DETAIL_LEN, MAX_FRAME_BODY, Message, RefuseReason, ResumeKey,
    SIDECAR_LEN, VERSION, WireError, body_len, decode_body, decode_frame,
};

/// The offset a receiver offers for a file announced with `announced`, given the resume key
/// stored beside its partial copy (`None` if there is no readable sidecar) and the partial
/// copy's length.
///
/// Resumes only when the keys are equal (same size and modification time: most likely the
/// same content) and the partial is not longer than the file; otherwise 0, and the receiver
/// starts over.
pub fn resume_offset(announced: &ResumeKey, stored: Option<&ResumeKey>, partial_len: u64) -> u64 {
    match stored {
        Some(stored) if stored == announced && partial_len <= announced.size => partial_len,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_only_from_the_same_file() {
        let key = ResumeKey {
            size: 100,
            modified_ns: 5,
        };
        let touched = ResumeKey {
            modified_ns: 6,
            ..key
        };
        assert_eq!(resume_offset(&key, Some(&key), 40), 40);
        assert_eq!(resume_offset(&key, Some(&key), 100), 100);
        assert_eq!(resume_offset(&key, Some(&key), 101), 0);
        assert_eq!(resume_offset(&key, Some(&touched), 40), 0);
        assert_eq!(resume_offset(&key, None, 40), 0);
    }
}
