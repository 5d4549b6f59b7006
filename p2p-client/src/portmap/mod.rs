//! Port mapping on the default gateway: the driver around [`shared::portmap::PortMapper`]
//! (PCP and NAT-PMP), UPnP-IGD through `igd-next` (`portmap/upnp.rs`), and the reachability check
//! `nat-type` runs on a mapping.
//!
//! The requests leave from a socket of their own, connected to the gateway's port 5351, so
//! that an ICMP "port unreachable" (a router that runs no mapping service) ends the attempt at
//! once instead of after the retransmission schedule. The mapping itself is for the endpoint
//! socket's port (docs/PORTMAP.md).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use shared::portmap::{Event, MapError, MapperConfig, PortMapper, Protocol};
use shared::stun::{ChangeRequest, TransactionId};
use shared::stun_client::{BindingError, BindingRequest, BindingTransaction, RetransmitConfig};
use tokio::net::UdpSocket;

use crate::binding::StunBinding;

mod upnp;

/// A way to ask the gateway for a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// PCP (RFC 6887).
    Pcp,
    /// NAT-PMP (RFC 6886).
    NatPmp,
    /// UPnP-IGD (SSDP + SOAP, IGDv1 or v2).
    Upnp,
}

impl Method {
    /// `pcp`, `natpmp` or `upnp` (the word telemetry and `--json` use).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Pcp => "pcp",
            Method::NatPmp => "natpmp",
            Method::Upnp => "upnp",
        }
    }

    /// The same method in the telemetry's vocabulary (`map=` of `RPT`).
    pub fn reported(self) -> shared::rendezvous::telemetry::PortMapping {
        use shared::rendezvous::telemetry::PortMapping as Reported;
        match self {
            Method::Pcp => Reported::Pcp,
            Method::NatPmp => Reported::NatPmp,
            Method::Upnp => Reported::Upnp,
        }
    }

    fn protocol(self) -> Option<Protocol> {
        match self {
            Method::Pcp => Some(Protocol::Pcp),
            Method::NatPmp => Some(Protocol::NatPmp),
            Method::Upnp => None,
        }
    }
}

/// A mapping the gateway granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granted {
    /// How it was asked for.
    pub method: Method,
    /// The external address that reaches the mapped socket.
    pub external: SocketAddr,
    /// The lease granted.
    pub lifetime: Duration,
}

/// Which protocols a link asks the gateway with (`--port-mapping`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PortMapping {
    /// Do not ask.
    Off,
    /// PCP, then NAT-PMP, then UPnP-IGD, until one grants a mapping.
    #[default]
    Auto,
    /// PCP only.
    Pcp,
    /// NAT-PMP only.
    Natpmp,
    /// UPnP-IGD only.
    Upnp,
}

impl PortMapping {
    /// The methods to try, in order.
    pub fn methods(self) -> &'static [Method] {
        match self {
            PortMapping::Off => &[],
            PortMapping::Auto => &[Method::Pcp, Method::NatPmp, Method::Upnp],
            PortMapping::Pcp => &[Method::Pcp],
            PortMapping::Natpmp => &[Method::NatPmp],
            PortMapping::Upnp => &[Method::Upnp],
        }
    }
}

/// Why a mapping attempt ended without a mapping.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortmapError {
    /// The gateway answered no, or not at all, or in another protocol.
    #[error(transparent)]
    Map(#[from] MapError),
    /// Nothing listens on the gateway's port 5351 (ICMP port unreachable).
    #[error("nothing listens on the gateway's port 5351")]
    Refused,
    /// The request socket failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// UPnP-IGD: no gateway answered SSDP, or it refused the SOAP request.
    #[error("UPnP-IGD: {0}")]
    Upnp(String),
}

/// The IPv4 default gateway from the kernel's routing table (`/proc/net/route`, Linux);
/// `None` when there is none or the table cannot be read.
pub fn default_gateway() -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    parse_route_table(&table)
}

