//! The chat's event loop after the introduction: one task that owns the puncher, the chat
//! session, the path choice, the relay connection and the endpoint sockets, and wakes up for
//! a datagram, a relay frame, a rendezvous push, a line of input or the earliest timer.
//!
//! After every wake-up, `Driver::pump` drains the cores in the order of every core
//! (docs/DESIGN.md section 8): puncher transmits, then puncher events; then re-punching
//! (`punching.rs`, whose STUN Binding is a [`crate::binding::StunBinding`]); chat transmits
//! (sent on the path [`PathSelector::route`] names), then chat events; then path changes,
//! which are announced.
//!
//! Around the loop: a lost rendezvous connection is re-made in the background (`server.rs`),
//! after which a new introduction rejoins the relay; the chat's end sends the authenticated
//! goodbye and reports every message the peer did not acknowledge (`ending.rs`).

mod ending;
mod punching;
mod server;
mod streams;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use rand::rngs::OsRng;
use shared::chat::{
    self, ChatConfig, ChatError, ChatEvent, ChatSession, MessageId, PublicKey, StaticKeypair,
};
use shared::link::LinkMessage;
use shared::nat_classifier::{NatType, PortAllocation};
use shared::punch::wire::PACKET_LEN as PUNCH_PACKET_LEN;
use shared::punch::{PunchEvent, Puncher};
use shared::rendezvous::{Presence, SessionId, UserName};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use zeroize::Zeroize;

use crate::binding::StunBinding;
use crate::rendezvous::{
    Event, Introduction, LoginInfo, Offer, OutReason, Relogin, RendezvousClient, RendezvousError,
    Role,
};

use super::endpoint::{Datagram, Endpoint, PacketClass, classify};
use super::event::{LinkEvent, UndeliveredReason};
use super::path::{PathConfig, PathSelector, Route};
use super::relay::{Relay, RelayEvent};
use super::repunch::{Repunch, RepunchConfig};
use super::{Command, DRAIN_TIMEOUT, LinkError, LinkShared};
use ending::{End, Entry};
use punching::{RequestDone, start_puncher};

/// After every message is acknowledged at the end of input, keep answering this long, so the
/// peer gets the acknowledgements of its last messages.
const LINGER: Duration = Duration::from_millis(300);
/// While the chat is direct, touch the relay this often so the switchboard does not close it
/// as idle (its idle timeout is 120 s) and it is still there to fall back on.
const RELAY_KEEPALIVE: Duration = Duration::from_secs(30);
/// Wake up at least this often to re-check the end conditions.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Everything the loop starts from.
pub struct Setup {
    /// The logged-in rendezvous connection.
    pub client: Arc<RendezvousClient>,
    /// Whom we chat with.
    pub peer: UserName,
    /// The introduction.
    pub intro: Introduction,
    /// When the introduction arrived.
    pub received: Instant,
    /// Our Noise static key pair: the device identity (its public half went out in the
    /// offer and with `DEV`).
    pub keys: StaticKeypair,
    /// Our NAT, if classified.
    pub local_nat: Option<(NatType, Option<PortAllocation>)>,
    /// Whether to punch (off: relay only).
    pub punch: bool,
    /// The STUN service (for our current address when punching again).
    pub stun: Option<SocketAddr>,
    /// The offer we sent; punching again sends it with fresh addresses.
    pub offer: Offer,
    /// Whether host candidates include loopback addresses (a server on loopback).
    pub include_loopback: bool,
    /// How to log in again when the rendezvous connection is lost (`None`: do not).
    pub relogin: Option<Arc<Relogin>>,
    /// Whether to run QUIC over the link for streams.
    pub streams: bool,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("peer", &self.peer)
            .field("intro", &self.intro)
            .field("punch", &self.punch)
            .finish_non_exhaustive()
    }
}

/// What woke the loop.
enum Wake {
    Timer,
    Datagram(Option<Datagram>),
    Relay(RelayEvent),
    Rendezvous(Option<Event>),
    Command(Option<Command>),
    Request(Option<Result<RequestDone, tokio::task::JoinError>>),
    Reconnected(Box<Result<Relogged, tokio::task::JoinError>>),
}

/// What a background re-login ends with.
type Relogged = Result<(RendezvousClient, LoginInfo), RendezvousError>;

