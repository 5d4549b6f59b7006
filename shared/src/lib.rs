//! Sans-IO protocol cores for the NAT traversal toolkit.
//!
//! Nothing here opens a socket, reads a clock or draws ambient randomness: time comes in as a
//! `now: Instant` argument and randomness from a seed the caller passes, so every state machine
//! can be driven by a real driver (the `stun-server` and `p2p-client` crates) or by a
//! deterministic simulator alike.
//!
//! - [`chat`]: the end-to-end encrypted (Noise), reliable, ordered chat session between two
//!   peers, over whichever path (direct or relayed) is up.
//! - [`identity`]: key fingerprints and the safety numbers two users compare.
//! - [`link`]: a direct link to a peer: [`link::LinkCore`] composes the puncher, the chat
//!   session, the path choice (relayed until punched, back to the relay on silence), relay
//!   keepalives, re-punching and the end rules; and what a link says inside its session.
//! - [`nat_classifier`]: classify the NAT between us and a two-address STUN server.
//! - [`portmap`]: port mapping on the default gateway (PCP, NAT-PMP): request, renewal,
//!   deletion.
//! - [`punch`]: UDP hole punching after an introduction (prediction, the birthday method).
//! - [`rendezvous`]: the rendezvous protocol (accounts, SCRAM login, presence, contacts,
//!   introductions): wire format, offer vocabulary and the server core.
//! - [`rng`]: SplitMix64, the seeded generator the cores spread their seeds with.
//! - [`stun`]: a zero-allocation codec for classic (RFC 3489) and modern (RFC 8489/5780) STUN.
//! - [`stun_client`]: one Binding transaction with RFC 8489 retransmission, checking where the
//!   reply came from.
//! - [`stun_server`]: the two-address STUN server's logic: one request in, at most one response
//!   out, naming which of the four server sockets must send it.
//! - [`switchboard`]: the relay that joins two peers' TCP connections by a one-time ticket.
//! - [`transfer`]: file transfer between peers: wire format, name validation and resume rules.
//! - [`token_bucket`]: the token bucket both rate limits (STUN requests, relayed bytes) use.
//! - [`transmit`]: [`Transmit`] and [`SocketIndex`], the outgoing datagram every datagram core
//!   returns, and the order a driver drains a core in.
//!
//! # Driving a core
//! Every core is a value the driver owns: it feeds inputs in with `handle_*(now, ..)`, then
//! drains the outputs in one order (`poll_transmit`, then `poll_event`; `poll_output` for the
//! two stream-based cores) and sleeps until `poll_timeout`, calling `handle_timeout(now)` then
//! ([`transmit`] and docs/DESIGN.md section 8 say which core differs how, and why). For example the STUN server core, which
//! answers one datagram at a time:
//!
//! ```
//! use std::time::Instant;
//! use shared::stun_server::{ServerConfig, StunServer};
//! let mut server = StunServer::new(ServerConfig::default(), 7, Instant::now()).unwrap();
//! # let _ = &mut server;
//! // For each received datagram: `server.handle_datagram(now, received, &mut out)` returns the
//! // response to send, if any, and the server socket to send it from (see [`stun_server`]).
//! ```
//!
//! The rules `shared` keeps are enforced in CI: no tokio in its dependency tree, no
//! `Instant::now`, `SystemTime::now`, `thread_rng` or `OsRng` (shared/clippy.toml), and no
//! `unsafe` code.

#![forbid(unsafe_code)]
// Unit tests need some `Instant` as the origin of their virtual time and take `Instant::now()`;
// the library itself may not (shared/clippy.toml), which the non-test lint pass still checks.
#![cfg_attr(
    test,
    allow(
        clippy::disallowed_methods,
        reason = "tests take Instant::now() as a time origin"
    )
)]

pub mod chat;
pub mod identity;
pub mod link;
pub mod nat_classifier;
pub mod portmap;
pub mod punch;
pub mod rendezvous;
pub mod rng;
pub mod stun;
pub mod stun_client;
pub mod stun_server;
pub mod switchboard;
pub mod token_bucket;
pub mod transfer;
pub mod transmit;

pub use transmit::{SocketIndex, Transmit};
