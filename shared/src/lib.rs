//! Sans-IO protocol cores for the NAT traversal toolkit.
//!
//! Nothing here opens a socket, reads a clock or draws ambient randomness: time comes in as a
//! `now: Instant` argument and randomness from a seed the caller passes, so every state machine
//! can be driven by a real driver (the `stun-server` and `p2p-client` crates) or by a
//! deterministic simulator alike.
//!
//! - [`identity`]: key fingerprints and the safety numbers two users compare.
//! - [`nat_classifier`]: classify the NAT between us and a two-address STUN server.
//! - [`stun`]: a zero-allocation codec for classic (RFC 3489) and modern (RFC 8489/5780) STUN.
//! - [`stun_client`]: one Binding transaction with RFC 8489 retransmission, checking where the
//!   reply came from.
//! - [`stun_server`]: the two-address STUN server's logic: one request in, at most one response
//!   out, naming which of the four server sockets must send it.

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
pub mod nat_classifier;
pub mod punch;
pub mod rendezvous;
pub mod rng;
pub mod stun;
pub mod stun_client;
pub mod stun_server;
pub mod switchboard;
pub mod token_bucket;