/// The loop's state; see the [module docs](self).
pub struct Driver {
    client: Arc<RendezvousClient>,
    events: mpsc::UnboundedSender<LinkEvent>,
    shared: Arc<LinkShared>,
    peer: UserName,
    sid: SessionId,
    endpoint: Endpoint,
    puncher: Option<Puncher>,
    punch_over: bool,
    relay: Option<Relay>,
    chat: ChatSession,
    path: PathSelector,
    /// Lines not yet accepted by the session (its send buffer was full).
    pending: VecDeque<Entry>,
    /// Lines the session took and the peer has not acknowledged yet, by message id.
    sent: BTreeMap<MessageId, Entry>,
    /// Lines refused (too long) and already reported.
    refused: usize,
    /// Messages the peer acknowledged.
    delivered: u64,
    eof: bool,
    /// The peer said goodbye, or stopped answering.
    peer_gone: bool,
    rendezvous_open: bool,
    /// How to log in again, and the re-login under way.
    relogin: Option<Arc<Relogin>>,
    reconnecting: Option<tokio::task::JoinHandle<Relogged>>,
    drain_deadline: Option<Instant>,
    linger_until: Option<Instant>,
    next_relay_keepalive: Option<Instant>,
    /// Whether to punch at all (off with `--no-direct`).
    punch_enabled: bool,
    /// The introduction the current puncher runs on: the first one or the latest
    /// re-introduction (`PRM` names it).
    punch_sid: SessionId,
    /// The peer's Noise key from the first introduction; a re-introduction must carry it.
    peer_key: [u8; 32],
    local_nat: Option<(NatType, Option<PortAllocation>)>,
    stun: Option<SocketAddr>,
    /// The offer last sent (its srflx candidate is refreshed when punching again).
    offer: Offer,
    include_loopback: bool,
    /// A direct path has been up at least once (only then is one worth punching again).
    had_direct: bool,
    repunch: Repunch,
    /// The STUN Binding of a re-punch, while it runs.
    gather: Option<StunBinding>,
    /// `INV`/`ANS` of a re-punch, while they run.
    requests: JoinSet<RequestDone>,
    /// QUIC, when the link runs streams.
    streams: Option<streams::Streams>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("peer", &self.peer)
            .field("sid", &self.sid)
            .field("chat", &self.chat)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// Starts the relay connection, the puncher (at the shared start time) and the chat
    /// session, all at once.
    pub fn new(
        setup: Setup,
        endpoint: Endpoint,
        events: mpsc::UnboundedSender<LinkEvent>,
        shared: Arc<LinkShared>,
    ) -> Result<Driver, LinkError> {
        let now = Instant::now();
        let intro = &setup.intro;
        let sid = intro.sid;
        let chat_role = match intro.role {
            Role::Initiator => chat::Role::Initiator,
            Role::Responder => chat::Role::Responder,
        };
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let config = ChatConfig::new(
            chat_role,
            setup.keys.secret.clone(),
            PublicKey(intro.offer.key),
            sid.0.to_vec(),
            seed,
        );
        seed.zeroize();
        let chat = ChatSession::new(config, now).map_err(|e| LinkError::Setup(e.to_string()))?;
        let relay = match (
            intro.switchboard,
            intro.switchboard_fingerprint,
            intro.ticket,
        ) {
            (Some(addr), Some(fingerprint), Some(ticket)) => {
                Some(Relay::start(addr, fingerprint, sid, ticket.0))
            }
            (Some(_), None, Some(_)) => {
                let _ = events.send(LinkEvent::Warning(
                    "the server did not say which key its switchboard has (no sbfp=): \
                     no relay, direct path only"
                        .into(),
                ));
                None
            }
            _ => {
                tracing::warn!("the introduction names no switchboard: direct path only");
                None
            }
        };
        let path = PathSelector::new(PathConfig::default(), relay.as_ref().map(Relay::addr));
        let puncher = if setup.punch {
            start_puncher(intro, setup.local_nat, setup.received + intro.start)
        } else {
            tracing::info!("punching disabled: relay only");
            None
        };
        let streams = if setup.streams {
            shared.set_quic(super::shared_state::QuicState::Pending);
            Some(streams::Streams::new(intro.role)?)
        } else {
            None
        };
        let _ = events.send(LinkEvent::Connected {
            peer: setup.peer.clone(),
            sid,
            role: intro.role,
        });
        Ok(Driver {
            client: setup.client,
            events,
            shared,
            peer: setup.peer,
            sid,
            endpoint,
            punch_over: puncher.is_none(),
            puncher,
            relay,
            chat,
            path,
            pending: VecDeque::new(),
            sent: BTreeMap::new(),
            refused: 0,
            delivered: 0,
            eof: false,
            peer_gone: false,
            rendezvous_open: true,
            relogin: setup.relogin,
            reconnecting: None,
            drain_deadline: None,
            linger_until: None,
            next_relay_keepalive: None,
            punch_enabled: setup.punch,
            punch_sid: sid,
            peer_key: setup.intro.offer.key,
            local_nat: setup.local_nat,
            stun: setup.stun,
            offer: setup.offer,
            include_loopback: setup.include_loopback,
            had_direct: false,
            repunch: Repunch::new(RepunchConfig::default()),
            gather: None,
            requests: JoinSet::new(),
            streams,
        })
    }

