//! The rendezvous server's driver: TCP, tasks, timers, the SQLite store and shutdown around the
//! sans-IO core [`shared::rendezvous::RendezvousServer`] (docs/PROTOCOL.md).
//!
//! ```no_run
//! use p2p_servers::rendezvous::{RendezvousHandle, RendezvousOptions};
//! let server = RendezvousHandle::start(RendezvousOptions {
//!     listen: "127.0.0.1:0".parse()?,
//!     db_path: std::env::temp_dir().join("rendezvous-example.db"),
//!     ..RendezvousOptions::default()
//! })?;
//! println!("rendezvous listening on {}", server.local_addr());
//! server.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # On whose runtime
//! [`run`] (or [`BoundRendezvous::run`], to learn the bound address first or wire a
//! switchboard) serves on the caller's tokio runtime until a shutdown future completes,
//! mini-redis style, so a program can embed the server:
//!
//! ```no_run
//! # async fn example() -> Result<(), p2p_servers::RendezvousError> {
//! use p2p_servers::rendezvous::{BoundRendezvous, RendezvousOptions};
//! let server = BoundRendezvous::bind(RendezvousOptions::default(), None)?;
//! println!("rendezvous listening on {}", server.local_addr());
//! server.run(async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await;
//! # Ok(()) }
//! ```
//!
//! [`RendezvousHandle::start`] is a thin wrapper that runs the same on a multi-threaded runtime
//! of its own (at most four workers) and stops it when the handle is shut down or dropped.
//!
//! # Architecture
//! One task owns the protocol core and the database. Every accepted connection first runs its TLS 1.3 handshake in a task of its own
//! (with a deadline), then is registered with the core together with its `tls-exporter`
//! channel binding (the login's SCRAM exchange is bound to it); from then on it has a reader
//! task (frames lines, forwards them to the core task over one shared bounded channel) and a
//! writer task fed by bounded pending output (64 KiB, then
//! [`RendezvousOptions::max_queued_lines`] more lines). The core task never waits for a
//! client: full pending output (behind full socket and TLS buffers) disconnects that client.
//! Store operations are written to SQLite before any later line is queued, so an answer never
//! promises what a crash could forget; a write SQLite refuses is reported to the core, which
//! answers `500 TrID internal server error` instead of the success answer, sends none of the
//! pushes it would have caused, and forgets the change.

mod cluster;
mod cluster_connect;
mod connection;
mod driver;
mod membership;
mod snapshot_parts;
mod store;
mod tickets;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use rand::RngCore;
use shared::rendezvous::server::NodeState;
use shared::rendezvous::{RendezvousConfig, RendezvousServer};
use tokio::sync::{mpsc, oneshot};

pub use cluster_connect::ClusterConnect;
pub use codecs::line::{CodecError, LineCodec, Side};
pub use store::{
    PostgresStore, PostgresUrl, SCHEMA_VERSION, SqliteStore, Store, StoreError, StoreLocation,
    StoreUrlError, UserSummary,
};
pub use tickets::TicketBook;

use crate::switchboard::TicketGranter;
use crate::tls::ServerTls;
pub(crate) use driver::Counts;
use driver::{Driver, TicketSinks};

/// The rendezvous port (MSN's notification server port).
pub const DEFAULT_RENDEZVOUS_PORT: u16 = 1863;
/// Outgoing lines queued per connection, beyond 64 KiB of pending output, before a client
/// counts as too slow.
pub const DEFAULT_MAX_QUEUED_LINES: usize = 256;

/// Where the database lives by default: `$XDG_DATA_HOME/p2p-toolkit/rendezvous.db`, else
/// `$HOME/.local/share/p2p-toolkit/rendezvous.db`, else `./rendezvous.db`.
pub fn default_db_path() -> PathBuf {
    let env_dir = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(data) = env_dir("XDG_DATA_HOME") {
        return data.join("p2p-toolkit").join("rendezvous.db");
    }
    if let Some(home) = env_dir("HOME") {
        return home
            .join(".local")
            .join("share")
            .join("p2p-toolkit")
            .join("rendezvous.db");
    }
    PathBuf::from("rendezvous.db")
}

