//! Port mapping against a real miniupnpd (Debian's `miniupnpd-nftables`) on a symmetric lab
//! router: `p2p-client nat-type` finds PCP and NAT-PMP, maps, proves the mapping receives from
//! outside (the STUN server's other address sends to it) and deletes it; on a router with no
//! mapping service it finds nothing and the classification is unchanged.
//!
//! In a chat between two symmetric sites, a router running miniupnpd makes the pair go direct
//! through the mapping (deleted when the chat ends); without it the pair stays relayed.
//!
//! Needs root, `ip`, `nft`, `conntrack` and miniupnpd; otherwise each test prints a loud
//! `SKIPPED:` line, or fails when `CI=true`.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use p2p_client::portmap;
use serde_json::Value;
use tests::lab::chat::{ChatOutcome, ChatPeer, ChatServer, path_events};
use tests::lab::miniupnpd::{MINIUPNPD, MapService};
use tests::lab::nat_type::nat_type_json;
use tests::lab::{Lab, LabServer, SERVER_IPS, in_namespace, require_lab, require_tool, serial};
use tests::nat_types::{NatType, RouterOptions};

fn require_miniupnpd() -> bool {
    require_tool(MINIUPNPD)
}

/// `p2p-client nat-type --json` in client 0's namespace against our server on the lab.
fn nat_type(lab: &Lab) -> Value {
    let server = format!("{}:3478", SERVER_IPS[0]);
    nat_type_json(lab, &["--server", &server], &[0])
}

/// `nat-type` on a symmetric router whose miniupnpd offers `service`: the protocols in
/// `offered` map, receive from outside and are deleted; the others are not offered.
fn nat_type_against(
    service: MapService,
    offered: &[&str],
) -> (Lab, tests::lab::miniupnpd::Miniupnpd, LabServer) {
    let lab = Lab::one_client(RouterOptions::new(NatType::Symmetric)).unwrap();
    let stun = LabServer::start_ours(&lab, true, 3478, 3479).unwrap();
    let router = lab.router_of(0).unwrap().clone();
    let upnpd = lab.start_miniupnpd(&router, service).unwrap();
    let report = nat_type(&lab);
    eprintln!("{report:#}");
    // The mapping changes nothing about what the NAT is.
    assert_eq!(report["nat_type"], "symmetric", "{report:#}");
    let pm = &report["port_mapping"];
    assert_eq!(pm["gateway"], router.lan_ip.to_string(), "{report:#}");
    for protocol in ["pcp", "natpmp", "upnp"] {
        let p = &pm[protocol];
        if !offered.contains(&protocol) {
            assert_eq!(p["offered"], false, "{protocol}: {report:#}");
            continue;
        }
        let log = upnpd.log();
        assert_eq!(p["offered"], true, "{protocol}: {report:#}\n{log}");
        let external: std::net::SocketAddr = p["external"].as_str().unwrap().parse().unwrap();
        assert_eq!(external.ip(), router.wan_ip, "{protocol}: {report:#}");
        assert_eq!(p["receives_from_outside"], true, "{protocol}: {report:#}");
        assert_eq!(p["deleted"], true, "{protocol}: {report:#}");
    }
    // Nothing left behind on the router.
    assert_eq!(upnpd.dnat_rules(&lab).unwrap(), Vec::<String>::new());
    (lab, upnpd, stun)
}

#[test]
fn nat_type_finds_upnp_mappings_that_receive_from_outside() {
    if !require_lab() || !require_miniupnpd() {
        return;
    }
    let _serial = serial();
    // Bound by name, so the lab is dropped last.
    let (_lab, upnpd, _stun) = nat_type_against(MapService::Upnp, &["upnp"]);
    // The client spoke IGDv2's WANIPConnection:2 (miniupnpd logs each SOAPAction).
    let log = upnpd.log();
    assert!(log.contains("WANIPConnection:2#AddPortMapping"), "{log}");
    assert!(log.contains("WANIPConnection:2#DeletePortMapping"), "{log}");
}

#[test]
fn nat_type_finds_upnp_mappings_on_an_igd_v1_router_too() {
    if !require_lab() || !require_miniupnpd() {
        return;
    }
    let _serial = serial();
    let (_lab, upnpd, _stun) = nat_type_against(MapService::UpnpV1, &["upnp"]);
    // The router described itself as IGDv1 and the client spoke WANIPConnection:1.
    let log = upnpd.log();
    assert!(log.contains("WANIPConnection:1#AddPortMapping"), "{log}");
    assert!(log.contains("WANIPConnection:1#DeletePortMapping"), "{log}");
}

