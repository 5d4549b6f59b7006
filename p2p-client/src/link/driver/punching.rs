//! The commands of the link core that need the sockets or the rendezvous server, and the
//! introductions it gets: opening and closing the birthday method's extra sockets, relaying
//! the primed signal, joining the switchboard, and a re-punch's `INV`/`ANS` with a fresh
//! offer (run as tasks, so that the loop never waits on the server).

use std::net::SocketAddr;
use std::time::Instant;

use shared::link::{self, LinkCommand};
use shared::punch::{self, NatInfo};
use shared::rendezvous::SessionId;

use crate::rendezvous::{CandidateKind, Introduction, RendezvousError, Role};

use super::super::relay::Relay;
use super::Driver;

/// A rendezvous request of a re-punch that finished.
#[derive(Debug)]
pub(super) enum RequestDone {
    /// Our `INV`: the session id, or why not.
    Invited(Result<SessionId, RendezvousError>),
    /// Our `ANS` to the peer's ring.
    Answered(Result<(), RendezvousError>),
}

impl Driver {
    /// Carries out one command of the core.
    pub(super) async fn on_command(&mut self, now: Instant, command: LinkCommand) {
        match command {
            LinkCommand::OpenSockets(n) => {
                let opened = self.endpoint.open_extra(n).await;
                tracing::info!(
                    asked = n,
                    opened,
                    "opened extra sockets for the birthday method"
                );
                self.core.handle_sockets_opened(now, opened);
            }
            LinkCommand::CloseExtraSockets { keep } => self.endpoint.close_extras_except(keep),
            LinkCommand::SendPrimed(sid) => {
                let client = self.client.clone();
                tokio::spawn(async move {
                    if let Err(e) = client.primed(sid).await {
                        tracing::debug!(error = %e, "cannot relay the primed signal");
                    }
                });
            }
            LinkCommand::JoinRelay(sid) => self.join_relay(sid),
            LinkCommand::Invite { srflx } => {
                self.refresh_offer(srflx);
                let (client, peer, offer) =
                    (self.client.clone(), self.peer.clone(), self.offer.clone());
                self.requests
                    .spawn(async move { RequestDone::Invited(client.invite(&peer, &offer).await) });
            }
            LinkCommand::Answer { sid, srflx } => {
                self.refresh_offer(srflx);
                let (client, offer) = (self.client.clone(), self.offer.clone());
                self.requests
                    .spawn(async move { RequestDone::Answered(client.answer(sid, &offer).await) });
            }
            LinkCommand::Report { sid, report } => {
                tracing::info!(%sid, report = ?report.to_params(), "reporting the outcome");
                let client = self.client.clone();
                tokio::spawn(async move {
                    if let Err(e) = client.report(sid, &report).await {
                        tracing::debug!(error = %e, "cannot report the outcome");
                    }
                });
            }
            other => tracing::debug!(command = ?other, "link command ignored"),
        }
    }

    /// Joins the switchboard session of introduction `sid` (the latest one), replacing any
    /// earlier relay connection.
    fn join_relay(&mut self, sid: SessionId) {
        let intro = &self.intro;
        let (Some(addr), Some(fingerprint), Some(ticket)) = (
            intro.switchboard,
            intro.switchboard_fingerprint,
            intro.ticket,
        ) else {
            return;
        };
        if intro.sid != sid {
            tracing::debug!(%sid, "no ticket for this session; relay not joined");
            return;
        }
        if self.relay.is_some() {
            tracing::info!(%sid, "introduced again: joining the relay with the new ticket");
        }
        let relay = Relay::start(addr, fingerprint, sid, ticket.0);
        if let Some(inbound) = self.streams.as_ref().and_then(|s| s.quic_inbound()) {
            relay.set_quic_inbound(inbound.clone());
        }
        self.relay = Some(relay);
        self.update_quic_route();
    }

    /// Puts our current host addresses and `srflx` (or the last srflx, if `None`) in the
    /// offer a re-punch sends. Without a STUN service there is nothing new to say: the offer
    /// stays as it was.
    fn refresh_offer(&mut self, srflx: Option<SocketAddr>) {
        if self.stun.is_none() {
            return;
        }
        if srflx.is_none() {
            tracing::info!("no fresh server-reflexive address; offering the last one");
        }
        let last = self
            .offer
            .candidates
            .iter()
            .find(|c| c.kind == CandidateKind::Srflx)
            .map(|c| c.addr);
        let hosts = self.endpoint.host_candidates(self.include_loopback);
        let mapped = self
            .offer
            .candidates
            .iter()
            .find(|c| c.kind == CandidateKind::Mapped)
            .map(|c| c.addr);
        let mut offer =
            super::super::setup::build_offer(self.offer.key, &hosts, srflx.or(last), None);
        // The mapping lives as long as the link: the re-punch's offer keeps it.
        super::super::setup::add_mapped(&mut offer, mapped);
        offer.nat = self.offer.nat;
        offer.alloc = self.offer.alloc;
        if srflx.is_some() && srflx != last {
            tracing::info!(old = ?last, new = ?srflx, "our server-reflexive address changed");
        }
        self.offer = offer;
    }

