//! `tunnel --listen` / `--connect`: TCP connections carried over a QUIC connection.
//!
//! One side runs [`tunnel_listen`] with a local TCP listener; the other runs
//! [`tunnel_connect`] with a target address. Every TCP connection accepted on the listening
//! side opens one bidirectional QUIC stream; the connecting side answers every stream with a
//! TCP connection to the target, and bytes are copied both ways concurrently.
//!
//! # Stream protocol
//! The opener (the listening side) writes one byte, [`STREAM_VERSION`], then the TCP bytes;
//! the connecting side reads it before connecting, so later versions can add a header
//! (a target name, say) after it. Nothing else is framed: the rest of each direction is the
//! TCP byte stream.
//!
//! **Half-close** is carried through: TCP end of input on one side finishes that direction
//! of the stream, and the other side then shuts down the write half of its TCP connection;
//! the opposite direction keeps flowing until it ends the same way.
//!
//! **Errors** abort the whole tunnelled connection: the side that sees one resets its
//! sending half and stops its receiving half of the stream with an application code, and
//! drops its TCP connection with a zero linger (the TCP peer sees a reset, not a clean end
//! of a truncated stream). The codes:
//!
//! | code | name | meaning |
//! |---|---|---|
//! | `0x10` | [`CONNECT_FAILED`] | the connecting side could not reach the target |
//! | `0x11` | [`UNSUPPORTED_VERSION`] | the stream started with an unknown version byte |
//! | `0x12` | [`TCP_ERROR`] | a TCP read or write failed, or the peer aborted |
//!
//! Each tunnelled connection runs in a task of its own; both functions return when the QUIC
//! connection closes, after its connections have aborted (their TCP peers see a reset), and
//! no task outlives them.

mod pump;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use quinn::{ConnectionError, RecvStream, SendStream, VarInt};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use pump::{Counters, pump};

/// First byte of every tunnel stream.
pub const STREAM_VERSION: u8 = 1;
/// Reset/stop code: the connecting side could not connect to the target.
pub const CONNECT_FAILED: u32 = 0x10;
/// Reset/stop code: the stream's version byte is not [`STREAM_VERSION`].
pub const UNSUPPORTED_VERSION: u32 = 0x11;
/// Reset/stop code: a TCP error, or an abort passed on from the peer.
pub const TCP_ERROR: u32 = 0x12;

/// How long connections may take to wind down after the QUIC connection closed.
const END_GRACE: Duration = Duration::from_secs(1);
/// How long the connecting side waits for the target to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Accept errors in a row (one every [`ACCEPT_BACKOFF`]) after which the listener is given up.
const MAX_ACCEPT_ERRORS: u32 = 100;
/// Pause after a failed accept (e.g. out of file descriptors), so that it is not retried in
/// a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What happens to tunnelled connections, for logs or a UI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelEvent {
    /// A tunnelled connection starts. `peer` is the local TCP client (listening side) or the
    /// target (connecting side).
    Opened {
        /// Number of the connection within this tunnel, from 0.
        id: u64,
        /// The TCP peer.
        peer: SocketAddr,
    },
    /// A tunnelled connection ended (after [`TunnelEvent::Opened`]); `error` is `None` if
    /// both directions ended cleanly.
    Closed {
        /// As in [`TunnelEvent::Opened`].
        id: u64,
        /// Why it was aborted, if it was.
        error: Option<String>,
    },
    /// The connecting side could not reach the target for a stream (instead of
    /// [`TunnelEvent::Closed`]).
    ConnectFailed {
        /// Number of the stream within this tunnel.
        id: u64,
        /// Why.
        error: String,
    },
}

/// Totals of one tunnel run.
#[derive(Debug, Clone)]
pub struct TunnelStats {
    /// Tunnelled connections started.
    pub connections: u64,
    /// Of those, how many were aborted (or, connecting side, failed to reach the target).
    pub failed: u64,
    /// TCP bytes sent to the peer.
    pub bytes_to_peer: u64,
    /// TCP bytes received from the peer.
    pub bytes_from_peer: u64,
    /// How the QUIC connection ended.
    pub closed_by: ConnectionError,
}

