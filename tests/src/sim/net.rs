//! Realms, hosts, NATs and the event queue.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::{Nat, SimRng};
use crate::nat_types::{NatType, RouterOptions};

/// A realm: the internet (id 0) or the inside of one NAT.
pub type RealmId = usize;
/// A NAT router.
pub type NatId = usize;
/// A host (any number of IP addresses in one realm).
pub type HostId = usize;

/// One UDP datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Source address (rewritten by NATs on the way).
    pub src: SocketAddr,
    /// Destination address (rewritten by NATs on the way in).
    pub dst: SocketAddr,
    /// The payload.
    pub payload: Vec<u8>,
    /// Hops left: each NAT and the internet core take one; at 0 the datagram dies.
    pub ttl: u8,
}

impl Datagram {
    /// A datagram with the default TTL of 64.
    pub fn new(src: SocketAddr, dst: SocketAddr, payload: Vec<u8>) -> Self {
        Self {
            src,
            dst,
            payload,
            ttl: 64,
        }
    }
}

/// Delay, jitter and loss of a hop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkConditions {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per datagram (which reorders them).
    pub jitter: Duration,
    /// Loss in percent.
    pub loss_percent: u8,
}

/// A datagram that reached a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The host it reached.
    pub host: HostId,
    /// When.
    pub at: Instant,
    /// The datagram as the host sees it.
    pub datagram: Datagram,
}

struct Realm {
    /// The NAT whose inside this is (`None` for the internet).
    behind: Option<NatId>,
    /// Second and third octets of 10.x.y.0/24 for automatic inside addresses.
    subnet: [u8; 2],
    next_host: u8,
}

struct NatBox {
    nat: Nat,
    inside: RealmId,
    outside: RealmId,
    link: LinkConditions,
}

struct Host {
    realm: RealmId,
    ips: Vec<IpAddr>,
}

/// Why a datagram was dropped, for counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Lost to random loss.
    pub loss: u64,
    /// Refused by a NAT's filter, or UDP blocked.
    pub filtered: u64,
    /// TTL ran out.
    pub ttl: u64,
    /// No host or NAT owns the destination.
    pub no_route: u64,
}

/// The simulated network.
pub struct Network {
    now: Instant,
    rng: SimRng,
    realms: Vec<Realm>,
    nats: Vec<NatBox>,
    hosts: Vec<Host>,
    internet: LinkConditions,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: std::collections::HashMap<u64, (RealmId, Datagram)>,
    seq: u64,
    digest: u64,
    deliveries: u64,
    drops: DropCounts,
}

impl Network {
    /// An empty network whose clock starts at `start`, all randomness from `seed`. The internet
    /// adds `internet` to every datagram that crosses it.
    pub fn new(seed: u64, start: Instant, internet: LinkConditions) -> Self {
        Self {
            now: start,
            rng: SimRng::new(seed),
            realms: vec![Realm {
                behind: None,
                subnet: [0, 0],
                next_host: 1,
            }],
            nats: Vec::new(),
            hosts: Vec::new(),
            internet,
            queue: BinaryHeap::new(),
            pending: std::collections::HashMap::new(),
            seq: 0,
            digest: 0xcbf2_9ce4_8422_2325,
            deliveries: 0,
            drops: DropCounts::default(),
        }
    }

    /// The internet realm.
    pub fn internet(&self) -> RealmId {
        0
    }

    /// Virtual now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The network's random generator, for agents that need seeded randomness too.
    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    /// Adds a NAT with outside address `outside_ip` in realm `outside`; returns it and its new
    /// inside realm (addresses 10.N.0.x).
    pub fn add_nat(
        &mut self,
        outside: RealmId,
        outside_ip: IpAddr,
        options: RouterOptions,
    ) -> (NatId, RealmId) {
        let id = self.nats.len();
        let inside = self.realms.len();
        let n = u8::try_from(inside).unwrap_or(u8::MAX);
        self.realms.push(Realm {
            behind: Some(id),
            subnet: [n, 0],
            next_host: 2,
        });
        let link = LinkConditions {
            loss_percent: options.loss_percent,
            ..LinkConditions::default()
        };
        self.nats.push(NatBox {
            nat: Nat::new(options, outside_ip),
            inside,
            outside,
            link,
        });
        (id, inside)
    }

