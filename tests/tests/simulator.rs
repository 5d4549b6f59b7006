//! The simulator's NAT model against the behaviour table every NAT type must show, and its
//! determinism.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tests::nat_types::{NatType, PortAllocation, RouterOptions};
use tests::sim::probes::{NAT_OUTSIDE_IP, SERVER_IPS, observe, one_client};
use tests::sim::{Datagram, LinkConditions, Network};

#[test]
fn probes_see_the_expected_behaviour_for_every_nat_type() {
    for nat in NatType::ALL {
        let seen = observe(RouterOptions::new(nat), 1);
        assert_eq!(seen, nat.expected_probes(), "{}", nat.name());
    }
}

#[test]
fn a_seeded_lossy_jittery_run_is_bit_for_bit_repeatable() {
    let run = |seed| {
        let options = RouterOptions {
            loss_percent: 10,
            ..RouterOptions::new(NatType::Symmetric)
        };
        let internet = LinkConditions {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(15),
            loss_percent: 5,
        };
        let mut shape = one_client(options, seed, internet);
        let server: SocketAddr = format!("{}:3478", SERVER_IPS[0]).parse().unwrap();
        // Raw datagrams from many sockets: random loss, jitter-induced reordering and random
        // port allocation all draw on the seed.
        for port in 0..200u16 {
            let src = SocketAddr::new(shape.client_ip, 6000 + port);
            shape.sim.net.send(Datagram::new(src, server, vec![0; 20]));
        }
        let end = shape.sim.net.now() + Duration::from_secs(5);
        shape.sim.run_until(end, |_| false).unwrap();
        (
            shape.sim.net.digest(),
            shape.sim.net.deliveries(),
            shape.sim.net.drops(),
        )
    };
    let first = run(42);
    assert_eq!(first, run(42), "same seed, same run");
    assert_ne!(first.0, run(43).0, "another seed, another run");
    assert!(first.2.loss > 0, "loss happened: {:?}", first.2);
}

fn nat_with_client(options: RouterOptions) -> (Network, IpAddr, SocketAddr, SocketAddr) {
    let mut net = Network::new(7, Instant::now(), LinkConditions::default());
    let inet = net.internet();
    let server_ip: IpAddr = SERVER_IPS[0].parse().unwrap();
    net.add_host(inet, &[server_ip]);
    let (_, inside) = net.add_nat(inet, NAT_OUTSIDE_IP.parse().unwrap(), options);
    let (_, client_ip) = net.add_inside_host(inside);
    (
        net,
        client_ip,
        SocketAddr::new(server_ip, 3478),
        SocketAddr::new(server_ip, 3479),
    )
}

/// Sends one datagram and returns its source as the destination saw it, if it arrived.
fn send_and_see(net: &mut Network, src: SocketAddr, dst: SocketAddr) -> Option<SocketAddr> {
    net.send(Datagram::new(src, dst, b"probe".to_vec()));
    while net.next_event().is_some() {
        if let Some(d) = net.step() {
            return Some(d.datagram.src);
        }
    }
    None
}

#[test]
fn sequential_allocation_steps_by_the_configured_amount() {
    let options = RouterOptions {
        port_allocation: Some(PortAllocation::Sequential { step: 3 }),
        ..RouterOptions::new(NatType::Symmetric)
    };
    let (mut net, client, server, other_port) = nat_with_client(options);
    let a = send_and_see(&mut net, SocketAddr::new(client, 5000), server).unwrap();
    let b = send_and_see(&mut net, SocketAddr::new(client, 5000), other_port).unwrap();
    let c = send_and_see(&mut net, SocketAddr::new(client, 5001), server).unwrap();
    assert_eq!(b.port(), a.port() + 3);
    assert_eq!(c.port(), b.port() + 3);
}

#[test]
fn port_preserving_nat_keeps_the_inside_port() {
    let (mut net, client, server, _) =
        nat_with_client(RouterOptions::new(NatType::PortRestrictedCone));
    let seen = send_and_see(&mut net, SocketAddr::new(client, 5555), server).unwrap();
    assert_eq!(seen, SocketAddr::new(NAT_OUTSIDE_IP.parse().unwrap(), 5555));
}

