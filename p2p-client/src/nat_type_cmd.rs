//! `p2p-client nat-type`: run the classifier and print the report.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use p2p_client::classify::{ClassifyOptions, classify};
use serde_json::json;
use shared::nat_classifier::{BindingLifetime, NatType, PortAllocation, Report};

/// Arguments of `nat-type`.
#[derive(clap::Args, Debug)]
pub struct NatTypeArgs {
    /// STUN server with two addresses, as HOST:PORT (its primary address and port).
    #[arg(long, value_name = "HOST:PORT")]
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
}

fn name(report: &Report) -> &'static str {
    match report.nat_type {
        NatType::OpenInternet => "open internet (no NAT)",
        NatType::FullCone => "full cone",
        NatType::RestrictedCone => "restricted cone",
        NatType::PortRestrictedCone => "port-restricted cone",
        NatType::Symmetric => "symmetric",
        NatType::SymmetricUdpFirewall => "symmetric UDP firewall (no NAT)",
        NatType::UdpBlocked => "UDP blocked (or the server is unreachable)",
        NatType::UnsupportedServer => "unknown: the server cannot classify NATs",
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

/// The JSON object `--json` prints.
pub fn to_json(server: SocketAddr, r: &Report) -> serde_json::Value {
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
        "meaning": r.punching_advice(),
    })
}

fn print_text(server: SocketAddr, r: &Report) {
    let or_dash = |s: Option<&str>| s.unwrap_or("-").to_owned();
    println!("NAT type:         {}", name(r));
    if let Some(reason) = &r.unsupported_reason {
        println!("  reason:         {reason}");
    }
    println!(
        "  mapping:        {}",
        or_dash(r.mapping.map(|b| b.as_str()))
    );
    println!(
        "  filtering:      {}",
        or_dash(r.filtering.map(|b| b.as_str()))
    );
    let hairpin = r.hairpinning.map(|h| if h { "yes" } else { "no" });
    println!("  hairpinning:    {}", or_dash(hairpin));
    let allocation = match r.port_allocation {
        Some(PortAllocation::Sequential { step }) => format!("sequential (step {step})"),
        other => or_dash(other.map(|p| p.as_str())),
    };
    println!("  port allocation: {allocation}");
    if let Some(l) = &r.binding_lifetime {
        println!("  binding lifetime: {}", lifetime_text(l));
    }
    println!("local address:    {}", r.local_address);
    println!(
        "mapped address:   {}",
        or_dash(r.mapped_address.map(|a| a.to_string()).as_deref())
    );
    if let Some(rtt) = r.rtt {
        println!("round trip:       {} ms", ms(rtt));
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
    println!("server:           {server} (alternate {other}, {dialect})");
    println!("took:             {} ms", ms(r.elapsed));
    println!();
    println!("{}", r.punching_advice());
}

/// Runs the command. Exit status: 0 when a classification was made (including
/// `unsupported-server`), 2 when no reply came back at all.
pub fn run(args: NatTypeArgs, server: SocketAddr) -> anyhow::Result<std::process::ExitCode> {
    let options = ClassifyOptions {
        local_ip: args.bind,
        classic: args.classic,
        lifetime_max: args.lifetime.map(Duration::from_secs),
    };
    let report = classify(server, options)?;
    if args.json {
        println!("{}", to_json(server, &report));
    } else {
        print_text(server, &report);
    }
    if report.nat_type == NatType::UdpBlocked {
        eprintln!(
            "p2p-client: no reply from {server}: UDP is blocked on this path, or the server is \
             down or unreachable"
        );
        return Ok(std::process::ExitCode::from(2));
    }
    Ok(std::process::ExitCode::SUCCESS)
}
