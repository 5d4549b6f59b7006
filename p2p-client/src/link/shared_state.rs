//! What the running link shares with its [`super::Link`] handle: the path, the counters and
//! the QUIC connection once it is up. The driver writes, the handle reads; nothing here
//! blocks for long (a short mutex, a watch channel).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{LinkError, PathKind};

/// How many path changes [`LinkStats::paths`] keeps (the latest).
const PATH_HISTORY: usize = 64;

/// One path the link used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathRecord {
    /// When the link moved to it.
    pub since: Instant,
    /// Direct or relayed.
    pub path: PathKind,
    /// The peer's address, or the switchboard's.
    pub remote: SocketAddr,
}

/// A link's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// Messages the application sent that the peer acknowledged.
    pub messages_delivered: u64,
    /// Messages received from the peer.
    pub messages_received: u64,
    /// The session's smoothed round-trip time, once measured.
    pub rtt: Option<Duration>,
    /// Session packets sent (messages, acknowledgements, probes).
    pub packets_sent: u64,
    /// Session packets accepted from the peer.
    pub packets_accepted: u64,
    /// Bytes QUIC sent and received over the link (streams), when QUIC runs.
    pub quic_bytes: Option<(u64, u64)>,
    /// The paths used, oldest first (at most the latest 64).
    pub paths: Vec<PathRecord>,
}

/// Why QUIC is not (or no longer) there.
#[derive(Clone, Debug)]
pub(super) enum QuicFailure {
    /// The peer never announced a certificate.
    PeerHasNoStreams,
    /// QUIC failed to come up.
    Error(std::sync::Arc<super::quic::QuicLinkError>),
    /// The link has ended.
    Ended,
}

/// The state of QUIC on the link.
#[derive(Clone, Debug)]
pub(super) enum QuicState {
    /// Not asked for.
    Off,
    /// Coming up.
    Pending,
    /// Up.
    Up(quinn::Connection),
    /// It failed or the link ended: the error waiting callers get.
    Failed(QuicFailure),
}

/// What the running link shares with its handle: the path, the counters, the QUIC
/// connection once it is up. The driver writes, the handle reads.
#[derive(Debug)]
pub struct LinkShared {
    stats: Mutex<LinkStats>,
    quic: watch::Sender<QuicState>,
}

impl Default for LinkShared {
    fn default() -> Self {
        LinkShared {
            stats: Mutex::new(LinkStats::default()),
            quic: watch::Sender::new(QuicState::Off),
        }
    }
}

impl LinkShared {
    fn with<T>(&self, f: impl FnOnce(&mut LinkStats) -> T) -> T {
        let mut stats = self
            .stats
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        f(&mut stats)
    }

    pub(super) fn record_path(&self, since: Instant, path: PathKind, remote: SocketAddr) {
        self.with(|s| {
            if s.paths.len() == PATH_HISTORY {
                s.paths.remove(0);
            }
            s.paths.push(PathRecord {
                since,
                path,
                remote,
            });
        });
    }

    pub(super) fn count_received(&self) {
        self.with(|s| s.messages_received += 1);
    }

    pub(super) fn update_session(
        &self,
        delivered: u64,
        rtt: Option<Duration>,
        stats: shared::chat::ChatStats,
    ) {
        self.with(|s| {
            s.messages_delivered = delivered;
            s.rtt = rtt;
            s.packets_sent = stats.packets_sent;
            s.packets_accepted = stats.packets_accepted;
        });
    }

    pub(super) fn set_quic(&self, state: QuicState) {
        self.quic.send_replace(state);
    }

    pub(super) fn quic_state(&self) -> QuicState {
        self.quic.borrow().clone()
    }

    /// The current path, if any.
    pub fn path(&self) -> Option<(PathKind, SocketAddr)> {
        self.with(|s| s.paths.last().map(|p| (p.path, p.remote)))
    }

    /// A copy of the counters.
    pub fn stats(&self) -> LinkStats {
        let mut stats = self.with(|s| s.clone());
        if let QuicState::Up(connection) = &*self.quic.borrow() {
            let quic = connection.stats();
            stats.quic_bytes = Some((quic.udp_tx.bytes, quic.udp_rx.bytes));
        }
        stats
    }

    /// Waits for the QUIC connection.
    pub async fn quic_connection(&self) -> Result<quinn::Connection, LinkError> {
        let mut rx = self.quic.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                QuicState::Off => return Err(LinkError::StreamsOff),
                QuicState::Up(connection) => return Ok(connection.clone()),
                QuicState::Failed(QuicFailure::PeerHasNoStreams) => {
                    return Err(LinkError::PeerHasNoStreams);
                }
                QuicState::Failed(QuicFailure::Error(e)) => return Err(LinkError::Quic(e.clone())),
                QuicState::Failed(QuicFailure::Ended) => return Err(LinkError::Closed),
                QuicState::Pending => {}
            }
            if rx.changed().await.is_err() {
                return Err(LinkError::Closed);
            }
        }
    }
}
