//! The end rules of a link: when it is over, the authenticated goodbye, and the report of
//! every message the peer did not acknowledge (nothing sent is lost without the application
//! being told).
//!
//! A link ends when
//! - the peer said goodbye or went silent (its session's idle timeout): cleanly if everything
//!   was acknowledged, else with [`LinkFailure::PeerLeft`];
//! - the application finished ([`LinkCore::finish`]) and everything was acknowledged: after a
//!   linger ([`super::LinkCoreConfig::linger`]) in which we keep answering, so the peer gets
//!   the acknowledgements of its own last messages; if the peer does not acknowledge within
//!   [`super::LinkCoreConfig::drain_timeout`], with [`LinkFailure::Undelivered`];
//! - the application aborted ([`LinkCore::abort`]);
//! - the handshake failed, or there can be no path at all (no relay, no punching, no session).
//!
//! No path *for now* is not an end: a re-punch or a rejoined relay may bring one back, and a
//! peer that is really gone goes silent.

use std::time::Instant;

use super::LinkCore;
use super::output::{Destination, LinkCoreEvent, LinkTransmit};
use super::path::Route;

/// Copies of the goodbye sent on each path (a lost datagram should not cost the peer its idle
/// timeout).
const GOODBYE_COPIES: usize = 2;

/// One message the application sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    /// Its number, as the application gave it.
    pub(super) number: u64,
    /// Its bytes.
    pub(super) bytes: Vec<u8>,
}

/// Why a message did not reach the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UndeliveredReason {
    /// Longer than a message may be: refused, not split.
    TooLong,
    /// The peer left before acknowledging it.
    PeerLeft,
    /// The link was closed and the peer did not acknowledge it in time.
    NotAcknowledged,
    /// The link was aborted before the peer acknowledged it.
    Interrupted,
    /// The link failed.
    LinkFailed,
}

impl UndeliveredReason {
    /// The words `chat` prints (`too long`, `peer left`, ...).
    pub fn words(self) -> &'static str {
        match self {
            UndeliveredReason::TooLong => "too long",
            UndeliveredReason::PeerLeft => "peer left",
            UndeliveredReason::NotAcknowledged => "not acknowledged",
            UndeliveredReason::Interrupted => "interrupted",
            UndeliveredReason::LinkFailed => "chat failed",
        }
    }
}

/// Why a link failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkFailure {
    /// The end-to-end handshake failed or timed out.
    #[error("the end-to-end handshake failed")]
    Handshake,
    /// The peer left with `count` of our messages unacknowledged.
    #[error("the peer left; {count} message(s) not delivered")]
    PeerLeft {
        /// How many.
        count: usize,
    },
    /// There is no way to reach the peer.
    #[error("no path to the peer: {0}")]
    NoPath(&'static str),
    /// `0` messages were not acknowledged.
    #[error("{0} message(s) not delivered")]
    Undelivered(usize),
    /// The session could not be set up or refused an input.
    #[error("link setup: {0}")]
    Setup(String),
}

/// How a link ended. A link ends when the peer said goodbye or went silent; when the
/// application finished and everything was acknowledged (after a linger), or the drain
/// timeout passed; when the application aborted; or when the handshake failed or there can be
/// no path at all. No path *for now* is not an end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEnd {
    /// The application finished and everything was acknowledged.
    Done,
    /// The peer said goodbye or went silent, with everything acknowledged.
    PeerLeft,
    /// The application aborted.
    Interrupted,
    /// The link failed.
    Failed(LinkFailure),
}

impl LinkCore {
    /// Messages the peer has not acknowledged (queued or in flight).
    pub fn unacked(&self) -> usize {
        self.pending.len() + self.sent.len()
    }

    /// Ends the link with `end` (once).
    pub(super) fn end_with(&mut self, end: LinkEnd) {
        if self.end.is_none() {
            // A link that fails before its puncher's outcome: that introduction failed. One that
            // ends otherwise has nothing to tell (`report.rs`).
            if matches!(end, LinkEnd::Failed(_)) {
                self.report_outcome(crate::rendezvous::telemetry::Outcome::Failed);
            }
            self.events.push_back(LinkCoreEvent::Ended(end.clone()));
            self.end = Some(end);
        }
    }

