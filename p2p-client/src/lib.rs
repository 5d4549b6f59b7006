//! Client library of the p2p toolkit: drivers for the sans-IO cores in `shared`.
//!
//! - [`binding`]: one STUN Binding transaction over a socket the caller owns, the one driver
//!   of the `binding` command and of the chat's gatherings.
//! - [`chat`]: the `chat` command's driver: hole punching, the switchboard relay and the
//!   end-to-end encrypted chat session over whichever path is up.
//! - [`classify`]: classify the NAT between this host and a STUN server with two addresses.
//! - [`home`]: the client's home directory: device identity keys, contacts' pinned keys,
//!   servers' pinned keys.
//! - [`link`]: direct links to a peer for any application: messages, QUIC streams, events
//!   (`chat`, `send`, `receive` and `tunnel` are programs on it).
//! - [`rendezvous`]: the rendezvous client (accounts, login, presence, contacts,
//!   introductions).
//! - [`stdout`]: printing that ends quietly when the reader closes the pipe.
//! - [`tls`]: TLS 1.3 to the servers and how their keys are trusted (CA, system roots,
//!   pinning on first use, an exact key).
//! - [`transfer`]: `send` / `receive`: files over a QUIC connection, verified and resumable.
//! - [`tunnel`]: `tunnel --listen` / `--connect`: TCP connections over a QUIC connection.
//!
//! The `p2p-client` binary is the command line over these modules. From a program, for
//! example, classify the NAT towards a two-address STUN server:
//!
//! ```no_run
//! use p2p_client::classify::{ClassifyOptions, classify};
//! let report = classify("198.51.100.1:3478".parse()?, ClassifyOptions::default())?;
//! println!("{}", report.nat_type.as_str());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod binding;
pub mod chat;
pub mod classify;
pub mod home;
pub mod link;
pub mod portmap;
pub mod rendezvous;
pub mod stdout;
pub mod tls;
pub mod transfer;
pub mod tunnel;
