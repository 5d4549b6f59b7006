//! Punching from the chat's loop: the puncher of an introduction, and punching again after
//! the direct path died (the glue between [`super::super::repunch::Repunch`] and the sockets, the STUN service and
//! the rendezvous server).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngCore;
use rand::rngs::OsRng;
use shared::nat_classifier::{NatType, PortAllocation};
use shared::punch::{self, NatInfo, PeerInfo, PunchConfig, Puncher};
use shared::rendezvous::SessionId;

use crate::binding::StunBinding;
use crate::rendezvous::{Allocation, CandidateKind, Introduction, NatKind, RendezvousError, Role};

use super::super::endpoint::{self, EndpointIo, binding_outcome, binding_transaction};
use super::super::event::LinkEvent;
use super::super::relay::Relay;
use super::super::repunch::RepunchAction;
use super::Driver;

/// How long a re-punch waits for the STUN service to tell our current address.
const GATHER_BUDGET: Duration = Duration::from_secs(1);

/// A rendezvous request of a re-punch that finished (they run as tasks so that the chat loop
/// never waits on the server).
#[derive(Debug)]
pub(super) enum RequestDone {
    /// Our `INV`: the session id, or why not.
    Invited(Result<SessionId, RendezvousError>),
    /// Our `ANS` to the peer's ring.
    Answered(Result<(), RendezvousError>),
}

impl Driver {
    /// Feeds the direct path's state to the re-punch machine and carries out what it asks for:
    /// a STUN Binding from the endpoint socket, then `INV` or `ANS` with the fresh offer.
    pub(super) async fn drive_repunch(&mut self, now: Instant) {
        if !self.rendezvous_open {
            // Introductions need the server; the re-login asks for one when it is back.
            return;
        }
        let direct_down = self.punch_enabled && self.had_direct && !self.path.direct_in_use();
        if direct_down || self.relay_lost() {
            self.repunch.handle_direct_down(now);
        } else {
            self.repunch.handle_direct_up();
        }
        self.repunch.handle_timeout(now);
        loop {
            self.step_gather(now).await;
            let Some(action) = self.repunch.poll_action() else {
                return;
            };
            match action {
                RepunchAction::Gather => {
                    let attempt = self.repunch.attempts();
                    tracing::info!(attempt, "punching again");
                    self.emit(LinkEvent::PunchingAgain {
                        attempt,
                        after_direct: self.punch_enabled && self.had_direct,
                    });
                    match self.stun {
                        Some(server) => {
                            let transaction = binding_transaction(server, GATHER_BUDGET, now);
                            self.gather = Some(StunBinding::new(transaction));
                        }
                        None => self.repunch.handle_gathered(now),
                    }
                }
                RepunchAction::Invite => {
                    let (client, peer, offer) =
                        (self.client.clone(), self.peer.clone(), self.offer.clone());
                    self.requests.spawn(async move {
                        RequestDone::Invited(client.invite(&peer, &offer).await)
                    });
                }
                RepunchAction::Answer(sid) => {
                    let (client, offer) = (self.client.clone(), self.offer.clone());
                    self.requests.spawn(async move {
                        RequestDone::Answered(client.answer(sid, &offer).await)
                    });
                }
            }
        }
    }

    /// Sends what the STUN transaction of a re-punch has to send; when it is over, puts the
    /// address it learnt (or, failing that, the last one) in the offer.
    async fn step_gather(&mut self, now: Instant) {
        let Some(binding) = &mut self.gather else {
            return;
        };
        let io = &mut EndpointIo(&mut self.endpoint);
        if let Err(e) = binding.send_due(now, io).await {
            tracing::debug!(error = %e, "STUN send failed");
        }
        let Some(outcome) = binding_outcome(binding) else {
            return;
        };
        self.gather = None;
        let srflx = match outcome {
            Ok(addr) => Some(addr),
            Err(e) => {
                tracing::info!(error = %e, "no fresh server-reflexive address; offering the last one");
                None
            }
        };
        self.refresh_offer(srflx);
        self.repunch.handle_gathered(now);
    }

    /// The offer with our current host addresses and `srflx` (or the last srflx, if `None`).
    fn refresh_offer(&mut self, srflx: Option<SocketAddr>) {
        let last = self
            .offer
            .candidates
            .iter()
            .find(|c| c.kind == CandidateKind::Srflx)
            .map(|c| c.addr);
        let hosts = endpoint::host_candidates(self.endpoint.local_addr(), self.include_loopback);
        let mut offer =
            super::super::setup::build_offer(self.offer.key, &hosts, srflx.or(last), None);
        offer.nat = self.offer.nat;
        offer.alloc = self.offer.alloc;
        if srflx.is_some() && srflx != last {
            tracing::info!(old = ?last, new = ?srflx, "our server-reflexive address changed");
        }
        self.offer = offer;
    }

