//! The sans-IO core of the rendezvous server (docs/PROTOCOL.md sections 1-9).
//!
//! [`RendezvousServer`] owns the directory (accounts, contact and block lists), the connections
//! and their login state, presence, and pending introductions. It never touches a socket, a
//! clock or ambient randomness: the driver feeds it events with the current time, and drains
//! what it wants done.
//!
//! Every logged-in connection is a *session* of its user; a user may have any number of them
//! (several devices, a running chat next to one-shot commands). Presence is kept per session
//! and shown to contacts as the most available one; invitations ring the sessions that can take
//! them, and an introduction pairs one session on each side (docs/PROTOCOL.md sections 5, 6
//! and 8).
//!
//! # Driving it
//! The shape of every core (docs/DESIGN.md section 8: `handle_*` inputs, then drain, then
//! `poll_timeout`), for a stream-based core: the inputs are the decoded lines of TCP
//! connections rather than datagrams, and everything it wants done comes out of one
//! [`poll_output`](RendezvousServer::poll_output) queue instead of separate transmits and
//! events, because the order between a database write and the answer that announces it
//! matters.
//!
//! 1. Feed every event: [`handle_connected`](RendezvousServer::handle_connected), then each
//!    decoded [`Line`] ([`handle_line`](RendezvousServer::handle_line)) or framing error
//!    ([`handle_frame_error`](RendezvousServer::handle_frame_error)),
//!    [`handle_disconnected`](RendezvousServer::handle_disconnected) when the socket goes away.
//! 2. Drain [`poll_output`](RendezvousServer::poll_output) until `None`, in order (after each
//!    event, or after several: the queue keeps causal order either way):
//!    [`Output::Store`] must be persisted before any later output is acted on (so an answer
//!    never announces a change the database lost), [`Output::Send`] queues a line,
//!    [`Output::Close`] flushes and closes, [`Output::Ticket`] goes to the switchboard.
//! 3. **A write that fails** is reported with
//!    [`handle_store_failed`](RendezvousServer::handle_store_failed) and the
//!    [`StoreId`] of that [`Output::Store`], *before the next `poll_output`*. The core then
//!    withdraws every output of the step that made the change (its success answer and its
//!    pushes, which are all still queued behind the store), undoes the change in memory so
//!    that it matches the database again, and answers the requester
//!    `500 TrID internal server error` (its connection stays open). A store that
//!    `poll_output` has returned and that was not reported failed by the next `poll_output`
//!    counts as written.
//! 4. Call [`handle_timeout`](RendezvousServer::handle_timeout) when
//!    [`poll_timeout`](RendezvousServer::poll_timeout)'s instant has passed, and drain again.
//!
//! ```
//! # use std::time::Instant;
//! # use shared::rendezvous::server::*;
//! # use shared::rendezvous::{ChannelBinding, DirectorySnapshot, TrId, Line};
//! let mut server = RendezvousServer::new(
//!     RendezvousConfig::default(), DirectorySnapshot::default(), [1; 32], [2; 32]);
//! let now = Instant::now();
//! // The driver exports the binding from the server's side of the connection's TLS session.
//! let binding = ChannelBinding([3; 32]);
//! server.handle_connected(now, ConnId(1), "192.0.2.1:5000".parse().unwrap(), binding);
//! server.handle_line(now, ConnId(1), Line::new("VER", TrId(1), ["P2P1".to_owned()]));
//! while let Some(output) = server.poll_output() {
//!     match output {
//!         Output::Send { conn, line } => assert_eq!(line.params, ["P2P1"]),
//!         _ => {}
//!     }
//! }
//! ```
//!
//! # Costs
//! Users are interned to small integer ids; contact and block lists are sorted vectors of ids,
//! so a presence change costs a binary search per contact. Timers are a coarse sweep of the
//! connections (at most once a second) and a deadline-ordered queue of invitations, so
//! `poll_timeout` is O(1).

mod cluster;
mod conn;
mod devices;
mod directory;
mod dispatch;
mod intro;
mod login;
mod remote_intro;
mod sessions;
mod throttle;
mod timers;
mod writes;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cluster;
#[cfg(test)]
mod tests_cluster_intro;
#[cfg(test)]
mod tests_devices;
#[cfg(test)]
mod tests_dispatch;
#[cfg(test)]
mod tests_intro;
#[cfg(test)]
mod tests_presence;
#[cfg(test)]
mod tests_sessions;
#[cfg(test)]
mod tests_store;
#[cfg(test)]
mod tests_telemetry;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::scram::ChannelBinding;
use super::types::{DirectorySnapshot, Kdf, StoreOp, UserName, UserRecord};
use super::wire::{FrameError, Line, TrId};
use crate::identity::Fingerprint;
use conn::Conn;
use directory::Directory;
use intro::Introductions;
use sessions::Sessions;
use writes::Write;

