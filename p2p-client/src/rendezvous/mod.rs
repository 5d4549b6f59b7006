//! The rendezvous client: accounts, login, presence, contacts and introductions over the
//! line protocol of `docs/PROTOCOL.md`, driven with tokio.
//!
//! [`RendezvousClient::connect`] resolves the server (or each of a comma-separated list, tried
//! in a random order and following a full or draining node's `XFR`: [`dispatch`]), opens the
//! TCP connection, runs the TLS 1.3
//! handshake (the server's key decided by a [`ServerTrust`], see [`crate::tls`]), spawns a task
//! that owns the connection, and negotiates the version. Every request method sends one
//! command and waits (at most [`ClientConfig::request_timeout`]) for the answer with the same
//! TrID; what the server pushes meanwhile is queued for
//! [`next_event`](RendezvousClient::next_event). The task answers the server's keepalive
//! `PNG 0` itself, so a connection stays up without the caller's help. Methods take `&self`,
//! so a caller can wait for events and send requests from one `tokio::select!` loop (all of
//! them are cancel-safe in the sense that dropping one only drops its answer).
//!
//! The login (SCRAM) is bound to the TLS session (RFC 9266 `tls-exporter`), so a login relayed
//! through someone who terminates TLS fails. After the login each command registers the
//! device's identity key ([`register_device`](RendezvousClient::register_device), `DEV`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), p2p_client::rendezvous::RendezvousError> {
//! use p2p_client::home::Home;
//! use p2p_client::rendezvous::{Event, RendezvousClient};
//! use p2p_client::tls::ServerTrust;
//! use shared::rendezvous::{Presence, UserName};
//!
//! let alice = UserName::parse("alice").expect("valid name");
//! let trust = ServerTrust::tofu(Home::at("/home/alice/.local/share/p2p-toolkit"));
//! let client = RendezvousClient::connect("127.0.0.1:1863", &trust).await?;
//! println!("server key {}", client.server_key().fingerprint);
//! let info = client.login(&alice, b"correct horse").await?;
//! println!("STUN service at {:?}", info.stun);
//! client.set_status(Presence::Busy).await?;
//! for entry in client.contacts().await? {
//!     println!("{} is {}", entry.name, entry.presence.word());
//! }
//! while let Some(event) = client.next_event().await {
//!     if let Event::Presence { name, presence, .. } = event {
//!         println!("{name} is now {}", presence.word());
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Long-running commands stay logged in with [`Relogin`] and [`Backoff`] ([`reconnect`]): after
//! a lost connection they connect, log in, register the device (with this process's
//! [`LoginSession`]) and restore the presence again.
//!
//! - [`codec`]: the `tokio_util` codec over [`shared::rendezvous::wire`] (the one the server
//!   uses too, from the `codecs` crate), run on the client side.
//! - [`Offer`] and [`Introduction`]: the parameters of `INV`, `ANS` and `ITR`.

mod b64;
pub use codecs::line as codec;
mod connection;
pub mod dispatch;
mod error;
mod event;
mod offer;
pub mod reconnect;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngCore;
use rand::rngs::OsRng;
use shared::rendezvous::scram::{
    ChannelBinding, MECHANISM, ScramClient, ScramError, derive_credentials,
};
use shared::rendezvous::server::PROTOCOL_VERSION;
use shared::rendezvous::{Credentials, Kdf, Line, Presence, SessionId, UserName};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::tls::{self, ServerKey, ServerLabel, ServerTrust};
use connection::{Shared, ToTask};
pub use dispatch::Redirect;
pub use error::{CloseReason, RendezvousError, code, io_text};
pub use event::{CancelReason, ContactEntry, Event, LoginInfo, OutReason, parse_contact_list};
pub use offer::{
    Allocation, Candidate, CandidateKind, Introduction, MAX_CANDIDATES, NatKind, Offer, OfferError,
    Role, SwitchboardTicket, parse_session_id,
};
pub use reconnect::{Backoff, LoginSession, Relogin};

