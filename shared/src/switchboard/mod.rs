//! The switchboard relay's logic, without sockets or clocks (MSN's switchboard, port 1865).
//!
//! When two peers cannot punch a direct UDP path, each connects over TCP to the switchboard and
//! joins the session of its introduction with the one-time ticket the rendezvous server gave it
//! (`ITR ... sid=<32 hex> ticket=<32 hex>`, docs/PROTOCOL.md section 8). The switchboard then
//! forwards opaque `DATA` frames between exactly those two connections. The frames are already
//! end-to-end encrypted Noise packets: the relay never sees plaintext and never looks inside.
//!
//! # Driving it
//! The rendezvous hands every ticket it issues to [`Switchboard::handle_ticket`]. The driver
//! numbers connections ([`SbConnId`], never reused), decodes frames with [`wire::decode`] and
//! feeds them in; after every input it drains [`Switchboard::poll_output`], and it calls
//! [`Switchboard::handle_timeout`] once [`Switchboard::poll_timeout`] has passed. That is the
//! shape of every core (docs/DESIGN.md section 8) for a stream-based one: frames of TCP
//! connections in, and one ordered queue of sends and closes out instead of
//! [`crate::Transmit`]s and events (a close must follow the sends queued before it).
//!
//! ```
//! # use std::time::{Duration, Instant};
//! # use shared::rendezvous::{SessionId, Ticket, UserName};
//! use shared::switchboard::{Frame, Output, SbConnId, Switchboard, SwitchboardConfig, VERSION};
//! let mut sb = Switchboard::new(SwitchboardConfig::default()).unwrap();
//! let now = Instant::now();
//! # let ticket = Ticket { value: [1; 16], session: SessionId([2; 16]),
//! #     user: UserName::parse("alice").unwrap(), peer: UserName::parse("bob").unwrap(),
//! #     expires: now + Duration::from_secs(60) };
//! sb.handle_ticket(ticket); // from the rendezvous server
//! sb.handle_connected(now, SbConnId(1));
//! let join = Frame::Join { version: VERSION, session: SessionId([2; 16]), ticket: [1; 16] };
//! sb.handle_frame(now, SbConnId(1), join);
//! while let Some(output) = sb.poll_output() {
//!     match output {
//!         Output::Send { conn, frame } => { /* queue `frame` on `conn` */ }
//!         Output::Close(conn) => { /* flush `conn`'s queue, then close it */ }
//!         _ => {}
//!     }
//! }
//! // ... and at sb.poll_timeout(): sb.handle_timeout(Instant::now()), then drain again.
//! ```
//!
//! # Wire format
//! Over TCP, every frame is a 2-byte big-endian length `L` (1 to 65,001), then `L` bytes whose
//! first byte is the frame type. Integers are big-endian.
//!
//! | type | name | direction | body after the type byte | then |
//! |---|---|---|---|---|
//! | `0x01` | `JOIN` | client → sb | version `u8` (= 1), session id (16 bytes), ticket (16 bytes) | |
//! | `0x02` | `JOINED` | sb → client | `u8`: 1 if the other peer is already there, else 0 | |
//! | `0x03` | `PEER_JOINED` | sb → client | (none) | `DATA` flows |
//! | `0x04` | `PEER_LEFT` | sb → client | (none) | sb closes |
//! | `0x05` | `DATA` | both | 0 to 65,000 opaque bytes ([`SwitchboardConfig::max_data`]) | |
//! | `0x06` | `ERROR` | sb → client | code `u16`, then at most 128 bytes of UTF-8 text | sb closes |
//!
//! `ERROR` codes ([`ErrorCode`]):
//!
//! | code | meaning |
//! |---|---|
//! | 400 | malformed frame (zero length, unknown type, wrong body size) |
//! | 401 | ticket refused: unknown, already used, expired, or for another session (one answer) |
//! | 408 | no `JOIN` within the join timeout |
//! | 409 | unexpected frame (anything but `JOIN` first, a second `JOIN`, a server-only type) |
//! | 413 | frame too large |
//! | 426 | unsupported version in `JOIN` |
//! | 440 | session idle: nothing relayed for the idle timeout |
//! | 441 | the other peer did not join in time (or its ticket can no longer be used) |
//! | 442 | the session reached its byte cap |
//! | 503 | the switchboard is shutting down |
//!
//! A session goes: the first peer sends `JOIN` and gets `JOINED 0`; the second sends `JOIN` and
//! gets `JOINED 1`, and the first gets `PEER_JOINED`; then `DATA` flows both ways until one side
//! leaves (the other gets `PEER_LEFT`) or the session ends with an `ERROR` to both.
//!
//! # Rules
//! - No ticket, no relay. The first frame on a connection must be `JOIN`, within
//!   [`SwitchboardConfig::join_timeout`] of connecting.
//! - A ticket is valid for its own session only, before it expires, and once: it is consumed by
//!   the first `JOIN` that presents it, whether that `JOIN` succeeds or not (a wrong session id
//!   burns it too, which ends its session). Every refusal gets the same `ERROR 401`.
//! - A session admits exactly its two users, one connection each: the rendezvous issues one
//!   ticket per peer per session, and a grant for a user who already has one is ignored.
//! - `DATA` sent before the other peer has joined is buffered, up to
//!   [`SwitchboardConfig::early_buffer`] bytes, and delivered right after the other peer's
//!   `JOINED`; what does not fit is dropped and counted ([`SwitchboardStats::early_dropped`]).
//!   The first peer waits at most [`SwitchboardConfig::peer_wait_timeout`] (`ERROR 441`).
//! - Each direction of a session has a token bucket of [`SwitchboardConfig::rate`] bytes per
//!   second with [`SwitchboardConfig::burst`]: a `DATA` frame over it is dropped and counted
//!   ([`SwitchboardStats::rate_dropped`]), and the connection stays up (the peers' own
//!   protocol retransmits; TCP-like backpressure across the relay would let one slow peer hold
//!   memory). A frame that would take the session's total over [`SwitchboardConfig::byte_cap`]
//!   ends the session (`ERROR 442` to both): a cap that silently dropped would leave both
//!   peers stuck.
//! - A session with nothing relayed for [`SwitchboardConfig::idle_timeout`] ends (`ERROR 440`).
//! - When a peer leaves (disconnects, or is closed for a bad frame), the other gets `PEER_LEFT`
//!   and is closed: the session is over. Tickets are one-time, so a peer cannot rejoin; the
//!   rendezvous issues new tickets for a new session.
//!
//! The driver adds one rule of its own: a connection whose outgoing queue overflows (a reader
//! slower than its peer sends) is closed and reported with [`Switchboard::handle_disconnected`].

