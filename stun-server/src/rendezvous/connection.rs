//! One TLS connection: the handshake (in its own task, before the core task hears of the
//! connection), a reader task that frames lines and hands them to the core task, and a writer
//! task that sends what the core queued.
//!
//! Handshake: [`handshake`] runs with a deadline ([`HANDSHAKE_TIMEOUT`]), so a slow or silent
//! client costs one small task and never the core task or anyone else. A failed handshake is
//! logged at debug level, counted, and never answered with a protocol line. A finished one
//! is handed to the core task as [`Event::Connected`] with its channel binding.
//!
//! Writing: the core task appends every encoded line to the connection's pending output
//! ([`Outbox::send`], never waiting); the writer task takes all of it at once, writes it as
//! TLS records and flushes. The pending output is bounded: [`BURST`] bytes, then
//! `max_queued_lines` more lines. It fills only when the kernel's send buffer (fixed at
//! accept, see the driver) and rustls's are full too: a client that does not read, which the
//! core task disconnects at once.
//!
//! Memory per connection is kept small for tens of thousands of idle clients: rustls's state
//! (its buffers shrink when idle), a 512-byte read buffer that grows only for long lines, no
//! pending output buffer while there is nothing to send, two small tasks and no thread.
//!
//! Closing: when the core drops the [`Outbox`], the writer sends what is pending, sends
//! TLS `close_notify`, shuts the write side down and tells the reader, which keeps reading
//! (and discarding) for a moment so the kernel does not answer unread input with a reset that
//! could destroy the last lines (`OUT 0 ...`) before the client read them. When the writer is
//! aborted (overflow) the connection goes at once.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use shared::rendezvous::ConnId;
use shared::rendezvous::scram::ChannelBinding;
use shared::rendezvous::wire::{FrameError, Line};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::codec::Decoder;

use super::driver::Counts;
use codecs::line::{LineCodec, Side};

/// The read buffer a connection starts with.
const READ_BUFFER: usize = 512;
/// A TLS handshake that takes longer than this is abandoned.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A write that makes no progress for this long ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the writer is done, input is read and dropped for at most this long before closing.
const LINGER: Duration = Duration::from_secs(2);
/// Output that may wait for the writer before lines count towards
/// [`RendezvousOptions::max_queued_lines`](super::RendezvousOptions::max_queued_lines): room
/// for a login's burst of pushes for a full contact list, or a maximal `LST` answer.
const BURST: usize = 64 * 1024;

/// A connection after its TLS handshake.
pub(crate) type Stream = TlsStream<TcpStream>;

/// What the connection tasks tell the core task.
#[derive(Debug)]
pub(crate) enum Event {
    /// A TLS handshake finished: the connection is ready to be registered.
    Connected {
        /// The TLS stream (boxed: it is large and this enum is not).
        stream: Box<Stream>,
        /// The client's address.
        remote: SocketAddr,
        /// The session's `tls-exporter` channel binding.
        binding: ChannelBinding,
    },
    /// A line arrived.
    Line(ConnId, Line),
    /// The framing refused input; after a fatal error nothing more comes from this connection.
    FrameError(ConnId, FrameError),
    /// The connection is gone (peer closed, read error, or we closed it).
    Closed(ConnId),
}

/// Runs the TLS handshake on an accepted connection (bounded by [`HANDSHAKE_TIMEOUT`]) and
/// hands the result to the core task; a failure is counted in `counts` and logged at debug
/// level, and the connection is dropped without a word.
pub(crate) async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
    events: mpsc::Sender<Event>,
    counts: Arc<Counts>,
) {
    let failed = |reason: &dyn std::fmt::Display| {
        counts.failed_handshakes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%remote, %reason, "rendezvous TLS handshake failed");
    };
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return failed(&e),
        Err(_) => return failed(&"timed out"),
    };
    let binding = match crate::tls::channel_binding(stream.get_ref().1) {
        Ok(binding) => binding,
        Err(e) => return failed(&e),
    };
    let _ = events
        .send(Event::Connected {
            stream: Box::new(stream),
            remote,
            binding,
        })
        .await;
}

/// Why a line could not be handed to the connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The queue is full: the client does not read.
    Overflow,
    /// The connection failed or the writer gave up: it is gone.
    Gone,
}

/// What the core task and the writer share.
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer when output arrives in an empty buffer, or on close.
    wake: Notify,
}

