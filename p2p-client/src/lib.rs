//! Client library of the p2p toolkit: drivers for the sans-IO cores in `shared`.
//!
//! - [`chat`]: the `chat` command's driver: hole punching, the switchboard relay and the
//!   end-to-end encrypted chat session over whichever path is up.
//! - [`classify`]: classify the NAT between this host and a STUN server with two addresses.
//! - [`rendezvous`]: the rendezvous client (accounts, login, presence, contacts,
//!   introductions).

pub mod chat;
pub mod classify;
pub mod rendezvous;