/// The gateway of the first default route (destination and mask 0) in `/proc/net/route`'s
/// format, whose addresses are hexadecimal in host byte order.
fn parse_route_table(table: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (dest, gw, mask) = (f.get(1)?, f.get(2)?, f.get(7)?);
        if *dest != "00000000" || *mask != "00000000" {
            return None;
        }
        let raw = u32::from_str_radix(gw, 16).ok()?;
        let ip = Ipv4Addr::from(raw.to_le_bytes());
        (!ip.is_unspecified()).then_some(ip)
    })
}

/// A mapping held on the gateway. Renewed while [`HeldMapping::maintain`] runs; call
/// [`HeldMapping::delete`] when done (a mapping left behind ends with its short lease).
#[derive(Debug)]
pub struct HeldMapping(Held);

#[derive(Debug)]
enum Held {
    /// PCP or NAT-PMP: the sans-IO mapper and the socket its requests use.
    Rfc {
        mapper: PortMapper,
        socket: UdpSocket,
    },
    Upnp(upnp::UpnpMapping),
}

impl HeldMapping {
    /// The mapping as last granted.
    pub fn granted(&self) -> Option<Granted> {
        match &self.0 {
            Held::Rfc { mapper, .. } => mapper.mapping().map(|m| Granted {
                method: match m.protocol {
                    Protocol::Pcp => Method::Pcp,
                    Protocol::NatPmp => Method::NatPmp,
                },
                external: m.external,
                lifetime: m.lifetime,
            }),
            Held::Upnp(u) => Some(Granted {
                method: Method::Upnp,
                external: u.external,
                lifetime: u.lease,
            }),
        }
    }

    /// Deletes the mapping (bounded by the retransmission schedule, or the HTTP exchange);
    /// true if the gateway confirmed it.
    pub async fn delete(self) -> bool {
        match self.0 {
            Held::Rfc { mut mapper, socket } => {
                mapper.delete(Instant::now());
                let events = drive(&mut mapper, &socket, |e| {
                    matches!(e, Event::Deleted | Event::DeleteFailed)
                })
                .await;
                matches!(events, Ok(ref ev) if ev.contains(&Event::Deleted))
            }
            Held::Upnp(u) => u.delete().await,
        }
    }

    /// Keeps the mapping renewed until it ends (expired after failed renewals) or the
    /// future is dropped.
    pub async fn maintain(&mut self) {
        match &mut self.0 {
            Held::Rfc { mapper, socket } => {
                let ended = drive(mapper, socket, |e| {
                    matches!(e, Event::Expired | Event::Failed(_))
                })
                .await;
                tracing::debug!(?ended, "port mapping maintenance ended");
            }
            Held::Upnp(u) => u.maintain().await,
        }
    }
}

/// Asks the gateway for a mapping of UDP port `internal_port` with `method`.
pub async fn map(
    method: Method,
    gateway: Ipv4Addr,
    internal_port: u16,
    lifetime: Duration,
    seed: u64,
) -> Result<HeldMapping, PortmapError> {
    let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).await?;
    socket
        .connect(SocketAddr::from((
            gateway,
            shared::portmap::wire::SERVER_PORT,
        )))
        .await?;
    let client_ip = match socket.local_addr()?.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => return Err(io::Error::other("IPv6 source towards an IPv4 gateway").into()),
    };
    let Some(protocol) = method.protocol() else {
        let held = upnp::map(client_ip, internal_port, lifetime).await?;
        tracing::info!(protocol = "upnp", external = %held.external, "port mapped");
        return Ok(HeldMapping(Held::Upnp(held)));
    };
    let mut config = MapperConfig::new(protocol, gateway, client_ip, internal_port);
    config.lifetime = lifetime;
    let mut mapper = PortMapper::new(config, seed, Instant::now());
    let events = drive(&mut mapper, &socket, |e| {
        matches!(e, Event::Mapped(_) | Event::Failed(_))
    })
    .await?;
    for e in events {
        match e {
            Event::Mapped(m) => {
                tracing::info!(protocol = protocol.as_str(), external = %m.external, "port mapped");
                return Ok(HeldMapping(Held::Rfc { mapper, socket }));
            }
            Event::Failed(e) => return Err(e.into()),
            _ => {}
        }
    }
    Err(MapError::NoAnswer { sends: 0 }.into())
}

