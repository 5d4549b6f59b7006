//! Staying logged in: the login session id a process keeps ([`LoginSession`]), the back-off
//! between attempts ([`Backoff`]), and [`Relogin`], which connects, logs in, registers the
//! device and restores the presence, again and again for as long as a long-running command
//! (`status`, `chat`) lives.
//!
//! Every login of a process registers its device with the same [`LoginSession`] (`DEV TrID
//! key session`, docs/PROTOCOL.md section 5): the server keeps one connection per (user,
//! session), so a reconnect replaces the stale connection it may still hold for us, and other
//! processes of the same user (another device, or a one-shot command) are left alone.
//!
//! ```no_run
//! # async fn demo() -> Result<(), p2p_client::rendezvous::RendezvousError> {
//! use p2p_client::home::Home;
//! use p2p_client::rendezvous::{Backoff, ClientConfig, Relogin};
//! use p2p_client::tls::ServerTrust;
//! use shared::rendezvous::{Presence, UserName};
//!
//! let home = Home::at("/home/alice/.local/share/p2p-toolkit");
//! let relogin = Relogin::new(
//!     "127.0.0.1:1863",
//!     ServerTrust::tofu(home),
//!     ClientConfig::default(),
//!     UserName::parse("alice").expect("valid"),
//!     b"correct horse",
//!     [7; 32],
//!     Some(Presence::Busy),
//! );
//! let (client, _info) = relogin.login().await?;
//! while client.next_event().await.is_some() {}
//! // The connection is gone: try again, 0.25 s, 0.5 s, ... at most 10 s apart.
//! let (client, _info) = relogin.reconnect(&mut Backoff::default()).await?;
//! # drop(client);
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use shared::rendezvous::{Presence, UserName};
use zeroize::Zeroizing;

use crate::tls::ServerTrust;

use super::{ClientConfig, CloseReason, LoginInfo, Redirect, RendezvousClient, RendezvousError};

/// The client-chosen id of one login session of a device: 16 random bytes, sent as 32 hex
/// digits with `DEV`. A process keeps one ([`LoginSession::of_process`]) across its reconnects.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoginSession(pub [u8; 16]);

impl LoginSession {
    /// A fresh random session id.
    pub fn random() -> LoginSession {
        let mut bytes = [0u8; 16];
        OsRng.fill_bytes(&mut bytes);
        LoginSession(bytes)
    }

    /// This process's session id, drawn on first use.
    pub fn of_process() -> LoginSession {
        static PROCESS: OnceLock<LoginSession> = OnceLock::new();
        *PROCESS.get_or_init(LoginSession::random)
    }
}

impl fmt::Display for LoginSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for LoginSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoginSession({self})")
    }
}

/// Exponential back-off with jitter: each delay is drawn uniformly from the upper half of a
/// window that starts at [`Backoff::first`] and doubles up to [`Backoff::cap`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    window: Duration,
}

impl Default for Backoff {
    /// 0.25 s first, at most 10 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(250), Duration::from_secs(10))
    }
}

impl Backoff {
    /// A back-off whose first window is `first` and whose windows never exceed `cap`.
    pub fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff {
            first,
            cap,
            window: first.min(cap),
        }
    }

    /// The first window.
    pub fn first(&self) -> Duration {
        self.first
    }

    /// The largest window.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The next delay, with `rng` for the jitter; the window then doubles.
    pub fn next_delay_with(&mut self, rng: &mut impl Rng) -> Duration {
        let window = self.window;
        self.window = (window * 2).min(self.cap);
        let half = window / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rng.gen_range(0..=nanos))
    }

    /// The next delay, with jitter from the operating system.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut OsRng)
    }

    /// Back to the first window (after a success).
    pub fn reset(&mut self) {
        self.window = self.first.min(self.cap);
    }
}

/// What it takes to log in again: the server (or a list of them, [`super::dispatch`]), its
/// trust, the user and the password (kept in
/// memory, wiped on drop), the device key, this process's [`LoginSession`] and the presence
/// to restore. See the [module docs](self).
pub struct Relogin {
    server: String,
    trust: ServerTrust,
    config: ClientConfig,
    user: UserName,
    password: Zeroizing<Vec<u8>>,
    device_key: [u8; 32],
    presence: Option<Presence>,
    /// Where a draining node sent us: tried first by the next login.
    redirect: Mutex<Option<Redirect>>,
}

impl fmt::Debug for Relogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relogin")
            .field("server", &self.server)
            .field("user", &self.user)
            .field("presence", &self.presence)
            .finish_non_exhaustive()
    }
}

impl Relogin {
    /// Everything a login needs; `presence` is set after each login (`None`: not set, so the
    /// session is not visible and cannot be invited).
    pub fn new(
        server: &str,
        trust: ServerTrust,
        config: ClientConfig,
        user: UserName,
        password: &[u8],
        device_key: [u8; 32],
        presence: Option<Presence>,
    ) -> Relogin {
        Relogin {
            server: server.to_owned(),
            trust,
            config,
            user,
            password: Zeroizing::new(password.to_vec()),
            device_key,
            presence,
            redirect: Mutex::new(None),
        }
    }

