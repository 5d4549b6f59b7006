//! Direct links to a peer, for any application: see [`Link`].
//!
//! A link is made in four steps ([`Link::connect`]):
//!
//! 1. Log in to the rendezvous server ([`LinkSession::login`]); its `CFG` says where STUN and
//!    the switchboard are. The device's identity key (the long-term X25519 key pair in the
//!    home, [`crate::home`]) is registered with the login.
//! 2. Bind one UDP *endpoint* socket ([`endpoint`]), learn its server-reflexive address with a
//!    STUN Binding from that same socket, classify the NAT (unless
//!    [`LinkConfig::classify`] is off), and build the offer: identity key, host candidates,
//!    srflx candidate.
//! 3. Invite the peer and answer its ring ([`intro`]); both sides do this and the server pairs
//!    them. The introduction carries the peer's identity key; it is checked against the key
//!    pinned for the peer ([`setup::check_peer_key`]): pinned on first sight, and a different
//!    one stops the link ([`LinkError::KeyChanged`], nothing sent) unless
//!    [`LinkConfig::accept_new_key`] names it.
//! 4. Then, at once and in parallel ([`driver`]): connect to the switchboard with the ticket
//!    ([`relay`]) so that the link is up within a moment even if punching fails; start the
//!    puncher at the shared start time on the endpoint socket; and start the end-to-end
//!    session (Noise KK between the two identity keys: only the holder of the pinned private
//!    key can complete it, whatever the servers do), whose packets take the path [`path`]
//!    chooses: relayed until the puncher reports a direct path, direct after that, relayed
//!    again if the direct path goes quiet, direct again after punching again ([`repunch`]).
//!
//! Over the session go the application's messages ([`Link::send`], [`LinkEvent::Message`]):
//! reliable, ordered, end to end encrypted, at most [`MAX_MESSAGE_LEN`] bytes each. With
//! [`LinkConfig::streams`], QUIC runs over the same socket and paths, for byte streams with
//! congestion control ([`Link::open_stream`], [`Link::accept_stream`]); see [`quic`].
//!
//! Datagrams on the endpoint socket are told apart by their first byte
//! ([`endpoint::classify`]): STUN (0x00-0x03), chat session (0x80-0x83), hole punching
//! (0x84, 0x85), QUIC (0x40-0x7F, 0xC0-0xFF).
//!
//! The library prints nothing, reads no input and installs no signal handler: it runs on the
//! caller's tokio runtime and reports through [`LinkEvent`]s. `p2p-client chat`, `send`,
//! `receive` and `tunnel` are programs on it.
//!
//! ```no_run
//! use p2p_client::link::{Account, Link, LinkConfig, LinkEvent, LinkSession};
//! # async fn example(account: Account<'_>) -> Result<(), p2p_client::link::LinkError> {
//! let session = LinkSession::login(&account, b"alice's password").await?;
//! let bob = "bob".parse().expect("a user name");
//! let mut link = Link::connect(&session, &bob, LinkConfig::default()).await?;
//! link.send(b"hello".to_vec())?;
//! while let Some(event) = link.next_event().await {
//!     match event {
//!         LinkEvent::Message(bytes) => println!("bob: {}", String::from_utf8_lossy(&bytes)),
//!         LinkEvent::Path { path, remote } => println!("now {} via {remote}", path.word()),
//!         LinkEvent::PeerLeft => break,
//!         _ => {}
//!     }
//! }
//! link.close().await?;
//! session.logout().await;
//! # Ok(())
//! # }
//! ```

pub mod addresses;
pub mod driver;
pub mod endpoint;
mod error;
pub mod event;
pub mod intro;
pub mod quic;
pub mod relay;
pub mod setup;
mod shared_state;

/// The path choice and re-punching, sans-IO in `shared` (the link core composes them).
pub use shared::link::{path, repunch};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::identity::Fingerprint;
use shared::rendezvous::{Presence, SessionId, UserName};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::home::{Home, Identity, UserHome};
use crate::rendezvous::{ClientConfig, LoginInfo, Relogin, RendezvousClient};
use crate::tls::{ServerKey, ServerTrust};

