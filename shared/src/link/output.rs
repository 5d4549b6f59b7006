//! What a [`super::LinkCore`] hands out: datagrams and relay frames to send, commands for the
//! driver, and events for the application.

use std::net::SocketAddr;

use crate::SocketIndex;
use crate::rendezvous::SessionId;
use crate::rendezvous::telemetry::Report;

use super::ending::{LinkEnd, UndeliveredReason};
use super::path::PathChange;

/// Where a [`LinkTransmit`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A UDP datagram from one of the driver's sockets (0: the endpoint socket, `1..=n`: the
    /// extra sockets of [`LinkCommand::OpenSockets`]).
    Udp {
        /// The socket it leaves from.
        socket: SocketIndex,
        /// Where to.
        remote: SocketAddr,
        /// The IP TTL to send it with; `None` for the default (only priming probes set it).
        ttl: Option<u8>,
    },
    /// A frame on the relay connection (the switchboard forwards it to the peer in order).
    Relay,
}

/// One thing to send.
///
/// Unlike [`crate::Transmit`] it owns its bytes: the session's packets are sealed into fresh
/// buffers anyway, and a relay frame is queued on a connection task, so writing into a
/// caller's buffer would only add a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkTransmit {
    /// Where it goes.
    pub destination: Destination,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Something only the driver can do: it owns the sockets, the relay connection and the
/// rendezvous connection. Commands that have an answer name the `handle_*` input it goes
/// to.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkCommand {
    /// Open this many extra UDP sockets (numbered `1..=n` in order) for the birthday method,
    /// then report how many opened with [`super::LinkCore::handle_sockets_opened`].
    OpenSockets(u16),
    /// Close every extra socket but `keep` (the punched path uses it).
    CloseExtraSockets {
        /// The socket to keep (the endpoint socket is always kept).
        keep: SocketIndex,
    },
    /// Relay our primed signal (`PRM sid`) to the peer through the rendezvous server.
    SendPrimed(SessionId),
    /// Connect to the switchboard with the ticket of introduction `sid` (dropping any earlier
    /// relay connection), then report with the `handle_relay_*` inputs.
    JoinRelay(SessionId),
    /// Ask the rendezvous server for a new introduction to the peer (`INV`) with an offer that
    /// names `srflx` as our server-reflexive address (`None`: keep the last one), then report
    /// with [`super::LinkCore::handle_invite_result`].
    Invite {
        /// Our current server-reflexive address, if the gathering learnt one.
        srflx: Option<SocketAddr>,
    },
    /// Answer the peer's ring `sid` (`ANS`) with such an offer, then report a refusal with
    /// [`super::LinkCore::handle_answer_result`].
    Answer {
        /// The ring's session id.
        sid: SessionId,
        /// Our current server-reflexive address, if the gathering learnt one.
        srflx: Option<SocketAddr>,
    },
    /// Report the outcome of introduction `sid` to the rendezvous server (`RPT`, connectivity
    /// telemetry). Fire and forget: nothing answers it. Only when
    /// [`super::LinkCoreConfig::report_outcomes`] is on.
    Report {
        /// The introduction.
        sid: SessionId,
        /// What happened.
        report: Report,
    },
}

/// Something that happened on the link, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkCoreEvent {
    /// The end-to-end session is established.
    Established,
    /// The path in use changed.
    Path(PathChange),
    /// An application message from the peer: each exactly once, in the peer's order.
    Message(Vec<u8>),
    /// The peer's QUIC certificate fingerprint (the driver starts QUIC with it).
    QuicCertificate([u8; 32]),
    /// The peer acknowledged our message `number`.
    Delivered(u64),
    /// A message of ours the peer did not acknowledge: at once when refused (too long), the
    /// rest when the link ends ([`super::LinkCore::close`]).
    Undelivered {
        /// Its number, as given to [`super::LinkCore::send_message`].
        number: u64,
        /// Its bytes.
        bytes: Vec<u8>,
        /// Why.
        reason: UndeliveredReason,
    },
    /// The puncher confirmed a direct path.
    DirectConfirmed {
        /// Our socket.
        socket: SocketIndex,
        /// The peer's address.
        remote: SocketAddr,
    },
    /// The puncher lost the direct path.
    DirectLost,
    /// Punching ended without a direct path.
    PunchFailed {
        /// Whether this is news for the application (the relay carries the link, and it was
        /// not a re-punch's attempt): `p2p_client` reports it as `NoDirectPath`.
        report: bool,
    },
    /// The direct path (or the relay) went down and punching starts again.
    PunchingAgain {
        /// Which attempt (from 1).
        attempt: u32,
        /// Whether a direct path had been up before.
        after_direct: bool,
    },
    /// A new introduction to the peer was taken: the relay (if any) rejoins with its ticket
    /// and, if `punching`, a new puncher runs on it.
    Reintroduced {
        /// Its session id.
        sid: SessionId,
        /// Whether a new puncher started.
        punching: bool,
    },
    /// A new introduction with another key than the peer's was ignored.
    ForeignIntroduction,
    /// The relay connection closed.
    RelayClosed {
        /// Why (the driver's words).
        reason: String,
        /// Whether the link was ending anyway.
        expected: bool,
    },
    /// The peer stopped answering; [`LinkCoreEvent::PeerLeft`] follows.
    PeerUnresponsive,
    /// The peer left (goodbye or silence): the link ends.
    PeerLeft,
    /// The link is over: stop feeding inputs and call [`super::LinkCore::close`].
    Ended(LinkEnd),
}
