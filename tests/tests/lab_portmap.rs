//! Port mapping against a real miniupnpd (Debian's `miniupnpd-nftables`) on a symmetric lab
//! router: `p2p-client nat-type` finds PCP and NAT-PMP, maps, proves the mapping receives from
//! outside (the STUN server's other address sends to it) and deletes it; on a router with no
//! mapping service it finds nothing and the classification is unchanged.
//!
//! Needs root, `ip`, `nft`, `conntrack` and miniupnpd; otherwise each test prints a loud
//! `SKIPPED:` line, or fails when `CI=true`.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use p2p_client::portmap;
use serde_json::Value;
use shared::portmap::Protocol;
use tests::lab::miniupnpd::{MINIUPNPD, MapService};
use tests::lab::{Lab, LabServer, SERVER_IPS, in_namespace, require_lab, require_tool, serial};
use tests::nat_types::{NatType, RouterOptions};

fn require_miniupnpd() -> bool {
    require_tool(MINIUPNPD)
}

/// `p2p-client nat-type --json` in client 0's namespace against our server on the lab.
fn nat_type(lab: &Lab) -> Value {
    let bin = tests::lab::chat::binaries().unwrap();
    let server = format!("{}:3478", SERVER_IPS[0]);
    let args = [
        bin.client.to_str().unwrap(),
        "nat-type",
        "--server",
        &server,
        "--json",
    ];
    let out = lab
        .exec_timeout(lab.client(0), &args, Duration::from_secs(60))
        .unwrap()
        .expect("nat-type finished within 60 s");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nat-type failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn nat_type_finds_pcp_and_natpmp_mappings_that_receive_from_outside() {
    if !require_lab() || !require_miniupnpd() {
        return;
    }
    let _serial = serial();
    let lab = Lab::one_client(RouterOptions::new(NatType::Symmetric)).unwrap();
    let _stun = LabServer::start_ours(&lab, true, 3478, 3479).unwrap();
    let router = lab.router_of(0).unwrap().clone();
    let upnpd = lab.start_miniupnpd(&router, MapService::NatPmpPcp).unwrap();
    let report = nat_type(&lab);
    eprintln!("{report:#}");
    // The mapping changes nothing about what the NAT is.
    assert_eq!(report["nat_type"], "symmetric", "{report:#}");
    let pm = &report["port_mapping"];
    assert_eq!(pm["gateway"], router.lan_ip.to_string(), "{report:#}");
    for protocol in ["pcp", "natpmp"] {
        let p = &pm[protocol];
        assert_eq!(
            p["offered"],
            true,
            "{protocol}: {report:#}\n{}",
            upnpd.log()
        );
        let external: std::net::SocketAddr = p["external"].as_str().unwrap().parse().unwrap();
        assert_eq!(external.ip(), router.wan_ip, "{protocol}: {report:#}");
        assert_eq!(p["receives_from_outside"], true, "{protocol}: {report:#}");
        assert_eq!(p["deleted"], true, "{protocol}: {report:#}");
    }
    // Nothing left behind on the router.
    assert_eq!(upnpd.dnat_rules(&lab).unwrap(), Vec::<String>::new());

    // That check can fail: while a mapping is held, its DNAT rule is there.
    let (runtime, held, port) = in_namespace(&lab.client(0).ns, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (held, port) = runtime.block_on(async {
            let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
            let port = socket.local_addr()?.port();
            let held = portmap::map(
                Protocol::NatPmp,
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
    for protocol in ["pcp", "natpmp"] {
        let p = &report["port_mapping"][protocol];
        assert_eq!(p["offered"], false, "{protocol}: {report:#}");
        assert_eq!(p["external"], Value::Null, "{protocol}: {report:#}");
    }
}
