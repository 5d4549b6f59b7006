//! Addresses of the endpoint socket: the two forms of an IPv4 address on a dual-stack socket,
//! binding that socket, and the host candidates (the addresses of our own interfaces).
//!
//! The endpoint socket is dual stack when it can be (`[::]:port` with `IPV6_V6ONLY` off), so
//! one socket, and one NAT mapping, reaches IPv4 and IPv6 peers. Such a socket sees an IPv4
//! peer as an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) and must be given one to send to it.
//! Everything above the socket (the link core, offers, events, logs) uses the plain form
//! ([`canonical`]): the reader converts what arrives, the senders convert back
//! ([`on_socket`]), so an address compares equal whichever way it came.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// How many global IPv6 addresses are offered at most (a host with privacy extensions has a
/// stable and one or more temporary addresses per prefix; any one reaches it, and the offer
/// holds at most eight candidates in all).
const MAX_IPV6_HOSTS: usize = 2;

/// `addr` in its plain form: an IPv4-mapped IPv6 address becomes the IPv4 address it maps.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// `to` in the form a socket bound to `local` sends to: an IPv4 address becomes IPv4-mapped
/// on an IPv6 socket (a dual-stack one sends it as IPv4).
pub fn on_socket(local: SocketAddr, to: SocketAddr) -> SocketAddr {
    match (local, to) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => to,
    }
}

/// A UDP socket bound to `addr`, non-blocking. On `[::]` it is dual stack (`IPV6_V6ONLY`
/// off), and where IPv6 is unavailable (no IPv6 in the kernel, or switched off) it falls back
/// to `0.0.0.0` with the same port; any other address is bound as it is.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let dual = matches!(addr, SocketAddr::V6(v6) if v6.ip().is_unspecified());
    if dual {
        match bind_dual_stack(addr.port()) {
            Ok(socket) => return Ok(socket),
            Err(e) => {
                tracing::info!(error = %e, "no IPv6 socket; the endpoint is IPv4 only");
                return bind_plain(SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port())));
            }
        }
    }
    bind_plain(addr)
}

fn bind_dual_stack(port: u16) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_only_v6(false)?;
    socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn bind_plain(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Whether a socket bound to `local` (with `IPV6_V6ONLY` as `only_v6` says) sends and
/// receives IPv4 and IPv6 alike.
pub fn is_dual_stack(local: SocketAddr, only_v6: bool) -> bool {
    local.is_ipv6() && local.ip().is_unspecified() && !only_v6
}

/// Which families a socket serves, for [`host_candidates`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Families {
    /// IPv4 (an IPv4 socket, or a dual-stack one).
    pub v4: bool,
    /// IPv6.
    pub v6: bool,
}

impl Families {
    /// The families of a socket bound to `local`, dual stack or not.
    pub fn of(local: SocketAddr, dual_stack: bool) -> Families {
        Families {
            v4: local.is_ipv4() || dual_stack,
            v6: local.is_ipv6(),
        }
    }
}

/// Whether `ip` is an IPv6 address a peer elsewhere can reach us at: global unicast, so not
/// loopback, unspecified, multicast, link-local (it needs a scope), unique-local (fc00::/7,
/// private like 10/8 but rarely shared between sites) or IPv4-mapped. The documentation
/// prefix 2001:db8::/32 counts as global: the NAT lab is addressed from it.
pub fn is_global_v6(ip: &Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        || (first & 0xfe00) == 0xfc00
        || ip.to_ipv4_mapped().is_some()
        || ip.to_ipv4().is_some())
}

