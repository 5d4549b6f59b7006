//! The UDP side of a chat: the endpoint socket (and the extra sockets the birthday method asks
//! for), one reader task per socket feeding a single queue, sending with a per-packet TTL, the
//! first-byte demultiplexer, the STUN Binding that learns the server-reflexive address, and the
//! host candidates.
//!
//! Every datagram arrives as a [`Datagram`] naming the socket it came in on
//! ([`SocketIndex::ENDPOINT`] or an extra socket `1..=n`), so the puncher and the chat session
//! both see which socket and which remote a packet used.
//!
//! Bound to `[::]`, the sockets are dual stack ([`super::addresses`]): IPv4 peers arrive and
//! are reported in plain IPv4 form, and are sent to in IPv4-mapped form, so nothing above the
//! endpoint ever sees `::ffff:a.b.c.d`.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use rand::RngCore;
use rand::rngs::OsRng;
use shared::Transmit;
use shared::punch::SocketIndex;
use shared::stun_client::{BindingError, BindingResponse, BindingTransaction};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::addresses::{self, Families, canonical, on_socket};
use super::quic::QuicInbound;
use crate::binding::{BindingSocket, StunBinding};

/// Datagrams queued from the reader tasks before they wait for the driver.
const QUEUE: usize = 1024;
/// The endpoint socket's receive and send buffer request, in bytes.
const SOCKET_BUFFER: usize = 4 << 20;
/// Buffers per receive call (each holds up to 64 KiB: one datagram, or a run of them joined
/// by GRO).
const READ_BATCH: usize = 8;
/// The largest datagram read (anything longer is cut, and then fails to parse).
const MAX_DATAGRAM: usize = 65_535;

pub use shared::link::{PacketClass, classify};

/// One datagram that arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// The socket it arrived on.
    pub socket: SocketIndex,
    /// Where it came from.
    pub from: SocketAddr,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// One open socket and the task that reads it.
struct Slot {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
    /// The address it is bound to (its family decides how destinations are written).
    local: SocketAddr,
    /// The TTL it sends IPv4 datagrams with by default (an IPv4 or dual-stack socket).
    default_ttl: Option<u32>,
    /// The hop limit it sends IPv6 datagrams with by default (an IPv6 socket).
    default_hops: Option<u32>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The endpoint socket and its extra sockets; see the [module docs](self).
pub struct Endpoint {
    /// Index 0 is the endpoint socket; `None` marks a closed extra socket.
    slots: Vec<Option<Slot>>,
    local: SocketAddr,
    /// Whether the sockets serve IPv4 and IPv6 alike (bound to `[::]`, `IPV6_V6ONLY` off).
    dual_stack: bool,
    tx: mpsc::Sender<Datagram>,
    rx: mpsc::Receiver<Datagram>,
    /// Where QUIC datagrams go once the link runs QUIC (set once).
    quic: Arc<OnceLock<QuicInbound>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local", &self.local)
            .field("sockets", &self.slots.iter().flatten().count())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Binds the endpoint socket to `addr` and starts reading it. On `[::]` the socket is
    /// dual stack, or IPv4 only (`0.0.0.0`) where the host has no IPv6
    /// ([`addresses::bind_udp`]).
    pub async fn bind(addr: SocketAddr) -> io::Result<Endpoint> {
        let socket = UdpSocket::from_std(addresses::bind_udp(addr)?)?;
        // QUIC streams move bulk data through this socket: the default buffers (about
        // 200 KiB) overflow at a few hundred MB/s. The kernel caps the request at
        // net.core.rmem_max / wmem_max; a smaller buffer is not an error.
        let sock = socket2::SockRef::from(&socket);
        if let Err(e) = sock
            .set_recv_buffer_size(SOCKET_BUFFER)
            .and_then(|()| sock.set_send_buffer_size(SOCKET_BUFFER))
        {
            tracing::debug!(error = %e, "cannot enlarge the endpoint socket buffers");
        }
        let local = socket.local_addr()?;
        let dual_stack = addresses::is_dual_stack(local, local.is_ipv6() && sock.only_v6()?);
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut endpoint = Endpoint {
            slots: Vec::new(),
            local,
            dual_stack,
            tx,
            rx,
            quic: Arc::new(OnceLock::new()),
        };
        endpoint.add(socket)?;
        Ok(endpoint)
    }

