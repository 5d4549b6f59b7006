//! From what the probes saw to a verdict: a pure function, tested on its own.

use std::net::SocketAddr;
use std::time::Duration;

use super::report::{Behaviour, NatType, PortAllocation, Report, ServerSupport};
use crate::stun_client::BindingResponse;

/// How one probe ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProbeResult {
    /// Not finished (or never started).
    #[default]
    Pending,
    /// A success response from the expected address.
    Answered(BindingResponse),
    /// Nothing from the expected address before the last timeout.
    Silent,
    /// Our transaction's reply came from another address than the test requires.
    WrongSource(SocketAddr),
    /// An error response with this code.
    Error(u16),
}

impl ProbeResult {
    fn answered(&self) -> Option<&BindingResponse> {
        match self {
            ProbeResult::Answered(r) => Some(r),
            _ => None,
        }
    }

    fn mapped(&self) -> Option<SocketAddr> {
        self.answered().and_then(|r| r.mapped)
    }
}

/// Everything the tests observed. Field names say which socket sent what to where; A1/A2 are
/// the server's addresses, P1/P2 its ports.
#[derive(Clone, Debug)]
pub struct Observations {
    /// The server's primary address (A1:P1).
    pub server: SocketAddr,
    /// Local address of the main socket.
    pub main_local: SocketAddr,
    /// Local address of the control socket.
    pub control_local: SocketAddr,
    /// Local address of the allocation socket.
    pub allocation_local: SocketAddr,
    /// Main socket to A1:P1 (test I).
    pub first: ProbeResult,
    /// Main socket to A2:P1 (mapping test II).
    pub other_ip: ProbeResult,
    /// Main socket to A2:P2 (mapping test III).
    pub other_both: ProbeResult,
    /// Fresh socket to A1:P1 asking for a reply from A2:P2 (filtering test II).
    pub eif: ProbeResult,
    /// Fresh socket to A1:P1 asking for a reply from A1:P2 (filtering test III).
    pub adf: ProbeResult,
    /// Control socket to A2:P2, opening our own filter for that address.
    pub control_open: ProbeResult,
    /// Control socket to A1:P1 asking for a reply from A2:P2: under endpoint-independent
    /// mapping this must arrive, or the server is not really changing its source.
    pub control_change: ProbeResult,
    /// One more fresh socket to A1:P1, a port allocation sample.
    pub allocation: ProbeResult,
    /// Whether a datagram to our own mapped address came back inside.
    pub hairpin: Option<bool>,
}

fn unsupported(report: &mut Report, reason: String) {
    report.nat_type = NatType::UnsupportedServer;
    report.mapping = None;
    report.filtering = None;
    report.hairpinning = None;
    report.port_allocation = None;
    report.unsupported_reason = Some(reason);
}

/// Checks that a change probe did not come back from the wrong place or as an error.
fn change_honoured(name: &str, result: &ProbeResult) -> Result<(), String> {
    match result {
        ProbeResult::WrongSource(from) => Err(format!(
            "the server ignores CHANGE-REQUEST: the {name} reply came from {from}"
        )),
        ProbeResult::Error(code) => Err(format!(
            "the server refused CHANGE-REQUEST ({name}) with error {code}"
        )),
        _ => Ok(()),
    }
}

