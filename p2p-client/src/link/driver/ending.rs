//! The end of a link: the core's authenticated goodbye goes out (on the direct path and the
//! relay), and every message the peer did not acknowledge is reported (nothing typed is lost
//! without the user being told). The core decides all of it ([`shared::link::LinkCore::close`]);
//! this only sends, and gives the relay a moment to write.

use std::time::{Duration, Instant};

use shared::link::Destination;

use super::super::LinkError;
use super::{Driver, link_error};

/// How long the relay connection gets to write the goodbye before the process goes.
const GOODBYE_FLUSH: Duration = Duration::from_millis(150);

impl Driver {
    /// Closes QUIC, says goodbye, reports what was not delivered, and turns the core's
    /// outcome into the link's.
    pub(super) async fn finish(&mut self) -> Result<(), LinkError> {
        self.close_streams().await;
        let now = Instant::now();
        let outcome = self.core.close(now);
        let (mut direct, mut relay) = (false, false);
        while let Some(transmit) = self.core.poll_transmit(now) {
            match transmit.destination {
                Destination::Relay => relay |= self.relay.is_some(),
                Destination::Udp { .. } => direct = true,
            }
            self.send(transmit).await;
        }
        if direct || relay {
            tracing::info!(direct, relay, "said goodbye");
        }
        if relay {
            tokio::time::sleep(GOODBYE_FLUSH).await;
        }
        while let Some(event) = self.core.poll_event() {
            self.on_core_event(event);
        }
        outcome.map_err(|failure| link_error(&self.peer, failure))
    }
}