    fn add(&mut self, socket: UdpSocket) -> io::Result<SocketIndex> {
        let index = SocketIndex(
            u16::try_from(self.slots.len())
                .map_err(|_| io::Error::other("too many sockets for one endpoint"))?,
        );
        let local = socket.local_addr()?;
        let (default_ttl, default_hops) = match local {
            SocketAddr::V4(_) => (Some(socket.ttl()?), None),
            // A dual-stack socket sends IPv4 with IP_TTL, which Linux keeps per socket for
            // IPv6 sockets too.
            SocketAddr::V6(_) if self.dual_stack => {
                (Some(socket.ttl()?), Some(hop_limit(&socket)?))
            }
            SocketAddr::V6(_) => (None, Some(hop_limit(&socket)?)),
        };
        let socket = Arc::new(socket);
        let reader = tokio::spawn(read_loop(
            socket.clone(),
            index,
            self.tx.clone(),
            self.quic.clone(),
        ));
        self.slots.push(Some(Slot {
            socket,
            reader,
            local,
            default_ttl,
            default_hops,
        }));
        Ok(index)
    }

    /// The endpoint socket's local address (as bound: the IP may be unspecified, `[::]` for a
    /// dual-stack socket).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Whether the sockets reach IPv4 and IPv6 peers alike.
    pub fn is_dual_stack(&self) -> bool {
        self.dual_stack
    }

    /// The host candidates of the endpoint socket ([`addresses::host_candidates`]): both
    /// families on a dual-stack socket.
    pub fn host_candidates(&self, include_loopback: bool) -> Vec<SocketAddr> {
        let families = Families::of(self.local, self.dual_stack);
        addresses::host_candidates(self.local, families, include_loopback)
    }

    /// The next datagram on any socket. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Datagram> {
        self.rx.recv().await
    }

    /// From now on, QUIC datagrams on every socket go to `inbound` instead of
    /// [`Endpoint::recv`]. Only the first call counts.
    pub fn set_quic_inbound(&self, inbound: QuicInbound) {
        if self.quic.set(inbound).is_err() {
            tracing::debug!("the endpoint already has a QUIC inbound");
        }
    }

    /// The socket `index`, if open (QUIC sends from it directly on a direct path).
    pub fn socket(&self, index: SocketIndex) -> Option<Arc<UdpSocket>> {
        self.slots
            .get(usize::from(index.0))
            .and_then(Option::as_ref)
            .map(|slot| slot.socket.clone())
    }

    /// Opens `count` extra sockets on the endpoint's IP (dual stack like it), numbered after
    /// the ones already open; returns how many opened (stops at the first failure, say a file
    /// limit).
    pub async fn open_extra(&mut self, count: u16) -> u16 {
        let mut opened = 0;
        for _ in 0..count {
            let addr = SocketAddr::new(self.local.ip(), 0);
            let bound = addresses::bind_udp(addr).and_then(UdpSocket::from_std);
            let socket = match bound {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, opened, "cannot open more extra sockets");
                    break;
                }
            };
            if let Err(e) = self.add(socket) {
                tracing::warn!(error = %e, opened, "cannot use an extra socket");
                break;
            }
            opened += 1;
        }
        opened
    }

    /// Closes every extra socket but `keep` (the endpoint socket always stays open).
    pub fn close_extras_except(&mut self, keep: SocketIndex) {
        for (i, slot) in self.slots.iter_mut().enumerate().skip(1) {
            if i != usize::from(keep.0) {
                *slot = None;
            }
        }
    }

    /// Sends `data` from `socket` to `to` (plain IPv4 or IPv6; written as the socket needs
    /// it), with `ttl` for this datagram only when given: the TTL of an IPv4 datagram, the
    /// hop limit of an IPv6 one. Errors (an unreachable network, a family the socket cannot
    /// send, a closed socket) are returned for logging; UDP loss is expected anyway.
    pub async fn send(
        &self,
        socket: SocketIndex,
        to: SocketAddr,
        data: &[u8],
        ttl: Option<u8>,
    ) -> io::Result<()> {
        let slot = self
            .slots
            .get(usize::from(socket.0))
            .and_then(Option::as_ref)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such socket"))?;
        let to = canonical(to);
        let wire = on_socket(slot.local, to);
        let Some(ttl) = ttl else {
            return slot.socket.send_to(data, wire).await.map(drop);
        };
        let (v4, default) = match to {
            SocketAddr::V4(_) => (true, slot.default_ttl),
            SocketAddr::V6(_) => (false, slot.default_hops),
        };
        let default = default.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "the socket cannot send this family",
            )
        })?;
        // Sends happen one at a time from the driver's loop, so nothing else sends on this
        // socket between setting and restoring the TTL.
        set_ttl(&slot.socket, v4, u32::from(ttl))?;
        let sent = slot.socket.send_to(data, wire).await;
        let restored = set_ttl(&slot.socket, v4, default);
        sent?;
        restored
    }

    /// Learns the endpoint socket's server-reflexive address with a STUN Binding transaction
    /// to `server` from the endpoint socket itself. Datagrams other than the answer are
    /// dropped (nothing else is expected before our offer is out). Gives up after about
    /// `budget`.
    pub async fn stun_binding(
        &mut self,
        server: SocketAddr,
        budget: Duration,
    ) -> Result<SocketAddr, String> {
        let binding = StunBinding::new(binding_transaction(server, budget, Instant::now()));
        let outcome = binding.run(&mut EndpointIo(self)).await?;
        outcome_address(server, &outcome)
    }
}