#[test]
fn nat_type_finds_pcp_and_natpmp_mappings_that_receive_from_outside() {
    if !require_lab() || !require_miniupnpd() {
        return;
    }
    let _serial = serial();
    let (lab, upnpd, _stun) = nat_type_against(MapService::NatPmpPcp, &["pcp", "natpmp"]);
    let router = lab.router_of(0).unwrap().clone();

    // That check can fail: while a mapping is held, its DNAT rule is there.
    let (runtime, held, port) = in_namespace(&lab.client(0).ns, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (held, port) = runtime.block_on(async {
            let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
            let port = socket.local_addr()?.port();
            let held = portmap::map(
                portmap::Method::NatPmp,
                router.lan_ip,
                port,
                Duration::from_secs(120),
                7,
            )
            .await
            .map_err(std::io::Error::other)?;
            std::io::Result::Ok((held, port))
        })?;
        Ok((runtime, held, port))
    })
    .unwrap();
    let rules = upnpd.dnat_rules(&lab).unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert!(
        rules[0].contains(&format!("{}:{port}", lab.client(0).ip())),
        "{rules:?}"
    );
    assert!(runtime.block_on(held.delete()));
    assert_eq!(upnpd.dnat_rules(&lab).unwrap(), Vec::<String>::new());
}

#[test]
fn nat_type_on_a_router_without_mapping_finds_none_and_changes_nothing() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let lab = Lab::one_client(RouterOptions::new(NatType::Symmetric)).unwrap();
    let _stun = LabServer::start_ours(&lab, true, 3478, 3479).unwrap();
    let report = nat_type(&lab);
    eprintln!("{report:#}");
    assert_eq!(report["nat_type"], "symmetric", "{report:#}");
    for protocol in ["pcp", "natpmp", "upnp"] {
        let p = &report["port_mapping"][protocol];
        assert_eq!(p["offered"], false, "{protocol}: {report:#}");
        assert_eq!(p["external"], Value::Null, "{protocol}: {report:#}");
    }
}

/// Runs `p2p-client chat` between alice (client 0) and bob (client 1) until both are on path
/// `want` (and both logs show `until_log`), calls `during`, has each type one line, ends both
/// and returns their outcomes and the server's connectivity reports by `map=` (scraped once
/// both have exited).
fn chat_pair(
    lab: &Lab,
    port_mapping: &str,
    want: &str,
    until_log: Option<&str>,
    during: impl FnOnce(),
) -> (ChatOutcome, ChatOutcome, BTreeMap<String, f64>) {
    let server = ChatServer::start(lab).unwrap();
    server.register_pair(lab, "alice", "bob").unwrap();
    let args = ["--wait", "30", "--port-mapping", port_mapping];
    let mut a = ChatPeer::start(lab, lab.client(0), "alice", "bob", &args).unwrap();
    let mut b = ChatPeer::start(lab, lab.client(1), "bob", "alice", &args).unwrap();
    let on = |events: &[tests::lab::chat::ChatEvent]| {
        path_events(events).last().is_some_and(|p| p.0 == want)
    };
    assert!(
        a.wait_for(Duration::from_secs(40), on),
        "alice never {want}\n{}",
        a.logs()
    );
    assert!(
        b.wait_for(Duration::from_secs(40), on),
        "bob never {want}\n{}",
        b.logs()
    );
    if let Some(needle) = until_log {
        for peer in [&a, &b] {
            let seen = peer.wait_for_log(needle, Duration::from_secs(40));
            assert!(
                seen.is_some(),
                "{}: no {needle:?}\n{}",
                peer.user,
                peer.logs()
            );
        }
    }
    during();
    a.send_lines(&["hello from alice".to_owned()]).unwrap();
    b.send_lines(&["hello from bob".to_owned()]).unwrap();
    let (oa, ob) = (
        a.finish(Duration::from_secs(30)),
        b.finish(Duration::from_secs(30)),
    );
    for (o, from) in [(&oa, "bob"), (&ob, "alice")] {
        assert!(o.status.is_some_and(|s| s.success()), "{}", o.report(40));
        let text = format!("hello from {from}");
        assert_eq!(
            o.messages(),
            vec![(from, text.as_str())],
            "{}",
            o.report(40)
        );
    }
    let samples = server.scrape(lab).unwrap();
    let reports = samples
        .into_iter()
        .filter(|((name, _), _)| name == "p2p_link_reports_total")
        .map(|((_, labels), v)| (labels["map"].clone(), v))
        .collect();
    drop(server);
    (oa, ob, reports)
}