/// The host candidates of a socket bound to `local` serving `families`: `local` itself when
/// bound to one IP, else the addresses of the interfaces that are up with `local`'s port:
/// global IPv6 addresses first (at most two; with no NAT66 in the way they are
/// what the peer reaches), then IPv4 ones (loopback only when `include_loopback`, link-local
/// never).
pub fn host_candidates(
    local: SocketAddr,
    families: Families,
    include_loopback: bool,
) -> Vec<SocketAddr> {
    if !local.ip().is_unspecified() {
        return vec![canonical(local)];
    }
    let all = interface_addresses().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot list the local interfaces");
        Vec::new()
    });
    let mut seen = HashSet::new();
    let v6 = all
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V6(v6) if families.v6 && is_global_v6(v6) => Some(*ip),
            _ => None,
        })
        .filter(|ip| seen.insert(*ip))
        .take(MAX_IPV6_HOSTS)
        .collect::<Vec<_>>();
    let v4 = all
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) if families.v4 => Some(*v4),
            _ => None,
        })
        .filter(|ip| include_loopback || !ip.is_loopback())
        .filter(|ip| !ip.is_link_local())
        .map(IpAddr::V4)
        .filter(|ip| seen.insert(*ip))
        .collect::<Vec<_>>();
    v6.into_iter()
        .chain(v4)
        .map(|ip| SocketAddr::new(ip, local.port()))
        .collect()
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

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_addresses_become_plain_and_back() {
        assert_eq!(
            canonical(a("[::ffff:198.51.100.7]:4000")),
            a("198.51.100.7:4000")
        );
        assert_eq!(canonical(a("198.51.100.7:4000")), a("198.51.100.7:4000"));
        assert_eq!(canonical(a("[2001:db8::7]:4000")), a("[2001:db8::7]:4000"));
        let v6_socket = a("[::]:5000");
        let v4_socket = a("0.0.0.0:5000");
        assert_eq!(
            on_socket(v6_socket, a("198.51.100.7:4000")),
            a("[::ffff:198.51.100.7]:4000")
        );
        assert_eq!(
            on_socket(v6_socket, a("[2001:db8::7]:4000")),
            a("[2001:db8::7]:4000")
        );
        assert_eq!(
            on_socket(v4_socket, a("198.51.100.7:4000")),
            a("198.51.100.7:4000")
        );
        let there = a("203.0.113.9:1");
        assert_eq!(canonical(on_socket(v6_socket, there)), there);
    }

    #[test]
    fn only_global_ipv6_is_offered() {
        for ip in ["2001:db8:1:2::2", "2a00:1450::1", "2001:db8::1"] {
            assert!(is_global_v6(&ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "fec0::1",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
        ] {
            assert!(!is_global_v6(&ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_socket_bound_to_one_ip_has_that_candidate_only() {
        let local = a("192.0.2.7:4000");
        let both = Families { v4: true, v6: true };
        assert_eq!(host_candidates(local, both, false), vec![local]);
    }

    #[test]
    fn wildcard_candidates_keep_the_port_and_family() {
        let v4_only = Families {
            v4: true,
            v6: false,
        };
        let with_lo = host_candidates(a("0.0.0.0:4321"), v4_only, true);
        assert!(with_lo.iter().all(|a| a.port() == 4321 && a.is_ipv4()));
        assert!(with_lo.contains(&a("127.0.0.1:4321")), "{with_lo:?}");
        let without = host_candidates(a("0.0.0.0:4321"), v4_only, false);
        assert!(without.iter().all(|a| !a.ip().is_loopback()), "{without:?}");
        // A dual-stack socket: IPv4 as before, IPv6 only global (never ::1, never fe80::).
        let dual = Families::of(a("[::]:4321"), true);
        assert_eq!(dual, Families { v4: true, v6: true });
        let both = host_candidates(a("[::]:4321"), dual, true);
        assert!(both.contains(&a("127.0.0.1:4321")), "{both:?}");
        for c in &both {
            if let IpAddr::V6(v6) = c.ip() {
                assert!(is_global_v6(&v6), "{both:?}");
            }
        }
        let v6s = both.iter().take_while(|c| c.is_ipv6()).count();
        assert!(v6s <= MAX_IPV6_HOSTS);
        assert!(
            both[v6s..].iter().all(SocketAddr::is_ipv4),
            "IPv6 first: {both:?}"
        );
    }

    #[test]
    fn the_wildcard_binds_dual_stack() {
        let socket = bind_udp(a("[::]:0")).unwrap();
        let local = socket.local_addr().unwrap();
        if local.is_ipv4() {
            // A kernel without IPv6: the documented fallback.
            assert!(local.ip().is_unspecified());
            return;
        }
        let only_v6 = socket2::SockRef::from(&socket).only_v6().unwrap();
        assert!(is_dual_stack(local, only_v6));
        let v4 = bind_udp(a("127.0.0.1:0")).unwrap();
        assert!(v4.local_addr().unwrap().is_ipv4());
    }
}