pub use error::LinkError;
pub use event::{LinkEvent, PathKind, ServerState, UndeliveredReason};
pub use shared_state::{LinkShared, LinkStats, PathRecord};

/// How long [`Link::close`] waits for the peer to acknowledge every message.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest message [`Link::send`] takes (the session's limit, less the link's kind byte).
pub const MAX_MESSAGE_LEN: usize = shared::chat::MAX_MESSAGE_LEN - 1;

/// Where and as whom links are made.
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

/// How a link is made. `Default` is what `chat` does without options.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LinkConfig {
    /// How long to wait for the peer to come online and join.
    pub wait: Duration,
    /// Local address of the UDP endpoint socket (default: every address of both families,
    /// any port: a dual-stack `[::]` socket, or `0.0.0.0` without IPv6). An IPv4 address
    /// keeps the link on IPv4.
    pub bind: Option<SocketAddr>,
    /// Classify the NAT before the offer (about 0.15 s with a two-address STUN server); the
    /// result lets punching through symmetric NATs work.
    pub classify: bool,
    /// Accept the peer's new identity key if it is the one with this fingerprint (after
    /// comparing safety numbers by another channel).
    pub accept_new_key: Option<Fingerprint>,
    /// Punch for a direct path (off: the relay only, for tests).
    pub direct: bool,
    /// Run QUIC over the link for byte streams. Both sides must ask for it.
    pub streams: bool,
    /// Report how each introduction turned out (direct or relayed, how long to direct, the
    /// punching method, which kind of address worked) to the rendezvous server, which keeps
    /// only aggregate counts per NAT pair (docs/PROTOCOL.md section 8, "RPT"). On by default.
    pub telemetry: bool,
    /// Which protocols to ask the default gateway with for a port mapping of the endpoint
    /// socket, offered as a `mapped` candidate; renewed while the link lives, deleted when it
    /// ends (docs/PORTMAP.md). Skipped when the STUN service is on loopback.
    pub port_mapping: crate::portmap::PortMapping,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            wait: Duration::from_secs(60),
            bind: None,
            classify: true,
            accept_new_key: None,
            direct: true,
            streams: false,
            telemetry: true,
            port_mapping: crate::portmap::PortMapping::Auto,
        }
    }
}

impl LinkConfig {
    /// The defaults with QUIC streams on.
    pub fn with_streams() -> Self {
        LinkConfig {
            streams: true,
            ..LinkConfig::default()
        }
    }
}

/// A login to the rendezvous server that links are made from: one link at a time (the
/// link takes the connection's pushes while it runs).
pub struct LinkSession {
    client: Arc<RendezvousClient>,
    relogin: Arc<Relogin>,
    info: LoginInfo,
    home: UserHome,
    identity: Identity,
}

impl std::fmt::Debug for LinkSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSession")
            .field("user", self.home.user())
            .field("server", &self.client.server())
            .finish_non_exhaustive()
    }
}

impl LinkSession {
    /// Logs in as the account's user (online), with its device identity key.
    pub async fn login(account: &Account<'_>, password: &[u8]) -> Result<LinkSession, LinkError> {
        let home = account.home.user(&account.user)?;
        let identity = home.identity()?;
        // A fresh login is not yet visible; the peer can only invite us once we are online.
        let relogin = Arc::new(Relogin::new(
            account.server,
            account.trust.clone(),
            account.config,
            account.user.clone(),
            password,
            identity.public(),
            Some(Presence::Online),
        ));
        let (client, info) = relogin.login().await?;
        tracing::info!(stun = ?info.stun, switchboard = ?info.switchboard, "logged in");
        Ok(LinkSession {
            client: Arc::new(client),
            relogin,
            info,
            home,
            identity,
        })
    }

    /// The rendezvous connection (contacts, presence).
    pub fn client(&self) -> &Arc<RendezvousClient> {
        &self.client
    }

    /// The server's key and how it is trusted (pinned just now, pinned before, verified).
    pub fn server_key(&self) -> &ServerKey {
        self.client.server_key()
    }

    /// Whether `peer` is in the contact list.
    pub async fn is_contact(&self, peer: &UserName) -> Result<bool, LinkError> {
        let contacts = self.client.contacts().await?;
        Ok(contacts.iter().any(|e| e.contact && e.name == *peer))
    }

