//! The UDP side of a chat: the endpoint socket (and the extra sockets the birthday method asks
//! for), one reader task per socket feeding a single queue, sending with a per-packet TTL, the
//! first-byte demultiplexer, the STUN Binding that learns the server-reflexive address, and the
//! host candidates.
//!
//! Every datagram arrives as a [`Datagram`] naming the socket it came in on
//! ([`SocketIndex::ENDPOINT`] or an extra socket `1..=n`), so the puncher and the chat session
//! both see which socket and which remote a packet used.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
    /// The TTL (IPv4) or hop limit (IPv6) the socket sends with by default.
    default_ttl: u32,
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
    /// Binds the endpoint socket to `addr` and starts reading it.
    pub async fn bind(addr: SocketAddr) -> io::Result<Endpoint> {
        let socket = UdpSocket::bind(addr).await?;
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
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut endpoint = Endpoint {
            slots: Vec::new(),
            local,
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
        let default_ttl = match socket.local_addr()? {
            SocketAddr::V4(_) => socket.ttl()?,
            SocketAddr::V6(_) => hop_limit(&socket)?,
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
            default_ttl,
        }));
        Ok(index)
    }

    /// The endpoint socket's local address (as bound: the IP may be unspecified).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
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

    /// Opens `count` extra sockets on the endpoint's IP, numbered after the ones already
    /// open; returns how many opened (stops at the first failure, say a file limit).
    pub async fn open_extra(&mut self, count: u16) -> u16 {
        let mut opened = 0;
        for _ in 0..count {
            let addr = SocketAddr::new(self.local.ip(), 0);
            let socket = match UdpSocket::bind(addr).await {
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

    /// Sends `data` from `socket` to `to`, with `ttl` for this datagram only when given.
    /// Errors (an unreachable network, a closed socket) are returned for logging; UDP loss is
    /// expected anyway.
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
        let Some(ttl) = ttl else {
            return slot.socket.send_to(data, to).await.map(drop);
        };
        // Sends happen one at a time from the driver's loop, so nothing else sends on this
        // socket between setting and restoring the TTL.
        set_ttl(&slot.socket, u32::from(ttl))?;
        let sent = slot.socket.send_to(data, to).await;
        let restored = set_ttl(&slot.socket, slot.default_ttl);
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
        from,
        data: data.to_vec(),
    };
    tx.send(datagram).await.is_ok()
}

fn set_ttl(socket: &UdpSocket, ttl: u32) -> io::Result<()> {
    match socket.local_addr()? {
        SocketAddr::V4(_) => socket.set_ttl(ttl),
        SocketAddr::V6(_) => set_hop_limit(socket, ttl),
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

/// The host candidates of a socket bound to `local`: `local` itself when bound to one IP,
/// else every address of an up interface in the same family (loopback only when
/// `include_loopback`; IPv6 link-local never, it needs a scope id), with `local`'s port.
pub fn host_candidates(local: SocketAddr, include_loopback: bool) -> Vec<SocketAddr> {
    if !local.ip().is_unspecified() {
        return vec![local];
    }
    let mut seen = HashSet::new();
    interface_addresses()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot list the local interfaces");
            Vec::new()
        })
        .into_iter()
        .filter(|ip| ip.is_ipv4() == local.is_ipv4())
        .filter(|ip| include_loopback || !ip.is_loopback())
        .filter(|ip| !is_link_local(ip))
        .filter(|ip| seen.insert(*ip))
        .map(|ip| SocketAddr::new(ip, local.port()))
        .collect()
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The addresses of the interfaces that are up, in `getifaddrs` order.
fn interface_addresses() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        let up = entry.ifa_flags & (libc::IFF_UP as libc::c_uint) != 0;
        if !up || entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr whose family says its size.
        let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
        match family {
            libc::AF_INET => {
                // SAFETY: AF_INET means the sockaddr is a sockaddr_in.
                let sin = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in>() };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            }
            libc::AF_INET6 => {
                // SAFETY: AF_INET6 means the sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*entry.ifa_addr.cast::<libc::sockaddr_in6>() };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
            _ => {}
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
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

    #[test]
    fn a_socket_bound_to_one_ip_has_that_candidate_only() {
        let local: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        assert_eq!(host_candidates(local, false), vec![local]);
    }

    #[test]
    fn wildcard_candidates_keep_the_port_and_family() {
        let local: SocketAddr = "0.0.0.0:4321".parse().unwrap();
        let with_lo = host_candidates(local, true);
        assert!(with_lo.iter().all(|a| a.port() == 4321 && a.is_ipv4()));
        assert!(
            with_lo.contains(&"127.0.0.1:4321".parse().unwrap()),
            "{with_lo:?}"
        );
        let without = host_candidates(local, false);
        assert!(without.iter().all(|a| !a.ip().is_loopback()), "{without:?}");
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
    /// hop limit is set through its own socket option), and later sends go out with the
    /// default again.
    #[tokio::test]
    async fn a_ttl_reaches_the_wire_on_both_families() {
        for ip in ["127.0.0.1", "::1"] {
            let receiver = std::net::UdpSocket::bind((ip, 0)).unwrap();
            receiver
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let to = receiver.local_addr().unwrap();
            let a = Endpoint::bind(SocketAddr::new(ip.parse().unwrap(), 0))
                .await
                .unwrap();
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
        }
    }
}
