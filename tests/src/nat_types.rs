//! The NAT types of the lab and the simulator, and what raw probes observe behind each.
//!
//! These types describe routers to build (a lab namespace's nftables rules, a simulated NAT);
//! the workspace's vocabulary for what is *observed* is in `shared`
//! ([`shared::nat_classifier::NatType`], [`shared::nat_classifier::PortAllocation`], the offer
//! words in [`shared::rendezvous::offer`]). They convert into it with `From`: a router of type
//! `t` must be classified as `shared::nat_classifier::NatType::from(t)`, and a [`PunchNat`]
//! is announced in offers as `shared::punch::NatInfo::from(p)`. docs/DESIGN.md says which layer
//! uses which type.

use std::time::Duration;

/// How a NAT maps an inside (address, port) to an outside port ([RFC 4787 section 4.1]).
///
/// [RFC 4787 section 4.1]: https://www.rfc-editor.org/rfc/rfc4787#section-4.1
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// One mapping per inside endpoint, whatever the destination.
    EndpointIndependent,
    /// A new mapping per destination IP.
    AddressDependent,
    /// A new mapping per destination IP and port.
    AddressAndPortDependent,
}

/// Which inbound packets a mapping lets through ([RFC 4787 section 5]).
///
/// [RFC 4787 section 5]: https://www.rfc-editor.org/rfc/rfc4787#section-5
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filtering {
    /// From anyone, once the mapping exists.
    EndpointIndependent,
    /// Only from IPs the inside endpoint has sent to.
    AddressDependent,
    /// Only from IP:port pairs the inside endpoint has sent to.
    AddressAndPortDependent,
}

/// How a NAT picks outside ports for new mappings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortAllocation {
    /// Keep the inside port when it is free.
    Preserving,
    /// The next port after the last one allocated, `step` apart.
    Sequential {
        /// Distance between consecutive allocations.
        step: u16,
    },
    /// A random port.
    Random,
}

/// The classic NAT types, plus the firewall and blocked cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatType {
    /// No NAT and no filter: a public host.
    None,
    /// EIM + EIF.
    FullCone,
    /// EIM + ADF.
    RestrictedCone,
    /// EIM + APDF (what Linux `masquerade` does).
    PortRestrictedCone,
    /// EDM (address and port dependent) with random ports, APDF (Linux `masquerade random`).
    Symmetric,
    /// No translation, but stateful APDF filtering of inbound UDP.
    SymmetricUdpFirewall,
    /// No UDP gets through at all.
    UdpBlocked,
}

impl NatType {
    /// Every type, for matrix tests.
    pub const ALL: [NatType; 7] = [
        NatType::None,
        NatType::FullCone,
        NatType::RestrictedCone,
        NatType::PortRestrictedCone,
        NatType::Symmetric,
        NatType::SymmetricUdpFirewall,
        NatType::UdpBlocked,
    ];

    /// The name used on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            NatType::None => "none",
            NatType::FullCone => "full-cone",
            NatType::RestrictedCone => "restricted-cone",
            NatType::PortRestrictedCone => "port-restricted-cone",
            NatType::Symmetric => "symmetric",
            NatType::SymmetricUdpFirewall => "symmetric-udp-firewall",
            NatType::UdpBlocked => "udp-blocked",
        }
    }

    /// Parses [`NatType::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether the router translates addresses.
    pub fn translates(self) -> bool {
        !matches!(
            self,
            NatType::None | NatType::SymmetricUdpFirewall | NatType::UdpBlocked
        )
    }

    /// Mapping, filtering and allocation on RFC 4787's axes (`None` for no filter at all).
    pub fn behaviour(self) -> Option<(Mapping, Filtering, PortAllocation)> {
        use Filtering as F;
        use Mapping as M;
        match self {
            NatType::None | NatType::UdpBlocked => None,
            NatType::FullCone => Some((
                M::EndpointIndependent,
                F::EndpointIndependent,
                PortAllocation::Preserving,
            )),
            NatType::RestrictedCone => Some((
                M::EndpointIndependent,
                F::AddressDependent,
                PortAllocation::Preserving,
            )),
            NatType::PortRestrictedCone => Some((
                M::EndpointIndependent,
                F::AddressAndPortDependent,
                PortAllocation::Preserving,
            )),
            NatType::Symmetric => Some((
                M::AddressAndPortDependent,
                F::AddressAndPortDependent,
                PortAllocation::Random,
            )),
            NatType::SymmetricUdpFirewall => Some((
                M::EndpointIndependent,
                F::AddressAndPortDependent,
                PortAllocation::Preserving,
            )),
        }
    }
}