/// The rendezvous protocol's TCP port (MSN's).
pub const DEFAULT_PORT: u16 = 1863;

/// Timeouts of a [`RendezvousClient`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// How long to wait for the TCP connection (10 s).
    pub connect_timeout: Duration,
    /// How long to wait for the answer to each request (10 s). Key stretching runs before the
    /// request is sent and does not count.
    pub request_timeout: Duration,
    /// How long [`logout`](RendezvousClient::logout) waits for the server to close (2 s).
    pub logout_timeout: Duration,
    /// How long the TLS handshake and the `VER` answer may take before the server is called
    /// [`RendezvousError::NotRendezvous`] (3 s).
    pub greeting_timeout: Duration,
    /// The login session sent with `DEV`; `None` (the default): this process's
    /// ([`LoginSession::of_process`]).
    pub session: Option<LoginSession>,
    /// The weakest key stretching accepted from the server at login ([`Kdf::default`]): a
    /// server (or a man in the middle the client was made to trust) that names a cheaper KDF
    /// would get a proof it could crack offline at that cost, so the login stops first
    /// ([`shared::rendezvous::scram::ScramClient::with_min_kdf`]). Lower it only for a server
    /// whose users registered with a cheaper KDF on purpose (tests).
    pub min_kdf: Kdf,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            logout_timeout: Duration::from_secs(2),
            greeting_timeout: Duration::from_secs(3),
            session: None,
            min_kdf: Kdf::default(),
        }
    }
}

/// A connection to a rendezvous server. See the [module docs](self).
///
/// Dropping it closes the connection.
pub struct RendezvousClient {
    commands: mpsc::Sender<ToTask>,
    events: Mutex<mpsc::UnboundedReceiver<Event>>,
    shared: std::sync::Arc<Shared>,
    task: JoinHandle<()>,
    config: ClientConfig,
    server: SocketAddr,
    key: ServerKey,
    binding: ChannelBinding,
}

impl Drop for RendezvousClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RendezvousClient {
    /// Connects to `server` (`HOST`, `HOST:PORT`, `IP:PORT`; the port defaults to 1863) over
    /// TLS, trusting its key as `trust` says, and negotiates the protocol version (`VER`),
    /// with the default [`ClientConfig`].
    pub async fn connect(
        server: &str,
        trust: &ServerTrust,
    ) -> Result<RendezvousClient, RendezvousError> {
        RendezvousClient::connect_with(server, trust, ClientConfig::default()).await
    }

    /// Connects to `server` over TLS and negotiates the protocol version (`VER`).
    ///
    /// `server` may be a comma-separated list (`a,b,c`), and a name may resolve to several
    /// addresses: they are tried in a random order, and a node that answers `XFR` (full or
    /// draining) is followed to the node it names ([`dispatch`]). A single server that fails
    /// gives its own error; several give [`RendezvousError::NoServer`] listing each failure.
    ///
    /// A server whose key differs from the one pinned for it is
    /// [`RendezvousError::ServerKeyChanged`]: the handshake was refused and nothing sent.
    pub async fn connect_with(
        server: &str,
        trust: &ServerTrust,
        config: ClientConfig,
    ) -> Result<RendezvousClient, RendezvousError> {
        dispatch::walk(server, trust, config, None, None)
            .await
            .map(|(client, _)| client)
    }

    /// Connects to one of `servers` (as [`connect_with`](Self::connect_with)) and logs in
    /// there; a node that fills up or starts draining between `VER` and the login answers it
    /// with `XFR`, which is followed too.
    pub async fn connect_and_login(
        servers: &str,
        trust: &ServerTrust,
        config: ClientConfig,
        user: &UserName,
        password: &[u8],
    ) -> Result<(RendezvousClient, LoginInfo), RendezvousError> {
        let (client, info) =
            dispatch::walk(servers, trust, config, Some((user, password)), None).await?;
        let info = info.ok_or_else(|| RendezvousError::unexpected("no login information"))?;
        Ok((client, info))
    }

