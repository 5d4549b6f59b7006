//! What a classification reports.

use std::net::SocketAddr;
use std::time::Duration;

/// The RFC 3489 classification, plus the two outcomes that are not NAT types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatType {
    /// No NAT and no filter: the mapped address is ours and anyone can reach us.
    OpenInternet,
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    RestrictedCone,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestrictedCone,
    /// Mapping that depends on the destination.
    Symmetric,
    /// No translation, but a stateful filter.
    SymmetricUdpFirewall,
    /// No UDP reply came back at all.
    UdpBlocked,
    /// The server cannot support a classification (no alternate address, or it does not
    /// really change its source for CHANGE-REQUEST): no NAT type is claimed.
    UnsupportedServer,
}

impl NatType {
    /// The stable name used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            NatType::OpenInternet => "open-internet",
            NatType::FullCone => "full-cone",
            NatType::RestrictedCone => "restricted-cone",
            NatType::PortRestrictedCone => "port-restricted-cone",
            NatType::Symmetric => "symmetric",
            NatType::SymmetricUdpFirewall => "symmetric-udp-firewall",
            NatType::UdpBlocked => "udp-blocked",
            NatType::UnsupportedServer => "unsupported-server",
        }
    }
}

/// A mapping or filtering behaviour on RFC 4787's axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Behaviour {
    /// Independent of the remote endpoint.
    EndpointIndependent,
    /// Depends on the remote IP address.
    AddressDependent,
    /// Depends on the remote IP address and port.
    AddressAndPortDependent,
}

impl Behaviour {
    /// The stable name used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Behaviour::EndpointIndependent => "endpoint-independent",
            Behaviour::AddressDependent => "address-dependent",
            Behaviour::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

/// How the NAT chooses outside ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortAllocation {
    /// Every new mapping kept the inside port.
    Preserving,
    /// New mappings got ports a constant step apart.
    Sequential {
        /// The step between consecutive allocations.
        step: i32,
    },
    /// No pattern.
    Random,
}

impl PortAllocation {
    /// The stable name used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            PortAllocation::Preserving => "preserving",
            PortAllocation::Sequential { .. } => "sequential",
            PortAllocation::Random => "random",
        }
    }
}

/// What the server turned out to support.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerSupport {
    /// The server's other address (OTHER-ADDRESS, or CHANGED-ADDRESS from a classic server).
    pub other_address: Option<SocketAddr>,
    /// Whether it sent RESPONSE-ORIGIN (RFC 5780) rather than only classic attributes.
    pub rfc5780: bool,
    /// Whether replies to CHANGE-REQUEST really came from the changed address; `None` if
    /// never seen.
    pub change_request: Option<bool>,
    /// Whether RESPONSE-PORT was honoured (only tested by the lifetime search).
    pub response_port: Option<bool>,
}

/// The result of a classification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The RFC 3489 type.
    pub nat_type: NatType,
    /// Mapping behaviour, when determined.
    pub mapping: Option<Behaviour>,
    /// Filtering behaviour, when there is a filter and it was determined. `None` for an open
    /// host: with no NAT and no firewall there is no filter to describe.
    pub filtering: Option<Behaviour>,
    /// Whether the NAT loops packets to its own outside address back inside; `None` without a
    /// NAT.
    pub hairpinning: Option<bool>,
    /// How the NAT allocates ports; `None` without a NAT or without enough samples.
    pub port_allocation: Option<PortAllocation>,
    /// The first test socket's local address.
    pub local_address: SocketAddr,
    /// Our address as the server saw it from that socket.
    pub mapped_address: Option<SocketAddr>,
    /// Every (server endpoint, mapped address) seen, in the order the mappings were created.
    pub mappings: Vec<(SocketAddr, SocketAddr)>,
    /// Round trip of the first exchange.
    pub rtt: Option<Duration>,
    /// What the server supports.
    pub server: ServerSupport,
    /// Why the server was found unsupported, when it was.
    pub unsupported_reason: Option<String>,
    /// Binding lifetime, if searched: the longest idle time after which the mapping still
    /// worked, and whether the search hit the caller's maximum first.
    pub binding_lifetime: Option<BindingLifetime>,
    /// Wall time of the classification.
    pub elapsed: Duration,
}

/// The outcome of the binding lifetime search (RFC 5780 section 4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingLifetime {
    /// The mapping survived `at_least` of silence but not `less_than`.
    Between {
        /// Longest idle time the mapping survived.
        at_least: Duration,
        /// Shortest idle time that killed it.
        less_than: Duration,
    },
    /// The mapping survived the longest idle time tried.
    AtLeast(Duration),
    /// The search could not run (the server ignores RESPONSE-PORT, or no NAT).
    Unsupported,
}

impl Report {
    /// Whether the server saw another IP address than the one we sent from, i.e. whether
    /// something on the path translates addresses; `None` without an answer. Over IPv6,
    /// `Some(false)` is the normal case (global addresses, no NAT66).
    pub fn translated(&self) -> Option<bool> {
        self.mapped_address
            .map(|mapped| mapped.ip() != self.local_address.ip())
    }

    /// What the result means for hole punching, in one or two sentences for people.
    pub fn punching_advice(&self) -> &'static str {
        match self.nat_type {
            NatType::OpenInternet => "No NAT: peers can reach you directly.",
            NatType::FullCone | NatType::RestrictedCone => {
                "Hole punching works with every peer, even one behind a symmetric NAT."
            }
            NatType::PortRestrictedCone => {
                "Hole punching works with every peer except one behind a symmetric NAT with \
                 random ports (that pair needs many probes, or a relay)."
            }
            NatType::Symmetric => {
                "Hole punching works only with open, full-cone or restricted-cone peers (or \
                 predictable port allocation); expect a relay otherwise."
            }
            NatType::SymmetricUdpFirewall => {
                "No NAT, but a stateful firewall: peers you contact first can reach you; \
                 punching works like a port-restricted cone."
            }
            NatType::UdpBlocked => {
                "No answer from the server: either the server is down or UDP is blocked on the \
                 path, and the two cannot be told apart from here; if UDP is blocked, only a TCP \
                 relay will work."
            }
            NatType::UnsupportedServer => {
                "This server cannot classify NATs (see the reason); try a server with two \
                 addresses."
            }
        }
    }
}