/// The endpoint as a [`BindingSocket`], for the first gathering: sends are best effort (a
/// failure is logged, as UDP loss is expected anyway), receiving ends only when the endpoint
/// socket closes.
struct EndpointIo<'a>(&'a mut Endpoint);

impl BindingSocket for EndpointIo<'_> {
    type Error = String;

    async fn send(&mut self, t: &Transmit, data: &[u8]) -> Result<(), String> {
        let to = t.destination;
        if let Err(e) = self.0.send(t.socket, to, data, t.ttl).await {
            tracing::debug!(error = %e, %to, "STUN send failed");
        }
        Ok(())
    }

    async fn recv(&mut self, deadline: Instant) -> Result<Option<Datagram>, String> {
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => Ok(None),
            datagram = self.0.rx.recv() => datagram
                .map(Some)
                .ok_or_else(|| "the endpoint socket closed".into()),
        }
    }
}

/// The first gathering's STUN Binding to `server`: [`shared::link::gather_binding`] with a
/// random transaction id.
pub fn binding_transaction(
    server: SocketAddr,
    budget: Duration,
    now: Instant,
) -> BindingTransaction {
    let mut id = [0u8; 12];
    OsRng.fill_bytes(&mut id);
    shared::link::gather_binding(server, id, budget, now)
}

fn outcome_address(
    server: SocketAddr,
    outcome: &Result<BindingResponse, BindingError>,
) -> Result<SocketAddr, String> {
    match outcome {
        Ok(response) => response
            .mapped
            .ok_or_else(|| format!("{server} sent no mapped address")),
        Err(e) => Err(format!("STUN Binding to {server}: {e}")),
    }
}

