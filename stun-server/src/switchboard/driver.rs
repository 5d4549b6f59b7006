//! The tasks around the core: accept, read, write, timers, and the state they share.
//!
//! Everything runs on one current-thread runtime. The core sits behind a mutex that is only
//! ever held for a synchronous step (handle an input, then dispatch every output to the
//! connections' queues), never across an `.await`, so it is uncontended on the relay thread and
//! briefly contended only by [`grant`](super::TicketGranter::grant) calls from other threads.
//! Readers feed the core directly instead of through a channel to a core task: one hop less per
//! frame on the forwarding path.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use shared::switchboard::{Frame, Output, SbConnId, Switchboard};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::batch::OutBatch;
use codecs::switchboard::{CodecError, SbCodec};

/// A read asks for at least this much room.
const READ_MIN: usize = 4 * 1024;
/// Reads grow up to this while they keep filling the buffer.
const READ_MAX: usize = 64 * 1024;
/// Queue accounting per frame beyond its wire bytes (the queue entry itself).
const FRAME_COST: usize = 64;
/// How long a closed connection's reader keeps reading (and discarding) so that the close is a
/// FIN after our last frame rather than a reset that could destroy it.
const LINGER: Duration = Duration::from_secs(1);
/// How long shutdown waits for writers to flush `ERROR 503`.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
/// How long accept backs off after an error (out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// A TLS handshake that takes longer than this is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection after its TLS handshake.
type Stream = TlsStream<TcpStream>;

/// Connection ids are numbered by us; skip SipHash on the per-frame lookup.
#[derive(Default)]
struct ConnHasher(u64);

impl Hasher for ConnHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Limits the driver applies on its own.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DriverLimits {
    pub(crate) max_connections: usize,
    pub(crate) max_queued_bytes: usize,
    pub(crate) write_timeout: Duration,
}

/// Counters kept outside the core.
#[derive(Debug, Default)]
pub(crate) struct DriverCounts {
    pub(crate) slow_readers: AtomicU64,
    /// `DATA` frames dropped because the receiver's queue was full.
    pub(crate) queue_dropped: AtomicU64,
    pub(crate) over_limit: AtomicU64,
    pub(crate) failed_handshakes: AtomicU64,
}

/// The core and the queues of the connections it knows.
pub(crate) struct State {
    pub(crate) core: Switchboard,
    outboxes: HashMap<SbConnId, Arc<Outbox>, BuildHasherDefault<ConnHasher>>,
    /// The deadline the timer task sleeps until.
    armed: Option<Instant>,
}

/// What every task shares.
pub(crate) struct Shared {
    state: Mutex<State>,
    timer: Notify,
    acceptor: TlsAcceptor,
    limits: DriverLimits,
    max_data: usize,
    pub(crate) counts: DriverCounts,
}

impl Shared {
    pub(crate) fn new(core: Switchboard, limits: DriverLimits, acceptor: TlsAcceptor) -> Shared {
        Shared {
            max_data: core.config().max_data,
            state: Mutex::new(State {
                core,
                outboxes: HashMap::default(),
                armed: None,
            }),
            timer: Notify::new(),
            acceptor,
            limits,
            counts: DriverCounts::default(),
        }
    }

    /// The state, even if a panic poisoned the lock (every step leaves it consistent).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one input step on the core, then hands every output to its connection.
    pub(crate) fn step(&self, input: impl FnOnce(&mut Switchboard, Instant)) {
        let now = Instant::now();
        let mut state = self.lock();
        input(&mut state.core, now);
        let rearm = self.dispatch(&mut state, now);
        drop(state);
        if rearm {
            self.timer.notify_one();
        }
    }

    /// Drains the core's outputs into the connections' queues. A `DATA` frame that does not fit
    /// a full queue is dropped, as a router drops a datagram (the clients' sessions retransmit,
    /// and QUIC slows down); a control frame that does not fit drops the connection as a slow
    /// reader, reported to the core. A reader that takes nothing at all is caught by the write
    /// timeout. Returns whether the timer must wake earlier than it planned.
    fn dispatch(&self, state: &mut State, now: Instant) -> bool {
        let mut slow = Vec::new();
        loop {
            while let Some(output) = state.core.poll_output() {
                match output {
                    Output::Send { conn, frame } => {
                        let data = matches!(frame, Frame::Data(_));
                        let full = state
                            .outboxes
                            .get(&conn)
                            .is_some_and(|o| !o.push(frame, self.limits.max_queued_bytes));
                        if full && data {
                            self.counts.queue_dropped.fetch_add(1, Ordering::Relaxed);
                        } else if full {
                            slow.push(conn);
                        }
                    }
                    Output::Close(conn) => {
                        if let Some(outbox) = state.outboxes.remove(&conn) {
                            outbox.close();
                        }
                    }
                    _ => {}
                }
            }
            if slow.is_empty() {
                break;
            }
            for conn in slow.drain(..) {
                if let Some(outbox) = state.outboxes.remove(&conn) {
                    tracing::debug!(%conn, "outgoing queue full: disconnecting a slow reader");
                    self.counts.slow_readers.fetch_add(1, Ordering::Relaxed);
                    outbox.abort();
                    state.core.handle_disconnected(now, conn);
                }
            }
        }
        match state.core.poll_timeout() {
            Some(t) if state.armed.is_none_or(|armed| t < armed) => {
                state.armed = Some(t);
                true
            }
            _ => false,
        }
    }

