//! `p2p-client chat`: an end-to-end encrypted chat with a contact, over a hole-punched UDP path
//! when one can be made and through the switchboard relay otherwise.
//!
//! A thin program on [`crate::link`]: log in ([`LinkSession::login`]), pick the peer (the
//! `--peer` option, or interactively from the contacts: [`pick`]), make a [`Link`], send
//! every line typed on stdin as a message (empty lines are skipped; lines typed while the
//! link is being made wait for it) and print what the link reports ([`output`]). At the end
//! of stdin the link is closed gracefully ([`Link::finish`]: it waits, at most
//! [`DRAIN_TIMEOUT`], until the peer has acknowledged every message, and says goodbye); on
//! Ctrl-C it is aborted (a goodbye at once). Every line the peer did not acknowledge is
//! reported (`undelivered`) and makes the result an error.

pub mod output;
pub mod pick;

use std::io::{BufRead, IsTerminal};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use shared::identity::Fingerprint;
use shared::rendezvous::UserName;
use tokio::sync::mpsc;

pub use crate::link::{Account, DRAIN_TIMEOUT, LinkError as ChatRunError};
use crate::link::{
    Link, LinkConfig, LinkError, LinkEvent, LinkSession, ServerState, UndeliveredReason,
};
use crate::portmap::PortMapping;
use crate::tls::{KeyTrust, ServerKey};

use output::{Output, Shown};

/// The options of `p2p-client chat` beyond the account (server, user, password).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ChatArgs {
    /// The contact to chat with. Without it, and with stdin a terminal, the contacts are shown
    /// and you type a name.
    #[arg(long, value_name = "NAME")]
    pub peer: Option<String>,
    /// How long to wait for the peer to come online and join, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub wait: u64,
    /// Local address of the UDP endpoint socket: IP or IP:PORT [default: every address of
    /// IPv4 and IPv6, any port; an IPv4 address keeps the link on IPv4].
    #[arg(long, value_name = "IP[:PORT]", value_parser = parse_bind)]
    pub bind: Option<SocketAddr>,
    /// Do not classify the NAT before the offer. By default the chat classifies it (about
    /// 0.15 s with a STUN server that has two addresses) and sends the result with the offer,
    /// which lets punching through symmetric NATs work.
    #[arg(long)]
    pub no_classify: bool,
    /// Accepted for compatibility: classifying is the default now.
    #[arg(long, hide = true)]
    pub classify: bool,
    /// Print one JSON object per line on stdout: {"event":"path","path":"direct"|"relayed",
    /// "remote"}, {"event":"message","from","text"}, {"event":"connected","peer","sid","role"},
    /// {"event":"peer_left","peer"} (the peer ended the chat or stopped answering),
    /// {"event":"undelivered","id","text","reason"} (a message the peer did not acknowledge,
    /// numbered from 1 in the order typed; reason "too long" for a line over 60 KiB, which is
    /// refused, not split), {"event":"server","state":"reconnecting"|"connected"} (the
    /// connection to the rendezvous server was lost or is back), {"event":"error","message"},
    /// {"event":"server_pinned","server","fingerprint"} (first connection to a server),
    /// {"event":"punching_again","attempt"} (the direct path went down and punching restarts),
    /// {"event":"key_changed","peer","old","new"} (the chat stops, exit status 3). Logs go to
    /// stderr.
    #[arg(long)]
    pub json: bool,
    /// Chat even though the peer's identity key differs from the one pinned for it, if the
    /// new key is the one with this fingerprint (as `key_changed` showed it): pin it
    /// (unverified). Only after comparing the new safety number, which `key_changed` shows,
    /// with the peer by another channel. A different key is still refused, so accepting one
    /// key never lets another through.
    #[arg(long, value_name = "SHA256:...")]
    pub accept_new_key: Option<Fingerprint>,
    /// For testing: do not punch; the chat uses the switchboard relay only.
    #[arg(long, hide = true)]
    pub no_direct: bool,
    /// Do not report how the connection turned out to the rendezvous server. By default the
    /// client reports, once per introduction, direct or relayed, the time to the direct
    /// path, the punching method and which kind of address worked; the server keeps only
    /// counts per pair of NAT types, never addresses or names. Also set by P2P_NO_TELEMETRY=1 (any value but 0, false, no, off or empty).
    #[arg(long, env = "P2P_NO_TELEMETRY", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_telemetry: bool,
    /// Ask the default gateway for a port mapping of the chat's socket with these protocols
    /// (`auto`: PCP, then NAT-PMP, then UPnP-IGD), offered to the peer and deleted when the
    /// chat ends. Only a symmetric (or unclassified) NAT waits for it before inviting.
    #[arg(long, value_enum, default_value_t = PortMapping::Auto)]
    pub port_mapping: PortMapping,
}

