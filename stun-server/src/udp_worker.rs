//! One UDP worker: four sockets, one thread, one core.
//!
//! Every worker binds all four addresses with SO_REUSEPORT, so the kernel spreads clients
//! across workers and any worker can send a CHANGE-REQUEST reply from any of the four
//! addresses without handing it to another thread.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use shared::stun_server::{MAX_RESPONSE_OVERHEAD, Received, ServerSocket, StunServer, Transport};

use crate::Stats;
use crate::udp_batch::{BatchReceiver, BatchSender};

/// Datagrams per recvmmsg/sendmmsg call.
const BATCH: usize = 32;
/// Largest request accepted: room for an MTU-sized PADDING request, and then some.
pub(crate) const RX_SLOT: usize = 4096;
const TX_SLOT: usize = RX_SLOT + MAX_RESPONSE_OVERHEAD;
/// Token of the waker that interrupts `poll` for shutdown; sockets use their index 0..4.
pub(crate) const WAKER: Token = Token(usize::MAX);
/// How often the worker publishes its counters: how stale `ServerHandle::stats` and a metrics
/// scrape may be. Publishing takes a lock; per packet it would cost throughput.
pub(crate) const STATS_EVERY: Duration = Duration::from_millis(250);

/// A worker ready to run: sockets registered with its poll.
pub(crate) struct UdpWorker {
    poll: Poll,
    sockets: [Option<mio::net::UdpSocket>; 4],
    core: StunServer,
    shutdown: Arc<AtomicBool>,
    published: Arc<Mutex<Stats>>,
}

impl UdpWorker {
    /// Registers the sockets (indexed by [`ServerSocket::index`]; `None` for sockets on a
    /// missing alternate address) and returns the worker and the waker that stops it.
    pub(crate) fn new(
        sockets: [Option<UdpSocket>; 4],
        core: StunServer,
        shutdown: Arc<AtomicBool>,
        published: Arc<Mutex<Stats>>,
    ) -> std::io::Result<(Self, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut registered: [Option<mio::net::UdpSocket>; 4] = [None, None, None, None];
        for (index, socket) in sockets.into_iter().enumerate() {
            if let Some(socket) = socket {
                let mut socket = mio::net::UdpSocket::from_std(socket);
                poll.registry()
                    .register(&mut socket, Token(index), Interest::READABLE)?;
                registered[index] = Some(socket);
            }
        }
        Ok((
            Self {
                poll,
                sockets: registered,
                core,
                shutdown,
                published,
            },
            waker,
        ))
    }

    /// Serves until shutdown; returns the final counters.
    pub(crate) fn run(mut self) -> Stats {
        let mut events = Events::with_capacity(8);
        let mut rx = BatchReceiver::new(BATCH, RX_SLOT);
        let mut tx: [BatchSender; 4] = std::array::from_fn(|_| BatchSender::new(BATCH, TX_SLOT));
        let mut scratch = vec![0u8; TX_SLOT];
        let mut stats = Stats::default();
        let mut last_publish = Instant::now();
        while !self.shutdown.load(Ordering::Relaxed) {
            if let Err(e) = self.poll.poll(&mut events, Some(STATS_EVERY)) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "poll failed; worker stops");
                break;
            }
            for event in events.iter() {
                let index = event.token().0;
                let Some(socket) = self.sockets.get(index).and_then(Option::as_ref) else {
                    continue;
                };
                let local = ServerSocket::ALL[index];
                // Edge-triggered: drain until a short batch says the queue was empty. Bounded,
                // so one busy socket cannot starve the others or the shutdown check.
                for _ in 0..64 {
                    let n = match rx.recv(socket) {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::debug!(error = %e, ?local, "receive error");
                            break;
                        }
                    };
                    let now = Instant::now();
                    for i in 0..n {
                        let Some((from, data)) = rx.get(i) else {
                            stats.truncated += 1;
                            continue;
                        };
                        let received = Received {
                            local,
                            transport: Transport::Udp,
                            from,
                            data,
                        };
                        // Most replies leave from the socket the request came in on: write
                        // them straight into that socket's send batch. Only a CHANGE-REQUEST
                        // reply is copied to another socket's batch.
                        let here = local.index();
                        if tx[here].is_full() {
                            if let Some(s) = &self.sockets[here] {
                                stats.send_dropped += tx[here].flush(s).dropped as u64;
                            }
                        }
                        let Some(slot) = tx[here].next_slot() else {
                            continue;
                        };
                        let Some(t) = self.core.handle_datagram(now, received, slot) else {
                            continue;
                        };
                        let out = t.socket.index();
                        if out == here {
                            tx[here].commit(t.size, t.destination);
                            continue;
                        }
                        if let Some(slot) = tx[here].next_slot() {
                            scratch[..t.size].copy_from_slice(&slot[..t.size]);
                        }
                        if tx[out].is_full() {
                            if let Some(s) = &self.sockets[out] {
                                stats.send_dropped += tx[out].flush(s).dropped as u64;
                            }
                        }
                        tx[out].push(&scratch[..t.size], t.destination);
                    }
                    for (out, queue) in tx.iter_mut().enumerate() {
                        if let (false, Some(s)) = (queue.is_empty(), &self.sockets[out]) {
                            stats.send_dropped += queue.flush(s).dropped as u64;
                        }
                    }
                    if n < BATCH {
                        break;
                    }
                }
            }
            if last_publish.elapsed() >= STATS_EVERY {
                last_publish = Instant::now();
                self.publish(&stats);
            }
        }
        self.publish(&stats);
        let mut total = stats;
        total.core = *self.core.stats();
        total
    }

    fn publish(&self, driver: &Stats) {
        let mut snapshot = *driver;
        snapshot.core = *self.core.stats();
        if let Ok(mut published) = self.published.lock() {
            *published = snapshot;
        }
    }
}
