//! The link's event loop after the introduction: one task that owns the I/O of a link (the
//! endpoint sockets, the relay connection, the rendezvous client's requests, QUIC) and moves
//! it in and out of the sans-IO [`LinkCore`], which makes every decision (path choice,
//! fallback, relay keepalives, re-punching, the end rules).
//!
//! It wakes up for a datagram, a relay frame, a rendezvous push, a command of the
//! application, a finished request or the core's timer, hands that to the core, and then
//! drains the core in its order (`Driver::drain`): transmits (sent from the named socket or
//! on the relay), commands (executed here; their answers go back in), events (turned into
//! [`LinkEvent`]s), and sleeps until the core's timeout.
//!
//! Around the loop: a lost rendezvous connection is re-made in the background (`server.rs`),
//! after which the core may ask for a new introduction to rejoin the relay; re-punching's
//! rendezvous requests and the offer they carry are `punching.rs`; the end sends the core's
//! goodbye and reports every message the peer did not acknowledge (`ending.rs`).

mod ending;
mod punching;
mod server;
mod streams;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use rand::rngs::OsRng;
use shared::chat::StaticKeypair;
use shared::link::{
    Destination, LinkCore, LinkCoreConfig, LinkCoreEvent, LinkFailure, LinkTransmit,
};
use shared::nat_classifier::{NatType, PortAllocation};
use shared::punch::NatInfo;
use shared::rendezvous::telemetry::PortMapping as ReportedMapping;
use shared::rendezvous::{Presence, UserName};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use zeroize::Zeroize;

use crate::rendezvous::{
    Event, Introduction, LoginInfo, Offer, OutReason, Relogin, RendezvousClient, RendezvousError,
};

use super::endpoint::{Datagram, Endpoint, PacketClass, classify};
use super::event::LinkEvent;
use super::relay::{Relay, RelayEvent};
use super::{Command, DRAIN_TIMEOUT, LinkError, LinkShared};
use punching::{RequestDone, core_introduction};