/// Output waiting for the writer.
#[derive(Default)]
struct Pending {
    /// Encoded lines, in order; the writer takes all of them at once.
    bytes: BytesMut,
    /// Lines added while `bytes` already held [`BURST`] bytes or more.
    over: usize,
    /// The core has dropped its [`Outbox`]: send what is pending, then close.
    closing: bool,
    /// The writer has stopped: nothing more will be sent.
    gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The core task's side of a connection's output. Dropping it makes the writer send what is
/// pending and close.
pub(crate) struct Outbox {
    shared: Arc<Shared>,
    max_queued_lines: usize,
}

impl Outbox {
    /// Appends `bytes` (one encoded line) to what the writer will send, never waiting.
    pub(crate) fn send(&self, bytes: &[u8]) -> Result<(), SendError> {
        let mut pending = self.shared.lock();
        if pending.gone {
            return Err(SendError::Gone);
        }
        if pending.bytes.len() >= BURST {
            if pending.over >= self.max_queued_lines {
                return Err(SendError::Overflow);
            }
            pending.over += 1;
        }
        let was_empty = pending.bytes.is_empty();
        pending.bytes.extend_from_slice(bytes);
        drop(pending);
        if was_empty {
            self.shared.wake.notify_one();
        }
        Ok(())
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
    }
}

/// What the writer task needs; see [`writer`].
pub(crate) struct WriterParts {
    stream: WriteHalf<Stream>,
    shared: Arc<Shared>,
}

/// Splits a connection into the core's [`Outbox`], the writer's parts and the reader's half.
pub(crate) fn split(
    stream: Stream,
    max_queued_lines: usize,
) -> (Outbox, WriterParts, ReadHalf<Stream>) {
    let (read, write) = tokio::io::split(stream);
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        wake: Notify::new(),
    });
    let outbox = Outbox {
        shared: shared.clone(),
        max_queued_lines,
    };
    let parts = WriterParts {
        stream: write,
        shared,
    };
    (outbox, parts, read)
}

/// Reads lines into `events` until the peer closes or `writer_done` fires (then lingers, see
/// the module docs). Always ends with one [`Event::Closed`] unless the core task is gone.
pub(crate) async fn reader(
    conn: ConnId,
    mut stream: ReadHalf<Stream>,
    events: mpsc::Sender<Event>,
    mut writer_done: oneshot::Receiver<()>,
) {
    let mut codec = LineCodec::new(Side::Server);
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let mut forwarding = true;
    let linger = loop {
        // Hand over every whole line already buffered.
        while let Ok(Some(item)) = codec.decode(&mut buf) {
            let event = match item {
                Ok(line) => Event::Line(conn, line),
                Err(error) => {
                    // After a fatal error the core answers and closes; the codec discards the
                    // rest, and we wait for the writer to finish.
                    forwarding &= !error.is_fatal();
                    Event::FrameError(conn, error)
                }
            };
            if events.send(event).await.is_err() {
                return;
            }
            if !forwarding {
                break;
            }
        }
        if !forwarding {
            buf.clear();
        }
        if buf.capacity() - buf.len() < READ_BUFFER / 4 {
            buf.reserve(READ_BUFFER);
        }
        let read = tokio::select! {
            // Ok: the writer finished cleanly; Err: it was aborted (overflow).
            done = &mut writer_done => break done.is_ok(),
            read = stream.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) | Err(_) => {
                let _ = events.send(Event::Closed(conn)).await;
                return;
            }
            Ok(_) => {}
        }
    };
    if linger {
        // We are closing: the writer has sent everything and shut down its side.
        let _ = tokio::time::timeout(LINGER, async {
            let mut sink = [0u8; READ_BUFFER];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
    let _ = events.send(Event::Closed(conn)).await;
}

/// Sends what the core queued until the [`Outbox`] is dropped (then sends what is left,
/// closes the TLS session and the write side, and signals `done`) or a write fails or stalls
/// (then drops `done`). `alive` is dropped at the end, so shutdown can wait for every writer.
pub(crate) async fn writer(parts: WriterParts, done: oneshot::Sender<()>, alive: mpsc::Sender<()>) {
    let WriterParts { mut stream, shared } = parts;
    let healthy = loop {
        let (chunk, closing) = {
            let mut pending = shared.lock();
            pending.over = 0;
            (std::mem::take(&mut pending.bytes), pending.closing)
        };
        if chunk.is_empty() {
            if closing {
                break true;
            }
            shared.wake.notified().await;
            continue;
        }
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            stream.write_all(&chunk).await?;
            stream.flush().await
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            // Dead or stuck peer: drop what is pending and close.
            break false;
        }
    };
    {
        let mut pending = shared.lock();
        pending.gone = true;
        pending.bytes = BytesMut::new();
    }
    if healthy {
        // close_notify, then FIN; the reader lingers.
        let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await;
        let _ = done.send(());
    }
    // Unhealthy: `done` is dropped unsent, and the reader closes at once.
    drop(alive);
}
