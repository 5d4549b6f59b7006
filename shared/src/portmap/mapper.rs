//! [`PortMapper`]: one UDP port mapping on the default gateway, asked for with PCP or
//! NAT-PMP, renewed at half its lifetime and deleted on request.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::wire::{
    self, NATPMP_OP_EXTERNAL_ADDRESS, NATPMP_OP_MAP_UDP, NatPmpBody, NatPmpResponse, PCP_OP_MAP,
    PROTOCOL_UDP, PcpMapRequest, PcpResponse, SERVER_PORT, WireError,
};
use crate::rng::SplitMix64;
use crate::transmit::{SocketIndex, Transmit};

/// Which port-mapping protocol a [`PortMapper`] speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Port Control Protocol, RFC 6887 (version 2).
    Pcp,
    /// NAT Port Mapping Protocol, RFC 6886 (version 0).
    NatPmp,
}

impl Protocol {
    /// The name used in output and configuration: `pcp` or `natpmp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Pcp => "pcp",
            Protocol::NatPmp => "natpmp",
        }
    }
}

/// RFC 6887 section 8.1.1's maximum retransmission timeout (MRT).
const MAX_RETRANSMIT: Duration = Duration::from_secs(1024);
/// Below this much lifetime left, a failed renewal is not tried again: the lease runs out.
const MIN_RETRY_LEFT: Duration = Duration::from_secs(2);

/// What to map, where, and how patiently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapperConfig {
    /// The protocol to speak.
    pub protocol: Protocol,
    /// The gateway's address; requests go to its port 5351 and only replies from there count.
    pub gateway: Ipv4Addr,
    /// Our address on the link to the gateway (the source address of the requests). PCP
    /// carries it in the request and the server refuses a mismatch; the mapping points at it.
    pub client_ip: Ipv4Addr,
    /// The internal UDP port to map: the endpoint socket's port, not the port the requests are
    /// sent from.
    pub internal_port: u16,
    /// The lease asked for. Short, so that a mapping a crashed client could not delete goes
    /// away soon by itself; renewals keep a live one.
    pub lifetime: Duration,
    /// The first retransmission timeout; it doubles after every send (RFC 6886 section 3.1,
    /// RFC 6887 section 8.1.1), PCP's with +-10 % jitter from the seeded rng.
    pub initial_timeout: Duration,
    /// How many times one request is sent before giving up (both RFCs allow more; a bound keeps
    /// a silent gateway from holding up a link or `nat-type`).
    pub max_sends: u32,
}

impl MapperConfig {
    /// The defaults: a 120 s lease; NAT-PMP's 250 ms first timeout and 4 sends (3.75 s in all
    /// against a silent gateway), PCP's 3 s IRT and 2 sends (9 s).
    pub fn new(
        protocol: Protocol,
        gateway: Ipv4Addr,
        client_ip: Ipv4Addr,
        internal_port: u16,
    ) -> Self {
        let (initial_timeout, max_sends) = match protocol {
            Protocol::NatPmp => (Duration::from_millis(250), 4),
            Protocol::Pcp => (Duration::from_secs(3), 2),
        };
        Self {
            protocol,
            gateway,
            client_ip,
            internal_port,
            lifetime: Duration::from_secs(120),
            initial_timeout,
            max_sends,
        }
    }
}

/// A mapping the gateway granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The protocol that made it.
    pub protocol: Protocol,
    /// The external address and port that reaches [`MapperConfig::internal_port`].
    pub external: SocketAddr,
    /// The lease the gateway granted (may be shorter than asked).
    pub lifetime: Duration,
    /// When it runs out unless renewed.
    pub expires: Instant,
}

/// Why no mapping was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// No answer from the gateway's port 5351.
    #[error("no answer from the gateway after {sends} requests")]
    NoAnswer {
        /// Requests sent.
        sends: u32,
    },
    /// The gateway answers, but in another protocol version (a NAT-PMP-only gateway answering
    /// PCP, or the reverse).
    #[error("the gateway does not speak this protocol (it answered with version {0})")]
    UnsupportedVersion(u8),
    /// The gateway refused with a result code.
    #[error("the gateway refused: result {code} ({text})")]
    Refused {
        /// The result code.
        code: u16,
        /// Its name in the RFC.
        text: &'static str,
    },
}

