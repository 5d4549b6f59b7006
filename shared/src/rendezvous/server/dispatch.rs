//! Dispatch the MSN way (docs/PROTOCOL.md section 11): a node that is full or draining sends
//! clients to another node of the cluster with `XFR TrID NS ip:port reason`, instead of
//! serving them; a node that starts draining tells its logged-in sessions the same with the
//! push `XFR 0 NS ip:port draining`.
//!
//! The core only decides *whom* to send *where*; which other nodes exist is an input
//! ([`RendezvousServer::handle_peer_nodes`]: a static list from the operator today, cluster
//! membership later), and so is the start of a drain
//! ([`RendezvousServer::handle_drain`]). When the node has drained (or its drain period is
//! over) is the driver's business: it watches
//! [`connection_count`](RendezvousServer::connection_count).

use std::net::SocketAddr;
use std::time::Instant;

use rand_core::RngCore;

use super::conn::ConnState;
use super::{ConnId, Refusal, RendezvousServer};
use crate::rendezvous::wire::{Line, TrId};

/// Where a node is in its life, for the driver's logs, metrics and readiness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NodeState {
    /// Serving: new logins are taken (unless the node is full).
    Ready,
    /// Draining: new clients and logged-in sessions are sent to other nodes; the node stops
    /// once the last connection is gone.
    Draining,
}

impl NodeState {
    /// `ready` or `draining`, for logs and metric labels.
    pub fn word(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Draining => "draining",
        }
    }
}

/// Why a node sends a client away: the last parameter of `XFR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Busy {
    Full,
    Draining,
}

impl Busy {
    fn reason(self) -> &'static str {
        match self {
            Busy::Full => "full",
            Busy::Draining => "draining",
        }
    }

    /// The error when there is no other node to send the client to (MSN's 600/601).
    fn refusal(self) -> Refusal {
        match self {
            Busy::Full => Refusal::new(600, "server full").closing(),
            Busy::Draining => Refusal::new(601, "server draining").closing(),
        }
    }
}

impl RendezvousServer {
    /// The other nodes clients may be sent to (never this one), replacing the previous list.
    /// Duplicates are dropped. With an empty list a full or draining node refuses new clients
    /// with `600`/`601` instead of redirecting them.
    pub fn handle_peer_nodes(&mut self, mut peers: Vec<SocketAddr>) {
        peers.sort_unstable();
        peers.dedup();
        self.peers = peers;
    }

    /// The node starts draining: from now on `VER` and a new login are answered with `XFR`
    /// (section 11), and every logged-in session gets the push `XFR 0 NS ip:port draining`
    /// (each session its own randomly picked node, so the sessions spread over the peers).
    /// Sessions are not closed here: a client moves on its own, and the driver ends what is
    /// left when its drain period is over ([`handle_shutdown`](Self::handle_shutdown)).
    /// Draining twice changes nothing.
    pub fn handle_drain(&mut self, now: Instant) {
        let _ = now;
        self.step += 1;
        if self.draining {
            return;
        }
        self.draining = true;
        if self.peers.is_empty() {
            return;
        }
        let mut logged_in: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.state, ConnState::LoggedIn(_)))
            .map(|(id, _)| *id)
            .collect();
        logged_in.sort_unstable();
        for conn in logged_in {
            if let Some(peer) = self.pick_peer() {
                self.send(conn, xfr_line(TrId::PUSH, peer, Busy::Draining));
                self.counters.transfers += 1;
            }
        }
    }

    /// A session that logged in on a draining node (its login was under way when the drain
    /// began) gets the same push as the others.
    pub(super) fn transfer_if_draining(&mut self, conn: ConnId) {
        if !self.draining {
            return;
        }
        if let Some(peer) = self.pick_peer() {
            self.send(conn, xfr_line(TrId::PUSH, peer, Busy::Draining));
            self.counters.transfers += 1;
        }
    }

    /// Whether the node is ready or draining.
    pub fn node_state(&self) -> NodeState {
        if self.draining {
            NodeState::Draining
        } else {
            NodeState::Ready
        }
    }

    /// Whether the node takes new clients: neither draining nor full. Other nodes of a cluster
    /// send clients only to nodes that do (docs/CLUSTER.md).
    pub fn accepts_clients(&self) -> bool {
        self.busy().is_none()
    }

    /// The other nodes clients may be sent to.
    pub fn peer_nodes(&self) -> &[SocketAddr] {
        &self.peers
    }

    /// Why a new client cannot be served here, if it cannot: draining, or as many sessions
    /// as [`RendezvousConfig::max_sessions`](super::RendezvousConfig::max_sessions).
    fn busy(&self) -> Option<Busy> {
        if self.draining {
            Some(Busy::Draining)
        } else if self
            .config
            .max_sessions
            .is_some_and(|max| self.sessions_online >= max)
        {
            Some(Busy::Full)
        } else {
            None
        }
    }

    /// For `VER` and a first login step: `Ok(true)` when the node can serve the client; else
    /// the client got `XFR TrID NS ip:port reason` and its connection is closed (`Ok(false)`),
    /// or, with no other node known, the refusal `600`/`601` that closes it.
    pub(super) fn admit(&mut self, conn: ConnId, trid: TrId) -> Result<bool, Refusal> {
        let Some(busy) = self.busy() else {
            return Ok(true);
        };
        let Some(peer) = self.pick_peer() else {
            return Err(busy.refusal());
        };
        self.send(conn, xfr_line(trid, peer, busy));
        self.counters.transfers += 1;
        self.close(conn, None);
        Ok(false)
    }

    /// One of the peers, at random (seeded rng: the sessions of a draining node spread).
    fn pick_peer(&mut self) -> Option<SocketAddr> {
        match self.peers.len() {
            0 => None,
            n => {
                let i = usize::try_from(self.rng.next_u64() % n as u64).unwrap_or(0);
                self.peers.get(i).copied()
            }
        }
    }
}

/// `XFR TrID NS ip:port reason`.
fn xfr_line(trid: TrId, peer: SocketAddr, busy: Busy) -> Line {
    Line::new(
        "XFR",
        trid,
        ["NS".to_owned(), peer.to_string(), busy.reason().to_owned()],
    )
}
