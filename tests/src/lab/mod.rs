//! A lab of real kernel NATs: network namespaces, veth pairs and nftables, as root.
//!
//! # Design
//!
//! Every node (STUN server host, "internet core" router, NAT routers, client hosts) is a named
//! network namespace created with `ip netns add`, wired with veth pairs
//! (`ip -n NS link add NAME type veth peer name NAME2 netns NS2`), addressed with
//! `ip -n NS addr/route`, tuned with `ip netns exec NS sysctl -w` and given its NAT behaviour
//! with `ip netns exec NS nft -f -` (the ruleset on stdin, see `nft.rs`). Everything is
//! driven from Rust with [`std::process::Command`]; a failing command is reported with its
//! stderr ([`LabError::Command`]).
//!
//! We deliberately do **not** use the `patchbay` crate (0.7), although it builds here and has
//! NAT presets on RFC 4787's axes. An evaluation found:
//! - its hairpin rule (`ct status dnat masquerade` with no interface match) also rewrites
//!   inbound full-cone traffic;
//! - its full-cone map has a hard-coded 300 s timeout that ignores the configured one, and is
//!   keyed on the pre-translation port, so two hosts behind one NAT using the same port break;
//! - its loss uses `tc netem`, which this kernel lacks, and silently does nothing;
//! - it has no option for a router input chain, which the conntrack race (docs/DESIGN.md section 5)
//!   needs to switch on and off;
//! - it pulls in ~145 crates and takes 2-3 minutes to build.
//!
//! The rules follow a recipe verified by hand on this kernel (see `nft.rs`), with these
//! changes, each covered by a test in `tests/tests/lab_shapes.rs`:
//! - the full-cone map `ext` is refreshed by traffic in both directions (chains `learn` and
//!   `keep`), as conntrack entries are and as the simulator's bindings are; learning from
//!   outbound packets only let a mapping with only inbound traffic expire for third parties
//!   while its flow was still alive (the simulator kept it);
//! - the inside endpoint of an inbound-initiated flow is taken from its reply tuple, so a
//!   re-learnt entry never points at the remote;
//! - routers send no ICMP redirects (a hairpinned packet leaves on the interface it came in
//!   on, and a redirect would teach the host a wrong next hop);
//! - the input chain is named `guard`.
//!
//! # Names and cleanup
//!
//! Namespaces are named `p2pl<pid>-<n>-<role>` (`n` counts labs within the process), so
//! parallel labs and parallel test processes never clash. [`Lab::new`] first deletes stale
//! `p2pl` namespaces whose pid is no longer alive; [`Drop`] kills whatever still runs inside
//! the lab's namespaces and deletes them (also when a test panics).
//!
//! # Address plan (inside our namespaces only)
//!
//! - server host: [`SERVER_IPS`] (198.51.100.1 and .2/24) behind the core (198.51.100.254);
//! - core: a forwarding router (a real routing hop: it decrements TTL);
//! - router `i` attached to the core: WAN 203.0.113.(8i+2)/29, core side 203.0.113.(8i+1);
//!   a translating router's LAN is 10.(i+1).0.0/24 (router .1, hosts .2, .3, ...); a
//!   non-translating one (firewall, blocked) routes 192.0.2.(16i)/28 (the core routes it via
//!   the router's WAN address);
//! - a public host (`NatType::None`) at site `i`: 198.18.i.2/24 directly on the core;
//! - a carrier router (double NAT): LAN 100.64.i.0/24, the home router's WAN at 100.64.i.2.
//!
//! Every LAN is a bridge named `lan` in the router namespace, so several hosts (or a home
//! router) can share it.
//!
//! # IPv6 (dual stack, per site)
//!
//! The core and the server host always have IPv6; a site has it when its
//! [`RouterOptions::ipv6`] is set (a site without it is IPv4 only). All addresses are from the
//! documentation prefix 2001:db8::/32, static (no router advertisements) and added `nodad`
//! (otherwise they stay tentative for a second or two after the link comes up):
//!
//! - server host: [`SERVER_IPS6`] (2001:db8::1 and ::2/64) behind the core (2001:db8::fe);
//! - the transfer net of the core's site `i`: 2001:db8:ff:i::/64, core ::1, the router's WAN
//!   (or a public host) ::2;
//! - the LAN of router `r`: 2001:db8:1:r::/64, router ::1, hosts ::2, ::3, ... (the same last
//!   number as their IPv4 address minus the network's);
//! - routers forward IPv6 without any translation (no NAT66, whatever their IPv4 type) and run
//!   a stateful firewall in the table `ip6 lab6`: inbound from the WAN only what conntrack
//!   finds established or related (so filtering is address-and-port dependent, as on home
//!   routers); a `udp-blocked` router drops IPv6 UDP too. Loss and hairpinning apply to IPv4
//!   only. Only routers attached to the core can be dual stack (not a home router behind a
//!   carrier).
//!
//! The core has no default route, for IPv6 as for IPv4: nothing addressed outside this plan
//! leaves the lab (a host gets "network unreachable").