    /// Sets the delay and jitter a NAT adds in each direction (its loss comes from its options).
    pub fn set_nat_link(&mut self, nat: NatId, delay: Duration, jitter: Duration) {
        let link = &mut self.nats[nat].link;
        link.delay = delay;
        link.jitter = jitter;
    }

    /// Sets the random loss of a NAT's link, both directions (100 cuts the site off).
    pub fn set_nat_loss(&mut self, nat: NatId, loss_percent: u8) {
        self.nats[nat].link.loss_percent = loss_percent.min(100);
    }

    /// The NAT model, to inspect or flush.
    pub fn nat_mut(&mut self, nat: NatId) -> &mut Nat {
        &mut self.nats[nat].nat
    }

    /// Adds a host with these addresses in `realm`.
    pub fn add_host(&mut self, realm: RealmId, ips: &[IpAddr]) -> HostId {
        self.hosts.push(Host {
            realm,
            ips: ips.to_vec(),
        });
        self.hosts.len() - 1
    }

    /// Adds a host with the next free inside address of `realm` (10.N.0.x).
    pub fn add_inside_host(&mut self, realm: RealmId) -> (HostId, IpAddr) {
        let r = &mut self.realms[realm];
        let ip = IpAddr::V4(Ipv4Addr::new(10, r.subnet[0], r.subnet[1], r.next_host));
        r.next_host = r.next_host.saturating_add(1);
        (self.add_host(realm, &[ip]), ip)
    }

    /// The addresses of a host.
    pub fn host_ips(&self, host: HostId) -> &[IpAddr] {
        &self.hosts[host].ips
    }

    fn host_in(&self, realm: RealmId, ip: IpAddr) -> Option<HostId> {
        self.hosts
            .iter()
            .position(|h| h.realm == realm && h.ips.contains(&ip))
    }

    /// Which host owns a source address, wherever it is.
    pub fn host_of(&self, ip: IpAddr) -> Option<HostId> {
        self.hosts.iter().position(|h| h.ips.contains(&ip))
    }

