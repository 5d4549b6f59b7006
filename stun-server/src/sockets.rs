//! Binding the four UDP sockets per worker, and finding a free port pair for tests.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Why a socket could not be set up; the message names the address.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// Another process holds the address.
    #[error("cannot bind {addr}: address already in use (is another STUN server running?)")]
    InUse {
        /// The address.
        addr: SocketAddr,
    },
    /// The address is not configured on any interface of this host.
    #[error("cannot bind {addr}: address not available on this host (check `ip addr`)")]
    NotAvailable {
        /// The address.
        addr: SocketAddr,
    },
    /// Any other failure.
    #[error("cannot bind {addr}: {source}")]
    Other {
        /// The address.
        addr: SocketAddr,
        /// The system error.
        source: io::Error,
    },
    /// No free pair of ports existed on both addresses after several tries.
    #[error("could not find a free port pair on both addresses")]
    NoFreePorts,
}

impl BindError {
    fn from_io(addr: SocketAddr, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::AddrInUse => Self::InUse { addr },
            io::ErrorKind::AddrNotAvailable => Self::NotAvailable { addr },
            _ => Self::Other { addr, source },
        }
    }
}

/// Makes sure nothing else holds `addr` before our SO_REUSEPORT sockets join it.
///
/// SO_REUSEPORT would otherwise silently share the port with another process of the same user
/// (say, a second copy of this server), splitting traffic between the two.
fn probe_exclusive(addr: SocketAddr) -> Result<(), BindError> {
    UdpSocket::bind(addr)
        .map(drop)
        .map_err(|e| BindError::from_io(addr, e))
}

/// Best effort: lift the buffer sizes past `net.core.rmem_max` when running as root.
fn force_buffer(socket: &Socket, option: libc::c_int, bytes: usize) -> bool {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a plain setsockopt with a c_int value on a live descriptor.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Sets the receive and send buffers to `bytes` each: past `net.core.rmem_max`/`wmem_max` when
/// allowed (root), else as far as those limits let a plain request go. The servers and the load
/// generator size their sockets this one way.
pub fn set_buffers(socket: &Socket, bytes: usize) -> std::io::Result<()> {
    if !force_buffer(socket, libc::SO_RCVBUFFORCE, bytes) {
        socket.set_recv_buffer_size(bytes)?;
    }
    if !force_buffer(socket, libc::SO_SNDBUFFORCE, bytes) {
        socket.set_send_buffer_size(bytes)?;
    }
    Ok(())
}

/// A non-blocking UDP socket on `addr` that other workers can share (SO_REUSEPORT), with
/// large buffers so bursts are absorbed rather than dropped.
pub fn bind_udp(addr: SocketAddr, buffer: usize) -> Result<UdpSocket, BindError> {
    let wrap = |e| BindError::from_io(addr, e);
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(wrap)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(wrap)?;
    }
    socket.set_reuse_port(true).map_err(wrap)?;
    set_buffers(&socket, buffer).map_err(wrap)?;
    socket.set_nonblocking(true).map_err(wrap)?;
    socket.bind(&addr.into()).map_err(wrap)?;
    Ok(socket.into())
}

/// Checks that all of `addrs` are free right now.
pub fn probe_all(addrs: &[SocketAddr]) -> Result<(), BindError> {
    addrs.iter().try_for_each(|a| probe_exclusive(*a))
}

/// Picks two ports that are free on `primary` and (if given) `alternate`, for servers started
/// with port 0. RFC 5780 needs the same two ports on both addresses, so the kernel's choice on
/// the primary address is checked on the alternate one and retried if taken.
pub fn pick_free_ports(
    primary: IpAddr,
    alternate: Option<IpAddr>,
    tcp: bool,
) -> Result<(u16, u16), BindError> {
    for _ in 0..50 {
        let first = UdpSocket::bind(SocketAddr::new(primary, 0))
            .map_err(|e| BindError::from_io(SocketAddr::new(primary, 0), e))?;
        let second = UdpSocket::bind(SocketAddr::new(primary, 0))
            .map_err(|e| BindError::from_io(SocketAddr::new(primary, 0), e))?;
        let ports = (
            first
                .local_addr()
                .map_err(|e| BindError::from_io(SocketAddr::new(primary, 0), e))?
                .port(),
            second
                .local_addr()
                .map_err(|e| BindError::from_io(SocketAddr::new(primary, 0), e))?
                .port(),
        );
        let free_on_alternate = alternate.is_none_or(|alt| {
            [ports.0, ports.1]
                .iter()
                .all(|p| UdpSocket::bind(SocketAddr::new(alt, *p)).is_ok())
        });
        let free_on_tcp =
            !tcp || std::net::TcpListener::bind(SocketAddr::new(primary, ports.0)).is_ok();
        if free_on_alternate && free_on_tcp {
            return Ok(ports);
        }
    }
    Err(BindError::NoFreePorts)
}
