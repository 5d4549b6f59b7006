//! The nftables ruleset of one lab router, generated from its [`RouterOptions`].

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::nat_types::{NatType, RouterOptions};

/// The name of a router's outside interface (nft `iifname`/`oifname` match on it).
pub(crate) const WAN: &str = "wan";
/// The name of a router's inside interface (a bridge).
pub(crate) const LAN: &str = "lan";

/// The router's UDP idle timeout in whole seconds (at least 1: the kernel rejects 0).
pub(crate) fn timeout_secs(options: &RouterOptions) -> u64 {
    options.udp_timeout.as_secs().max(1)
}

/// The ruleset (for `nft -f -`) of a router with outside address `wan_ip` and inside network
/// `lan_net` (CIDR notation).
///
/// - Full cone and restricted cone: `masquerade` (endpoint-independent mapping, port
///   preserving) plus a dynamic map `ext` from each translated port to its inside endpoint,
///   learnt after translation, which a prerouting DNAT uses for inbound traffic from anyone.
///   Restricted cone also records every (inside endpoint, remote IP) in the set `contacted`
///   and lets in only new inbound flows from such IPs. Traffic in either direction refreshes
///   the `ext` entry (chains `learn` and `keep`); only outbound traffic refreshes `contacted`.
/// - Port-restricted cone: plain `masquerade` and established-only inbound.
/// - Symmetric: `masquerade random` and established-only inbound.
/// - Symmetric UDP firewall: no translation, established-only inbound.
/// - UDP blocked: no translation, all UDP dropped in the forward path.
/// - `hairpin`: a DNAT of inside traffic to the outside address through `ext`, and a SNAT of
///   such traffic to the outside address (so the other inside host answers through the NAT).
/// - `drop_unsolicited`: unsolicited traffic from outside to the router itself is dropped
///   before conntrack confirms it (without this, the conntrack race of docs/DESIGN.md section 5).
/// - `loss_percent`: random drop of that share of forwarded packets, first thing in forward.
pub(crate) fn ruleset(options: &RouterOptions, wan_ip: Ipv4Addr, lan_net: &str) -> String {
    let to = timeout_secs(options);
    let nat = options.nat;
    let translates = nat.translates();
    let cone = matches!(nat, NatType::FullCone | NatType::RestrictedCone);
    let hairpin = options.hairpin && translates;
    let mut s = String::new();
    // `write!` to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(s, "table ip lab {{");
    if translates {
        let _ = writeln!(
            s,
            "  map ext {{ type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; \
             timeout {to}s; }}"
        );
    }
    if nat == NatType::RestrictedCone {
        let _ = writeln!(
            s,
            "  set contacted {{ type ipv4_addr . inet_service . ipv4_addr; \
             flags dynamic,timeout; timeout {to}s; }}"
        );
    }
    if translates {
        let _ = writeln!(
            s,
            "  chain pre {{ type nat hook prerouting priority dstnat; policy accept;"
        );
        if cone {
            let _ = writeln!(
                s,
                "    iifname \"{WAN}\" meta l4proto udp dnat ip to udp dport map @ext"
            );
        }
        if hairpin {
            let _ = writeln!(
                s,
                "    iifname \"{LAN}\" ip daddr {wan_ip} meta l4proto udp \
                 dnat ip to udp dport map @ext"
            );
        }
        let _ = writeln!(s, "  }}");
        let _ = writeln!(
            s,
            "  chain post {{ type nat hook postrouting priority srcnat; policy accept;"
        );
        if hairpin {
            // iifname is empty in postrouting: the DNAT status and the source network tell
            // hairpinned traffic apart.
            let _ = writeln!(
                s,
                "    oifname \"{LAN}\" ct status dnat ip saddr {lan_net} snat ip to {wan_ip}"
            );
        }
        let random = if nat == NatType::Symmetric {
            " random"
        } else {
            ""
        };
        let _ = writeln!(s, "    oifname \"{WAN}\" masquerade{random}");
        let _ = writeln!(s, "  }}");
        // The map `ext` (outside port -> inside endpoint) is learnt and refreshed by every
        // packet of a translated flow, in either direction, as conntrack refreshes its
        // entries (and as the simulator's bindings are). The inside endpoint is the original
        // source of an outbound-initiated flow and the reply source of an inbound-initiated
        // (DNATed) one. `update` only refreshes an existing element's timeout, never its data.
        //
        // Outbound, after srcnat (so `udp sport` is the translated port):
        let _ = writeln!(
            s,
            "  chain learn {{ type filter hook postrouting priority srcnat + 10; policy accept;\n    \
             oifname \"{WAN}\" meta l4proto udp ct direction original \
             update @ext {{ udp sport timeout {to}s : ct original ip saddr . ct original proto-src }}\n    \
             oifname \"{WAN}\" meta l4proto udp ct direction reply ct status dnat \
             update @ext {{ udp sport timeout {to}s : ct reply ip saddr . ct reply proto-src }}\n  }}"
        );
        // Inbound, once the filter has let the packet through:
        let _ = writeln!(
            s,
            "  chain keep {{ type filter hook forward priority filter + 10; policy accept;\n    \
             iifname \"{WAN}\" meta l4proto udp ct direction reply ct status snat \
             update @ext {{ ct reply proto-dst timeout {to}s : ct original ip saddr . ct original proto-src }}\n    \
             iifname \"{WAN}\" meta l4proto udp ct direction original ct status dnat \
             update @ext {{ ct original proto-dst timeout {to}s : ct reply ip saddr . ct reply proto-src }}\n  }}"
        );
    }
    let _ = writeln!(
        s,
        "  chain filt {{ type filter hook forward priority filter; policy accept;"
    );
    match nat {
        NatType::None | NatType::FullCone => {}
        NatType::RestrictedCone => {
            let _ = writeln!(
                s,
                "    iifname \"{LAN}\" oifname \"{WAN}\" meta l4proto udp \
                 update @contacted {{ ip saddr . udp sport . ip daddr timeout {to}s }}"
            );
            let _ = writeln!(
                s,
                "    iifname \"{WAN}\" ct state established,related accept"
            );
            // Prerouting has already DNATed the packet to the inside endpoint.
            let _ = writeln!(
                s,
                "    iifname \"{WAN}\" meta l4proto udp ip daddr . udp dport . ip saddr @contacted accept"
            );
            let _ = writeln!(s, "    iifname \"{WAN}\" drop");
        }
        NatType::PortRestrictedCone | NatType::Symmetric | NatType::SymmetricUdpFirewall => {
            let _ = writeln!(
                s,
                "    iifname \"{WAN}\" ct state established,related accept"
            );
            let _ = writeln!(s, "    iifname \"{WAN}\" drop");
        }
        NatType::UdpBlocked => {
            let _ = writeln!(s, "    meta l4proto udp drop");
        }
    }
    let _ = writeln!(s, "  }}");
    if options.drop_unsolicited {
        let _ = writeln!(
            s,
            "  chain guard {{ type filter hook input priority filter; policy accept;\n    \
             iifname \"{WAN}\" ct state established,related accept\n    \
             iifname \"{WAN}\" drop\n  }}"
        );
    }
    if options.loss_percent > 0 {
        let n = options.loss_percent.min(100);
        let _ = writeln!(
            s,
            "  chain loss {{ type filter hook forward priority raw - 100; policy accept;\n    \
             numgen random mod 100 < {n} drop\n  }}"
        );
    }
    let _ = writeln!(s, "}}");
    s
}

/// The IPv6 ruleset (for `nft -f -`) of a dual-stack router: no translation (no NAT66), and
/// the stateful firewall of a home router (RFC 6092's recommended default for UDP): from the
/// WAN, only what conntrack finds established or related (replies, and ICMPv6 errors about
/// them) is forwarded, so filtering is address-and-port dependent. A `udp-blocked` router also
/// drops every IPv6 UDP datagram. Neighbour discovery is not forwarded traffic and is not
/// touched.
pub(crate) fn ruleset6(options: &RouterOptions) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "table ip6 lab6 {{");
    let _ = writeln!(
        s,
        "  chain filt {{ type filter hook forward priority filter; policy accept;"
    );
    if options.nat == NatType::UdpBlocked {
        let _ = writeln!(s, "    meta l4proto udp drop");
    }
    let _ = writeln!(
        s,
        "    iifname \"{WAN}\" ct state established,related accept"
    );
    let _ = writeln!(s, "    iifname \"{WAN}\" drop");
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "}}");
    s
}
