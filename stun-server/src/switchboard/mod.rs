//! The switchboard relay's driver (MSN's switchboard, port 1865): TCP, tasks and timers around
//! the sans-IO core in [`shared::switchboard`], whose docs give the wire format and the rules.
//!
//! ```no_run
//! use p2p_servers::switchboard::{SwitchboardHandle, SwitchboardOptions};
//! let sb = SwitchboardHandle::start(SwitchboardOptions::default())?; // 127.0.0.1:1865
//! println!("switchboard on {}", sb.local_addr());
//! let granter = sb.granter(); // give this to the rendezvous driver: granter.grant(ticket)
//! let stats = sb.shutdown();
//! # drop(granter);
//! # Ok::<(), p2p_servers::switchboard::SwitchboardError>(())
//! ```
//!
//! # On whose runtime
//! [`run`] (or [`BoundSwitchboard::run`], to learn the address and hand out the
//! [`TicketGranter`] first) serves on the caller's tokio runtime until a shutdown future
//! completes, mini-redis style, so a program can embed the switchboard:
//!
//! ```no_run
//! # async fn example() -> Result<(), p2p_servers::switchboard::SwitchboardError> {
//! use p2p_servers::switchboard::{BoundSwitchboard, SwitchboardOptions};
//! let sb = BoundSwitchboard::bind(SwitchboardOptions::default())?;
//! let granter = sb.granter(); // for the rendezvous server
//! sb.run(async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await;
//! # drop(granter); Ok(()) }
//! ```
//!
//! [`SwitchboardHandle::start`] is a thin wrapper that runs the same on a current-thread runtime
//! on a thread of its own, which is what the binary and the tests use: on one thread the core's
//! mutex is never contended by the relay path itself (only by ticket grants), which is the
//! design the relay's throughput figures in docs/BENCHMARKS.md were measured with. Embedded in a
//! multi-threaded runtime it works the same, but readers on different workers then take turns
//! at the mutex.
//!
//! # Tasks
//! An accept task, a timer task, and a reader and a writer task per connection. Connections speak TLS 1.3 from the first byte:
//! each runs its handshake in a task of its own (with a deadline) before the core hears of
//! it; a failed handshake is counted ([`RelayStats::failed_handshakes`]) and never answered. Readers decode everything one read returned and
//! hand it to the core in one step; the core's outputs go straight into the connections'
//! outgoing queues. Each queue is bounded in bytes ([`SwitchboardOptions::max_queued_bytes`]):
//! a `DATA` frame that does not fit is dropped, as a router drops a datagram (what the clients
//! relay are datagrams: their sessions retransmit, QUIC slows down), and the frame is counted
//! ([`RelayStats::queue_dropped`]); a control frame that does not fit, or writes that stall for
//! [`SwitchboardOptions::write_timeout`], disconnect the connection as a slow reader (its peer
//! gets `PEER_LEFT`), so it never holds up anyone else. Relayed payloads are never copied on their
//! way through: the reader splits them off its receive buffer as `Bytes`, and the writer sends
//! large ones by reference in a vectored write (small ones are gathered into one run).

mod batch;
mod driver;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use shared::rendezvous::Ticket;
use shared::switchboard::{ConfigError, Switchboard, SwitchboardConfig, SwitchboardStats};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use crate::tls::ServerTls;

pub use codecs::switchboard::{CodecError, SbCodec};
use driver::{DriverLimits, Shared};

/// The switchboard port (MSN's).
pub const DEFAULT_SWITCHBOARD_PORT: u16 = 1865;

/// Everything needed to start a [`SwitchboardHandle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchboardOptions {
    /// Where to listen; port 0 picks a free one (see [`SwitchboardHandle::local_addr`]).
    pub listen: SocketAddr,
    /// The core's limits and timeouts.
    pub config: SwitchboardConfig,
    /// Most simultaneous connections; more are closed on accept (10,000).
    pub max_connections: usize,
    /// Outgoing bytes queued per connection before it counts as a slow reader (1 MiB).
    pub max_queued_bytes: usize,
    /// A write that makes no complete progress for this long disconnects the reader (10 s).
    pub write_timeout: Duration,
    /// The certificate and TLS settings (the default: [`ServerTls::ephemeral`], a new key on
    /// every start); [`crate::services::start`] replaces it with the rendezvous's.
    pub tls: ServerTls,
}

