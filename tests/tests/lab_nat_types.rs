//! Every NAT type of the real kernel lab against the behaviour table
//! ([`NatType::expected_probes`]) and against the simulator, first with raw probes (no STUN
//! code at all), then with Debian's classic `stun` client against `stund`.
//!
//! Needs root, `ip`, `nft` and `conntrack` (and `stun`/`stund` for the classifier test);
//! otherwise each test prints a loud `SKIPPED:` line, or fails when `CI=true`.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::time::{Duration, Instant};

use tests::lab::probe::{self, Responder};
use tests::lab::{Lab, SERVER_IPS, require_lab, serial};
use tests::nat_types::{NatType, RouterOptions};

#[test]
fn raw_probes_match_the_table_and_the_simulator_for_every_nat_type() {
    if !require_lab() {
        return;
    }
    let _serial = serial();
    let mut failures = Vec::new();
    for nat in NatType::ALL {
        let start = Instant::now();
        let options = RouterOptions::new(nat);
        let lab = Lab::one_client(options).unwrap();
        let responder = Responder::start(&lab).unwrap();
        let seen = probe::observe(&lab, lab.client(0)).unwrap();
        drop(responder);
        let simulated = tests::sim::probes::observe(options, 1);
        eprintln!(
            "{:<24} lab {:?} ({} ms)",
            nat.name(),
            seen,
            start.elapsed().as_millis()
        );
        if seen != nat.expected_probes() {
            failures.push(format!(
                "{}: lab saw {seen:?}, table says {:?}",
                nat.name(),
                nat.expected_probes()
            ));
        }
        if seen != simulated {
            failures.push(format!(
                "{}: lab saw {seen:?}, simulator saw {simulated:?}",
                nat.name()
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The classic classifier's verdict as `stun` 0.97 encodes it in its exit status, without
/// the port-preservation bit (0x01) and the hairpin bit (0x10).
fn expected_stun_code(nat: NatType) -> i32 {
    match nat {
        NatType::None => 0x00,
        NatType::FullCone => 0x02,
        NatType::RestrictedCone => 0x04,
        NatType::PortRestrictedCone => 0x06,
        NatType::Symmetric => 0x08,
        NatType::SymmetricUdpFirewall => 0x0A,
        NatType::UdpBlocked => 0x0C,
    }
}

/// Whether Debian's `stun` and `stund` are installed; otherwise a loud skip line (a panic
/// when `CI=true`).
fn require_stun() -> bool {
    let missing = ["stun", "stund"].into_iter().find(|t| {
        !["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(t).is_file())
    });
    let Some(missing) = missing else {
        return true;
    };
    let line =
        format!("SKIPPED: {missing} not installed (apt-get install stun-client stun-server)");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{line}");
    }
    let _ = writeln!(std::io::stderr(), "{line}");
    false
}

/// Runs `stund -h A1 -a A2` in the server namespace and the `stun` client in client 0's
/// namespace; returns the client's exit status and last stdout line (`None`: it hung and was
/// killed). stund is killed (by pid) afterwards.
fn classify(lab: &Lab) -> Option<(i32, String)> {
    let (a1, a2) = (SERVER_IPS[0].to_string(), SERVER_IPS[1].to_string());
    let mut stund = lab
        .spawn(lab.server(), &["stund", "-h", &a1, "-a", &a2])
        .unwrap();
    // Wait (bounded) until stund has bound its four sockets.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = lab.exec(lab.server(), &["ss", "-Hunl"]).unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        if listing.matches(":3478").count() + listing.matches(":3479").count() >= 4 {
            break;
        }
        if Instant::now() > deadline {
            let _ = stund.kill();
            let _ = stund.wait();
            panic!("stund did not bind: {listing}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = lab
        .exec_timeout(lab.client(0), &["stun", &a1], Duration::from_secs(20))
        .unwrap();
    let _ = stund.kill();
    let _ = stund.wait();
    let out = out?;
    let verdict = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_owned();
    Some((out.status.code().unwrap_or(-1), verdict))
}

#[test]
fn debian_stun_client_classifies_every_nat_type() {
    if !require_lab() || !require_stun() {
        return;
    }
    let _serial = serial();
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for nat in NatType::ALL {
        let lab = Lab::one_client(RouterOptions::new(nat)).unwrap();
        let start = Instant::now();
        let Some((code, verdict)) = classify(&lab) else {
            failures.push(format!("{}: stun client timed out", nat.name()));
            continue;
        };
        report.push(format!(
            "{:<24} exit 0x{code:02X} ({} ms) {verdict}",
            nat.name(),
            start.elapsed().as_millis()
        ));
        if code < 0 || code & !0x11 != expected_stun_code(nat) {
            failures.push(format!(
                "{}: stun exit 0x{code:02X}, want 0x{:02X} (masking 0x11)",
                nat.name(),
                expected_stun_code(nat),
            ));
        }
        // Hairpinning is off by default: the client must see that too (0x10).
        if nat.translates() && code & 0x10 == 0 {
            failures.push(format!(
                "{}: exit 0x{code:02X} lacks 0x10 (no hairpin)",
                nat.name()
            ));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn debian_stun_client_sees_hairpinning_when_it_is_on() {
    if !require_lab() || !require_stun() {
        return;
    }
    let _serial = serial();
    for nat in [NatType::FullCone, NatType::PortRestrictedCone] {
        let lab = Lab::one_client(RouterOptions {
            hairpin: true,
            ..RouterOptions::new(nat)
        })
        .unwrap();
        let (code, verdict) = classify(&lab).expect("stun client finished");
        eprintln!("{:<24} hairpin on: exit 0x{code:02X} {verdict}", nat.name());
        assert_eq!(
            code & !0x01,
            expected_stun_code(nat),
            "{}: 0x{code:02X}",
            nat.name()
        );
    }
}
