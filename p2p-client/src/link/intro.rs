//! Getting introduced to the peer: both sides ask for a link to the other, so each invites the
//! other and answers the other's ring; the server pairs simultaneous invitations
//! (docs/PROTOCOL.md section 8), and [`await_introduction`] makes sure only one of our own
//! requests can lead to an introduction.

use std::time::Instant;

use shared::rendezvous::{Presence, SessionId, UserName};

use crate::rendezvous::{CancelReason, Event, Introduction, Offer, RendezvousClient};

use super::LinkError;

/// The introduction, and when it arrived (the punching start time counts from there).
#[derive(Debug)]
pub struct Introduced {
    /// The introduction.
    pub intro: Box<Introduction>,
    /// When the `ITR` arrived.
    pub received: Instant,
}

/// Invites `peer` (and answers its ring, if `ring` names one) until the server introduces us,
/// or `deadline` passes.
///
/// At most one of our requests can succeed: we stop inviting once we have answered a ring,
/// ignore a ring for the session we invited to (the server paired our invitations), and do not
/// answer another ring while our own invitation is pending (the server would have paired it).
pub async fn await_introduction(
    client: &RendezvousClient,
    peer: &UserName,
    offer: &Offer,
    deadline: Instant,
    ring: Option<SessionId>,
) -> Result<Introduced, LinkError> {
    let mut invited: Option<SessionId> = None;
    let mut answered = false;
    match ring {
        Some(sid) => match client.answer(sid, offer).await {
            Ok(()) => answered = true,
            Err(e) => {
                tracing::debug!(error = %e, "the ring is gone; inviting instead");
                invited = invite(client, peer, offer).await?;
            }
        },
        None => invited = invite(client, peer, offer).await?,
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {
                return Err(LinkError::PeerAbsent(peer.clone()));
            }
            event = client.next_event() => {
                let Some(event) = event else {
                    return Err(LinkError::closed(client));
                };
                match event {
                    Event::Introduced(intro) if intro.peer == *peer => {
                        return Ok(Introduced { intro, received: Instant::now() });
                    }
                    Event::Introduced(intro) => {
                        tracing::warn!(peer = %intro.peer, "introduced to someone else; ignored");
                    }
                    Event::Ring { sid, from } if from == *peer => {
                        if answered || invited == Some(sid) {
                            continue;
                        }
                        if invited.is_some() {
                            // Our own invitation is pending: the server pairs it.
                            continue;
                        }
                        match client.answer(sid, offer).await {
                            Ok(()) => answered = true,
                            Err(e) => tracing::debug!(error = %e, "answer refused"),
                        }
                    }
                    Event::Ring { sid, from } => {
                        tracing::info!(%from, "declining an invitation from someone else");
                        let _ = client.decline(sid).await;
                    }
                    Event::Cancelled { sid, reason } if invited == Some(sid) => {
                        invited = None;
                        match reason {
                            CancelReason::Declined => {
                                return Err(LinkError::Declined(peer.clone()));
                            }
                            CancelReason::Timeout => {
                                invited = invite(client, peer, offer).await?;
                            }
                            // Offline: invite again when it comes back.
                            _ => {}
                        }
                    }
                    Event::Presence { name, presence, .. } if name == *peer => {
                        if presence != Presence::Offline && invited.is_none() && !answered {
                            invited = invite(client, peer, offer).await?;
                        }
                    }
                    Event::LoggedOut(reason) => {
                        // The connection closes right after; its end (above) reports it with
                        // the close reason in place, which tells the caller whether to log in
                        // again (a shutting-down server) or not (a login elsewhere). Returning
                        // now would race with that reason being set.
                        tracing::debug!(%reason, "logged out; waiting for the connection to close");
                    }
                    other => tracing::debug!(event = ?other, "ignored while waiting"),
                }
            }
        }
    }
}

/// Invites `peer`; `None` if it is offline (or not a mutual contact: the server does not say
/// which), to be retried when it shows up.
async fn invite(
    client: &RendezvousClient,
    peer: &UserName,
    offer: &Offer,
) -> Result<Option<SessionId>, LinkError> {
    match client.invite(peer, offer).await {
        Ok(sid) => {
            tracing::debug!(%peer, %sid, "invited");
            Ok(Some(sid))
        }
        Err(e) if e.is_user_offline() => {
            tracing::info!(%peer, "not online (or not a mutual contact); waiting");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
