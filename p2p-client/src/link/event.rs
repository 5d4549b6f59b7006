//! What a [`super::Link`] tells its application.

use std::net::SocketAddr;

use shared::identity::Fingerprint;
use shared::rendezvous::{SessionId, UserName};

use crate::rendezvous::Role;

/// The path a link's packets take, and why a message did not reach the peer (see
/// [`LinkEvent::Undelivered`]): the link core's own words.
pub use shared::link::{PathKind, UndeliveredReason};

/// The state of the connection to the rendezvous server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServerState {
    /// Lost; logging in again in the background. The link goes on.
    Reconnecting,
    /// Logged in again.
    Connected,
}

/// One thing that happened on a link, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkEvent {
    /// The server introduced us; the end-to-end session starts. Only the events of making
    /// the link (the server connection lost and back, the peer's key pinned) come before it.
    Connected {
        /// The peer.
        peer: UserName,
        /// The introduction's session id.
        sid: SessionId,
        /// Our role in it.
        role: Role,
    },
    /// First contact with the peer: its identity key is pinned now (unverified: compare
    /// safety numbers to verify it).
    PeerKeyPinned {
        /// The peer.
        peer: UserName,
        /// Its key's fingerprint.
        fingerprint: Fingerprint,
    },
    /// The peer's key changed and the new one was accepted ([`super::LinkConfig::accept_new_key`]).
    PeerKeyReplaced {
        /// The peer.
        peer: UserName,
        /// The key pinned before.
        old: Fingerprint,
        /// The key pinned now (unverified).
        new: Fingerprint,
        /// Whether the old key had been verified.
        was_verified: bool,
    },
    /// The path in use changed.
    Path {
        /// Direct or relayed.
        path: PathKind,
        /// The peer's address on a direct path, the switchboard's on a relayed one.
        remote: SocketAddr,
    },
    /// A message from the peer: each exactly once, in the peer's order.
    Message(Vec<u8>),
    /// A message of ours the peer did not acknowledge (reported when the link ends, or at
    /// once when it is refused).
    Undelivered {
        /// Its number, as [`super::Link::send`] returned it.
        number: u64,
        /// Its bytes.
        bytes: Vec<u8>,
        /// Why.
        reason: UndeliveredReason,
    },
    /// The peer stopped answering (nothing authenticated for the session's idle timeout).
    /// [`LinkEvent::PeerLeft`] follows.
    PeerUnresponsive,
    /// The peer left: its goodbye, or its silence. The link ends.
    PeerLeft,
    /// The direct path went down and punching starts again.
    PunchingAgain {
        /// Which attempt (from 1).
        attempt: u32,
        /// Whether a direct path had been up before (otherwise this is a retry of a first
        /// attempt that found none).
        after_direct: bool,
    },
    /// Punching found no direct path; the link stays on the relay while it is up.
    NoDirectPath,
    /// The relay connection closed.
    RelayClosed {
        /// Why.
        reason: String,
        /// Whether the link was ending anyway (nothing for a user to worry about).
        expected: bool,
    },
    /// The rendezvous connection was lost or is back.
    Server(ServerState),
    /// QUIC streams can be opened and accepted ([`super::Link::open_stream`]).
    StreamsReady,
    /// Something a user may want to know that changes nothing by itself (text for people).
    Warning(String),
}
