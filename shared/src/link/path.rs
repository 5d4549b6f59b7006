//! Which path the chat's packets take, as a small state machine with no I/O.
//!
//! The relay is used from the start (the switchboard buffers what arrives before the peer
//! joins), and a direct path as soon as the puncher confirms one. A direct path is dropped in
//! favour of the relay when the puncher reports it lost, or when no authenticated chat packet
//! came over it for [`PathConfig::direct_timeout`] while the relay is up: the path is then
//! *suspect*, and becomes the path again the moment an authenticated packet arrives on it.
//! While a direct path exists and has been quiet for [`PathConfig::probe_interval`], the
//! link core sends a chat probe on it ([`PathSelector::probe_due`]); the peer answers on its own
//! current path.
//!
//! Changes of the path in use come out of [`PathSelector::poll_change`]: a relayed path is
//! announced once the peer is in the switchboard session, a direct one when it is confirmed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::SocketIndex;

/// The path a link's packets take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// A hole-punched UDP path straight to the peer.
    Direct,
    /// Through the switchboard relay over TCP.
    Relayed,
}

impl PathKind {
    /// The word in the output (`direct`, `relayed`).
    pub fn word(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Relayed => "relayed",
        }
    }
}

/// Timers of the path choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathConfig {
    /// Probe a direct path that has been quiet this long (2 s).
    pub probe_interval: Duration,
    /// Stop using a direct path that has been quiet this long while the relay is up (6 s).
    pub direct_timeout: Duration,
}

impl Default for PathConfig {
    fn default() -> Self {
        PathConfig {
            probe_interval: Duration::from_secs(2),
            direct_timeout: Duration::from_secs(6),
        }
    }
}

/// Where to send a chat packet now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Over UDP from `socket` to `remote`.
    Direct {
        /// Our socket.
        socket: SocketIndex,
        /// The peer's address.
        remote: SocketAddr,
    },
    /// Over the switchboard.
    Relay,
    /// Nowhere (no path is up); the chat session retransmits later.
    Drop,
}

/// The state of the relay connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RelayState {
    /// Connecting or joined, the peer not there yet: sends are buffered.
    Pending,
    /// Both peers are in the session.
    Up,
    /// Never started, or over.
    Down,
}

#[derive(Clone, Copy, Debug)]
struct Direct {
    socket: SocketIndex,
    remote: SocketAddr,
    last_rx: Instant,
    last_probe: Option<Instant>,
    suspect: bool,
}

/// A path change to announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathChange {
    /// The path now in use.
    pub kind: PathKind,
    /// The peer's address (direct) or the switchboard's (relayed).
    pub remote: SocketAddr,
}

/// See the [module docs](self).
#[derive(Debug)]
pub struct PathSelector {
    config: PathConfig,
    relay: RelayState,
    relay_addr: Option<SocketAddr>,
    direct: Option<Direct>,
    announced: Option<PathChange>,
}

impl PathSelector {
    /// A selector; `relay` is the switchboard's address if a relay connection was started.
    pub fn new(config: PathConfig, relay: Option<SocketAddr>) -> PathSelector {
        PathSelector {
            config,
            relay: if relay.is_some() {
                RelayState::Pending
            } else {
                RelayState::Down
            },
            relay_addr: relay,
            direct: None,
            announced: None,
        }
    }

    /// The peer is in the switchboard session with us.
    pub fn relay_up(&mut self) {
        if self.relay != RelayState::Down {
            self.relay = RelayState::Up;
        }
    }

    /// A new relay connection was started (a re-introduction brought a fresh ticket): sends
    /// are buffered until the peer joins it.
    pub fn relay_restarted(&mut self, addr: SocketAddr) {
        self.relay = RelayState::Pending;
        self.relay_addr = Some(addr);
    }

    /// The direct path's socket and remote, if there is one (in use or suspect).
    pub fn direct_target(&self) -> Option<(SocketIndex, SocketAddr)> {
        self.direct.as_ref().map(|d| (d.socket, d.remote))
    }

    /// The relay connection is over.
    pub fn relay_down(&mut self) {
        self.relay = RelayState::Down;
    }

    /// Whether the relay can still carry packets (now or once the peer joins).
    pub fn relay_alive(&self) -> bool {
        self.relay != RelayState::Down
    }

    /// The puncher confirmed a direct path.
    pub fn direct_confirmed(&mut self, now: Instant, socket: SocketIndex, remote: SocketAddr) {
        self.direct = Some(Direct {
            socket,
            remote,
            last_rx: now,
            last_probe: None,
            suspect: false,
        });
    }

    /// The puncher lost the direct path.
    pub fn direct_lost(&mut self) {
        self.direct = None;
    }

    /// Whether a direct path exists and is not suspect (it carried a packet lately).
    pub fn direct_in_use(&self) -> bool {
        self.direct.is_some_and(|d| !d.suspect)
    }

    /// Whether a direct path exists (in use or suspect).
    pub fn has_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// An authenticated chat packet arrived over UDP on `socket` from `from`.
    pub fn direct_rx(&mut self, now: Instant, socket: SocketIndex, from: SocketAddr) {
        if let Some(d) = &mut self.direct
            && d.socket == socket
            && d.remote == from
        {
            d.last_rx = now;
            d.suspect = false;
        }
    }

    /// Advances time: a quiet direct path becomes suspect while the relay is up.
    pub fn handle_timeout(&mut self, now: Instant) {
        let relay_up = self.relay == RelayState::Up;
        if let Some(d) = &mut self.direct
            && relay_up
            && !d.suspect
            && now >= d.last_rx + self.config.direct_timeout
        {
            d.suspect = true;
        }
    }

