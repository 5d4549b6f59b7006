//! `natlab`: build a lab of real kernel NATs by hand, run commands in it, clean up after it.
//!
//! ```text
//! natlab up --shape two-peers --nat port-restricted-cone --nat2 symmetric --hairpin
//! natlab exec p2pl1234-0-c0 -- ping -c1 198.51.100.1
//! natlab down
//! ```
//!
//! Needs root with `ip`, `nft` and `conntrack`. See `tests::lab` for the address plan.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tests::lab::{Lab, cleanup_stale, lab_namespaces};
use tests::nat_types::{NatType, RouterOptions};

/// Real kernel NATs in network namespaces, for trying the toolkit by hand.
#[derive(Debug, Parser)]
#[command(name = "natlab", version)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Cmd,
}

/// The lab shapes `natlab up` can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Shape {
    /// One client behind one router (`--nat`).
    OneClient,
    /// Two clients, each behind its own router (`--nat` and `--nat2`), separated by the core.
    TwoPeers,
    /// Two clients on one LAN behind one router (`--nat`).
    SameNat,
    /// A client behind a home router (`--nat`) behind a carrier router (`--nat2`).
    DoubleNat,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build a lab, print every host's namespace and addresses, and keep it up until Ctrl-C
    /// (SIGINT or SIGTERM), then tear it down.
    Up {
        /// The shape of the lab.
        #[arg(long, value_enum, default_value = "one-client")]
        shape: Shape,
        /// NAT type of the (first) router: none, full-cone, restricted-cone,
        /// port-restricted-cone, symmetric, symmetric-udp-firewall, udp-blocked.
        #[arg(long, value_parser = parse_nat, default_value = "port-restricted-cone")]
        nat: NatType,
        /// NAT type of the second router (two-peers: the second site; double-nat: the
        /// carrier). Defaults to `--nat`.
        #[arg(long, value_parser = parse_nat)]
        nat2: Option<NatType>,
        /// Let inside hosts reach each other through the outside address (every router).
        #[arg(long)]
        hairpin: bool,
        /// Idle timeout of UDP mappings and conntrack entries, in seconds (every router).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Random loss of forwarded packets, in percent, both directions (every router).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
        loss: u8,
        /// Leave out the router input rule that drops unsolicited traffic to the router itself
        /// (exposes the conntrack race of docs/DESIGN.md section 5).
        #[arg(long)]
        no_drop_unsolicited: bool,
        /// Make the (first) site dual stack: a global IPv6 prefix behind a stateful firewall.
        #[arg(long)]
        ipv6: bool,
        /// Make the second site (two-peers) dual stack.
        #[arg(long)]
        ipv6_2: bool,
    },
    /// Run a command inside a lab namespace (`ip netns exec NS CMD...`); exits with its status.
    Exec {
        /// The namespace, as printed by `natlab up`.
        ns: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Delete lab namespaces (`p2pl...`) whose process is gone, and those of the given pids.
    Down {
        /// Also delete the namespaces of these (live) `natlab up` or test processes.
        pids: Vec<u32>,
    },
    /// List every lab namespace on the machine.
    List,
}

fn parse_nat(s: &str) -> Result<NatType, String> {
    NatType::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = NatType::ALL.iter().map(|t| t.name()).collect();
        format!("unknown NAT type `{s}` (one of: {})", names.join(", "))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Up {
            shape,
            nat,
            nat2,
            hairpin,
            timeout,
            loss,
            no_drop_unsolicited,
            ipv6,
            ipv6_2,
        } => {
            let options = |nat, ipv6| RouterOptions {
                hairpin,
                udp_timeout: Duration::from_secs(timeout),
                loss_percent: loss,
                drop_unsolicited: !no_drop_unsolicited,
                ipv6,
                ..RouterOptions::new(nat)
            };
            let (first, second) = (options(nat, ipv6), options(nat2.unwrap_or(nat), ipv6_2));
            // Block the termination signals before any thread exists, then wait for one.
            let signals = block_signals();
            let lab = match shape {
                Shape::OneClient => Lab::one_client(first),
                Shape::TwoPeers => Lab::two_peers(first, second),
                Shape::SameNat => Lab::same_nat(first),
                Shape::DoubleNat => Lab::double_nat(first, second),
            };
            let lab = match lab {
                Ok(lab) => lab,
                Err(e) => {
                    eprintln!("natlab: {e}");
                    return ExitCode::FAILURE;
                }
            };
            print_lab(&lab);
            println!("up (pid {}); Ctrl-C tears it down", std::process::id());
            wait_for_signal(&signals);
            drop(lab);
            println!("down");
            ExitCode::SUCCESS
        }
        Cmd::Exec { ns, cmd } => {
            let status = std::process::Command::new("ip")
                .args(["netns", "exec", &ns])
                .args(&cmd)
                .status();
            match status {
                Ok(s) => ExitCode::from(s.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)),
                Err(e) => {
                    eprintln!("natlab: ip netns exec {ns}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Down { pids } => {
            for name in cleanup_stale(&pids) {
                println!("deleted {name}");
            }
            ExitCode::SUCCESS
        }
        Cmd::List => {
            for name in lab_namespaces() {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
    }
}

fn print_lab(lab: &Lab) {
    let server = lab.server();
    let ips: Vec<String> = (server.ips.iter().map(ToString::to_string))
        .chain(server.ips6.iter().map(ToString::to_string))
        .collect();
    println!("{:<8} {:<22} {}", "server", server.ns, ips.join(" "));
    println!("{:<8} {:<22} (internet core router)", "core", lab.core_ns());
    for r in lab.routers() {
        println!(
            "{:<8} {:<22} wan {} lan {}/{} ({}{}{}, timeout {} s, loss {} %)",
            format!("router{}", r.index),
            r.ns,
            r.wan_ip,
            r.lan_net.0,
            r.lan_net.1,
            r.options.nat.name(),
            if r.options.hairpin { ", hairpin" } else { "" },
            if r.options.drop_unsolicited {
                ""
            } else {
                ", no input drop"
            },
            r.options.udp_timeout.as_secs(),
            r.options.loss_percent
        );
        if let (Some(wan6), Some(lan6)) = (r.wan_ip6, r.lan_net6) {
            println!("{:<8} {:<22} wan {wan6} lan {lan6}/64", "", "");
        }
    }
    for c in lab.clients() {
        let ips: Vec<String> = (c.ips.iter().map(ToString::to_string))
            .chain(c.ips6.iter().map(ToString::to_string))
            .collect();
        println!("{:<8} {:<22} {}", c.role, c.ns, ips.join(" "));
    }
}

/// SIGINT and SIGTERM, blocked in this (still single-threaded) process.
fn block_signals() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before any other use; these calls only
    // touch the local set and this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is an initialised signal set and `sig` a valid out pointer.
    unsafe {
        libc::sigwait(set, &mut sig);
    }
}
