//! Batched UDP I/O: `recvmmsg(2)` and `sendmmsg(2)` behind a safe interface.
//!
//! One system call per batch instead of per datagram is what lets a single core answer at the
//! rate of a plain echo server (docs/DESIGN.md section 3: ~255-290k/s batched vs ~210-260k/s one at a
//! time). Buffers are allocated once per batch object; the hot path allocates nothing.

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

/// `UDP_SEGMENT` from `linux/udp.h` (not exported by the libc crate): the `SOL_UDP` option and
/// control message for UDP generic segmentation offload (GSO).
pub const UDP_SEGMENT: libc::c_int = 103;

/// Most segments per GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels).
pub const GSO_MAX_SEGMENTS: usize = 64;

/// The control message for `sendmsg` that asks the kernel to split one send into `size`-byte
/// datagrams (UDP GSO): a `cmsghdr` (`SOL_UDP`, `UDP_SEGMENT`) followed by a `u16`, padded to
/// `CMSG_SPACE(2)`. `None` where `cmsghdr` is not the 16-byte glibc layout written here. Used by
/// the bench binaries (`stun-loadgen --gso`, `udp-echo --gso`); the server does not use GSO.
pub fn gso_control(size: u16) -> Option<[u8; 24]> {
    if mem::size_of::<libc::cmsghdr>() != 16 || mem::size_of::<usize>() != 8 {
        return None;
    }
    let mut c = [0u8; 24];
    c[0..8].copy_from_slice(&(16usize + 2).to_ne_bytes()); // cmsg_len = CMSG_LEN(2)
    c[8..12].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
    c[12..16].copy_from_slice(&UDP_SEGMENT.to_ne_bytes());
    c[16..18].copy_from_slice(&size.to_ne_bytes());
    Some(c)
}

/// Converts a socket address into a `sockaddr_storage` and its length.
fn to_sockaddr(addr: &SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    // SAFETY: sockaddr_storage is large and aligned enough for both sockaddr_in and
    // sockaddr_in6; zeroed bytes are a valid value for both.
    unsafe {
        *storage = mem::zeroed();
        match addr {
            SocketAddr::V4(a) => {
                let sin = &mut *(storage as *mut _ as *mut libc::sockaddr_in);
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr = libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                };
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                let sin6 = &mut *(storage as *mut _ as *mut libc::sockaddr_in6);
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_addr = libc::in6_addr {
                    s6_addr: a.ip().octets(),
                };
                sin6.sin6_scope_id = a.scope_id();
                mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }
}

/// Reads a socket address the kernel wrote into `storage`.
fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the kernel wrote a sockaddr_in, which fits the storage.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                port,
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The message headers for one syscall, pointing into `bufs` and `addrs`.
///
/// Rebuilt before every call (a few stores per slot) so no struct ever holds pointers into
/// itself and the batch objects stay freely movable.
fn fill_headers(
    msgs: &mut [libc::mmsghdr],
    iovecs: &mut [libc::iovec],
    addrs: &mut [libc::sockaddr_storage],
    bufs: &mut [u8],
    slot_len: usize,
    lens: Option<&[usize]>,
    addr_lens: Option<&[libc::socklen_t]>,
) {
    for (i, ((msg, iov), addr)) in msgs
        .iter_mut()
        .zip(iovecs.iter_mut())
        .zip(addrs)
        .enumerate()
    {
        let len = lens.map_or(slot_len, |l| l[i]);
        iov.iov_base = bufs[i * slot_len..].as_mut_ptr().cast();
        iov.iov_len = len;
        // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
        msg.msg_hdr = unsafe { mem::zeroed() };
        msg.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
        msg.msg_hdr.msg_namelen = addr_lens.map_or(
            mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
            |l| l[i],
        );
        msg.msg_hdr.msg_iov = iov;
        msg.msg_hdr.msg_iovlen = 1;
        msg.msg_len = 0;
    }
}

fn zeroed_vec<T>(n: usize) -> Vec<T> {
    // SAFETY: only used for libc plain-old-data structs, for which all-zero bytes are valid.
    (0..n)
        .map(|_| unsafe { MaybeUninit::<T>::zeroed().assume_init() })
        .collect()
}

/// Receives up to `capacity` datagrams per call.
pub struct BatchReceiver {
    slot_len: usize,
    bufs: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    count: usize,
}

// SAFETY: the raw pointers inside iovec/mmsghdr are scratch, rebuilt before every syscall and
// never dereferenced by us; they point only into this struct's own heap buffers.
unsafe impl Send for BatchReceiver {}

impl BatchReceiver {
    /// Room for `capacity` datagrams of up to `slot_len` bytes each.
    pub fn new(capacity: usize, slot_len: usize) -> Self {
        Self {
            slot_len,
            bufs: vec![0; capacity * slot_len],
            addrs: zeroed_vec(capacity),
            iovecs: zeroed_vec(capacity),
            msgs: zeroed_vec(capacity),
            count: 0,
        }
    }

    /// Receives what is queued without blocking: returns how many datagrams arrived (0 when the
    /// socket had nothing).
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        self.count = 0;
        fill_headers(
            &mut self.msgs,
            &mut self.iovecs,
            &mut self.addrs,
            &mut self.bufs,
            self.slot_len,
            None,
            None,
        );
        let fd: RawFd = socket.as_raw_fd();
        // SAFETY: every header points at a live buffer of `slot_len` bytes and an address slot
        // of its full size, all owned by `self` and not otherwise borrowed during the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                self.msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(err),
            };
        }
        self.count = n as usize;
        Ok(self.count)
    }

    /// Datagram `i` of the last [`BatchReceiver::recv`]: sender and bytes. `None` for a
    /// datagram larger than a slot (truncated by the kernel) or from an unknown family.
    pub fn get(&self, i: usize) -> Option<(SocketAddr, &[u8])> {
        if i >= self.count {
            return None;
        }
        let msg = &self.msgs[i];
        if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let from = from_sockaddr(&self.addrs[i])?;
        let start = i * self.slot_len;
        Some((from, &self.bufs[start..start + msg.msg_len as usize]))
    }

    /// How many datagrams the last receive returned.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the last receive returned nothing.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Most datagrams one call can return.
    pub fn capacity(&self) -> usize {
        self.msgs.len()
    }
}