    /// Connects to `addr`, checking its certificate as `trust` says for the server named
    /// `label`, and negotiates the version: one attempt, no list, no redirect.
    pub(crate) async fn connect_at(
        label: &ServerLabel,
        addr: SocketAddr,
        trust: &ServerTrust,
        config: ClientConfig,
    ) -> Result<RendezvousClient, RendezvousError> {
        let connect_error = |error| RendezvousError::Connect { addr, error };
        let timed_out = || {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("timed out after {} s", config.connect_timeout.as_secs_f32()),
            )
        };
        let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_error(timed_out()))?
            .map_err(connect_error)?;
        // Lines are small and each one waits for an answer: do not batch them.
        let _ = stream.set_nodelay(true);
        let not_rendezvous = |why: String| RendezvousError::NotRendezvous {
            server: label.to_string(),
            why,
        };
        let greeting = config.greeting_timeout;
        let silent =
            |what: &str| not_rendezvous(format!("{what} within {} s", greeting.as_secs_f32()));
        let connected = tokio::time::timeout(greeting, tls::handshake(stream, label, trust))
            .await
            .map_err(|_| silent("no TLS handshake"))?
            .map_err(|e| match RendezvousError::from(e) {
                // A certificate we refuse is a trust problem, not a wrong port.
                RendezvousError::Tls(tls::TlsError::Handshake { reason, .. })
                    if !reason.to_ascii_lowercase().contains("certificate") =>
                {
                    not_rendezvous(format!("it does not speak TLS 1.3: {reason}"))
                }
                other => other,
            })?;
        let spawned = connection::spawn(
            connected.stream,
            addr,
            connected.key.server.clone(),
            connected.key.fingerprint,
        );
        let client = RendezvousClient {
            commands: spawned.commands,
            events: Mutex::new(spawned.events),
            shared: spawned.shared,
            task: spawned.task,
            config,
            server: addr,
            key: connected.key,
            binding: connected.binding,
        };
        let quick = ClientConfig {
            request_timeout: greeting,
            ..config
        };
        let answer = client
            .request_within(&quick, "VER", vec![PROTOCOL_VERSION.to_owned()], "VER")
            .await
            .map_err(|e| match e {
                RendezvousError::Timeout { .. } => silent("no answer to VER"),
                RendezvousError::Closed(reason) => {
                    not_rendezvous(format!("it does not answer VER: {reason}"))
                }
                RendezvousError::Unexpected(what) => not_rendezvous(what),
                other => other,
            })?;
        if answer.param(0) != Some(PROTOCOL_VERSION) {
            return Err(RendezvousError::unexpected(format!(
                "the server picked version {:?}, we speak {PROTOCOL_VERSION}",
                answer.params
            )));
        }
        Ok(client)
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The server's key, and why it was trusted ([`tls::KeyTrust::PinnedNow`] on the first
    /// connection to a server that is pinned rather than verified by a CA).
    pub fn server_key(&self) -> &ServerKey {
        &self.key
    }

    /// Creates an account (`REG`, allowed before login). Stretches the password with `kdf` and
    /// a fresh 16-byte salt on a blocking thread; only the verifier is sent.
    ///
    /// Errors to expect: [`code::NAME_TAKEN`], [`code::REGISTRATION_CLOSED`],
    /// [`code::WEAK_KDF`] (the server wants a costlier `kdf`).
    pub async fn register(
        &self,
        user: &UserName,
        password: &[u8],
        kdf: Kdf,
    ) -> Result<(), RendezvousError> {
        let credentials = derive(password, kdf).await?;
        let mut params = vec![user.to_string()];
        params.extend(verifier_params(&credentials));
        let answer = self.request("REG", params, "REG").await?;
        expect_param(&answer, 0, user.as_str())
    }

    /// Logs in with SCRAM-SHA-256-ARGON2ID (docs/PROTOCOL.md section 5) and returns the `CFG`
    /// the server pushes right after.
    ///
    /// The server must prove it knows our verifier; if it cannot, the connection is closed and
    /// [`RendezvousError::Scram`] returned. A wrong password or an unknown user is
    /// [`code::AUTH_FAILED`] (see [`RendezvousError::is_auth_failed`]); after three on one
    /// connection the server hangs up.
    pub async fn login(
        &self,
        user: &UserName,
        password: &[u8],
    ) -> Result<LoginInfo, RendezvousError> {
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut nonce);
        let mut scram =
            ScramClient::new(user, &nonce, &self.binding).with_min_kdf(self.config.min_kdf);
        let first = vec![
            MECHANISM.to_owned(),
            "I".to_owned(),
            b64::encode(scram.client_first().as_bytes()),
        ];
        let answer = self.request("USR", first, "USR").await?;
        expect_param(&answer, 0, MECHANISM)?;
        expect_param(&answer, 1, "S")?;
        let server_first = b64_text(&answer, 2)?;

        // Argon2id is slow by design: keep it off the runtime's threads.
        let password = Zeroizing::new(password.to_vec());
        let (scram, client_final) = tokio::task::spawn_blocking(move || {
            let client_final = scram.handle_server_first(&server_first, &password);
            (scram, client_final)
        })
        .await
        .map_err(|e| RendezvousError::Kdf(e.to_string()))?;
        let client_final = client_final.map_err(|e| match e {
            ScramError::Kdf(e) => RendezvousError::Kdf(e),
            other => RendezvousError::Scram(other),
        })?;

        let (config_tx, config_rx) = oneshot::channel();
        let second = vec![
            MECHANISM.to_owned(),
            "S".to_owned(),
            b64::encode(client_final.as_bytes()),
        ];
        let answer = self
            .request_with_config("USR", second, "USR", Some(config_tx))
            .await?;
        // From here on, anything wrong means we do not know whom we are talking to.
        let verified = expect_param(&answer, 0, "OK")
            .and_then(|()| expect_param(&answer, 1, user.as_str()))
            .and_then(|()| b64_text(&answer, 2))
            .and_then(|server_final| {
                scram
                    .handle_server_final(&server_final)
                    .map_err(RendezvousError::Scram)
            });
        if let Err(e) = verified {
            self.close();
            return Err(e);
        }
        let cfg = tokio::time::timeout(self.config.request_timeout, config_rx)
            .await
            .map_err(|_| RendezvousError::Timeout {
                command: "USR (CFG)",
                after: self.config.request_timeout,
            })?
            .map_err(|_| self.closed_error())?;
        LoginInfo::from_cfg(user.clone(), &cfg).map_err(RendezvousError::Unexpected)
    }

    /// Registers this device's identity public key for the logged-in user, with the login
    /// session ([`ClientConfig::session`], by default this process's): `DEV TrID key session`.
    /// Every command calls it after login; the server binds the connection to the key (offers
    /// must then carry it) and hands it out in introductions and to
    /// [`device_keys`](Self::device_keys). A login with the same session replaces the older
    /// connection of that session; other sessions of the user stay.
    pub async fn register_device(&self, key: &[u8; 32]) -> Result<(), RendezvousError> {
        let encoded = b64::encode(key);
        let session = self
            .config
            .session
            .unwrap_or_else(LoginSession::of_process)
            .to_string();
        let answer = match self
            .request("DEV", vec![encoded.clone(), session], "DEV")
            .await
        {
            // A server from before login sessions takes the key alone.
            Err(e) if e.server_code() == Some(code::INVALID_PARAMETER) => {
                tracing::debug!("DEV with a session refused; registering the key alone");
                self.request("DEV", vec![encoded.clone()], "DEV").await?
            }
            other => other?,
        };
        match answer.param(0) {
            Some(echo) if echo == encoded => Ok(()),
            other => Err(RendezvousError::unexpected(format!(
                "DEV answer {other:?} is not our key"
            ))),
        }
    }

    /// The device keys of `name` (`KEY`), most recently registered first; empty when `name`
    /// has not registered one yet. Only for a user we could be introduced to (a mutual
    /// contact, neither blocking the other); otherwise [`code::USER_OFFLINE`].
    pub async fn device_keys(&self, name: &UserName) -> Result<Vec<[u8; 32]>, RendezvousError> {
        let answer = self.request("KEY", vec![name.to_string()], "KEY").await?;
        expect_param(&answer, 0, name.as_str())?;
        answer
            .params
            .iter()
            .skip(1)
            .map(|k| {
                b64::decode(k)
                    .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                    .ok_or_else(|| {
                        RendezvousError::unexpected(format!("KEY answer: bad key {k:?}"))
                    })
            })
            .collect()
    }

    /// Changes the password of the logged-in user (`PWD`). Other connections of the user stay
    /// logged in.
    pub async fn change_password(
        &self,
        new_password: &[u8],
        kdf: Kdf,
    ) -> Result<(), RendezvousError> {
        let credentials = derive(new_password, kdf).await?;
        self.request("PWD", verifier_params(&credentials), "PWD")
            .await
            .map(drop)
    }

    /// Sets our presence (`CHG`). [`Presence::AppearOffline`] shows us offline to everyone;
    /// [`Presence::Offline`] cannot be set (log out instead).
    pub async fn set_status(&self, presence: Presence) -> Result<(), RendezvousError> {
        if presence == Presence::Offline {
            return Err(RendezvousError::InvalidArgument(
                "offline is not a state to set: log out, or appear offline (invisible)".into(),
            ));
        }
        let answer = self
            .request("CHG", vec![presence.code().to_owned()], "CHG")
            .await?;
        expect_param(&answer, 0, presence.code())
    }

    /// The contact and block lists with what we may see of each one's presence (`LST`),
    /// sorted by name.
    pub async fn contacts(&self) -> Result<Vec<ContactEntry>, RendezvousError> {
        let answer = self.request("LST", Vec::new(), "LST").await?;
        parse_contact_list(&answer.payload).map_err(RendezvousError::Unexpected)
    }

    /// Adds `name` to our contact list (`ADC`). We see each other's presence once `name` adds
    /// us too.
    pub async fn add_contact(&self, name: &UserName) -> Result<(), RendezvousError> {
        self.name_request("ADC", name).await
    }

    /// Removes `name` from our contact list (`REM`).
    pub async fn remove_contact(&self, name: &UserName) -> Result<(), RendezvousError> {
        self.name_request("REM", name).await
    }

    /// Blocks `name` (`BLK`): it sees us offline and cannot invite us. It is not told.
    pub async fn block(&self, name: &UserName) -> Result<(), RendezvousError> {
        self.name_request("BLK", name).await
    }

    /// Unblocks `name` (`ALW`).
    pub async fn allow(&self, name: &UserName) -> Result<(), RendezvousError> {
        self.name_request("ALW", name).await
    }

    /// Invites `peer` to a session with our offer (`INV`) and returns the session id. The
    /// outcome arrives as [`Event::Introduced`] or [`Event::Cancelled`]. A peer who is offline,
    /// not a mutual contact or blocking us gives [`code::USER_OFFLINE`].
    pub async fn invite(
        &self,
        peer: &UserName,
        offer: &Offer,
    ) -> Result<SessionId, RendezvousError> {
        offer
            .check()
            .map_err(|e| RendezvousError::InvalidArgument(e.to_string()))?;
        let mut params = vec![peer.to_string()];
        params.extend(offer.to_params());
        let answer = self.request("INV", params, "INV").await?;
        expect_param(&answer, 0, peer.as_str())?;
        answer
            .param(1)
            .and_then(parse_session_id)
            .ok_or_else(|| RendezvousError::unexpected(format!("INV answer {:?}", answer.params)))
    }

    /// Accepts the invitation `sid` (from [`Event::Ring`]) with our offer (`ANS`). The
    /// introduction arrives as [`Event::Introduced`].
    pub async fn answer(&self, sid: SessionId, offer: &Offer) -> Result<(), RendezvousError> {
        offer
            .check()
            .map_err(|e| RendezvousError::InvalidArgument(e.to_string()))?;
        let mut params = vec![sid.to_string()];
        params.extend(offer.to_params());
        let answer = self.request("ANS", params, "ANS").await?;
        expect_param(&answer, 0, &sid.to_string())
    }

    /// Declines the invitation `sid` (`DEC`); the inviter gets [`CancelReason::Declined`].
    pub async fn decline(&self, sid: SessionId) -> Result<(), RendezvousError> {
        let answer = self.request("DEC", vec![sid.to_string()], "DEC").await?;
        expect_param(&answer, 0, &sid.to_string())
    }

    /// Tells the other peer of the introduced session `sid` (from [`Event::Introduced`]) that we
    /// have primed our NAT (`PRM`); it gets [`Event::PeerPrimed`]. A session the server does not
    /// know for us (expired after 10 minutes, forgotten because a peer logged out, never ours)
    /// gives [`code::USER_OFFLINE`].
    pub async fn primed(&self, sid: SessionId) -> Result<(), RendezvousError> {
        let answer = self.request("PRM", vec![sid.to_string()], "PRM").await?;
        expect_param(&answer, 0, &sid.to_string())
    }

    /// Reports the outcome of the introduced session `sid` (from [`Event::Introduced`]) to the
    /// server (`RPT`, connectivity telemetry: no address, only what docs/PROTOCOL.md section 8
    /// lists). Each side reports a session once; a session the server does not know for us
    /// gives [`code::USER_OFFLINE`], a second report [`code::ALREADY_REPORTED`].
    pub async fn report(
        &self,
        sid: SessionId,
        report: &shared::rendezvous::telemetry::Report,
    ) -> Result<(), RendezvousError> {
        let mut params = vec![sid.to_string()];
        params.extend(report.to_params());
        let answer = self.request("RPT", params, "RPT").await?;
        expect_param(&answer, 0, &sid.to_string())
    }

    /// Pings the server (`PNG` → `QNG`) and returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration, RendezvousError> {
        let sent = Instant::now();
        self.request("PNG", Vec::new(), "QNG").await?;
        Ok(sent.elapsed())
    }

    /// The next push from the server, in arrival order; `None` once the connection is closed
    /// and every event has been taken (then [`close_reason`](Self::close_reason) says why).
    /// Cancel-safe.
    pub async fn next_event(&self) -> Option<Event> {
        self.events.lock().await.recv().await
    }

    /// Why the connection is closed, or `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.close_reason()
    }

    /// Logs out (`OUT`) and waits, at most [`ClientConfig::logout_timeout`], for the server to
    /// close the connection; closes it ourselves after that. Contacts then see us offline.
    pub async fn logout(&self) {
        let (done, closed) = oneshot::channel();
        if self.commands.send(ToTask::Logout { done }).await.is_ok() {
            // `done` is dropped when the task ends, that is when the server has closed.
            let _ = tokio::time::timeout(self.config.logout_timeout, closed).await;
        }
        self.close();
    }

    /// Closes the connection at once (no `OUT`): the connection task sends TLS's
    /// `close_notify` and ends (it is stopped if that takes longer than half a second).
    pub fn close(&self) {
        let abort = self.task.abort_handle();
        match (
            self.commands.try_send(ToTask::Close),
            tokio::runtime::Handle::try_current(),
        ) {
            (Ok(()), Ok(runtime)) => {
                runtime.spawn(async move {
                    tokio::time::sleep(connection::CLOSE_TIMEOUT).await;
                    abort.abort();
                });
            }
            _ => abort.abort(),
        }
    }

    async fn name_request(
        &self,
        command: &'static str,
        name: &UserName,
    ) -> Result<(), RendezvousError> {
        let answer = self
            .request(command, vec![name.to_string()], command)
            .await?;
        expect_param(&answer, 0, name.as_str())
    }

    async fn request(
        &self,
        command: &'static str,
        params: Vec<String>,
        expect: &str,
    ) -> Result<Line, RendezvousError> {
        self.request_with_config(command, params, expect, None)
            .await
    }

    async fn request_within(
        &self,
        config: &ClientConfig,
        command: &'static str,
        params: Vec<String>,
        expect: &str,
    ) -> Result<Line, RendezvousError> {
        self.exchange(config, command, params, expect, None).await
    }

    /// Sends a request and waits for its answer; error lines become
    /// [`RendezvousError::Server`], an answer with another command
    /// [`RendezvousError::Unexpected`].
    async fn request_with_config(
        &self,
        command: &'static str,
        params: Vec<String>,
        expect: &str,
        then_config: Option<oneshot::Sender<Line>>,
    ) -> Result<Line, RendezvousError> {
        self.exchange(&self.config, command, params, expect, then_config)
            .await
    }

    async fn exchange(
        &self,
        config: &ClientConfig,
        command: &'static str,
        params: Vec<String>,
        expect: &str,
        then_config: Option<oneshot::Sender<Line>>,
    ) -> Result<Line, RendezvousError> {
        let (reply, answer) = oneshot::channel();
        let exchange = async {
            let request = ToTask::Request {
                command,
                params,
                reply,
                then_config,
            };
            self.commands
                .send(request)
                .await
                .map_err(|_| self.closed_error())?;
            answer.await.map_err(|_| self.closed_error())?
        };
        let line = tokio::time::timeout(config.request_timeout, exchange)
            .await
            .map_err(|_| RendezvousError::Timeout {
                command,
                after: config.request_timeout,
            })??;
        if line.command.as_str() == "XFR" {
            return Err(RendezvousError::Redirected(Box::new(
                dispatch::Redirect::parse(
                    &line,
                    self.server,
                    &self.key.server,
                    self.key.fingerprint,
                )?,
            )));
        }
        if let Some(code) = line.command.error_code() {
            let text = if line.params.is_empty() {
                code::meaning(code).to_owned()
            } else {
                line.params.join(" ")
            };
            return Err(RendezvousError::Server { code, text });
        }
        if line.command.as_str() != expect {
            return Err(RendezvousError::unexpected(format!(
                "{} {} {} in answer to {command}",
                line.command,
                line.trid,
                line.params.join(" ")
            )));
        }
        Ok(line)
    }

    fn closed_error(&self) -> RendezvousError {
        RendezvousError::Closed(
            self.shared
                .close_reason()
                .unwrap_or(CloseReason::ClosedByClient),
        )
    }
}

