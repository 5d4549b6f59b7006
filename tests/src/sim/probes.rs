//! The raw probe scenario of [`crate::nat_types::ProbeObservation`], run in the simulator.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use shared::stun::{ChangeRequest, TransactionId};
use shared::stun_client::{BindingRequest, BindingTransaction, RetransmitConfig};
use shared::stun_server::{ServerConfig, ServerSocket};

use super::{BindingClient, LinkConditions, Network, Simulation, StunServerAgent};
use crate::nat_types::{NatType, ProbeObservation, RouterOptions};

/// The simulated server host's two public addresses.
pub const SERVER_IPS: [&str; 2] = ["198.51.100.1", "198.51.100.2"];
/// The NAT router's outside address.
pub const NAT_OUTSIDE_IP: &str = "203.0.113.1";

/// A client behind one router of `options` and a two-address STUN server on the internet.
pub struct OneClientShape {
    /// The simulation (server agent at index 0).
    pub sim: Simulation,
    /// The client host's address.
    pub client_ip: IpAddr,
    /// The server's configuration.
    pub server: ServerConfig,
}

/// Builds [`OneClientShape`]; a public client (`NatType::None`) sits on the internet itself.
pub fn one_client(options: RouterOptions, seed: u64, internet: LinkConditions) -> OneClientShape {
    let start = Instant::now();
    let mut net = Network::new(seed, start, internet);
    let inet = net.internet();
    let ips: Vec<IpAddr> = SERVER_IPS
        .iter()
        .map(|s| s.parse().expect("literal"))
        .collect();
    net.add_host(inet, &ips);
    let client_ip = if options.nat == NatType::None {
        let ip: IpAddr = "192.0.2.10".parse().expect("literal");
        net.add_host(inet, &[ip]);
        ip
    } else {
        let outside: IpAddr = if options.nat.translates() {
            NAT_OUTSIDE_IP.parse().expect("literal")
        } else {
            // A firewall forwards without translating: its own address is never used.
            "203.0.113.254".parse().expect("literal")
        };
        let (_, inside) = net.add_nat(inet, outside, options);
        let (_, ip) = if options.nat.translates() {
            net.add_inside_host(inside)
        } else {
            let ip: IpAddr = "192.0.2.20".parse().expect("literal");
            (net.add_host(inside, &[ip]), ip)
        };
        ip
    };
    let server = ServerConfig {
        primary_ip: ips[0],
        alternate_ip: Some(ips[1]),
        ..ServerConfig::default()
    };
    let mut sim = Simulation::new(net);
    sim.add_agent(StunServerAgent::new(server.clone(), start));
    OneClientShape {
        sim,
        client_ip,
        server,
    }
}

fn transaction(
    server: SocketAddr,
    expect_from: SocketAddr,
    change: Option<ChangeRequest>,
    n: u8,
    now: Instant,
) -> BindingTransaction {
    let config = RetransmitConfig {
        rto: Duration::from_millis(100),
        max_sends: 3,
        last_wait_factor: 4,
        backoff: true,
    };
    let request = BindingRequest {
        server,
        transaction_id: TransactionId::Modern([n; 12]),
        change,
        expect_from: Some(expect_from),
        fingerprint: false,
    };
    BindingTransaction::new(request, config, now)
}

/// Runs the probes behind `options` and reports what they saw.
pub fn observe(options: RouterOptions, seed: u64) -> ProbeObservation {
    let mut shape = one_client(options, seed, LinkConditions::default());
    let addr = |s| shape.server.address_of(s).expect("two-address server");
    let (a1p1, a1p2) = (addr(ServerSocket::PRIMARY), addr(ServerSocket::ALL[1]));
    let a2p1 = addr(ServerSocket::ALL[2]);
    let local = |port| SocketAddr::new(shape.client_ip, port);
    let now = shape.sim.net.now();
    let port_only = ChangeRequest {
        change_ip: false,
        change_port: true,
    };
    let ip_only = ChangeRequest {
        change_ip: true,
        change_port: false,
    };
    let mut client = BindingClient::default();
    // Socket 5001: the same socket to three server endpoints (mapping).
    client
        .transactions
        .push((local(5001), transaction(a1p1, a1p1, None, 1, now)));
    client
        .transactions
        .push((local(5001), transaction(a2p1, a2p1, None, 2, now)));
    client
        .transactions
        .push((local(5001), transaction(a1p2, a1p2, None, 3, now)));
    // Fresh sockets that only ever talk to a1p1, answered from elsewhere (filtering).
    client.transactions.push((
        local(5002),
        transaction(a1p1, a1p2, Some(port_only), 4, now),
    ));
    client
        .transactions
        .push((local(5003), transaction(a1p1, a2p1, Some(ip_only), 5, now)));
    let index = shape.sim.add_agent(client);
    let deadline = now + Duration::from_secs(10);
    shape
        .sim
        .run_until(deadline, |s| s.agent::<BindingClient>(index).finished())
        .expect("no livelock");
    let client = shape.sim.agent::<BindingClient>(index);
    let mapped = |i: usize| {
        client.transactions[i]
            .1
            .outcome()
            .and_then(|o| o.as_ref().ok())
            .and_then(|r| r.mapped)
    };
    let answered = |i: usize| {
        client.transactions[i]
            .1
            .outcome()
            .is_some_and(|o| o.is_ok())
    };
    let (m1, m2, m3) = (mapped(0), mapped(1), mapped(2));
    ProbeObservation {
        reachable: m1.is_some(),
        mapped_is_local: m1 == Some(local(5001)),
        same_mapping_other_ip: m1.is_some() && m1 == m2,
        same_mapping_other_port: m1.is_some() && m1 == m3,
        inbound_from_other_port: answered(3),
        inbound_from_other_ip: answered(4),
    }
}
