//! Offers and introductions: the `key= nat= alloc= cand=` parameters a peer sends about itself,
//! and the `ITR` push that hands them to the other peer (docs/PROTOCOL.md section 8).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use shared::identity::Fingerprint;
use shared::rendezvous::{SessionId, UserName};

use super::b64;

/// The most `cand=` parameters in one offer: the server's limit.
pub use shared::rendezvous::server::MAX_CANDIDATES;

/// Defines a closed set of wire words with `word()`, `FromStr` and `Display`.
macro_rules! wire_words {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The word on the wire.
            pub fn word(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl FromStr for $name {
            type Err = OfferError;
            fn from_str(s: &str) -> Result<Self, OfferError> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(OfferError(format!(
                        concat!("unknown ", stringify!($name), " {:?}"),
                        clip(s)
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.word())
            }
        }
    };
}

// The offer's words are shared's, the ones the server checks: one vocabulary for both sides.
// The client's names (`NatKind`, `Allocation`) are kept as aliases.
pub use shared::rendezvous::offer::{
    AllocKind as Allocation, CandidateKind, OfferNat as NatKind, UnknownWord,
};

wire_words! {
    /// Our side of the Noise handshake in an introduction (`role=`).
    Role {
        /// We start the handshake (we invited).
        Initiator => "initiator",
        /// We answer it.
        Responder => "responder",
    }
}

/// An offer or introduction that does not parse, or an offer that cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad offer: {0}")]
pub struct OfferError(pub String);

impl From<UnknownWord> for OfferError {
    fn from(e: UnknownWord) -> OfferError {
        OfferError(e.to_string())
    }
}

fn clip(s: &str) -> String {
    s.chars().take(60).collect()
}

/// One address a peer can perhaps be reached at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// Where it comes from.
    pub kind: CandidateKind,
    /// The address (IPv6 in brackets on the wire).
    pub addr: SocketAddr,
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.addr)
    }
}

impl FromStr for Candidate {
    type Err = OfferError;
    fn from_str(s: &str) -> Result<Candidate, OfferError> {
        let (kind, addr) = s
            .split_once('/')
            .ok_or_else(|| OfferError(format!("candidate without kind: {:?}", clip(s))))?;
        Ok(Candidate {
            kind: kind.parse()?,
            addr: addr
                .parse()
                .map_err(|_| OfferError(format!("bad candidate address {:?}", clip(addr))))?,
        })
    }
}

/// What a peer sends about itself with `INV` or `ANS`, and receives about the other in `ITR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The X25519 public key for the Noise session (`key=`, required).
    pub key: [u8; 32],
    /// The NAT classification, if known (`nat=`).
    pub nat: Option<NatKind>,
    /// The port allocation, if known (`alloc=`).
    pub alloc: Option<Allocation>,
    /// Addresses to try, at most [`MAX_CANDIDATES`] (`cand=`, in order).
    pub candidates: Vec<Candidate>,
}

impl Offer {
    /// An offer with only a key.
    pub fn new(key: [u8; 32]) -> Offer {
        Offer {
            key,
            nat: None,
            alloc: None,
            candidates: Vec::new(),
        }
    }

    /// The parameters, in the order of the protocol's examples: `key= [nat=] [alloc=] cand=...`.
    pub fn to_params(&self) -> Vec<String> {
        let mut params = vec![format!("key={}", b64::encode(&self.key))];
        params.extend(self.nat.map(|n| format!("nat={n}")));
        params.extend(self.alloc.map(|a| format!("alloc={a}")));
        params.extend(self.candidates.iter().map(|c| format!("cand={c}")));
        params
    }

    /// Parses offer parameters out of `params` (which may hold others: keys this version does
    /// not know, and parameters without `=`, are ignored). Each known key must be well formed;
    /// `key=` is required, `nat=` and `alloc=` may appear once, `cand=` up to eight times.
    pub fn from_params<S: AsRef<str>>(params: &[S]) -> Result<Offer, OfferError> {
        let mut key = None;
        let mut offer = Offer::new([0; 32]);
        for p in params {
            let Some((k, v)) = p.as_ref().split_once('=') else {
                continue;
            };
            let seen = match k {
                "key" => key.is_some(),
                "nat" => offer.nat.is_some(),
                "alloc" => offer.alloc.is_some(),
                _ => false,
            };
            if seen {
                return Err(OfferError(format!("{k}= given twice")));
            }
            match k {
                "key" => {
                    let bytes = b64::decode(v)
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .ok_or_else(|| OfferError("key= is not 32 bytes of base64".into()))?;
                    key = Some(bytes);
                }
                "nat" => offer.nat = Some(v.parse()?),
                "alloc" => offer.alloc = Some(v.parse()?),
                "cand" => offer.candidates.push(v.parse()?),
                _ => {}
            }
        }
        offer.key = key.ok_or_else(|| OfferError("key= missing".into()))?;
        offer.check()?;
        Ok(offer)
    }