/// The verdict.
pub fn decide(obs: &Observations, elapsed: Duration) -> Report {
    let mut report = Report {
        nat_type: NatType::UdpBlocked,
        mapping: None,
        filtering: None,
        hairpinning: None,
        port_allocation: None,
        local_address: obs.main_local,
        mapped_address: obs.first.mapped(),
        mappings: Vec::new(),
        rtt: obs.first.answered().map(|r| r.rtt),
        server: ServerSupport::default(),
        unsupported_reason: None,
        binding_lifetime: None,
        elapsed,
    };
    let first = match &obs.first {
        ProbeResult::Answered(r) => *r,
        ProbeResult::Silent | ProbeResult::Pending => return report,
        ProbeResult::Error(code) => {
            unsupported(
                &mut report,
                format!("the server answered a plain Binding with error {code}"),
            );
            return report;
        }
        ProbeResult::WrongSource(from) => {
            unsupported(
                &mut report,
                format!("the reply to a plain Binding came from {from}"),
            );
            return report;
        }
    };
    report.server.other_address = first.other;
    report.server.rfc5780 = first.origin.is_some() && first.other.is_some();
    let Some(m0) = first.mapped else {
        unsupported(&mut report, "the response carried no mapped address".into());
        return report;
    };
    if first.other.is_none() {
        unsupported(
            &mut report,
            "the server has no alternate address (no OTHER-ADDRESS or CHANGED-ADDRESS)".into(),
        );
        return report;
    }
    for (name, probe) in [
        ("change-IP-and-port", &obs.eif),
        ("change-port", &obs.adf),
        ("control change-IP-and-port", &obs.control_change),
    ] {
        if let Err(reason) = change_honoured(name, probe) {
            report.server.change_request = Some(false);
            unsupported(&mut report, reason);
            return report;
        }
    }
    let (Some(m1), Some(m2)) = (obs.other_ip.mapped(), obs.other_both.mapped()) else {
        unsupported(
            &mut report,
            "the server's alternate address did not answer".into(),
        );
        return report;
    };
    let Some(control_m) = obs.control_open.mapped() else {
        unsupported(
            &mut report,
            "the server's alternate address did not answer".into(),
        );
        return report;
    };
    report.mappings.push((obs.server, m0));
    let no_nat = m0 == obs.main_local;
    let mapping = if m1 == m0 {
        Behaviour::EndpointIndependent
    } else if m2 == m1 {
        Behaviour::AddressDependent
    } else {
        Behaviour::AddressAndPortDependent
    };
    let a2p1 = obs.other_ip.answered().map(|r| r.from);
    let a2p2 = obs.other_both.answered().map(|r| r.from);
    report.mappings.extend(a2p1.map(|a| (a, m1)));
    report.mappings.extend(a2p2.map(|a| (a, m2)));
    // The control: under endpoint-independent mapping our filter is open to A2:P2, so a
    // server that really changes its source must get through.
    if mapping == Behaviour::EndpointIndependent {
        match obs.control_change {
            ProbeResult::Answered(_) => report.server.change_request = Some(true),
            _ => {
                report.server.change_request = Some(false);
                unsupported(
                    &mut report,
                    "the server never answered CHANGE-REQUEST from its other address, even \
                     where our filter was open: it does not really change its source"
                        .into(),
                );
                return report;
            }
        }
    } else if obs.eif.answered().is_some() || obs.adf.answered().is_some() {
        report.server.change_request = Some(true);
    }
    let filtering = if obs.eif.answered().is_some() {
        Behaviour::EndpointIndependent
    } else if obs.adf.answered().is_some() {
        Behaviour::AddressDependent
    } else {
        Behaviour::AddressAndPortDependent
    };
    report.mapping = Some(mapping);
    if no_nat {
        if filtering == Behaviour::EndpointIndependent {
            report.nat_type = NatType::OpenInternet;
        } else {
            report.nat_type = NatType::SymmetricUdpFirewall;
            report.filtering = Some(filtering);
        }
        return report;
    }
    report.filtering = Some(filtering);
    report.hairpinning = obs.hairpin;
    report.nat_type = match (mapping, filtering) {
        (Behaviour::EndpointIndependent, Behaviour::EndpointIndependent) => NatType::FullCone,
        (Behaviour::EndpointIndependent, Behaviour::AddressDependent) => NatType::RestrictedCone,
        (Behaviour::EndpointIndependent, _) => NatType::PortRestrictedCone,
        _ => NatType::Symmetric,
    };
    // Allocation samples in the order the mappings were created: main, control, allocation,
    // and (when each destination gets its own mapping) main's mapping towards A2:P1.
    let mut samples = vec![(obs.main_local.port(), m0.port())];
    samples.push((obs.control_local.port(), control_m.port()));
    if let Some(m) = obs.allocation.mapped() {
        samples.push((obs.allocation_local.port(), m.port()));
    }
    let first_of_socket = samples.clone();
    if mapping != Behaviour::EndpointIndependent {
        samples.push((obs.main_local.port(), m1.port()));
    }
    report.port_allocation = allocation(&first_of_socket, &samples);
    report
}

/// Preserving if every socket's first mapping kept its port; sequential if the new mappings'
/// ports step by a constant; random otherwise. `None` with fewer than three samples.
fn allocation(first_of_socket: &[(u16, u16)], samples: &[(u16, u16)]) -> Option<PortAllocation> {
    if first_of_socket
        .iter()
        .all(|(local, mapped)| local == mapped)
    {
        return Some(PortAllocation::Preserving);
    }
    if samples.len() < 3 {
        return None;
    }
    let steps: Vec<i32> = samples
        .windows(2)
        .map(|w| i32::from(w[1].1) - i32::from(w[0].1))
        .collect();
    let step = steps[0];
    if step != 0 && step.abs() <= 64 && steps.iter().all(|s| *s == step) {
        Some(PortAllocation::Sequential { step })
    } else {
        Some(PortAllocation::Random)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_patterns() {
        assert_eq!(
            allocation(&[(1, 1), (2, 2)], &[(1, 1), (2, 2)]),
            Some(PortAllocation::Preserving)
        );
        let seq = [(1, 100), (2, 102), (3, 104)];
        assert_eq!(
            allocation(&seq, &seq),
            Some(PortAllocation::Sequential { step: 2 })
        );
        let rnd = [(1, 100), (2, 9000), (3, 104)];
        assert_eq!(allocation(&rnd, &rnd), Some(PortAllocation::Random));
        assert_eq!(allocation(&[(1, 5)], &[(1, 5), (1, 6)]), None);
    }
}