impl Default for SwitchboardOptions {
    /// 127.0.0.1:1865 with the core's default limits and an ephemeral self-signed
    /// certificate.
    fn default() -> Self {
        SwitchboardOptions {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_SWITCHBOARD_PORT)),
            config: SwitchboardConfig::default(),
            max_connections: 10_000,
            max_queued_bytes: 1 << 20,
            write_timeout: Duration::from_secs(10),
            tls: ServerTls::ephemeral().expect("an in-memory certificate can be generated"),
        }
    }
}

/// Why a switchboard did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwitchboardError {
    /// The core refused the configuration.
    #[error("invalid switchboard configuration: {0}")]
    Config(#[from] ConfigError),
    /// The options contradict each other.
    #[error("invalid switchboard options: {0}")]
    Options(&'static str),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said (not a `source`: it is part of this message).
        error: std::io::Error,
    },
    /// The thread or runtime could not be created.
    #[error("cannot start the switchboard: {0}")]
    Io(#[from] std::io::Error),
}

/// Counters of a running or stopped switchboard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// The core's counters.
    pub core: SwitchboardStats,
    /// Connections dropped because a control frame did not fit their queue or their writes
    /// stalled.
    pub slow_readers: u64,
    /// `DATA` frames dropped because the receiving connection's queue was full (a fast
    /// sender outrunning its peer's link: the datagram semantics of the relay).
    pub queue_dropped: u64,
    /// Connections closed on accept because [`SwitchboardOptions::max_connections`] were open.
    pub over_limit: u64,
    /// TLS handshakes that failed or timed out.
    pub failed_handshakes: u64,
    /// Connections open now.
    pub open_connections: usize,
    /// Sessions that have a ticket or a connection now.
    pub sessions: usize,
}

/// Hands tickets to a running switchboard. Cheap to clone, callable from any thread or runtime
/// (it takes a mutex for a moment and never blocks on I/O).
#[derive(Clone)]
pub struct TicketGranter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TicketGranter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketGranter").finish_non_exhaustive()
    }
}

impl TicketGranter {
    /// Makes `ticket` redeemable (the rendezvous issued it in an introduction).
    pub fn grant(&self, ticket: Ticket) {
        self.shared.step(|core, _| core.handle_ticket(ticket));
    }
}

/// Reads a running switchboard's counters from any thread: they are current, read under the
/// core's lock for a moment.
#[derive(Clone)]
pub(crate) struct RelayStatsSource(Arc<Shared>);

impl std::fmt::Debug for RelayStatsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayStatsSource").finish_non_exhaustive()
    }
}

impl RelayStatsSource {
    /// The counters now.
    pub(crate) fn stats(&self) -> RelayStats {
        let shared = &self.0;
        let state = shared.lock();
        RelayStats {
            core: *state.core.stats(),
            slow_readers: shared.counts.slow_readers.load(Ordering::Relaxed),
            queue_dropped: shared.counts.queue_dropped.load(Ordering::Relaxed),
            over_limit: shared.counts.over_limit.load(Ordering::Relaxed),
            failed_handshakes: shared.counts.failed_handshakes.load(Ordering::Relaxed),
            open_connections: state.core.connection_count(),
            sessions: state.core.session_count(),
        }
    }
}

/// A running switchboard. Dropping it shuts it down, as does [`SwitchboardHandle::shutdown`].
pub struct SwitchboardHandle {
    local_addr: SocketAddr,
    fingerprint: shared::identity::Fingerprint,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SwitchboardHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwitchboardHandle")
            .field("local_addr", &self.local_addr)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// A switchboard with its listener bound, not serving yet: [`BoundSwitchboard::run`] serves it
/// on the caller's tokio runtime (the embedding entry point; [`run`] binds and serves in one
/// call). [`SwitchboardHandle::start`] runs one on a thread of its own.
pub struct BoundSwitchboard {
    listener: std::net::TcpListener,
    local_addr: SocketAddr,
    fingerprint: shared::identity::Fingerprint,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BoundSwitchboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundSwitchboard")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl BoundSwitchboard {
    /// Checks the options and binds `options.listen` (synchronously: clients may connect as
    /// soon as this returns; they are accepted once [`run`](Self::run) runs).
    pub fn bind(options: SwitchboardOptions) -> Result<BoundSwitchboard, SwitchboardError> {
        let listener = bind(options.listen).map_err(|error| SwitchboardError::Bind {
            addr: options.listen,
            error,
        })?;
        BoundSwitchboard::with_listener(options, listener)
    }

