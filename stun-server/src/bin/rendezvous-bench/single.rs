//! The single-node mode: one `stun-server` on SQLite, every client in this process.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use shared::identity::Fingerprint;
use shared::rendezvous::scram::derive_credentials;
use shared::rendezvous::{StoreOp, UserName, UserRecord};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use crate::client::{BENCH_KDF, BenchClient, PASSWORD, Report, name_of};
use crate::procs::{self, TempDir};
use crate::tally::{Tally, print_percentiles};
use crate::{Args, source_of};

pub fn run(args: &Args) -> anyhow::Result<()> {
    let dir = TempDir::new("sqlite")?;
    let db = dir.0.join("bench.db");
    let started = Instant::now();
    build_database(&db, args.clients, args.contacts)?;
    println!(
        "database: {} users x {} contacts in {:.1} s",
        args.clients,
        args.contacts,
        started.elapsed().as_secs_f64()
    );
    let bin = procs::server_bin(args.server_bin.as_deref())?;
    let cpu = args.server_cpu.map(|c| c.to_string());
    let mut cmd = procs::pinned(&bin, cpu.as_deref());
    cmd.args(["--no-stun", "--no-switchboard", "--rendezvous"])
        .arg(format!("127.0.0.1:{}", args.port))
        .arg("--db")
        .arg(&db)
        .args(["--min-kdf", "argon2id:m=8:t=1:p=1"])
        // The library logs as p2p_servers, the binary (its listening lines) as stun_server.
        .env("RUST_LOG", "warn,p2p_servers=info,stun_server=info");
    let (server, fingerprint) = procs::start_server(
        "server",
        cmd,
        "rendezvous listening",
        Duration::from_secs(30),
    )?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(drive(args, server.pid(), fingerprint))
}

fn build_database(path: &std::path::Path, n: usize, contacts: usize) -> anyhow::Result<()> {
    let credentials = derive_credentials(PASSWORD, b"bench-salt-16byt", BENCH_KDF)?;
    let mut ops = Vec::with_capacity(n * (contacts + 1));
    for i in 0..n {
        ops.push(StoreOp::CreateUser(UserRecord {
            name: UserName::parse(&name_of(i))?,
            credentials: credentials.clone(),
        }));
    }
    let half = contacts / 2;
    for i in 0..n {
        let owner = UserName::parse(&name_of(i))?;
        for d in 1..=half {
            for j in [(i + d) % n, (i + n - d) % n] {
                ops.push(StoreOp::AddContact {
                    owner: owner.clone(),
                    contact: UserName::parse(&name_of(j))?,
                });
            }
        }
    }
    let mut store = p2p_servers::rendezvous::Store::open(path)?;
    store.apply_batch(&ops)?;
    Ok(())
}

async fn drive(args: &Args, server_pid: u32, fingerprint: Fingerprint) -> anyhow::Result<()> {
    let server: SocketAddr = (Ipv4Addr::LOCALHOST, args.port).into();
    let tls = TlsConnector::from(p2p_servers::tls::pinned_client_config(fingerprint));
    let (report_tx, mut reports) = mpsc::unbounded_channel();
    let gate = Arc::new(tokio::sync::Semaphore::new(args.login_window));
    let mut commands = Vec::with_capacity(args.clients);
    let login_started = Instant::now();
    for i in 0..args.clients {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        commands.push(cmd_tx);
        let client = BenchClient {
            index: i,
            server,
            tls: tls.clone(),
            source: source_of(i, args.source_ips),
            reports: report_tx.clone(),
        };
        let gate = gate.clone();
        tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            client.run(cmd_rx, permit.ok()).await;
        });
    }
    drop(report_tx);

    // Phase 1: everyone logged in and online.
    let deadline = Instant::now() + Duration::from_secs(args.phase_timeout);
    let mut logged_in = 0usize;
    let mut failures = Vec::new();
    while logged_in + failures.len() < args.clients {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reports.recv()).await {
            Ok(Some(Report::LoggedIn)) => logged_in += 1,
            Ok(Some(Report::Failed(e))) => failures.push(e),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let login_secs = login_started.elapsed().as_secs_f64();
    if !failures.is_empty() || logged_in < args.clients {
        bail!(
            "{logged_in} of {} clients logged in within {} s; {} failures, first: {:?}",
            args.clients,
            args.phase_timeout,
            failures.len(),
            failures.first()
        );
    }
    println!(
        "logged in: {logged_in} clients in {login_secs:.1} s ({:.0} TLS handshakes + logins/s)",
        logged_in as f64 / login_secs
    );
    // Let the log-in presence storm drain before measuring.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(3), reports.recv()).await {}
    let (rss, hwm) = procs::memory_kib(server_pid)?;
    println!(
        "server memory with {logged_in} clients online: RSS {:.0} MiB (peak {:.0} MiB), \
         {} open files",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        procs::open_files(server_pid)
    );
    let cpu_before = procs::cpu_secs(server_pid)?;

    // Phase 2: presence changes, each on a different client, at a fixed rate.
    let changes = args.changes.min(args.clients);
    let stride = (args.clients / changes).max(1);
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let mut tally = Tally::new(args.contacts);
    let mut next_send = Instant::now();
    let mut sent = 0usize;
    let phase_deadline = Instant::now() + Duration::from_secs(args.phase_timeout);
    while (sent < changes || tally.in_flight() > 0) && Instant::now() < phase_deadline {
        if sent < changes && Instant::now() >= next_send {
            let who = (sent * stride) % args.clients;
            let state = if sent % 2 == 0 { *b"BSY" } else { *b"AWY" };
            tally.expect(u32::try_from(who)?, state);
            let _ = commands[who].send(state);
            sent += 1;
            next_send += interval;
            continue;
        }
        let wait = if sent < changes {
            next_send.saturating_duration_since(Instant::now())
        } else {
            Duration::from_millis(100)
        };
        match tokio::time::timeout(wait, reports.recv()).await {
            Ok(Some(Report::Sent { who, state, at })) => tally.sent(who, state, at),
            Ok(Some(Report::Push { who, state, at, .. })) => tally.push(who, state, at, false),
            _ => {}
        }
    }
    let cpu_after = procs::cpu_secs(server_pid)?;
    if tally.in_flight() > 0 {
        bail!(
            "{} of {changes} presence changes did not reach all {} contacts within {} s",
            tally.in_flight(),
            args.contacts,
            args.phase_timeout
        );
    }
    println!(
        "presence changes: {changes} at {}/s, each to {} online contacts; server CPU {:.2} s",
        args.rate,
        args.contacts,
        cpu_after - cpu_before
    );
    print_percentiles("  time until ALL contacts had it", &mut tally.to_all);
    print_percentiles("  time per delivery            ", &mut tally.same_node);
    let (rss, hwm) = procs::memory_kib(server_pid)?;
    println!(
        "server memory at the end: RSS {:.0} MiB (peak {:.0} MiB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    Ok(())
}
