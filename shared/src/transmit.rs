//! The one outgoing-datagram type every datagram core returns, and the socket index it names.
//!
//! Like quinn-proto's `Transmit`, a [`Transmit`] is a header: the core writes the payload into
//! the buffer the driver handed to `poll_transmit` (or, for the STUN server, to
//! `handle_datagram`), and the header says how many bytes of it to send, where to, and from
//! which of the driver's sockets. Writing into the caller's buffer keeps the STUN server's hot
//! path free of allocation.
//!
//! # The one shape of a datagram core
//! Inputs are `handle_*(now, ..)`: `handle_datagram(now, socket, from, data)` for a received
//! datagram and `handle_timeout(now)` when [`poll_timeout`](#drain-order) is due. After every
//! input (and after `new`) the driver drains, in this order:
//!
//! 1. `poll_transmit(now, buf)` until `None`, sending each [`Transmit`] as it comes;
//! 2. `poll_event()` until `None` (cores that have events), acting on each;
//! 3. `poll_timeout()`, and sleeps until that instant or the next datagram, whichever is
//!    first.
//!
//! Transmits come first so that whatever a core queued in one step leaves before the driver
//! reacts to the step's events (an event may close a socket a transmit still names).
//! docs/DESIGN.md section 8 states the same for every core in the workspace, and how each one
//! differs: the STUN server returns its one transmit from `handle_datagram`, the STUN client
//! and the classifier have no events, the chat session's transmits are payloads for the
//! current path, and the stream-based rendezvous and switchboard cores drain one
//! `poll_output` queue.

use std::net::SocketAddr;

/// Which of the driver's sockets a datagram leaves from or arrived on.
///
/// Each core documents its numbering: the puncher's index 0 is the endpoint socket and
/// `1..=n` the extra sockets it asked for; the classifier names its eight sockets in
/// `nat_classifier::socket`; the STUN server's four are [`crate::stun_server::ServerSocket`]
/// in [`crate::stun_server::ServerSocket::index`] order. A core that uses one socket uses
/// [`SocketIndex::ENDPOINT`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketIndex(pub u16);

impl SocketIndex {
    /// Index 0: the endpoint socket, or a core's only socket.
    pub const ENDPOINT: SocketIndex = SocketIndex(0);

    /// The index as a `usize`, for arrays of per-socket state.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A datagram to send: the first [`Transmit::size`] bytes of the buffer the driver gave the
/// core, sent from socket [`Transmit::socket`] to [`Transmit::destination`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The socket it must leave from (a STUN CHANGE-REQUEST answer, a punch probe from an
    /// extra socket).
    pub socket: SocketIndex,
    /// The IP TTL (hop limit) to send it with; `None` for the socket's default. Only the
    /// puncher's priming probes set it.
    pub ttl: Option<u8>,
    /// How many bytes at the start of the buffer are the payload.
    pub size: usize,
}
