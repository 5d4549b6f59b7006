//! Client library of the p2p toolkit: drivers for the sans-IO cores in `shared`.
//!
//! - [`classify`]: classify the NAT between this host and a STUN server with two addresses.
//! - [`rendezvous`]: the rendezvous client (accounts, login, presence, contacts,
//!   introductions).

pub mod classify;
pub mod rendezvous;