/// What a [`PortMapper`] reports; drained with [`PortMapper::poll_event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The first mapping was granted.
    Mapped(Mapping),
    /// A renewal was granted; the external address may have changed.
    Renewed(Mapping),
    /// No mapping could be made; the mapper is finished.
    Failed(MapError),
    /// The gateway's epoch shows it lost its state (a restart); the mapping is asked again.
    GatewayRestarted,
    /// Renewals failed and the lease ran out; the mapper is finished.
    Expired,
    /// The gateway confirmed the deletion (or nothing had been asked yet); finished.
    Deleted,
    /// The deletion got no answer or a refusal; the short lease ends the mapping. Finished.
    DeleteFailed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// NAT-PMP's external address request (opcode 0), before the first mapping.
    Address,
    /// A mapping request: the first one or a renewal.
    Map,
    /// A mapping request with lifetime 0.
    Delete,
}

/// One request being (re)sent.
#[derive(Clone, Copy, Debug)]
struct Exchange {
    phase: Phase,
    sends: u32,
    next_send: Option<Instant>,
    deadline: Instant,
    interval: Duration,
}

/// One port mapping's life: request, renewals, deletion. Sans-IO: the driver owns one UDP
/// socket for the requests (not the endpoint socket: [`Transmit::socket`] is always
/// [`SocketIndex::ENDPOINT`], meaning that socket) and the clock; see the
/// [module docs](super) for the drain order.
#[derive(Debug)]
pub struct PortMapper {
    config: MapperConfig,
    rng: SplitMix64,
    nonce: [u8; 12],
    exchange: Option<Exchange>,
    /// NAT-PMP: the external address from opcode 0.
    external_ip: Option<Ipv4Addr>,
    mapping: Option<Mapping>,
    renew_at: Option<Instant>,
    /// The last epoch heard and when, for RFC 6887 section 8.5's restart check.
    epoch: Option<(u32, Instant)>,
    /// Some mapping request has left: the gateway may hold a mapping even if no answer came.
    asked: bool,
    events: VecDeque<Event>,
    done: bool,
}

