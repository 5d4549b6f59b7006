//! Getting introduced to the peer: both sides run `chat --peer X`, so each invites the other
//! and answers the other's ring; the server pairs simultaneous invitations
//! (docs/PROTOCOL.md section 8), and [`await_introduction`] makes sure only one of our own
//! requests can lead to an introduction. Also the interactive choice of a peer
//! ([`pick_peer`]).

use std::collections::BTreeMap;
use std::time::Instant;

use shared::rendezvous::{Presence, SessionId, UserName};
use tokio::sync::mpsc;

use crate::rendezvous::{CancelReason, Event, Introduction, Offer, RendezvousClient};

use super::output::Output;
use super::{ChatRunError, Input};

/// What the wait for an introduction ended with.
#[derive(Debug)]
pub enum Introduced {
    /// The server introduced us; `received` is when the `ITR` arrived.
    Yes {
        /// The introduction.
        intro: Box<Introduction>,
        /// When it arrived (the punching start time counts from here).
        received: Instant,
    },
    /// Input ended before anything was typed: there is nothing to send, so no chat.
    InputEnded,
}

/// Lines typed before the chat is up, and whether input has ended.
#[derive(Debug, Default)]
pub struct Typed {
    /// The lines, in order.
    pub lines: Vec<String>,
    /// End of input seen.
    pub eof: bool,
}

/// Invites `peer` (and answers its ring, if `ring` names one) until the server introduces us,
/// `deadline` passes, or input ends with nothing typed.
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
    input: &mut mpsc::UnboundedReceiver<Input>,
    typed: &mut Typed,
) -> Result<Introduced, ChatRunError> {
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
        if typed.eof && typed.lines.is_empty() {
            return Ok(Introduced::InputEnded);
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {
                return Err(ChatRunError::PeerAbsent(peer.clone()));
            }
            line = input.recv(), if !typed.eof => match line {
                Some(Input::Line(line)) => typed.lines.push(line),
                Some(Input::Eof) | None => typed.eof = true,
            },
            event = client.next_event() => {
                let Some(event) = event else {
                    return Err(ChatRunError::closed(client));
                };
                match event {
                    Event::Introduced(intro) if intro.peer == *peer => {
                        return Ok(Introduced::Yes { intro, received: Instant::now() });
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
                                return Err(ChatRunError::Declined(peer.clone()));
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
) -> Result<Option<SessionId>, ChatRunError> {
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

/// Interactive choice of a peer: shows the contacts and their presence, and waits for a
/// typed name. Rings that arrive meanwhile are shown; picking the ringing contact answers it.
/// Returns the peer and the ring to answer, or `None` when input ends.
pub async fn pick_peer(
    client: &RendezvousClient,
    out: &Output,
    input: &mut mpsc::UnboundedReceiver<Input>,
) -> Result<Option<(UserName, Option<SessionId>)>, ChatRunError> {
    let mut contacts: BTreeMap<UserName, Presence> = client
        .contacts()
        .await?
        .into_iter()
        .filter(|e| e.contact)
        .map(|e| (e.name, e.presence))
        .collect();
    let mut rings: BTreeMap<UserName, SessionId> = BTreeMap::new();
    if contacts.is_empty() {
        out.note("no contacts yet: add one with `p2p-client contacts add NAME`");
    } else {
        out.note("contacts:");
        for (name, presence) in &contacts {
            eprintln!("   {:<24} {}", name.as_str(), presence.word());
        }
    }
    out.note("type the name of a contact to chat with (Ctrl-D to quit)");
    loop {
        tokio::select! {
            line = input.recv() => {
                let Some(Input::Line(line)) = line else { return Ok(None) };
                let name = line.trim();
                if name.is_empty() {
                    continue;
                }
                match UserName::parse(name) {
                    Ok(name) if contacts.contains_key(&name) => {
                        let ring = rings.remove(&name);
                        return Ok(Some((name, ring)));
                    }
                    Ok(name) => out.note(&format!("{name} is not in your contacts")),
                    Err(e) => out.note(&format!("{name:?}: {e}")),
                }
            }
            event = client.next_event() => {
                let Some(event) = event else {
                    return Err(ChatRunError::closed(client));
                };
                match event {
                    Event::Presence { name, presence, .. } => {
                        let before = contacts.insert(name.clone(), presence);
                        if before != Some(presence) {
                            out.note(&format!("{name} is {}", presence.word()));
                        }
                    }
                    Event::Ring { sid, from } => {
                        out.note(&format!("{from} invites you to chat: type {from} to accept"));
                        rings.insert(from, sid);
                    }
                    Event::Cancelled { sid, .. } => rings.retain(|_, s| *s != sid),
                    Event::LoggedOut(reason) => {
                        return Err(ChatRunError::Rendezvous(format!(
                            "the server logged us out: {reason}"
                        )));
                    }
                    _ => {}
                }
            }
        }
    }
}