/// Options of one NAT router, the same in the lab and the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouterOptions {
    /// The router's type.
    pub nat: NatType,
    /// Whether an inside host can reach another inside host through the outside address.
    pub hairpin: bool,
    /// How long an idle UDP mapping lives.
    pub udp_timeout: Duration,
    /// Random loss in percent (0..=100) of UDP crossing the router, both directions.
    pub loss_percent: u8,
    /// Whether the router drops unsolicited inbound traffic to itself (real home routers do;
    /// without it the conntrack race of docs/DESIGN.md section 5 appears).
    pub drop_unsolicited: bool,
    /// Port allocation instead of the type's own (simulator only: the kernel's NAT preserves
    /// ports or randomises them, it cannot allocate sequentially).
    pub port_allocation: Option<PortAllocation>,
    /// Lab only: the site is dual stack (a global IPv6 prefix on the LAN, forwarded without
    /// translation through a stateful firewall). The simulator is IPv4 only and ignores it.
    pub ipv6: bool,
}

impl RouterOptions {
    /// A router of this type with hairpinning off, a 30 s timeout, no loss, and the inbound
    /// drop rule that home routers have.
    pub fn new(nat: NatType) -> Self {
        Self {
            nat,
            hairpin: false,
            udp_timeout: Duration::from_secs(30),
            loss_percent: 0,
            drop_unsolicited: true,
            port_allocation: None,
            ipv6: false,
        }
    }
}

/// What the raw probes of [`ProbeObservation`] must see behind each type. The simulator and
/// the real lab are both checked against this one table, which is how they are kept in
/// agreement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeObservation {
    /// Any reply at all to a datagram sent to the server's primary address and port.
    pub reachable: bool,
    /// The mapped address equals the client's own (no translation).
    pub mapped_is_local: bool,
    /// Same mapped port seen by the primary address and by the alternate address.
    pub same_mapping_other_ip: bool,
    /// Same mapped port seen by the primary address and by the primary address's other port.
    pub same_mapping_other_port: bool,
    /// After sending only to primary:primary-port, a datagram from primary:alternate-port
    /// gets in.
    pub inbound_from_other_port: bool,
    /// ... and one from alternate:primary-port.
    pub inbound_from_other_ip: bool,
}

impl NatType {
    /// What [`ProbeObservation`] must report behind this type.
    pub fn expected_probes(self) -> ProbeObservation {
        let all = |reachable, local, same_ip, same_port, from_port, from_ip| ProbeObservation {
            reachable,
            mapped_is_local: local,
            same_mapping_other_ip: same_ip,
            same_mapping_other_port: same_port,
            inbound_from_other_port: from_port,
            inbound_from_other_ip: from_ip,
        };
        match self {
            NatType::None => all(true, true, true, true, true, true),
            NatType::FullCone => all(true, false, true, true, true, true),
            NatType::RestrictedCone => all(true, false, true, true, true, false),
            NatType::PortRestrictedCone => all(true, false, true, true, false, false),
            NatType::Symmetric => all(true, false, false, false, false, false),
            NatType::SymmetricUdpFirewall => all(true, true, true, true, false, false),
            NatType::UdpBlocked => all(false, false, false, false, false, false),
        }
    }
}

