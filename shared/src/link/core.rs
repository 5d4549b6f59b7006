//! [`LinkCore`]: its state, inputs and outputs (one step is `step.rs`, the end rules
//! `ending.rs`).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use zeroize::Zeroize;

use crate::SocketIndex;
use crate::chat::{self, ChatConfig, ChatError, ChatSession, ChatStats, MessageId, PublicKey};
use crate::punch::{PeerInfo, PunchConfig, Puncher};
use crate::rendezvous::SessionId;
use crate::stun_client::BindingTransaction;

use super::config::{Introduction, LinkCoreConfig};
use super::ending::{Entry, LinkEnd, LinkFailure};
use super::message::LinkMessage;
use super::output::{LinkCommand, LinkCoreEvent, LinkTransmit};
use super::packet::{PacketClass, classify};
use super::path::{PathSelector, Route};
use super::repunch::Repunch;

/// Every decision of a link, as one sans-IO state machine.
///
/// It owns the end-to-end session, the current puncher, the path choice, the re-punch
/// machine and the STUN Binding of a re-punch, and composes them after every input in one
/// step: puncher timers, transmits and events; the path's timers; re-punching;
/// probes and relay keepalives; the application's queued messages; the session's transmits
/// (routed to the path in use) and events; path changes; then the end rules (see [`LinkEnd`]).
///
/// # Driving it
/// The shape of every core (docs/DESIGN.md section 8), with commands for what only the
/// driver can do. After [`LinkCore::new`] and after every input, drain in this order:
///
/// 1. [`LinkCore::poll_transmit`] until `None`: UDP datagrams from a named socket, and frames
///    for the relay connection;
/// 2. [`LinkCore::poll_command`] until `None`: open or close sockets, join the relay, relay
///    the primed signal, invite or answer; a command's answer is an input, after which the
///    drain starts again at 1;
/// 3. [`LinkCore::poll_event`] until `None`: for the application;
/// 4. [`LinkCore::poll_timeout`]: sleep until then (or the next input), then
///    [`LinkCore::handle_timeout`].
///
/// After [`LinkCoreEvent::Ended`], call [`LinkCore::close`] and drain once more (the goodbye
/// and the undelivered reports).
///
/// Inputs: datagrams of the endpoint and extra sockets ([`LinkCore::handle_datagram`]; QUIC
/// is the driver's and never comes here), the relay connection (`handle_relay_*`), the
/// rendezvous server's pushes (`handle_rendezvous_*`), the answers to commands, and the
/// application ([`LinkCore::send_message`], [`LinkCore::finish`], [`LinkCore::abort`]).
pub struct LinkCore {
    pub(super) config: LinkCoreConfig,
    pub(super) rng: ChaCha20Rng,
    /// The peer's Noise key from the first introduction; a re-introduction must carry it.
    pub(super) peer_key: [u8; 32],
    pub(super) chat: ChatSession,
    pub(super) path: PathSelector,
    pub(super) repunch: Repunch,
    pub(super) puncher: Option<Puncher>,
    /// The current puncher reported its final event (or never ran).
    pub(super) punch_over: bool,
    /// The introduction the current puncher runs on (`PRM` names it).
    pub(super) punch_sid: SessionId,
    /// A direct path has been up at least once (only then is one worth punching again).
    pub(super) had_direct: bool,
    /// A relay connection was started (it may have closed since).
    pub(super) has_relay: bool,
    /// The introduction whose outcome is still to be reported (`report.rs`).
    pub(super) unreported: Option<super::report::Unreported>,
    pub(super) rendezvous_open: bool,
    /// The STUN Binding of a re-punch, while it runs.
    pub(super) gather: Option<BindingTransaction>,
    /// What the last gathering learnt (for the `INV`/`ANS` that follows).
    pub(super) gathered: Option<SocketAddr>,
    /// Messages not yet accepted by the session (its send buffer was full).
    pub(super) pending: VecDeque<Entry>,
    /// Messages the session took and the peer has not acknowledged, by message id.
    pub(super) sent: BTreeMap<MessageId, Entry>,
    /// Messages refused (too long) and already reported.
    pub(super) refused: usize,
    pub(super) delivered: u64,
    pub(super) eof: bool,
    /// The peer said goodbye, or stopped answering.
    pub(super) peer_gone: bool,
    pub(super) drain_deadline: Option<Instant>,
    pub(super) linger_until: Option<Instant>,
    pub(super) next_relay_keepalive: Option<Instant>,
    pub(super) end: Option<LinkEnd>,
    /// [`LinkCore::close`] was called: no more steps.
    pub(super) closed: bool,
    pub(super) transmits: VecDeque<LinkTransmit>,
    pub(super) commands: VecDeque<LinkCommand>,
    pub(super) events: VecDeque<LinkCoreEvent>,
}