#[test]
fn mappings_expire_after_the_udp_timeout() {
    let options = RouterOptions {
        udp_timeout: Duration::from_secs(5),
        ..RouterOptions::new(NatType::FullCone)
    };
    let (mut net, client, server, _) = nat_with_client(options);
    let mapped = send_and_see(&mut net, SocketAddr::new(client, 5000), server).unwrap();
    // Within the timeout, inbound from anyone gets in (full cone) ...
    net.advance_to(net.now() + Duration::from_secs(4));
    assert!(send_and_see(&mut net, server, mapped).is_some());
    // ... which also refreshed the mapping; after a silent timeout it is gone.
    net.advance_to(net.now() + Duration::from_secs(6));
    assert!(send_and_see(&mut net, server, mapped).is_none());
    let now = net.now();
    assert_eq!(net.nat_mut(0).binding_count(now), 0);
}

#[test]
fn hairpinning_is_a_router_option() {
    for hairpin in [true, false] {
        let options = RouterOptions {
            hairpin,
            ..RouterOptions::new(NatType::FullCone)
        };
        let (mut net, client, server, _) = nat_with_client(options);
        let inside = net.internet() + 1;
        let (_, peer) = net.add_inside_host(inside);
        let peer_public = send_and_see(&mut net, SocketAddr::new(peer, 7000), server).unwrap();
        let got = send_and_see(&mut net, SocketAddr::new(client, 5000), peer_public);
        assert_eq!(got.is_some(), hairpin, "hairpin={hairpin}");
        if let Some(src) = got {
            assert_eq!(
                src.ip(),
                NAT_OUTSIDE_IP.parse::<IpAddr>().unwrap(),
                "hairpinned source is translated"
            );
        }
    }
}

#[test]
fn ttl_limited_probe_opens_the_mapping_but_dies_in_the_core() {
    let (mut net, client, server, _) =
        nat_with_client(RouterOptions::new(NatType::PortRestrictedCone));
    let src = SocketAddr::new(client, 5000);
    // TTL 2: one hop through our NAT, then the internet core drops it.
    net.send(Datagram {
        ttl: 2,
        ..Datagram::new(src, server, b"prime".to_vec())
    });
    while net.next_event().is_some() {
        assert!(net.step().is_none(), "a TTL-2 probe must not arrive");
    }
    assert_eq!(net.drops().ttl, 1);
    assert_eq!(
        {
            let now = net.now();
            net.nat_mut(0).binding_count(now)
        },
        1,
        "but it created the mapping"
    );
    // And the server can now answer through it.
    let outside = SocketAddr::new(NAT_OUTSIDE_IP.parse().unwrap(), 5000);
    assert_eq!(send_and_see(&mut net, server, outside), Some(server));
}

#[test]
fn without_the_inbound_drop_rule_an_early_peer_packet_poisons_the_port() {
    for drop_unsolicited in [true, false] {
        let options = RouterOptions {
            drop_unsolicited,
            ..RouterOptions::new(NatType::PortRestrictedCone)
        };
        let (mut net, client, peer, _) = nat_with_client(options);
        let outside = SocketAddr::new(NAT_OUTSIDE_IP.parse().unwrap(), 5000);
        // The peer's packet arrives before we ever sent to it: filtered either way.
        assert!(send_and_see(&mut net, peer, outside).is_none());
        let seen = send_and_see(&mut net, SocketAddr::new(client, 5000), peer).unwrap();
        if drop_unsolicited {
            assert_eq!(seen.port(), 5000, "a home router keeps the port");
        } else {
            assert_ne!(
                seen.port(),
                5000,
                "conntrack clash moves the flow to another port"
            );
        }
    }
}

#[test]
fn double_nat_translates_twice() {
    let mut net = Network::new(3, Instant::now(), LinkConditions::default());
    let inet = net.internet();
    let server_ip: IpAddr = SERVER_IPS[0].parse().unwrap();
    net.add_host(inet, &[server_ip]);
    let cgnat_ip: IpAddr = "100.64.0.1".parse().unwrap();
    let (_, carrier) = net.add_nat(
        inet,
        "203.0.113.7".parse().unwrap(),
        RouterOptions::new(NatType::PortRestrictedCone),
    );
    let (_, home) = net.add_nat(
        carrier,
        cgnat_ip,
        RouterOptions::new(NatType::PortRestrictedCone),
    );
    let (_, client) = net.add_inside_host(home);
    let server = SocketAddr::new(server_ip, 3478);
    let seen = send_and_see(&mut net, SocketAddr::new(client, 5000), server).unwrap();
    assert_eq!(seen.ip(), "203.0.113.7".parse::<IpAddr>().unwrap());
    // The reply finds its way back through both NATs.
    net.send(Datagram::new(server, seen, b"reply".to_vec()));
    let mut delivered = None;
    while net.next_event().is_some() {
        if let Some(d) = net.step() {
            delivered = Some(d.datagram.dst);
        }
    }
    assert_eq!(delivered, Some(SocketAddr::new(client, 5000)));
}
