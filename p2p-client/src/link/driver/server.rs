//! The chat and its rendezvous connection: when the connection is lost (a server restart, a
//! network change, an idle timeout), log in again in the background with back-off
//! ([`crate::rendezvous::Relogin`]), say so (`server` events), and once back, ask for a new
//! introduction if the relay was lost too, so the chat rejoins the switchboard with a fresh
//! ticket. A direct path that is up carries on untouched meanwhile.

use std::sync::Arc;
use std::time::Instant;

use tokio::task::{JoinError, JoinHandle};

use crate::rendezvous::{Backoff, CloseReason, OutReason};

use super::super::event::{LinkEvent, ServerState};
use super::{Driver, Relogged};

/// The outcome of the re-login under way (never completes without one).
pub(super) async fn relogged(
    task: &mut Option<JoinHandle<Relogged>>,
) -> Result<Relogged, JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

impl Driver {
    /// The rendezvous connection is gone: start logging in again (unless the chat is ending,
    /// or there is no way to).
    pub(super) fn on_rendezvous_closed(&mut self, now: Instant) {
        self.rendezvous_open = false;
        self.core.handle_rendezvous_lost(now);
        let reason = self.client.close_reason();
        tracing::warn!(
            ?reason,
            "the rendezvous connection closed; the chat goes on"
        );
        if self.reconnecting.is_some() || self.core.is_peer_gone() {
            return;
        }
        if let Some(CloseReason::LoggedOut(OutReason::OtherLogin)) = reason {
            self.emit(LinkEvent::Warning(
                "logged in elsewhere with this session; not reconnecting".into(),
            ));
            return;
        }
        let Some(relogin) = self.relogin.clone() else {
            self.emit(LinkEvent::Warning(
                "the server connection is gone; the chat goes on without it".into(),
            ));
            return;
        };
        self.emit(LinkEvent::Server(ServerState::Reconnecting));
        self.reconnecting = Some(tokio::spawn(async move {
            relogin
                .reconnect_after(reason.as_ref(), &mut Backoff::default())
                .await
        }));
    }

    /// The background re-login ended.
    pub(super) fn on_relogged(&mut self, now: Instant, result: Result<Relogged, JoinError>) {
        self.reconnecting = None;
        match result {
            Ok(Ok((client, _info))) => {
                self.client = Arc::new(client);
                self.rendezvous_open = true;
                self.emit(LinkEvent::Server(ServerState::Connected));
                if self.core.relay_lost() {
                    tracing::info!("asking for a new introduction to rejoin the relay");
                }
                self.core.handle_rendezvous_back(now);
            }
            Ok(Err(e)) => {
                self.emit(LinkEvent::Warning(format!(
                    "cannot log in to the server again ({e}); the chat goes on without it"
                )));
            }
            Err(e) => tracing::warn!(error = %e, "the re-login task failed"),
        }
    }
}
