//! The words of an offer (`INV`, `ANS`) and an introduction (`ITR`): what a peer says about its
//! NAT (`nat=`), its port allocation (`alloc=`) and its candidates (`cand=kind/ip:port`), in
//! docs/PROTOCOL.md section 8. Defined once, here, for the server (which checks them) and the
//! client (which writes them), with [`std::str::FromStr`] and [`std::fmt::Display`] for the
//! wire form.
//!
//! ```
//! use shared::nat_classifier::NatType;
//! use shared::rendezvous::offer::{AllocKind, CandidateKind, OfferNat};
//! assert_eq!(OfferNat::from(NatType::PortRestrictedCone).to_string(), "port-restricted");
//! assert_eq!("sequential".parse(), Ok(AllocKind::Sequential));
//! assert_eq!(CandidateKind::Srflx.as_str(), "srflx");
//! assert!("cone".parse::<OfferNat>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use crate::nat_classifier::NatType;

/// A word that is not one of its vocabulary's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {vocabulary} {word:?}")]
#[non_exhaustive]
pub struct UnknownWord {
    /// Which vocabulary (`nat`, `alloc`, `candidate kind`).
    pub vocabulary: &'static str,
    /// The word, cut to 32 characters.
    pub word: String,
}

macro_rules! words {
    ($(#[$doc:meta])* $name:ident, $vocabulary:literal { $($(#[$vdoc:meta])* $variant:ident => $word:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// Every word, in the order docs/PROTOCOL.md lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The wire form.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)*
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;
            fn from_str(word: &str) -> Result<Self, UnknownWord> {
                Self::ALL.iter().copied().find(|w| w.as_str() == word).ok_or_else(|| UnknownWord {
                    vocabulary: $vocabulary,
                    word: word.chars().take(32).collect(),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
// The telemetry words (`telemetry.rs`) are written the same way.
pub(crate) use words;

words! {
    /// `nat=`: the NAT type a peer reports (its classification, [`NatType`], in offer words).
    OfferNat, "nat" {
        /// No NAT.
        Open => "open",
        /// Full cone.
        FullCone => "full-cone",
        /// Restricted cone.
        Restricted => "restricted",
        /// Port-restricted cone.
        PortRestricted => "port-restricted",
        /// Symmetric.
        Symmetric => "symmetric",
        /// No translation, stateful filter.
        SymmetricFirewall => "symmetric-firewall",
        /// No UDP.
        UdpBlocked => "udp-blocked",
        /// Not classified (or the server could not tell).
        Unknown => "unknown",
    }
}

words! {
    /// `alloc=`: how the peer's NAT picks outside ports.
    AllocKind, "alloc" {
        /// Keeps the inside port.
        Preserving => "preserving",
        /// The next port after the last.
        Sequential => "sequential",
        /// A random port.
        Random => "random",
    }
}

words! {
    /// The kind in `cand=kind/ip:port`.
    CandidateKind, "candidate kind" {
        /// An address of the peer's own interface.
        Host => "host",
        /// Server reflexive: the peer's address as a STUN server saw it.
        Srflx => "srflx",
        /// A relay's address.
        Relay => "relay",
        /// A port mapping the peer's gateway granted (PCP, NAT-PMP): reachable from anyone.
        Mapped => "mapped",
    }
}

impl From<NatType> for OfferNat {
    fn from(t: NatType) -> OfferNat {
        match t {
            NatType::OpenInternet => OfferNat::Open,
            NatType::FullCone => OfferNat::FullCone,
            NatType::RestrictedCone => OfferNat::Restricted,
            NatType::PortRestrictedCone => OfferNat::PortRestricted,
            NatType::Symmetric => OfferNat::Symmetric,
            NatType::SymmetricUdpFirewall => OfferNat::SymmetricFirewall,
            NatType::UdpBlocked => OfferNat::UdpBlocked,
            NatType::UnsupportedServer => OfferNat::Unknown,
        }
    }
}

impl OfferNat {
    /// The classification this word stands for, the inverse of `From<NatType>`: a peer's
    /// announcement becomes the observed vocabulary its punching configuration is written in
    /// ([`crate::punch::NatInfo::announced`]). `unknown` claims none.
    pub fn nat_type(self) -> Option<NatType> {
        match self {
            OfferNat::Open => Some(NatType::OpenInternet),
            OfferNat::FullCone => Some(NatType::FullCone),
            OfferNat::Restricted => Some(NatType::RestrictedCone),
            OfferNat::PortRestricted => Some(NatType::PortRestrictedCone),
            OfferNat::Symmetric => Some(NatType::Symmetric),
            OfferNat::SymmetricFirewall => Some(NatType::SymmetricUdpFirewall),
            OfferNat::UdpBlocked => Some(NatType::UdpBlocked),
            OfferNat::Unknown => None,
        }
    }
}

impl AllocKind {
    /// The allocation this word stands for. The offer carries no step, so a sequential NAT is
    /// taken to step by 1 (what [`crate::punch::NatInfo`] documents for that case).
    pub fn port_allocation(self) -> crate::nat_classifier::PortAllocation {
        use crate::nat_classifier::PortAllocation as P;
        match self {
            AllocKind::Preserving => P::Preserving,
            AllocKind::Sequential => P::Sequential { step: 1 },
            AllocKind::Random => P::Random,
        }
    }
}

impl From<crate::nat_classifier::PortAllocation> for AllocKind {
    fn from(p: crate::nat_classifier::PortAllocation) -> AllocKind {
        use crate::nat_classifier::PortAllocation as P;
        match p {
            P::Preserving => AllocKind::Preserving,
            P::Sequential { .. } => AllocKind::Sequential,
            P::Random => AllocKind::Random,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_match_the_protocol() {
        let nat: Vec<&str> = OfferNat::ALL.iter().map(|w| w.as_str()).collect();
        assert_eq!(
            nat,
            [
                "open",
                "full-cone",
                "restricted",
                "port-restricted",
                "symmetric",
                "symmetric-firewall",
                "udp-blocked",
                "unknown"
            ]
        );
        for w in OfferNat::ALL {
            assert_eq!(w.to_string().parse::<OfferNat>(), Ok(*w));
        }
        for w in AllocKind::ALL {
            assert_eq!(w.to_string().parse::<AllocKind>(), Ok(*w));
        }
        for w in CandidateKind::ALL {
            assert_eq!(w.to_string().parse::<CandidateKind>(), Ok(*w));
        }
        let err = "Open".parse::<OfferNat>().unwrap_err();
        assert_eq!(err.to_string(), "unknown nat \"Open\"");
    }

    /// Every verdict a classification can give.
    const EVERY_VERDICT: [NatType; 8] = [
        NatType::OpenInternet,
        NatType::FullCone,
        NatType::RestrictedCone,
        NatType::PortRestrictedCone,
        NatType::Symmetric,
        NatType::SymmetricUdpFirewall,
        NatType::UdpBlocked,
        NatType::UnsupportedServer,
    ];

    #[test]
    fn every_classification_has_a_distinct_word() {
        let words: std::collections::HashSet<OfferNat> =
            EVERY_VERDICT.into_iter().map(OfferNat::from).collect();
        assert_eq!(words.len(), OfferNat::ALL.len());
    }

    #[test]
    fn words_convert_back_to_what_was_observed() {
        use crate::nat_classifier::PortAllocation;
        for t in EVERY_VERDICT {
            // The server that cannot classify claims no type, so its word claims none back.
            let back = (t != NatType::UnsupportedServer).then_some(t);
            assert_eq!(OfferNat::from(t).nat_type(), back, "{t:?}");
        }
        assert_eq!(OfferNat::Unknown.nat_type(), None);
        for w in AllocKind::ALL {
            assert_eq!(AllocKind::from(w.port_allocation()), *w);
        }
        assert_eq!(
            AllocKind::Sequential.port_allocation(),
            PortAllocation::Sequential { step: 1 }
        );
    }
}