impl NatType {
    /// What the classifier must report behind this type: the verdict, mapping and filtering
    /// (one table for the simulator tests, the lab tests and the benchmark).
    pub fn expected_classification(
        self,
    ) -> (
        shared::nat_classifier::NatType,
        Option<shared::nat_classifier::Behaviour>,
        Option<shared::nat_classifier::Behaviour>,
    ) {
        use shared::nat_classifier::Behaviour::*;
        use shared::nat_classifier::NatType as Verdict;
        match self {
            NatType::None => (Verdict::OpenInternet, Some(EndpointIndependent), None),
            NatType::FullCone => (
                Verdict::FullCone,
                Some(EndpointIndependent),
                Some(EndpointIndependent),
            ),
            NatType::RestrictedCone => (
                Verdict::RestrictedCone,
                Some(EndpointIndependent),
                Some(AddressDependent),
            ),
            NatType::PortRestrictedCone => (
                Verdict::PortRestrictedCone,
                Some(EndpointIndependent),
                Some(AddressAndPortDependent),
            ),
            NatType::Symmetric => (
                Verdict::Symmetric,
                Some(AddressAndPortDependent),
                Some(AddressAndPortDependent),
            ),
            NatType::SymmetricUdpFirewall => (
                Verdict::SymmetricUdpFirewall,
                Some(EndpointIndependent),
                Some(AddressAndPortDependent),
            ),
            NatType::UdpBlocked => (Verdict::UdpBlocked, None, None),
        }
    }
}

/// The NATs of the hole-punching matrix: the classic types, with the symmetric one split by
/// port allocation (which decides between prediction and the birthday method).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PunchNat {
    /// No NAT: a public host.
    Open,
    /// Full cone.
    FullCone,
    /// Restricted cone.
    RestrictedCone,
    /// Port-restricted cone.
    PortRestrictedCone,
    /// Symmetric, random ports (Linux `masquerade random`).
    SymmetricRandom,
    /// Symmetric, sequential ports a step of 1 apart (simulator only).
    SymmetricSequential,
}

/// What hole punching between two NATs must end in (one table for the simulator and,
/// later, the lab).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpectedPunch {
    /// Both sides connect directly, every time.
    Direct,
    /// Both sides connect directly through the birthday method: in at least 9 of 10 seeds.
    Birthday,
    /// No direct path: both sides report failure within the bounded time (the relay
    /// carries the chat).
    Relay,
}

impl PunchNat {
    /// Every NAT of the matrix.
    pub const ALL: [PunchNat; 6] = [
        PunchNat::Open,
        PunchNat::FullCone,
        PunchNat::RestrictedCone,
        PunchNat::PortRestrictedCone,
        PunchNat::SymmetricRandom,
        PunchNat::SymmetricSequential,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            PunchNat::Open => "none",
            PunchNat::FullCone => "full-cone",
            PunchNat::RestrictedCone => "restricted-cone",
            PunchNat::PortRestrictedCone => "port-restricted",
            PunchNat::SymmetricRandom => "symmetric-random",
            PunchNat::SymmetricSequential => "symmetric-sequential",
        }
    }

    /// The router type.
    pub fn nat_type(self) -> NatType {
        NatType::from(self)
    }

    /// Whether the mapping depends on the destination.
    pub fn is_symmetric(self) -> bool {
        self.nat_type() == NatType::Symmetric
    }
}

impl From<PunchNat> for NatType {
    fn from(p: PunchNat) -> NatType {
        match p {
            PunchNat::Open => NatType::None,
            PunchNat::FullCone => NatType::FullCone,
            PunchNat::RestrictedCone => NatType::RestrictedCone,
            PunchNat::PortRestrictedCone => NatType::PortRestrictedCone,
            PunchNat::SymmetricRandom | PunchNat::SymmetricSequential => NatType::Symmetric,
        }
    }
}

impl PunchNat {
    /// A router of this kind (home-router defaults of [`RouterOptions::new`]).
    pub fn router_options(self) -> RouterOptions {
        RouterOptions {
            port_allocation: (self == PunchNat::SymmetricSequential)
                .then_some(PortAllocation::Sequential { step: 1 }),
            ..RouterOptions::new(self.nat_type())
        }
    }

    /// What the classifier reports for this NAT, as an offer carries it (`nat=`, `alloc=`).
    pub fn classified(self) -> shared::punch::NatInfo {
        shared::punch::NatInfo::from(self)
    }
}