/// `--bind`: an IP (any port) or IP:PORT.
pub fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 0))
        .map_err(|_| format!("{text:?} is not an IP address or IP:PORT"))
}

impl ChatArgs {
    /// The link these options ask for.
    pub fn link_config(&self) -> LinkConfig {
        LinkConfig {
            wait: Duration::from_secs(self.wait),
            bind: self.bind,
            classify: !self.no_classify,
            accept_new_key: self.accept_new_key,
            direct: !self.no_direct,
            telemetry: !self.no_telemetry,
            port_mapping: self.port_mapping,
            ..LinkConfig::default()
        }
    }
}

/// One line of input, or its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A line, without its line ending.
    Line(String),
    /// End of input.
    Eof,
}

/// Reads stdin on a plain thread (it blocks in read(2), and a detached thread does not keep
/// the process alive after `main` returns), line by line.
pub fn stdin_lines() -> mpsc::UnboundedReceiver<Input> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            let line = line.strip_suffix('\r').unwrap_or(&line).to_owned();
            if tx.send(Input::Line(line)).is_err() {
                return;
            }
        }
        let _ = tx.send(Input::Eof);
    });
    rx
}

/// The line a command prints on stderr when it has just pinned a server's key; `None` when
/// the key was verified or pinned before.
pub fn pinned_notice(key: &ServerKey) -> Option<String> {
    (key.trust == KeyTrust::PinnedNow).then(|| {
        format!(
            "p2p-client: pinned the server {} with key {}",
            key.server, key.fingerprint
        )
    })
}

/// Runs `chat` against the rendezvous server as the account's user: see the
/// [module docs](self). Logs out before returning. An error is also printed as a JSON `error`
/// event in `--json` mode (a changed key as a `key_changed` event); the caller prints it for
/// people.
pub async fn run(account: Account<'_>, password: &[u8], args: ChatArgs) -> Result<(), LinkError> {
    let out = Output::new(args.json);
    let result = run_inner(&account, password, &args, &out).await;
    match &result {
        Err(LinkError::KeyChanged {
            peer,
            old,
            new,
            safety_number,
        }) if out.is_json() => {
            out.show(&Shown::KeyChanged {
                peer: peer.as_str(),
                old: &old.to_string(),
                new: &new.to_string(),
                safety_number,
            });
        }
        Err(e) if out.is_json() => out.show(&Shown::Error {
            message: &e.to_string(),
        }),
        _ => {}
    }
    result
}

