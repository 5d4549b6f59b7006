//! What a [`super::LinkCore`] starts from, and what an introduction tells it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::chat::{ChatTiming, SecretKey};
use crate::punch::{Candidate, NatInfo, PunchConfig};
use crate::rendezvous::SessionId;
use crate::rendezvous::telemetry::PortMapping;

use super::path::PathConfig;
use super::repunch::RepunchConfig;

/// An introduction to the peer, as the core needs it: the first one (the link's own) or a
/// later one (a re-punch, a rejoin of the relay). The driver translates the rendezvous
/// server's `ITR` into this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introduction {
    /// The introduction's session id (the relay's session, the puncher's session, and for the
    /// first one the end-to-end session's prologue).
    pub sid: SessionId,
    /// Whether we are the initiator (of the Noise handshake and the punching).
    pub initiator: bool,
    /// The peer's Noise static key. A later introduction with another key is another link of
    /// the peer's, not ours.
    pub peer_key: [u8; 32],
    /// The peer's candidates to punch (host and server-reflexive; never a relay address).
    pub candidates: Vec<Candidate>,
    /// The peer's NAT as it announced it.
    pub peer_nat: NatInfo,
    /// When punching starts (the introduction's shared start time, on our clock).
    pub start: Instant,
    /// The switchboard's address, when the introduction brings a usable relay ticket (address,
    /// key fingerprint and ticket): the driver joins it on [`super::LinkCommand::JoinRelay`].
    pub relay: Option<SocketAddr>,
}

/// How a [`super::LinkCore`] runs. [`LinkCoreConfig::new`] gives the defaults the client
/// uses. `Debug` leaves out the seed.
#[derive(Clone)]
pub struct LinkCoreConfig {
    /// Our Noise static private key (the device identity).
    pub secret: SecretKey,
    /// Our NAT, if classified (`NatInfo::default()` if not).
    pub local_nat: NatInfo,
    /// Whether to punch at all (off: the relay only).
    pub punch: bool,
    /// The STUN server a re-punch learns our current address from (`None`: offer the last
    /// one).
    pub stun: Option<SocketAddr>,
    /// Seed of every random choice of the link: the session's handshake randomness, the
    /// punchers' nonces, STUN transaction ids. Draw it from the operating system in a real
    /// driver; the simulator fixes it. It feeds a ChaCha20 generator, because the session's
    /// ephemeral keys come from it.
    pub seed: [u8; 32],
    /// The path choice's timers.
    pub path: PathConfig,
    /// Re-punching's back-off and introduction wait.
    pub repunch: RepunchConfig,
    /// The punchers' tunables (session, role, NAT and peer fields are filled in per
    /// introduction).
    pub punch_config: PunchConfig,
    /// The session's timers (`None`: the session's defaults).
    pub chat_timing: Option<ChatTiming>,
    /// How long a re-punch's STUN Binding may take (default 1 s).
    pub gather_budget: Duration,
    /// While the link is direct, touch the relay this often so the switchboard does not close
    /// it as idle (its idle timeout is 120 s) and it is still there to fall back on (30 s).
    pub relay_keepalive: Duration,
    /// After everything was acknowledged at the end, keep answering this long so the peer
    /// gets the acknowledgements of its last messages (300 ms).
    pub linger: Duration,
    /// How long [`super::LinkCore::finish`] waits for the peer to acknowledge every message
    /// (10 s).
    pub drain_timeout: Duration,
    /// Report each punched introduction's outcome to the rendezvous server
    /// ([`super::LinkCommand::Report`]; on by default). Off: the core never asks.
    pub report_outcomes: bool,
    /// The port mapping our `mapped` candidate came from, named in those reports (`map=`).
    /// The driver asks the gateway for it before the core starts and holds it for the link's
    /// life, so it does not change while the core runs.
    pub port_mapping: PortMapping,
}

impl LinkCoreConfig {
    /// The client's defaults for our key `secret` and a seed.
    pub fn new(secret: SecretKey, seed: [u8; 32]) -> LinkCoreConfig {
        LinkCoreConfig {
            secret,
            local_nat: NatInfo::default(),
            punch: true,
            stun: None,
            seed,
            path: PathConfig::default(),
            repunch: RepunchConfig::default(),
            punch_config: PunchConfig::default(),
            chat_timing: None,
            gather_budget: Duration::from_secs(1),
            relay_keepalive: Duration::from_secs(30),
            linger: Duration::from_millis(300),
            drain_timeout: Duration::from_secs(10),
            report_outcomes: true,
            port_mapping: PortMapping::None,
        }
    }
}

impl std::fmt::Debug for LinkCoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCoreConfig")
            .field("local_nat", &self.local_nat)
            .field("punch", &self.punch)
            .field("stun", &self.stun)
            .field("path", &self.path)
            .field("repunch", &self.repunch)
            .field("report_outcomes", &self.report_outcomes)
            .field("port_mapping", &self.port_mapping)
            .finish_non_exhaustive()
    }
}