/// Queues datagrams for one socket and sends them with as few calls as possible.
pub struct BatchSender {
    slot_len: usize,
    bufs: Vec<u8>,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    count: usize,
}

// SAFETY: as for BatchReceiver.
unsafe impl Send for BatchSender {}

/// What a [`BatchSender::flush`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushOutcome {
    /// Datagrams the kernel accepted.
    pub sent: usize,
    /// Datagrams dropped because the send buffer was full or the kernel refused them.
    pub dropped: usize,
}

impl BatchSender {
    /// Room for `capacity` queued datagrams of up to `slot_len` bytes each.
    pub fn new(capacity: usize, slot_len: usize) -> Self {
        Self {
            slot_len,
            bufs: vec![0; capacity * slot_len],
            lens: vec![0; capacity],
            addrs: zeroed_vec(capacity),
            addr_lens: vec![0; capacity],
            iovecs: zeroed_vec(capacity),
            msgs: zeroed_vec(capacity),
            count: 0,
        }
    }

    /// Whether no more datagrams fit before a flush.
    pub fn is_full(&self) -> bool {
        self.count == self.lens.len()
    }

    /// Datagrams queued.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The buffer of the next free slot, to write a datagram into before [`BatchSender::commit`].
    /// `None` when full: flush first.
    pub fn next_slot(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let start = self.count * self.slot_len;
        Some(&mut self.bufs[start..start + self.slot_len])
    }

    /// Queues the first `len` bytes of the slot [`BatchSender::next_slot`] returned, for `to`.
    pub fn commit(&mut self, len: usize, to: SocketAddr) {
        if self.is_full() {
            return;
        }
        let i = self.count;
        self.lens[i] = len.min(self.slot_len);
        self.addr_lens[i] = to_sockaddr(&to, &mut self.addrs[i]);
        self.count += 1;
    }

    /// Queues a copy of `data` for `to`; returns false (and queues nothing) when full or when
    /// `data` is larger than a slot.
    pub fn push(&mut self, data: &[u8], to: SocketAddr) -> bool {
        match self.next_slot() {
            Some(slot) if data.len() <= slot.len() => {
                slot[..data.len()].copy_from_slice(data);
                self.commit(data.len(), to);
                true
            }
            _ => false,
        }
    }

