//! What a [`super::Puncher`] is told: the introduction's parameters and the tunables.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::nat_classifier::{NatType, PortAllocation};

use super::wire::SESSION_ID_LEN;

pub use crate::transmit::SocketIndex;

/// Our role in the introduction (`role=` of PROTOCOL.md section 8): the inviter is the
/// initiator. Probes carry it so that a peer ignores its own packets reflected back to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Role {
    /// The inviter (the Noise initiator).
    #[default]
    Initiator,
    /// The invited peer.
    Responder,
}

impl Role {
    /// The other role.
    pub fn other(self) -> Role {
        match self {
            Role::Initiator => Role::Responder,
            Role::Responder => Role::Initiator,
        }
    }
}

/// What kind of address a candidate is (`cand=<kind>/<ip:port>` of PROTOCOL.md section 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CandidateKind {
    /// A local address of the peer's endpoint socket.
    Host,
    /// The peer's endpoint socket as the STUN service saw it.
    ServerReflexive,
    /// A port mapping the peer's gateway granted for its endpoint socket (PCP, NAT-PMP):
    /// it lets in anyone, so it is probed first.
    Mapped,
}

impl CandidateKind {
    /// The order targets are probed in: mapped, then server-reflexive, then host.
    pub fn priority(self) -> u8 {
        match self {
            CandidateKind::Mapped => 0,
            CandidateKind::ServerReflexive => 1,
            CandidateKind::Host => 2,
        }
    }
}

/// One address of the peer to probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// Host or server-reflexive.
    pub kind: CandidateKind,
    /// The address.
    pub addr: SocketAddr,
}

impl Candidate {
    /// A host candidate.
    pub fn host(addr: SocketAddr) -> Self {
        Self {
            kind: CandidateKind::Host,
            addr,
        }
    }

    /// A server-reflexive candidate.
    pub fn srflx(addr: SocketAddr) -> Self {
        Self {
            kind: CandidateKind::ServerReflexive,
            addr,
        }
    }

    /// A port-mapped candidate.
    pub fn mapped(addr: SocketAddr) -> Self {
        Self {
            kind: CandidateKind::Mapped,
            addr,
        }
    }
}

/// What a classifier found out about one side's NAT (`nat=` and `alloc=` of an offer).
///
/// `None` fields mean "unknown"; the puncher then probes plainly. When `alloc=sequential`
/// arrives without a step, use `PortAllocation::Sequential { step: 1 }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatInfo {
    /// The NAT type.
    pub nat_type: Option<NatType>,
    /// How the NAT allocates ports to new mappings.
    pub port_allocation: Option<PortAllocation>,
}

impl NatInfo {
    /// A NAT of this type with this allocation.
    pub fn new(nat_type: NatType, port_allocation: Option<PortAllocation>) -> Self {
        Self {
            nat_type: Some(nat_type),
            port_allocation,
        }
    }

    /// What a peer announced in its offer (`nat=`, `alloc=`), in the vocabulary the puncher
    /// works in; words it did not send, or `unknown`, leave the field unknown.
    pub fn announced(
        nat: Option<crate::rendezvous::offer::OfferNat>,
        alloc: Option<crate::rendezvous::offer::AllocKind>,
    ) -> Self {
        Self {
            nat_type: nat.and_then(|w| w.nat_type()),
            port_allocation: alloc.map(|w| w.port_allocation()),
        }
    }

    /// How a side that holds a port mapping for its endpoint socket looks to punching: the
    /// gateway lets anyone in at the mapped address, as a full-cone NAT does, whatever its
    /// NAT does for other sockets. Both sides use it (the holder for itself, the peer when
    /// the offer has a `mapped` candidate), so their strategies still match.
    pub fn reachable_by_mapping() -> Self {
        Self::new(NatType::FullCone, Some(PortAllocation::Preserving))
    }

    /// Whether the mapping depends on the destination (a new outside port per peer address).
    pub fn is_symmetric(&self) -> bool {
        self.nat_type == Some(NatType::Symmetric)
    }

    /// Whether the filter admits only the exact remote addresses and ports we sent to
    /// (port-restricted cone or a symmetric UDP firewall), with an endpoint-independent
    /// mapping.
    pub fn filters_by_port(&self) -> bool {
        matches!(
            self.nat_type,
            Some(NatType::PortRestrictedCone | NatType::SymmetricUdpFirewall)
        )
    }

    /// Whether there is no NAT and no filter, so there is nothing to prime.
    pub fn is_open(&self) -> bool {
        self.nat_type == Some(NatType::OpenInternet)
    }
}

/// The other peer, as the introduction describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its candidates (at most 8 in the protocol).
    pub candidates: Vec<Candidate>,
    /// Its NAT.
    pub nat: NatInfo,
}