/// Why [`tunnel_listen`] gave up before the QUIC connection closed.
#[derive(Debug, Error)]
pub enum TunnelError {
    /// The TCP listener kept failing to accept.
    #[error("accepting TCP connections failed {MAX_ACCEPT_ERRORS} times in a row")]
    Accept(#[source] io::Error),
}

/// Why one tunnelled connection was aborted.
#[derive(Debug, Error)]
pub(crate) enum TunnelConnError {
    #[error("TCP read")]
    TcpRead(#[source] io::Error),
    #[error("TCP write")]
    TcpWrite(#[source] io::Error),
    #[error("stream write")]
    Write(#[source] quinn::WriteError),
    #[error("stream read")]
    Read(#[source] quinn::ReadError),
    #[error("peer reset the stream with code {0}")]
    Reset(VarInt),
    #[error("peer stopped the stream with code {0}")]
    Stopped(VarInt),
    #[error("opening a stream")]
    Open(#[source] ConnectionError),
    #[error("stream ended before its version byte")]
    NoVersion,
    #[error("unsupported stream version {0}")]
    UnsupportedVersion(u8),
    #[error("connecting to the target")]
    Connect(#[source] io::Error),
}

/// Renders an error with its sources, for [`TunnelEvent::Closed`].
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(e) = source {
        s.push_str(": ");
        s.push_str(&e.to_string());
        source = e.source();
    }
    s
}

/// Book-keeping shared by both ends.
struct Run {
    tasks: JoinSet<(u64, Result<(), TunnelConnError>)>,
    counters: Arc<Counters>,
    connections: u64,
    failed: u64,
}

impl Run {
    fn new() -> Self {
        Self {
            tasks: JoinSet::new(),
            counters: Arc::default(),
            connections: 0,
            failed: 0,
        }
    }

    fn next_id(&mut self) -> u64 {
        self.connections += 1;
        self.connections - 1
    }

    fn finished(
        &mut self,
        joined: Result<(u64, Result<(), TunnelConnError>), tokio::task::JoinError>,
        events: &mut (dyn FnMut(TunnelEvent) + Send),
    ) {
        let Ok((id, result)) = joined else {
            // Only aborts at shutdown, or a panic; either way that connection is gone.
            self.failed += 1;
            return;
        };
        let Err(e) = result else {
            events(TunnelEvent::Closed { id, error: None });
            return;
        };
        self.failed += 1;
        let error = chain(&e);
        debug!(id, error, "tunnelled connection aborted");
        if matches!(e, TunnelConnError::Connect(_)) {
            events(TunnelEvent::ConnectFailed { id, error });
        } else {
            events(TunnelEvent::Closed {
                id,
                error: Some(error),
            });
        }
    }

    /// Once the QUIC connection is gone, every connection's next stream operation fails and
    /// its task aborts its TCP connection (with a reset) by itself; give them
    /// [`END_GRACE`] to do so, then cancel the rest (those still connecting to the target).
    async fn end(
        mut self,
        closed_by: ConnectionError,
        events: &mut (dyn FnMut(TunnelEvent) + Send),
    ) -> TunnelStats {
        let _ = tokio::time::timeout(END_GRACE, async {
            while let Some(joined) = self.tasks.join_next().await {
                self.finished(joined, events);
            }
        })
        .await;
        self.tasks.shutdown().await;
        TunnelStats {
            connections: self.connections,
            failed: self.failed,
            bytes_to_peer: self.counters.to_peer.load(Ordering::Relaxed),
            bytes_from_peer: self.counters.from_peer.load(Ordering::Relaxed),
            closed_by,
        }
    }
}

/// Tunnels every TCP connection accepted on `listener` to the peer, which runs
/// [`tunnel_connect`]. Returns when `conn` closes.
pub async fn tunnel_listen(
    conn: quinn::Connection,
    listener: TcpListener,
    events: &mut (dyn FnMut(TunnelEvent) + Send),
) -> Result<TunnelStats, TunnelError> {
    let mut run = Run::new();
    let mut accept_errors = 0;
    let closed_by = loop {
        tokio::select! {
            reason = conn.closed() => break reason,
            Some(joined) = run.tasks.join_next() => run.finished(joined, events),
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    accept_errors = 0;
                    let id = run.next_id();
                    events(TunnelEvent::Opened { id, peer });
                    let conn = conn.clone();
                    let counters = run.counters.clone();
                    run.tasks.spawn(async move { (id, open_and_pump(conn, tcp, counters).await) });
                }
                Err(e) => {
                    accept_errors += 1;
                    warn!(error = %e, "accepting a TCP connection");
                    if accept_errors >= MAX_ACCEPT_ERRORS {
                        run.end(ConnectionError::LocallyClosed, events).await;
                        return Err(TunnelError::Accept(e));
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    };
    Ok(run.end(closed_by, events).await)
}

async fn open_and_pump(
    conn: quinn::Connection,
    tcp: TcpStream,
    counters: Arc<Counters>,
) -> Result<(), TunnelConnError> {
    let _ = tcp.set_nodelay(true);
    let (mut send, recv) = conn.open_bi().await.map_err(TunnelConnError::Open)?;
    // quinn announces a stream to the peer only when data is sent on it: the version byte
    // does that right away, so the target connection is made before the client speaks.
    send.write_all(&[STREAM_VERSION])
        .await
        .map_err(TunnelConnError::Write)?;
    pump(tcp, send, recv, counters).await
}

/// Answers every stream the peer (running [`tunnel_listen`]) opens on `conn` with a TCP
/// connection to `target`. Returns when `conn` closes.
pub async fn tunnel_connect(
    conn: quinn::Connection,
    target: SocketAddr,
    events: &mut (dyn FnMut(TunnelEvent) + Send),
) -> TunnelStats {
    let mut run = Run::new();
    let closed_by = loop {
        tokio::select! {
            Some(joined) = run.tasks.join_next() => run.finished(joined, events),
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let id = run.next_id();
                    events(TunnelEvent::Opened { id, peer: target });
                    let counters = run.counters.clone();
                    run.tasks.spawn(async move {
                        (id, connect_and_pump(send, recv, target, counters).await)
                    });
                }
                Err(reason) => break reason,
            },
        }
    };
    run.end(closed_by, events).await
}

async fn connect_and_pump(
    mut send: SendStream,
    mut recv: RecvStream,
    target: SocketAddr,
    counters: Arc<Counters>,
) -> Result<(), TunnelConnError> {
    let abort = |send: &mut SendStream, recv: &mut RecvStream, code: u32| {
        let code = VarInt::from_u32(code);
        let _ = send.reset(code);
        let _ = recv.stop(code);
    };
    let mut version = [0u8; 1];
    if let Err(e) = recv.read_exact(&mut version).await {
        abort(&mut send, &mut recv, TCP_ERROR);
        return Err(match e {
            quinn::ReadExactError::ReadError(e) => TunnelConnError::Read(e),
            quinn::ReadExactError::FinishedEarly(_) => TunnelConnError::NoVersion,
        });
    }
    if version[0] != STREAM_VERSION {
        abort(&mut send, &mut recv, UNSUPPORTED_VERSION);
        return Err(TunnelConnError::UnsupportedVersion(version[0]));
    }
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            abort(&mut send, &mut recv, CONNECT_FAILED);
            return Err(TunnelConnError::Connect(e));
        }
        Err(_) => {
            abort(&mut send, &mut recv, CONNECT_FAILED);
            return Err(TunnelConnError::Connect(io::ErrorKind::TimedOut.into()));
        }
    };
    let _ = tcp.set_nodelay(true);
    pump(tcp, send, recv, counters).await
}
