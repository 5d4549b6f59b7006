//! Test infrastructure for the toolkit: a deterministic network simulator and (with root) a lab
//! of real kernel NATs.
//!
//! - [`sim`]: an in-process network in virtual time with seeded loss, delay, jitter and
//!   reordering, and a NAT model on RFC 4787's axes. It drives the sans-IO cores of `shared`
//!   directly, so a whole scenario runs in milliseconds and identically every time.
//! - [`nat_types`]: the NAT types both the simulator and the lab build, and the behaviour a
//!   few raw probes must observe behind each (the contract the two must agree on).

pub mod lab;
pub mod nat_types;
pub mod sim;