/// A chat between two symmetric sites where router `mapper` runs miniupnpd offering `service`
/// and both clients ask with `protocol`: direct through the mapping of that side, which is gone afterwards.
fn direct_through_mapping(protocol: &str, mapper: usize, service: MapService) {
    let sym = RouterOptions::new(NatType::Symmetric);
    let lab = Lab::two_peers(sym, sym).unwrap();
    let router = lab.router_of(mapper).unwrap().clone();
    let upnpd = lab.start_miniupnpd(&router, service).unwrap();
    let mut held = Vec::new();
    let (alice, bob, reports) = chat_pair(&lab, protocol, "direct", None, || {
        held = upnpd.dnat_rules(&lab).unwrap();
    });
    let outcomes = (alice, bob);
    let (mapped, other) = if mapper == 0 {
        (&outcomes.0, &outcomes.1)
    } else {
        (&outcomes.1, &outcomes.0)
    };
    // While the chat ran, the mapping side's endpoint was mapped, with the protocol asked...
    assert_eq!(held.len(), 1, "{held:?}\n{}", upnpd.log());
    assert!(
        held[0].contains(&lab.client(mapper).ip().to_string()),
        "{held:?}"
    );
    let granted = |l: &&str| l.contains("port mapped") && l.contains(protocol);
    assert!(
        mapped.stderr.lines().any(|l| granted(&l)),
        "{}",
        mapped.report(40)
    );
    // ... the other side reached it at the mapped port of its router's address...
    let (path, remote) = other.last_path().unwrap();
    assert_eq!(path, "direct", "{}", other.report(40));
    let remote: std::net::SocketAddr = remote.parse().unwrap();
    assert_eq!(remote.ip(), router.wan_ip, "{}", other.report(40));
    assert!(
        held[0].contains(&format!("dport {}", remote.port())),
        "{held:?} {remote}"
    );
    // ... and the mapping is gone now that the chat has ended.
    let left = upnpd.dnat_rules(&lab).unwrap();
    assert_eq!(left, Vec::<String>::new(), "{}", mapped.report(40));
    // Each side reported the introduction once, naming the mapping it had (`map=`).
    assert_eq!(reports.get(protocol), Some(&1.0), "{reports:?}");
    assert_eq!(reports.get("none"), Some(&1.0), "{reports:?}");
}

#[test]
fn symmetric_pair_goes_direct_through_a_pcp_mapping_which_is_deleted_after() {
    if !require_lab() || !require_miniupnpd() {
        return;
    }
    let _serial = serial();
    direct_through_mapping("pcp", 0, MapService::NatPmpPcp);
}

#[test]
fn symmetric_pair_goes_direct_through_a_natpmp_mapping_on_the_other_side() {
    if !require_lab() || !require_miniupnpd() {
        return;
    }
    let _serial = serial();
    direct_through_mapping("natpmp", 1, MapService::NatPmpPcp);
}

#[test]
fn symmetric_pair_goes_direct_through_a_upnp_mapping_which_is_deleted_after() {
    if !require_lab() || !require_miniupnpd() {
        return;
    }
    let _serial = serial();
    direct_through_mapping("upnp", 0, MapService::Upnp);
}

#[test]
fn symmetric_pair_without_a_mapping_router_stays_relayed() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let sym = RouterOptions::new(NatType::Symmetric);
    let lab = Lab::two_peers(sym, sym).unwrap();
    let (alice, bob, reports) = chat_pair(
        &lab,
        "auto",
        "relayed",
        Some("punching found no direct path"),
        || {},
    );
    assert_eq!(reports.get("none"), Some(&2.0), "{reports:?}");
    for o in [&alice, &bob] {
        assert_eq!(o.last_path().unwrap().0, "relayed", "{}", o.report(40));
        assert!(
            o.paths().iter().all(|p| p.0 != "direct"),
            "{}",
            o.report(40)
        );
        assert!(o.stderr.contains("no port mapping"), "{}", o.report(40));
    }
}

#[test]
fn a_chat_interrupted_with_ctrl_c_deletes_its_mapping() {
    if !require_lab() || !require_miniupnpd() {
        return;
    }
    let _serial = serial();
    let sym = RouterOptions::new(NatType::Symmetric);
    let lab = Lab::two_peers(sym, sym).unwrap();
    let router = lab.router_of(0).unwrap().clone();
    let upnpd = lab.start_miniupnpd(&router, MapService::NatPmpPcp).unwrap();
    let server = ChatServer::start(&lab).unwrap();
    server.register_pair(&lab, "alice", "bob").unwrap();
    let args = ["--wait", "30"];
    let mut a = ChatPeer::start(&lab, lab.client(0), "alice", "bob", &args).unwrap();
    let mut b = ChatPeer::start(&lab, lab.client(1), "bob", "alice", &args).unwrap();
    let direct = |events: &[tests::lab::chat::ChatEvent]| {
        path_events(events).last().is_some_and(|p| p.0 == "direct")
    };
    assert!(a.wait_for(Duration::from_secs(40), direct), "{}", a.logs());
    assert!(b.wait_for(Duration::from_secs(40), direct), "{}", b.logs());
    assert_eq!(upnpd.dnat_rules(&lab).unwrap().len(), 1, "{}", upnpd.log());
    // Ctrl-C, as a terminal sends it; stdin stays open.
    let pid = libc::pid_t::try_from(a.pid()).unwrap();
    // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let oa = a.finish(Duration::from_secs(20));
    assert!(
        oa.status.is_some(),
        "alice did not exit on Ctrl-C\n{}",
        oa.report(40)
    );
    assert!(
        oa.stderr.contains("port mapping deleted"),
        "{}",
        oa.report(40)
    );
    assert_eq!(
        upnpd.dnat_rules(&lab).unwrap(),
        Vec::<String>::new(),
        "{}",
        oa.report(40)
    );
    let ob = b.finish(Duration::from_secs(20));
    assert!(ob.status.is_some(), "{}", ob.report(40));
}
