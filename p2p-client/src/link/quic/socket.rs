//! The socket quinn runs on: an [`AsyncUdpSocket`] that is not a socket of its own but the
//! link's current path, which the link's driver changes at will.
//!
//! QUIC only ever sees two constant, made-up addresses: [`LOCAL_ADDR`] for itself and
//! [`PEER_ADDR`] for the peer. The real path lives in a [`QuicRoute`] (direct from the shared
//! endpoint socket, through the switchboard relay, or none while the driver re-punches), so a
//! path change never looks like a migration to QUIC: no path validation, no new connection IDs,
//! no congestion reset beyond what the loss itself causes, and no stateless reset. The
//! authentication that QUIC's address checks would otherwise add comes from the TLS handshake,
//! bound to the peers' identities (see [`super::auth`]).
//!
//! Incoming QUIC packets reach quinn through a [`QuicInbound`]: the endpoint socket's reader and
//! the relay task hand it every QUIC-class datagram and the adapter's `poll_recv` drains it.
//!
//! On Linux, direct sends batch up to ten datagrams in one `sendmsg` with UDP segmentation
//! offload (see `gso`, and why it was measured to be worth it); the relay always gets one
//! datagram per `DATA` frame.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};

/// The address QUIC believes the peer has, whatever the real path.
///
/// In `100::/64`, the IPv6 discard-only prefix (RFC 6666): it never names a real host, so it
/// cannot be mistaken for one in logs, and nothing is ever sent to it (the adapter ignores a
/// transmit's destination and uses the route). Port 9 is the discard port.
pub const PEER_ADDR: SocketAddr = SocketAddr::V6(SocketAddrV6::new(
    Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 1),
    9,
    0,
    0,
));

/// The address QUIC believes it has: the same discard-only prefix as [`PEER_ADDR`], so both are
/// IPv6 (quinn maps the peer address to the local address's family).
pub const LOCAL_ADDR: SocketAddr = SocketAddr::V6(SocketAddrV6::new(
    Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 2),
    9,
    0,
    0,
));

/// Packets waiting for quinn in a [`QuicInbound`]. Deep enough for a burst of a full
/// congestion window at LAN speed (4096 × 1452 bytes ≈ 6 MB) while quinn's endpoint task is
/// busy; beyond it packets are dropped and QUIC's loss recovery slows the sender down.
pub const INBOUND_QUEUE: usize = 4096;

/// Where QUIC packets for the peer go now.
enum Path {
    /// Nowhere: the driver has no path (re-punching, or not yet connected). QUIC sees loss.
    None,
    /// Straight out of the shared endpoint socket to the peer's address.
    Direct {
        socket: Arc<UdpSocket>,
        remote: SocketAddr,
    },
    /// Into the relay's send queue, which carries them as `DATA` frames.
    Relayed(mpsc::Sender<Bytes>),
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::None => f.write_str("None"),
            Path::Direct { remote, .. } => {
                write!(f, "Direct({})", crate::link::addresses::canonical(*remote))
            }
            Path::Relayed(_) => f.write_str("Relayed"),
        }
    }
}

/// Counters of one link's QUIC datagrams, all monotonic.
#[derive(Debug, Default)]
struct Counters {
    sent_direct: AtomicU64,
    sent_relayed: AtomicU64,
    dropped_no_route: AtomicU64,
    dropped_relay_full: AtomicU64,
    dropped_send_error: AtomicU64,
    received: AtomicU64,
    dropped_inbound_full: AtomicU64,
    dropped_oversized: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A snapshot of a link's QUIC datagram counters (datagrams, not bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuicPathStats {
    /// Sent from the endpoint socket to the peer's address.
    pub sent_direct: u64,
    /// Queued for the relay.
    pub sent_relayed: u64,
    /// Dropped because there was no route ([`QuicRoute::set_none`]).
    pub dropped_no_route: u64,
    /// Dropped because the relay's queue was full (or the relay gone).
    pub dropped_relay_full: u64,
    /// Dropped because the endpoint socket refused them (an error other than "would block",
    /// e.g. an ICMP unreachable reported on a dying direct path), or because the socket would
    /// have blocked in the middle of a batch sent one datagram at a time.
    pub dropped_send_error: u64,
    /// Accepted by [`QuicInbound::deliver`].
    pub received: u64,
    /// Dropped by [`QuicInbound::deliver`] because quinn was [`INBOUND_QUEUE`] packets behind.
    pub dropped_inbound_full: u64,
    /// Dropped on the way in because they were larger than quinn's receive buffers (only a
    /// misbehaving peer sends those: our transport parameters announce the limit).
    pub dropped_oversized: u64,
}