pub use cluster::{ClusterMessage, NodeId, PresenceDigest};
pub use dispatch::NodeState;
pub use intro::MAX_CANDIDATES;
pub use remote_intro::Routed;

/// The protocol version this server speaks (docs/PROTOCOL.md section 3).
pub const PROTOCOL_VERSION: &str = "P2P1";

/// Identifies one TCP connection; the driver picks the numbers (never reused while open).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// An introduction's session id: 16 random bytes, written as lower-case hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(pub [u8; 16]);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for SessionId {
    type Err = ParseSessionIdError;

    /// Parses 32 hex digits (either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        intro::parse_sid(s).ok_or(ParseSessionIdError)
    }
}

/// A session id that is not 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a session id is 32 hex digits")]
pub struct ParseSessionIdError;

/// The rendezvous server's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RendezvousConfig {
    /// Whether `REG` is allowed (default true).
    pub registration_open: bool,
    /// The weakest KDF accepted by `REG` and `PWD` (default [`Kdf::default`]).
    pub min_kdf: Kdf,
    /// Silence after which the server sends `PNG 0` (30 s).
    pub ping_interval: Duration,
    /// Silence after which the server sends `OUT 0 TMO` and closes (75 s).
    pub idle_timeout: Duration,
    /// How long the second login step may wait after the first (30 s).
    pub login_step_timeout: Duration,
    /// How long an invitation waits for `ANS` or `DEC` (30 s).
    pub invite_timeout: Duration,
    /// The `start=` of `ITR` (250 ms).
    pub punch_delay: Duration,
    /// How long a switchboard ticket is valid (60 s).
    pub ticket_lifetime: Duration,
    /// How long an introduced session is remembered for `PRM` (10 minutes).
    pub session_lifetime: Duration,
    /// The most introduced sessions remembered per login session (connection) for `PRM`; the
    /// oldest are forgotten first (16).
    pub max_sessions_per_user: usize,
    /// The error answer that closes a connection (16).
    pub max_errors: u32,
    /// Failed logins that close a connection (3).
    pub max_login_failures: u32,
    /// Failed logins a source address (an IPv4 address, an IPv6 /64) may have outstanding
    /// before its new logins are refused with `800` (20).
    pub login_failure_burst: u32,
    /// How long one failed login counts against its source (6 s): after the burst, a source
    /// may try once per this interval.
    pub login_failure_refill: Duration,
    /// The longest contact list (1000).
    pub max_contacts: usize,
    /// The STUN service's address, for the `CFG` push.
    pub stun_addr: Option<SocketAddr>,
    /// The switchboard's address, for `CFG` and the `sb=` of `ITR`.
    pub switchboard_addr: Option<SocketAddr>,
    /// The SHA-256 fingerprint of the switchboard's TLS key, sent as `sbfp=` right after
    /// `sb=` in `CFG` and `ITR` (only when `switchboard_addr` is set too). The client accepts
    /// exactly that key from the switchboard.
    pub switchboard_fingerprint: Option<Fingerprint>,
    /// The most logged-in sessions this node serves; at the limit, `VER` and new logins are
    /// answered with `XFR` to another node (docs/PROTOCOL.md section 11). `None` (the
    /// default): no limit.
    pub max_sessions: Option<usize>,
    /// This node is one of a cluster: presence and list changes made here are announced
    /// ([`Output::Cluster`]) and other nodes' are taken in (`handle_remote_*`). Default false.
    pub cluster: bool,
}

impl Default for RendezvousConfig {
    fn default() -> Self {
        RendezvousConfig {
            registration_open: true,
            min_kdf: Kdf::default(),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            login_step_timeout: Duration::from_secs(30),
            invite_timeout: Duration::from_secs(30),
            punch_delay: Duration::from_millis(250),
            ticket_lifetime: Duration::from_secs(60),
            session_lifetime: Duration::from_secs(600),
            max_sessions_per_user: 16,
            max_errors: 16,
            max_login_failures: 3,
            login_failure_burst: 20,
            login_failure_refill: Duration::from_secs(6),
            max_contacts: 1000,
            stun_addr: None,
            switchboard_addr: None,
            switchboard_fingerprint: None,
            max_sessions: None,
            cluster: false,
        }
    }
}

