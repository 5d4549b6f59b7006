//! Two peers behind NATs of the punching matrix, linked by [`LinkCore`]s in virtual time:
//! the network, a STUN server (for the re-punch's gathering), the simulated switchboard and
//! rendezvous server ([`LinkWorld`]), and the knobs the scenarios turn (cut a site off,
//! expire a NAT's mappings, renumber a router, break the relay).

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use shared::chat::StaticKeypair;
use shared::link::{LinkCore, LinkCoreConfig, PathKind};
use shared::rendezvous::SessionId;
use shared::stun_server::ServerConfig;

use super::link_world::{LinkWorld, Profile};
use super::punch_pair::place_peer;
use super::{LinkAgent, LinkConditions, NatId, Network, SimError, Simulation, StunServerAgent};
use crate::nat_types::PunchNat;

/// The STUN server.
const STUN: &str = "198.51.100.1:3478";
/// The switchboard (outside the simulated network: the relay is modelled by [`LinkWorld`]).
const SWITCHBOARD: &str = "198.51.100.2:1865";

/// How to set up a linked pair.
#[derive(Clone, Debug)]
pub struct LinkSetup {
    /// Peer A's NAT (the initiator).
    pub a: PunchNat,
    /// Peer B's NAT.
    pub b: PunchNat,
    /// Seed of the network and of both cores.
    pub seed: u64,
    /// Random loss in percent on every link.
    pub loss_percent: u8,
    /// One-way delay of the internet core.
    pub internet_delay: Duration,
    /// Jitter of the internet core.
    pub internet_jitter: Duration,
    /// Whether the links report their outcomes (`LinkCoreConfig::report_outcomes`).
    pub report_outcomes: bool,
}

impl LinkSetup {
    /// Home routers, no loss, 20 ms +- 5 ms across the internet.
    pub fn new(a: PunchNat, b: PunchNat, seed: u64) -> Self {
        Self {
            a,
            b,
            seed,
            loss_percent: 0,
            internet_delay: Duration::from_millis(20),
            internet_jitter: Duration::from_millis(5),
            report_outcomes: true,
        }
    }
}

/// A built pair: the simulation, its two link agents, their NATs and the servers.
pub struct LinkPair {
    /// The simulation.
    pub sim: Simulation,
    /// The two agents' indices (A, B).
    pub agents: [usize; 2],
    /// A's and B's NATs (`None` for a public host).
    pub nats: [Option<NatId>; 2],
    /// The switchboard and rendezvous server.
    pub world: Rc<RefCell<LinkWorld>>,
    /// When the first introduction arrived.
    pub start: Instant,
}

/// One peer's site: its NAT (if any) and endpoint, and its srflx address.
fn add_site(
    net: &mut Network,
    kind: PunchNat,
    setup: &LinkSetup,
    n: u8,
) -> (Option<NatId>, SocketAddr, SocketAddr) {
    let options = crate::nat_types::RouterOptions {
        loss_percent: setup.loss_percent,
        ..kind.router_options()
    };
    let stun: SocketAddr = STUN.parse().expect("literal");
    let peer = place_peer(net, kind, options, n, stun);
    (peer.nat, peer.host, peer.srflx)
}

