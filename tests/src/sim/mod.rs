//! A deterministic network simulator in virtual time.
//!
//! Hosts live in *realms*: the internet, or the inside of a NAT. A NAT joins its inside realm
//! to its outside realm (the internet, or another NAT's inside for carrier-grade NAT). Every
//! datagram moves hop by hop as timed events, so NAT state is consulted at the moment a packet
//! crosses, just as in a kernel, and races such as two peers' first packets crossing are real.
//!
//! Randomness (loss, jitter, random port allocation) comes from one seeded [`SimRng`], and the
//! clock is virtual, so a seed fixes a run bit for bit: [`Network::digest`] hashes every
//! delivery to prove it.
//!
//! Protocol code runs as [`Agent`]s: sans-IO cores from `shared` behind a small adapter.
//! [`Simulation::run_until`] jumps time to the next event or timer, with a step limit that
//! turns a livelock into an error.

mod agent;
mod classifier_agent;
mod link_agent;
mod link_pair;
mod link_world;
mod nat;
mod net;
pub mod probes;
mod punch_agent;
mod punch_pair;
mod rng;
mod stun_agents;

pub use agent::{Agent, SimError, Simulation};
pub use classifier_agent::ClassifierAgent;
pub use link_agent::{LinkAgent, LinkLog};
pub use link_pair::{LinkPair, LinkSetup};
pub use link_world::{LinkWorld, Profile, WorldInput, WorldStats};
pub use nat::Nat;
pub use net::{Datagram, Delivery, HostId, LinkConditions, NatId, Network, RealmId};
pub use punch_agent::{CHAT_KIND, PunchAgent, PunchLog, RelayEnd, SignalRelay};
pub use punch_pair::{ENDPOINT_PORT, PairOutcome, PairSetup, PunchPair};
pub use rng::SimRng;
pub use stun_agents::{BindingClient, ServerBehaviour, StunServerAgent};
