//! `p2p-client chat`: an end-to-end encrypted chat with a contact, over a hole-punched UDP path
//! when one can be made and through the switchboard relay otherwise.
//!
//! This module is the driver around three sans-IO cores of `shared`:
//! [`shared::punch::Puncher`] (hole punching), [`shared::chat::ChatSession`] (Noise KK,
//! reliable ordered messages, indifferent to the path) and the switchboard framing
//! ([`shared::switchboard::wire`]). The steps, in [`run`]:
//!
//! 1. Log in to the rendezvous server ([`crate::rendezvous::Relogin`], which keeps what it
//!    takes to log in again); its `CFG` says where STUN and the switchboard are. Register the
//!    device's identity key (`DEV`, with this process's login session): the long-term X25519
//!    key pair in the home ([`crate::home`]), which is the chat's Noise static key. A `--peer`
//!    that is not in the contact list (`LST`) is an error at once.
//! 2. Bind one UDP *endpoint* socket ([`endpoint`]), learn its server-reflexive address with a
//!    STUN Binding from that same socket, classify the NAT (unless `--no-classify`), and build
//!    the offer: identity key, host candidates, srflx candidate.
//! 3. Invite the peer and answer its ring ([`intro`]); both sides do this and the server pairs
//!    them. Wait for the introduction (`ITR`), at most `--wait` seconds. The introduction
//!    carries the peer's identity key; it is checked against the key pinned for the peer
//!    ([`check_peer_key`]): pinned on first sight, and a different one stops the chat (exit
//!    status 3, nothing sent) unless `--accept-new-key`. Noise KK then means only the holder
//!    of the pinned private key can complete the handshake, whatever the servers do.
//! 4. Then, at once and in parallel ([`driver`]): connect to the switchboard with the ticket
//!    ([`relay`]) so that the chat can start within a moment even if punching fails; start the
//!    puncher at the shared start time on the endpoint socket; and start the chat session,
//!    whose packets take the path [`path`] chooses: relayed until the puncher reports a direct
//!    path, direct after that, and relayed again if the direct path goes quiet or is lost.
//!    Every path change is announced ([`output`]).
//! 5. Lines on stdin are sent as messages (empty lines are skipped); received messages are
//!    printed. At the end of stdin the driver waits (at most [`DRAIN_TIMEOUT`]) until the peer
//!    has acknowledged every message, lingers a moment to acknowledge the peer's last ones,
//!    says goodbye (an authenticated CLOSE frame of the chat session, on every path that is
//!    up), then logs out. The chat also ends when the peer says goodbye or stops answering
//!    (the session's idle timeout, 14 s), and on Ctrl-C (at once, with a goodbye). Every line
//!    the peer did not acknowledge is reported (`undelivered`) and makes the result an error.
//!
//! Datagrams on the endpoint socket are told apart by their first byte
//! ([`endpoint::classify`]): STUN (0x00-0x03), hole punching (0x84, 0x85), chat (0x80-0x83).
//!
//! 6. If a direct path that was up goes quiet (the NAT forgot or changed its mapping, the
//!    network changed), the chat moves to the relay at once and punches again ([`repunch`]):
//!    a fresh STUN Binding from the endpoint socket, a new introduction to the same peer
//!    through the rendezvous server (new start time, new session id for the puncher), and a
//!    new puncher, while the same chat session goes on.
//! 7. If the rendezvous connection is lost, the driver logs in again in the background with
//!    back-off (`server` events say so); if the relay was lost too, a new introduction brings
//!    a fresh ticket and both sides rejoin the switchboard, while a direct path carries on.

pub mod driver;
pub mod endpoint;
pub mod intro;
pub mod output;
pub mod path;
pub mod relay;
pub mod repunch;

use std::io::{BufRead, IsTerminal};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::identity::{Fingerprint, safety_number};
use shared::nat_classifier::Report;
use shared::rendezvous::{Presence, SessionId, UserName};
use tokio::sync::mpsc;

use crate::classify::{ClassifyOptions, classify};
use crate::home::{Home, HomeError, Identity, KeyCheck, UserHome};
use crate::rendezvous::{
    Allocation, Backoff, Candidate, CandidateKind, ClientConfig, CloseReason, LoginInfo,
    MAX_CANDIDATES, NatKind, Offer, OutReason, Relogin, RendezvousClient, RendezvousError,
};
use crate::tls::{KeyTrust, ServerKey, ServerTrust};

use endpoint::Endpoint;
use intro::{Introduced, Typed};
use output::Output;

