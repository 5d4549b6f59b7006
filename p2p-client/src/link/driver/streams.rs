//! QUIC on the link ([`crate::link::quic`]): the driver's side of it.
//!
//! Each side makes an ephemeral certificate when the link starts and, once the end-to-end
//! session is established, sends the certificate's fingerprint inside it
//! ([`shared::link::LinkMessage::QuicCertificate`]). When the peer's fingerprint arrives, the
//! QUIC endpoint starts (the introduction's initiator is the QUIC client) and accepts exactly
//! that certificate: the streams are bound to the same identity keys as the session.
//!
//! QUIC's packets follow the session's path: the driver points the [`QuicRoute`] at the
//! direct path's socket and remote address, at the relay, or nowhere, at every path change;
//! QUIC itself sees one constant peer address, so a path change is no migration to it, only
//! a moment of loss or delay that its congestion control handles. Inbound QUIC datagrams go
//! straight from the endpoint sockets' readers (and from the relay) to the QUIC endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::link::LinkMessage;

use super::super::LinkError;
use super::super::event::LinkEvent;
use super::super::quic::{self, LinkCertificate, QuicInbound, QuicLink, QuicRoute};
use super::super::shared_state::{QuicFailure, QuicState};
use super::Driver;
use crate::rendezvous::Role;
use shared::link::Route;

/// How long after the session is up the peer's QUIC certificate may take: a peer that does
/// not run streams never sends one, and waiting for streams should then fail, not hang.
const CERTIFICATE_WAIT: Duration = Duration::from_secs(10);
/// How long the end of the link waits for QUIC to tell the peer it closes.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// QUIC's state in the driver.
pub(super) struct Streams {
    cert: LinkCertificate,
    role: quic::Role,
    route: QuicRoute,
    /// Whether our fingerprint went into the session.
    announced: bool,
    /// Since when the session is up (for [`CERTIFICATE_WAIT`]).
    established: Option<Instant>,
    link: Option<Arc<QuicLink>>,
    inbound: Option<QuicInbound>,
}

impl Streams {
    /// A fresh certificate for this link.
    pub(super) fn new(role: Role) -> Result<Streams, LinkError> {
        let cert = LinkCertificate::generate().map_err(LinkError::QuicCertificate)?;
        Ok(Streams {
            cert,
            role: match role {
                Role::Initiator => quic::Role::Client,
                Role::Responder => quic::Role::Server,
            },
            route: QuicRoute::new(),
            announced: false,
            established: None,
            link: None,
            inbound: None,
        })
    }

    /// Where QUIC datagrams go, once QUIC runs.
    pub(super) fn quic_inbound(&self) -> Option<&QuicInbound> {
        self.inbound.as_ref()
    }

    /// When the wait for the peer's certificate ends, while it runs.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match (&self.link, self.established) {
            (None, Some(at)) => Some(at + CERTIFICATE_WAIT),
            _ => None,
        }
    }
}

impl Driver {
    /// Once the session is up: announce our certificate; give up on a silent peer. Whether
    /// the certificate went into the session now (the core then has packets to send).
    pub(super) fn drive_streams(&mut self, now: Instant) -> bool {
        let established = self.core.is_established();
        let Some(streams) = &mut self.streams else {
            return false;
        };
        if !established {
            return false;
        }
        let since = *streams.established.get_or_insert(now);
        let mut queued = false;
        if !streams.announced {
            let message = LinkMessage::QuicCertificate(streams.cert.fingerprint());
            match self.core.send_link_message(now, &message) {
                Ok(()) => {
                    streams.announced = true;
                    queued = true;
                }
                Err(e) => tracing::debug!(error = %e, "QUIC certificate not queued yet"),
            }
        }
        if streams.link.is_none()
            && now >= since + CERTIFICATE_WAIT
            && matches!(self.shared.quic_state(), QuicState::Pending)
        {
            tracing::info!("the peer sent no QUIC certificate: no streams on this link");
            self.shared
                .set_quic(QuicState::Failed(QuicFailure::PeerHasNoStreams));
        }
        queued
    }

    /// The peer's certificate fingerprint arrived: start QUIC.
    pub(super) fn on_peer_quic_certificate(&mut self, fingerprint: [u8; 32]) {
        let Some(streams) = &mut self.streams else {
            tracing::debug!("the peer runs streams, we do not: its certificate is ignored");
            return;
        };
        if streams.link.is_some() {
            tracing::debug!("a second QUIC certificate from the peer ignored");
            return;
        }
        let (link, inbound) = match QuicLink::new(
            streams.role,
            &streams.cert,
            fingerprint,
            streams.route.clone(),
        ) {
            Ok(made) => made,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start QUIC");
                self.shared
                    .set_quic(QuicState::Failed(QuicFailure::Error(Arc::new(e))));
                return;
            }
        };
        let link = Arc::new(link);
        self.endpoint.set_quic_inbound(inbound.clone());
        if let Some(relay) = &self.relay {
            relay.set_quic_inbound(inbound.clone());
        }
        streams.inbound = Some(inbound);
        streams.link = Some(link.clone());
        self.update_quic_route();
        let (shared, events) = (self.shared.clone(), self.events.clone());
        tokio::spawn(async move {
            match link.connection().await {
                Ok(connection) => {
                    tracing::info!("QUIC streams are up");
                    shared.set_quic(QuicState::Up(connection));
                    let _ = events.send(LinkEvent::StreamsReady);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "QUIC did not come up");
                    shared.set_quic(QuicState::Failed(QuicFailure::Error(Arc::new(e))));
                }
            }
        });
    }

    /// Points QUIC at the path in use.
    pub(super) fn update_quic_route(&self) {
        let Some(streams) = &self.streams else {
            return;
        };
        match self.core.route() {
            Route::Direct { socket, remote } => match self.endpoint.socket(socket) {
                Some(socket) => streams.route.set_direct(socket, remote),
                None => streams.route.set_none(),
            },
            Route::Relay => match &self.relay {
                Some(relay) => streams.route.set_relayed(relay.sender()),
                None => streams.route.set_none(),
            },
            Route::Drop => {
                streams.route.set_none();
                return;
            }
        }
        // A new path: make QUIC send now. During an outage its probe timer backs off
        // exponentially, so without a nudge the first packet on the new path could wait many
        // seconds; a small datagram (QUIC DATAGRAM frame, RFC 9221, which the peer ignores) is
        // ack-eliciting, and its acknowledgement resets the backoff and lets loss recovery
        // resend what the outage swallowed at once.
        if let QuicState::Up(connection) = self.shared.quic_state()
            && let Err(e) = connection.send_datagram(bytes::Bytes::from_static(&[0]))
        {
            tracing::debug!(error = %e, "cannot nudge QUIC onto the new path");
        }
    }

    /// A QUIC datagram that reached the driver (from the relay, or before QUIC started).
    pub(super) fn on_quic_datagram(&self, packet: bytes::Bytes) {
        match self.streams.as_ref().and_then(|s| s.inbound.as_ref()) {
            Some(inbound) => {
                inbound.deliver(packet);
            }
            None => tracing::trace!("QUIC datagram before QUIC started: dropped"),
        }
    }

    /// Closes QUIC (telling the peer, briefly) before the session says goodbye.
    pub(super) async fn close_streams(&mut self) {
        let Some(streams) = &mut self.streams else {
            return;
        };
        if let Some(link) = streams.link.take() {
            let _ = tokio::time::timeout(CLOSE_WAIT, link.close(b"link closed")).await;
        }
        self.shared.set_quic(QuicState::Failed(QuicFailure::Ended));
    }
}
