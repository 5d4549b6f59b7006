//! The interactive choice of a peer, when `chat` runs without `--peer` on a terminal.

use std::collections::BTreeMap;

use shared::rendezvous::{Presence, SessionId, UserName};
use tokio::sync::mpsc;

use crate::link::LinkError;
use crate::rendezvous::{Event, RendezvousClient};

use super::Input;
use super::output::Output;

/// Interactive choice of a peer: shows the contacts and their presence, and waits for a
/// typed name. Rings that arrive meanwhile are shown; picking the ringing contact answers it.
/// Returns the peer and the ring to answer, or `None` when input ends.
pub async fn pick_peer(
    client: &RendezvousClient,
    out: &Output,
    input: &mut mpsc::UnboundedReceiver<Input>,
) -> Result<Option<(UserName, Option<SessionId>)>, LinkError> {
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
                    return Err(LinkError::closed(client));
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
                        return Err(LinkError::Rendezvous(format!(
                            "the server logged us out: {reason}"
                        )));
                    }
                    _ => {}
                }
            }
        }
    }
}