    /// A re-punch request finished.
    pub(super) fn on_request_done(&mut self, now: Instant, done: RequestDone) {
        match done {
            RequestDone::Invited(Ok(sid)) => self.core.handle_invite_result(now, Some(sid)),
            RequestDone::Invited(Err(e)) => {
                tracing::info!(error = %e, "the rendezvous server refused the new introduction");
                self.core.handle_invite_result(now, None);
            }
            RequestDone::Answered(Err(e)) => {
                tracing::info!(error = %e, "the rendezvous server refused the new introduction");
                self.core.handle_answer_result(now, false);
            }
            RequestDone::Answered(Ok(())) => self.core.handle_answer_result(now, true),
        }
    }

    /// A new introduction (ours or the peer's re-punch). One to someone else is not this
    /// link's; the core judges the rest (the key, whether to punch).
    pub(super) fn on_introduced(&mut self, now: Instant, intro: Introduction) {
        if intro.peer != self.peer {
            tracing::warn!(peer = %intro.peer, "introduced to someone else while chatting; ignored");
            return;
        }
        let core_intro = core_introduction(&intro, now);
        if intro.offer.key == self.intro.offer.key {
            // Its ticket is the one `JoinRelay` joins.
            self.intro = intro;
        }
        self.core.handle_rendezvous_introduced(now, &core_intro);
    }
}

/// The introduction as the link core takes it, received at `received`: the peer's host and
/// srflx candidates (a relay's address is not punched: the switchboard is our relay), its
/// announced NAT, the absolute start time, and the switchboard if the ticket is usable.
pub(super) fn core_introduction(intro: &Introduction, received: Instant) -> link::Introduction {
    let candidates = intro
        .offer
        .candidates
        .iter()
        .filter_map(|c| match c.kind {
            CandidateKind::Host => Some(punch::Candidate::host(c.addr)),
            CandidateKind::Srflx => Some(punch::Candidate::srflx(c.addr)),
            CandidateKind::Mapped => Some(punch::Candidate::mapped(c.addr)),
            CandidateKind::Relay => None,
        })
        .collect::<Vec<_>>();
    // A peer with a port mapping is reachable by anyone there: punch as towards a full cone
    // (it reads its own NAT the same way, so both sides choose matching strategies).
    let peer_nat = if candidates
        .iter()
        .any(|c: &punch::Candidate| c.kind == punch::CandidateKind::Mapped)
    {
        NatInfo::reachable_by_mapping()
    } else {
        NatInfo::announced(intro.offer.nat, intro.offer.alloc)
    };
    let relay = match (
        intro.switchboard,
        intro.switchboard_fingerprint,
        intro.ticket,
    ) {
        (Some(addr), Some(_), Some(_)) => Some(addr),
        _ => None,
    };
    link::Introduction {
        sid: intro.sid,
        initiator: intro.role == Role::Initiator,
        peer_key: intro.offer.key,
        candidates,
        peer_nat,
        start: received + intro.start,
        relay,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use shared::nat_classifier::PortAllocation;

    use super::*;
    use crate::rendezvous::{Allocation, NatKind};

    #[test]
    fn the_peers_nat_words_map_to_the_classifier_types() {
        let peer_nat = NatInfo::announced;
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

    #[test]
    fn a_mapped_candidate_makes_the_peer_reachable_like_a_full_cone() {
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
        let sid = "00112233445566778899aabbccddeeff";
        let line = |cands: &str| -> Vec<String> {
            format!(
                "{sid} bob role=initiator start=250 key={key} nat=symmetric alloc=random {cands}"
            )
            .split_whitespace()
            .map(str::to_owned)
            .collect()
        };
        let now = Instant::now();
        let plain = Introduction::from_params(&line("cand=srflx/203.0.113.2:4000")).unwrap();
        assert!(core_introduction(&plain, now).peer_nat.is_symmetric());
        let mapped = Introduction::from_params(&line(
            "cand=srflx/203.0.113.2:4000 cand=mapped/203.0.113.2:5000",
        ))
        .unwrap();
        let core = core_introduction(&mapped, now);
        assert_eq!(core.peer_nat, NatInfo::reachable_by_mapping());
        assert!(core.candidates.contains(&punch::Candidate::mapped(
            "203.0.113.2:5000".parse().unwrap()
        )));
    }
}