    /// The connection failed or closed: forget its queue and tell the core.
    fn disconnected(&self, conn: SbConnId) {
        let now = Instant::now();
        let mut state = self.lock();
        if let Some(outbox) = state.outboxes.remove(&conn) {
            outbox.abort();
        }
        state.core.handle_disconnected(now, conn);
        let rearm = self.dispatch(&mut state, now);
        drop(state);
        if rearm {
            self.timer.notify_one();
        }
    }

    /// Calls the core's timers whenever its deadline passes, until `stop`.
    pub(crate) async fn run_timer(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let deadline = {
                let now = Instant::now();
                let mut state = self.lock();
                state.core.handle_timeout(now);
                self.dispatch(&mut state, now);
                state.armed = state.core.poll_timeout();
                state.armed
            };
            let sleep = match deadline {
                Some(t) => tokio::time::sleep_until(t.into()),
                None => tokio::time::sleep(Duration::from_secs(3600)),
            };
            tokio::select! {
                () = sleep => {}
                () = self.timer.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Accepts connections until `stop`; then tells every connection and waits briefly for the
    /// writers to flush.
    pub(crate) async fn run_accept(
        self: Arc<Self>,
        listener: TcpListener,
        mut stop: watch::Receiver<bool>,
    ) {
        let slots = Arc::new(Semaphore::new(self.limits.max_connections));
        let (alive, mut all_done) = mpsc::channel::<()>(1);
        let mut next_id = 0u64;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(ok) => ok,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                            continue;
                        }
                    };
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        self.counts.over_limit.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    next_id += 1;
                    let conn = SbConnId(next_id);
                    let span = tracing::debug_span!("sb", %conn, %peer);
                    let handshake = self.clone().handshake(stream, conn, permit, alive.clone(), stop.clone());
                    tokio::spawn(handshake.instrument(span));
                }
            }
        }
        drop(listener);
        self.step(|core, now| core.handle_shutdown(now));
        drop(alive);
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH, all_done.recv()).await;
    }

    /// Runs the TLS handshake of an accepted connection (bounded by [`HANDSHAKE_TIMEOUT`],
    /// given up at shutdown), then starts the connection. A failure is counted and logged at
    /// debug level, and the connection is dropped without a word.
    async fn handshake(
        self: Arc<Self>,
        stream: TcpStream,
        conn: SbConnId,
        slot: OwnedSemaphorePermit,
        alive: mpsc::Sender<()>,
        mut stop: watch::Receiver<bool>,
    ) {
        let _ = stream.set_nodelay(true);
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream));
        let result = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            result = handshake => result,
        };
        let reason = match result {
            Ok(Ok(stream)) => {
                if !*stop.borrow() {
                    self.start_conn(stream, conn, tracing::Span::current(), slot, alive);
                }
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        self.counts
            .failed_handshakes
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%reason, "switchboard TLS handshake failed");
    }

    /// Registers a connection with the core and spawns its reader and writer. The reader holds
    /// the connection slot, the writer the shutdown flush's `alive` sender.
    fn start_conn(
        self: Arc<Self>,
        stream: Stream,
        conn: SbConnId,
        span: tracing::Span,
        slot: OwnedSemaphorePermit,
        alive: mpsc::Sender<()>,
    ) {
        let outbox = Arc::new(Outbox::default());
        self.lock().outboxes.insert(conn, outbox.clone());
        self.step(|core, now| core.handle_connected(now, conn));
        tracing::debug!(parent: &span, "connected");
        let (rd, wr) = tokio::io::split(stream);
        let codec = SbCodec::new(self.max_data);
        let reader = read_loop(self.clone(), outbox.clone(), conn, rd, codec);
        tokio::spawn(
            async move {
                reader.await;
                drop(slot);
            }
            .instrument(span.clone()),
        );
        let writer = write_loop(self, outbox, conn, wr);
        tokio::spawn(
            async move {
                writer.await;
                drop(alive);
            }
            .instrument(span),
        );
    }
}

