//! The IPv6 section of `p2p-client nat-type`: which server address it asks, and what the
//! classification over IPv6 means (reachable at all, translated or not, how inbound traffic is
//! filtered). Over IPv6 there is normally no NAT, only a stateful firewall on the home router
//! that lets in replies and drops everything unsolicited: filtering address-and-port dependent.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};

use p2p_client::classify::Ipv6Check;
use p2p_client::tls::ServerLabel;
use serde_json::json;
use shared::nat_classifier::{Behaviour, NatType, Report};

/// The server's IPv6 address from `text` (`HOST`, `HOST:PORT`, `IPv6` or `[IPv6]:PORT`): the
/// literal if it is an IPv6 address, the first AAAA record of a name; `None` for an IPv4
/// literal or a name without AAAA records (or one that does not resolve).
pub fn server6_of(text: &str, default_port: u16) -> Option<SocketAddr> {
    let label = ServerLabel::parse(text, default_port)?;
    if let Ok(ip) = label.host.parse::<IpAddr>() {
        return ip.is_ipv6().then_some(SocketAddr::new(ip, label.port));
    }
    (label.host.as_str(), label.port)
        .to_socket_addrs()
        .ok()?
        .find(SocketAddr::is_ipv6)
}

/// The section's status word (`ipv6.status` in JSON).
fn status(check: &Ipv6Check) -> &'static str {
    match check {
        Ipv6Check::NoServer => "not-tested",
        Ipv6Check::NoRoute { .. } => "no-address",
        Ipv6Check::Classified { report, .. } if report.nat_type == NatType::UdpBlocked => {
            "unreachable"
        }
        Ipv6Check::Classified { .. } => "reachable",
        // `Ipv6Check` is non-exhaustive; every variant this version knows is above.
        _ => "unknown",
    }
}

/// One sentence on what the result means for reaching this host over IPv6.
fn meaning(check: &Ipv6Check) -> String {
    match check {
        Ipv6Check::NoServer => "IPv6 not tested: no IPv6 address of the server is known (give \
                                --server6, or a --server name with an AAAA record)"
            .into(),
        Ipv6Check::NoRoute { error, .. } => format!(
            "no IPv6: this host has no route to the server's IPv6 address ({error}), usually \
             because it has no global IPv6 address; peers reach it over IPv4 only"
        ),
        Ipv6Check::Classified { server, report } => report_meaning(*server, report),
        _ => String::new(),
    }
}

fn report_meaning(server: SocketAddr, r: &Report) -> String {
    if r.nat_type == NatType::UdpBlocked {
        return format!(
            "IPv6 unreachable: no answer from {server} (UDP over IPv6 blocked on the path, or \
             the server's IPv6 side is down); peers reach this host over IPv4 only"
        );
    }
    if r.translated() == Some(true) {
        return format!(
            "IPv6 is translated (NAT66 or prefix translation), behaving as {}",
            r.nat_type.as_str()
        );
    }
    match r.filtering {
        Some(Behaviour::EndpointIndependent) => {
            "IPv6 open: no NAT and no firewall, anyone can send to this address".into()
        }
        Some(Behaviour::AddressAndPortDependent | Behaviour::AddressDependent) => {
            "no NAT over IPv6, only a stateful firewall that lets in replies: two peers with \
             IPv6 connect directly by sending to each other at the same time"
                .into()
        }
        None => "no NAT over IPv6; filtering not determined (this server cannot tell)".into(),
    }
}

/// The text lines of the section.
pub fn text(check: &Ipv6Check, out: &mut Vec<String>) {
    let line = match check {
        Ipv6Check::NoServer => "not tested (no IPv6 address of the server)".to_owned(),
        Ipv6Check::NoRoute { server, .. } => format!("no IPv6 address (no route to {server})"),
        Ipv6Check::Classified { server, report } => {
            if report.nat_type == NatType::UdpBlocked {
                format!("unreachable (no answer from {server})")
            } else {
                format!("reachable via {server}")
            }
        }
        _ => status(check).to_owned(),
    };
    out.push(format!("IPv6:             {line}"));
    if let Ipv6Check::Classified { report, .. } = check
        && report.nat_type != NatType::UdpBlocked
    {
        let translated = match report.translated() {
            Some(true) => "yes",
            Some(false) => "no (mapped address = local address)",
            None => "-",
        };
        out.push(format!("  translated:     {translated}"));
        out.push(format!(
            "  filtering:      {}",
            report.filtering.map_or("-", Behaviour::as_str)
        ));
        out.push(format!("  local address:  {}", report.local_address));
        if let Some(mapped) = report.mapped_address {
            out.push(format!("  mapped address: {mapped}"));
        }
    }
    out.push(format!("  meaning:        {}", meaning(check)));
}

/// The `ipv6` object of `--json`.
pub fn to_json(check: &Ipv6Check) -> serde_json::Value {
    let (server, report) = match check {
        Ipv6Check::NoRoute { server, .. } => (Some(*server), None),
        Ipv6Check::Classified { server, report } => (Some(*server), Some(&**report)),
        _ => (None, None),
    };
    let answered = report.filter(|r| r.nat_type != NatType::UdpBlocked);
    json!({
        "status": status(check),
        "server": server.map(|s| s.to_string()),
        "reachable": report.map(|r| r.nat_type != NatType::UdpBlocked),
        "translated": answered.and_then(Report::translated),
        "nat_type": answered.map(|r| r.nat_type.as_str()),
        "mapping": answered.and_then(|r| r.mapping.map(Behaviour::as_str)),
        "filtering": answered.and_then(|r| r.filtering.map(Behaviour::as_str)),
        "local_address": report.map(|r| r.local_address.to_string()),
        "mapped_address": answered.and_then(|r| r.mapped_address.map(|a| a.to_string())),
        "meaning": meaning(check),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn literals_and_names_give_the_servers_ipv6_address_or_none() {
        assert_eq!(
            server6_of("2001:db8::1", 3478),
            Some("[2001:db8::1]:3478".parse().unwrap())
        );
        assert_eq!(
            server6_of("[2001:db8::1]:4000", 3478),
            Some("[2001:db8::1]:4000".parse().unwrap())
        );
        assert_eq!(server6_of("198.51.100.1:3478", 3478), None);
        // `localhost` resolves from /etc/hosts, without a network.
        let local = server6_of("localhost", 3478);
        assert!(local.is_none_or(|a| a.is_ipv6()), "{local:?}");
    }

    #[test]
    fn no_server_and_no_route_say_so_in_text_and_json() {
        let mut out = Vec::new();
        text(&Ipv6Check::NoServer, &mut out);
        assert_eq!(
            out[0],
            "IPv6:             not tested (no IPv6 address of the server)"
        );
        assert_eq!(to_json(&Ipv6Check::NoServer)["status"], "not-tested");

        let check = Ipv6Check::NoRoute {
            server: "[2001:db8::1]:3478".parse().unwrap(),
            error: std::io::Error::from_raw_os_error(libc::ENETUNREACH),
        };
        let mut out = Vec::new();
        text(&check, &mut out);
        assert_eq!(
            out[0],
            "IPv6:             no IPv6 address (no route to [2001:db8::1]:3478)"
        );
        let json = to_json(&check);
        assert_eq!(json["status"], "no-address");
        assert_eq!(json["reachable"], serde_json::Value::Null);
        assert!(json["meaning"].as_str().unwrap().contains("IPv4 only"));
    }
}