/// Everything needed to start a [`RendezvousHandle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RendezvousOptions {
    /// Address to listen on; port 0 picks a free one (see [`RendezvousHandle::local_addr`]).
    pub listen: SocketAddr,
    /// The SQLite database, created with its parent directories if missing; unused when
    /// [`postgres`](Self::postgres) is set.
    pub db_path: PathBuf,
    /// A PostgreSQL database to keep the state in instead of the SQLite file (`--store`).
    pub postgres: Option<PostgresUrl>,
    /// The protocol core's settings.
    pub config: RendezvousConfig,
    /// Outgoing lines queued per connection beyond 64 KiB of pending output; a client whose
    /// queue is full is disconnected.
    pub max_queued_lines: usize,
    /// The certificate and TLS settings (the default: [`ServerTls::ephemeral`], a new key on
    /// every start). [`crate::services::start`] gives the switchboard the same one.
    pub tls: ServerTls,
    /// The other nodes of the cluster a full or draining node sends clients to (`XFR`,
    /// docs/CLUSTER.md); [`NodeControl::set_peer_nodes`] replaces them while it runs.
    pub peer_nodes: Vec<SocketAddr>,
    /// The NATS server of the cluster (`--cluster` and its TLS and password options):
    /// presence and list changes cross nodes, and the live nodes join the peer list
    /// (docs/CLUSTER.md).
    pub cluster: Option<ClusterConnect>,
}

impl RendezvousOptions {
    /// The database the server keeps its state in: [`postgres`](Self::postgres) if set, else
    /// the SQLite file at [`db_path`](Self::db_path).
    pub fn store_location(&self) -> StoreLocation {
        match &self.postgres {
            Some(url) => StoreLocation::Postgres(url.clone()),
            None => StoreLocation::Sqlite(self.db_path.clone()),
        }
    }
}

impl Default for RendezvousOptions {
    /// 127.0.0.1:1863, [`default_db_path`], the core's defaults, 256 queued lines, an
    /// ephemeral self-signed certificate.
    fn default() -> Self {
        RendezvousOptions {
            listen: SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::LOCALHOST,
                DEFAULT_RENDEZVOUS_PORT,
            )),
            db_path: default_db_path(),
            postgres: None,
            config: RendezvousConfig::default(),
            max_queued_lines: DEFAULT_MAX_QUEUED_LINES,
            tls: ServerTls::ephemeral().expect("an in-memory certificate can be generated"),
            peer_nodes: Vec::new(),
            cluster: None,
        }
    }
}

/// Why the rendezvous server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RendezvousError {
    /// The options contradict each other.
    #[error("{0}")]
    Invalid(String),
    /// The database could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listening socket could not be bound.
    #[error("cannot bind the rendezvous listener on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The system error (not a `source`: it is part of this message).
        error: std::io::Error,
    },
    /// Threads or the runtime could not be created.
    #[error("cannot start the rendezvous server: {0}")]
    Io(std::io::Error),
}

/// A rendezvous server with its database open and its listener bound, not serving yet:
/// [`BoundRendezvous::run`] serves it on the caller's tokio runtime (the embedding entry point;
/// [`run`] binds and serves in one call). [`RendezvousHandle::start`] runs one on a runtime of
/// its own.
pub struct BoundRendezvous {
    driver: Driver,
    channels: driver::Channels,
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    db_path: PathBuf,
    fingerprint: shared::identity::Fingerprint,
    tickets: TicketBook,
    counts: Arc<Counts>,
    control: NodeControl,
}

impl std::fmt::Debug for BoundRendezvous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundRendezvous")
            .field("local_addr", &self.local_addr)
            .field("db_path", &self.db_path)
            .finish_non_exhaustive()
    }
}

impl BoundRendezvous {
    /// Opens the database and binds `options.listen`; tickets introductions issue are also
    /// granted to the switchboard behind `granter`, if any (see
    /// [`RendezvousHandle::start_with_switchboard`]).
    pub fn bind(
        options: RendezvousOptions,
        granter: Option<TicketGranter>,
    ) -> Result<BoundRendezvous, RendezvousError> {
        BoundRendezvous::new(options, granter, bind_listener)
    }