/// What the route, the inbound queue and the adapter share.
#[derive(Debug)]
struct RouteInner {
    path: RwLock<Path>,
    /// Wakes pollers that wait for the old direct socket's writability when the path changes.
    changed: Notify,
    /// Set when a direct send would have blocked, cleared once a poller saw the socket
    /// writable again: until then pollers answer "writable" without waiting on anything.
    blocked: AtomicBool,
}

/// The handle the link's driver uses to tell QUIC where the peer is now. Cheap to clone; every
/// clone moves the same link's packets.
///
/// Call one of the setters at every path change; QUIC itself never notices (its peer is always
/// [`PEER_ADDR`]), it only sees loss while there is no route.
#[derive(Clone, Debug)]
pub struct QuicRoute {
    inner: Arc<RouteInner>,
    counters: Arc<Counters>,
}

impl Default for QuicRoute {
    fn default() -> Self {
        QuicRoute::new()
    }
}

impl QuicRoute {
    /// A route with no path yet: packets are dropped until a setter is called.
    pub fn new() -> QuicRoute {
        QuicRoute {
            inner: Arc::new(RouteInner {
                path: RwLock::new(Path::None),
                changed: Notify::new(),
                blocked: AtomicBool::new(false),
            }),
            counters: Arc::new(Counters::default()),
        }
    }

    /// Sends from now on straight out of `socket` (the link's endpoint socket) to `remote`
    /// (plain IPv4 or IPv6: written IPv4-mapped here if the socket is a dual-stack one).
    pub fn set_direct(&self, socket: Arc<UdpSocket>, remote: SocketAddr) {
        let remote = match socket.local_addr() {
            Ok(local) => crate::link::addresses::on_socket(local, remote),
            Err(_) => remote,
        };
        self.set(Path::Direct { socket, remote });
    }

    /// Sends from now on into the relay's queue (`Relay`'s packet sender, whose receiver writes
    /// `DATA` frames).
    pub fn set_relayed(&self, sender: mpsc::Sender<Bytes>) {
        self.set(Path::Relayed(sender));
    }

    /// Drops every packet from now on, until another setter is called.
    pub fn set_none(&self) {
        self.set(Path::None);
    }

    fn set(&self, path: Path) {
        tracing::debug!(?path, "QUIC route changed");
        *write(&self.inner.path) = path;
        self.inner.changed.notify_waiters();
    }

    /// The counters so far.
    pub fn stats(&self) -> QuicPathStats {
        let c = &*self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        QuicPathStats {
            sent_direct: get(&c.sent_direct),
            sent_relayed: get(&c.sent_relayed),
            dropped_no_route: get(&c.dropped_no_route),
            dropped_relay_full: get(&c.dropped_relay_full),
            dropped_send_error: get(&c.dropped_send_error),
            received: get(&c.received),
            dropped_inbound_full: get(&c.dropped_inbound_full),
            dropped_oversized: get(&c.dropped_oversized),
        }
    }
}

/// A read lock that survives poisoning: the path is replaced whole, so a panic elsewhere cannot
/// leave it half-written.
fn read(lock: &RwLock<Path>) -> std::sync::RwLockReadGuard<'_, Path> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(lock: &RwLock<Path>) -> std::sync::RwLockWriteGuard<'_, Path> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Packets on their way to quinn.
#[derive(Debug, Default)]
struct InboundQueue {
    packets: VecDeque<Bytes>,
    /// The endpoint task waiting for a packet, if it is.
    waker: Option<Waker>,
    /// Set when the adapter is gone: nothing will drain the queue any more.
    closed: bool,
}

#[derive(Debug)]
struct InboundInner {
    queue: Mutex<InboundQueue>,
    counters: Arc<Counters>,
}