impl LinkPair {
    /// Builds the network and both links, introduced at once (punching starts 250 ms later).
    pub fn build(setup: &LinkSetup) -> Self {
        let t0 = Instant::now();
        let internet = LinkConditions {
            delay: setup.internet_delay,
            jitter: setup.internet_jitter,
            loss_percent: setup.loss_percent,
        };
        let mut net = Network::new(setup.seed, t0, internet);
        let stun: SocketAddr = STUN.parse().expect("literal");
        net.add_host(net.internet(), &[stun.ip()]);
        let sites = [
            add_site(&mut net, setup.a, setup, 0),
            add_site(&mut net, setup.b, setup, 1),
        ];
        let keys = [1u8, 2].map(|k| {
            let mut random = [k; 32];
            random[..8].copy_from_slice(&setup.seed.to_le_bytes());
            StaticKeypair::from_random_bytes(random).expect("a key pair")
        });
        let kinds = [setup.a, setup.b];
        let profiles = [0, 1].map(|i| Profile {
            key: keys[i].public.0,
            host: sites[i].1,
            srflx: sites[i].2,
            nat: kinds[i].classified(),
        });
        let world = LinkWorld::shared(profiles, SWITCHBOARD.parse().expect("literal"));
        let start = net.now();
        let mut sim = Simulation::new(net);
        sim.max_steps = 20_000_000;
        let server = ServerConfig {
            primary_ip: stun.ip(),
            alternate_ip: None,
            ..ServerConfig::default()
        };
        sim.add_agent(StunServerAgent::new(server, start));
        let mut session = [0u8; 16];
        shared::rng::SplitMix64::new(setup.seed).fill(&mut session);
        let agents = [0, 1].map(|i| {
            let intro = world.borrow().introduction(i, SessionId(session), start);
            let mut seed = [0u8; 32];
            shared::rng::SplitMix64::new(setup.seed ^ (i as u64 + 1)).fill(&mut seed);
            let mut config = LinkCoreConfig::new(keys[i].secret.clone(), seed);
            config.local_nat = kinds[i].classified();
            config.stun = Some(stun);
            config.report_outcomes = setup.report_outcomes;
            let core = LinkCore::new(config, &intro, start).expect("a link core");
            sim.add_agent(LinkAgent::new(core, sites[i].1, world.clone(), i))
        });
        Self {
            sim,
            agents,
            nats: [sites[0].0, sites[1].0],
            world,
            start,
        }
    }

    /// Peer `i` (0: A, 1: B).
    pub fn agent(&self, i: usize) -> &LinkAgent {
        self.sim.agent::<LinkAgent>(self.agents[i])
    }

    /// Peer `i`, mutably.
    pub fn agent_mut(&mut self, i: usize) -> &mut LinkAgent {
        self.sim.agent_mut::<LinkAgent>(self.agents[i])
    }

    /// Virtual now.
    pub fn now(&self) -> Instant {
        self.sim.net.now()
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) -> Result<(), SimError> {
        let end = self.now() + d;
        self.sim.run_until(end, |_| false)?;
        self.sim.net.advance_to(end);
        Ok(())
    }

    /// Runs until `done` holds for the pair (or `limit` of virtual time passed); whether it
    /// held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        done: impl Fn(&LinkAgent, &LinkAgent) -> bool,
    ) -> Result<bool, SimError> {
        let end = self.now() + limit;
        let [a, b] = self.agents;
        let check = |s: &Simulation| done(s.agent::<LinkAgent>(a), s.agent::<LinkAgent>(b));
        self.sim.run_until(end, check)?;
        Ok(check(&self.sim))
    }

    /// Runs until both peers use `kind` (or `limit` passed); whether they do.
    pub fn run_until_path(&mut self, kind: PathKind, limit: Duration) -> Result<bool, SimError> {
        self.run_until(limit, |a, b| {
            a.log.path() == Some(kind) && b.log.path() == Some(kind)
        })
    }

    /// Cuts peer `i`'s site off the network (100 % loss at its NAT), or reconnects it.
    pub fn cut_off(&mut self, i: usize, cut: bool) {
        let nat = self.nats[i].expect("a site behind a NAT");
        self.sim.net.set_nat_loss(nat, if cut { 100 } else { 0 });
    }

    /// Every mapping of peer `i`'s NAT expires at once; new ones take new ports.
    pub fn expire_mappings(&mut self, i: usize) {
        let nat = self.nats[i].expect("a site behind a NAT");
        self.sim.net.nat_mut(nat).expire_all();
    }

    /// Peer `i`'s router gets a new public address (and forgets its mappings).
    pub fn renumber(&mut self, i: usize, ip: IpAddr) {
        let nat = self.nats[i].expect("a site behind a NAT");
        let nat = self.sim.net.nat_mut(nat);
        nat.outside_ip = ip;
        nat.flush();
    }

    /// Both peers' rendezvous connections are lost (`false`) or back (`true`).
    pub fn set_rendezvous(&mut self, up: bool) {
        let now = self.now();
        for i in 0..2 {
            self.agent_mut(i).set_rendezvous(now, up);
        }
    }

    /// Both relay connections break now.
    pub fn close_relay(&mut self) {
        let now = self.now();
        self.world.borrow_mut().close_relay(now);
    }
}