    /// Like [`bind`](Self::bind), on a listener the caller bound (`options.listen` is
    /// ignored); it is made non-blocking here.
    pub fn with_listener(
        options: RendezvousOptions,
        listener: std::net::TcpListener,
        granter: Option<TicketGranter>,
    ) -> Result<BoundRendezvous, RendezvousError> {
        BoundRendezvous::new(options, granter, |_| Ok(listener))
    }

    /// Checks the options, opens the database, and only then gets the listener (so a bad
    /// database is reported before a busy port).
    fn new(
        options: RendezvousOptions,
        granter: Option<TicketGranter>,
        listener: impl FnOnce(SocketAddr) -> Result<std::net::TcpListener, RendezvousError>,
    ) -> Result<BoundRendezvous, RendezvousError> {
        if options.max_queued_lines == 0 {
            return Err(RendezvousError::Invalid(
                "max_queued_lines must be at least 1".into(),
            ));
        }
        let store = Store::open_location(&options.store_location())?;
        let snapshot = store.load()?;
        let last_rowid = store.max_user_rowid()?;
        let listener = listener(options.listen)?;
        listener
            .set_nonblocking(true)
            .map_err(RendezvousError::Io)?;
        let local_addr = listener.local_addr().map_err(RendezvousError::Io)?;
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        let cluster = options.cluster.clone().map(|connect| driver::ClusterSpec {
            connect,
            advertise: local_addr,
            static_peers: options.peer_nodes.clone(),
        });
        let mut config = options.config;
        config.cluster = cluster.is_some();
        let mut core = RendezvousServer::new(config, snapshot, store.secret(), seed);
        // Reading the directory left its rows and the snapshot freed but held by the
        // allocator (with 100,000 users and 2,000,000 contacts, 170 of a node's 245 MiB).
        crate::return_freed_memory();
        core.handle_peer_nodes(options.peer_nodes);
        let tickets = TicketBook::new();
        let counts = Arc::new(Counts::default());
        let acceptor = tokio_rustls::TlsAcceptor::from(options.tls.config().clone());
        let (driver, channels, control) = Driver::new(
            core,
            store,
            acceptor,
            TicketSinks {
                book: tickets.clone(),
                switchboard: granter,
            },
            counts.clone(),
            options.max_queued_lines,
            last_rowid,
            cluster,
        );
        Ok(BoundRendezvous {
            driver,
            channels,
            listener,
            local_addr,
            db_path: options.db_path,
            fingerprint: options.tls.fingerprint(),
            tickets,
            counts,
            control: NodeControl(control),
        })
    }

    /// Drains the node and sets its peer nodes while it runs.
    pub fn control(&self) -> NodeControl {
        self.control.clone()
    }

    /// The address the server listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The fingerprint of the server's TLS key, what clients pin.
    pub fn fingerprint(&self) -> shared::identity::Fingerprint {
        self.fingerprint
    }

    /// The switchboard tickets it will issue (shared with the running server).
    pub fn tickets(&self) -> &TicketBook {
        &self.tickets
    }

    /// Serves until `shutdown` completes; then every client gets `OUT 0 SSD`, queued lines are
    /// flushed (for a few seconds at most) and connections are closed. Must be awaited inside a
    /// tokio runtime with I/O and time enabled; connection tasks are spawned on it (a
    /// multi-threaded one lets TLS handshakes and connections run beside the core task).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        self.driver
            .run(self.listener, self.channels, shutdown)
            .await;
    }
}