impl InboundInner {
    /// The queue; a panic while it was held cannot leave it inconsistent (every operation on it
    /// is a single push, pop or swap), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, InboundQueue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The handle that feeds the peer's QUIC packets to the link's QUIC endpoint. Cheap to clone:
/// give one to the endpoint socket's reader and one to the relay task.
#[derive(Clone, Debug)]
pub struct QuicInbound {
    inner: Arc<InboundInner>,
}

impl QuicInbound {
    /// Hands one QUIC-class datagram from the peer (first byte 0x40 to 0x7F or 0xC0 to 0xFF,
    /// whichever path it came by) to QUIC. Never blocks: if quinn is [`INBOUND_QUEUE`] packets
    /// behind, the packet is dropped and counted, and QUIC treats it as lost. Returns whether
    /// the packet was queued.
    pub fn deliver(&self, packet: Bytes) -> bool {
        let mut queue = self.inner.lock();
        if queue.closed || packet.is_empty() {
            return false;
        }
        if queue.packets.len() >= INBOUND_QUEUE {
            drop(queue);
            bump(&self.inner.counters.dropped_inbound_full);
            return false;
        }
        queue.packets.push_back(packet);
        let waker = queue.waker.take();
        drop(queue);
        bump(&self.inner.counters.received);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }
}

/// The [`AsyncUdpSocket`] quinn's endpoint runs on (see the module documentation).
#[derive(Debug)]
pub(crate) struct LinkSocket {
    route: Arc<RouteInner>,
    inbound: Arc<InboundInner>,
    counters: Arc<Counters>,
    /// Whether direct sends may use segmentation offload: until the kernel says it cannot.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    gso: AtomicBool,
}

impl LinkSocket {
    /// An adapter sending by `route`, and the inbound handle that feeds it.
    pub(crate) fn new(route: &QuicRoute) -> (LinkSocket, QuicInbound) {
        let inbound = Arc::new(InboundInner {
            queue: Mutex::new(InboundQueue::default()),
            counters: route.counters.clone(),
        });
        let socket = LinkSocket {
            route: route.inner.clone(),
            inbound: inbound.clone(),
            counters: route.counters.clone(),
            gso: AtomicBool::new(cfg!(target_os = "linux")),
        };
        (socket, QuicInbound { inner: inbound })
    }

    /// Sends one datagram by the current path. Only "would block" on the direct path is an
    /// error: every other failure is a lost packet, because quinn tears the whole connection
    /// down on any other error, and a path that fails now (an ICMP unreachable while the peer's
    /// NAT mapping is gone, a full relay queue) is exactly what the driver repairs by re-punching.
    fn send_one(&self, path: &Path, datagram: &[u8]) -> io::Result<()> {
        match path {
            Path::None => bump(&self.counters.dropped_no_route),
            Path::Direct { socket, remote } => match socket.try_send_to(datagram, *remote) {
                Ok(_) => bump(&self.counters.sent_direct),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.route.blocked.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "QUIC datagram not sent on the direct path");
                    bump(&self.counters.dropped_send_error);
                }
            },
            Path::Relayed(sender) => match sender.try_send(Bytes::copy_from_slice(datagram)) {
                Ok(()) => bump(&self.counters.sent_relayed),
                Err(_) => bump(&self.counters.dropped_relay_full),
            },
        }
        Ok(())
    }
}

impl Drop for LinkSocket {
    fn drop(&mut self) {
        let mut queue = self.inbound.lock();
        queue.closed = true;
        queue.packets.clear();
        queue.waker = None;
    }
}

