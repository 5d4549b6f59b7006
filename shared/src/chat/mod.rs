//! An end-to-end encrypted, reliable and ordered chat session between two peers, as a sans-IO
//! state machine that does not care which path its packets take.
//!
//! After the rendezvous server introduces two peers (telling each the other's static public
//! key, a session id and who initiates), they chat over whatever path is up: a hole-punched UDP
//! path or the TCP relay that forwards opaque frames. A [`ChatSession`] consumes the datagrams
//! or frames that arrive on any path and produces packets that the driver sends on whichever
//! path it currently prefers. Packets may be lost, duplicated, reordered or arrive on another
//! path than they were sent on; the session copes with all of it.
//!
//! # Security
//!
//! - Handshake: [`NOISE_PARAMS`] (`Noise_KK_25519_ChaChaPoly_BLAKE2s`): each side already knows
//!   the other's static key, so both are authenticated by the end of the first round trip.
//!   The prologue binds the whole session id, so a handshake message of another session fails.
//! - Transport: snow's stateless transport with an explicit 64-bit nonce in every packet, and
//!   an RFC 6479 replay window of [`REPLAY_WINDOW`] nonces: a packet that authenticates but was
//!   seen before, or is too old to tell, is refused ([`ChatError::Replay`]). The relay and
//!   anyone on the path see ciphertext, the session tag and the nonce, and can only drop,
//!   delay or repeat packets.
//! - Randomness: snow needs random bytes for the ephemeral key; they come from
//!   [`ChatConfig::seed`] through a resolver that wraps snow's default one. **The driver must
//!   take the seed from the operating system's CSPRNG** (tests pass fixed seeds). The stream is
//!   also keyed with the local static secret and the session id, so a repeated or weak seed
//!   still gives distinct ephemeral keys per session; forward secrecy rests on the seed's 256
//!   bits. [`StaticKeypair::from_random_bytes`] makes a static key pair from 32 random
//!   bytes the caller supplies.
//!
//! # Reliability
//!
//! Messages of up to [`MAX_MESSAGE_LEN`] bytes are cut into chunks that fit
//! [`ChatConfig::max_packet_size`], numbered, acknowledged (cumulative ack plus a bitmap of the
//! 256 sequence numbers above it), retransmitted on an RFC 6298 RTO with exponential backoff
//! (or after three later chunks were acknowledged), limited to
//! [`ChatConfig::max_in_flight`] chunks in flight, de-duplicated, and handed to the application
//! strictly in order ([`ChatEvent::Message`]). [`ChatEvent::Delivered`] says the peer's
//! application has received a message. ACKs ride on data packets when there are any and are
//! never acknowledged themselves. There is no congestion control beyond the fixed window.
//!
//! # Driving a session
//!
//! The driver owns the sockets, the clock and the path choice. The session has the shape of
//! every core here ([`crate::transmit`]: `handle_*` inputs, then `poll_transmit`, `poll_event`,
//! `poll_timeout` in that order) with one difference: it sits above the path, which may be a
//! UDP socket or the relay's TCP connection, so its transmits are payloads for "the current
//! path" rather than [`crate::Transmit`]s naming a socket and destination; the driver's path
//! choice supplies those.
//!
//! 1. Create the session with [`ChatSession::new`].
//! 2. After every input ([`ChatSession::new`], [`ChatSession::handle_datagram`],
//!    [`ChatSession::send_message`], [`ChatSession::handle_timeout`]), drain in this order:
//!    [`ChatSession::poll_transmit`] until `None` (send each packet on the current path),
//!    then [`ChatSession::poll_event`] until `None`, then ask
//!    [`ChatSession::poll_timeout`] and call [`ChatSession::handle_timeout`] at that instant
//!    unless a packet arrives first.
//! 3. Feed every packet for which [`is_chat_packet`] holds (and whose [`session_tag`] matches
//!    [`ChatSession::session_tag`]) to [`ChatSession::handle_datagram`]. An `Err` means that one
//!    packet was dropped; the session is unaffected and the error is for logs and counters
//!    ([`ChatSession::stats`]).
//! 4. Judge paths by [`ChatSession::last_authenticated_rx`] (overall) and by which path
//!    recently delivered packets that `handle_datagram` accepted. When idle, the session sends a
//!    keepalive every [`ChatTiming::keepalive_interval`], which the peer acknowledges at once;
//!    [`ChatSession::probe_packet`] makes one on demand, to send on a particular path.
//! 5. Ending: [`ChatSession::goodbye_packet`] makes a packet with a CLOSE frame to send on
//!    every path that may be up; the peer's session reports [`ChatEvent::PeerClosed`]. Since it
//!    is sealed like any transport packet, only the peer can produce it. A peer that vanishes
//!    without one is reported as [`ChatEvent::PeerUnresponsive`] once nothing authenticated
//!    arrived for [`ChatTiming::idle_timeout`] (keepalives make sure a live peer answers well
//!    within it).
//!
//! # Wire format
//!
//! Every packet starts with a kind byte whose top bit is set, so it is never confused with
//! STUN (whose first byte is `0x00` or `0x01`, RFC 8489 section 5) on a shared socket. Chat
//! uses `0x80`..=`0x82` and keeps `0x83` in reserve; hole punching uses `0x84` and `0x85`
//! (`crate::punch`). Both sit in 0x80-0xBF, which QUIC version 1 never uses when the fixed bit
//! is not greased (RFC 9000 section 17, RFC 9287), so QUIC can share the socket and be told
//! apart by the first byte alone. Integers are big-endian.
//!
//! | Kind | Bytes | Field |
//! |------|-------|-------|
//! | all | 1 | kind: `0x80` handshake init, `0x82` handshake response, `0x81` transport |
//! | all | 8 | session tag: first 8 bytes of SHA-256(`"p2p-chat/v1 session tag"`, len, id) |
//! | `0x80`, `0x82` | 48 | Noise KK message 1 or 2: ephemeral key (32), tag of empty payload (16) |
//! | `0x81` | 8 | nonce (0, 1, 2, ... per direction) |
//! | `0x81` | n + 16 | ChaCha20-Poly1305 ciphertext of the frames, and its tag |
//!
//! The transport plaintext is a sequence of frames:
//!
//! | Frame | Layout | Meaning |
//! |-------|--------|---------|
//! | PING | `0x01` | keepalive or probe; answered by an immediate ACK |
//! | ACK | `0x02`, cumulative (8), n (1, <= 32), bitmap (n) | all seq < cumulative received; bit i (byte i/8, LSB first) set: seq cumulative+1+i received |
//! | DATA | `0x03`, seq (8), flags (1: bit 0 = FIN), len (2), data (len) | one chunk; FIN ends a message |
//! | CLOSE | `0x04` | goodbye: the sender's application ended the chat ([`ChatSession::goodbye_packet`]) |
//!
//! PING, DATA and CLOSE are ack-eliciting; ACK is not. Handshake packets are exactly 57 bytes, and
//! transport packets at least 33.

