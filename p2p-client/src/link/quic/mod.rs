//! QUIC over a link's changing path: reliable, congestion-controlled streams between two peers
//! whose packets share the endpoint socket with STUN, punching and the chat session, and travel
//! directly or through the switchboard relay, whichever the link's driver has up.
//!
//! - [`socket`]: the [`quinn::AsyncUdpSocket`] over the path ([`QuicRoute`] out,
//!   [`QuicInbound`] in). QUIC sees one constant peer address, so path changes are invisible
//!   to it.

pub mod socket;

pub use socket::{INBOUND_QUEUE, LOCAL_ADDR, PEER_ADDR, QuicInbound, QuicPathStats, QuicRoute};