/// Reads one socket until the endpoint goes: QUIC datagrams straight to QUIC (once it runs),
/// everything else to the driver.
///
/// Reads go through quinn's `quinn-udp`, which turns on UDP generic receive offload (GRO) on
/// Linux: the kernel hands over runs of same-sized datagrams from one sender in one buffer,
/// and several buffers per system call, which is most of what a bulk transfer's receiver
/// spends otherwise (one `recvfrom` per 1,452-byte packet). Every buffer is split at its
/// stride, for every kind of datagram: with GRO on, even two chat packets may arrive joined.
/// Where the socket state cannot be set up, a plain `recv_from` loop does the same work.
async fn read_loop(
    socket: Arc<UdpSocket>,
    index: SocketIndex,
    tx: mpsc::Sender<Datagram>,
    quic: Arc<OnceLock<QuicInbound>>,
) {
    let state = match quinn::udp::UdpSocketState::new((&*socket).into()) {
        Ok(state) => state,
        Err(e) => {
            tracing::debug!(error = %e, socket = index.0, "no offloaded reads; one datagram a call");
            return read_plain(socket, index, tx, quic).await;
        }
    };
    let batch = quinn::udp::BATCH_SIZE.clamp(1, READ_BATCH);
    let mut bufs: Vec<Vec<u8>> = (0..batch).map(|_| vec![0u8; MAX_DATAGRAM]).collect();
    let mut meta = vec![quinn::udp::RecvMeta::default(); batch];
    loop {
        if let Err(e) = socket.readable().await {
            tracing::debug!(error = %e, socket = index.0, "UDP readiness error");
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let received = socket.try_io(tokio::io::Interest::READABLE, || {
            let mut slices: Vec<std::io::IoSliceMut<'_>> = bufs
                .iter_mut()
                .map(|b| std::io::IoSliceMut::new(b))
                .collect();
            state.recv((&*socket).into(), &mut slices, &mut meta)
        });
        let count = match received {
            Ok(count) => count,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // ICMP errors reported on the socket and the like: not fatal for UDP.
                tracing::debug!(error = %e, socket = index.0, "UDP receive error");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        for (buf, meta) in bufs.iter().zip(&meta).take(count) {
            let stride = if meta.stride == 0 {
                meta.len
            } else {
                meta.stride
            };
            for datagram in buf[..meta.len].chunks(stride.max(1)) {
                if !dispatch(datagram, meta.addr, index, &tx, &quic).await {
                    return;
                }
            }
        }
    }
}

/// [`read_loop`] without offload: one `recv_from` a datagram.
async fn read_plain(
    socket: Arc<UdpSocket>,
    index: SocketIndex,
    tx: mpsc::Sender<Datagram>,
    quic: Arc<OnceLock<QuicInbound>>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                if !dispatch(&buf[..n], from, index, &tx, &quic).await {
                    return;
                }
            }
            Err(e) => {
                // ICMP errors reported on the socket and the like: not fatal for UDP.
                tracing::debug!(error = %e, socket = index.0, "UDP receive error");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Hands one datagram on; `false` once the driver is gone.
async fn dispatch(
    data: &[u8],
    from: SocketAddr,
    socket: SocketIndex,
    tx: &mpsc::Sender<Datagram>,
    quic: &OnceLock<QuicInbound>,
) -> bool {
    // QUIC goes straight to its endpoint: the bulk of a transfer, and no business of the
    // driver's loop (the packets are authenticated by QUIC itself).
    if let Some(quic) = quic.get()
        && classify(data) == PacketClass::Quic
    {
        quic.deliver(Bytes::copy_from_slice(data));
        return true;
    }
    let datagram = Datagram {
        socket,
        from: canonical(from),
        data: data.to_vec(),
    };
    tx.send(datagram).await.is_ok()
}

/// Sets the TTL of the socket's IPv4 datagrams (`v4`) or the hop limit of its IPv6 ones.
fn set_ttl(socket: &UdpSocket, v4: bool, ttl: u32) -> io::Result<()> {
    if v4 {
        socket.set_ttl(ttl)
    } else {
        set_hop_limit(socket, ttl)
    }
}

fn hop_limit(socket: &UdpSocket) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the fd is open for the socket's lifetime; `value` and `len` are valid for writes
    // of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_UNICAST_HOPS,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u32::try_from(value).unwrap_or(64))
}

fn set_hop_limit(socket: &UdpSocket, hops: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(hops).unwrap_or(64);
    // SAFETY: the fd is open for the socket's lifetime; `value` is a valid c_int of the size
    // given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_UNICAST_HOPS,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn demux_sorts_by_the_first_byte() {
        assert_eq!(classify(&[0x00, 0x01, 0, 0]), PacketClass::Stun);
        assert_eq!(classify(&[0x01, 0x01, 0, 0]), PacketClass::Stun);
        for kind in [0x80, 0x81, 0x82, 0x83] {
            assert_eq!(classify(&[kind, 1, 2]), PacketClass::Chat, "{kind:#x}");
        }
        for kind in [
            shared::punch::wire::PROBE_KIND,
            shared::punch::wire::ACK_KIND,
        ] {
            assert_eq!(classify(&[kind]), PacketClass::Punch, "{kind:#x}");
        }
        for quic in [0x40, 0x7F, 0xC0, 0xC5, 0xFF] {
            assert_eq!(classify(&[quic]), PacketClass::Quic, "{quic:#x}");
        }
        for other in [0x04, 0x3F, 0x86, 0xBF] {
            assert_eq!(classify(&[other]), PacketClass::Other, "{other:#x}");
        }
        assert_eq!(classify(&[]), PacketClass::Other);
    }

    #[test]
    fn demux_agrees_with_the_cores() {
        // Whatever the cores accept as theirs, the demultiplexer routes to them.
        for first in 0..=255u8 {
            let mut packet = vec![first];
            packet.resize(57, 0);
            if shared::chat::is_chat_packet(&packet) {
                assert_eq!(classify(&packet), PacketClass::Chat);
            }
            if shared::punch::is_punch_packet(&packet) {
                assert_eq!(classify(&packet), PacketClass::Punch);
            }
            if shared::stun::Message::parse(&packet).is_ok() {
                assert_eq!(classify(&packet), PacketClass::Stun);
            }
        }
    }

    #[tokio::test]
    async fn sends_with_a_ttl_and_restores_the_default() {
        let mut a = Endpoint::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let b = Endpoint::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let default = a.slots[0].as_ref().unwrap().socket.ttl().unwrap();
        a.send(SocketIndex::ENDPOINT, b.local_addr(), b"\xC4x", Some(2))
            .await
            .unwrap();
        assert_eq!(a.slots[0].as_ref().unwrap().socket.ttl().unwrap(), default);
        let mut b = b;
        let got = b.recv().await.unwrap();
        assert_eq!(got.data, b"\xC4x");
        assert_eq!(got.from, a.local_addr());
        assert_eq!(a.open_extra(2).await, 2);
        b.send(SocketIndex::ENDPOINT, a.local_addr(), b"hi", None)
            .await
            .unwrap();
        assert_eq!(a.recv().await.unwrap().socket, SocketIndex::ENDPOINT);
        a.close_extras_except(SocketIndex(2));
        assert!(a.slots[1].is_none() && a.slots[2].is_some());
    }

    /// Receives one datagram on `socket` and returns the TTL (IPv4) or hop limit (IPv6) it
    /// arrived with, read from the ancillary data the kernel attaches when asked to.
    fn recv_hops(socket: &std::net::UdpSocket) -> u32 {
        use std::os::fd::AsRawFd;
        let v6 = socket.local_addr().unwrap().is_ipv6();
        let (level, option, kind) = if v6 {
            (
                libc::IPPROTO_IPV6,
                libc::IPV6_RECVHOPLIMIT,
                libc::IPV6_HOPLIMIT,
            )
        } else {
            (libc::IPPROTO_IP, libc::IP_RECVTTL, libc::IP_TTL)
        };
        let on: libc::c_int = 1;
        let fd = socket.as_raw_fd();
        // SAFETY: `fd` is an open socket; `on` is a valid c_int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                option,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        let mut data = [0u8; 64];
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: `msg` points at valid buffers for the sizes it states.
        let n = unsafe { libc::recvmsg(fd, &raw mut msg, 0) };
        assert!(n > 0, "{}", io::Error::last_os_error());
        // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
        // `msg_controllen`.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == level && (*cmsg).cmsg_type == kind {
                    let value: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    return u32::try_from(value).unwrap();
                }
                cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
            }
        }
        panic!("no TTL / hop limit in the ancillary data");
    }

    /// The priming probe's short TTL really goes on the wire, for IPv4 and for IPv6 (whose
    /// hop limit is set through its own socket option), from single-family sockets and from a
    /// dual-stack one (which sends IPv4 as IPv4-mapped and sets its TTL with IP_TTL), and
    /// later sends go out with the default again.
    #[tokio::test]
    async fn a_ttl_reaches_the_wire_on_both_families() {
        for (bind, ip) in [
            ("127.0.0.1", "127.0.0.1"),
            ("::1", "::1"),
            ("::", "127.0.0.1"),
            ("::", "::1"),
        ] {
            let receiver = std::net::UdpSocket::bind((ip, 0)).unwrap();
            receiver
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let to = receiver.local_addr().unwrap();
            let mut a = Endpoint::bind(SocketAddr::new(bind.parse().unwrap(), 0))
                .await
                .unwrap();
            assert_eq!(a.is_dual_stack(), bind == "::", "{bind}");
            let slot = a.slots[0].as_ref().unwrap();
            let default = match to {
                SocketAddr::V4(_) => slot.socket.ttl().unwrap(),
                SocketAddr::V6(_) => hop_limit(&slot.socket).unwrap(),
            };
            assert_ne!(default, 2, "{ip}");
            a.send(SocketIndex::ENDPOINT, to, b"\xC4p", Some(2))
                .await
                .unwrap();
            assert_eq!(recv_hops(&receiver), 2, "{ip}: the primed datagram");
            a.send(SocketIndex::ENDPOINT, to, b"\xC4f", None)
                .await
                .unwrap();
            assert_eq!(recv_hops(&receiver), default, "{ip}: the next datagram");
            // The answer arrives in plain form, whatever the socket's family.
            let port = a.local_addr().port();
            receiver
                .send_to(b"\xC4r", SocketAddr::new(ip.parse().unwrap(), port))
                .unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), a.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.from, to, "{bind} -> {ip}");
        }
    }
}
