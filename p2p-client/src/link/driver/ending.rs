//! The end of a chat: the authenticated goodbye to the peer, and the report of every message
//! the peer did not acknowledge (nothing typed is lost without the user being told).

use std::time::{Duration, Instant};

use super::super::event::{LinkEvent, UndeliveredReason};
use super::super::{LinkError, path::Route};
use super::Driver;

/// Copies of the goodbye sent on each path (a lost datagram should not cost the peer 14 s).
const GOODBYE_COPIES: usize = 2;
/// How long the relay connection gets to write the goodbye before the process goes.
const GOODBYE_FLUSH: Duration = Duration::from_millis(150);

/// One message the application sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    /// Its number in the order sent, from 1.
    pub(super) number: u64,
    /// Its bytes.
    pub(super) bytes: Vec<u8>,
}

/// How the loop ended, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    /// Input ended and everything was acknowledged.
    Done,
    /// The peer said goodbye or went silent.
    PeerLeft,
    /// Ctrl-C.
    Interrupted,
}

impl Driver {
    /// Says goodbye, reports what was not delivered, and turns the loop's outcome into the
    /// chat's: an `Ok` with undelivered messages becomes [`LinkError::Undelivered`].
    pub(super) async fn finish(&mut self, result: Result<End, LinkError>) -> Result<(), LinkError> {
        self.close_streams().await;
        self.say_goodbye().await;
        let reason = match &result {
            Ok(End::Done) => UndeliveredReason::NotAcknowledged,
            Ok(End::PeerLeft) | Err(LinkError::PeerLeft { .. }) => UndeliveredReason::PeerLeft,
            Ok(End::Interrupted) => UndeliveredReason::Interrupted,
            Err(LinkError::Undelivered(_)) => UndeliveredReason::NotAcknowledged,
            Err(_) => UndeliveredReason::LinkFailed,
        };
        let left: Vec<_> = std::mem::take(&mut self.sent)
            .into_values()
            .chain(std::mem::take(&mut self.pending))
            .collect();
        let count = left.len();
        for entry in left {
            self.report_undelivered(entry, reason);
        }
        let undelivered = count + self.refused;
        match result {
            Ok(_) if undelivered > 0 => Err(LinkError::Undelivered(undelivered)),
            Ok(_) => Ok(()),
            Err(LinkError::PeerLeft { peer, .. }) => Err(LinkError::PeerLeft {
                peer,
                count: undelivered,
            }),
            Err(LinkError::Undelivered(_)) => Err(LinkError::Undelivered(undelivered)),
            Err(e) => Err(e),
        }
    }

    /// Reports that the peer did not get `entry`.
    pub(super) fn report_undelivered(&self, entry: Entry, reason: UndeliveredReason) {
        self.emit(LinkEvent::Undelivered {
            number: entry.number,
            bytes: entry.bytes,
            reason,
        });
    }

    /// Sends the goodbye on the direct path (if there is one) and on the relay (if alive),
    /// unless the peer said goodbye first or the session never came up.
    async fn say_goodbye(&mut self) {
        if !self.chat.is_established() || self.chat.is_peer_closed() {
            return;
        }
        let now = Instant::now();
        let direct = match self.path.route() {
            Route::Direct { socket, remote } => Some((socket, remote)),
            _ => self.path.direct_target(),
        };
        let relay = self.relay.as_ref().filter(|_| self.path.relay_alive());
        for _ in 0..GOODBYE_COPIES {
            let Ok(packet) = self.chat.goodbye_packet(now) else {
                return;
            };
            if let Some((socket, remote)) = direct
                && let Err(e) = self.endpoint.send(socket, remote, &packet, None).await
            {
                tracing::debug!(error = %e, %remote, "goodbye send failed");
            }
            if let Some(relay) = relay {
                relay.send(packet);
            }
        }
        tracing::info!(
            direct = direct.is_some(),
            relay = relay.is_some(),
            "said goodbye"
        );
        if relay.is_some() {
            tokio::time::sleep(GOODBYE_FLUSH).await;
        }
    }
}