/// Runs `mapper` on `socket` until an event `stop` accepts (returning every event up to it)
/// or the mapper is done.
async fn drive(
    mapper: &mut PortMapper,
    socket: &UdpSocket,
    stop: impl Fn(&Event) -> bool,
) -> Result<Vec<Event>, PortmapError> {
    let mut events = Vec::new();
    let mut buf = [0u8; 1100];
    let mut refused = false;
    loop {
        let now = Instant::now();
        while let Some(t) = mapper.poll_transmit(now, &mut buf) {
            if let Err(e) = socket.send(&buf[..t.size]).await {
                refused |= e.kind() == io::ErrorKind::ConnectionRefused;
            }
        }
        while let Some(e) = mapper.poll_event() {
            tracing::debug!(?e, "port mapper");
            let done = stop(&e);
            events.push(e);
            if done {
                return Ok(events);
            }
        }
        if mapper.is_done() {
            return Ok(events);
        }
        if refused && mapper.mapping().is_none() {
            return Err(PortmapError::Refused);
        }
        let Some(at) = mapper.poll_timeout() else {
            return Ok(events);
        };
        match tokio::time::timeout_at(at.into(), socket.recv(&mut buf)).await {
            Err(_elapsed) => mapper.handle_timeout(Instant::now()),
            Ok(Ok(n)) => {
                let from = socket.peer_addr()?;
                mapper.handle_datagram(Instant::now(), from, &buf[..n]);
            }
            // An ICMP error from an earlier send: nothing listens there.
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => refused = true,
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

/// What the reachability check saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The server's other address reached the mapped port.
    Reachable,
    /// Nothing came to the mapped port.
    Unreachable,
    /// The check is not valid here: the mapping's external IP is not the address the server
    /// sees (another NAT beyond the gateway), or the server has no second address.
    NotChecked(&'static str),
}

impl Reach {
    /// `yes`, `no` or `not checked`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Reachable => "yes",
            Reach::Unreachable => "no",
            Reach::NotChecked(_) => "not checked",
        }
    }
}

fn tid() -> TransactionId {
    TransactionId::Modern(rand::random())
}

/// Whether traffic from outside really reaches `mapped` (AutoNAT-style, with RFC 5780's
/// features only): from `endpoint` (the socket whose port is mapped), a Binding to `server`
/// with CHANGE-REQUEST change-IP and RESPONSE-PORT = the mapped port makes the server's other
/// address answer to our reflexive IP at the mapped port: an address we never sent to, at a
/// port we never sent from, so only the mapping lets it in. A first plain Binding learns the
/// reflexive IP (the check is valid only when it equals the mapped IP) and the other address.
pub async fn check_reachable(
    endpoint: &mut UdpSocket,
    server: SocketAddr,
    mapped: SocketAddr,
) -> Result<Reach, PortmapError> {
    let retransmit = RetransmitConfig {
        rto: Duration::from_millis(250),
        max_sends: 4,
        last_wait_factor: 4,
        backoff: true,
    };
    let plain = BindingRequest {
        server,
        transaction_id: tid(),
        change: None,
        expect_from: None,
        fingerprint: true,
    };
    let first = StunBinding::new(BindingTransaction::new(plain, retransmit, Instant::now()))
        .run(endpoint)
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
    let Ok(first) = first else {
        return Ok(Reach::NotChecked("no answer from the STUN server"));
    };
    let (Some(reflexive), Some(other)) = (first.mapped, first.other) else {
        return Ok(Reach::NotChecked("the STUN server has no second address"));
    };
    if reflexive.ip() != mapped.ip() {
        return Ok(Reach::NotChecked(
            "the mapped IP is not the IP the server sees (another NAT beyond the gateway)",
        ));
    }
    let request = BindingRequest {
        server,
        transaction_id: tid(),
        change: Some(ChangeRequest {
            change_ip: true,
            change_port: false,
        }),
        expect_from: Some(SocketAddr::new(other.ip(), server.port())),
        fingerprint: true,
    };
    let transaction = BindingTransaction::new(request, retransmit, Instant::now())
        .with_response_port(mapped.port());
    let outcome = StunBinding::new(transaction)
        .run(endpoint)
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(match outcome {
        Ok(_) => Reach::Reachable,
        Err(BindingError::Timeout { .. }) => Reach::Unreachable,
        Err(_) => Reach::NotChecked("the STUN server refused RESPONSE-PORT or CHANGE-REQUEST"),
    })
}

/// One method's result in a [`Survey`].
#[derive(Debug)]
pub struct ProtocolResult {
    /// The method tried.
    pub method: Method,
    /// The mapping granted, or why none was.
    pub mapping: Result<Granted, PortmapError>,
    /// Whether traffic from outside reached the mapping (only with a mapping).
    pub reach: Option<Reach>,
    /// Whether the gateway confirmed the mapping's deletion (only with a mapping).
    pub deleted: Option<bool>,
}

/// What `nat-type` reports about port mapping on the default gateway.
#[derive(Debug)]
pub struct Survey {
    /// The default gateway asked; `None` if there is no IPv4 default route.
    pub gateway: Option<Ipv4Addr>,
    /// PCP, NAT-PMP, then UPnP-IGD, each mapped, checked and deleted.
    pub results: Vec<ProtocolResult>,
}

/// Asks the default gateway for a mapping with each protocol, each for a fresh socket of its
/// own bound to `bind` (the endpoint stand-in), checks each mapping against `server`
/// ([`check_reachable`]) and deletes it. The protocols run at the same time: with a socket
/// each, no request touches another's mapping, and the survey takes as long as the slowest
/// protocol (UPnP's SSDP window on most networks) rather than the sum of all three.
pub async fn survey(server: SocketAddr, bind: Option<IpAddr>) -> Survey {
    let Some(gateway) = default_gateway() else {
        return Survey {
            gateway: None,
            results: Vec::new(),
        };
    };
    let methods = PortMapping::Auto.methods();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, &method) in methods.iter().enumerate() {
        tasks.spawn(async move { (i, try_protocol(method, gateway, server, bind).await) });
    }
    let mut results: Vec<Option<ProtocolResult>> = methods.iter().map(|_| None).collect();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((i, result)) => results[i] = Some(result),
            Err(e) => tracing::warn!(error = %e, "a port-mapping probe panicked"),
        }
    }
    Survey {
        gateway: Some(gateway),
        results: results.into_iter().flatten().collect(),
    }
}