impl PortMapper {
    /// Starts asking at `now`; `seed` feeds the PCP nonce and the retransmission jitter.
    pub fn new(config: MapperConfig, seed: u64, now: Instant) -> Self {
        let mut rng = SplitMix64::new(seed);
        let mut nonce = [0u8; 12];
        rng.fill(&mut nonce);
        let first = match config.protocol {
            Protocol::NatPmp => Phase::Address,
            Protocol::Pcp => Phase::Map,
        };
        let mut mapper = Self {
            config,
            rng,
            nonce,
            exchange: None,
            external_ip: None,
            mapping: None,
            renew_at: None,
            epoch: None,
            asked: false,
            events: VecDeque::new(),
            done: false,
        };
        mapper.start(first, now);
        mapper
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &MapperConfig {
        &self.config
    }

    /// The mapping held now, if any.
    pub fn mapping(&self) -> Option<&Mapping> {
        self.mapping.as_ref()
    }

    /// True once the mapper has nothing more to do (failed, expired or deleted).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The gateway address requests go to.
    pub fn server(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.config.gateway), SERVER_PORT)
    }

    fn start(&mut self, phase: Phase, now: Instant) {
        self.exchange = Some(Exchange {
            phase,
            sends: 0,
            next_send: Some(now),
            deadline: now,
            interval: self.config.initial_timeout,
        });
    }

    /// Deletes the mapping (lifetime 0). If no mapping request ever left, there is nothing to
    /// delete and [`Event::Deleted`] comes at once.
    pub fn delete(&mut self, now: Instant) {
        if self.done {
            return;
        }
        self.renew_at = None;
        if !self.asked {
            self.finish(Event::Deleted);
            return;
        }
        self.start(Phase::Delete, now);
    }

    fn finish(&mut self, event: Event) {
        self.events.push_back(event);
        self.exchange = None;
        self.renew_at = None;
        self.mapping = None;
        self.done = true;
    }

    /// Writes the due request, if one is due at `now`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let mut ex = self.exchange?;
        if self.done || ex.next_send.is_none_or(|t| t > now) {
            return None;
        }
        let size = self.encode(ex.phase, buf).ok()?;
        if ex.phase != Phase::Address {
            self.asked = true;
        }
        ex.sends += 1;
        let mut wait = ex.interval;
        if self.config.protocol == Protocol::Pcp {
            // RT = (1 + RAND) * RT with RAND in [-0.1, +0.1] (RFC 6887 section 8.1.1).
            let permille = 900 + (self.rng.next_u64() % 201) as u32;
            wait = wait * permille / 1000;
        }
        ex.interval = (ex.interval * 2).min(MAX_RETRANSMIT);
        ex.deadline = now + wait;
        ex.next_send = (ex.sends < self.config.max_sends).then_some(now + wait);
        self.exchange = Some(ex);
        Some(Transmit {
            destination: self.server(),
            socket: SocketIndex::ENDPOINT,
            ttl: None,
            size,
        })
    }

    fn encode(&self, phase: Phase, buf: &mut [u8]) -> Result<usize, WireError> {
        let c = &self.config;
        let lifetime = match phase {
            Phase::Delete => 0,
            _ => u32::try_from(c.lifetime.as_secs()).unwrap_or(u32::MAX),
        };
        let current = self.mapping.map(|m| m.external);
        match c.protocol {
            Protocol::NatPmp if phase == Phase::Address => {
                wire::natpmp_external_address_request(buf)
            }
            Protocol::NatPmp => {
                // A deletion suggests port 0 (RFC 6886 section 3.4); a renewal the port held.
                let suggested = match phase {
                    Phase::Delete => 0,
                    _ => current.map_or(c.internal_port, |a| a.port()),
                };
                wire::natpmp_map_request(buf, c.internal_port, suggested, lifetime)
            }
            Protocol::Pcp => {
                let suggested = match current {
                    Some(SocketAddr::V4(a)) => (*a.ip(), a.port()),
                    _ => (Ipv4Addr::UNSPECIFIED, c.internal_port),
                };
                PcpMapRequest {
                    lifetime,
                    client: c.client_ip,
                    nonce: self.nonce,
                    internal_port: c.internal_port,
                    suggested_external: suggested,
                }
                .encode(buf)
            }
        }
    }

    /// The next event, in the order they happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`PortMapper::handle_timeout`] is due next; `None` once done.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        let ex = self.exchange.map(|e| e.next_send.unwrap_or(e.deadline));
        [ex, self.renew_at, self.mapping.map(|m| m.expires)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Advances time: gives up on an unanswered request, starts a due renewal, notices expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.done {
            return;
        }
        if let Some(ex) = self.exchange
            && ex.next_send.is_none()
            && now >= ex.deadline
        {
            self.exchange = None;
            self.request_failed(ex.phase, MapError::NoAnswer { sends: ex.sends }, now);
        }
        if let Some(m) = self.mapping
            && now >= m.expires
            && !self.done
        {
            self.finish(Event::Expired);
            return;
        }
        if self.renew_at.is_some_and(|t| now >= t) && self.exchange.is_none() {
            self.renew_at = None;
            self.start(Phase::Map, now);
        }
    }

    /// A request got no answer or a refusal: the first mapping fails; a renewal is tried again
    /// halfway to expiry (RFC 6887 section 11.2.1); a deletion is left to the lease.
    fn request_failed(&mut self, phase: Phase, error: MapError, now: Instant) {
        match (phase, self.mapping) {
            (Phase::Delete, _) => self.finish(Event::DeleteFailed),
            (_, Some(m)) => {
                let left = m.expires.saturating_duration_since(now);
                self.exchange = None;
                if left > MIN_RETRY_LEFT {
                    self.renew_at = Some(now + left / 2);
                }
            }
            (_, None) => self.finish(Event::Failed(error)),
        }
    }

    /// Offers a datagram received on the mapper's socket; returns true if it was an answer to
    /// this mapper. Only datagrams from the gateway's port 5351 are read.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> bool {
        if self.done || from != self.server() {
            return false;
        }
        let Some(ex) = self.exchange else {
            return false;
        };
        match self.config.protocol {
            Protocol::NatPmp => match NatPmpResponse::parse(data) {
                Ok(r) => self.on_natpmp(now, ex.phase, r),
                Err(WireError::Version(v)) => self.on_version(now, ex.phase, v),
                Err(_) => false,
            },
            Protocol::Pcp => match PcpResponse::parse(data) {
                Ok(r) => self.on_pcp(now, ex.phase, r),
                Err(WireError::Version(v)) => self.on_version(now, ex.phase, v),
                Err(_) => false,
            },
        }
    }

    fn on_version(&mut self, now: Instant, phase: Phase, version: u8) -> bool {
        self.request_failed(phase, MapError::UnsupportedVersion(version), now);
        true
    }

    fn on_natpmp(&mut self, now: Instant, phase: Phase, r: NatPmpResponse) -> bool {
        let expected_op = match phase {
            Phase::Address => NATPMP_OP_EXTERNAL_ADDRESS,
            Phase::Map | Phase::Delete => NATPMP_OP_MAP_UDP,
        };
        if r.opcode != expected_op {
            return false;
        }
        if let NatPmpBody::Map { internal_port, .. } = r.body
            && internal_port != self.config.internal_port
        {
            return false;
        }
        let restarted = self.check_epoch(now, r.epoch);
        if r.result != 0 {
            let error = MapError::Refused {
                code: r.result,
                text: wire::natpmp_result_text(r.result),
            };
            self.request_failed(phase, error, now);
            return true;
        }
        match (phase, r.body) {
            (Phase::Address, NatPmpBody::ExternalAddress(ip)) => {
                self.external_ip = Some(ip);
                self.start(Phase::Map, now);
            }
            (Phase::Delete, _) => self.finish(Event::Deleted),
            (
                Phase::Map,
                NatPmpBody::Map {
                    external_port,
                    lifetime,
                    ..
                },
            ) => {
                let ip = self.external_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
                let external = SocketAddr::new(IpAddr::V4(ip), external_port);
                self.granted(now, external, lifetime, restarted);
            }
            _ => return false,
        }
        true
    }

    fn on_pcp(&mut self, now: Instant, phase: Phase, r: PcpResponse) -> bool {
        let Some(map) = r.map else {
            return false;
        };
        if r.opcode != PCP_OP_MAP
            || map.nonce != self.nonce
            || map.protocol != PROTOCOL_UDP
            || map.internal_port != self.config.internal_port
        {
            return false;
        }
        let restarted = self.check_epoch(now, r.epoch);
        if r.result != 0 {
            let error = MapError::Refused {
                code: u16::from(r.result),
                text: wire::pcp_result_text(r.result),
            };
            self.request_failed(phase, error, now);
            return true;
        }
        match phase {
            Phase::Delete => self.finish(Event::Deleted),
            _ => self.granted(now, map.external, r.lifetime, restarted),
        }
        true
    }

    fn granted(&mut self, now: Instant, external: SocketAddr, lifetime: u32, restarted: bool) {
        self.exchange = None;
        if lifetime == 0 {
            // Success with no lease is no mapping.
            let error = MapError::Refused {
                code: 0,
                text: "granted a lifetime of 0",
            };
            self.request_failed(Phase::Map, error, now);
            return;
        }
        let lifetime = Duration::from_secs(u64::from(lifetime));
        let mapping = Mapping {
            protocol: self.config.protocol,
            external,
            lifetime,
            expires: now + lifetime,
        };
        let first = self.mapping.is_none();
        self.mapping = Some(mapping);
        // Renew halfway to expiry (RFC 6886 section 3.3, RFC 6887 section 11.2.1).
        self.renew_at = Some(now + lifetime / 2);
        if restarted && !first {
            self.events.push_back(Event::GatewayRestarted);
        }
        self.events.push_back(if first {
            Event::Mapped(mapping)
        } else {
            Event::Renewed(mapping)
        });
    }

    /// RFC 6887 section 8.5 (which generalises RFC 6886 section 3.6): the server lost its
    /// state if its epoch went back, or if its clock and ours advanced by amounts that differ
    /// by more than 2 s and 1/16.
    fn check_epoch(&mut self, now: Instant, epoch: u32) -> bool {
        let lost = match self.epoch {
            None => false,
            Some((prev, at)) => {
                let (prev, curr) = (i64::from(prev), i64::from(epoch));
                let c_delta =
                    i64::try_from(now.saturating_duration_since(at).as_secs()).unwrap_or(i64::MAX);
                let s_delta = curr - prev;
                curr + 2 < prev
                    || c_delta + 2 < s_delta - s_delta / 16
                    || s_delta + 2 < c_delta - c_delta / 16
            }
        };
        self.epoch = Some((epoch, now));
        lost
    }
}
