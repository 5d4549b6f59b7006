//! The errors of a link.

use shared::identity::Fingerprint;
use shared::rendezvous::UserName;

use crate::home::HomeError;
use crate::rendezvous::{CloseReason, RendezvousClient, RendezvousError};

/// Why a link could not be made, or ended badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// A rendezvous request failed.
    #[error(transparent)]
    Client(#[from] RendezvousError),
    /// The rendezvous connection ended or said something unusable.
    #[error("rendezvous: {0}")]
    Rendezvous(String),
    /// The peer never showed up and answered.
    #[error("{0} did not come online and join in time (see --wait)")]
    PeerAbsent(UserName),
    /// Nobody asked for a link within the wait ([`super::Link::accept`]).
    #[error("nobody asked for a link within {0:?} (see --wait)")]
    NobodyCame(std::time::Duration),
    /// The peer declined our invitation.
    #[error("{0} declined the link")]
    Declined(UserName),
    /// A bad argument.
    #[error("{0}")]
    Usage(String),
    /// The peer named is not in our contact list.
    #[error("{0} is not in your contacts (add it with `p2p-client contacts add {0}`)")]
    NotAContact(UserName),
    /// A local socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The system error.
        source: std::io::Error,
    },
    /// Neither a direct path nor the relay can carry the link.
    #[error("no path to the peer: {0}")]
    NoPath(String),
    /// The end-to-end handshake did not complete.
    #[error("the end-to-end handshake with the peer did not complete")]
    Handshake,
    /// Messages were not acknowledged in time.
    #[error("{0} message(s) not acknowledged by the peer")]
    Undelivered(usize),
    /// The peer left with messages of ours unacknowledged.
    #[error("{peer} left with {count} message(s) unacknowledged")]
    PeerLeft {
        /// Who.
        peer: UserName,
        /// How many of our messages it did not acknowledge.
        count: usize,
    },
    /// The end-to-end session could not be set up.
    #[error("cannot set up the end-to-end session: {0}")]
    Setup(String),
    /// The peer's identity key is not the one pinned for it, and `--accept-new-key` was not
    /// given: nothing was sent to the peer (exit status 3).
    #[error(
        "{peer}'s identity key changed from {old} to {new}; not chatting. With the new key \
         the safety number is {safety_number}: if {peer} sees the same number (p2p-client \
         contacts fingerprint YOU, on their side), run again with --accept-new-key {new}"
    )]
    KeyChanged {
        /// The peer.
        peer: UserName,
        /// The pinned key's fingerprint.
        old: Fingerprint,
        /// The key the introduction brought.
        new: Fingerprint,
        /// The safety number of our key and the new one: what the peer sees on its side if
        /// the new key really is its own.
        safety_number: String,
    },
    /// The introduction brought an identity key of small order, which anyone could pass as
    /// (a correct server never forwards one): nothing was pinned or sent to the peer.
    #[error(
        "the introduction brought {0} with an unusable identity key (of small order, which \
         authenticates nobody); not chatting: the server or the path is misbehaving"
    )]
    UnusablePeerKey(UserName),
    /// The link has ended (or was never started): nothing more can be sent.
    #[error("the link is closed")]
    Closed,
    /// Streams were asked of a link made without them ([`super::LinkConfig::streams`]).
    #[error("streams are off for this link (LinkConfig::streams)")]
    StreamsOff,
    /// The peer runs no streams on this link: its QUIC certificate never came.
    #[error("the peer does not run streams on this link")]
    PeerHasNoStreams,
    /// QUIC could not be set up, or its handshake with the peer failed.
    #[error("streams: {0}")]
    Quic(#[source] std::sync::Arc<super::quic::QuicLinkError>),
    /// This side's QUIC certificate could not be made.
    #[error("streams: {0}")]
    QuicCertificate(#[source] super::quic::AuthError),
    /// The QUIC connection under the streams failed.
    #[error("streams: {0}")]
    Stream(#[source] quinn::ConnectionError),
    /// The link's task panicked or was cancelled.
    #[error("the link's task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// The home (identity key, pins) cannot be used.
    #[error(transparent)]
    Home(#[from] HomeError),
}

impl LinkError {
    pub(crate) fn stream(e: quinn::ConnectionError) -> LinkError {
        LinkError::Stream(e)
    }

    pub(crate) fn closed(client: &RendezvousClient) -> LinkError {
        LinkError::Rendezvous(
            client
                .close_reason()
                .unwrap_or(CloseReason::ClosedByServer)
                .to_string(),
        )
    }
}
