//! NAT classification as a sans-IO state machine: the RFC 3489 type and the RFC 4787/5780
//! behaviours (mapping, filtering, hairpinning, port allocation, optionally binding lifetime)
//! from one STUN server with two addresses.
//!
//! # How it avoids the classic mistakes
//! - **Every reply must come from the address its test requires.** A server that ignores
//!   CHANGE-REQUEST and answers from its primary address is reported as
//!   [`NatType::UnsupportedServer`], never as a full cone.
//! - **A control test** catches a server that silently drops CHANGE-REQUEST (which would
//!   otherwise look like a strict filter): a socket first sends to A2:P2, opening its own
//!   filter there, then asks A1:P1 for a reply from A2:P2. Behind endpoint-independent mapping
//!   that reply must arrive.
//! - **No test shares a socket with another** ([`socket`]), so one test's outbound packet can
//!   never open the filter another test is measuring (stuntman's issue #18).
//! - **A host with no NAT is not called "endpoint-independent filtering"**: it is open
//!   internet (no filter) or a symmetric UDP firewall.
//!
//! # Speed
//! Test I runs first (RFC 8489 back-off from 50 ms, so UDP blocked is declared after ~1.3 s).
//! Then every other test starts at once, resending every `4 x RTT + 5 ms` (clamped to
//! 20..500 ms) up to five times: on a LAN a full classification takes a few RTOs, about 0.1 s,
//! and a test that gets no answer has been sent five times, so 10 % loss is survived.

mod decide;
mod lifetime;
mod machine;
mod report;

#[cfg(test)]
mod tests;

pub use crate::transmit::{SocketIndex, Transmit};
pub use decide::{Observations, ProbeResult, decide};
pub use lifetime::LifetimeSearch;
pub use machine::{Classifier, ClassifierConfig, socket};
pub use report::{Behaviour, BindingLifetime, NatType, PortAllocation, Report, ServerSupport};
