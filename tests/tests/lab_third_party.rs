//! Third-party NAT classifiers behind every real kernel NAT type of the lab, against OUR
//! server (in-process in the server namespace, two addresses, ports 3478/3479): Debian
//! `stun`, coturn's `turnutils_natdiscovery -m -f` and `pystun3`. Each runs inside the
//! client's namespace with a bounded wait, after the client's NAT state was flushed.
//!
//! Where a client cannot get the right answer from ANY server (a limitation of the client),
//! the same client is run against coturn (two listening IPs, the reference server of
//! docs/DESIGN.md section 2) in the same lab, and the test asserts that ours and coturn give it the same
//! answer; the limitation and its evidence are documented in [`known_limitation`]. A wrong
//! answer that only our server produces is reported as a server bug.
//!
//! Needs root, `ip`, `nft` and `conntrack` (else `SKIPPED:`, or a failure when `CI=true`);
//! a missing client prints `SKIPPED: <tool> not installed` (a failure when `CI=true`).
//! Run with `-- --nocapture` to see every answer and its wall time.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tests::lab::{
    Lab, LabServer, SERVER_IPS, coturn_command, require_lab, require_tool, serial, server_addrs,
    tool_installed,
};
use tests::nat_types::{NatType, RouterOptions};

const PORT: u16 = 3478;
const ALT_PORT: u16 = 3479;

/// The reference server, or ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Ours,
    Coturn,
}

fn start(lab: &Lab, which: Which) -> LabServer {
    let server = match which {
        Which::Ours => LabServer::start_ours(lab, true, PORT, ALT_PORT).unwrap(),
        Which::Coturn => {
            let pidfile = PathBuf::from(format!(
                "/tmp/lab-third-party-{}-{}.pid",
                std::process::id(),
                lab.server().ns
            ));
            let args = coturn_command(&pidfile, true, PORT, ALT_PORT);
            LabServer::start_child(lab, &args, Some(pidfile)).unwrap()
        }
    };
    lab.wait_for_stun(&server_addrs(PORT, ALT_PORT), Duration::from_secs(10))
        .unwrap();
    server
}

/// The three clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    /// Debian `stun` 0.97: the answer is its exit status with the port-preservation (0x01)
    /// and no-hairpin (0x10) bits masked off.
    Stun,
    /// `turnutils_natdiscovery -m -f`: its mapping and filtering lines.
    NatDiscovery,
    /// `pystun3`: its `NAT Type:` line.
    Pystun3,
}

impl Tool {
    const ALL: [Tool; 3] = [Tool::Stun, Tool::NatDiscovery, Tool::Pystun3];