    /// Runs until the link ends: [`Command::Finish`] and everything was acknowledged, or the
    /// peer left (`Ok`), or a failure; [`Command::Abort`] ends it at once. Then says goodbye
    /// to the peer and reports every message it did not acknowledge: with any, the result is
    /// an error.
    pub async fn run(
        mut self,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Result<(), LinkError> {
        let result = self.run_loop(commands).await;
        self.finish(result).await
    }

    async fn run_loop(
        &mut self,
        commands: &mut mpsc::UnboundedReceiver<Command>,
    ) -> Result<End, LinkError> {
        loop {
            let now = Instant::now();
            self.pump(now).await?;
            if self.finished(now)? {
                return Ok(if self.peer_gone {
                    End::PeerLeft
                } else {
                    End::Done
                });
            }
            let deadline = self.next_deadline(now);
            let wake = tokio::select! {
                () = tokio::time::sleep_until(deadline.into()) => Wake::Timer,
                d = self.endpoint.recv() => Wake::Datagram(d),
                e = relay_event(&mut self.relay) => Wake::Relay(e),
                e = self.client.next_event(), if self.rendezvous_open => Wake::Rendezvous(e),
                c = commands.recv(), if !self.eof => Wake::Command(c),
                r = self.requests.join_next(), if !self.requests.is_empty() => Wake::Request(r),
                r = server::relogged(&mut self.reconnecting), if self.reconnecting.is_some() => {
                    Wake::Reconnected(Box::new(r))
                }
            };
            let now = Instant::now();
            match wake {
                Wake::Timer => {}
                Wake::Datagram(Some(d)) => self.on_datagram(now, d),
                Wake::Datagram(None) => {
                    return Err(LinkError::NoPath("the UDP endpoint stopped".into()));
                }
                Wake::Relay(e) => self.on_relay(now, e),
                Wake::Rendezvous(e) => self.on_rendezvous(now, e),
                Wake::Command(Some(Command::Send { number, bytes })) => {
                    self.pending.push_back(Entry { number, bytes });
                }
                Wake::Command(Some(Command::Finish) | None) => self.eof = true,
                Wake::Command(Some(Command::Abort)) => {
                    tracing::info!("aborted; leaving");
                    return Ok(End::Interrupted);
                }
                Wake::Request(Some(Ok(done))) => self.on_request_done(done),
                Wake::Request(Some(Err(e))) => {
                    tracing::warn!(error = %e, "a rendezvous request task failed");
                    self.repunch.handle_request_failed();
                }
                Wake::Request(None) => {}
                Wake::Reconnected(r) => self.on_relogged(now, *r),
            }
        }
    }

    /// Drains the cores until nothing more happens at `now`.
    async fn pump(&mut self, now: Instant) -> Result<(), LinkError> {
        loop {
            let mut again = false;
            if let Some(p) = &mut self.puncher
                && p.poll_timeout().is_some_and(|t| t <= now)
            {
                p.handle_timeout(now);
            }
            // The order of every core (docs/DESIGN.md section 8): transmits, then events.
            if let Some(p) = &mut self.puncher {
                let mut buf = [0u8; PUNCH_PACKET_LEN];
                while let Some(t) = p.poll_transmit(now, &mut buf) {
                    let (to, data) = (t.destination, &buf[..t.size]);
                    if let Err(e) = self.endpoint.send(t.socket, to, data, t.ttl).await {
                        tracing::debug!(error = %e, %to, "punch send failed");
                    }
                }
            }
            let events: Vec<PunchEvent> = match &mut self.puncher {
                Some(p) => std::iter::from_fn(|| p.poll_event()).collect(),
                None => Vec::new(),
            };
            for event in events {
                again = true;
                self.on_punch_event(now, event).await;
            }
            self.path.handle_timeout(now);
            self.drive_repunch(now).await;
            self.send_probes(now).await;
            self.drive_streams(now);
            self.push_pending(now)?;
            while let Some(packet) = self.chat.poll_transmit(now) {
                self.send_chat(packet).await;
            }
            while let Some(event) = self.chat.poll_event() {
                again = true;
                self.on_chat_event(event)?;
            }
            while let Some(change) = self.path.poll_change() {
                self.update_quic_route();
                self.shared.record_path(now, change.kind, change.remote);
                self.emit(LinkEvent::Path {
                    path: change.kind,
                    remote: change.remote,
                });
            }
            if !again {
                self.shared
                    .update_session(self.delivered, self.chat.srtt(), self.chat.stats());
                return Ok(());
            }
        }
    }

    async fn on_punch_event(&mut self, now: Instant, event: PunchEvent) {
        match event {
            PunchEvent::OpenSockets(n) => {
                let opened = self.endpoint.open_extra(n).await;
                tracing::info!(
                    asked = n,
                    opened,
                    "opened extra sockets for the birthday method"
                );
                if let Some(p) = &mut self.puncher {
                    p.handle_sockets_opened(now, opened);
                }
            }
            PunchEvent::Primed => {
                let (client, sid) = (self.client.clone(), self.punch_sid);
                tokio::spawn(async move {
                    if let Err(e) = client.primed(sid).await {
                        tracing::debug!(error = %e, "cannot relay the primed signal");
                    }
                });
            }
            PunchEvent::Connected { socket, remote } => {
                tracing::info!(socket = socket.0, %remote, "direct path confirmed");
                self.endpoint.close_extras_except(socket);
                self.path.direct_confirmed(now, socket, remote);
                self.had_direct = true;
                self.repunch.handle_punch_ended(true);
            }
            PunchEvent::Failed => {
                tracing::info!("punching found no direct path");
                self.punch_over = true;
                let again = self.repunch.in_progress();
                self.repunch.handle_punch_ended(false);
                if self.path.relay_alive() && !again {
                    self.emit(LinkEvent::NoDirectPath);
                }
            }
            PunchEvent::PathLost => {
                // The re-punch machine sees the path down at the next pump.
                tracing::info!("the direct path was lost");
                self.punch_over = true;
                self.path.direct_lost();
            }
            other => tracing::debug!(event = ?other, "punch event ignored"),
        }
    }

    /// A chat probe on a quiet direct path; a keepalive on the relay while direct.
    async fn send_probes(&mut self, now: Instant) {
        if !self.chat.is_established() {
            return;
        }
        if let Some((socket, remote)) = self.path.probe_due(now)
            && let Ok(probe) = self.chat.probe_packet(now)
            && let Err(e) = self.endpoint.send(socket, remote, &probe, None).await
        {
            tracing::debug!(error = %e, %remote, "probe send failed");
        }
        let direct = matches!(self.path.route(), Route::Direct { .. });
        match (&self.relay, direct) {
            (Some(relay), true) if self.path.relay_alive() => {
                let due = *self
                    .next_relay_keepalive
                    .get_or_insert(now + RELAY_KEEPALIVE);
                if now >= due
                    && let Ok(probe) = self.chat.probe_packet(now)
                {
                    relay.send(probe);
                    self.next_relay_keepalive = Some(now + RELAY_KEEPALIVE);
                }
            }
            _ => self.next_relay_keepalive = None,
        }
    }

    /// Hands queued messages to the session while its send buffer takes them.
    fn push_pending(&mut self, now: Instant) -> Result<(), LinkError> {
        while let Some(entry) = self.pending.front() {
            let framed = LinkMessage::App(entry.bytes.clone()).encode();
            match self.chat.send_message(now, &framed) {
                Ok(id) => {
                    tracing::trace!(%id, "queued");
                    if let Some(entry) = self.pending.pop_front() {
                        self.sent.insert(id, entry);
                    }
                }
                Err(ChatError::SendBufferFull) => break,
                Err(e @ ChatError::MessageTooLarge { .. }) => {
                    tracing::info!(error = %e, "message refused");
                    if let Some(entry) = self.pending.pop_front() {
                        self.report_undelivered(entry, UndeliveredReason::TooLong);
                        self.refused += 1;
                    }
                }
                Err(ChatError::Failed) => return Err(LinkError::Handshake),
                Err(e) => return Err(LinkError::Setup(e.to_string())),
            }
        }
        Ok(())
    }

    async fn send_chat(&mut self, packet: Vec<u8>) {
        match self.path.route() {
            Route::Direct { socket, remote } => {
                if let Err(e) = self.endpoint.send(socket, remote, &packet, None).await {
                    tracing::debug!(error = %e, %remote, "chat send failed");
                }
            }
            Route::Relay => {
                if let Some(relay) = &self.relay {
                    relay.send(packet);
                }
            }
            Route::Drop => tracing::trace!("no path: chat packet dropped"),
        }
    }

    fn on_chat_event(&mut self, event: ChatEvent) -> Result<(), LinkError> {
        match event {
            ChatEvent::Established => tracing::info!("end-to-end session established"),
            ChatEvent::Message { bytes, .. } => match LinkMessage::decode(&bytes) {
                Ok(LinkMessage::App(bytes)) => {
                    self.shared.count_received();
                    self.emit(LinkEvent::Message(bytes));
                }
                Ok(LinkMessage::QuicCertificate(fingerprint)) => {
                    self.on_peer_quic_certificate(fingerprint);
                }
                Err(e) => tracing::debug!(error = %e, "link message dropped"),
            },
            ChatEvent::Delivered(id) => {
                tracing::trace!(%id, "delivered");
                // `id` and every earlier message.
                let before = self.sent.len();
                self.sent = self.sent.split_off(&MessageId(id.0.saturating_add(1)));
                self.delivered += (before - self.sent.len()) as u64;
            }
            ChatEvent::HandshakeTimedOut => return Err(LinkError::Handshake),
            ChatEvent::PeerClosed => {
                tracing::info!("the peer said goodbye");
                self.peer_gone = true;
            }
            ChatEvent::PeerUnresponsive => {
                tracing::info!("the peer stopped answering");
                self.emit(LinkEvent::PeerUnresponsive);
                self.peer_gone = true;
            }
            other => tracing::debug!(event = ?other, "chat event ignored"),
        }
        Ok(())
    }

    fn on_datagram(&mut self, now: Instant, d: Datagram) {
        match classify(&d.data) {
            PacketClass::Punch => {
                if let Some(p) = &mut self.puncher {
                    p.handle_datagram(now, d.socket, d.from, &d.data);
                }
            }
            PacketClass::Chat => {
                // Chat packets from the peer keep the puncher's path alive too.
                if let Some(p) = &mut self.puncher {
                    p.handle_datagram(now, d.socket, d.from, &d.data);
                }
                match self.chat.handle_datagram(now, &d.data) {
                    Ok(()) => self.path.direct_rx(now, d.socket, d.from),
                    Err(e) => tracing::debug!(error = %e, from = %d.from, "chat packet dropped"),
                }
            }
            PacketClass::Stun => {
                let taken = self
                    .gather
                    .as_mut()
                    .is_some_and(|b| b.handle_datagram(now, d.socket, d.from, &d.data));
                if !taken {
                    tracing::debug!(from = %d.from, "late STUN datagram ignored");
                }
            }
            PacketClass::Quic => self.on_quic_datagram(bytes::Bytes::from(d.data)),
            PacketClass::Other => {
                tracing::debug!(from = %d.from, "unknown datagram dropped")
            }
        }
    }

    fn on_relay(&mut self, now: Instant, event: RelayEvent) {
        match event {
            RelayEvent::Joined { peer_present } => {
                tracing::info!(peer_present, "joined the switchboard session");
                if peer_present {
                    self.path.relay_up();
                    self.chat.handle_path_up(now);
                }
            }
            RelayEvent::PeerJoined => {
                self.path.relay_up();
                self.chat.handle_path_up(now);
            }
            RelayEvent::Data(packet) if classify(&packet) == PacketClass::Quic => {
                self.on_quic_datagram(packet);
            }
            RelayEvent::Data(packet) => {
                if let Err(e) = self.chat.handle_datagram(now, &packet) {
                    tracing::debug!(error = %e, "relayed chat packet dropped");
                }
            }
            RelayEvent::PeerLeft => {
                tracing::info!("the peer left the switchboard session");
                self.path.relay_down();
            }
            RelayEvent::Closed(reason) => {
                tracing::info!(%reason, "relay closed");
                let expected = self.peer_gone || (self.eof && self.unacked() == 0);
                self.emit(LinkEvent::RelayClosed { reason, expected });
                self.path.relay_down();
            }
        }
    }

    fn on_rendezvous(&mut self, now: Instant, event: Option<Event>) {
        let Some(event) = event else {
            self.on_rendezvous_closed();
            return;
        };
        match event {
            Event::PeerPrimed { sid } if sid == self.punch_sid => {
                if let Some(p) = &mut self.puncher {
                    p.handle_peer_primed(now);
                }
            }
            // Once the chat is up, only the peer's goodbye or its silence end it: its
            // rendezvous connection may be down (a server restart) while the chat goes on.
            // Before, a peer that went offline is not coming (it refused our key, say).
            Event::Presence { name, presence, .. }
                if name == self.peer && presence == Presence::Offline =>
            {
                tracing::info!("the server shows the peer offline");
                if !self.chat.is_established() {
                    self.peer_gone = true;
                }
            }
            // The peer wants a new introduction: to punch again (its direct path died), or to
            // rejoin the relay (its connection to the server was lost).
            Event::Ring { sid, from } if from == self.peer => {
                tracing::info!(%sid, "the peer asks to be introduced again");
                self.repunch.handle_ring(sid);
            }
            Event::Introduced(intro) => self.on_introduced(now, &intro),
            Event::Cancelled { sid, .. } => self.repunch.handle_cancelled(sid),
            Event::Ring { sid, from } => {
                tracing::info!(%from, "declining an invitation while chatting");
                let client = self.client.clone();
                tokio::spawn(async move {
                    let _ = client.decline(sid).await;
                });
            }
            Event::LoggedOut(reason) => {
                tracing::warn!(%reason, "logged out by the server; the chat goes on");
                if reason == OutReason::OtherLogin {
                    // Replaced by a login with this process's session: do not fight it.
                    self.relogin = None;
                }
            }
            other => tracing::debug!(event = ?other, "rendezvous push ignored"),
        }
    }

    /// Reports an event to the application (which may have stopped listening).
    fn emit(&self, event: LinkEvent) {
        let _ = self.events.send(event);
    }

    fn unacked(&self) -> usize {
        self.pending.len() + self.sent.len()
    }

    /// Whether the chat is over (`Ok(true)`), or why it failed.
    fn finished(&mut self, now: Instant) -> Result<bool, LinkError> {
        if self.chat.is_failed() {
            return Err(LinkError::Handshake);
        }
        let unacked = self.unacked();
        if self.peer_gone {
            self.emit(LinkEvent::PeerLeft);
            if unacked == 0 {
                return Ok(true);
            }
            return Err(LinkError::PeerLeft {
                peer: self.peer.clone(),
                count: unacked,
            });
        }
        // No path at all is not the end: a re-punch or a rejoined relay may bring one back,
        // and a peer that is really gone goes silent (`PeerUnresponsive`).
        let punching = (self.puncher.is_some() && !self.punch_over) || self.repunch.in_progress();
        if self.path.route() == Route::Drop
            && !punching
            && self.relay.is_none()
            && !self.chat.is_established()
        {
            return Err(LinkError::NoPath(
                "no switchboard and no direct path".into(),
            ));
        }
        if !self.eof {
            return Ok(false);
        }
        if unacked == 0 {
            if !self.chat.is_established() {
                return Ok(true);
            }
            let linger = *self.linger_until.get_or_insert(now + LINGER);
            return Ok(now >= linger);
        }
        if self.chat.is_established() {
            let drain = *self.drain_deadline.get_or_insert(now + DRAIN_TIMEOUT);
            if now >= drain {
                return Err(LinkError::Undelivered(unacked));
            }
        }
        Ok(false)
    }

    fn next_deadline(&self, now: Instant) -> Instant {
        [
            self.puncher.as_ref().and_then(Puncher::poll_timeout),
            self.chat.poll_timeout(),
            self.path.poll_timeout(),
            self.linger_until,
            self.drain_deadline,
            self.next_relay_keepalive,
            self.repunch.poll_timeout(),
            self.gather.as_ref().and_then(StunBinding::poll_timeout),
            self.streams
                .as_ref()
                .and_then(streams::Streams::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + MAX_SLEEP)
        .clamp(now + Duration::from_millis(1), now + MAX_SLEEP)
    }
}

/// The relay's next event, or never when there is no relay.
async fn relay_event(relay: &mut Option<Relay>) -> RelayEvent {
    match relay {
        Some(relay) => relay.next_event().await,
        None => std::future::pending().await,
    }
}
