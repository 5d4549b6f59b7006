//! `stun-server`: the two-address STUN server.
//!
//! With no arguments it serves 127.0.0.1 and 127.0.0.2 on ports 3478 and 3479 (UDP) and
//! 127.0.0.1:3478 (TCP), which needs no setup on Linux.

mod cli;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use stun_server::ServerHandle;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stun-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: cli::Cli) -> anyhow::Result<()> {
    let settings = cli.settings()?;
    if cli.print_config {
        print!("{}", settings.to_toml()?);
        return Ok(());
    }
    let options = settings.server_options();
    // Signal handlers first: a Ctrl-C that arrives while the server starts must still shut it
    // down cleanly rather than kill the process.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signals = runtime.block_on(async { Signals::install() })?;
    let server = ServerHandle::start(options.clone())?;
    let config = server.config();
    match config.alternate_ip {
        Some(alt) => tracing::info!(
            primary = %config.primary_ip,
            alternate = %alt,
            "advertising two addresses: OTHER-ADDRESS and CHANGE-REQUEST are served"
        ),
        None => tracing::warn!(
            primary = %config.primary_ip,
            "single-address mode: no OTHER-ADDRESS; change-IP requests are refused"
        ),
    }
    let udp: Vec<String> = server.udp_addrs().iter().map(ToString::to_string).collect();
    tracing::info!(
        udp = %udp.join(", "),
        tcp = %server.tcp_addr().map_or("off".into(), |a| a.to_string()),
        workers = server.workers(),
        "STUN server listening"
    );
    if options.rate_limit.per_second == 0 {
        tracing::warn!("rate limiting is off");
    }

    runtime.block_on(wait_for_shutdown(&server, signals, settings.stats_interval));
    tracing::info!("shutting down");
    let stats = server.shutdown();
    tracing::info!(%stats, "stopped");
    Ok(())
}

/// SIGINT and SIGTERM, registered before anything else happens.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }
}

/// Waits for Ctrl-C or SIGTERM, logging counters every `stats_interval` seconds (0: never).
async fn wait_for_shutdown(server: &ServerHandle, mut signals: Signals, stats_interval: u64) {
    let period = Duration::from_secs(stats_interval.max(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = signals.interrupt.recv() => return,
            _ = signals.terminate.recv() => return,
            _ = ticker.tick(), if stats_interval > 0 => {
                tracing::info!(stats = %server.stats(), "counters");
            }
        }
    }
}