mod noise;
mod reliability;
mod session;
mod wire;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

pub use noise::{NOISE_PARAMS, PublicKey, REPLAY_WINDOW, SecretKey, StaticKeypair};
pub use reliability::RECV_WINDOW;
pub use session::ChatSession;
pub use wire::{
    SESSION_TAG_LEN, SessionTag, TAG_HANDSHAKE_INIT, TAG_HANDSHAKE_RESPONSE, TAG_TRANSPORT,
    is_chat_packet, session_tag,
};

/// The largest application message, in bytes (60 KiB).
pub const MAX_MESSAGE_LEN: usize = 60 * 1024;

/// The smallest allowed [`ChatConfig::max_packet_size`].
pub const MIN_PACKET_SIZE: usize = 128;
/// The largest allowed [`ChatConfig::max_packet_size`] (Noise's message limit plus the
/// cleartext header).
pub const MAX_PACKET_SIZE: usize = 65535 + wire::TRANSPORT_HEADER_LEN;

/// Which side of the Noise handshake this peer plays; the introduction decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sends the first handshake message and retransmits it until answered.
    Initiator,
    /// Answers the first handshake message.
    Responder,
}

/// Identifies a message within one direction of a session: the sender's n-th message (from 0)
/// is the receiver's n-th message too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Timers of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatTiming {
    /// First retransmission timeout of the handshake initiation; doubles per resend up to
    /// `max_rto`.
    pub handshake_rto: Duration,
    /// Give up if the handshake has not completed this long after the session was created.
    pub handshake_timeout: Duration,
    /// Data RTO before any round trip has been measured (RFC 6298 says 1 s; chat is
    /// interactive, so shorter).
    pub initial_rto: Duration,
    /// Lower bound of the data RTO.
    pub min_rto: Duration,
    /// Upper bound of every RTO, including after backoff.
    pub max_rto: Duration,
    /// How long an ACK for in-order data may wait for a packet to ride on.
    pub ack_delay: Duration,
    /// Send a keepalive when nothing was sent for this long; `None`: never.
    pub keepalive_interval: Option<Duration>,
    /// Report [`ChatEvent::PeerUnresponsive`] when nothing authenticated arrived from the
    /// peer for this long after the handshake; `None`: never. Keep it at least twice
    /// `keepalive_interval`.
    pub idle_timeout: Option<Duration>,
}