/// Opens the database, binds `options.listen` and serves on the caller's runtime until
/// `shutdown` completes (see [`BoundRendezvous`] to learn the bound address first, or to hand
/// tickets to a switchboard).
pub async fn run(
    options: RendezvousOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RendezvousError> {
    BoundRendezvous::bind(options, None)?.run(shutdown).await;
    Ok(())
}

/// Drains a running node and tells it the other nodes of its cluster (docs/CLUSTER.md). Cheap
/// to clone; a call on a node that has stopped does nothing.
#[derive(Clone, Debug)]
pub struct NodeControl(mpsc::UnboundedSender<driver::Control>);

impl NodeControl {
    /// Starts draining: `VER` and new logins are answered with `XFR` to a peer node, and every
    /// logged-in session gets the push `XFR 0 NS ip:port draining` (docs/PROTOCOL.md section
    /// 11). The node keeps serving the sessions that have not moved yet; stopping it (when
    /// [`RendezvousHandle::connection_count`] is 0, or after a drain period) is the caller's.
    pub fn drain(&self) {
        let _ = self.0.send(driver::Control::Drain);
    }

    /// Replaces the list of other nodes clients may be sent to (the static `--peer-node` list
    /// today; cluster membership can feed the same call later).
    pub fn set_peer_nodes(&self, peers: Vec<SocketAddr>) {
        let _ = self.0.send(driver::Control::PeerNodes(peers));
    }
}

/// A running rendezvous server. Dropping it shuts the server down, as does
/// [`RendezvousHandle::shutdown`]: every client gets `OUT 0 SSD`, queued lines are flushed
/// (for a few seconds at most) and connections are closed.
#[derive(Debug)]
pub struct RendezvousHandle {
    local_addr: SocketAddr,
    db_path: PathBuf,
    fingerprint: shared::identity::Fingerprint,
    tickets: TicketBook,
    counts: Arc<Counts>,
    control: NodeControl,
    stop: Option<oneshot::Sender<()>>,
    running: Option<Running>,
}

/// Where a handle's server runs, to wait for it to finish.
#[derive(Debug)]
enum Running {
    /// On its own runtime, on this thread.
    Thread(JoinHandle<()>),
    /// As a task on someone else's runtime, which says so when it ends.
    Task(std::sync::mpsc::Receiver<()>),
}

impl RendezvousHandle {
    /// Opens the database, binds the listener and starts serving. Returns once the listener is
    /// bound, so clients may connect right away. The switchboard tickets introductions issue are
    /// only kept in [`tickets`](Self::tickets); see
    /// [`start_with_switchboard`](Self::start_with_switchboard) to hand them to a switchboard.
    pub fn start(options: RendezvousOptions) -> Result<RendezvousHandle, RendezvousError> {
        RendezvousHandle::start_with_switchboard(options, None)
    }

    /// [`start`](Self::start), and every ticket an introduction issues is also granted to the
    /// switchboard behind `granter` (before the `ITR` lines that name it are sent), so the two
    /// peers can redeem it there. The switchboard's address for `CFG` and `ITR` is
    /// `options.config.switchboard_addr`; [`crate::services::start`] wires both for you.
    pub fn start_with_switchboard(
        options: RendezvousOptions,
        granter: Option<TicketGranter>,
    ) -> Result<RendezvousHandle, RendezvousError> {
        let bound = BoundRendezvous::bind(options, granter)?;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("rendezvous")
            .enable_all()
            .build()
            .map_err(RendezvousError::Io)?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let mut handle = RendezvousHandle {
            local_addr: bound.local_addr,
            db_path: bound.db_path.clone(),
            fingerprint: bound.fingerprint,
            tickets: bound.tickets.clone(),
            counts: bound.counts.clone(),
            control: bound.control.clone(),
            stop: Some(stop_tx),
            running: None,
        };
        let thread = std::thread::Builder::new()
            .name("rendezvous-core".into())
            .spawn(move || {
                // A dropped sender stops the server too.
                runtime.block_on(bound.run(async move {
                    let _ = stop_rx.await;
                }));
                // Readers still lingering on closed connections are dropped here.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(RendezvousError::Io)?;
        handle.running = Some(Running::Thread(thread));
        Ok(handle)
    }

    /// [`start_with_switchboard`](Self::start_with_switchboard), but served as a task on the
    /// caller's multi-threaded runtime (`runtime`) instead of a runtime of its own: how the
    /// binary runs it. [`shutdown`](Self::shutdown) (or dropping the handle) then blocks until
    /// the task has finished, so call it outside that runtime's worker threads.
    pub fn spawn_on(
        runtime: &tokio::runtime::Handle,
        options: RendezvousOptions,
        granter: Option<TicketGranter>,
    ) -> Result<RendezvousHandle, RendezvousError> {
        let bound = BoundRendezvous::bind(options, granter)?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let handle = RendezvousHandle {
            local_addr: bound.local_addr,
            db_path: bound.db_path.clone(),
            fingerprint: bound.fingerprint,
            tickets: bound.tickets.clone(),
            counts: bound.counts.clone(),
            control: bound.control.clone(),
            stop: Some(stop_tx),
            running: Some(Running::Task(done_rx)),
        };
        runtime.spawn(async move {
            bound
                .run(async move {
                    let _ = stop_rx.await;
                })
                .await;
            let _ = done_tx.send(());
        });
        Ok(handle)
    }

    /// The address the server listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// The fingerprint of the server's TLS key, what clients pin.
    pub fn fingerprint(&self) -> shared::identity::Fingerprint {
        self.fingerprint
    }

    /// TLS handshakes that failed or timed out so far (never answered, logged at debug level).
    pub fn failed_handshakes(&self) -> u64 {
        self.counts.failed_handshakes.load(Ordering::Relaxed)
    }

    /// The switchboard tickets issued so far (shared with the running server).
    pub fn tickets(&self) -> &TicketBook {
        &self.tickets
    }

    /// Users added by the operator (`stun-server user add`) while the server ran and picked up
    /// from the database since. The pick-up runs on a timer; this is how an embedder (or a
    /// test) sees that it happened, instead of guessing a delay.
    pub fn users_added_by_operator(&self) -> u64 {
        self.counts.operator_users.load(Ordering::Relaxed)
    }

    /// Open connections, as of the core task's last step.
    pub fn connection_count(&self) -> usize {
        self.counts.connections.load(Ordering::Relaxed)
    }

    /// Logged-in users, as of the core task's last step.
    pub fn online_count(&self) -> usize {
        self.counts.online.load(Ordering::Relaxed)
    }

    /// Logins by outcome and introductions so far, as of the core task's last step.
    pub fn counters(&self) -> shared::rendezvous::RendezvousCounters {
        self.counts.core()
    }

    /// Logged-in sessions, as of the core task's last step.
    pub fn session_count(&self) -> usize {
        self.counts.sessions.load(Ordering::Relaxed)
    }

    /// Whether the node is ready or draining.
    pub fn node_state(&self) -> NodeState {
        if self.counts.draining.load(Ordering::Relaxed) {
            NodeState::Draining
        } else {
            NodeState::Ready
        }
    }

    /// Starts draining the node, or sets its peer nodes (see [`NodeControl`]).
    pub fn control(&self) -> &NodeControl {
        &self.control
    }

    /// The live counts, for the metrics endpoint (which outlives borrows of the handle).
    pub(crate) fn counts(&self) -> Arc<Counts> {
        self.counts.clone()
    }

    /// Says goodbye to every client, flushes, closes, and waits for the server's threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.running.take() {
            Some(Running::Thread(thread)) => {
                let joined = thread.join();
                if joined.is_err() {
                    tracing::error!("the rendezvous server thread panicked");
                }
            }
            // A dropped sender (the task panicked or its runtime went away) ends the wait too.
            Some(Running::Task(done)) => {
                let _ = done.recv();
            }
            None => {}
        }
    }
}

impl Drop for RendezvousHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds a non-blocking listener with a deep accept queue (many clients connect at once after
/// a restart).
fn bind_listener(addr: SocketAddr) -> Result<std::net::TcpListener, RendezvousError> {
    use socket2::{Domain, Socket, Type};
    let wrap = |error| RendezvousError::Bind { addr, error };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(wrap)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(wrap)?;
    }
    socket.set_reuse_address(true).map_err(wrap)?;
    socket.bind(&addr.into()).map_err(wrap)?;
    socket.listen(4096).map_err(wrap)?;
    socket.set_nonblocking(true).map_err(wrap)?;
    Ok(socket.into())
}