mod limits;
mod relay;
pub mod wire;

use std::time::Duration;

pub use relay::Switchboard;
pub use wire::{ErrorCode, Frame, MAX_DATA, VERSION, WireError};

/// Identifies one TCP connection; the driver picks the numbers and never reuses one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SbConnId(pub u64);

impl std::fmt::Display for SbConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sb#{}", self.0)
    }
}

/// What the core asks its driver to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Send `frame` on `conn`.
    Send {
        /// The connection.
        conn: SbConnId,
        /// The frame.
        frame: Frame,
    },
    /// Flush what was queued for `conn`, then close it. The core has forgotten `conn`, and
    /// ignores whatever else the driver reports about it.
    Close(SbConnId),
}

/// The switchboard's limits and timeouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchboardConfig {
    /// How long a new connection has to send `JOIN` (10 s).
    pub join_timeout: Duration,
    /// How long the first peer of a session waits for the second (60 s, the ticket lifetime).
    pub peer_wait_timeout: Duration,
    /// A session with nothing relayed for this long ends (120 s).
    pub idle_timeout: Duration,
    /// Bytes per second per direction of a session; 0 means unlimited (1 MiB/s).
    pub rate: u64,
    /// The token bucket's depth in bytes; at least [`max_data`](Self::max_data) when `rate` is
    /// not 0, so every allowed frame can pass (1 MiB).
    pub burst: u64,
    /// Bytes a session may relay in total, both directions (1 GiB).
    pub byte_cap: u64,
    /// The largest `DATA` payload accepted, at most [`MAX_DATA`] (65,000).
    pub max_data: usize,
    /// Bytes of `DATA` buffered for a peer that has not joined yet (64 KiB).
    pub early_buffer: usize,
    /// Unredeemed tickets kept at most; more grants are refused and counted (100,000).
    pub max_tickets: usize,
}