impl From<PunchNat> for shared::punch::NatInfo {
    fn from(p: PunchNat) -> shared::punch::NatInfo {
        use shared::nat_classifier::PortAllocation as Alloc;
        let verdict = shared::nat_classifier::NatType::from(p.nat_type());
        let allocation = match p {
            PunchNat::Open => None,
            PunchNat::SymmetricRandom => Some(Alloc::Random),
            PunchNat::SymmetricSequential => Some(Alloc::Sequential { step: 1 }),
            _ => Some(Alloc::Preserving),
        };
        shared::punch::NatInfo::new(verdict, allocation)
    }
}

/// The classification a router of this type must get.
impl From<NatType> for shared::nat_classifier::NatType {
    fn from(t: NatType) -> shared::nat_classifier::NatType {
        use shared::nat_classifier::NatType as Verdict;
        match t {
            NatType::None => Verdict::OpenInternet,
            NatType::FullCone => Verdict::FullCone,
            NatType::RestrictedCone => Verdict::RestrictedCone,
            NatType::PortRestrictedCone => Verdict::PortRestrictedCone,
            NatType::Symmetric => Verdict::Symmetric,
            NatType::SymmetricUdpFirewall => Verdict::SymmetricUdpFirewall,
            NatType::UdpBlocked => Verdict::UdpBlocked,
        }
    }
}

/// The allocation a router configured so must be observed to have.
impl From<PortAllocation> for shared::nat_classifier::PortAllocation {
    fn from(p: PortAllocation) -> shared::nat_classifier::PortAllocation {
        use shared::nat_classifier::PortAllocation as Observed;
        match p {
            PortAllocation::Preserving => Observed::Preserving,
            PortAllocation::Sequential { step } => Observed::Sequential {
                step: i32::from(step),
            },
            PortAllocation::Random => Observed::Random,
        }
    }
}

/// What hole punching between `a` and `b` must end in (symmetric in its arguments): direct
/// unless both are symmetric; the birthday method for symmetric-random against
/// port-restricted; prediction makes symmetric-sequential against port-restricted direct.
pub fn expected_punch(a: PunchNat, b: PunchNat) -> ExpectedPunch {
    use PunchNat::{PortRestrictedCone as Pr, SymmetricRandom as Random};
    match (a, b) {
        _ if a.is_symmetric() && b.is_symmetric() => ExpectedPunch::Relay,
        (Random, Pr) | (Pr, Random) => ExpectedPunch::Birthday,
        _ => ExpectedPunch::Direct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::nat_classifier::NatType as Verdict;
    use shared::rendezvous::offer::{AllocKind, OfferNat};

    /// The router types and the classifier's vocabulary agree: the conversion is the table the
    /// lab and simulator tests assert, and the names are the classifier's (but "none").
    #[test]
    fn router_types_convert_into_the_shared_vocabulary() {
        for t in NatType::ALL {
            assert_eq!(Verdict::from(t), t.expected_classification().0, "{t:?}");
            if t != NatType::None {
                assert_eq!(Verdict::from(t).as_str(), t.name(), "{t:?}");
            }
        }
        assert_eq!(Verdict::from(NatType::None).as_str(), "open-internet");
    }

    /// A punching NAT announces what its router is classified as, with its allocation, in the
    /// offer words.
    #[test]
    fn punch_nats_announce_their_router_type() {
        for p in PunchNat::ALL {
            let info = shared::punch::NatInfo::from(p);
            assert_eq!(info.nat_type, Some(Verdict::from(p.nat_type())), "{p:?}");
            let options = p.router_options();
            let configured = options
                .port_allocation
                .or(options.nat.behaviour().map(|(_, _, a)| a));
            if p != PunchNat::Open {
                assert_eq!(info.port_allocation, configured.map(Into::into), "{p:?}");
            }
            let word = OfferNat::from(info.nat_type.unwrap());
            assert_eq!(word.to_string().parse::<OfferNat>(), Ok(word));
            if let Some(alloc) = info.port_allocation {
                let kind = AllocKind::from(alloc);
                assert_eq!(kind.to_string().parse::<AllocKind>(), Ok(kind));
            }
        }
        assert_eq!(
            OfferNat::from(Verdict::from(PunchNat::PortRestrictedCone.nat_type())).as_str(),
            PunchNat::PortRestrictedCone.name()
        );
    }
}
