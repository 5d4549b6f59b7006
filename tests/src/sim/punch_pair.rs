//! Two peers behind NATs of the hole-punching matrix, introduced and punching in virtual
//! time.
//!
//! Each peer learns its server-reflexive address from a datagram to a reflector (what STUN
//! does), gets the other's candidates, NAT classification and a shared start time (what the
//! rendezvous server's `ITR` carries), and runs a [`shared::punch::Puncher`]. The primed
//! signal travels through [`SignalRelay`] like a message through the rendezvous server. A pair
//! counts as *direct* only if both punchers connected and then a chat datagram sent over each
//! side's path arrived at the other.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use shared::punch::{Candidate, PeerInfo, PunchConfig, Role, Strategy};

use super::{
    Datagram, LinkConditions, NatId, Network, PunchAgent, PunchLog, RelayEnd, SignalRelay,
    SimError, Simulation,
};
use crate::nat_types::PunchNat;

/// Both peers' endpoint sockets use this local port; extra sockets follow it.
pub const ENDPOINT_PORT: u16 = 40000;
/// The reflector that plays the STUN server.
const REFLECTOR: &str = "198.51.100.1:3478";

/// How to set up a pair.
#[derive(Clone, Debug)]
pub struct PairSetup {
    /// Peer A's NAT (the initiator, starts on time).
    pub a: PunchNat,
    /// Peer B's NAT (the responder, starts [`PairSetup::late`] after A).
    pub b: PunchNat,
    /// Whether the routers drop unsolicited inbound traffic; `false` is the conntrack race
    /// model of docs/DESIGN.md section 5.
    pub drop_unsolicited: bool,
    /// Random loss in percent on every link (both NATs and the internet).
    pub loss_percent: u8,
    /// How much later B starts than A.
    pub late: Duration,
    /// Seed of the network and both punchers.
    pub seed: u64,
    /// The punchers' tunables (session, role, NAT and peer fields are filled in).
    pub config: PunchConfig,
    /// One-way delay of the internet core.
    pub internet_delay: Duration,
    /// Jitter of the internet core (reorders datagrams).
    pub internet_jitter: Duration,
    /// Delay of the primed signal through the rendezvous server.
    pub signal_delay: Duration,
}

impl PairSetup {
    /// Home routers, no loss, both on time, default tunables, 20 ms +- 5 ms across the
    /// internet, 60 ms for a signal through the server.
    pub fn new(a: PunchNat, b: PunchNat, seed: u64) -> Self {
        Self {
            a,
            b,
            drop_unsolicited: true,
            loss_percent: 0,
            late: Duration::ZERO,
            seed,
            config: PunchConfig::default(),
            internet_delay: Duration::from_millis(20),
            internet_jitter: Duration::from_millis(5),
            signal_delay: Duration::from_millis(60),
        }
    }
}

/// How a pair ended.
#[derive(Clone, Debug)]
pub struct PairOutcome {
    /// Both connected and chat datagrams crossed both ways over the chosen paths.
    pub direct: bool,
    /// Both reported failure.
    pub failed: bool,
    /// From A's start until both connected or both failed (`None` if neither settled).
    pub elapsed: Option<Duration>,
    /// Datagrams both punchers sent until then.
    pub packets: u64,
    /// A's and B's strategies.
    pub strategies: (Strategy, Strategy),
    /// A's log.
    pub a: PunchLog,
    /// B's log.
    pub b: PunchLog,
}

/// A built pair, ready to run.
pub struct PunchPair {
    /// The simulation (agent indices [`PunchPair::a`] and [`PunchPair::b`]).
    pub sim: Simulation,
    /// A's agent index.
    pub a: usize,
    /// B's agent index.
    pub b: usize,
    /// A's and B's NATs (`None` for a public host).
    pub nats: (Option<NatId>, Option<NatId>),
    /// A's start.
    pub start: Instant,
    settled: Option<(Instant, u64)>,
}