impl Default for ChatTiming {
    /// Handshake RTO 500 ms, handshake timeout 30 s, RTO 500 ms within 100 ms..8 s, ACK delay
    /// 10 ms, keepalive every 5 s (below common NAT UDP timeouts, and often enough that a
    /// live peer is heard well within the idle timeout), idle timeout 14 s (a peer that
    /// vanished is noticed within 15 s).
    fn default() -> Self {
        Self {
            handshake_rto: Duration::from_millis(500),
            handshake_timeout: Duration::from_secs(30),
            initial_rto: Duration::from_millis(500),
            min_rto: Duration::from_millis(100),
            max_rto: Duration::from_secs(8),
            ack_delay: Duration::from_millis(10),
            keepalive_interval: Some(Duration::from_secs(5)),
            idle_timeout: Some(Duration::from_secs(14)),
        }
    }
}

/// Everything a session needs; build with [`ChatConfig::new`] and the `with_*` methods.
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// Our handshake role, as the introduction said.
    pub role: Role,
    /// Our static private key.
    pub local_secret: SecretKey,
    /// The peer's static public key, as the introduction said.
    pub remote_public: PublicKey,
    /// The session id from the introduction; must be unique per introduction.
    pub session_id: Vec<u8>,
    /// Seed for the ephemeral key (32 bytes, the strength of the X25519 key it makes); the
    /// driver must draw it from the operating system's CSPRNG.
    pub seed: [u8; 32],
    /// Timers.
    pub timing: ChatTiming,
    /// The largest packet the session produces, header included (default 1200, which fits
    /// any IPv6 path without fragmentation).
    pub max_packet_size: usize,
    /// How many chunks may be unacknowledged at once (default and maximum [`RECV_WINDOW`]).
    pub max_in_flight: usize,
    /// How many bytes of unacknowledged messages [`ChatSession::send_message`] accepts before
    /// refusing with [`ChatError::SendBufferFull`] (default 1 MiB).
    pub send_buffer: usize,
}

/// The seed is wiped when the configuration goes (the secret key wipes itself).
impl Drop for ChatConfig {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.seed);
    }
}

impl ChatConfig {
    /// A configuration with default timers and limits.
    pub fn new(
        role: Role,
        local_secret: SecretKey,
        remote_public: PublicKey,
        session_id: impl Into<Vec<u8>>,
        seed: [u8; 32],
    ) -> Self {
        Self {
            role,
            local_secret,
            remote_public,
            session_id: session_id.into(),
            seed,
            timing: ChatTiming::default(),
            max_packet_size: 1200,
            max_in_flight: RECV_WINDOW as usize,
            send_buffer: 1 << 20,
        }
    }

    /// Replaces the timers.
    pub fn with_timing(mut self, timing: ChatTiming) -> Self {
        self.timing = timing;
        self
    }

    /// Sets the largest packet, within [`MIN_PACKET_SIZE`]..=[`MAX_PACKET_SIZE`].
    pub fn with_max_packet_size(mut self, bytes: usize) -> Self {
        self.max_packet_size = bytes;
        self
    }