/// Names one [`Output::Store`], for
/// [`handle_store_failed`](RendezvousServer::handle_store_failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId(pub u64);

/// What the core asks its driver to do, in causal order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Persist `op` BEFORE acting on any later output (the queue is in causal order). If the
    /// write fails, call [`handle_store_failed`](RendezvousServer::handle_store_failed) with
    /// `id` before polling again.
    Store {
        /// Names this write.
        id: StoreId,
        /// The change.
        op: StoreOp,
    },
    /// Send `line` on `conn`.
    Send {
        /// The connection.
        conn: ConnId,
        /// The line.
        line: Line,
    },
    /// Flush what was queued for conn, then close it. The core has forgotten conn.
    Close(ConnId),
    /// A switchboard ticket was issued (the driver hands it to the switchboard).
    Ticket(Ticket),
    /// Tell every other node of the cluster (only with [`RendezvousConfig::cluster`];
    /// docs/CLUSTER.md). Like a line, it is withdrawn if a store before it fails.
    Cluster(ClusterMessage),
}

/// A switchboard ticket: valid once, before `expires`, for `user` in `session` with `peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The 16 random bytes (hex on the wire).
    pub value: [u8; 16],
    /// The introduction it belongs to.
    pub session: SessionId,
    /// Whom it was issued to.
    pub user: UserName,
    /// The other peer of the introduction.
    pub peer: UserName,
    /// When it stops being valid.
    pub expires: Instant,
}

/// What the server has done since it started, for the driver's logs and metrics. Plain
/// integers the core bumps as it decides; the driver copies them out when it publishes its
/// other counts (the core reads no clock and shares nothing).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RendezvousCounters {
    /// Logins that ended with `USR OK`.
    pub logins_ok: u64,
    /// Logins refused with 911: a wrong password, an unknown user or a bad channel binding.
    pub logins_auth_failed: u64,
    /// Login attempts refused with 800 before any check: too many failures from the address.
    pub logins_throttled: u64,
    /// `USR` lines refused otherwise: malformed, out of order, or a step that came too late.
    pub logins_other: u64,
    /// Introductions made: `ITR` pairs sent, each with its two switchboard tickets.
    pub introductions: u64,
    /// `XFR` lines sent: clients sent to another node because this one was full or draining
    /// (answers to `VER` or a login, and the pushes of a drain).
    pub transfers: u64,
}

/// The rendezvous server's state machine. See the [module docs](self) for how to drive it.
pub struct RendezvousServer {
    config: RendezvousConfig,
    dir: Directory,
    conns: HashMap<ConnId, Conn>,
    intros: Introductions,
    sessions: Sessions,
    /// Outputs, each tagged with the step (input) that produced it.
    out: VecDeque<(u64, Output)>,
    rng: ChaCha20Rng,
    secret: [u8; 32],
    /// Users with at least one session.
    online: usize,
    /// Logged-in sessions (connections), over all users.
    sessions_online: usize,
    next_sweep: Option<Instant>,
    /// Counts inputs: every `handle_*` call is a step.
    step: u64,
    /// The connection and TrID of the line being handled (for a failed write's `500`).
    requester: Option<(ConnId, TrId)>,
    /// Writes of steps whose [`Output::Store`] may still fail, by step.
    writes: HashMap<u64, Write>,
    /// The step of the last store `poll_output` returned: it counts as written at the next
    /// `poll_output` unless reported failed first.
    popped_store: Option<u64>,
    /// Failed logins per source address.
    throttle: throttle::LoginThrottle,
    counters: RendezvousCounters,
    /// The other nodes a full or draining node sends clients to (`dispatch.rs`).
    peers: Vec<SocketAddr>,
    /// Set by [`handle_drain`](Self::handle_drain).
    draining: bool,
    /// What the other nodes of the cluster said about their users (`cluster.rs`).
    remote: cluster::Remote,
    /// Introductions that span nodes (`remote_intro.rs`).
    remote_intros: remote_intro::RemoteIntros,
}

/// An error answer a handler gives instead of its normal answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Refusal {
    code: u16,
    text: &'static str,
    /// Close the connection (after `OUT 0 ERR`) once the answer is sent.
    close: bool,
}

impl Refusal {
    const fn new(code: u16, text: &'static str) -> Refusal {
        Refusal {
            code,
            text,
            close: false,
        }
    }

    const fn closing(self) -> Refusal {
        Refusal {
            close: true,
            ..self
        }
    }
}

/// What a handler returns: `Err` is answered with the error line.
type Handled = Result<(), Refusal>;