/// One peer's site: its NAT (if any), endpoint and candidates.
struct Site {
    nat: Option<NatId>,
    ip: IpAddr,
    candidates: Vec<Candidate>,
}

/// A peer placed in the network: its NAT (none for `Open`), its endpoint address and the
/// server-reflexive address the reflector saw.
pub(crate) struct PlacedPeer {
    /// The peer's router, if it has one.
    pub nat: Option<NatId>,
    /// The endpoint socket's address (inside the NAT).
    pub host: SocketAddr,
    /// What the reflector saw as the source.
    pub srflx: SocketAddr,
}

/// Puts peer `n` behind a router of `kind` (built with `options`; an `Open` peer sits on the
/// internet directly) and learns its server-reflexive address from `reflector`, asking again
/// until an answer gets through the loss (what a client's first STUN gathering does; no
/// agents run yet, so the datagram's source as it arrives is the answer).
pub(crate) fn place_peer(
    net: &mut Network,
    kind: PunchNat,
    options: crate::nat_types::RouterOptions,
    n: u8,
    reflector: SocketAddr,
) -> PlacedPeer {
    let inet = net.internet();
    let (nat, ip) = if kind == PunchNat::Open {
        let ip = IpAddr::from([192, 0, 2, 10 * (n + 1)]);
        net.add_host(inet, &[ip]);
        (None, ip)
    } else {
        let (id, inside) = net.add_nat(inet, IpAddr::from([203, 0, 113, n + 1]), options);
        net.set_nat_link(id, Duration::from_millis(1), Duration::ZERO);
        (Some(id), net.add_inside_host(inside).1)
    };
    let host = SocketAddr::new(ip, ENDPOINT_PORT);
    let mut srflx = None;
    for _ in 0..50 {
        net.send(Datagram::new(host, reflector, b"binding".to_vec()));
        while net.next_event().is_some() {
            if let Some(d) = net.step() {
                srflx = Some(d.datagram.src);
            }
        }
        if srflx.is_some() {
            break;
        }
    }
    PlacedPeer {
        nat,
        host,
        srflx: srflx.expect("the reflector answered within 50 tries"),
    }
}

fn add_site(net: &mut Network, kind: PunchNat, setup: &PairSetup, n: u8) -> Site {
    let options = crate::nat_types::RouterOptions {
        drop_unsolicited: setup.drop_unsolicited,
        loss_percent: setup.loss_percent,
        ..kind.router_options()
    };
    let reflector: SocketAddr = REFLECTOR.parse().expect("literal");
    let peer = place_peer(net, kind, options, n, reflector);
    Site {
        nat: peer.nat,
        ip: peer.host.ip(),
        candidates: vec![Candidate::host(peer.host), Candidate::srflx(peer.srflx)],
    }
}

