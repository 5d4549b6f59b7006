//! UDP hole punching after an introduction (PROTOCOL.md section 8), as a sans-IO state
//! machine.
//!
//! Both peers send probes from their endpoint socket (the socket whose mapping STUN reported)
//! to every candidate of the other, starting at the shared start time, answer every probe with
//! an ack, and call a path confirmed when an ack to one of their own probes comes back: that
//! proves our packets reach the peer and the peer's reach us. The address the ack came from
//! (peer-reflexive, possibly none of the candidates) is the path.
//!
//! # Driving it
//! In the order every core here uses ([`crate::transmit`]): transmits, then events, then the
//! timeout.
//! ```no_run
//! # use std::time::{Duration, Instant};
//! # use shared::punch::*;
//! # fn send(_: &Transmit, _: &[u8]) {}
//! # fn relay_primed_to_peer() {}
//! # let (config, start) = (PunchConfig::default(), Instant::now());
//! let mut puncher = Puncher::new(config, start, 7)?;
//! let mut buf = [0u8; 64];
//! loop {
//!     // 1. After new() and after every handle_*(): drain transmits first (with the TTL they
//!     //    name, from the socket they name) ...
//!     while let Some(t) = puncher.poll_transmit(Instant::now(), &mut buf) {
//!         send(&t, &buf[..t.size]);
//!     }
//!     // 2. ... then events ...
//!     while let Some(event) = puncher.poll_event() {
//!         match event {
//!             PunchEvent::OpenSockets(n) => { /* open n sockets */
//!                 puncher.handle_sockets_opened(Instant::now(), n) }
//!             PunchEvent::Primed => relay_primed_to_peer(), // via the rendezvous server
//!             PunchEvent::Connected { socket, remote } => { /* switch the chat to it */ }
//!             PunchEvent::Failed | PunchEvent::PathLost => { /* use the relay */ }
//!             _ => {}
//!         }
//!     }
//!     // 3. ... then sleep until poll_timeout() or a datagram, and feed what happened:
//!     //    handle_datagram(now, socket, from, data) for every datagram on a punch socket
//!     //    (false: not a punch packet, give it to the chat), handle_peer_primed(now) when
//!     //    the server relays the peer's signal, handle_timeout(now) when the time is up.
//!     //    An input made inside step 2 (handle_sockets_opened) is followed by step 1 again.
//!     let Some(deadline) = puncher.poll_timeout() else { break };
//!     # let _ = deadline; break;
//! }
//! # Ok::<(), PunchError>(())
//! ```
//!
//! # The conntrack race, and priming
//! A NAT router without an inbound drop rule keeps a conntrack entry for a peer's probe that
//! arrives before our first packet to that peer; our packet then clashes with it and leaves
//! from another outside port, so both sides send to ports that drop them (docs/DESIGN.md section 5,
//! "poisoning"). So each side first *primes* its own NAT: it sends every target a probe whose
//! TTL ([`PunchConfig::prime_ttl`], default 2) expires after our NAT and before the peer's,
//! which creates our mapping and its permission without touching the peer's NAT. Priming is
//! sent [`PunchConfig::prime_count`] times (default 3, 10 ms apart) against loss. Then the
//! puncher emits [`PunchEvent::Primed`] for the driver to relay through the rendezvous
//! server, and full probes start only when the peer's signal has arrived too
//! ([`Puncher::handle_peer_primed`]; a probe from the peer counts as well, since a peer
//! primes before it probes), or [`PunchConfig::peer_primed_timeout`] (1 s) after our own
//! priming without it. Measured on real kernels, a peer that starts 0.3 s late is poisoned
//! again without this wait. A host with no NAT has nothing to prime and signals at once.
//!
//! # Strategies
//! [`Strategy::choose`] picks one from both classifications (both peers compute the same):
//!
//! | we \ peer | not symmetric | symmetric, sequential | symmetric, random |
//! |---|---|---|---|
//! | not symmetric | candidates + peer-reflexive | + predicted ports | port-restricted: birthday prober; otherwise peer-reflexive |
//! | symmetric, sequential | peer-reflexive (the peer predicts) | give up | give up |
//! | symmetric, random | port-restricted peer: birthday listener; otherwise peer-reflexive | give up | give up |
//!
//! - **Prediction**: the peer's server-reflexive port plus `k * step` for
//!   `k = 1..=`[`PunchConfig::predicted_ports`] (16), primed and probed like candidates. The
//!   symmetric side primes the peer's server-reflexive candidate first, so its first new
//!   mapping is the port predicted first.
//! - **Birthday method** ([`Strategy::BirthdayListen`] / [`Strategy::BirthdayProbe`]): the
//!   symmetric side asks for [`PunchConfig::birthday_sockets`] (256) extra sockets
//!   ([`PunchEvent::OpenSockets`]) and primes a mapping from each of them and the endpoint
//!   socket (257 mappings) towards the peer's server-reflexive address; it sends no full
//!   probe until one of them is found, so nothing of it reaches (and poisons) the peer's
//!   NAT. The port-restricted side probes [`PunchConfig::birthday_probes`] (2,048) distinct
//!   random ports of the symmetric side's public IP from [`PunchConfig::birthday_ports`]
//!   (1024..=65535), at [`PunchConfig::birthday_rate`] (1,000 per second, so 2.05 s). A
//!   probe that hits an open mapping passes its filter (the mapping was opened towards
//!   exactly our address); that extra socket acks and probes back, and becomes the chat's
//!   endpoint ([`PunchEvent::Connected`] names it). With `k` mappings in `R` ports and `n`
//!   probes, P(success) = 1 - C(R-k, n)/C(R, n) ([`birthday_success_probability`]):
//!   99.975 % for k = 257, n = 2,048 over R = 64,512 ports; 99.9999996 % if the NAT uses
//!   Linux's 28,232-port range; 99.77 % when only 73 % of probes arrive (10 % loss on three
//!   hops). The first hit comes after R/(k+1), about 250 probes (0.25 s), on average. The
//!   probes burst no faster than 1,000 small datagrams a second, for two seconds.
//! - **Both symmetric**: candidates are probed plainly (a shared LAN still connects) and the
//!   puncher reports [`PunchEvent::Failed`] after the bounded rounds; the relay carries the
//!   chat.
//!
//! # IPv6
//! Candidates of both families are probed in the same rounds, IPv6 first; a side without
//! IPv6 of its own ([`PunchConfig::ipv6`] off) leaves the peer's IPv6 candidates out. With no
//! NAT66 a peer's global IPv6 address is its host candidate and reachable as it is; what
//! stands in the way is a stateful firewall on each side that lets in only replies, which the
//! priming probes and the simultaneous full probes open exactly as for a port-restricted NAT.
//! So over IPv6 the NAT types do not matter: two symmetric NATs still get a direct IPv6 path.
//! IPv6 is preferred (RFC 8421): an ack over IPv4 while IPv6 targets are probed is held for
//! [`PunchConfig::ipv6_wait`] (500 ms), and an ack over IPv6 in that time wins; otherwise,
//! or when probing ends, the IPv4 path is taken.
//!
//! # Bounds
//! Full probes go to every target every [`PunchConfig::probe_interval`] (100 ms) for
//! [`PunchConfig::probe_rounds`] (50) rounds; [`PunchEvent::Failed`] comes
//! [`PunchConfig::final_wait`] (1 s) after the last round and the last birthday probe: at most
//! about 7 s after the start (priming, up to 1 s waiting for the peer, 5 s of rounds, 1 s).
//! Probes keep being answered after connecting, since the peer may confirm later.
//!
//! # Keepalives and path loss
//! After connecting, a keepalive probe goes to the peer every
//! [`PunchConfig::keepalive_interval`] (15 s, below the common 30 s NAT UDP timeout; `None`
//! if the chat layer sends its own). If nothing arrived on the path for
//! [`PunchConfig::path_timeout`] (40 s) — acks, probes, or the chat's packets, which the
//! driver passes through [`Puncher::handle_datagram`] too — the puncher reports
//! [`PunchEvent::PathLost`]: the driver falls back to the relay and may punch again with a new
//! puncher.
//!
//! # Wire format and security
//! See [`wire`]: a kind byte (0x84 probe, 0x85 ack), the 16-byte session id, a role byte and
//! an 8-byte nonce that an ack echoes. The session id is known only to the two peers and the
//! rendezvous server, so probes are authenticated against *off-path* attackers only: anyone
//! who can see a probe can forge acks and steer the path. That is acceptable because the path
//! carries only Noise-protected chat packets, authenticated and encrypted end to end with the
//! keys from the introduction; a forged path can at worst deny service (the chat's handshake
//! fails, and the relay remains). Random ports are drawn from the caller's seed, which is not
//! security-relevant.

mod config;
mod machine;
mod strategy;
pub mod wire;

#[cfg(test)]
mod tests;

pub use crate::transmit::Transmit;
pub use config::{
    Candidate, CandidateKind, NatInfo, PeerInfo, PunchConfig, PunchError, Role, SocketIndex,
};
pub use machine::{PunchEvent, PunchStats, Puncher};
pub use strategy::{Strategy, birthday_success_probability};
pub use wire::is_punch_packet;