/// How long the end of input waits for the peer to acknowledge every message.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the STUN Binding may take before we go on without a srflx candidate.
const STUN_BUDGET: Duration = Duration::from_secs(2);

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
    /// Local address of the UDP endpoint socket: IP or IP:PORT [default: every address, any
    /// port].
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
}

fn parse_bind(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 0))
        .map_err(|_| format!("{text:?} is not an IP address or IP:PORT"))
}

/// Why a chat ended badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatRunError {
    /// A rendezvous request failed.
    #[error(transparent)]
    Client(#[from] RendezvousError),
    /// The rendezvous connection ended or said something unusable.
    #[error("rendezvous: {0}")]
    Rendezvous(String),
    /// The peer never showed up and answered.
    #[error("{0} did not come online and join the chat in time (see --wait)")]
    PeerAbsent(UserName),
    /// The peer declined our invitation.
    #[error("{0} declined the chat")]
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
    /// Neither a direct path nor the relay can carry the chat.
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
    /// The chat cryptography could not be set up.
    #[error("cannot set up the chat: {0}")]
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
    /// The home (identity key, pins) cannot be used.
    #[error(transparent)]
    Home(#[from] HomeError),
}

impl ChatRunError {
    fn closed(client: &RendezvousClient) -> ChatRunError {
        ChatRunError::Rendezvous(
            client
                .close_reason()
                .unwrap_or(CloseReason::ClosedByServer)
                .to_string(),
        )
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

/// Where and as whom a chat runs.
#[derive(Clone, Debug)]
pub struct Account<'a> {
    /// The rendezvous server as the user wrote it (`HOST[:PORT]`).
    pub server: &'a str,
    /// How to trust its key.
    pub trust: &'a ServerTrust,
    /// The client's home (identity key, pins).
    pub home: &'a Home,
    /// Who we are.
    pub user: UserName,
    /// The rendezvous client's settings (timeouts, the weakest KDF to accept at login).
    pub config: ClientConfig,
}

/// Runs `chat` against the rendezvous server as the account's user: see the
/// [module docs](self). Logs out before returning. An error is also printed as a JSON `error`
/// event in `--json` mode (a changed key as a `key_changed` event); the caller prints it for
/// people.
pub async fn run(
    account: Account<'_>,
    password: &[u8],
    args: ChatArgs,
) -> Result<(), ChatRunError> {
    let out = Output::new(args.json);
    let result = run_inner(&account, password, &args, &out).await;
    match &result {
        Err(ChatRunError::KeyChanged {
            peer,
            old,
            new,
            safety_number,
        }) if out.is_json() => {
            out.show(&output::Shown::KeyChanged {
                peer: peer.as_str(),
                old: &old.to_string(),
                new: &new.to_string(),
                safety_number,
            });
        }
        Err(e) if out.is_json() => out.show(&output::Shown::Error {
            message: &e.to_string(),
        }),
        _ => {}
    }
    result
}

/// What the chat works with once logged in.
struct Session<'a> {
    client: &'a Arc<RendezvousClient>,
    relogin: &'a Arc<Relogin>,
    info: &'a LoginInfo,
    home: &'a UserHome,
    identity: &'a Identity,
    args: &'a ChatArgs,
    out: &'a Output,
}

async fn run_inner(
    account: &Account<'_>,
    password: &[u8],
    args: &ChatArgs,
    out: &Output,
) -> Result<(), ChatRunError> {
    let user = &account.user;
    let peer = args
        .peer
        .as_deref()
        .map(UserName::parse)
        .transpose()
        .map_err(|e| ChatRunError::Usage(format!("--peer: {e}")))?;
    if peer.is_none() && !std::io::stdin().is_terminal() {
        return Err(ChatRunError::Usage(
            "--peer NAME is required when stdin is not a terminal".into(),
        ));
    }
    if peer.as_ref() == Some(user) {
        return Err(ChatRunError::Usage("you cannot chat with yourself".into()));
    }
    let home = account.home.user(user)?;
    let identity = home.identity()?;
    let mut input = stdin_lines();
    let mut interrupts = interrupts();
    // A fresh login is not yet visible; the peer can only invite us once we are online.
    let relogin = Arc::new(Relogin::new(
        account.server,
        account.trust.clone(),
        account.config,
        user.clone(),
        password,
        identity.public(),
        Some(Presence::Online),
    ));
    let (client, info) = relogin.login().await?;
    let client = Arc::new(client);
    if let Some(notice) = pinned_notice(client.server_key()) {
        eprintln!("{notice}");
        if out.is_json() {
            out.show(&output::Shown::ServerPinned {
                server: &client.server_key().server,
                fingerprint: &client.server_key().fingerprint.to_string(),
            });
        }
    }
    tracing::info!(stun = ?info.stun, switchboard = ?info.switchboard, "logged in");
    if let Some(peer) = &peer {
        let contacts = client.contacts().await?;
        if !contacts.iter().any(|e| e.contact && e.name == *peer) {
            client.logout().await;
            return Err(ChatRunError::NotAContact(peer.clone()));
        }
    }
    let session = Session {
        client: &client,
        relogin: &relogin,
        info: &info,
        home: &home,
        identity: &identity,
        args,
        out,
    };
    let result = chat(&session, peer, &mut input, &mut interrupts).await;
    client.logout().await;
    result
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

async fn chat(
    session: &Session<'_>,
    peer: Option<UserName>,
    input: &mut mpsc::UnboundedReceiver<Input>,
    interrupts: &mut mpsc::UnboundedReceiver<()>,
) -> Result<(), ChatRunError> {
    let mut typed = Typed::default();
    let prepared = tokio::select! {
        prepared = prepare(session, peer, input, &mut typed) => prepared,
        Some(()) = interrupts.recv() => {
            session.out.note("interrupted; leaving");
            Ok(None)
        }
    };
    let prepared = match prepared {
        Ok(Some(prepared)) => prepared,
        // A changed key says itself that nothing was sent (exit status 3).
        Err(e @ ChatRunError::KeyChanged { .. }) => return Err(e),
        // Lines typed before the chat started never left.
        Ok(None) | Err(_) if !typed.lines.is_empty() => {
            let reason = if prepared.is_ok() {
                "interrupted"
            } else {
                "chat failed"
            };
            for (id, text) in (1..).zip(&typed.lines) {
                session
                    .out
                    .show(&output::Shown::Undelivered { id, text, reason });
            }
            return match prepared {
                Err(e) => Err(e),
                Ok(_) => Err(ChatRunError::Undelivered(typed.lines.len())),
            };
        }
        Ok(None) => return Ok(()),
        Err(e) => return Err(e),
    };
    let (setup, endpoint) = prepared;
    let setup = driver::Setup { typed, ..setup };
    driver::Driver::new(setup, endpoint, *session.out)?
        .run(input, interrupts)
        .await
}

/// Everything up to the introduction: the endpoint socket, the offer, the peer, the wait.
/// `None`: input ended before anything was typed (no chat).
async fn prepare(
    session: &Session<'_>,
    peer: Option<UserName>,
    input: &mut mpsc::UnboundedReceiver<Input>,
    typed: &mut Typed,
) -> Result<Option<(driver::Setup, Endpoint)>, ChatRunError> {
    let Session {
        client,
        info,
        args,
        out,
        ..
    } = *session;
    let server = client.server();
    let bind = args.bind.unwrap_or(match server {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    });
    let mut endpoint = Endpoint::bind(bind)
        .await
        .map_err(|source| ChatRunError::Io {
            what: format!("cannot bind the UDP endpoint socket on {bind}"),
            source,
        })?;
    let srflx = match info.stun {
        Some(stun) => match endpoint.stun_binding(stun, STUN_BUDGET).await {
            Ok(addr) => Some(addr),
            Err(e) => {
                tracing::warn!(error = %e, "no server-reflexive address; host candidates only");
                None
            }
        },
        None => {
            tracing::warn!("the server advertises no STUN service; host candidates only");
            None
        }
    };
    let report = if !args.no_classify {
        classify_nat(info.stun, bind.ip()).await
    } else {
        None
    };
    let keys = session.identity.keypair();
    let include_loopback = server.ip().is_loopback();
    let hosts = endpoint::host_candidates(endpoint.local_addr(), include_loopback);
    let offer = build_offer(keys.public.0, &hosts, srflx, report.as_ref());
    tracing::info!(local = %endpoint.local_addr(), offer = ?offer.to_params(), "offer ready");

    let (peer, ring) = match peer {
        Some(peer) => (peer, None),
        None => match intro::pick_peer(client, out, input).await? {
            Some(choice) => choice,
            None => return Ok(None),
        },
    };
    if !out.is_json() {
        out.note(&format!("waiting for {peer} (at most {} s)", args.wait));
    }
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    let (client, introduced) =
        await_introduction_reconnecting(session, &peer, &offer, deadline, ring, input, typed)
            .await?;
    let client = &client;
    let Introduced::Yes { intro, received } = introduced else {
        tracing::info!("input ended before the chat started: nothing to send");
        return Ok(None);
    };
    check_peer_key(
        session.home,
        (session.home.user(), &session.identity.public()),
        &peer,
        &intro.offer.key,
        args.accept_new_key,
        out,
    )?;
    let setup = driver::Setup {
        client: client.clone(),
        peer,
        intro: *intro,
        received,
        keys,
        local_nat: report.as_ref().map(|r| (r.nat_type, r.port_allocation)),
        punch: !args.no_direct,
        stun: info.stun,
        offer,
        include_loopback,
        typed: Typed::default(),
        relogin: Some(session.relogin.clone()),
    };
    Ok(Some((setup, endpoint)))
}

/// [`intro::await_introduction`], logging in again when the rendezvous connection is lost
/// while we wait for the peer (a server restart, a network change): the wait goes on until
/// the deadline with a fresh connection and a fresh invitation. Returns the client that got
/// the introduction.
async fn await_introduction_reconnecting(
    session: &Session<'_>,
    peer: &UserName,
    offer: &Offer,
    deadline: Instant,
    mut ring: Option<SessionId>,
    input: &mut mpsc::UnboundedReceiver<Input>,
    typed: &mut Typed,
) -> Result<(Arc<RendezvousClient>, Introduced), ChatRunError> {
    let mut client = session.client.clone();
    loop {
        let result =
            intro::await_introduction(&client, peer, offer, deadline, ring, input, typed).await;
        let lost = match client.close_reason() {
            None | Some(CloseReason::ClosedByClient) => false,
            Some(CloseReason::LoggedOut(OutReason::OtherLogin)) => false,
            Some(_) => true,
        };
        match result {
            Err(e) if lost && !matches!(e, ChatRunError::PeerAbsent(_)) => {
                tracing::info!(error = %e, "the rendezvous connection was lost while waiting");
            }
            other => return other.map(|introduced| (client, introduced)),
        }
        session.out.show(&output::Shown::Server {
            state: "reconnecting",
        });
        let mut backoff = Backoff::default();
        let relogged = tokio::select! {
            relogged = session.relogin.reconnect(&mut backoff) => relogged?,
            () = tokio::time::sleep_until(deadline.into()) => {
                return Err(ChatRunError::PeerAbsent(peer.clone()));
            }
        };
        client = Arc::new(relogged.0);
        session
            .out
            .show(&output::Shown::Server { state: "connected" });
        // A ring from before the loss belongs to the old connection's invitation.
        ring = None;
    }
}

/// The key rule of an introduction: a peer with no pinned key gets `key` pinned (unverified);
/// the pinned key goes on; another key is [`ChatRunError::KeyChanged`] unless `accept_new`,
/// which re-pins it unverified. The check and the pin happen under the pins' lock. A key of
/// small order is [`ChatRunError::UnusablePeerKey`] before anything is pinned.
pub fn check_peer_key(
    home: &UserHome,
    me: (&UserName, &[u8; 32]),
    peer: &UserName,
    key: &[u8; 32],
    accept_new: Option<Fingerprint>,
    out: &Output,
) -> Result<(), ChatRunError> {
    if shared::identity::is_small_order_key(key) {
        return Err(ChatRunError::UnusablePeerKey(peer.clone()));
    }
    let new = Fingerprint::of_identity_key(key);
    // Only the very key the user accepted (by its fingerprint) replaces the pin.
    let accept_new = accept_new == Some(new);
    let check = home.update_pins(|pins| {
        let check = pins.check(peer, key);
        if check == KeyCheck::New || accept_new {
            pins.pin(peer, *key);
        }
        check
    })?;
    match check {
        KeyCheck::Same => Ok(()),
        KeyCheck::New => {
            out.note(&format!(
                "pinned {peer}'s identity key {new} (first contact; compare safety numbers \
                 with `p2p-client contacts fingerprint {peer}`)"
            ));
            Ok(())
        }
        KeyCheck::Changed { old, .. } if !accept_new => Err(ChatRunError::KeyChanged {
            peer: peer.clone(),
            old: Fingerprint::of_identity_key(&old),
            new,
            safety_number: safety_number((me.0.as_str(), me.1), (peer.as_str(), key)),
        }),
        KeyCheck::Changed { old, was_verified } => {
            let mark = if was_verified {
                "; it is no longer verified"
            } else {
                ""
            };
            out.note(&format!(
                "accepted {peer}'s new identity key {new} (was {}){mark}",
                Fingerprint::of_identity_key(&old)
            ));
            Ok(())
        }
    }
}

/// Classifies the NAT with the STUN service (on a blocking thread); `None` on any failure.
async fn classify_nat(stun: Option<SocketAddr>, bind_ip: IpAddr) -> Option<Report> {
    let Some(stun) = stun else {
        tracing::info!("no STUN service advertised: the NAT is not classified");
        return None;
    };
    let options = ClassifyOptions {
        local_ip: (!bind_ip.is_unspecified()).then_some(bind_ip),
        ..ClassifyOptions::default()
    };
    match tokio::task::spawn_blocking(move || classify(stun, options)).await {
        Ok(Ok(report)) => {
            tracing::info!(nat = ?report.nat_type, alloc = ?report.port_allocation, "classified");
            Some(report)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot classify the NAT");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "the classification panicked");
            None
        }
    }
}

/// The offer: our key, the srflx candidate first, then host candidates (duplicates of the
/// srflx address dropped), at most [`MAX_CANDIDATES`] in all; `nat=` and `alloc=` when
/// classified.
pub fn build_offer(
    key: [u8; 32],
    hosts: &[SocketAddr],
    srflx: Option<SocketAddr>,
    report: Option<&Report>,
) -> Offer {
    let mut offer = Offer::new(key);
    if let Some(addr) = srflx {
        offer.candidates.push(Candidate {
            kind: CandidateKind::Srflx,
            addr,
        });
    }
    for &addr in hosts {
        if offer.candidates.len() >= MAX_CANDIDATES {
            break;
        }
        if Some(addr) != srflx {
            offer.candidates.push(Candidate {
                kind: CandidateKind::Host,
                addr,
            });
        }
    }
    if let Some(report) = report {
        offer.nat = Some(NatKind::from(report.nat_type));
        offer.alloc = report.port_allocation.map(Allocation::from);
    }
    offer
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_offer_leads_with_srflx_and_drops_duplicates() {
        let hosts: Vec<SocketAddr> = (1..=9)
            .map(|i| format!("10.0.0.{i}:4000").parse().unwrap())
            .collect();
        let srflx: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let offer = build_offer([1; 32], &hosts, Some(srflx), None);
        assert_eq!(offer.candidates.len(), MAX_CANDIDATES);
        assert_eq!(offer.candidates[0].kind, CandidateKind::Srflx);
        assert!(offer.candidates[1..].iter().all(|c| c.addr != srflx));
        offer.check().unwrap();
        assert_eq!(offer.nat, None);
    }

    /// The pin rules: first sight pins, the same key passes, another key stops the chat
    /// (with the new safety number) unless `--accept-new-key` names exactly that key, and a
    /// key of small order is refused before anything is pinned.
    #[test]
    fn peer_keys_are_pinned_checked_and_replaced_only_by_the_accepted_one() {
        let dir = std::env::temp_dir().join(format!(
            "p2p-chat-pins-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let home = Home::at(&dir);
        let alice = UserName::parse("alice").unwrap();
        let bob = UserName::parse("bob").unwrap();
        let user_home = home.user(&alice).unwrap();
        let out = Output::new(true);
        let me = (&alice, &[9; 32]);
        let (first, second, third) = ([1; 32], [2; 32], [3; 32]);
        let pinned = |h: &UserHome| h.pins().unwrap().get(&bob).map(|p| p.key);

        let mut low_order = [0xff; 32];
        low_order[0] = 0xec;
        low_order[31] = 0x7f;
        assert!(matches!(
            check_peer_key(&user_home, me, &bob, &low_order, None, &out),
            Err(ChatRunError::UnusablePeerKey(_))
        ));
        assert_eq!(pinned(&user_home), None, "nothing pinned");

        check_peer_key(&user_home, me, &bob, &first, None, &out).unwrap();
        assert_eq!(pinned(&user_home), Some(first));
        check_peer_key(&user_home, me, &bob, &first, None, &out).unwrap();

        let Err(ChatRunError::KeyChanged {
            new, safety_number, ..
        }) = check_peer_key(&user_home, me, &bob, &second, None, &out)
        else {
            panic!("a changed key must stop the chat");
        };
        assert_eq!(new, Fingerprint::of_identity_key(&second));
        assert_eq!(
            safety_number,
            shared::identity::safety_number(("bob", &second), ("alice", &[9; 32]))
        );
        // Accepting another fingerprint does not let this key through.
        let other = Some(Fingerprint::of_identity_key(&third));
        assert!(check_peer_key(&user_home, me, &bob, &second, other, &out).is_err());
        assert_eq!(pinned(&user_home), Some(first));
        check_peer_key(&user_home, me, &bob, &second, Some(new), &out).unwrap();
        assert_eq!(pinned(&user_home), Some(second));
        let _ = std::fs::remove_dir_all(&dir);
    }

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