    /// Where to send the next chat packet.
    pub fn route(&self) -> Route {
        match (self.direct, self.relay) {
            (Some(d), _) if !d.suspect => Route::Direct {
                socket: d.socket,
                remote: d.remote,
            },
            (_, RelayState::Pending | RelayState::Up) => Route::Relay,
            (Some(d), RelayState::Down) => Route::Direct {
                socket: d.socket,
                remote: d.remote,
            },
            (None, RelayState::Down) => Route::Drop,
        }
    }

    /// If a probe should go on the direct path now: where; records it as sent.
    pub fn probe_due(&mut self, now: Instant) -> Option<(SocketIndex, SocketAddr)> {
        let d = self.direct.as_mut()?;
        let quiet_since = d.last_probe.map_or(d.last_rx, |p| p.max(d.last_rx));
        if now < quiet_since + self.config.probe_interval {
            return None;
        }
        d.last_probe = Some(now);
        Some((d.socket, d.remote))
    }

    /// When [`Self::handle_timeout`] or [`Self::probe_due`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let d = self.direct.as_ref()?;
        let quiet_since = d.last_probe.map_or(d.last_rx, |p| p.max(d.last_rx));
        let probe = quiet_since + self.config.probe_interval;
        let suspect = (!d.suspect && self.relay == RelayState::Up)
            .then_some(d.last_rx + self.config.direct_timeout);
        Some(suspect.map_or(probe, |s| s.min(probe)))
    }

    /// The path in use if it differs from the last one announced (then it counts as
    /// announced). A relay whose peer has not joined is not announced.
    pub fn poll_change(&mut self) -> Option<PathChange> {
        let current = match self.route() {
            Route::Direct { remote, .. } => Some(PathChange {
                kind: PathKind::Direct,
                remote,
            }),
            Route::Relay if self.relay == RelayState::Up => {
                self.relay_addr.map(|remote| PathChange {
                    kind: PathKind::Relayed,
                    remote,
                })
            }
            Route::Relay | Route::Drop => None,
        }?;
        if self.announced == Some(current) {
            return None;
        }
        self.announced = Some(current);
        Some(current)
    }

    /// The path last announced.
    pub fn announced(&self) -> Option<PathChange> {
        self.announced
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sb() -> SocketAddr {
        "192.0.2.1:1865".parse().unwrap()
    }

    fn peer() -> SocketAddr {
        "198.51.100.9:50000".parse().unwrap()
    }

    fn change(kind: PathKind, remote: SocketAddr) -> Option<PathChange> {
        Some(PathChange { kind, remote })
    }

    #[test]
    fn relayed_first_then_direct() {
        let t0 = Instant::now();
        let mut p = PathSelector::new(PathConfig::default(), Some(sb()));
        assert_eq!(p.route(), Route::Relay, "sends buffer at the switchboard");
        assert_eq!(p.poll_change(), None, "not announced before the peer joins");
        p.relay_up();
        assert_eq!(p.poll_change(), change(PathKind::Relayed, sb()));
        assert_eq!(p.poll_change(), None);
        p.direct_confirmed(t0, SocketIndex(3), peer());
        assert_eq!(
            p.route(),
            Route::Direct {
                socket: SocketIndex(3),
                remote: peer()
            }
        );
        assert_eq!(p.poll_change(), change(PathKind::Direct, peer()));
    }

    #[test]
    fn a_quiet_direct_path_falls_back_and_recovers() {
        let t0 = Instant::now();
        let config = PathConfig::default();
        let mut p = PathSelector::new(config, Some(sb()));
        p.relay_up();
        p.direct_confirmed(t0, SocketIndex::ENDPOINT, peer());
        p.poll_change();
        // Probes after the probe interval of silence, then again an interval later.
        assert_eq!(p.poll_timeout(), Some(t0 + config.probe_interval));
        assert_eq!(p.probe_due(t0 + Duration::from_millis(100)), None);
        let t1 = t0 + config.probe_interval;
        assert_eq!(p.probe_due(t1), Some((SocketIndex::ENDPOINT, peer())));
        assert_eq!(p.probe_due(t1), None);
        // Packets from elsewhere do not count for the path.
        p.direct_rx(t1, SocketIndex::ENDPOINT, sb());
        let t2 = t0 + config.direct_timeout;
        assert!(p.direct_in_use());
        p.handle_timeout(t2);
        assert!(!p.direct_in_use(), "suspect");
        assert!(p.has_direct());
        assert_eq!(p.route(), Route::Relay);
        assert_eq!(p.poll_change(), change(PathKind::Relayed, sb()));
        // An answer on the direct path brings it back.
        p.direct_rx(t2, SocketIndex::ENDPOINT, peer());
        assert_eq!(p.poll_change(), change(PathKind::Direct, peer()));
    }

    #[test]
    fn without_a_relay_a_quiet_direct_path_stays() {
        let t0 = Instant::now();
        let mut p = PathSelector::new(PathConfig::default(), None);
        assert_eq!(p.route(), Route::Drop);
        p.direct_confirmed(t0, SocketIndex::ENDPOINT, peer());
        p.handle_timeout(t0 + Duration::from_secs(60));
        assert!(matches!(p.route(), Route::Direct { .. }));
    }

    #[test]
    fn losing_the_direct_path_returns_to_the_relay() {
        let t0 = Instant::now();
        let mut p = PathSelector::new(PathConfig::default(), Some(sb()));
        p.relay_up();
        p.direct_confirmed(t0, SocketIndex::ENDPOINT, peer());
        assert_eq!(p.poll_change(), change(PathKind::Direct, peer()));
        p.direct_lost();
        assert_eq!(p.poll_change(), change(PathKind::Relayed, sb()));
        p.relay_down();
        assert_eq!(p.route(), Route::Drop);
        assert!(!p.relay_alive());
        assert_eq!(p.poll_change(), None);
    }
}