    fn binary(self) -> &'static str {
        match self {
            Tool::Stun => "stun",
            Tool::NatDiscovery => "turnutils_natdiscovery",
            Tool::Pystun3 => "pystun3",
        }
    }

    /// Its command line, from client address `client`.
    fn args(self, client: &str) -> Vec<String> {
        let a1 = SERVER_IPS[0].to_string();
        let v: Vec<&str> = match self {
            Tool::Stun => vec!["stun", &a1],
            Tool::NatDiscovery => vec!["turnutils_natdiscovery", "-m", "-f", "-L", client, &a1],
            Tool::Pystun3 => vec!["pystun3", "-H", &a1, "-P", "3478", "-i", client],
        };
        v.into_iter().map(str::to_owned).collect()
    }

    /// The right answer behind `nat`, in the form [`Tool::answer`] gives.
    fn expected(self, nat: NatType) -> &'static str {
        match (self, nat) {
            (Tool::Stun, NatType::None) => "0x00 open",
            (Tool::Stun, NatType::FullCone) => "0x02 full cone",
            (Tool::Stun, NatType::RestrictedCone) => "0x04 restricted",
            (Tool::Stun, NatType::PortRestrictedCone) => "0x06 port restricted",
            (Tool::Stun, NatType::Symmetric) => "0x08 symmetric",
            (Tool::Stun, NatType::SymmetricUdpFirewall) => "0x0a firewall",
            (Tool::Stun, NatType::UdpBlocked) => "0x0c blocked",
            (Tool::NatDiscovery, NatType::None) => "mapping no-nat, filtering EIF",
            (Tool::NatDiscovery, NatType::FullCone) => "mapping EIM, filtering EIF",
            (Tool::NatDiscovery, NatType::RestrictedCone) => "mapping EIM, filtering ADF",
            (Tool::NatDiscovery, NatType::PortRestrictedCone) => "mapping EIM, filtering APDF",
            (Tool::NatDiscovery, NatType::Symmetric) => "mapping APDM, filtering APDF",
            (Tool::NatDiscovery, NatType::SymmetricUdpFirewall) => "mapping no-nat, filtering APDF",
            (Tool::NatDiscovery, NatType::UdpBlocked) => "timeout",
            (Tool::Pystun3, NatType::None) => "Open Internet",
            (Tool::Pystun3, NatType::FullCone) => "Full Cone",
            (Tool::Pystun3, NatType::RestrictedCone) => "Restric NAT",
            (Tool::Pystun3, NatType::PortRestrictedCone) => "Restric Port NAT",
            (Tool::Pystun3, NatType::Symmetric) => "Symmetric NAT",
            (Tool::Pystun3, NatType::SymmetricUdpFirewall) => "Symmetric UDP Firewall",
            (Tool::Pystun3, NatType::UdpBlocked) => "Blocked",
        }
    }

    /// Reduces one run's exit status and output to a comparable answer.
    fn answer(self, code: Option<i32>, stdout: &str) -> String {
        match self {
            Tool::Stun => {
                let Some(code) = code else {
                    return "killed by a signal".into();
                };
                let masked = code & !0x11;
                let name = match masked {
                    0x00 => "open",
                    0x02 => "full cone",
                    0x04 => "restricted",
                    0x06 => "port restricted",
                    0x08 => "symmetric",
                    0x0a => "firewall",
                    0x0c => "blocked",
                    _ => "unknown",
                };
                format!("{masked:#04x} {name}")
            }
            Tool::NatDiscovery => {
                let mut mapping = None;
                let mut filtering = None;
                for line in stdout.lines() {
                    let line = line.trim();
                    let kind = if line.contains("Endpoint Independent") {
                        "EI"
                    } else if line.contains("Address and Port Dependent") {
                        "APD"
                    } else if line.contains("Address Dependent") {
                        "AD"
                    } else {
                        continue;
                    };
                    if line.starts_with("No NAT!") {
                        mapping = Some("no-nat".to_owned());
                    } else if line.ends_with("Mapping!") {
                        mapping = Some(format!("{kind}M"));
                    } else if line.ends_with("Filtering!") {
                        filtering = Some(format!("{kind}F"));
                    }
                }
                match (mapping, filtering) {
                    (None, None) if stdout.contains("timeout") => "timeout".into(),
                    (m, f) => format!(
                        "mapping {}, filtering {}",
                        m.as_deref().unwrap_or("?"),
                        f.as_deref().unwrap_or("?")
                    ),
                }
            }
            Tool::Pystun3 => stdout
                .lines()
                .find_map(|l| l.strip_prefix("NAT Type:"))
                .map_or_else(|| "no NAT Type line".into(), |t| t.trim().to_owned()),
        }
    }

    /// How long to wait before killing it (pystun3 pays 2 s per unanswered try and loops
    /// forever on an error response).
    fn timeout(self) -> Duration {
        match self {
            Tool::Stun => Duration::from_secs(10),
            Tool::NatDiscovery => Duration::from_secs(20),
            Tool::Pystun3 => Duration::from_secs(40),
        }
    }
}

/// A client behaviour that gets a wrong answer from every server, not only ours: the answer
/// it gets instead, and the evidence. The test asserts that ours and coturn both give it.
///
/// Empty on purpose: in this lab (kernel NATs, no loss, hairpinning off) all three clients got
/// the right answer from our server for all seven types (2026-11-21, two runs). Their known
/// weaknesses (docs/INTEROP.md: no source check on CHANGE-REQUEST replies, pystun3's loop on
/// an error response, a single socket for every test) need a misbehaving server or a
/// hairpinning NAT, not a correct two-address server. Add an entry here only with evidence
/// that coturn misleads the client the same way.
fn known_limitation(tool: Tool, nat: NatType) -> Option<(&'static str, &'static str)> {
    let _ = (tool, nat);
    None
}

/// One client run: its answer, wall time and raw output.
struct Run {
    answer: String,
    wall: Duration,
    raw: String,
}

