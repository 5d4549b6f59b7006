//! The 20-byte STUN header: message type, length, and transaction id in either form.

/// Length of the STUN header in both forms.
pub const HEADER_LEN: usize = 20;

/// The fixed value that marks an RFC 5389/8489 message ([RFC 8489 section 5]).
///
/// [RFC 8489 section 5]: https://www.rfc-editor.org/rfc/rfc8489#section-5
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// A transaction id in the form the peer used; replies must echo the same form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TransactionId {
    /// RFC 3489: 128 random bits and no magic cookie.
    Classic([u8; 16]),
    /// RFC 5389/8489: the magic cookie followed by 96 random bits.
    Modern([u8; 12]),
}

impl TransactionId {
    /// Whether this id belongs to a classic (RFC 3489) message.
    pub fn is_classic(&self) -> bool {
        matches!(self, Self::Classic(_))
    }

    /// Header bytes 4..20: the cookie (modern only) and the id. Also the XOR-address key.
    pub fn header_tail(&self) -> [u8; 16] {
        match self {
            Self::Classic(id) => *id,
            Self::Modern(id) => {
                let mut tail = [0u8; 16];
                tail[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                tail[4..].copy_from_slice(id);
                tail
            }
        }
    }

    /// Reads the id from header bytes 4..20, deciding the form by the magic cookie.
    pub fn from_header_tail(tail: &[u8; 16]) -> Self {
        if tail[..4] == MAGIC_COOKIE.to_be_bytes() {
            let mut id = [0u8; 12];
            id.copy_from_slice(&tail[4..]);
            Self::Modern(id)
        } else {
            Self::Classic(*tail)
        }
    }
}

/// The class of a message, carried in two bits of the message type ([RFC 8489 section 5]).
///
/// [RFC 8489 section 5]: https://www.rfc-editor.org/rfc/rfc8489#section-5
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Class {
    /// A request, which expects a response.
    Request,
    /// An indication, which expects none.
    Indication,
    /// A success response.
    SuccessResponse,
    /// An error response (carries ERROR-CODE).
    ErrorResponse,
}

/// A STUN method: the 12 bits of the message type that are not the class.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Method(pub u16);

impl Method {
    /// Binding, the only method this toolkit serves ([RFC 8489 section 18.2]).
    ///
    /// [RFC 8489 section 18.2]: https://www.rfc-editor.org/rfc/rfc8489#section-18.2
    pub const BINDING: Method = Method(0x001);
    /// RFC 3489's Shared Secret method, withdrawn by RFC 5389; recognised so it can be refused.
    pub const SHARED_SECRET: Method = Method(0x002);
}

/// Packs a method and class into the 14-bit message type.
pub(crate) fn encode_message_type(method: Method, class: Class) -> u16 {
    let m = method.0 & 0x0FFF;
    let c: u16 = match class {
        Class::Request => 0b00,
        Class::Indication => 0b01,
        Class::SuccessResponse => 0b10,
        Class::ErrorResponse => 0b11,
    };
    (m & 0x000F) | ((m & 0x0070) << 1) | ((m & 0x0F80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)
}

/// Splits a 14-bit message type into method and class.
pub(crate) fn decode_message_type(typ: u16) -> (Method, Class) {
    let method = (typ & 0x000F) | ((typ >> 1) & 0x0070) | ((typ >> 2) & 0x0F80);
    let class = match ((typ >> 4) & 1) | ((typ >> 7) & 2) {
        0 => Class::Request,
        1 => Class::Indication,
        2 => Class::SuccessResponse,
        _ => Class::ErrorResponse,
    };
    (Method(method), class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_types_match_rfc3489_table() {
        assert_eq!(encode_message_type(Method::BINDING, Class::Request), 0x0001);
        assert_eq!(
            encode_message_type(Method::BINDING, Class::SuccessResponse),
            0x0101
        );
        assert_eq!(
            encode_message_type(Method::BINDING, Class::ErrorResponse),
            0x0111
        );
        assert_eq!(
            encode_message_type(Method::SHARED_SECRET, Class::Request),
            0x0002
        );
        assert_eq!(
            encode_message_type(Method::BINDING, Class::Indication),
            0x0011
        );
    }

    #[test]
    fn message_type_round_trips_for_every_method_and_class() {
        for m in 0..0x1000u16 {
            for class in [
                Class::Request,
                Class::Indication,
                Class::SuccessResponse,
                Class::ErrorResponse,
            ] {
                let typ = encode_message_type(Method(m), class);
                assert!(typ < 0x4000);
                assert_eq!(decode_message_type(typ), (Method(m), class));
            }
        }
    }

    #[test]
    fn transaction_id_form_follows_cookie() {
        let modern = TransactionId::Modern([7; 12]);
        assert_eq!(
            TransactionId::from_header_tail(&modern.header_tail()),
            modern
        );
        let classic = TransactionId::Classic([9; 16]);
        assert_eq!(
            TransactionId::from_header_tail(&classic.header_tail()),
            classic
        );
        assert!(classic.is_classic() && !modern.is_classic());
    }
}