/// One connection's outgoing queue, bounded in bytes.
#[derive(Default)]
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    /// Wakes the writer when the queue goes from empty to not empty, or on close.
    wake: Notify,
    /// Stops the reader (and, when `aborted`, the writer too).
    stop: CancellationToken,
    aborted: AtomicBool,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Frame>,
    /// Wire bytes plus [`FRAME_COST`] per frame, queued or being written.
    bytes: usize,
    /// The core closed the connection: write what is queued, then close.
    closing: bool,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame; `false` if that would exceed `max_bytes` (nothing is queued then).
    fn push(&self, frame: Frame, max_bytes: usize) -> bool {
        let cost = frame.wire_len() + FRAME_COST;
        let mut queue = self.lock();
        if queue.closing {
            return true;
        }
        if queue.bytes + cost > max_bytes {
            return false;
        }
        let was_empty = queue.frames.is_empty();
        queue.frames.push_back(frame);
        queue.bytes += cost;
        drop(queue);
        if was_empty {
            self.wake.notify_one();
        }
        true
    }

    /// Flush what is queued, then close.
    fn close(&self) {
        self.lock().closing = true;
        self.wake.notify_one();
    }

    /// Close now, dropping what is queued.
    fn abort(&self) {
        self.aborted.store(true, Ordering::Relaxed);
        self.stop.cancel();
    }
}

/// Reads, decodes a whole read's worth of frames, and feeds them to the core in one step.
async fn read_loop(
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    conn: SbConnId,
    mut rd: ReadHalf<Stream>,
    mut codec: SbCodec,
) {
    let mut buf = BytesMut::new();
    let mut want = READ_MIN;
    let mut frames = Vec::new();
    let mut broken = false;
    loop {
        if buf.capacity() - buf.len() < want / 2 {
            buf.reserve(want);
        }
        let room = buf.capacity() - buf.len();
        let read = tokio::select! {
            biased;
            () = outbox.stop.cancelled() => break,
            read = rd.read_buf(&mut buf) => read,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                tracing::debug!("disconnected");
                shared.disconnected(conn);
                return;
            }
            Ok(n) => n,
        };
        want = if n == room {
            (want * 2).min(READ_MAX)
        } else {
            READ_MIN
        };
        if broken {
            // The core has closed us over a bad frame: discard until the writer is done.
            buf.clear();
            continue;
        }
        let mut error = None;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if frames.is_empty() && error.is_none() {
            continue;
        }
        shared.step(|core, now| {
            for frame in frames.drain(..) {
                core.handle_frame(now, conn, frame);
            }
            if let Some(CodecError::Wire(e)) = error {
                core.handle_frame_error(now, conn, e);
                broken = true;
            }
        });
    }
    if !outbox.aborted.load(Ordering::Relaxed) {
        // Closed by the core after its last frame: read until the peer closes, briefly.
        let mut scratch = [0u8; 4096];
        let drain = async { while matches!(rd.read(&mut scratch).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

/// Writes everything queued in one vectored write per wake-up.
async fn write_loop(
    shared: Arc<Shared>,
    outbox: Arc<Outbox>,
    conn: SbConnId,
    mut wr: WriteHalf<Stream>,
) {
    let mut taken = VecDeque::new();
    let mut batch = OutBatch::default();
    loop {
        let closing = {
            let mut queue = outbox.lock();
            std::mem::swap(&mut queue.frames, &mut taken);
            queue.closing
        };
        if taken.is_empty() {
            if closing {
                break;
            }
            tokio::select! {
                biased;
                () = outbox.stop.cancelled() => return,
                () = outbox.wake.notified() => continue,
            }
        }
        let mut cost = 0;
        for frame in taken.drain(..) {
            cost += frame.wire_len() + FRAME_COST;
            batch.push(&frame);
        }
        batch.seal();
        let timeout = shared.limits.write_timeout;
        let write = async {
            wr.write_all_buf(&mut batch).await?;
            // rustls may hold the last records until flushed.
            wr.flush().await
        };
        let written = tokio::select! {
            biased;
            () = outbox.stop.cancelled() => return,
            written = tokio::time::timeout(timeout, write) => written,
        };
        if !matches!(written, Ok(Ok(()))) {
            if written.is_err() {
                tracing::debug!("write timed out: disconnecting a slow reader");
                shared.counts.slow_readers.fetch_add(1, Ordering::Relaxed);
            }
            shared.disconnected(conn);
            return;
        }
        let mut queue = outbox.lock();
        queue.bytes = queue.bytes.saturating_sub(cost);
    }
    // close_notify, then FIN.
    let _ = tokio::time::timeout(LINGER, wr.shutdown()).await;
    // The reader now lingers until the peer closes.
    outbox.stop.cancel();
}