async fn run_inner(
    account: &Account<'_>,
    password: &[u8],
    args: &ChatArgs,
    out: &Output,
) -> Result<(), LinkError> {
    let user = &account.user;
    let peer = args
        .peer
        .as_deref()
        .map(UserName::parse)
        .transpose()
        .map_err(|e| LinkError::Usage(format!("--peer: {e}")))?;
    if peer.is_none() && !std::io::stdin().is_terminal() {
        return Err(LinkError::Usage(
            "--peer NAME is required when stdin is not a terminal".into(),
        ));
    }
    if peer.as_ref() == Some(user) {
        return Err(LinkError::Usage("you cannot chat with yourself".into()));
    }
    let mut input = stdin_lines();
    let mut interrupts = interrupts();
    let session = LinkSession::login(account, password).await?;
    show_pinned(&session, out);
    if let Some(peer) = &peer
        && !session.is_contact(peer).await?
    {
        session.logout().await;
        return Err(LinkError::NotAContact(peer.clone()));
    }
    let result = chat(&session, peer, args, out, &mut input, &mut interrupts).await;
    session.logout().await;
    result
}

/// Says so when the server's key was pinned just now (first connection).
pub fn show_pinned(session: &LinkSession, out: &Output) {
    let key = session.server_key();
    if let Some(notice) = pinned_notice(key) {
        eprintln!("{notice}");
        if out.is_json() {
            out.show(&Shown::ServerPinned {
                server: &key.server,
                fingerprint: &key.fingerprint.to_string(),
            });
        }
    }
}

/// Ctrl-C, as messages: the handler is installed once, so none is missed between waits.
fn interrupts() -> mpsc::UnboundedReceiver<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    rx
}

/// Lines typed before the link is up, and whether input has ended.
#[derive(Debug, Default)]
struct Typed {
    lines: Vec<String>,
    eof: bool,
}

async fn chat(
    session: &LinkSession,
    peer: Option<UserName>,
    args: &ChatArgs,
    out: &Output,
    input: &mut mpsc::UnboundedReceiver<Input>,
    interrupts: &mut mpsc::UnboundedReceiver<()>,
) -> Result<(), LinkError> {
    let (peer, ring) = match peer {
        Some(peer) => (peer, None),
        None => {
            let picked = tokio::select! {
                picked = pick::pick_peer(session.client(), out, input) => picked?,
                Some(()) = interrupts.recv() => None,
            };
            match picked {
                Some(choice) => choice,
                None => return Ok(()),
            }
        }
    };
    if !out.is_json() {
        out.note(&format!("waiting for {peer} (at most {} s)", args.wait));
    }
    let config = args.link_config();
    let (early_tx, mut early) = mpsc::unbounded_channel();
    let connecting = Link::connect_reporting(session, &peer, ring, config, early_tx);
    tokio::pin!(connecting);
    let mut typed = Typed::default();
    let made = loop {
        if typed.eof && typed.lines.is_empty() {
            tracing::info!("input ended before the chat started: nothing to send");
            break Ok(None);
        }
        tokio::select! {
            biased;
            Some(event) = early.recv() => render(&event, &peer, out),
            link = &mut connecting => break link.map(Some),
            line = input.recv(), if !typed.eof => match line {
                Some(Input::Line(line)) if line.is_empty() => {}
                Some(Input::Line(line)) => typed.lines.push(line),
                Some(Input::Eof) | None => typed.eof = true,
            },
            Some(()) = interrupts.recv() => {
                out.note("interrupted; leaving");
                break Ok(None);
            }
        }
    };
    // What was reported while the link was being made, before the link's own events.
    while let Ok(event) = early.try_recv() {
        render(&event, &peer, out);
    }
    let mut link = match made {
        Ok(Some(link)) => link,
        // A changed key says itself that nothing was sent (exit status 3).
        Err(e @ LinkError::KeyChanged { .. }) => return Err(e),
        // Lines typed before the chat started never left.
        Ok(None) | Err(_) if !typed.lines.is_empty() => {
            let reason = if made.is_ok() {
                UndeliveredReason::Interrupted
            } else {
                UndeliveredReason::LinkFailed
            };
            for (id, text) in (1..).zip(&typed.lines) {
                out.show(&Shown::Undelivered {
                    id,
                    text,
                    reason: reason.words(),
                });
            }
            return match made {
                Err(e) => Err(e),
                Ok(_) => Err(LinkError::Undelivered(typed.lines.len())),
            };
        }
        Ok(None) => return Ok(()),
        Err(e) => return Err(e),
    };
    for line in typed.lines {
        link.send(line.into_bytes())?;
    }
    let mut eof = typed.eof;
    if eof {
        link.finish();
    }
    loop {
        tokio::select! {
            event = link.next_event() => match event {
                Some(event) => render(&event, &peer, out),
                None => break,
            },
            line = input.recv(), if !eof => match line {
                Some(Input::Line(line)) if line.is_empty() => {}
                Some(Input::Line(line)) => {
                    link.send(line.into_bytes())?;
                }
                Some(Input::Eof) | None => {
                    eof = true;
                    link.finish();
                }
            },
            Some(()) = interrupts.recv() => {
                out.note("interrupted; leaving");
                link.abort();
            }
        }
    }
    link.join().await
}

