//! Attribute types, their raw and typed views.

use std::net::SocketAddr;

use super::address::{decode_address, decode_xor_address};

/// Attribute type numbers, each with the document that defines it.
pub mod attr {
    /// MAPPED-ADDRESS ([RFC 8489 section 14.1](https://www.rfc-editor.org/rfc/rfc8489#section-14.1)).
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// RESPONSE-ADDRESS (RFC 3489 section 11.2.2). Never honoured by our server: it would make
    /// the server a reflector towards any third party.
    pub const RESPONSE_ADDRESS: u16 = 0x0002;
    /// CHANGE-REQUEST ([RFC 5780 section 7.2](https://www.rfc-editor.org/rfc/rfc5780#section-7.2)).
    pub const CHANGE_REQUEST: u16 = 0x0003;
    /// SOURCE-ADDRESS (RFC 3489 section 11.2.5): where a classic response was sent from.
    pub const SOURCE_ADDRESS: u16 = 0x0004;
    /// CHANGED-ADDRESS (RFC 3489 section 11.2.3): the classic name of OTHER-ADDRESS.
    pub const CHANGED_ADDRESS: u16 = 0x0005;
    /// USERNAME ([RFC 8489 section 14.3](https://www.rfc-editor.org/rfc/rfc8489#section-14.3)).
    pub const USERNAME: u16 = 0x0006;
    /// PASSWORD (RFC 3489 section 11.2.7, Shared Secret responses only).
    pub const PASSWORD: u16 = 0x0007;
    /// MESSAGE-INTEGRITY ([RFC 8489 section 14.5](https://www.rfc-editor.org/rfc/rfc8489#section-14.5)).
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE ([RFC 8489 section 14.8](https://www.rfc-editor.org/rfc/rfc8489#section-14.8)).
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES ([RFC 8489 section 14.9](https://www.rfc-editor.org/rfc/rfc8489#section-14.9)).
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// REFLECTED-FROM (RFC 3489 section 11.2.11), only sent when RESPONSE-ADDRESS is honoured.
    pub const REFLECTED_FROM: u16 = 0x000B;
    /// REALM ([RFC 8489 section 14.9](https://www.rfc-editor.org/rfc/rfc8489#section-14.9)).
    pub const REALM: u16 = 0x0014;
    /// NONCE ([RFC 8489 section 14.10](https://www.rfc-editor.org/rfc/rfc8489#section-14.10)).
    pub const NONCE: u16 = 0x0015;
    /// MESSAGE-INTEGRITY-SHA256 ([RFC 8489 section 14.6](https://www.rfc-editor.org/rfc/rfc8489#section-14.6)).
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// PASSWORD-ALGORITHM ([RFC 8489 section 14.12](https://www.rfc-editor.org/rfc/rfc8489#section-14.12)).
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    /// USERHASH ([RFC 8489 section 14.4](https://www.rfc-editor.org/rfc/rfc8489#section-14.4)).
    pub const USERHASH: u16 = 0x001E;
    /// XOR-MAPPED-ADDRESS ([RFC 8489 section 14.2](https://www.rfc-editor.org/rfc/rfc8489#section-14.2)).
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// PADDING ([RFC 5780 section 7.6](https://www.rfc-editor.org/rfc/rfc5780#section-7.6)).
    pub const PADDING: u16 = 0x0026;
    /// RESPONSE-PORT ([RFC 5780 section 7.5](https://www.rfc-editor.org/rfc/rfc5780#section-7.5)).
    pub const RESPONSE_PORT: u16 = 0x0027;
    /// XOR-MAPPED-ADDRESS under the number used by pre-RFC drafts (comprehension-optional).
    pub const XOR_MAPPED_ADDRESS_DRAFT: u16 = 0x8020;
    /// SOFTWARE ([RFC 8489 section 14.14](https://www.rfc-editor.org/rfc/rfc8489#section-14.14)).
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT ([RFC 8489 section 14.7](https://www.rfc-editor.org/rfc/rfc8489#section-14.7)).
    pub const FINGERPRINT: u16 = 0x8028;
    /// RESPONSE-ORIGIN ([RFC 5780 section 7.3](https://www.rfc-editor.org/rfc/rfc5780#section-7.3)).
    pub const RESPONSE_ORIGIN: u16 = 0x802B;
    /// OTHER-ADDRESS ([RFC 5780 section 7.4](https://www.rfc-editor.org/rfc/rfc5780#section-7.4)).
    pub const OTHER_ADDRESS: u16 = 0x802C;

    /// Whether a receiver that does not understand this type must reject the message.
    pub const fn is_comprehension_required(typ: u16) -> bool {
        typ < 0x8000
    }
}

/// An attribute as it sits in the message: its type and value, padding removed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RawAttribute<'a> {
    /// The attribute type.
    pub typ: u16,
    /// The value, without the padding to a multiple of four bytes.
    pub value: &'a [u8],
    /// The key for XORed addresses: header bytes 4..20 of the message this came from.
    pub(crate) xor_key: [u8; 16],
}

/// Why an attribute's value could not be read.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttributeError {
    /// The value has the wrong length for its type.
    #[error("attribute value has the wrong length")]
    BadLength,
    /// An address attribute names an unknown address family.
    #[error("unknown address family")]
    BadFamily,
    /// A text attribute is not UTF-8.
    #[error("text attribute is not UTF-8")]
    NotUtf8,
    /// An ERROR-CODE with a class outside 3..=6 or a number above 99.
    #[error("malformed error code")]
    BadErrorCode,
}

/// The two flags of CHANGE-REQUEST.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct ChangeRequest {
    /// Reply from the other IP address.
    pub change_ip: bool,
    /// Reply from the other port.
    pub change_port: bool,
}

impl ChangeRequest {
    /// The 32-bit wire value (flags A = 0x4 and B = 0x2).
    pub fn to_bits(self) -> u32 {
        (u32::from(self.change_ip) << 2) | (u32::from(self.change_port) << 1)
    }

    /// Reads the flags; other bits are ignored as RFC 5780 requires.
    pub fn from_bits(bits: u32) -> Self {
        Self {
            change_ip: bits & 0x4 != 0,
            change_port: bits & 0x2 != 0,
        }
    }
}

/// ERROR-CODE: a numeric code (300..=699) and a reason phrase.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ErrorCode<'a> {
    /// The code, class times 100 plus number.
    pub code: u16,
    /// The reason phrase.
    pub reason: &'a str,
}

/// A typed view of an attribute. Address types come decoded; the rest borrow the message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum Attribute<'a> {
    /// MAPPED-ADDRESS.
    MappedAddress(SocketAddr),
    /// XOR-MAPPED-ADDRESS, under either its RFC number or the draft one.
    XorMappedAddress(SocketAddr),
    /// RESPONSE-ADDRESS (classic).
    ResponseAddress(SocketAddr),
    /// CHANGE-REQUEST.
    ChangeRequest(ChangeRequest),
    /// SOURCE-ADDRESS (classic).
    SourceAddress(SocketAddr),
    /// CHANGED-ADDRESS (classic).
    ChangedAddress(SocketAddr),
    /// REFLECTED-FROM (classic).
    ReflectedFrom(SocketAddr),
    /// USERNAME.
    Username(&'a str),
    /// PASSWORD (classic).
    Password(&'a [u8]),
    /// MESSAGE-INTEGRITY: the 20-byte HMAC-SHA1 (check it with [`super::Message::verify_integrity`]).
    MessageIntegrity(&'a [u8]),
    /// ERROR-CODE.
    ErrorCode(ErrorCode<'a>),
    /// UNKNOWN-ATTRIBUTES: the raw list, two bytes per type (see [`Attribute::unknown_types`]).
    UnknownAttributes(&'a [u8]),
    /// SOFTWARE.
    Software(&'a str),
    /// FINGERPRINT (already checked by [`super::Message::parse`]).
    Fingerprint(u32),
    /// OTHER-ADDRESS.
    OtherAddress(SocketAddr),
    /// RESPONSE-ORIGIN.
    ResponseOrigin(SocketAddr),
    /// RESPONSE-PORT.
    ResponsePort(u16),
    /// PADDING: its length is what matters, the content is free-form.
    Padding(&'a [u8]),
    /// Any other type, uninterpreted.
    Other(u16, &'a [u8]),
}

impl<'a> Attribute<'a> {
    /// The types listed in an UNKNOWN-ATTRIBUTES value.
    pub fn unknown_types(list: &'a [u8]) -> impl Iterator<Item = u16> + 'a {
        list.chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
    }
}

fn utf8(value: &[u8]) -> Result<&str, AttributeError> {
    std::str::from_utf8(value).map_err(|_| AttributeError::NotUtf8)
}

fn fixed4(value: &[u8]) -> Result<[u8; 4], AttributeError> {
    value.try_into().map_err(|_| AttributeError::BadLength)
}

impl<'a> RawAttribute<'a> {
    /// Reads the value according to the type.
    pub fn parse(&self) -> Result<Attribute<'a>, AttributeError> {
        let v = self.value;
        Ok(match self.typ {
            attr::MAPPED_ADDRESS => Attribute::MappedAddress(decode_address(v)?),
            attr::XOR_MAPPED_ADDRESS | attr::XOR_MAPPED_ADDRESS_DRAFT => {
                Attribute::XorMappedAddress(decode_xor_address(v, &self.xor_key)?)
            }
            attr::RESPONSE_ADDRESS => Attribute::ResponseAddress(decode_address(v)?),
            attr::CHANGE_REQUEST => {
                Attribute::ChangeRequest(ChangeRequest::from_bits(u32::from_be_bytes(fixed4(v)?)))
            }
            attr::SOURCE_ADDRESS => Attribute::SourceAddress(decode_address(v)?),
            attr::CHANGED_ADDRESS => Attribute::ChangedAddress(decode_address(v)?),
            attr::REFLECTED_FROM => Attribute::ReflectedFrom(decode_address(v)?),
            attr::USERNAME => Attribute::Username(utf8(v)?),
            attr::PASSWORD => Attribute::Password(v),
            attr::MESSAGE_INTEGRITY => {
                if v.len() != 20 {
                    return Err(AttributeError::BadLength);
                }
                Attribute::MessageIntegrity(v)
            }
            attr::ERROR_CODE => {
                if v.len() < 4 {
                    return Err(AttributeError::BadLength);
                }
                let class = u16::from(v[2] & 0x07);
                let number = u16::from(v[3]);
                if !(3..=6).contains(&class) || number > 99 {
                    return Err(AttributeError::BadErrorCode);
                }
                Attribute::ErrorCode(ErrorCode {
                    code: class * 100 + number,
                    reason: utf8(&v[4..])?,
                })
            }
            attr::UNKNOWN_ATTRIBUTES => {
                if v.len() % 2 != 0 {
                    return Err(AttributeError::BadLength);
                }
                Attribute::UnknownAttributes(v)
            }
            attr::SOFTWARE => Attribute::Software(utf8(v)?),
            attr::FINGERPRINT => Attribute::Fingerprint(u32::from_be_bytes(fixed4(v)?)),
            attr::OTHER_ADDRESS => Attribute::OtherAddress(decode_address(v)?),
            attr::RESPONSE_ORIGIN => Attribute::ResponseOrigin(decode_address(v)?),
            // RFC 5780 section 7.5 draws the port followed by two bytes of padding, and
            // implementations disagree on whether the length counts them: coturn (and our
            // writer) say 4, Stuntman and stun-rs say 2. Both are read.
            attr::RESPONSE_PORT => match *v {
                [hi, lo] | [hi, lo, _, _] => Attribute::ResponsePort(u16::from_be_bytes([hi, lo])),
                _ => return Err(AttributeError::BadLength),
            },
            attr::PADDING => Attribute::Padding(v),
            other => Attribute::Other(other, v),
        })
    }
}