impl std::fmt::Debug for LinkCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCore")
            .field("chat", &self.chat)
            .field("path", &self.path)
            .field("repunch", &self.repunch)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl LinkCore {
    /// Starts a link on its first introduction at `now`: the relay ([`LinkCommand::JoinRelay`],
    /// if the introduction brings one), the session (its first handshake packet goes to the
    /// relay, which buffers it until the peer joins, at the first [`LinkCore::handle_timeout`]),
    /// and the puncher at the introduction's start time (if punching is on and the peer named
    /// candidates).
    pub fn new(
        mut config: LinkCoreConfig,
        intro: &Introduction,
        now: Instant,
    ) -> Result<LinkCore, LinkFailure> {
        let mut rng = ChaCha20Rng::from_seed(config.seed);
        config.seed.zeroize();
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let role = if intro.initiator {
            chat::Role::Initiator
        } else {
            chat::Role::Responder
        };
        let mut chat_config = ChatConfig::new(
            role,
            config.secret.clone(),
            PublicKey(intro.peer_key),
            intro.sid.0.to_vec(),
            seed,
        );
        seed.zeroize();
        if let Some(timing) = config.chat_timing {
            chat_config = chat_config.with_timing(timing);
        }
        let chat =
            ChatSession::new(chat_config, now).map_err(|e| LinkFailure::Setup(e.to_string()))?;
        let path = PathSelector::new(config.path, intro.relay);
        let repunch = Repunch::new(config.repunch.clone());
        let mut core = LinkCore {
            config,
            rng,
            peer_key: intro.peer_key,
            chat,
            path,
            repunch,
            puncher: None,
            punch_over: true,
            punch_sid: intro.sid,
            had_direct: false,
            has_relay: intro.relay.is_some(),
            unreported: None,
            rendezvous_open: true,
            gather: None,
            gathered: None,
            pending: VecDeque::new(),
            sent: BTreeMap::new(),
            refused: 0,
            delivered: 0,
            eof: false,
            peer_gone: false,
            drain_deadline: None,
            linger_until: None,
            next_relay_keepalive: None,
            end: None,
            closed: false,
            transmits: VecDeque::new(),
            commands: VecDeque::new(),
            events: VecDeque::new(),
        };
        if core.has_relay {
            core.commands.push_back(LinkCommand::JoinRelay(intro.sid));
        }
        if core.config.punch {
            core.puncher = core.start_puncher(intro);
            core.punch_over = core.puncher.is_none();
            if let Some(strategy) = core.punch_strategy() {
                core.report_due(now, intro, strategy);
            }
        }
        // No step yet: the relay must be joined (the command above) before the session's
        // first packet goes to it. The session's timer is due now, so the first
        // `handle_timeout` right after the drain sends it.
        core.check_end(now);
        Ok(core)
    }

    /// A puncher for `intro`, with a nonce seed from our generator; `None` if the peer named
    /// nothing to punch (the relay only).
    pub(super) fn start_puncher(&mut self, intro: &Introduction) -> Option<Puncher> {
        let role = if intro.initiator {
            crate::punch::Role::Initiator
        } else {
            crate::punch::Role::Responder
        };
        let config = PunchConfig {
            session: intro.sid.0,
            role,
            local: self.config.local_nat,
            peer: PeerInfo {
                candidates: intro.candidates.clone(),
                nat: intro.peer_nat,
            },
            ..self.config.punch_config.clone()
        };
        Puncher::new(config, intro.start, self.rng.next_u64()).ok()
    }

    // ----- inputs: the network -----

    /// A datagram arrived on our socket `socket` from `from`: punching, the session, or the
    /// STUN answer of a re-punch. QUIC datagrams are the driver's; anything else is dropped.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketIndex,
        from: SocketAddr,
        data: &[u8],
    ) {
        match classify(data) {
            PacketClass::Punch => {
                if let Some(p) = &mut self.puncher {
                    p.handle_datagram(now, socket, from, data);
                }
            }
            PacketClass::Chat => {
                // Session packets from the peer keep the puncher's path alive too.
                if let Some(p) = &mut self.puncher {
                    p.handle_datagram(now, socket, from, data);
                }
                if self.chat.handle_datagram(now, data).is_ok() {
                    self.path.direct_rx(now, socket, from);
                }
            }
            PacketClass::Stun => {
                if let Some(g) = &mut self.gather {
                    g.handle_datagram(now, socket, from, data);
                }
            }
            PacketClass::Quic | PacketClass::Other => {}
        }
        self.step(now);
    }

    /// The relay connection joined the switchboard session; `peer_present` if the peer was
    /// already there.
    pub fn handle_relay_joined(&mut self, now: Instant, peer_present: bool) {
        if peer_present {
            self.relay_peer_up(now);
        }
        self.step(now);
    }

    /// The peer joined the switchboard session.
    pub fn handle_relay_peer_joined(&mut self, now: Instant) {
        self.relay_peer_up(now);
        self.step(now);
    }

    fn relay_peer_up(&mut self, now: Instant) {
        self.path.relay_up();
        // What waited for a path goes now, not at its backed-off retransmission time.
        self.chat.handle_path_up(now);
    }

    /// A session packet arrived over the relay (QUIC packets are the driver's).
    pub fn handle_relay_data(&mut self, now: Instant, data: &[u8]) {
        let _ = self.chat.handle_datagram(now, data);
        self.step(now);
    }

    /// The peer left the switchboard session.
    pub fn handle_relay_peer_left(&mut self, now: Instant) {
        self.path.relay_down();
        self.step(now);
    }

    /// The relay connection closed (`reason` in the driver's words).
    pub fn handle_relay_closed(&mut self, now: Instant, reason: String) {
        let expected = self.peer_gone || (self.eof && self.unacked() == 0);
        self.events
            .push_back(LinkCoreEvent::RelayClosed { reason, expected });
        self.path.relay_down();
        self.step(now);
    }

    /// The endpoint socket is gone: the link fails.
    pub fn handle_endpoint_closed(&mut self, now: Instant) {
        self.end_with(LinkEnd::Failed(LinkFailure::NoPath(
            "the UDP endpoint stopped",
        )));
        self.step(now);
    }

    // ----- inputs: the rendezvous server -----

    /// The peer's primed signal (`PRM sid`) arrived.
    pub fn handle_rendezvous_primed(&mut self, now: Instant, sid: SessionId) {
        if sid == self.punch_sid
            && let Some(p) = &mut self.puncher
        {
            p.handle_peer_primed(now);
        }
        self.step(now);
    }

    /// The server shows the peer offline. Once the session is up only the peer's goodbye or
    /// its silence end the link (its rendezvous connection may be down while the link goes
    /// on); before, a peer that went offline is not coming.
    pub fn handle_rendezvous_peer_offline(&mut self, now: Instant) {
        if !self.chat.is_established() {
            self.peer_gone = true;
        }
        self.step(now);
    }

    /// The peer rang (`RNG sid`) to be introduced again: to punch again (its direct path
    /// died) or to rejoin the relay.
    pub fn handle_rendezvous_ring(&mut self, now: Instant, sid: SessionId) {
        self.repunch.handle_ring(sid);
        self.step(now);
    }

    /// The server cancelled invitation `sid`.
    pub fn handle_rendezvous_cancelled(&mut self, now: Instant, sid: SessionId) {
        self.repunch.handle_cancelled(sid);
        self.step(now);
    }

    /// A new introduction to the peer (ours or the peer's re-punch): the relay rejoins with
    /// its ticket, and a new puncher takes over unless the direct path is up, while the
    /// session goes on. One with another key than the peer's is another link of the peer's,
    /// not ours, and is ignored.
    pub fn handle_rendezvous_introduced(&mut self, now: Instant, intro: &Introduction) {
        self.introduced(now, intro);
        self.step(now);
    }

    fn introduced(&mut self, now: Instant, intro: &Introduction) {
        if intro.peer_key != self.peer_key {
            self.events.push_back(LinkCoreEvent::ForeignIntroduction);
            self.repunch.handle_punch_ended(false);
            return;
        }
        self.repunch.handle_introduced();
        // Both sides get this introduction and both move to its switchboard session, so the
        // relay is always the fresh one.
        if let Some(addr) = intro.relay
            && self.has_relay
        {
            self.commands.push_back(LinkCommand::JoinRelay(intro.sid));
            self.path.relay_restarted(addr);
        }
        if !self.config.punch || self.path.direct_in_use() {
            // The direct path, if up, carries on untouched.
            self.repunch.handle_punch_ended(self.path.direct_in_use());
            self.events.push_back(LinkCoreEvent::Reintroduced {
                sid: intro.sid,
                punching: false,
            });
            return;
        }
        match self.start_puncher(intro) {
            Some(puncher) => {
                self.report_due(now, intro, puncher.strategy());
                self.puncher = Some(puncher);
                self.punch_over = false;
                self.punch_sid = intro.sid;
                self.events.push_back(LinkCoreEvent::Reintroduced {
                    sid: intro.sid,
                    punching: true,
                });
            }
            None => self.repunch.handle_punch_ended(false),
        }
    }

    /// The rendezvous connection was lost: no introductions until it is back.
    pub fn handle_rendezvous_lost(&mut self, now: Instant) {
        self.rendezvous_open = false;
        self.step(now);
    }

    /// The rendezvous connection is back (a new login): if the relay was lost meanwhile, ask
    /// for a new introduction, whose ticket rejoins it.
    pub fn handle_rendezvous_back(&mut self, now: Instant) {
        self.rendezvous_open = true;
        if self.relay_lost() {
            self.repunch.handle_rejoin();
        }
        self.step(now);
    }

    // ----- inputs: answers to commands -----

    /// [`LinkCommand::OpenSockets`] opened `count` sockets.
    pub fn handle_sockets_opened(&mut self, now: Instant, count: u16) {
        if let Some(p) = &mut self.puncher {
            p.handle_sockets_opened(now, count);
        }
        self.step(now);
    }

    /// [`LinkCommand::Invite`] was accepted as `Some(sid)`, or refused (`None`).
    pub fn handle_invite_result(&mut self, now: Instant, sid: Option<SessionId>) {
        match sid {
            Some(sid) => self.repunch.handle_invited(sid),
            None => self.repunch.handle_request_failed(),
        }
        self.step(now);
    }

    /// [`LinkCommand::Answer`] was accepted or refused.
    pub fn handle_answer_result(&mut self, now: Instant, accepted: bool) {
        if !accepted {
            self.repunch.handle_request_failed();
        }
        self.step(now);
    }

    /// Time is `now` (at [`LinkCore::poll_timeout`], or whenever the driver likes).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.step(now);
    }

    // ----- inputs: the application -----

    /// Queues an application message numbered `number` (the application's count): it goes to
    /// the session as its send buffer takes it; [`LinkCoreEvent::Delivered`] or
    /// [`LinkCoreEvent::Undelivered`] reports it.
    pub fn send_message(&mut self, now: Instant, number: u64, bytes: Vec<u8>) {
        self.pending.push_back(Entry { number, bytes });
        self.step(now);
    }

    /// Sends a message of the link itself (the QUIC certificate) in the session.
    pub fn send_link_message(
        &mut self,
        now: Instant,
        message: &LinkMessage,
    ) -> Result<(), ChatError> {
        self.chat.send_message(now, &message.encode())?;
        self.step(now);
        Ok(())
    }

    /// The application sends nothing more: the link ends once everything is acknowledged.
    pub fn finish(&mut self, now: Instant) {
        self.eof = true;
        self.step(now);
    }

    /// Ends the link at once ([`LinkEnd::Interrupted`]).
    pub fn abort(&mut self, now: Instant) {
        self.end_with(LinkEnd::Interrupted);
        self.step(now);
    }

    // ----- outputs -----

    /// The next datagram or relay frame to send.
    pub fn poll_transmit(&mut self, _now: Instant) -> Option<LinkTransmit> {
        self.transmits.pop_front()
    }

    /// The next thing the driver must do.
    pub fn poll_command(&mut self) -> Option<LinkCommand> {
        self.commands.pop_front()
    }

    /// The next thing that happened.
    pub fn poll_event(&mut self) -> Option<LinkCoreEvent> {
        self.events.pop_front()
    }

    /// When [`LinkCore::handle_timeout`] must next be called; `None` once the link ended.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.end.is_some() || self.closed {
            return None;
        }
        let established = self.chat.is_established();
        [
            self.puncher.as_ref().and_then(Puncher::poll_timeout),
            self.chat.poll_timeout(),
            // Probes wait for the session; without one the path's timer would fire at once.
            self.path.poll_timeout().filter(|_| established),
            self.linger_until,
            self.drain_deadline,
            self.next_relay_keepalive,
            // Introductions need the server; the timer waits for it to be back.
            self.repunch.poll_timeout().filter(|_| self.rendezvous_open),
            self.gather
                .as_ref()
                .and_then(BindingTransaction::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- state -----

    /// Where the session's packets go now (QUIC follows it).
    pub fn route(&self) -> Route {
        self.path.route()
    }

    /// Whether the end-to-end session is established.
    pub fn is_established(&self) -> bool {
        self.chat.is_established()
    }

    /// Whether the peer said goodbye or stopped answering.
    pub fn is_peer_gone(&self) -> bool {
        self.peer_gone
    }

    /// Whether a relay was started and has been lost.
    pub fn relay_lost(&self) -> bool {
        self.has_relay && !self.path.relay_alive()
    }

    /// How the link ended, once it did.
    pub fn end(&self) -> Option<&LinkEnd> {
        self.end.as_ref()
    }

    /// Messages the peer acknowledged.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The session's smoothed round-trip time.
    pub fn srtt(&self) -> Option<Duration> {
        self.chat.srtt()
    }

    /// The session's counters.
    pub fn chat_stats(&self) -> ChatStats {
        self.chat.stats()
    }

    /// The current puncher's strategy, if one runs.
    pub fn punch_strategy(&self) -> Option<crate::punch::Strategy> {
        self.puncher.as_ref().map(Puncher::strategy)
    }
}
