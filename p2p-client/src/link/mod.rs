//! What runs over a link between two peers: the path (direct or relayed) that the chat driver
//! keeps up carries more than the chat session.
//!
//! - [`quic`]: QUIC streams over the link's changing path.

pub mod quic;
