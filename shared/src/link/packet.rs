//! What a datagram on a link's endpoint socket is, by its first byte.
//!
//! One socket carries STUN (the re-punch's gathering), hole punching, the session and QUIC;
//! the first byte tells them apart without parsing (RFC 7983's demultiplexing, extended).

/// The kind of a datagram on the endpoint socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketClass {
    /// STUN: first byte 0 to 3 (RFC 7983 section 7; STUN's first two bits are zero and its
    /// message types in use start with 0x00 or 0x01).
    Stun,
    /// Hole punching: probe 0x84 or ack 0x85 ([`crate::punch::wire`]).
    Punch,
    /// Chat: 0x80 to 0x83 ([`crate::chat`]; 0x83 is reserved and dropped by the session).
    Chat,
    /// QUIC version 1 (the streams of a link): short headers 0x40 to 0x7F, long headers 0xC0
    /// to 0xFF. Exact because our QUIC endpoints never grease the fixed bit (RFC 9287), so a
    /// QUIC packet never starts with 0x80 to 0xBF, where chat and punching live.
    Quic,
    /// Anything else; dropped.
    Other,
}

/// Sorts a datagram by its first byte alone (cheap; says nothing about validity).
pub fn classify(data: &[u8]) -> PacketClass {
    match data.first() {
        Some(0x00..=0x03) => PacketClass::Stun,
        Some(0x84 | 0x85) => PacketClass::Punch,
        Some(0x80..=0x83) => PacketClass::Chat,
        Some(0x40..=0x7F | 0xC0..=0xFF) => PacketClass::Quic,
        _ => PacketClass::Other,
    }
}
