//! `p2p-client nat-type`: run the classifier and print the report.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use p2p_client::classify::{ClassifyOptions, Ipv6Check, STUN_PORT, classify, classify_ipv6};
use p2p_client::portmap::{Reach, Survey};
use p2p_client::stdout::{self, WriteError};
use serde_json::json;
use shared::nat_classifier::{BindingLifetime, NatType, PortAllocation, Report};

/// Arguments of `nat-type`.
#[derive(clap::Args, Debug)]
pub struct NatTypeArgs {
    /// STUN server with two addresses (its primary address and port), as HOST, HOST:PORT,
    /// IPv6 or [IPv6]:PORT; the port defaults to 3478.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub server: String,
    /// Local IP to send from [default: the one the system routes to the server from].
    #[arg(long, value_name = "IP")]
    pub bind: Option<IpAddr>,
    /// Send classic RFC 3489 requests (for servers that only speak the old protocol).
    #[arg(long)]
    pub classic: bool,
    /// Also search the binding lifetime (how long a silent mapping lives), up to this many
    /// seconds. Takes about twice as long as the value given.
    #[arg(long, value_name = "MAX_SECONDS")]
    pub lifetime: Option<u64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Do not ask the default gateway for port mappings (PCP, NAT-PMP, UPnP-IGD). By default each is
    /// tried for a few seconds, checked and deleted again (docs/PORTMAP.md). Never asked when
    /// the server is on loopback.
    #[arg(long)]
    pub no_port_mapping: bool,
    /// The STUN server's IPv6 address, for the IPv6 section (reachability, translation and
    /// filtering over IPv6), as IPv6, [IPv6]:PORT or a name with an AAAA record [default: the
    /// AAAA record of --server when it is a name].
    #[arg(long, value_name = "HOST[:PORT]", conflicts_with = "no_ipv6")]
    pub server6: Option<String>,
    /// Leave out the IPv6 section.
    #[arg(long)]
    pub no_ipv6: bool,
}

/// The type as JSON and the README name it, with a gloss.
fn name(report: &Report) -> String {
    let gloss = match report.nat_type {
        NatType::OpenInternet => " (no NAT)",
        NatType::SymmetricUdpFirewall => " (no NAT, a stateful firewall)",
        NatType::UdpBlocked => " (no answer from the server)",
        NatType::UnsupportedServer => " (this server cannot classify NATs)",
        _ => "",
    };
    format!("{}{gloss}", report.nat_type.as_str())
}

/// What no answer at all means: the same sentence on stdout, in JSON and on stderr.
fn no_answer(server: SocketAddr) -> String {
    format!(
        "No answer from {server}: either the server is down or UDP is blocked on the path; we \
         cannot tell which. If UDP is blocked, only a relay over TCP will work."
    )
}

/// What the result means for hole punching.
fn meaning(server: SocketAddr, r: &Report) -> String {
    match r.nat_type {
        NatType::UdpBlocked => no_answer(server),
        _ => r.punching_advice().to_owned(),
    }
}

/// Why there is no binding lifetime after `--lifetime`.
fn no_lifetime(r: &Report) -> &'static str {
    match r.nat_type {
        NatType::OpenInternet | NatType::SymmetricUdpFirewall => {
            "none to measure: no NAT, so no binding that could expire"
        }
        NatType::UdpBlocked => "not measured: no answer from the server",
        NatType::UnsupportedServer => "not measured: this server cannot classify NATs",
        _ => "not measured",
    }
}

