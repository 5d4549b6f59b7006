//! A zero-allocation STUN codec for both header forms.
//!
//! No published crate reads classic [RFC 3489] messages (they lack the magic cookie and carry a
//! 128-bit transaction id), and the ones that read [RFC 8489] allocate per message. This module
//! reads and writes both forms with one code path:
//!
//! - [`Message::parse`] validates a datagram once (header, attribute framing, FINGERPRINT) and
//!   borrows it; attributes are then read lazily with [`Message::attributes`] or
//!   [`Message::get`], and typed with [`RawAttribute::parse`]. Nothing is copied or allocated.
//! - [`MessageWriter`] writes a message into a caller-provided buffer, attribute by attribute,
//!   keeping the header length current so MESSAGE-INTEGRITY and FINGERPRINT can be appended last.
//!
//! The XOR-address key is always bytes 4..20 of the header: for RFC 8489 that is the magic cookie
//! followed by the 96-bit id, exactly as the RFC says; for a classic message it is its 128-bit id,
//! which is how drafts between the two RFCs defined it and what stund emits.
//!
//! [RFC 3489]: https://www.rfc-editor.org/rfc/rfc3489
//! [RFC 8489]: https://www.rfc-editor.org/rfc/rfc8489

mod address;
mod attribute;
mod crc32;
mod decode;
mod encode;
mod header;
mod integrity;

pub use address::{decode_address, decode_xor_address};
pub use attribute::{Attribute, AttributeError, ChangeRequest, ErrorCode, RawAttribute, attr};
pub use crc32::crc32;
pub use decode::{Attributes, DecodeError, Message, message_length};
pub use encode::{EncodeError, MessageWriter};
pub use header::{Class, HEADER_LEN, MAGIC_COOKIE, Method, TransactionId};
pub use integrity::{IntegrityError, long_term_key};

/// XORed into the CRC-32 of a message to form FINGERPRINT ([RFC 8489 section 14.7]).
///
/// [RFC 8489 section 14.7]: https://www.rfc-editor.org/rfc/rfc8489#section-14.7
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;