    /// A re-punch request finished.
    pub(super) fn on_request_done(&mut self, done: RequestDone) {
        match done {
            RequestDone::Invited(Ok(sid)) => self.repunch.handle_invited(sid),
            RequestDone::Invited(Err(e)) | RequestDone::Answered(Err(e)) => {
                tracing::info!(error = %e, "the rendezvous server refused the new introduction");
                self.repunch.handle_request_failed();
            }
            RequestDone::Answered(Ok(())) => {}
        }
    }

    /// A new introduction to the peer (ours or the peer's re-punch): a new puncher takes over
    /// while the chat session goes on. One with another key is another chat of the peer's,
    /// not ours, and is ignored.
    pub(super) fn on_introduced(&mut self, now: Instant, intro: &Introduction) {
        if intro.peer != self.peer {
            tracing::warn!(peer = %intro.peer, "introduced to someone else while chatting; ignored");
            return;
        }
        if intro.offer.key != self.peer_key {
            tracing::warn!(
                "a new introduction to {} with another key (another chat of theirs?); ignored",
                self.peer
            );
            self.repunch.handle_punch_ended(false);
            return;
        }
        self.repunch.handle_introduced();
        // Both sides get this introduction and both move to its switchboard session, so the
        // relay is always the fresh one.
        if let (Some(addr), Some(fingerprint), Some(ticket)) = (
            intro.switchboard,
            intro.switchboard_fingerprint,
            intro.ticket,
        ) && self.relay.is_some()
        {
            tracing::info!(sid = %intro.sid, "introduced again: joining the relay with the new ticket");
            self.relay = Some(Relay::start(addr, fingerprint, intro.sid, ticket.0));
            self.path.relay_restarted(addr);
        }
        if !self.punch_enabled || self.path.direct_in_use() {
            // The direct path, if up, carries on untouched.
            self.repunch.handle_punch_ended(self.path.direct_in_use());
            return;
        }
        match start_puncher(intro, self.local_nat, now + intro.start) {
            Some(puncher) => {
                tracing::info!(sid = %intro.sid, "introduced again: a new puncher takes over");
                self.puncher = Some(puncher);
                self.punch_over = false;
                self.punch_sid = intro.sid;
            }
            None => self.repunch.handle_punch_ended(false),
        }
    }
}

/// The puncher for this introduction, starting at `start`; `None` (relay only) if the peer
/// sent nothing to probe.
pub(super) fn start_puncher(
    intro: &Introduction,
    local_nat: Option<(NatType, Option<PortAllocation>)>,
    start: Instant,
) -> Option<Puncher> {
    let candidates: Vec<punch::Candidate> = intro
        .offer
        .candidates
        .iter()
        .filter_map(|c| match c.kind {
            CandidateKind::Host => Some(punch::Candidate::host(c.addr)),
            CandidateKind::Srflx => Some(punch::Candidate::srflx(c.addr)),
            // A relay's address is not punched: the switchboard is our relay.
            CandidateKind::Relay => None,
        })
        .collect();
    let local = match local_nat {
        Some((NatType::UnsupportedServer, _)) | None => NatInfo::default(),
        Some((nat_type, alloc)) => NatInfo::new(nat_type, alloc),
    };
    let peer = PeerInfo {
        candidates,
        nat: peer_nat(intro.offer.nat, intro.offer.alloc),
    };
    let role = match intro.role {
        Role::Initiator => punch::Role::Initiator,
        Role::Responder => punch::Role::Responder,
    };
    let config = PunchConfig::new(intro.sid.0, role, local, peer);
    match Puncher::new(config, start, OsRng.next_u64()) {
        Ok(p) => {
            tracing::info!(strategy = ?p.strategy(), "punching");
            Some(p)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot punch; relay only");
            None
        }
    }
}

/// The peer's `nat=` and `alloc=` as the puncher wants them.
fn peer_nat(nat: Option<NatKind>, alloc: Option<Allocation>) -> NatInfo {
    NatInfo::announced(nat, alloc)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_peers_nat_words_map_to_the_classifier_types() {
        assert_eq!(peer_nat(None, None), NatInfo::default());
        let info = peer_nat(Some(NatKind::Symmetric), Some(Allocation::Sequential));
        assert!(info.is_symmetric());
        assert_eq!(
            info.port_allocation,
            Some(PortAllocation::Sequential { step: 1 })
        );
        assert!(peer_nat(Some(NatKind::PortRestricted), None).filters_by_port());
        assert_eq!(peer_nat(Some(NatKind::Unknown), None).nat_type, None);
        assert!(peer_nat(Some(NatKind::Open), None).is_open());
    }
}