    /// Sends everything queued and empties the queue. Datagrams the kernel will not take right
    /// now (a full send buffer) are dropped and counted, as a UDP server must rather than block.
    pub fn flush(&mut self, socket: &impl AsRawFd) -> FlushOutcome {
        let total = self.count;
        let mut outcome = FlushOutcome::default();
        if total == 0 {
            return outcome;
        }
        fill_headers(
            &mut self.msgs[..total],
            &mut self.iovecs[..total],
            &mut self.addrs[..total],
            &mut self.bufs,
            self.slot_len,
            Some(&self.lens[..total]),
            Some(&self.addr_lens[..total]),
        );
        let fd = socket.as_raw_fd();
        let mut done = 0;
        let mut retries = 0;
        while done < total {
            // SAFETY: headers `done..total` point at live buffers of their stated lengths and at
            // address slots of their stated lengths, all owned by `self`.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.msgs[done..total].as_mut_ptr(),
                    (total - done) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                done += n as usize;
                outcome.sent += n as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted && retries < 3 {
                retries += 1;
                continue;
            }
            // The first datagram failed (full buffer, unreachable destination, ...): drop it
            // and try the rest, so one bad destination cannot block the others.
            done += 1;
            outcome.dropped += 1;
        }
        self.count = 0;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn gso_control_matches_the_libc_layout() {
        let Some(c) = gso_control(1200) else {
            return; // not the glibc 64-bit layout: nothing to check
        };
        // SAFETY: CMSG_LEN and CMSG_SPACE are pure arithmetic on their argument.
        let (len, space) = unsafe { (libc::CMSG_LEN(2), libc::CMSG_SPACE(2)) };
        assert_eq!(c.len(), space as usize);
        assert_eq!(
            usize::from_ne_bytes(c[0..8].try_into().unwrap()),
            len as usize
        );
        assert_eq!(
            i32::from_ne_bytes(c[8..12].try_into().unwrap()),
            libc::SOL_UDP
        );
        assert_eq!(
            i32::from_ne_bytes(c[12..16].try_into().unwrap()),
            UDP_SEGMENT
        );
        assert_eq!(u16::from_ne_bytes(c[16..18].try_into().unwrap()), 1200);
    }

    #[test]
    fn batch_round_trip_on_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut tx = BatchSender::new(8, 64);
        for i in 0..5u8 {
            assert!(tx.push(&[i; 10], b.local_addr().unwrap()));
        }
        assert!(
            !tx.push(&[0; 65], b.local_addr().unwrap()),
            "oversized data is refused"
        );
        assert_eq!(
            tx.flush(&a),
            FlushOutcome {
                sent: 5,
                dropped: 0
            }
        );
        assert!(tx.is_empty());

        b.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut peek = [0u8; 1];
        b.peek_from(&mut peek).unwrap();
        let mut rx = BatchReceiver::new(16, 64);
        let mut got = Vec::new();
        for _ in 0..100 {
            let n = rx.recv(&b).unwrap();
            got.extend(
                (0..n)
                    .map(|i| rx.get(i).unwrap())
                    .map(|(from, d)| (from, d.to_vec())),
            );
            if got.len() == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got.len(), 5);
        for (i, (from, data)) in got.iter().enumerate() {
            assert_eq!(*from, a.local_addr().unwrap());
            assert_eq!(data, &vec![i as u8; 10]);
        }
        assert_eq!(
            rx.recv(&b).unwrap(),
            0,
            "nothing left: returns 0, does not block"
        );
    }

    #[test]
    fn oversized_datagram_is_reported_as_truncated() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.send_to(&[1u8; 100], b.local_addr().unwrap()).unwrap();
        a.send_to(&[2u8; 10], b.local_addr().unwrap()).unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut peek = [0u8; 1];
        b.peek_from(&mut peek).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut rx = BatchReceiver::new(4, 32);
        assert_eq!(rx.recv(&b).unwrap(), 2);
        assert!(rx.get(0).is_none());
        assert_eq!(rx.get(1).unwrap().1, &[2u8; 10]);
    }

    #[test]
    fn ipv6_addresses_round_trip_through_sockaddr() {
        let addr: SocketAddr = "[2001:db8::5]:4242".parse().unwrap();
        let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
        to_sockaddr(&addr, &mut storage);
        assert_eq!(from_sockaddr(&storage), Some(addr));
    }
}
