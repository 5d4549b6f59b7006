//! A direct link to a peer, as sans-IO cores: what a link says inside its session
//! ([`LinkMessage`]), which path its packets take ([`path`]), when it punches again
//! ([`repunch`]), and the one state machine that makes every decision of a link
//! ([`LinkCore`]).
//!
//! A link runs, at once and side by side, the switchboard relay (a TCP connection), the hole
//! puncher ([`crate::punch::Puncher`]) and the end-to-end session
//! ([`crate::chat::ChatSession`]: Noise KK, reliable, ordered). [`LinkCore`] composes the two
//! cores with the path choice, the relay keepalives, the fallback to the relay, re-punching
//! and the end rules, so that all of them run the same under the tokio driver of
//! `p2p_client::link` and under the simulator's virtual time. The driver keeps only what is
//! I/O: the sockets, the relay's TLS connection, the rendezvous client's requests and QUIC.
//!
//! Datagrams on the endpoint socket are told apart by their first byte ([`classify`]).

mod config;
mod core;
mod ending;
mod message;
mod output;
mod packet;
pub mod path;
mod report;
pub mod repunch;
mod step;
#[cfg(test)]
mod tests;

pub use self::core::LinkCore;
pub use config::{Introduction, LinkCoreConfig};
pub use ending::{LinkEnd, LinkFailure, UndeliveredReason};
pub use message::{KIND_APP, KIND_QUIC_CERTIFICATE, LinkMessage, LinkMessageError};
pub use output::{Destination, LinkCommand, LinkCoreEvent, LinkTransmit};
pub use packet::{PacketClass, classify};
pub use path::{PathChange, PathConfig, PathKind, Route};
pub use repunch::RepunchConfig;
pub use step::gather_binding;