pub mod chat;
mod commands;
mod harness;
pub mod miniupnpd;
mod namespaces;
pub mod nat_type;
mod nft;
pub mod probe;
mod processes;
mod routers;
mod servers;
mod topology;
pub mod transfer;

pub use commands::{available, require_lab, require_tool, tool_installed};
pub use harness::{coturn_command, recv_text, serial, server_addrs, stun_server_command};
pub use namespaces::{cleanup_stale, in_namespace, lab_namespaces, ns_pid, udp_socket_in};
pub use servers::LabServer;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::nat_types::RouterOptions;
use commands::{run, tools, trace};
use namespaces::delete_ns;
use topology::Step;

/// The prefix of every namespace a lab creates.
pub const NS_PREFIX: &str = "p2pl";

/// The server host's two addresses (the same as the simulator's).
pub const SERVER_IPS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 51, 100, 1),
    Ipv4Addr::new(198, 51, 100, 2),
];

/// The core's address on the server's network (the server's gateway).
const CORE_SERVER_SIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);

/// The server host's two IPv6 addresses (every lab has them).
pub const SERVER_IPS6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
];

/// The core's IPv6 address on the server's network.
const CORE_SERVER_SIDE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe);

/// Why a lab cannot be built on this machine (not root, or a tool missing).
#[derive(Debug, Clone, thiserror::Error)]
#[error("NAT lab unavailable: {0}")]
pub struct LabUnavailable(pub String);

/// A failure while building or driving a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The machine cannot host a lab.
    #[error(transparent)]
    Unavailable(#[from] LabUnavailable),
    /// A command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard error.
        stderr: String,
    },
    /// A command or system call could not be run at all.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// The shape asked for cannot be built.
    #[error("unsupported lab shape: {0}")]
    Unsupported(String),
}

/// A host (a namespace with addresses) in the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The host's role in the shape (`server`, `client0`, `client1`, ...).
    pub role: String,
    /// The namespace's name (`ip netns exec NS ...`).
    pub ns: String,
    /// The host's addresses, primary first.
    pub ips: Vec<Ipv4Addr>,
    /// The host's global IPv6 addresses (none on an IPv4-only site).
    pub ips6: Vec<Ipv6Addr>,
}

impl Host {
    /// The primary address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ips[0]
    }

    /// The first global IPv6 address, if the host is dual stack.
    pub fn ip6(&self) -> Option<Ipv6Addr> {
        self.ips6.first().copied()
    }
}

/// A router in the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    /// The router's index in the lab (its subnets derive from it).
    pub index: u8,
    /// The namespace's name.
    pub ns: String,
    /// The router's options.
    pub options: RouterOptions,
    /// The outside address (the address translated traffic leaves with).
    pub wan_ip: Ipv4Addr,
    /// The inside address (the gateway of the LAN's hosts).
    pub lan_ip: Ipv4Addr,
    /// The inside network and its prefix length.
    pub lan_net: (Ipv4Addr, u8),
    /// The IPv6 prefix (/64) of the LAN, if the router is dual stack.
    pub lan_net6: Option<Ipv6Addr>,
    /// The WAN's IPv6 address, if the router is dual stack.
    pub wan_ip6: Option<Ipv6Addr>,
    /// Hosts or routers attached to the LAN so far.
    lan_ports: u8,
}

impl Router {
    fn lan_cidr(&self) -> String {
        format!("{}/{}", self.lan_net.0, self.lan_net.1)
    }
}

/// A set of namespaces forming one lab; deleted on drop.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    core: String,
    server: Host,
    clients: Vec<Host>,
    routers: Vec<Router>,
    /// Attachments to the core so far (site indices).
    sites: u8,
    /// Setup steps not run yet (see [`Lab::flush`]).
    pending: Vec<Step>,
    /// Namespaces created whose loopback is not up yet.
    fresh: Vec<String>,
}

impl Lab {
    /// The server host (addresses [`SERVER_IPS`]).
    pub fn server(&self) -> &Host {
        &self.server
    }

    /// Client `i`, in the order the shape created them.
    pub fn client(&self, i: usize) -> &Host {
        &self.clients[i]
    }

    /// Every client.
    pub fn clients(&self) -> &[Host] {
        &self.clients
    }

    /// Every router, in creation order (for `double_nat`: carrier, then home).
    pub fn routers(&self) -> &[Router] {
        &self.routers
    }

    /// The router in front of client `i`, if it has one.
    pub fn router_of(&self, i: usize) -> Option<&Router> {
        let client = self.clients.get(i)?;
        let ip = u32::from(client.ip());
        self.routers.iter().find(|r| {
            let (net, len) = r.lan_net;
            let mask = u32::MAX << (32 - u32::from(len));
            ip & mask == u32::from(net)
        })
    }

    /// The internet core router's namespace.
    pub fn core_ns(&self) -> &str {
        &self.core
    }

    /// Every namespace of the lab, in creation order.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = delete_ns(ns) {
                eprintln!("natlab: could not delete namespace {ns}: {e}");
            }
        }
    }
}