/// Stretches a password with a fresh salt, on a blocking thread.
async fn derive(password: &[u8], kdf: Kdf) -> Result<Credentials, RendezvousError> {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let password = Zeroizing::new(password.to_vec());
    tokio::task::spawn_blocking(move || derive_credentials(&password, &salt, kdf))
        .await
        .map_err(|e| RendezvousError::Kdf(e.to_string()))?
        .map_err(|e| RendezvousError::Kdf(e.to_string()))
}

/// `kdf salt StoredKey ServerKey`, as `REG` and `PWD` carry them.
fn verifier_params(c: &Credentials) -> Vec<String> {
    vec![
        c.kdf.to_string(),
        b64::encode(&c.salt),
        b64::encode(&c.stored_key),
        b64::encode(&c.server_key),
    ]
}

fn expect_param(line: &Line, i: usize, want: &str) -> Result<(), RendezvousError> {
    match line.param(i) {
        Some(got) if got.eq_ignore_ascii_case(want) => Ok(()),
        got => Err(RendezvousError::unexpected(format!(
            "{} answer has {got:?} where {want:?} belongs",
            line.command
        ))),
    }
}

/// Parameter `i`, base64-decoded into text.
fn b64_text(line: &Line, i: usize) -> Result<String, RendezvousError> {
    line.param(i)
        .and_then(b64::decode)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            RendezvousError::unexpected(format!(
                "{} answer: bad base64 in parameter {i}",
                line.command
            ))
        })
}