impl Default for SwitchboardConfig {
    fn default() -> Self {
        SwitchboardConfig {
            join_timeout: Duration::from_secs(10),
            peer_wait_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            rate: 1 << 20,
            burst: 1 << 20,
            byte_cap: 1 << 30,
            max_data: MAX_DATA,
            early_buffer: 64 * 1024,
            max_tickets: 100_000,
        }
    }
}

/// Why a [`SwitchboardConfig`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_data` over [`MAX_DATA`].
    #[error("max_data is {0}; the protocol allows at most {MAX_DATA}")]
    MaxDataTooLarge(usize),
    /// A rate limit whose burst cannot pass one largest frame.
    #[error("burst ({burst}) must be at least max_data ({max_data}) when rate is limited")]
    BurstTooSmall {
        /// The configured burst.
        burst: u64,
        /// The configured largest payload.
        max_data: usize,
    },
    /// A zero timeout.
    #[error("timeouts must be non-zero")]
    ZeroTimeout,
}

impl SwitchboardConfig {
    /// Checks the configuration for contradictions.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_data > MAX_DATA {
            return Err(ConfigError::MaxDataTooLarge(self.max_data));
        }
        if self.rate != 0 && self.burst < self.max_data as u64 {
            return Err(ConfigError::BurstTooSmall {
                burst: self.burst,
                max_data: self.max_data,
            });
        }
        let timeouts = [self.join_timeout, self.peer_wait_timeout, self.idle_timeout];
        if timeouts.contains(&Duration::ZERO) {
            return Err(ConfigError::ZeroTimeout);
        }
        Ok(())
    }
}

/// Counters the core keeps; the driver reads them for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SwitchboardStats {
    /// Connections reported by the driver.
    pub connections: u64,
    /// Tickets accepted from the rendezvous.
    pub tickets_granted: u64,
    /// Grants ignored: duplicate value, a user who already has a ticket, a user who is not in
    /// the session, or the ticket table full.
    pub grants_refused: u64,
    /// Tickets that expired unused.
    pub tickets_expired: u64,
    /// Successful `JOIN`s.
    pub joins: u64,
    /// `JOIN`s refused (bad ticket, wrong session, expired, reused, bad version).
    pub joins_refused: u64,
    /// Connections closed for not sending `JOIN` in time.
    pub join_timeouts: u64,
    /// Frames that did not parse, or were not allowed at that point.
    pub bad_frames: u64,
    /// Sessions in which both peers joined.
    pub sessions_started: u64,
    /// Sessions that ended after at least one peer joined.
    pub sessions_ended: u64,
    /// Sessions ended by the idle timeout.
    pub idle_timeouts: u64,
    /// Sessions ended because the other peer did not join in time.
    pub peer_timeouts: u64,
    /// Sessions ended by the byte cap.
    pub byte_cap_reached: u64,
    /// `DATA` frames handed to the driver for the other peer.
    pub relayed_frames: u64,
    /// Payload bytes of those frames.
    pub relayed_bytes: u64,
    /// `DATA` frames dropped by the rate limit.
    pub rate_dropped: u64,
    /// `DATA` frames dropped because the early buffer was full.
    pub early_dropped: u64,
}

#[cfg(test)]
mod tests;