fn lifetime_text(l: &BindingLifetime) -> String {
    match l {
        BindingLifetime::Between {
            at_least,
            less_than,
        } => {
            format!(
                "between {} s and {} s",
                at_least.as_secs(),
                less_than.as_secs()
            )
        }
        BindingLifetime::AtLeast(d) => format!("at least {} s (the maximum searched)", d.as_secs()),
        BindingLifetime::Unsupported => "not measurable with this server (no RESPONSE-PORT)".into(),
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// The JSON object `--json` prints (`ipv6`: null when the section was left out).
pub fn to_json(
    server: SocketAddr,
    r: &Report,
    survey: Option<&Survey>,
    ipv6: Option<&Ipv6Check>,
) -> serde_json::Value {
    let lifetime = r.binding_lifetime.map(|l| match l {
        BindingLifetime::Between {
            at_least,
            less_than,
        } => {
            json!({"at_least_s": at_least.as_secs_f64(), "less_than_s": less_than.as_secs_f64()})
        }
        BindingLifetime::AtLeast(d) => json!({"at_least_s": d.as_secs_f64(), "less_than_s": null}),
        BindingLifetime::Unsupported => json!({"unsupported": true}),
    });
    json!({
        "nat_type": r.nat_type.as_str(),
        "mapping": r.mapping.map(|b| b.as_str()),
        "filtering": r.filtering.map(|b| b.as_str()),
        "hairpinning": r.hairpinning,
        "port_allocation": r.port_allocation.map(|p| p.as_str()),
        "port_allocation_step": match r.port_allocation {
            Some(PortAllocation::Sequential { step }) => json!(step),
            _ => json!(null),
        },
        "local_address": r.local_address.to_string(),
        "mapped_address": r.mapped_address.map(|a| a.to_string()),
        "mappings": r.mappings.iter().map(|(to, m)| json!({"server": to.to_string(), "mapped": m.to_string()})).collect::<Vec<_>>(),
        "rtt_ms": r.rtt.map(ms),
        "elapsed_ms": ms(r.elapsed),
        "server": {
            "address": server.to_string(),
            "other_address": r.server.other_address.map(|a| a.to_string()),
            "rfc5780": r.server.rfc5780,
            "change_request": r.server.change_request,
            "response_port": r.server.response_port,
        },
        "unsupported_reason": r.unsupported_reason,
        "binding_lifetime": lifetime,
        "meaning": meaning(server, r),
        "port_mapping": survey.map(survey_json),
        "ipv6": ipv6.map(crate::nat_type_v6::to_json),
    })
}

/// The `port_mapping` object: the gateway, and per protocol whether it answered, the mapping,
/// whether it received from outside and whether it was deleted.
fn survey_json(s: &Survey) -> serde_json::Value {
    let mut value = json!({
        "gateway": s.gateway.map(|g| g.to_string()),
    });
    for p in &s.results {
        let (offered, external, lifetime, error) = match &p.mapping {
            Ok(m) => (
                true,
                Some(m.external.to_string()),
                Some(m.lifetime.as_secs()),
                None,
            ),
            Err(e) => (false, None, None, Some(e.to_string())),
        };
        value[p.method.as_str()] = json!({
            "offered": offered,
            "external": external,
            "lifetime_s": lifetime,
            "receives_from_outside": p.reach.map(|r| match r {
                Reach::Reachable => json!(true),
                Reach::Unreachable => json!(false),
                Reach::NotChecked(_) => json!(null),
            }),
            "not_checked_reason": match p.reach {
                Some(Reach::NotChecked(why)) => json!(why),
                _ => json!(null),
            },
            "deleted": p.deleted,
            "error": error,
        });
    }
    value
}

/// The text lines of the port-mapping section.
fn survey_text(s: &Survey, out: &mut Vec<String>) {
    let Some(gateway) = s.gateway else {
        out.push("port mapping:     no IPv4 default gateway to ask".into());
        return;
    };
    out.push(format!("port mapping:     gateway {gateway}"));
    for p in &s.results {
        let name = format!("{}:", p.method.as_str());
        let line = match &p.mapping {
            Ok(m) => {
                let reach = match p.reach {
                    Some(Reach::NotChecked(why)) => format!("not checked ({why})"),
                    Some(r) => r.as_str().to_owned(),
                    None => "-".into(),
                };
                let deleted = if p.deleted == Some(true) {
                    "deleted"
                } else {
                    "deletion unconfirmed, the lease ends it"
                };
                format!(
                    "mapped {} for {} s, receives from outside: {reach} ({deleted})",
                    m.external,
                    m.lifetime.as_secs()
                )
            }
            Err(e) => format!("not offered: {e}"),
        };
        out.push(format!("  {name:<16}{line}"));
    }
}

fn print_text(
    server: SocketAddr,
    r: &Report,
    lifetime_asked: bool,
    survey: Option<&Survey>,
    ipv6: Option<&Ipv6Check>,
) -> Result<(), WriteError> {
    let or_dash = |s: Option<&str>| s.unwrap_or("-").to_owned();
    let mut out = vec![format!("NAT type:         {}", name(r))];
    if let Some(reason) = &r.unsupported_reason {
        out.push(format!("  reason:         {reason}"));
    }
    out.push(format!(
        "  mapping:        {}",
        or_dash(r.mapping.map(|b| b.as_str()))
    ));
    out.push(format!(
        "  filtering:      {}",
        or_dash(r.filtering.map(|b| b.as_str()))
    ));
    let hairpin = r.hairpinning.map(|h| if h { "yes" } else { "no" });
    out.push(format!("  hairpinning:    {}", or_dash(hairpin)));
    let allocation = match r.port_allocation {
        Some(PortAllocation::Sequential { step }) => format!("sequential (step {step})"),
        other => or_dash(other.map(|p| p.as_str())),
    };
    out.push(format!("  port allocation: {allocation}"));
    match &r.binding_lifetime {
        Some(l) => out.push(format!("  binding lifetime: {}", lifetime_text(l))),
        None if lifetime_asked => out.push(format!("  binding lifetime: {}", no_lifetime(r))),
        None => {}
    }
    out.push(format!("local address:    {}", r.local_address));
    out.push(format!(
        "mapped address:   {}",
        or_dash(r.mapped_address.map(|a| a.to_string()).as_deref())
    ));
    if let Some(rtt) = r.rtt {
        out.push(format!("round trip:       {} ms", ms(rtt)));
    }
    let other = r
        .server
        .other_address
        .map_or("none".to_owned(), |a| a.to_string());
    let dialect = if r.server.rfc5780 {
        "RFC 5780"
    } else {
        "classic RFC 3489"
    };
    out.push(if r.nat_type == NatType::UdpBlocked {
        format!("server:           {server} (no answer)")
    } else {
        format!("server:           {server} (alternate {other}, {dialect})")
    });
    out.push(format!("took:             {} ms", ms(r.elapsed)));
    if let Some(survey) = survey {
        survey_text(survey, &mut out);
    }
    if let Some(check) = ipv6 {
        crate::nat_type_v6::text(check, &mut out);
    }
    out.push(String::new());
    out.push(meaning(server, r));
    stdout::lines(out)
}

/// Runs the command. Exit status: 0 when a classification was made (including
/// `unsupported-server`), 2 when no reply came back at all (said on stderr too), also when
/// the reader closed standard output early.
pub fn run(args: NatTypeArgs, server: SocketAddr) -> anyhow::Result<std::process::ExitCode> {
    let options = ClassifyOptions {
        local_ip: args.bind,
        classic: args.classic,
        lifetime_max: args.lifetime.map(Duration::from_secs),
    };
    let report = classify(server, options)?;
    // The IPv6 section, unless left out or the report above is already over IPv6.
    let ipv6 = if args.no_ipv6 || server.is_ipv6() {
        None
    } else {
        let server6 = match &args.server6 {
            Some(text) => Some(crate::nat_type_v6::server6_of(text, STUN_PORT).ok_or_else(
                || anyhow::anyhow!("--server6 {text}: not an IPv6 address or a name with one"),
            )?),
            None => crate::nat_type_v6::server6_of(&args.server, STUN_PORT),
        };
        Some(classify_ipv6(server6, options)?)
    };
    // A server on loopback is a local test: there is no gateway between us to ask.
    let skip = args.no_port_mapping || server.ip().is_loopback();
    let survey = if skip || report.nat_type == NatType::UdpBlocked {
        None
    } else {
        Some(
            crate::account_cmd::runtime()?.block_on(p2p_client::portmap::survey(server, args.bind)),
        )
    };
    let code = if report.nat_type == NatType::UdpBlocked {
        stdout::note(format_args!("p2p-client: {}", no_answer(server)));
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::SUCCESS
    };
    let printed = if args.json {
        stdout::line(to_json(server, &report, survey.as_ref(), ipv6.as_ref()))
    } else {
        print_text(
            server,
            &report,
            args.lifetime.is_some(),
            survey.as_ref(),
            ipv6.as_ref(),
        )
    };
    match printed {
        // The reader closed the pipe: the status stays what the classification says.
        Ok(()) | Err(WriteError::Closed) => Ok(code),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use p2p_client::portmap::{Granted, Method, PortmapError, ProtocolResult};

    use super::*;

    fn survey() -> Survey {
        let granted = Granted {
            method: Method::Pcp,
            external: "203.0.113.2:40000".parse().unwrap(),
            lifetime: Duration::from_secs(60),
        };
        Survey {
            gateway: Some("10.1.0.1".parse().unwrap()),
            results: vec![
                ProtocolResult {
                    method: Method::Pcp,
                    mapping: Ok(granted),
                    reach: Some(Reach::Reachable),
                    deleted: Some(true),
                },
                ProtocolResult {
                    method: Method::Upnp,
                    mapping: Err(PortmapError::Refused),
                    reach: None,
                    deleted: None,
                },
            ],
        }
    }

    #[test]
    fn the_port_mapping_section_says_what_was_offered_reached_and_deleted() {
        let mut out = Vec::new();
        survey_text(&survey(), &mut out);
        assert_eq!(out[0], "port mapping:     gateway 10.1.0.1");
        assert_eq!(
            out[1],
            "  pcp:            mapped 203.0.113.2:40000 for 60 s, receives from outside: yes (deleted)"
        );
        assert_eq!(
            out[2],
            "  upnp:           not offered: nothing listens on the gateway's port 5351"
        );
        let json = survey_json(&survey());
        assert_eq!(json["pcp"]["receives_from_outside"], true);
        assert_eq!(json["pcp"]["external"], "203.0.113.2:40000");
        assert_eq!(json["upnp"]["offered"], false);
        assert_eq!(json["gateway"], "10.1.0.1");
    }
}
