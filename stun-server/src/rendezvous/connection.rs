//! One TCP connection: a reader task that frames lines and hands them to the core task, and a
//! writer task for the lines the kernel could not take at once.
//!
//! Writing: the core task writes each line straight into the socket (`try_write`) while
//! nothing is pending, so a client that reads keeps up however bursty the core is, and no task
//! is woken. Only what the kernel refuses goes to the writer's bounded queue, which the writer
//! sends as the socket drains; while the queue is in use ([`Outbox::busy`]) every line goes
//! through it, which keeps the bytes in order. A full queue therefore means a full socket
//! buffer (fixed at accept, see the driver) plus `max_queued_lines` lines: a client that does
//! not read.
//!
//! Memory per connection is kept small for tens of thousands of idle clients: a 512-byte read
//! buffer that grows only for long lines, an empty queue, two small tasks and no thread.
//!
//! Closing: when the core drops the queue's sender, the writer sends what is queued, shuts the
//! write side down and tells the reader, which keeps reading (and discarding) for a moment so
//! the kernel does not answer unread input with a reset that could destroy the last lines
//! (`OUT 0 ...`) before the client read them. When the writer is aborted (overflow) the
//! connection goes at once.

use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use shared::rendezvous::ConnId;
use shared::rendezvous::wire::{FrameError, Line};
use tokio::net::TcpStream;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Decoder;

use super::codec::{LineCodec, Side};

/// The read buffer a connection starts with.
const READ_BUFFER: usize = 512;
/// A write that makes no progress for this long ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the writer is done, input is read and dropped for at most this long before closing.
const LINGER: Duration = Duration::from_secs(2);
/// Queued lines are gathered into one write up to about this many bytes.
const GATHER: usize = 16 * 1024;

/// What a reader tells the core task.
#[derive(Debug)]
pub(crate) enum Event {
    /// A line arrived.
    Line(ConnId, Line),
    /// The framing refused input; after a fatal error nothing more comes from this connection.
    FrameError(ConnId, FrameError),
    /// The connection is gone (peer closed, read error, or we closed it).
    Closed(ConnId),
}

/// Why a line could not be handed to the connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The queue is full: the client does not read.
    Overflow,
    /// The socket failed or the writer gave up: the connection is gone.
    Gone,
}

/// The core task's side of a connection's output.
pub(crate) struct Outbox {
    stream: Arc<TcpStream>,
    queue: mpsc::Sender<Bytes>,
    /// True while the writer has (or may have) bytes to send: then lines must be queued.
    busy: Arc<AtomicBool>,
}

impl Outbox {
    /// Sends `bytes` now if the socket takes them, else queues what is left for the writer.
    pub(crate) fn send(&self, bytes: &[u8]) -> Result<(), SendError> {
        let idle = !self.busy.load(Ordering::Acquire)
            && self.queue.capacity() == self.queue.max_capacity();
        let rest = if idle {
            match self.stream.try_write(bytes) {
                Ok(n) if n == bytes.len() => return Ok(()),
                Ok(n) => &bytes[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => bytes,
                Err(_) => return Err(SendError::Gone),
            }
        } else {
            bytes
        };
        self.busy.store(true, Ordering::Release);
        match self.queue.try_send(Bytes::copy_from_slice(rest)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SendError::Overflow),
            Err(TrySendError::Closed(_)) => Err(SendError::Gone),
        }
    }
}

/// What the writer task needs; see [`writer`].
pub(crate) struct WriterParts {
    stream: Arc<TcpStream>,
    queue: mpsc::Receiver<Bytes>,
    busy: Arc<AtomicBool>,
}

/// Splits a connection into the core's [`Outbox`], the writer's parts and the reader's stream.
pub(crate) fn split(
    stream: TcpStream,
    max_queued_lines: usize,
) -> (Outbox, WriterParts, Arc<TcpStream>) {
    let stream = Arc::new(stream);
    let (tx, rx) = mpsc::channel(max_queued_lines);
    let busy = Arc::new(AtomicBool::new(false));
    let outbox = Outbox {
        stream: stream.clone(),
        queue: tx,
        busy: busy.clone(),
    };
    let parts = WriterParts {
        stream: stream.clone(),
        queue: rx,
        busy,
    };
    (outbox, parts, stream)
}

/// Reads lines into `events` until the peer closes or `writer_done` fires (then lingers, see
/// the module docs). Always ends with one [`Event::Closed`] unless the core task is gone.
pub(crate) async fn reader(
    conn: ConnId,
    stream: Arc<TcpStream>,
    events: mpsc::Sender<Event>,
    mut writer_done: oneshot::Receiver<()>,
) {
    let mut codec = LineCodec::new(Side::Server);
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let mut forwarding = true;
    loop {
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
        if buf.capacity() - buf.len() < READ_BUFFER / 4 {
            buf.reserve(READ_BUFFER);
        }
        tokio::select! {
            _ = &mut writer_done => break,
            ready = stream.readable() => if ready.is_err() { break },
        }
        match stream.try_read_buf(&mut buf) {
            Ok(0) => {
                let _ = events.send(Event::Closed(conn)).await;
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => {
                let _ = events.send(Event::Closed(conn)).await;
                return;
            }
        }
        if !forwarding {
            buf.clear();
        }
    }
    // We are closing: the writer has sent everything and shut down its side.
    let _ = tokio::time::timeout(LINGER, async {
        let mut sink = BytesMut::new();
        while stream.readable().await.is_ok() {
            sink.clear();
            match stream.try_read_buf(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
            if sink.capacity() < READ_BUFFER {
                sink.reserve(READ_BUFFER);
            }
        }
    })
    .await;
    let _ = events.send(Event::Closed(conn)).await;
}

/// Sends what the core queued until the queue's sender is dropped (then shuts the write side
/// down) or a write fails or stalls; then signals `done`. `alive` is dropped at the end, so
/// shutdown can wait for every writer.
pub(crate) async fn writer(parts: WriterParts, done: oneshot::Sender<()>, alive: mpsc::Sender<()>) {
    let WriterParts {
        stream,
        mut queue,
        busy,
    } = parts;
    let mut healthy = true;
    'lines: while let Some(first) = queue.recv().await {
        let mut chunk = match queue.try_recv() {
            Err(_) => first,
            Ok(second) => {
                let mut gathered = BytesMut::with_capacity(first.len() + second.len() + 256);
                gathered.extend_from_slice(&first);
                gathered.extend_from_slice(&second);
                while gathered.len() < GATHER {
                    match queue.try_recv() {
                        Ok(more) => gathered.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                gathered.freeze()
            }
        };
        while !chunk.is_empty() {
            if !matches!(
                tokio::time::timeout(WRITE_TIMEOUT, stream.writable()).await,
                Ok(Ok(()))
            ) {
                // Dead or stuck peer: drop what is queued and close.
                healthy = false;
                break 'lines;
            }
            match stream.try_write(&chunk) {
                Ok(n) => chunk.advance(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {
                    healthy = false;
                    break 'lines;
                }
            }
        }
        if queue.is_empty() {
            // Back to direct writes; a line queued meanwhile is still in the queue, and the
            // core sees that and keeps queueing.
            busy.store(false, Ordering::Release);
        }
    }
    drop(queue);
    if healthy {
        let _ = socket2::SockRef::from(&*stream).shutdown(std::net::Shutdown::Write);
    }
    let _ = done.send(());
    drop(alive);
}