fn run_tool(lab: &Lab, tool: Tool) -> Run {
    if let Some(router) = lab.router_of(0) {
        lab.flush_nat(router).unwrap();
    }
    let client = lab.client(0);
    let args = tool.args(&client.ip().to_string());
    let t = Instant::now();
    let out = lab.exec_timeout(client, &args, tool.timeout()).unwrap();
    let wall = t.elapsed();
    match out {
        Some(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            Run {
                answer: tool.answer(out.status.code(), &stdout),
                wall,
                raw: format!("{args:?} exit {:?}\n{stdout}\n{stderr}", out.status.code()),
            }
        }
        None => Run {
            answer: format!("killed after {:?}", tool.timeout()),
            wall,
            raw: format!("{args:?}: no result within {:?}", tool.timeout()),
        },
    }
}

fn say(line: &str) {
    eprintln!("{line}");
}

#[test]
fn third_party_classifiers_get_right_answers_from_our_server() {
    if !require_lab() {
        return;
    }
    let tools: Vec<Tool> = Tool::ALL
        .into_iter()
        .filter(|t| require_tool(t.binary()))
        .collect();
    if tools.is_empty() {
        return;
    }
    let coturn = tool_installed("turnserver");
    let _serial = serial();
    let started = Instant::now();
    let mut table = String::new();
    let mut bugs = String::new();
    for nat in NatType::ALL {
        let lab = Lab::one_client(RouterOptions::new(nat)).unwrap();
        let server = start(&lab, Which::Ours);
        let ours: Vec<Run> = tools.iter().map(|&t| run_tool(&lab, t)).collect();
        drop(server);
        // coturn for every answer that is not the right one, or that a documented
        // limitation says is wrong with every server.
        let needs_reference: Vec<usize> = (0..tools.len())
            .filter(|&i| {
                ours[i].answer != tools[i].expected(nat)
                    || known_limitation(tools[i], nat).is_some()
            })
            .collect();
        let mut reference: Vec<Option<Run>> = (0..tools.len()).map(|_| None).collect();
        if !needs_reference.is_empty() && coturn {
            let server = start(&lab, Which::Coturn);
            for &i in &needs_reference {
                reference[i] = Some(run_tool(&lab, tools[i]));
            }
            drop(server);
        }
        for (i, &tool) in tools.iter().enumerate() {
            let (run, expected) = (&ours[i], tool.expected(nat));
            let reference = reference[i].as_ref();
            let line = format!(
                "{:<24} {:<24} ours: {:<32} ({:>5} ms){}",
                nat.name(),
                tool.binary(),
                run.answer,
                run.wall.as_millis(),
                reference.map_or(String::new(), |r| format!(
                    "  coturn: {} ({} ms)",
                    r.answer,
                    r.wall.as_millis()
                ))
            );
            say(&line);
            writeln!(table, "{line}").unwrap();
            match (known_limitation(tool, nat), reference) {
                (Some((answer, why)), Some(r)) => {
                    if run.answer != answer || r.answer != answer {
                        writeln!(
                            bugs,
                            "{} / {}: documented limitation ({why}) expects {answer:?} from \
                             both servers; ours gave {:?}, coturn {:?}\nours: {}\ncoturn: {}",
                            nat.name(),
                            tool.binary(),
                            run.answer,
                            r.answer,
                            run.raw,
                            r.raw
                        )
                        .unwrap();
                    }
                }
                (Some(_), None) => {
                    say("  (coturn not installed: the documented limitation is not re-checked)");
                }
                (None, _) if run.answer == expected => {}
                (None, Some(r)) if r.answer == run.answer => writeln!(
                    bugs,
                    "{} / {}: UNDOCUMENTED CLIENT LIMITATION: wrong answer {:?} (right: \
                     {expected:?}) from ours AND coturn\nours: {}\ncoturn: {}",
                    nat.name(),
                    tool.binary(),
                    run.answer,
                    run.raw,
                    r.raw
                )
                .unwrap(),
                (None, r) => writeln!(
                    bugs,
                    "{} / {}: SERVER BUG: our server gives {:?} (right: {expected:?}); coturn \
                     gives {:?}\nours: {}\ncoturn: {}",
                    nat.name(),
                    tool.binary(),
                    run.answer,
                    r.map(|r| r.answer.as_str()),
                    run.raw,
                    r.map_or("(not run)", |r| r.raw.as_str())
                )
                .unwrap(),
            }
        }
    }
    say(&format!("total {} ms", started.elapsed().as_millis()));
    assert!(bugs.is_empty(), "{table}\n{bugs}");
}