/// Prints what the link reports, as `chat` always has.
fn render(event: &LinkEvent, peer: &UserName, out: &Output) {
    match event {
        LinkEvent::Connected { peer, sid, role } => out.show(&Shown::Connected {
            peer: peer.as_str(),
            sid: &sid.to_string(),
            role: role.word(),
        }),
        LinkEvent::PeerKeyPinned { peer, fingerprint } => out.note(&format!(
            "pinned {peer}'s identity key {fingerprint} (first contact; compare safety numbers \
             with `p2p-client contacts fingerprint {peer}`)"
        )),
        LinkEvent::PeerKeyReplaced {
            peer,
            old,
            new,
            was_verified,
        } => {
            let mark = if *was_verified {
                "; it is no longer verified"
            } else {
                ""
            };
            out.note(&format!(
                "accepted {peer}'s new identity key {new} (was {old}){mark}"
            ));
        }
        LinkEvent::Path { path, remote } => out.show(&Shown::Path {
            path: *path,
            remote: *remote,
        }),
        LinkEvent::Message(bytes) => out.show(&Shown::Message {
            from: peer.as_str(),
            text: &String::from_utf8_lossy(bytes),
        }),
        LinkEvent::Undelivered {
            number,
            bytes,
            reason,
        } => out.show(&Shown::Undelivered {
            id: *number,
            text: &String::from_utf8_lossy(bytes),
            reason: reason.words(),
        }),
        LinkEvent::PeerUnresponsive => out.note(&format!(
            "{peer} stopped answering (nothing heard for 14 s)"
        )),
        LinkEvent::PeerLeft => out.show(&Shown::PeerLeft {
            peer: peer.as_str(),
        }),
        // Always an event in JSON mode (the lab tests wait for it); for people only when a
        // direct path was up before.
        LinkEvent::PunchingAgain {
            attempt,
            after_direct,
        } => {
            if out.is_json() || *after_direct {
                out.show(&Shown::PunchingAgain { attempt: *attempt });
            }
        }
        LinkEvent::NoDirectPath => {
            if !out.is_json() {
                out.note("no direct path; staying on the relay");
            }
        }
        LinkEvent::RelayClosed { reason, expected } => {
            if !expected && !out.is_json() {
                out.note(&format!("relay closed: {reason}"));
            }
        }
        LinkEvent::Server(state) => out.show(&Shown::Server {
            state: match state {
                ServerState::Reconnecting => "reconnecting",
                ServerState::Connected => "connected",
            },
        }),
        LinkEvent::Warning(text) => out.note(text),
        LinkEvent::StreamsReady => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn bind_takes_an_ip_or_an_address() {
        assert_eq!(
            parse_bind("10.1.2.3").unwrap(),
            "10.1.2.3:0".parse().unwrap()
        );
        assert_eq!(parse_bind("[::1]:5").unwrap(), "[::1]:5".parse().unwrap());
        assert!(parse_bind("host").is_err());
    }
}