    /// Whether the offer can be sent (at most [`MAX_CANDIDATES`] candidates).
    pub fn check(&self) -> Result<(), OfferError> {
        if self.candidates.len() > MAX_CANDIDATES {
            return Err(OfferError(format!(
                "{} candidates (at most {MAX_CANDIDATES})",
                self.candidates.len()
            )));
        }
        Ok(())
    }
}

/// A switchboard ticket (`ticket=`): 16 bytes, hex on the wire, valid once within 60 s.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SwitchboardTicket(pub [u8; 16]);

impl fmt::Display for SwitchboardTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for SwitchboardTicket {
    /// Tickets are credentials: only a prefix is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SwitchboardTicket({}..)", &hex(&self.0)[..4])
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex16(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Parses a session id: 32 hex digits.
pub fn parse_session_id(s: &str) -> Option<SessionId> {
    unhex16(s).map(SessionId)
}

/// An `ITR` push: the server introduced us to `peer` (docs/PROTOCOL.md section 8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introduction {
    /// The session id.
    pub sid: SessionId,
    /// Whom we are introduced to.
    pub peer: UserName,
    /// Our role in the Noise handshake (`role=`).
    pub role: Role,
    /// Start punching this long after receiving the introduction (`start=`, milliseconds).
    pub start: Duration,
    /// Our ticket for the switchboard (`ticket=`), if the server runs one.
    pub ticket: Option<SwitchboardTicket>,
    /// The switchboard's address (`sb=`), if the server runs one.
    pub switchboard: Option<SocketAddr>,
    /// The fingerprint of the switchboard's certificate key (`sbfp=`): the relay connection
    /// accepts exactly this key, and is not used without it.
    pub switchboard_fingerprint: Option<Fingerprint>,
    /// The peer's offer.
    pub offer: Offer,
}

impl Introduction {
    /// Parses the parameters of an `ITR` line:
    /// `sid peer role= start= [ticket=] [sb=] [sbfp=] offer...`.
    pub fn from_params<S: AsRef<str>>(params: &[S]) -> Result<Introduction, String> {
        let get = |i: usize| params.get(i).map(AsRef::as_ref);
        let keyed = |key: &str| {
            params
                .iter()
                .find_map(|p| p.as_ref().strip_prefix(key)?.strip_prefix('='))
        };
        let bad = |what: &str| format!("bad ITR: {what}");
        let sid = get(0)
            .and_then(parse_session_id)
            .ok_or_else(|| bad("session id"))?;
        let peer = get(1)
            .and_then(|n| UserName::parse(n).ok())
            .ok_or_else(|| bad("peer name"))?;
        let role = keyed("role")
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| bad("role="))?;
        let start = keyed("start")
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|&ms| ms <= 60_000)
            .map(Duration::from_millis)
            .ok_or_else(|| bad("start="))?;
        let ticket = keyed("ticket")
            .map(|t| {
                unhex16(t)
                    .map(SwitchboardTicket)
                    .ok_or_else(|| bad("ticket="))
            })
            .transpose()?;
        let switchboard = keyed("sb")
            .map(|a| a.parse().map_err(|_| bad("sb=")))
            .transpose()?;
        let switchboard_fingerprint = keyed("sbfp")
            .map(|f| f.parse().map_err(|_| bad("sbfp=")))
            .transpose()?;
        let offer =
            Offer::from_params(&params[2.min(params.len())..]).map_err(|e| e.to_string())?;
        Ok(Introduction {
            sid,
            peer,
            role,
            start,
            ticket,
            switchboard,
            switchboard_fingerprint,
            offer,
        })
    }

    /// The parameters of the `ITR` line (the inverse of [`from_params`](Self::from_params)).
    pub fn to_params(&self) -> Vec<String> {
        let mut params = vec![
            self.sid.to_string(),
            self.peer.to_string(),
            format!("role={}", self.role),
            format!("start={}", self.start.as_millis()),
        ];
        params.extend(self.ticket.map(|t| format!("ticket={t}")));
        params.extend(self.switchboard.map(|a| format!("sb={a}")));
        params.extend(self.switchboard_fingerprint.map(|f| format!("sbfp={f}")));
        params.extend(self.offer.to_params());
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::nat_classifier::{NatType, PortAllocation};

    fn offer() -> Offer {
        Offer {
            key: [7; 32],
            nat: Some(NatKind::PortRestricted),
            alloc: Some(Allocation::Sequential),
            candidates: vec![
                "host/10.0.1.2:40000".parse().unwrap(),
                "srflx/[2001:db8::7]:61000".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn offer_formats_as_the_protocol_shows() {
        assert_eq!(
            offer().to_params(),
            [
                "key=BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
                "nat=port-restricted",
                "alloc=sequential",
                "cand=host/10.0.1.2:40000",
                "cand=srflx/[2001:db8::7]:61000",
            ]
        );
        assert_eq!(Offer::new([0; 32]).to_params().len(), 1);
    }

    #[test]
    fn offer_round_trips_and_ignores_unknown_keys() {
        let mut params = offer().to_params();
        assert_eq!(Offer::from_params(&params), Ok(offer()));
        params.insert(0, "bob".into());
        params.push("future=thing".into());
        assert_eq!(Offer::from_params(&params), Ok(offer()));
    }

    #[test]
    fn malformed_offers_are_refused() {
        let key = offer().to_params()[0].clone();
        let cases: &[&[&str]] = &[
            &[],
            &["nat=open"],
            &["key=AAAA"],
            &["key=!!!"],
            &[&key, &key],
            &[&key, "nat=cone"],
            &[&key, "nat=open", "nat=open"],
            &[&key, "alloc=odd"],
            &[&key, "cand=turn/1.2.3.4:5"],
            &[&key, "cand=host/1.2.3.4"],
            &[&key, "cand=1.2.3.4:5"],
        ];
        for case in cases {
            assert!(Offer::from_params(case).is_err(), "{case:?}");
        }
        let nine: Vec<String> = std::iter::once(key)
            .chain((0..9).map(|i| format!("cand=host/10.0.0.1:{}", 1000 + i)))
            .collect();
        assert!(
            Offer::from_params(&nine)
                .unwrap_err()
                .0
                .contains("at most 8")
        );
    }

    #[test]
    fn nat_words_cover_the_classifier() {
        assert_eq!(NatKind::from(NatType::OpenInternet).as_str(), "open");
        assert_eq!(
            NatKind::from(NatType::SymmetricUdpFirewall),
            NatKind::SymmetricFirewall
        );
        assert_eq!(
            Allocation::from(PortAllocation::Sequential { step: 2 }),
            Allocation::Sequential
        );
        for word in [
            "open",
            "full-cone",
            "restricted",
            "port-restricted",
            "symmetric",
        ] {
            assert_eq!(word.parse::<NatKind>().unwrap().as_str(), word);
        }
    }

    #[test]
    fn introduction_round_trips() {
        let itr = "5f0c2b00112233445566778899aabbcc bob role=initiator start=250 \
                   ticket=9d1e00112233445566778899aabbccdd sb=127.0.0.1:1865 \
                   sbfp=SHA256:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE \
                   key=BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc= nat=port-restricted \
                   alloc=sequential cand=host/10.0.1.2:40000 cand=srflx/[2001:db8::7]:61000";
        let params: Vec<&str> = itr.split(' ').collect();
        let intro = Introduction::from_params(&params).unwrap();
        assert_eq!(intro.sid.to_string(), "5f0c2b00112233445566778899aabbcc");
        assert_eq!(intro.peer.as_str(), "bob");
        assert_eq!(intro.role, Role::Initiator);
        assert_eq!(intro.start, Duration::from_millis(250));
        assert_eq!(
            intro.ticket.unwrap().to_string(),
            "9d1e00112233445566778899aabbccdd"
        );
        assert_eq!(intro.switchboard, Some("127.0.0.1:1865".parse().unwrap()));
        assert_eq!(intro.switchboard_fingerprint, Some(Fingerprint([1; 32])));
        assert_eq!(intro.offer, offer());
        assert_eq!(intro.to_params(), params);
        assert!(
            !format!("{intro:?}").contains("9d1e0011"),
            "tickets stay out of logs"
        );
    }

    #[test]
    fn malformed_introductions_are_refused() {
        let good = "00112233445566778899aabbccddeeff bob role=responder start=0 \
                    key=BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
        assert!(Introduction::from_params(&good.split(' ').collect::<Vec<_>>()).is_ok());
        for (from, to) in [
            ("00112233445566778899aabbccddeeff", "0011"),
            ("bob", "B@b"),
            ("role=responder", "role=boss"),
            ("start=0", "start=-1"),
            ("start=0", "start=0 ticket=xyz"),
            ("start=0", "start=0 sb=nowhere"),
            ("start=0", "start=0 sbfp=SHA256:short"),
            (" key=", " kex="),
        ] {
            let bad = good.replacen(from, to, 1);
            let params: Vec<&str> = bad.split(' ').collect();
            assert!(Introduction::from_params(&params).is_err(), "{bad}");
        }
        assert!(Introduction::from_params::<&str>(&[]).is_err());
    }
}