    /// Logs out.
    pub async fn logout(&self) {
        self.client.logout().await;
    }
}

/// What the application asks of the running link.
#[derive(Debug)]
pub enum Command {
    /// Send a message (numbered by [`Link::send`]).
    Send {
        /// Its number, from 1.
        number: u64,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// Nothing more to send: end once the peer has acknowledged everything.
    Finish,
    /// End now (with a goodbye).
    Abort,
}

/// A link to a peer: messages, streams, events. See the [module docs](self).
///
/// Dropping a `Link` without [`Link::close`] aborts it (the peer sees a goodbye).
pub struct Link {
    peer: UserName,
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<LinkEvent>,
    held: VecDeque<LinkEvent>,
    task: Option<JoinHandle<Result<(), LinkError>>>,
    next_number: u64,
    shared: Arc<LinkShared>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("peer", &self.peer)
            .field("path", &self.path())
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Makes a link to `peer`, who must do the same towards us within
    /// [`LinkConfig::wait`]. Returns once the server has introduced us (the events then start
    /// with what happened while the link was made, then [`LinkEvent::Connected`]); messages
    /// sent before the session is up wait for it.
    pub async fn connect(
        session: &LinkSession,
        peer: &UserName,
        config: LinkConfig,
    ) -> Result<Link, LinkError> {
        Link::make(session, peer, None, config, None).await
    }

    /// [`Link::connect`] by answering the invitation `ring` that `peer` sent us.
    pub async fn answer(
        session: &LinkSession,
        peer: &UserName,
        ring: SessionId,
        config: LinkConfig,
    ) -> Result<Link, LinkError> {
        Link::make(session, peer, Some(ring), config, None).await
    }

    /// Waits (at most [`LinkConfig::wait`]) for any contact to ask for a link to us, and
    /// answers it: the other side runs [`Link::connect`] towards us. Invitations from users who
    /// are not our contacts never reach us (the server only lets contacts invite each other).
    pub async fn accept(session: &LinkSession, config: LinkConfig) -> Result<Link, LinkError> {
        let deadline = tokio::time::Instant::now() + config.wait;
        let (peer, ring) = loop {
            let event = tokio::select! {
                event = session.client.next_event() => event,
                () = tokio::time::sleep_until(deadline) => {
                    return Err(LinkError::NobodyCame(config.wait));
                }
            };
            match event {
                Some(crate::rendezvous::Event::Ring { sid, from }) => break (from, sid),
                Some(other) => tracing::debug!(event = ?other, "waiting for an invitation"),
                None => return Err(LinkError::closed(&session.client)),
            }
        };
        tracing::info!(%peer, %ring, "answering an invitation");
        Link::make(session, &peer, Some(ring), config, None).await
    }

    /// [`Link::connect`] (or [`Link::answer`] when `ring` is given) that reports what happens
    /// while the link is being made (the rendezvous connection lost and back, the peer's key
    /// pinned) on `early` at once, rather than as the link's first events.
    pub async fn connect_reporting(
        session: &LinkSession,
        peer: &UserName,
        ring: Option<SessionId>,
        config: LinkConfig,
        early: mpsc::UnboundedSender<LinkEvent>,
    ) -> Result<Link, LinkError> {
        Link::make(session, peer, ring, config, Some(early)).await
    }

    async fn make(
        session: &LinkSession,
        peer: &UserName,
        ring: Option<SessionId>,
        config: LinkConfig,
        early: Option<mpsc::UnboundedSender<LinkEvent>>,
    ) -> Result<Link, LinkError> {
        if peer == session.home.user() {
            return Err(LinkError::Usage("you cannot link to yourself".into()));
        }
        let (events_tx, events) = mpsc::unbounded_channel();
        let early = early.unwrap_or_else(|| events_tx.clone());
        let (setup, endpoint, mapping) =
            setup::prepare(session, peer.clone(), ring, &config, &early).await?;
        let shared = Arc::new(LinkShared::default());
        let driver = match driver::Driver::new(setup, endpoint, events_tx, shared.clone()) {
            Ok(driver) => driver,
            Err(e) => {
                if let Some(mapping) = mapping {
                    mapping.delete().await;
                }
                return Err(e);
            }
        };
        let (commands, mut commands_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let run = driver.run(&mut commands_rx);
            setup::with_mapping(mapping, run).await
        });
        Ok(Link {
            peer: peer.clone(),
            commands,
            events,
            held: VecDeque::new(),
            task: Some(task),
            next_number: 1,
            shared,
        })
    }

