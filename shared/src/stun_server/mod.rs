//! The two-address STUN server's logic, without sockets or clocks.
//!
//! The server owns four UDP sockets: two IP addresses times two ports ([RFC 5780 section 6]).
//! The driver reads a datagram from one of them and calls [`StunServer::handle_datagram`] with
//! which socket it came in on; the server answers with at most one [`Transmit`] (the same type
//! every datagram core returns, [`crate::transmit`]) naming the socket to send from (which is
//! how CHANGE-REQUEST picks the reply's source, in [`ServerSocket::index`] order) and where to.
//!
//! One request makes at most one response, synchronously, so instead of queueing responses for a
//! later `poll_transmit` (and allocating for each) the response is written straight into a buffer
//! the driver owns: `handle_datagram` is the input and its return value is the one transmit
//! that would otherwise be drained. The server has no events and no timers (its rate limiter
//! ages by the `now` of each request), so there is nothing else to drain. A driver therefore
//! looks like this:
//!
//! ```
//! # use std::time::Instant;
//! # use shared::stun_server::*;
//! let mut server = StunServer::new(ServerConfig::default(), 7, Instant::now()).unwrap();
//! let mut out = [0u8; MAX_RESPONSE_OVERHEAD + 2048];
//! # let (datagram, from) = (&[0u8; 20][..], "127.0.0.1:5000".parse().unwrap());
//! let received = Received { local: ServerSocket::PRIMARY, transport: Transport::Udp, from, data: datagram };
//! if let Some(transmit) = server.handle_datagram(Instant::now(), received, &mut out) {
//!     // send out[..transmit.size] from socket `transmit.socket` to `transmit.destination`
//! }
//! ```
//!
//! # What it answers, and why
//! - A classic (cookie-less) request gets a classic answer: MAPPED-ADDRESS, SOURCE-ADDRESS and
//!   CHANGED-ADDRESS, and nothing else from the comprehension-required range, since classic
//!   clients reject what they do not know (docs/DESIGN.md section 2: stund's 0x0020 breaks jstun).
//! - A modern request gets XOR-MAPPED-ADDRESS, MAPPED-ADDRESS, RESPONSE-ORIGIN, OTHER-ADDRESS
//!   (the other IP *and* the other port of the socket the request came in on), SOFTWARE, and
//!   FINGERPRINT when the request carried one.
//! - RESPONSE-ADDRESS is never honoured: it would let anyone aim our responses at a third party.
//! - A CHANGE-REQUEST that cannot be honoured (change-IP without an alternate address, or any
//!   change over TCP) is never answered from the wrong address: modern requests get an error,
//!   classic ones silence, because classic clients read any reply as success.
//! - Responses are bounded: at most [`MAX_RESPONSE_OVERHEAD`] bytes larger than the request,
//!   PADDING included (the response pads to the request's own PADDING length).
//!
//! [RFC 5780 section 6]: https://www.rfc-editor.org/rfc/rfc5780#section-6

mod config;
mod handle;
mod rate_limit;
mod socket;
mod template;

pub use crate::transmit::{SocketIndex, Transmit};
pub use config::{ConfigError, MAX_SOFTWARE_LEN, RateLimitConfig, ServerConfig};
pub use handle::{MAX_RESPONSE_OVERHEAD, MAX_UNKNOWN_LISTED, Received, StunServer};
pub use rate_limit::RateLimiter;
pub use socket::{IpSlot, PortSlot, ServerSocket, Transport};

/// Counters the server keeps; the driver reads them for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Datagrams or stream messages handed to the server.
    pub received: u64,
    /// Success responses produced.
    pub responses: u64,
    /// Error responses produced (400, 420).
    pub error_responses: u64,
    /// Dropped because they were not well-formed STUN.
    pub malformed: u64,
    /// Dropped because they were not requests (responses, indications).
    pub not_request: u64,
    /// Dropped by the per-source rate limit.
    pub rate_limited: u64,
    /// Classic requests dropped because their CHANGE-REQUEST could not be honoured.
    pub change_refused: u64,
    /// Requests that carried RESPONSE-ADDRESS (answered to their source regardless).
    pub response_address_ignored: u64,
    /// Well-formed requests (counted before the rate limit) by the socket they arrived on.
    pub requests_by: PerSocket,
    /// Success responses by the socket they leave from (another one after a CHANGE-REQUEST).
    pub responses_by: PerSocket,
    /// Error responses by the socket they leave from (always the one the request came on).
    pub error_responses_by: PerSocket,
}

/// A request's flavour: classic (RFC 3489, no magic cookie) or modern (RFC 8489). Operators
/// watch the classic share to know when old clients are gone.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RequestKind {
    /// No magic cookie: RFC 3489.
    Classic,
    /// With the magic cookie: RFC 8489 (and RFC 5780).
    Modern,
}

impl RequestKind {
    /// Both kinds, in [`RequestKind::index`] order.
    pub const ALL: [RequestKind; 2] = [RequestKind::Classic, RequestKind::Modern];

    /// A dense index 0..2, for per-kind arrays.
    pub fn index(self) -> usize {
        match self {
            RequestKind::Classic => 0,
            RequestKind::Modern => 1,
        }
    }

    fn of(classic: bool) -> RequestKind {
        if classic {
            RequestKind::Classic
        } else {
            RequestKind::Modern
        }
    }
}

/// One counter per server socket and request kind. Plain integers in an array the core owns:
/// the hot path pays one add, and a driver that wants them per socket (metrics) reads them
/// whenever it publishes the rest of [`ServerStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerSocket([[u64; 2]; 4]);

impl PerSocket {
    /// The count for `socket` and `kind`.
    pub fn get(&self, socket: ServerSocket, kind: RequestKind) -> u64 {
        self.0[socket.index()][kind.index()]
    }

    /// The sum over every socket and kind.
    pub fn total(&self) -> u64 {
        self.0.iter().flatten().sum()
    }

    fn add(&mut self, socket: ServerSocket, kind: RequestKind) {
        self.0[socket.index()][kind.index()] += 1;
    }

    fn merge(&mut self, other: &PerSocket) {
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m += t;
            }
        }
    }
}

impl ServerStats {
    /// Adds another worker's counters to these.
    pub fn merge(&mut self, other: &ServerStats) {
        self.received += other.received;
        self.responses += other.responses;
        self.error_responses += other.error_responses;
        self.malformed += other.malformed;
        self.not_request += other.not_request;
        self.rate_limited += other.rate_limited;
        self.change_refused += other.change_refused;
        self.response_address_ignored += other.response_address_ignored;
        self.requests_by.merge(&other.requests_by);
        self.responses_by.merge(&other.responses_by);
        self.error_responses_by.merge(&other.error_responses_by);
    }
}

#[cfg(test)]
mod tests;