    fn schedule(&mut self, at: Instant, realm: RealmId, datagram: Datagram) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.pending.insert(self.seq, (realm, datagram));
    }

    fn delay(&mut self, link: LinkConditions) -> Duration {
        let jitter = link.jitter.as_nanos() as u64;
        let extra = if jitter == 0 {
            0
        } else {
            self.rng.below(jitter + 1)
        };
        link.delay + Duration::from_nanos(extra)
    }

    /// One router hop: random loss, then the TTL decrement (a datagram at TTL 1 dies here).
    /// Returns false, and counts why, when the datagram is dropped.
    fn take_hop(&mut self, link: LinkConditions, d: &mut Datagram) -> bool {
        if self.rng.percent(link.loss_percent) {
            self.drops.loss += 1;
            return false;
        }
        if d.ttl <= 1 {
            self.drops.ttl += 1;
            return false;
        }
        d.ttl -= 1;
        true
    }

    /// Enters the internet from a NAT or a public host: the core router takes a TTL hop.
    fn enter_internet(&mut self, at: Instant, mut datagram: Datagram) {
        let link = self.internet;
        if !self.take_hop(link, &mut datagram) {
            return;
        }
        let at = at + self.delay(link);
        self.schedule(at, 0, datagram);
    }

    /// A host sends a datagram now, from one of its own addresses.
    pub fn send(&mut self, datagram: Datagram) {
        let Some(host) = self.host_of(datagram.src.ip()) else {
            self.drops.no_route += 1;
            return;
        };
        let realm = self.hosts[host].realm;
        if realm == self.internet() {
            self.enter_internet(self.now, datagram);
        } else {
            self.schedule(self.now, realm, datagram);
        }
    }

    /// Moves the clock forward to `at` (never backwards) without moving any datagram.
    pub fn advance_to(&mut self, at: Instant) {
        self.now = self.now.max(at);
    }

    /// When the next datagram moves, if any is in flight.
    pub fn next_event(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    /// Moves the next datagram one hop; returns a delivery if it reached a host. Advances the
    /// clock to that event (never backwards).
    pub fn step(&mut self) -> Option<Delivery> {
        let Reverse((at, seq)) = self.queue.pop()?;
        self.now = self.now.max(at);
        let (realm, datagram) = self.pending.remove(&seq)?;
        self.route(realm, datagram)
    }

    fn route(&mut self, realm: RealmId, mut d: Datagram) -> Option<Delivery> {
        let now = self.now;
        if let Some(host) = self.host_in(realm, d.dst.ip()) {
            return Some(self.deliver(host, d));
        }
        // Inbound: the destination is the outside address of a NAT in this realm.
        if let Some(id) = self
            .nats
            .iter()
            .position(|n| n.outside == realm && n.nat.outside_ip == d.dst.ip())
        {
            return self.cross_inbound(id, d);
        }
        // Inbound to a firewall: the destination is an inside host of a non-translating NAT.
        if let Some(id) = self.nats.iter().position(|n| {
            n.outside == realm
                && !n.nat.options().nat.translates()
                && self.host_in(n.inside, d.dst.ip()).is_some()
        }) {
            return self.cross_inbound(id, d);
        }
        // Outbound through the NAT this realm sits behind.
        let id = self.realms[realm].behind?;
        let options = *self.nats[id].nat.options();
        if options.nat == NatType::UdpBlocked {
            self.drops.filtered += 1;
            return None;
        }
        if options.nat.translates() && d.dst.ip() == self.nats[id].nat.outside_ip {
            // Hairpin: translate the source as for any outbound packet, then treat the packet
            // as inbound on the same NAT.
            if !options.hairpin {
                self.drops.filtered += 1;
                return None;
            }
            let remote = d.dst;
            let nat = &mut self.nats[id].nat;
            d.src = nat.outbound(now, d.src, remote, &mut self.rng);
            let Some(inside) = nat.hairpin_target(now, remote.port()) else {
                self.drops.filtered += 1;
                return None;
            };
            d.dst = inside;
            let at = now + self.delay(self.nats[id].link);
            let realm = self.nats[id].inside;
            self.schedule(at, realm, d);
            return None;
        }
        let link = self.nats[id].link;
        if !self.take_hop(link, &mut d) {
            return None;
        }
        d.src = self.nats[id].nat.outbound(now, d.src, d.dst, &mut self.rng);
        let at = now + self.delay(link);
        let outside = self.nats[id].outside;
        if outside == self.internet() {
            self.enter_internet(at, d);
        } else {
            self.schedule(at, outside, d);
        }
        None
    }

    fn cross_inbound(&mut self, id: NatId, mut d: Datagram) -> Option<Delivery> {
        let now = self.now;
        let link = self.nats[id].link;
        let nat = &mut self.nats[id].nat;
        let inside_ip = (!nat.options().nat.translates()).then_some(d.dst.ip());
        let Some(inside) = nat.inbound(now, d.dst.port(), d.src, inside_ip) else {
            self.drops.filtered += 1;
            return None;
        };
        if !self.take_hop(link, &mut d) {
            return None;
        }
        d.dst = inside;
        let at = now + self.delay(link);
        let realm = self.nats[id].inside;
        self.schedule(at, realm, d);
        None
    }

    fn deliver(&mut self, host: HostId, datagram: Datagram) -> Delivery {
        self.deliveries += 1;
        // FNV-1a over everything observable about the delivery.
        let mut h = self.digest;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(&(host as u64).to_le_bytes());
        eat(datagram.src.to_string().as_bytes());
        eat(datagram.dst.to_string().as_bytes());
        eat(&datagram.payload);
        eat(&self.seq.to_le_bytes());
        self.digest = h;
        Delivery {
            host,
            at: self.now,
            datagram,
        }
    }

    /// A hash of every delivery so far (host, addresses, payload, order): equal digests mean
    /// identical runs.
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Deliveries so far.
    pub fn deliveries(&self) -> u64 {
        self.deliveries
    }

    /// Drops so far, by reason.
    pub fn drops(&self) -> DropCounts {
        self.drops
    }
}