async fn try_protocol(
    method: Method,
    gateway: Ipv4Addr,
    server: SocketAddr,
    bind: Option<IpAddr>,
) -> ProtocolResult {
    let mut result = ProtocolResult {
        method,
        mapping: Err(PortmapError::Refused),
        reach: None,
        deleted: None,
    };
    let local = SocketAddr::new(bind.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 0);
    let mut endpoint = match UdpSocket::bind(local).await {
        Ok(s) => s,
        Err(e) => {
            result.mapping = Err(e.into());
            return result;
        }
    };
    let port = match endpoint.local_addr() {
        Ok(a) => a.port(),
        Err(e) => {
            result.mapping = Err(e.into());
            return result;
        }
    };
    let held = match map(method, gateway, port, SURVEY_LEASE, rand::random()).await {
        Ok(held) => held,
        Err(e) => {
            result.mapping = Err(e);
            return result;
        }
    };
    let Some(mapping) = held.granted() else {
        result.mapping = Err(MapError::NoAnswer { sends: 0 }.into());
        return result;
    };
    result.mapping = Ok(mapping);
    result.reach = Some(
        check_reachable(&mut endpoint, server, mapping.external)
            .await
            .unwrap_or(Reach::NotChecked("the check's socket failed")),
    );
    result.deleted = Some(held.delete().await);
    result
}

/// The lease `nat-type` asks for: the mapping is deleted seconds later, and this bounds its
/// life if the deletion is lost.
const SURVEY_LEASE: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_is_read_from_proc_net_route() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0001010A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0101010A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(parse_route_table(table), Some(Ipv4Addr::new(10, 1, 1, 1)));
        assert_eq!(
            parse_route_table(&table[..table.rfind("eth0").unwrap()]),
            None
        );
    }
}