impl PunchPair {
    /// Builds the network, learns both server-reflexive addresses and adds both agents.
    pub fn build(setup: &PairSetup) -> Self {
        let t0 = Instant::now();
        let internet = LinkConditions {
            delay: setup.internet_delay,
            jitter: setup.internet_jitter,
            loss_percent: setup.loss_percent,
        };
        let mut net = Network::new(setup.seed, t0, internet);
        let reflector: SocketAddr = REFLECTOR.parse().expect("literal");
        net.add_host(net.internet(), &[reflector.ip()]);
        let sa = add_site(&mut net, setup.a, setup, 0);
        let sb = add_site(&mut net, setup.b, setup, 1);
        // The introduction: start 250 ms after ITR.
        let start = net.now() + Duration::from_millis(250);
        let mut session = [0u8; 16];
        shared::rng::SplitMix64::new(setup.seed).fill(&mut session);
        let config = |role, me: PunchNat, peer: PunchNat, site: &Site| PunchConfig {
            session,
            role,
            local: me.classified(),
            peer: PeerInfo {
                candidates: site.candidates.clone(),
                nat: peer.classified(),
            },
            ..setup.config.clone()
        };
        let relay = SignalRelay::shared();
        let end = |slot| RelayEnd {
            relay: relay.clone(),
            slot,
            delay: setup.signal_delay,
        };
        let agent_a = PunchAgent::new(
            config(Role::Initiator, setup.a, setup.b, &sb),
            start,
            setup.seed.wrapping_mul(2).wrapping_add(1),
            SocketAddr::new(sa.ip, ENDPOINT_PORT),
            end(0),
        );
        let agent_b = PunchAgent::new(
            config(Role::Responder, setup.b, setup.a, &sa),
            start + setup.late,
            setup.seed.wrapping_mul(2).wrapping_add(2),
            SocketAddr::new(sb.ip, ENDPOINT_PORT),
            end(1),
        );
        let mut sim = Simulation::new(net);
        sim.max_steps = 5_000_000;
        let a = sim.add_agent(agent_a);
        let b = sim.add_agent(agent_b);
        Self {
            sim,
            a,
            b,
            nats: (sa.nat, sb.nat),
            start,
            settled: None,
        }
    }

    /// Peer A.
    pub fn agent_a(&self) -> &PunchAgent {
        self.sim.agent::<PunchAgent>(self.a)
    }

    /// Peer B.
    pub fn agent_b(&self) -> &PunchAgent {
        self.sim.agent::<PunchAgent>(self.b)
    }

    fn settled(sim: &Simulation, a: usize, b: usize) -> bool {
        let done = |i| {
            let log = &sim.agent::<PunchAgent>(i).log;
            log.connected.is_some() || log.failed_at.is_some()
        };
        done(a) && done(b)
    }

    /// Runs until both punchers connected or gave up (at most `limit` after A's start), then,
    /// if both connected, sends a chat datagram each way over the paths and runs one more
    /// second.
    pub fn run(&mut self, limit: Duration) -> Result<PairOutcome, SimError> {
        let (a, b) = (self.a, self.b);
        self.sim
            .run_until(self.start + limit, |s| Self::settled(s, a, b))?;
        if Self::settled(&self.sim, a, b) {
            let packets = self.agent_a().log.sent + self.agent_b().log.sent;
            self.settled = Some((self.sim.net.now(), packets));
        }
        let connected =
            self.agent_a().log.connected.is_some() && self.agent_b().log.connected.is_some();
        if connected {
            // Like the chat layer: resend every 200 ms until the other side has it.
            let got = |s: &Simulation, i| !s.agent::<PunchAgent>(i).log.chat_received.is_empty();
            for _ in 0..10 {
                for (me, peer) in [(a, b), (b, a)] {
                    if !got(&self.sim, peer) {
                        self.sim.agent_mut::<PunchAgent>(me).send_chat();
                    }
                }
                let end = self.sim.net.now() + Duration::from_millis(200);
                self.sim.run_until(end, |s| got(s, a) && got(s, b))?;
                if got(&self.sim, a) && got(&self.sim, b) {
                    break;
                }
            }
        }
        Ok(self.outcome())
    }

    /// The outcome so far.
    pub fn outcome(&self) -> PairOutcome {
        let (la, lb) = (self.agent_a().log.clone(), self.agent_b().log.clone());
        let direct = la.connected.is_some()
            && lb.connected.is_some()
            && !la.chat_received.is_empty()
            && !lb.chat_received.is_empty();
        let failed = la.failed_at.is_some() && lb.failed_at.is_some();
        let (elapsed, packets) = match self.settled {
            Some((at, packets)) => (Some(at - self.start), packets),
            None => (None, la.sent + lb.sent),
        };
        PairOutcome {
            direct,
            failed,
            elapsed,
            packets,
            strategies: (
                self.agent_a().puncher().strategy(),
                self.agent_b().puncher().strategy(),
            ),
            a: la,
            b: lb,
        }
    }
}