    /// Sets how many chunks may be in flight (clamped to 1..=[`RECV_WINDOW`]).
    pub fn with_max_in_flight(mut self, chunks: usize) -> Self {
        self.max_in_flight = chunks;
        self
    }

    /// Sets the send buffer, in bytes.
    pub fn with_send_buffer(mut self, bytes: usize) -> Self {
        self.send_buffer = bytes;
        self
    }
}

/// What the session tells the application.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChatEvent {
    /// The handshake completed: the initiator read the response, or the responder read and
    /// answered the initiation. Sent messages start flowing.
    Established,
    /// A message from the peer, in order, exactly once.
    Message {
        /// Its number in the peer's sending order.
        id: MessageId,
        /// Its content (UTF-8 text or bytes, as the peer sent it).
        bytes: Vec<u8>,
    },
    /// The peer's application has received this message of ours (and every earlier one).
    Delivered(MessageId),
    /// The handshake did not complete within [`ChatTiming::handshake_timeout`]; the session is
    /// dead (wrong keys, wrong session id, or no path).
    HandshakeTimedOut,
    /// The peer said goodbye (a CLOSE frame): its side of the chat is over. Reported once.
    PeerClosed,
    /// Nothing authenticated arrived from the peer for [`ChatTiming::idle_timeout`]: it
    /// vanished, or every path to it is down. Reported once per silence; the session goes on
    /// and carries on normally if the peer is heard again.
    PeerUnresponsive,
}

/// Counters, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChatStats {
    /// Packets produced by `poll_transmit` and `probe_packet`.
    pub packets_sent: u64,
    /// Packets accepted: authenticated, fresh, well-formed.
    pub packets_accepted: u64,
    /// Handshake initiations resent on timeout.
    pub handshake_retransmissions: u64,
    /// Copies of the already accepted handshake message received again.
    pub duplicate_handshakes: u64,
    /// Transport packets refused by the replay window (seen before, or too old to tell).
    pub replays: u64,
    /// Packets that failed authentication (forged, corrupted, wrong key or session).
    pub authentication_failures: u64,
    /// Packets too short, of the wrong length, or with malformed frames.
    pub malformed: u64,
    /// Packets carrying another session's tag.
    pub wrong_session: u64,
    /// Packets that did not fit the handshake state (early transport, unexpected handshake).
    pub unexpected: u64,
    /// Data chunks resent.
    pub retransmissions: u64,
    /// Data chunks received again (already delivered or buffered).
    pub duplicate_chunks: u64,
}

/// Why an operation failed. From [`ChatSession::handle_datagram`] it means the packet was
/// dropped and the session carries on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// The bytes do not start with a chat packet kind.
    #[error("not a chat packet")]
    NotChat,
    /// The packet carries another session's tag.
    #[error("packet belongs to another session")]
    WrongSession,
    /// The packet, or the frames inside it, could not be parsed.
    #[error("malformed chat packet")]
    Malformed,
    /// The packet failed authentication.
    #[error("chat packet failed authentication")]
    Authentication,
    /// The packet authenticated but its nonce was seen before or is too old.
    #[error("replayed chat packet")]
    Replay,
    /// A handshake message this side does not expect now (wrong role, or a different one
    /// after the handshake).
    #[error("unexpected handshake message")]
    UnexpectedHandshake,
    /// A transport packet arrived before the handshake completed, or a probe was asked for.
    #[error("chat session not established")]
    NotEstablished,
    /// The message exceeds [`MAX_MESSAGE_LEN`].
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// The message's length.
        len: usize,
        /// [`MAX_MESSAGE_LEN`].
        max: usize,
    },
    /// Too many unacknowledged bytes are queued; retry after some are delivered.
    #[error("send buffer full")]
    SendBufferFull,
    /// The session is dead (handshake timeout, or nonce space exhausted).
    #[error("chat session failed")]
    Failed,
    /// The configuration is unusable.
    #[error("invalid chat configuration: {0}")]
    InvalidConfig(&'static str),
    /// The cryptography could not be set up.
    #[error("cannot set up the chat cryptography: {0}")]
    Setup(&'static str),
}