    /// Like [`bind`](Self::bind), on a listener the caller bound (`options.listen` is ignored);
    /// it is made non-blocking here.
    pub fn with_listener(
        options: SwitchboardOptions,
        listener: std::net::TcpListener,
    ) -> Result<BoundSwitchboard, SwitchboardError> {
        let core = Switchboard::new(options.config.clone())?;
        if options.max_connections == 0 {
            return Err(SwitchboardError::Options(
                "max_connections must be at least 1",
            ));
        }
        if options.max_queued_bytes < options.config.max_data + 64 {
            return Err(SwitchboardError::Options(
                "max_queued_bytes must hold at least one largest frame",
            ));
        }
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let limits = DriverLimits {
            max_connections: options.max_connections,
            max_queued_bytes: options.max_queued_bytes,
            write_timeout: options.write_timeout,
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(options.tls.config().clone());
        Ok(BoundSwitchboard {
            listener,
            local_addr,
            fingerprint: options.tls.fingerprint(),
            shared: Arc::new(Shared::new(core, limits, acceptor)),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The fingerprint of the switchboard's TLS key, what clients are told (`sbfp=`).
    pub fn fingerprint(&self) -> shared::identity::Fingerprint {
        self.fingerprint
    }

    /// A cloneable handle that grants tickets, for the rendezvous driver.
    pub fn granter(&self) -> TicketGranter {
        TicketGranter {
            shared: self.shared.clone(),
        }
    }

    /// Serves until `shutdown` completes, then sends `ERROR 503` to every connection, waits
    /// briefly for it to be flushed, and returns. Must be awaited inside a tokio runtime with
    /// I/O and time enabled; connection tasks are spawned on it.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let listener = match tokio::net::TcpListener::from_std(self.listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot use the switchboard listener");
                return;
            }
        };
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(self.shared.clone().run_timer(stop_rx.clone()));
        let accept = self.shared.run_accept(listener, stop_rx);
        tokio::pin!(accept);
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut accept => return,
            () = &mut shutdown => {}
        }
        let _ = stop.send(true);
        accept.await;
    }
}

/// Binds `options.listen` and serves on the caller's runtime until `shutdown` completes (see
/// [`BoundSwitchboard`] to learn the bound address or grant tickets before serving).
pub async fn run(
    options: SwitchboardOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SwitchboardError> {
    BoundSwitchboard::bind(options)?.run(shutdown).await;
    Ok(())
}

impl SwitchboardHandle {
    /// Binds the listener (synchronously: clients may connect as soon as this returns) and
    /// serves it ([`BoundSwitchboard::run`]) on a current-thread runtime on a thread of its own.
    pub fn start(options: SwitchboardOptions) -> Result<SwitchboardHandle, SwitchboardError> {
        let bound = BoundSwitchboard::bind(options)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (local_addr, fingerprint, shared) =
            (bound.local_addr, bound.fingerprint, bound.shared.clone());
        let (stop, mut stop_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("switchboard".into())
            .spawn(move || {
                runtime.block_on(bound.run(async move {
                    let _ = stop_rx.wait_for(|stopped| *stopped).await;
                }));
                // Dropping the runtime cancels the tasks still running.
            })?;
        tracing::debug!(%local_addr, "switchboard listening");
        Ok(SwitchboardHandle {
            local_addr,
            fingerprint,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The fingerprint of the switchboard's TLS key, what clients are told (`sbfp=`).
    pub fn fingerprint(&self) -> shared::identity::Fingerprint {
        self.fingerprint
    }

    /// Makes `ticket` redeemable. See [`TicketGranter`] for a cloneable handle to the same.
    pub fn grant(&self, ticket: Ticket) {
        self.granter().grant(ticket);
    }

    /// A cloneable handle that grants tickets, for the rendezvous driver.
    pub fn granter(&self) -> TicketGranter {
        TicketGranter {
            shared: self.shared.clone(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        self.stats_source().stats()
    }

    /// A handle on the live counters that outlives borrows of `self` (for the metrics
    /// endpoint).
    pub(crate) fn stats_source(&self) -> RelayStatsSource {
        RelayStatsSource(self.shared.clone())
    }

    /// Sends `ERROR 503` to every connection, waits briefly for it to be flushed, stops the
    /// thread and returns the final counters.
    pub fn shutdown(mut self) -> RelayStats {
        self.stop_and_join();
        self.stats()
    }

    fn stop_and_join(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SwitchboardHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// A non-blocking listener with a deep backlog (session pairs tend to arrive in bursts).
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