/// Configuration of one hole-punching attempt.
///
/// Build it with struct update syntax over [`PunchConfig::new`] or [`Default`]; the defaults
/// are the documented rates and counts of the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PunchConfig {
    /// The introduction's session id (16 random bytes known only to the two peers and the
    /// rendezvous server).
    pub session: [u8; SESSION_ID_LEN],
    /// Our role.
    pub role: Role,
    /// Our own NAT, as our classifier reported it.
    pub local: NatInfo,
    /// The peer.
    pub peer: PeerInfo,

    /// Whether to prime our NAT with TTL-limited probes before full probes (default true).
    pub prime: bool,
    /// TTL of a priming probe: it must pass our NAT and die before the peer's NAT (default 2:
    /// our NAT and one router). Behind two NATs (carrier-grade NAT) use 3.
    pub prime_ttl: u8,
    /// How many times each priming probe is sent, against loss on the way to our NAT
    /// (default 3).
    pub prime_count: u8,
    /// Spacing of the priming repetitions (default 10 ms).
    pub prime_spacing: Duration,
    /// Whether full probes wait for the peer's primed signal (default true). Turning it off
    /// brings back the race of docs/DESIGN.md section 5 when one side starts late.
    pub wait_for_peer_primed: bool,
    /// How long after our own priming we wait for the peer's primed signal before probing
    /// anyway (default 1 s). Also how long we wait for the driver to confirm extra sockets.
    pub peer_primed_timeout: Duration,

    /// Interval between rounds of full probes to every target (default 100 ms).
    pub probe_interval: Duration,
    /// Rounds of full probes before giving up (default 50, i.e. 5 s).
    pub probe_rounds: u32,
    /// How long to wait for an ack after the last round before reporting failure (default 1 s).
    pub final_wait: Duration,

    /// Against a symmetric NAT with sequential allocation: how many ports after its
    /// server-reflexive port to probe (default 16).
    pub predicted_ports: u16,
    /// Birthday method, symmetric side: how many extra sockets to ask for (default 256).
    pub birthday_sockets: u16,
    /// Birthday method, port-restricted side: how many random ports to probe (default 2048).
    pub birthday_probes: u32,
    /// Birthday method, port-restricted side: probes per second (default 1000).
    pub birthday_rate: u32,
    /// Birthday method: the port range the symmetric NAT is assumed to allocate from
    /// (default 1024..=65535, every non-privileged port).
    pub birthday_ports: RangeInclusive<u16>,

    /// After connecting, send a keepalive probe this often (default 15 s, below common NAT
    /// UDP timeouts of 30 s); `None` when the chat layer sends its own keepalives.
    pub keepalive_interval: Option<Duration>,
    /// After connecting, report [`super::PunchEvent::PathLost`] when nothing arrived on the
    /// path for this long (default 40 s).
    pub path_timeout: Duration,

    /// Whether our endpoint can use IPv6 (the driver sets it when it offered a global IPv6
    /// address of its own). Without it the peer's IPv6 candidates are not probed at all: a
    /// path over IPv6 needs an address on both ends. Default true.
    pub ipv6: bool,
    /// How long a path confirmed over IPv4 waits for one over IPv6 while IPv6 targets are
    /// being probed (RFC 8421's preference for IPv6, decided by time as Happy Eyeballs,
    /// RFC 8305, does): both sides probe both families in the same rounds, and an IPv6 path
    /// through stateful firewalls (no NAT66) opens as soon as both have sent, so a working
    /// one answers within a round or two of the IPv4 one. Default 500 ms (five rounds);
    /// zero takes whichever answers first.
    pub ipv6_wait: Duration,
}

impl Default for PunchConfig {
    fn default() -> Self {
        Self {
            session: [0; SESSION_ID_LEN],
            role: Role::Initiator,
            local: NatInfo::default(),
            peer: PeerInfo::default(),
            prime: true,
            prime_ttl: 2,
            prime_count: 3,
            prime_spacing: Duration::from_millis(10),
            wait_for_peer_primed: true,
            peer_primed_timeout: Duration::from_secs(1),
            probe_interval: Duration::from_millis(100),
            probe_rounds: 50,
            final_wait: Duration::from_secs(1),
            predicted_ports: 16,
            birthday_sockets: 256,
            birthday_probes: 2048,
            birthday_rate: 1000,
            birthday_ports: 1024..=65535,
            keepalive_interval: Some(Duration::from_secs(15)),
            path_timeout: Duration::from_secs(40),
            ipv6: true,
            ipv6_wait: Duration::from_millis(500),
        }
    }
}

impl PunchConfig {
    /// The defaults for this introduction.
    pub fn new(session: [u8; SESSION_ID_LEN], role: Role, local: NatInfo, peer: PeerInfo) -> Self {
        Self {
            session,
            role,
            local,
            peer,
            ..Self::default()
        }
    }

    /// The peer's candidates this side can probe: all of them, or its IPv4 ones only when we
    /// have no IPv6 ([`PunchConfig::ipv6`]).
    pub fn usable_candidates(&self) -> impl Iterator<Item = &Candidate> {
        self.peer
            .candidates
            .iter()
            .filter(|c| self.ipv6 || c.addr.is_ipv4())
    }

    /// Checks the values a puncher cannot work with.
    pub fn validate(&self) -> Result<(), PunchError> {
        if self.usable_candidates().next().is_none() {
            return Err(PunchError::NoCandidates);
        }
        let zero = |name: &'static str, d: Duration| {
            if d.is_zero() {
                Err(PunchError::Invalid(name))
            } else {
                Ok(())
            }
        };
        zero("probe_interval", self.probe_interval)?;
        zero("path_timeout", self.path_timeout)?;
        if self.keepalive_interval.is_some_and(|k| k.is_zero()) {
            return Err(PunchError::Invalid("keepalive_interval"));
        }
        if self.prime && (self.prime_ttl == 0 || self.prime_count == 0) {
            return Err(PunchError::Invalid("prime_ttl and prime_count"));
        }
        if self.birthday_rate == 0 {
            return Err(PunchError::Invalid("birthday_rate"));
        }
        let span = u32::from(*self.birthday_ports.end())
            .saturating_sub(u32::from(*self.birthday_ports.start()))
            + 1;
        if self.birthday_ports.is_empty() || self.birthday_probes > span {
            return Err(PunchError::Invalid(
                "birthday_probes must fit in birthday_ports",
            ));
        }
        Ok(())
    }
}

/// Why a [`super::Puncher`] cannot start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PunchError {
    /// The peer has no candidates (none of our address family): there is nothing to probe.
    #[error("the peer sent no candidates we can reach")]
    NoCandidates,
    /// A tunable is out of range.
    #[error("invalid punch configuration: {0}")]
    Invalid(&'static str),
}