const UNKNOWN_COMMAND: Refusal = Refusal::new(200, "unknown command");
const INVALID_PARAMETER: Refusal = Refusal::new(201, "invalid parameter");
const NO_SUCH_USER: Refusal = Refusal::new(205, "no such user");
const INVALID_USER_NAME: Refusal = Refusal::new(209, "invalid user name");
const LIST_FULL: Refusal = Refusal::new(210, "contact list full");
const ALREADY_CONTACT: Refusal = Refusal::new(215, "already a contact");
const NOT_A_CONTACT: Refusal = Refusal::new(216, "not a contact");
const NOT_BLOCKED: Refusal = Refusal::new(216, "not blocked");
const USER_OFFLINE: Refusal = Refusal::new(217, "user offline");
const ALREADY_BLOCKED: Refusal = Refusal::new(218, "already blocked");
const ALREADY_REPORTED: Refusal = Refusal::new(220, "already reported");
const CANNOT_ADD_SELF: Refusal = Refusal::new(219, "cannot add yourself");
const CANNOT_BLOCK_SELF: Refusal = Refusal::new(219, "cannot block yourself");
const NOT_LOGGED_IN: Refusal = Refusal::new(302, "not logged in");
const REGISTRATION_CLOSED: Refusal = Refusal::new(710, "registration is closed");
const NAME_TAKEN: Refusal = Refusal::new(711, "name taken");
const NOT_EXPECTED: Refusal = Refusal::new(715, "not expected now");
const WEAK_KDF: Refusal = Refusal::new(716, "KDF too weak or malformed");
const UNSUPPORTED_VERSION: Refusal = Refusal::new(731, "unsupported version");
const AUTH_FAILED: Refusal = Refusal::new(911, "authentication failed");
const TOO_MANY_FAILURES: Refusal = Refusal::new(
    800,
    "too many failed logins from your address; try again later",
);

impl RendezvousServer {
    /// `secret`: persisted by the driver (fake salts for unknown users must not change across
    /// restarts). `seed`: 32 bytes of OS randomness from the driver, for a ChaCha20 rng (nonces,
    /// session ids and tickets must be unpredictable).
    ///
    /// Contact and block pairs in `snapshot` that name unknown users are skipped.
    pub fn new(
        config: RendezvousConfig,
        snapshot: DirectorySnapshot,
        secret: [u8; 32],
        seed: [u8; 32],
    ) -> Self {
        RendezvousServer {
            config,
            dir: Directory::from_snapshot(snapshot),
            conns: HashMap::new(),
            intros: Introductions::default(),
            sessions: Sessions::default(),
            out: VecDeque::new(),
            rng: ChaCha20Rng::from_seed(seed),
            secret,
            online: 0,
            sessions_online: 0,
            next_sweep: None,
            step: 0,
            requester: None,
            writes: HashMap::new(),
            popped_store: None,
            throttle: throttle::LoginThrottle::default(),
            counters: RendezvousCounters::default(),
            peers: Vec::new(),
            draining: false,
            remote: cluster::Remote::default(),
            remote_intros: remote_intro::RemoteIntros::default(),
        }
    }

    /// The settings the server runs with.
    pub fn config(&self) -> &RendezvousConfig {
        &self.config
    }

    /// A new connection from `remote`, its TLS handshake done. It must send `VER` first. (A
    /// reused id replaces the old connection silently.)
    ///
    /// `binding`: the `tls-exporter` channel binding of the connection's TLS session, exported
    /// on the server's side ([`scram::TLS_EXPORTER_LABEL`](super::scram::TLS_EXPORTER_LABEL),
    /// 32 bytes, no context). The login's last step checks the client's `c=` against it.
    pub fn handle_connected(
        &mut self,
        now: Instant,
        conn: ConnId,
        remote: SocketAddr,
        binding: ChannelBinding,
    ) {
        self.step += 1;
        if self.conns.contains_key(&conn) {
            self.forget(conn);
        }
        self.conns
            .insert(conn, Conn::new(now, remote.ip(), binding));
        self.schedule_sweep(now);
    }

    /// One decoded line from `conn`. Lines for unknown connections are ignored.
    pub fn handle_line(&mut self, now: Instant, conn: ConnId, line: Line) {
        self.step += 1;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.heard(now);
        self.requester = Some((conn, line.trid));
        if let Err(refusal) = self.dispatch(now, conn, &line) {
            self.refuse(conn, line.trid, refusal);
        }
        self.requester = None;
    }