/// Wake up at least this often (a guard: the core's timeout says when it needs us).
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
    /// Whether to report the outcome of each punched introduction to the server (`RPT`).
    pub report_outcomes: bool,
    /// How our port mapping was made, if the offer carries one (reported as `map=`).
    pub port_mapping: Option<crate::portmap::Method>,
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
    endpoint: Endpoint,
    relay: Option<Relay>,
    /// Every decision of the link.
    core: LinkCore,
    /// The latest introduction: [`shared::link::LinkCommand::JoinRelay`] joins its switchboard session.
    intro: Introduction,
    /// The application finished sending (no more commands are read).
    eof: bool,
    rendezvous_open: bool,
    /// How to log in again, and the re-login under way.
    relogin: Option<Arc<Relogin>>,
    reconnecting: Option<tokio::task::JoinHandle<Relogged>>,
    /// The STUN service (a re-punch refreshes the offer only with one).
    stun: Option<SocketAddr>,
    /// The offer last sent (its srflx candidate is refreshed when punching again).
    offer: Offer,
    include_loopback: bool,
    /// `INV`/`ANS` of a re-punch, while they run.
    requests: JoinSet<RequestDone>,
    /// QUIC, when the link runs streams.
    streams: Option<streams::Streams>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("peer", &self.peer)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// Starts the link core on the introduction: it asks at once for the relay connection,
    /// starts the session, and the puncher at the shared start time.
    pub fn new(
        setup: Setup,
        endpoint: Endpoint,
        events: mpsc::UnboundedSender<LinkEvent>,
        shared: Arc<LinkShared>,
    ) -> Result<Driver, LinkError> {
        let now = Instant::now();
        let intro = &setup.intro;
        match (
            intro.switchboard,
            intro.switchboard_fingerprint,
            intro.ticket,
        ) {
            (Some(_), Some(_), Some(_)) => {}
            (Some(_), None, Some(_)) => {
                let _ = events.send(LinkEvent::Warning(
                    "the server did not say which key its switchboard has (no sbfp=): \
                     no relay, direct path only"
                        .into(),
                ));
            }
            _ => tracing::warn!("the introduction names no switchboard: direct path only"),
        }
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let mut config = LinkCoreConfig::new(setup.keys.secret.clone(), seed);
        seed.zeroize();
        config.local_nat = match setup.local_nat {
            Some((NatType::UnsupportedServer, _)) | None => NatInfo::default(),
            Some((nat_type, alloc)) => NatInfo::new(nat_type, alloc),
        };
        config.punch = setup.punch;
        config.report_outcomes = setup.report_outcomes;
        config.port_mapping = setup
            .port_mapping
            .map_or(ReportedMapping::None, crate::portmap::Method::reported);
        config.stun = setup.stun;
        config.drain_timeout = DRAIN_TIMEOUT;
        // IPv6 paths need an address of our own: without one in the offer, the peer's IPv6
        // candidates are not probed.
        config.punch_config.ipv6 = setup.offer.candidates.iter().any(|c| c.addr.is_ipv6());
        let core = LinkCore::new(config, &core_introduction(intro, setup.received), now)
            .map_err(|e| LinkError::Setup(e.to_string()))?;
        match core.punch_strategy() {
            Some(strategy) => tracing::info!(?strategy, "punching"),
            None if setup.punch => tracing::warn!("nothing to punch; relay only"),
            None => tracing::info!("punching disabled: relay only"),
        }
        let streams = if setup.streams {
            shared.set_quic(super::shared_state::QuicState::Pending);
            Some(streams::Streams::new(intro.role)?)
        } else {
            None
        };
        let _ = events.send(LinkEvent::Connected {
            peer: setup.peer.clone(),
            sid: intro.sid,
            role: intro.role,
        });
        Ok(Driver {
            client: setup.client,
            events,
            shared,
            peer: setup.peer,
            endpoint,
            relay: None,
            core,
            intro: setup.intro,
            eof: false,
            rendezvous_open: true,
            relogin: setup.relogin,
            reconnecting: None,
            stun: setup.stun,
            offer: setup.offer,
            include_loopback: setup.include_loopback,
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
        self.run_loop(commands).await;
        self.finish().await
    }

    async fn run_loop(&mut self, commands: &mut mpsc::UnboundedReceiver<Command>) {
        loop {
            let now = Instant::now();
            self.drain(now).await;
            if self.core.end().is_some() {
                return;
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
                Wake::Timer => self.core.handle_timeout(now),
                Wake::Datagram(Some(d)) => self.on_datagram(now, d),
                Wake::Datagram(None) => self.core.handle_endpoint_closed(now),
                Wake::Relay(e) => self.on_relay(now, e),
                Wake::Rendezvous(e) => self.on_rendezvous(now, e),
                Wake::Command(Some(Command::Send { number, bytes })) => {
                    self.core.send_message(now, number, bytes);
                }
                Wake::Command(Some(Command::Finish) | None) => {
                    self.eof = true;
                    self.core.finish(now);
                }
                Wake::Command(Some(Command::Abort)) => {
                    tracing::info!("aborted; leaving");
                    self.core.abort(now);
                }
                Wake::Request(Some(Ok(done))) => self.on_request_done(now, done),
                Wake::Request(Some(Err(e))) => {
                    tracing::warn!(error = %e, "a rendezvous request task failed");
                    self.core.handle_invite_result(now, None);
                }
                Wake::Request(None) => {}
                Wake::Reconnected(r) => self.on_relogged(now, *r),
            }
        }
    }

    /// Drains the core in its order (transmits, commands, events) until nothing more happens
    /// at `now`.
    async fn drain(&mut self, now: Instant) {
        loop {
            let mut busy = false;
            while let Some(transmit) = self.core.poll_transmit(now) {
                busy = true;
                self.send(transmit).await;
            }
            while let Some(command) = self.core.poll_command() {
                busy = true;
                self.on_command(now, command).await;
            }
            while let Some(event) = self.core.poll_event() {
                busy = true;
                self.on_core_event(event);
            }
            busy |= self.drive_streams(now);
            if !busy {
                break;
            }
        }
        self.shared.update_session(
            self.core.delivered(),
            self.core.srtt(),
            self.core.chat_stats(),
        );
    }

    /// Sends a datagram from the socket it names, or a frame on the relay; whether it went
    /// on the relay.
    async fn send(&mut self, transmit: LinkTransmit) -> bool {
        match transmit.destination {
            Destination::Udp {
                socket,
                remote,
                ttl,
            } => {
                if let Err(e) = self
                    .endpoint
                    .send(socket, remote, &transmit.data, ttl)
                    .await
                {
                    tracing::debug!(error = %e, %remote, "send failed");
                }
                false
            }
            Destination::Relay => {
                if let Some(relay) = &self.relay {
                    relay.send(transmit.data);
                }
                true
            }
        }
    }

    /// What the core says happened, for the log and the application.
    fn on_core_event(&mut self, event: LinkCoreEvent) {
        match event {
            LinkCoreEvent::Established => tracing::info!("end-to-end session established"),
            LinkCoreEvent::Path(change) => {
                self.update_quic_route();
                self.shared
                    .record_path(Instant::now(), change.kind, change.remote);
                self.emit(LinkEvent::Path {
                    path: change.kind,
                    remote: change.remote,
                });
            }
            LinkCoreEvent::Message(bytes) => {
                self.shared.count_received();
                self.emit(LinkEvent::Message(bytes));
            }
            LinkCoreEvent::QuicCertificate(fingerprint) => {
                self.on_peer_quic_certificate(fingerprint);
            }
            LinkCoreEvent::Delivered(number) => tracing::trace!(number, "delivered"),
            LinkCoreEvent::Undelivered {
                number,
                bytes,
                reason,
            } => self.emit(LinkEvent::Undelivered {
                number,
                bytes,
                reason,
            }),
            LinkCoreEvent::DirectConfirmed { socket, remote } => {
                tracing::info!(socket = socket.0, %remote, "direct path confirmed");
            }
            LinkCoreEvent::DirectLost => tracing::info!("the direct path was lost"),
            LinkCoreEvent::PunchFailed { report } => {
                tracing::info!("punching found no direct path");
                if report {
                    self.emit(LinkEvent::NoDirectPath);
                }
            }
            LinkCoreEvent::PunchingAgain {
                attempt,
                after_direct,
            } => {
                tracing::info!(attempt, "punching again");
                self.emit(LinkEvent::PunchingAgain {
                    attempt,
                    after_direct,
                });
            }
            LinkCoreEvent::Reintroduced { sid, punching } => {
                tracing::info!(%sid, punching, "introduced again");
            }
            LinkCoreEvent::ForeignIntroduction => tracing::warn!(
                "a new introduction to {} with another key (another chat of theirs?); ignored",
                self.peer
            ),
            LinkCoreEvent::RelayClosed { reason, expected } => {
                self.emit(LinkEvent::RelayClosed { reason, expected });
            }
            LinkCoreEvent::PeerUnresponsive => {
                tracing::info!("the peer stopped answering");
                self.emit(LinkEvent::PeerUnresponsive);
            }
            LinkCoreEvent::PeerLeft => self.emit(LinkEvent::PeerLeft),
            LinkCoreEvent::Ended(end) => tracing::debug!(?end, "the link ends"),
            other => tracing::debug!(event = ?other, "link event ignored"),
        }
    }

    fn on_datagram(&mut self, now: Instant, d: Datagram) {
        match classify(&d.data) {
            PacketClass::Quic => self.on_quic_datagram(bytes::Bytes::from(d.data)),
            _ => self.core.handle_datagram(now, d.socket, d.from, &d.data),
        }
    }

    fn on_relay(&mut self, now: Instant, event: RelayEvent) {
        match event {
            RelayEvent::Joined { peer_present } => {
                tracing::info!(peer_present, "joined the switchboard session");
                self.core.handle_relay_joined(now, peer_present);
            }
            RelayEvent::PeerJoined => self.core.handle_relay_peer_joined(now),
            RelayEvent::Data(packet) if classify(&packet) == PacketClass::Quic => {
                self.on_quic_datagram(packet);
            }
            RelayEvent::Data(packet) => self.core.handle_relay_data(now, &packet),
            RelayEvent::PeerLeft => {
                tracing::info!("the peer left the switchboard session");
                self.core.handle_relay_peer_left(now);
            }
            RelayEvent::Closed(reason) => {
                tracing::info!(%reason, "relay closed");
                self.core.handle_relay_closed(now, reason);
            }
        }
    }

    fn on_rendezvous(&mut self, now: Instant, event: Option<Event>) {
        let Some(event) = event else {
            self.on_rendezvous_closed(now);
            return;
        };
        match event {
            Event::PeerPrimed { sid } => self.core.handle_rendezvous_primed(now, sid),
            Event::Presence { name, presence, .. }
                if name == self.peer && presence == Presence::Offline =>
            {
                tracing::info!("the server shows the peer offline");
                self.core.handle_rendezvous_peer_offline(now);
            }
            // The peer wants a new introduction: to punch again (its direct path died), or to
            // rejoin the relay (its connection to the server was lost).
            Event::Ring { sid, from } if from == self.peer => {
                tracing::info!(%sid, "the peer asks to be introduced again");
                self.core.handle_rendezvous_ring(now, sid);
            }
            Event::Introduced(intro) => self.on_introduced(now, *intro),
            Event::Cancelled { sid, .. } => self.core.handle_rendezvous_cancelled(now, sid),
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

    fn next_deadline(&self, now: Instant) -> Instant {
        [
            self.core.poll_timeout(),
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

/// The link error for the core's failure.
fn link_error(peer: &UserName, failure: LinkFailure) -> LinkError {
    match failure {
        LinkFailure::Handshake => LinkError::Handshake,
        LinkFailure::PeerLeft { count } => LinkError::PeerLeft {
            peer: peer.clone(),
            count,
        },
        LinkFailure::NoPath(why) => LinkError::NoPath(why.into()),
        LinkFailure::Undelivered(count) => LinkError::Undelivered(count),
        LinkFailure::Setup(why) => LinkError::Setup(why),
        other => LinkError::Setup(other.to_string()),
    }
}

/// The relay's next event, or never when there is no relay.
async fn relay_event(relay: &mut Option<Relay>) -> RelayEvent {
    match relay {
        Some(relay) => relay.next_event().await,
        None => std::future::pending().await,
    }
}