    /// The peer.
    pub fn peer(&self) -> &UserName {
        &self.peer
    }

    /// Queues a message for reliable, ordered, encrypted delivery; returns its number (from
    /// 1), which [`LinkEvent::Undelivered`] names if the peer never acknowledges it. A
    /// message over [`MAX_MESSAGE_LEN`] is refused at once (as `Undelivered`, `TooLong`).
    pub fn send(&mut self, bytes: Vec<u8>) -> Result<u64, LinkError> {
        let number = self.next_number;
        self.commands
            .send(Command::Send { number, bytes })
            .map_err(|_| LinkError::Closed)?;
        self.next_number += 1;
        Ok(number)
    }

    /// The next event; `None` once the link has ended and every event was read.
    pub async fn next_event(&mut self) -> Option<LinkEvent> {
        if let Some(event) = self.held.pop_front() {
            return Some(event);
        }
        self.events.recv().await
    }

    /// The next message from the peer; other events meanwhile are kept for
    /// [`Link::next_event`]. `None` once the link has ended.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.events.recv().await? {
                LinkEvent::Message(bytes) => return Some(bytes),
                other => self.held.push_back(other),
            }
        }
    }

    /// The path in use and the remote address (the peer's, or the switchboard's), if any.
    pub fn path(&self) -> Option<(PathKind, SocketAddr)> {
        self.shared.path()
    }

    /// Counters, the round-trip time and the path history.
    pub fn stats(&self) -> LinkStats {
        self.shared.stats()
    }

    /// Opens a QUIC bidirectional stream to the peer (waits for QUIC to come up; needs
    /// [`LinkConfig::streams`] on both sides).
    pub async fn open_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream), LinkError> {
        let connection = self.quic().await?;
        connection.open_bi().await.map_err(LinkError::stream)
    }

    /// Accepts the next QUIC bidirectional stream the peer opens.
    pub async fn accept_stream(&self) -> Result<(quinn::SendStream, quinn::RecvStream), LinkError> {
        let connection = self.quic().await?;
        connection.accept_bi().await.map_err(LinkError::stream)
    }

    /// The QUIC connection under the streams, once it is up. The future does not borrow
    /// the link, so it can wait while events are read.
    pub fn quic(
        &self,
    ) -> impl Future<Output = Result<quinn::Connection, LinkError>> + Send + 'static {
        let shared = self.shared.clone();
        async move { shared.quic_connection().await }
    }

    /// Ends the link gracefully: waits (at most [`DRAIN_TIMEOUT`]) until the peer has
    /// acknowledged every message, says goodbye, and returns how the link ended. Messages
    /// the peer did not get are reported as [`LinkEvent::Undelivered`] before the end and
    /// make the result [`LinkError::Undelivered`].
    pub async fn close(&mut self) -> Result<(), LinkError> {
        let _ = self.commands.send(Command::Finish);
        self.join().await
    }

    /// Nothing more to send: the link ends once the peer has acknowledged every message
    /// (at most [`DRAIN_TIMEOUT`]); [`Link::join`] returns how it ended.
    pub fn finish(&self) {
        let _ = self.commands.send(Command::Finish);
    }

    /// Ends the link at once, with a goodbye; [`Link::close`] or [`Link::join`] then
    /// return how it ended.
    pub fn abort(&self) {
        let _ = self.commands.send(Command::Abort);
    }

    /// Waits until the link ends by itself (the peer left, or a failure) or after
    /// [`Link::close`] / [`Link::abort`].
    pub async fn join(&mut self) -> Result<(), LinkError> {
        let Some(task) = self.task.take() else {
            return Err(LinkError::Closed);
        };
        match task.await {
            Ok(result) => result,
            Err(e) => Err(LinkError::Task(e)),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Abort);
    }
}