    /// A line the framing refused (wire::decode error). Fatal ones close the connection after
    /// the documented answer.
    pub fn handle_frame_error(&mut self, now: Instant, conn: ConnId, error: FrameError) {
        self.step += 1;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.heard(now);
        let refusal = match error {
            FrameError::Syntax(_) => Refusal::new(200, "syntax error"),
            FrameError::LineTooLong => Refusal::new(200, "line too long").closing(),
            _ => Refusal::new(200, "payload not allowed").closing(),
        };
        self.refuse(conn, TrId::PUSH, refusal);
    }

    /// The TCP connection is gone (also for conns the core already closed: ignore unknown ids).
    /// Its session ends at once (its user shows as offline if no other session is visible).
    pub fn handle_disconnected(&mut self, now: Instant, conn: ConnId) {
        let _ = now;
        self.step += 1;
        self.forget(conn);
    }

    /// The driver's outgoing queue for `conn` overflowed: drop it as if disconnected (no more
    /// output for it except Close). Lines for it still in the core's queue are discarded.
    pub fn handle_overflow(&mut self, now: Instant, conn: ConnId) {
        let _ = now;
        self.step += 1;
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.out
            .retain(|(_, o)| !matches!(o, Output::Send { conn: c, .. } if *c == conn));
        self.close(conn, None);
    }

    /// An account added to the store behind the running server's back (operator CLI
    /// `stun-server user add`). An existing account of that name gets the new credentials.
    pub fn handle_user_added(&mut self, record: UserRecord) {
        self.dir.upsert(record);
    }

    /// Server shutting down: `OUT 0 SSD` then Close for every connection.
    pub fn handle_shutdown(&mut self, now: Instant) {
        let _ = now;
        self.step += 1;
        let mut ids: Vec<ConnId> = self.conns.keys().copied().collect();
        ids.sort_unstable();
        for conn in ids {
            self.send(conn, out_line("SSD"));
            self.push(Output::Close(conn));
        }
        self.conns.clear();
        self.dir.all_offline();
        self.remote = cluster::Remote::default();
        self.clear_remote_intros();
        self.intros = Introductions::default();
        self.clear_sessions();
        self.online = 0;
        self.sessions_online = 0;
        self.next_sweep = None;
    }

    /// The next thing the driver must do, in causal order. A store returned by the previous
    /// call counts as written from now on (see the [module docs](self)).
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(step) = self.popped_store.take() {
            self.writes.remove(&step);
        }
        let (step, output) = self.out.pop_front()?;
        if matches!(output, Output::Store { .. }) {
            self.popped_store = Some(step);
        }
        Some(output)
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Logged-in users (with at least one session).
    pub fn online_count(&self) -> usize {
        self.online
    }

    /// Logins by outcome and introductions, since start.
    pub fn counters(&self) -> &RendezvousCounters {
        &self.counters
    }

    /// Logged-in sessions: a user logged in from two devices counts twice.
    pub fn session_count(&self) -> usize {
        self.sessions_online
    }

    /// Invitations waiting for `ANS` or `DEC`.
    pub fn pending_introductions(&self) -> usize {
        self.intros.len()
    }

    /// Sends `line` to `conn`; a session on another node gets it through its node.
    fn send(&mut self, conn: ConnId, line: Line) {
        if let Some((node, remote)) = self.remote_intros.remote_of(conn) {
            let message = Routed::Deliver { conn: remote, line };
            self.announce(ClusterMessage::ToNode { node, message });
            return;
        }
        self.push(Output::Send { conn, line });
    }

    /// Queues an output of the current step.
    fn push(&mut self, output: Output) {
        self.out.push_back((self.step, output));
    }

    /// Sends the error answer, counts it if it is a protocol error (a client that sends
    /// malformed or out-of-place lines), and closes the connection if the refusal or the error
    /// budget says so. Ordinary refusals (no such user, already a contact, ...) are not
    /// counted: a well-behaved client may meet any number of them.
    fn refuse(&mut self, conn: ConnId, trid: TrId, refusal: Refusal) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if matches!(refusal.code, 200 | 201 | 302 | 715) {
            c.errors = c.errors.saturating_add(1);
        }
        let exhausted = c.errors >= self.config.max_errors;
        self.send(conn, Line::error(refusal.code, trid, refusal.text));
        if refusal.close || exhausted {
            self.close(conn, Some("ERR"));
        }
    }

    fn random<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.rng.fill_bytes(&mut out);
        out
    }
}

/// `OUT 0 REASON`.
fn out_line(reason: &str) -> Line {
    Line::new("OUT", TrId::PUSH, [reason.to_owned()])
}