impl AsyncUdpSocket for LinkSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(RoutePoller {
            route: self.route.clone(),
            wait: None,
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let path = read(&self.route.path);
        let contents = transmit.contents;
        let size = transmit.segment_size.unwrap_or(contents.len()).max(1);
        #[cfg(target_os = "linux")]
        if let Path::Direct { socket, remote } = &*path
            && size < contents.len()
            && self.gso.load(Ordering::Relaxed)
            && let Ok(segment) = u16::try_from(size)
        {
            let count = contents.len().div_ceil(size) as u64;
            match super::gso::send(socket, *remote, contents, segment) {
                Ok(()) => {
                    self.counters
                        .sent_direct
                        .fetch_add(count, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.route.blocked.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                Err(e) if super::gso::unsupported(&e) => {
                    tracing::info!(error = %e, "UDP segmentation offload unavailable; QUIC sends datagrams one by one");
                    self.gso.store(false, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "QUIC datagrams not sent on the direct path");
                    let dropped = &self.counters.dropped_send_error;
                    dropped.fetch_add(count, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
        // One datagram at a time: the relay must get each as a `DATA` frame of its own.
        for (i, datagram) in contents.chunks(size).enumerate() {
            if let Err(e) = self.send_one(&path, datagram) {
                if i == 0 {
                    // Nothing sent yet: quinn retries the whole transmit once writable.
                    return Err(e);
                }
                // Resending the rest would duplicate what went out: the rest is lost.
                let rest = contents[i * size..].len().div_ceil(size) as u64;
                self.counters
                    .dropped_send_error
                    .fetch_add(rest, Ordering::Relaxed);
                break;
            }
        }
        Ok(())
    }

    /// [`gso::MAX_SEGMENTS`](super::gso::MAX_SEGMENTS) while segmentation offload works (Linux),
    /// else 1. Batches are cut into single datagrams for the relay and when offload fails.
    fn max_transmit_segments(&self) -> usize {
        #[cfg(target_os = "linux")]
        if self.gso.load(Ordering::Relaxed) {
            return super::gso::MAX_SEGMENTS;
        }
        1
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut queue = self.inbound.lock();
        let mut filled = 0;
        while filled < bufs.len().min(meta.len()) {
            let Some(packet) = queue.packets.pop_front() else {
                break;
            };
            let buf = &mut bufs[filled];
            if packet.len() > buf.len() {
                bump(&self.counters.dropped_oversized);
                continue;
            }
            buf[..packet.len()].copy_from_slice(&packet);
            let m = &mut meta[filled];
            m.addr = PEER_ADDR;
            m.len = packet.len();
            m.stride = packet.len();
            m.ecn = None;
            m.dst_ip = None;
            filled += 1;
        }
        if filled > 0 {
            return Poll::Ready(Ok(filled));
        }
        match &queue.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => queue.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(LOCAL_ADDR)
    }

    /// False, so that quinn runs MTU discovery (it only does when the socket promises not to
    /// fragment). Bounded at 1452 bytes (see `super::transport_config`), probes fit the first
    /// hop of any Ethernet-sized path, where Linux's default (`IP_PMTUDISC_WANT`) sends them
    /// with DF set, so a too-large probe is lost rather than fragmented; the relay carries up to
    /// 65,000 bytes a packet.
    fn may_fragment(&self) -> bool {
        false
    }
}

/// The future a poller waits on: the direct socket's writability or a route change.
type WaitWritable = Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>;

/// Tells a quinn connection when to retry a send that would have blocked: when the current
/// direct socket is writable again, or as soon as the route changes (the new path may not
/// block at all). The relayed and no-route paths never block.
///
/// quinn asks before every datagram, so the common answer costs one atomic load: "writable",
/// unless a send actually blocked since the last wait.
struct RoutePoller {
    route: Arc<RouteInner>,
    wait: Option<WaitWritable>,
}

impl fmt::Debug for RoutePoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutePoller")
            .field("waiting", &self.wait.is_some())
            .finish()
    }
}

impl UdpPoller for RoutePoller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.wait.is_none() && !this.route.blocked.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        let wait = this.wait.get_or_insert_with(|| {
            let route = this.route.clone();
            Box::pin(async move {
                // Registered before the path is read, so a change in between still wakes us.
                let changed = route.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let socket = match &*read(&route.path) {
                    Path::Direct { socket, .. } => socket.clone(),
                    Path::Relayed(_) | Path::None => return Ok(()),
                };
                tokio::select! {
                    ready = socket.writable() => ready,
                    () = changed => Ok(()),
                }
            })
        });
        let result = wait.as_mut().poll(cx);
        if result.is_ready() {
            this.wait = None;
            // Wrong only if another send blocks meanwhile, which sets it again.
            this.route.blocked.store(false, Ordering::Relaxed);
        }
        result
    }
}