    /// The user.
    pub fn user(&self) -> &UserName {
        &self.user
    }

    /// The presence restored after each login.
    pub fn presence(&self) -> Option<Presence> {
        self.presence
    }

    /// Changes the presence restored after each login (set it on the live connection too).
    pub fn set_presence(&mut self, presence: Option<Presence>) {
        self.presence = presence;
    }

    /// Connects, logs in, registers the device with this process's session and sets the
    /// presence: once. The servers are tried in a random order and `XFR`s are followed
    /// ([`super::dispatch`]); a node a draining one sent us to
    /// ([`reconnect_after`](Self::reconnect_after)) is tried first.
    pub async fn login(&self) -> Result<(RendezvousClient, LoginInfo), RendezvousError> {
        let first = self
            .redirect
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let (client, info) = super::dispatch::walk(
            &self.server,
            &self.trust,
            self.config,
            Some((&self.user, &self.password)),
            first,
        )
        .await?;
        let info = info.ok_or_else(|| RendezvousError::unexpected("no login information"))?;
        client.register_device(&self.device_key).await?;
        if let Some(presence) = self.presence {
            client.set_status(presence).await?;
        }
        Ok((client, info))
    }

    /// [`Self::login`] until it works, waiting `backoff`'s delays between attempts (the first
    /// attempt waits too, so a server that just closed is not hammered). Errors that another
    /// attempt cannot fix ([`is_permanent`]) end it.
    pub async fn reconnect(
        &self,
        backoff: &mut Backoff,
    ) -> Result<(RendezvousClient, LoginInfo), RendezvousError> {
        loop {
            tokio::time::sleep(backoff.next_delay()).await;
            match self.login().await {
                Ok(done) => {
                    backoff.reset();
                    return Ok(done);
                }
                Err(e) if is_permanent(&e) => return Err(e),
                Err(e) => tracing::info!(error = %e, "reconnecting: not yet"),
            }
        }
    }
}

impl Relogin {
    /// [`reconnect`](Self::reconnect) after a connection that ended with `reason`: when a
    /// draining node sent us elsewhere ([`CloseReason::Transferred`]), that node is tried first
    /// (its key must be the draining node's, see [`super::dispatch`]), then the list.
    pub async fn reconnect_after(
        &self,
        reason: Option<&CloseReason>,
        backoff: &mut Backoff,
    ) -> Result<(RendezvousClient, LoginInfo), RendezvousError> {
        if let Some(CloseReason::Transferred(redirect)) = reason {
            *self.redirect.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((**redirect).clone());
        }
        self.reconnect(backoff).await
    }
}

/// Whether logging in again cannot help: a changed server key, a wrong password, a server
/// that cannot prove it knows us, a bad argument, an unusable home or `--ca` file.
pub fn is_permanent(e: &RendezvousError) -> bool {
    match e {
        RendezvousError::ServerKeyChanged { .. }
        | RendezvousError::Scram(_)
        | RendezvousError::Kdf(_)
        | RendezvousError::InvalidArgument(_)
        | RendezvousError::Resolve { .. } => true,
        RendezvousError::Tls(t) => !matches!(t, crate::tls::TlsError::Handshake { .. }),
        _ => e.is_auth_failed(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn delays_double_with_jitter_up_to_the_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = Backoff::default();
        let ms = Duration::from_millis;
        let windows = [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000];
        for w in windows {
            let d = b.next_delay_with(&mut rng);
            assert!(
                d >= ms(w) / 2 && d <= ms(w),
                "{d:?} not in the window {w} ms"
            );
        }
        b.reset();
        assert!(b.next_delay_with(&mut rng) <= ms(250));
        // Jitter: two clients do not retry in lockstep.
        let draws: Vec<Duration> = (0..20)
            .map(|_| Backoff::default().next_delay_with(&mut rng))
            .collect();
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn a_process_keeps_one_session_id_of_32_hex_digits() {
        let a = LoginSession::of_process();
        assert_eq!(a, LoginSession::of_process());
        let text = a.to_string();
        assert_eq!(text.len(), 32);
        assert!(text.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(LoginSession::random(), LoginSession::random());
    }

    #[test]
    fn only_errors_a_retry_cannot_fix_are_permanent() {
        let auth = RendezvousError::Server {
            code: 911,
            text: "authentication failed".into(),
        };
        assert!(is_permanent(&auth));
        let refused = RendezvousError::Connect {
            addr: "127.0.0.1:1".parse().unwrap(),
            error: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(!is_permanent(&refused));
        let internal = RendezvousError::Server {
            code: 500,
            text: "internal server error".into(),
        };
        assert!(!is_permanent(&internal));
    }
}
