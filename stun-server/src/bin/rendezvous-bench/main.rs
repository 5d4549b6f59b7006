//! `rendezvous-bench`: many logged-in clients against the real `stun-server` binary, measuring
//! the servers' memory, the login rate, and how long a presence change takes to reach every
//! online contact.
//!
//! Two modes, and a third that compares presence stores (`--presence-stores`, `stores.rs`):
//!
//! - **One node on SQLite** (the default, `single.rs`): builds an SQLite database, starts one
//!   `stun-server --no-stun` on it and runs every client in this process.
//! - **A cluster** (`--cluster-nodes N`, `cluster.rs`): starts its own PostgreSQL and NATS
//!   server, fills the database, starts `N` nodes sharing them (and one TLS key), and runs the
//!   clients in worker processes of its own (this program again, with the hidden `--worker`),
//!   since one process may hold at most 20,000 open files on the machines this was written
//!   on. User `i` logs in at node `i mod N`, so most of its contacts sit on other nodes and
//!   their presence crosses NATS.
//!
//! In both, user `i` has users `i±1 ..= i±contacts/2` (mod the number of users) as mutual
//! contacts, so every user has `--contacts` contacts who can see it. All users share one
//! cheap verifier (Argon2id m=8 KiB, t=1): the server never runs the KDF at login, so this
//! changes nothing on its side, and it keeps 100,000 client-side logins cheap. Every client
//! logs in over its own TLS 1.3 connection as the real client does (it trusts exactly the key
//! the server announces, and binds its SCRAM login to the TLS session); the login rate
//! includes the TCP connect and the TLS handshake. Connections are spread over several
//! loopback source addresses, since one source address has only ~28,000 ephemeral ports per
//! server address. Then `--changes` presence changes are made at `--rate` per second, each on
//! a different client, and each is timed from the moment its client writes `CHG` until *all*
//! of that client's contacts have the push (`CLOCK_MONOTONIC`, one clock for all processes).
//! Every client answers the server's keepalive pings throughout.
//!
//! Bounded in count and time: every phase has a deadline, every process the bench starts is
//! stopped by its pid at the end, and its temporary directories are removed.

mod client;
mod cluster;
mod procs;
mod single;
mod stores;
mod tally;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Parser;

/// Benchmark the rendezvous server with many logged-in clients.
///
/// Without --cluster-nodes: one `stun-server --no-stun --no-switchboard` on a fresh SQLite
/// database. With --cluster-nodes N: N nodes on one PostgreSQL and one NATS server that the
/// bench starts, and the clients in --workers processes of their own.
#[derive(Parser, Debug)]
pub struct Args {
    /// Concurrent logged-in clients.
    #[arg(long, default_value_t = 50_000)]
    clients: usize,
    /// Contacts per user (even; every one of them mutual).
    #[arg(long, default_value_t = 20)]
    contacts: usize,
    /// Presence changes to time.
    #[arg(long, default_value_t = 2_000)]
    changes: usize,
    /// Presence changes per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Logins in flight at once (in the cluster mode: over all workers).
    #[arg(long, default_value_t = 256)]
    login_window: usize,
    /// Loopback source addresses to spread the connections over (127.0.0.2, .3, ...).
    #[arg(long, default_value_t = 4)]
    source_ips: u8,
    /// Rendezvous port for the server under test in the single-node mode (not 1863, so a
    /// running default server is not hit). The cluster mode picks free ports.
    #[arg(long, default_value_t = 21_863)]
    port: u16,
    /// The `stun-server` binary [default: next to this one].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Pin the server to this CPU (taskset); in the cluster mode the nodes, PostgreSQL and
    /// NATS, with the workers pinned to the other CPUs.
    #[arg(long)]
    server_cpu: Option<usize>,
    /// Give up on any phase after this many seconds.
    #[arg(long, default_value_t = 300)]
    phase_timeout: u64,
    /// Run a cluster of this many nodes on PostgreSQL and NATS instead of one node on SQLite.
    #[arg(long, default_value_t = 0)]
    cluster_nodes: usize,
    /// Worker processes holding the clients in the cluster mode [default: one per 15,000
    /// clients, and at least 2].
    #[arg(long)]
    workers: Option<usize>,
    /// Instead of clients: time a login's presence read and a presence change in PostgreSQL
    /// and in JetStream KV, beside the nodes' in-memory replica (`stores.rs`), with
    /// --clients users, --contacts per login and --changes operations.
    #[arg(long)]
    presence_stores: bool,
    /// Internal: run as worker K of the cluster mode (started by the bench itself).
    #[arg(long, hide = true)]
    worker: Option<usize>,
    /// Internal: the workers' node addresses, comma-separated, node `i mod N` for user `i`.
    #[arg(long, hide = true)]
    nodes: Option<String>,
    /// Internal: the key the workers pin.
    #[arg(long, hide = true)]
    fingerprint: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.worker.is_some() {
        worker::run(&args)
    } else {
        check(&args).and_then(|()| {
            p2p_servers::raise_open_file_limit();
            if args.presence_stores {
                stores::run(&args)
            } else if args.cluster_nodes > 0 {
                cluster::run(&args)
            } else {
                single::run(&args)
            }
        })
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rendezvous-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: &Args) -> anyhow::Result<()> {
    if args.contacts % 2 != 0 || args.contacts >= args.clients {
        bail!("--contacts must be even and smaller than --clients");
    }
    if args.source_ips == 0 || args.source_ips > 200 {
        bail!("--source-ips must be 1..=200");
    }
    if args.clients >= 1_000_000 {
        bail!("--clients must be below 1,000,000 (user names have six digits)");
    }
    Ok(())
}

/// The loopback source address client `i` connects from.
fn source_of(i: usize, source_ips: u8) -> std::net::IpAddr {
    let last = 2 + (i % usize::from(source_ips));
    std::net::Ipv4Addr::new(127, 0, 0, u8::try_from(last).unwrap_or(2)).into()
}