    /// Applies the end rules of the [module docs](self) at `now`.
    pub(super) fn check_end(&mut self, now: Instant) {
        if self.end.is_some() {
            return;
        }
        if self.chat.is_failed() {
            return self.end_with(LinkEnd::Failed(LinkFailure::Handshake));
        }
        let unacked = self.unacked();
        if self.peer_gone {
            self.events.push_back(LinkCoreEvent::PeerLeft);
            return self.end_with(if unacked == 0 {
                LinkEnd::PeerLeft
            } else {
                LinkEnd::Failed(LinkFailure::PeerLeft { count: unacked })
            });
        }
        let punching = (self.puncher.is_some() && !self.punch_over) || self.repunch.in_progress();
        if self.path.route() == Route::Drop
            && !punching
            && !self.has_relay
            && !self.chat.is_established()
        {
            return self.end_with(LinkEnd::Failed(LinkFailure::NoPath(
                "no switchboard and no direct path",
            )));
        }
        if !self.eof {
            return;
        }
        if unacked == 0 {
            if !self.chat.is_established() {
                return self.end_with(LinkEnd::Done);
            }
            let linger = *self.linger_until.get_or_insert(now + self.config.linger);
            if now >= linger {
                self.end_with(LinkEnd::Done);
            }
            return;
        }
        if self.chat.is_established() {
            let drain = *self
                .drain_deadline
                .get_or_insert(now + self.config.drain_timeout);
            if now >= drain {
                self.end_with(LinkEnd::Failed(LinkFailure::Undelivered(unacked)));
            }
        }
    }

    /// Closes the link after [`LinkCoreEvent::Ended`] (or at once, as an abort): queues the
    /// goodbye on the direct path (if there is one) and on the relay (if alive), unless the
    /// peer said goodbye first or the session never came up; reports every message the peer
    /// did not acknowledge ([`LinkCoreEvent::Undelivered`]); and returns the link's outcome,
    /// an error if any message was not delivered. Drain the transmits and events afterwards.
    pub fn close(&mut self, now: Instant) -> Result<(), LinkFailure> {
        let end = self.end.take().unwrap_or(LinkEnd::Interrupted);
        self.closed = true;
        self.say_goodbye(now);
        let reason = match &end {
            LinkEnd::Done | LinkEnd::Failed(LinkFailure::Undelivered(_)) => {
                UndeliveredReason::NotAcknowledged
            }
            LinkEnd::PeerLeft | LinkEnd::Failed(LinkFailure::PeerLeft { .. }) => {
                UndeliveredReason::PeerLeft
            }
            LinkEnd::Interrupted => UndeliveredReason::Interrupted,
            LinkEnd::Failed(_) => UndeliveredReason::LinkFailed,
        };
        let left: Vec<Entry> = std::mem::take(&mut self.sent)
            .into_values()
            .chain(std::mem::take(&mut self.pending))
            .collect();
        let count = left.len();
        for entry in left {
            self.events.push_back(LinkCoreEvent::Undelivered {
                number: entry.number,
                bytes: entry.bytes,
                reason,
            });
        }
        let undelivered = count + self.refused;
        match end {
            LinkEnd::Failed(LinkFailure::PeerLeft { .. }) => {
                Err(LinkFailure::PeerLeft { count: undelivered })
            }
            LinkEnd::Failed(LinkFailure::Undelivered(_)) => {
                Err(LinkFailure::Undelivered(undelivered))
            }
            LinkEnd::Failed(failure) => Err(failure),
            _ if undelivered > 0 => Err(LinkFailure::Undelivered(undelivered)),
            _ => Ok(()),
        }
    }

    fn say_goodbye(&mut self, now: Instant) {
        if !self.chat.is_established() || self.chat.is_peer_closed() {
            return;
        }
        let direct = match self.path.route() {
            Route::Direct { socket, remote } => Some((socket, remote)),
            _ => self.path.direct_target(),
        };
        let relay = self.has_relay && self.path.relay_alive();
        for _ in 0..GOODBYE_COPIES {
            let Ok(packet) = self.chat.goodbye_packet(now) else {
                return;
            };
            if let Some((socket, remote)) = direct {
                self.transmits.push_back(LinkTransmit {
                    destination: Destination::Udp {
                        socket,
                        remote,
                        ttl: None,
                    },
                    data: packet.clone(),
                });
            }
            if relay {
                self.transmits.push_back(LinkTransmit {
                    destination: Destination::Relay,
                    data: packet,
                });
            }
        }
    }
}
