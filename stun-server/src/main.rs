//! `stun-server`: the two-address STUN server, the rendezvous server and the switchboard relay.
//!
//! With no arguments it serves STUN on 127.0.0.1 and 127.0.0.2 on ports 3478 and 3479 (UDP)
//! and 127.0.0.1:3478 (TCP), the rendezvous protocol on 127.0.0.1:1863 and the switchboard on
//! 127.0.0.1:1865, which needs no setup on Linux. `stun-server user add|list` manages
//! rendezvous accounts.

mod cli;
mod user_cmd;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use p2p_servers::ServerHandle;
use p2p_servers::metrics::{BoundMetrics, MetricsSources};
use p2p_servers::services::{self, Services};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colours for people at a terminal; none in files, pipes and journals.
        .with_ansi(std::io::stderr().is_terminal())
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
    if let Some(cli::Command::User(command)) = &cli.command {
        return user_cmd::run(command, &settings.store_location()?);
    }
    if cli.print_fingerprint {
        println!("{}", settings.server_tls()?.fingerprint());
        return Ok(());
    }
    if !settings.stun_enabled() && settings.rendezvous_listen().is_none() {
        anyhow::bail!("--no-stun and --no-rendezvous together leave nothing to serve");
    }
    let open_files = p2p_servers::raise_open_file_limit();
    // The one runtime of the process: signals, the shutdown wait and the rendezvous server run
    // on it (the switchboard keeps its own current-thread runtime, see its module docs; STUN
    // runs on plain threads). Signal handlers first: a Ctrl-C that arrives while the server
    // starts must still shut it down cleanly rather than kill the process.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("rendezvous")
        .enable_all()
        .build()?;
    let signals = runtime.block_on(async { Signals::install() })?;
    // Start everything before logging anything, so a start-up failure is one line.
    let stun = if settings.stun_enabled() {
        Some(ServerHandle::start(settings.server_options())?)
    } else {
        None
    };
    let stun_addr = stun
        .as_ref()
        .map(|s| SocketAddr::new(s.config().primary_ip, s.config().primary_port));
    // The certificate only when the rendezvous runs (a missing or mismatched file is a
    // one-line error); generated next to the database on first start.
    let services = match settings.rendezvous_listen() {
        Some(_) => match settings.services_options(stun_addr, settings.server_tls()?)? {
            Some(options) => Some(services::start_on(runtime.handle(), options)?),
            None => None,
        },
        None => None,
    };
    let metrics = match settings.metrics() {
        Some(addr) => {
            let sources = MetricsSources::new(stun.as_ref(), services.as_ref());
            Some(BoundMetrics::bind(addr, sources)?)
        }
        None => None,
    };
    if let Some(limit) = open_files {
        tracing::info!(limit, "open file limit raised to the hard limit");
    }
    if let Some(server) = &stun {
        log_stun(server, &settings);
    }
    // Served on the process's runtime; stopped (by dropping `stop_metrics`) once the servers
    // have stopped, so a last scrape during shutdown still gets an answer.
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(metrics) = metrics {
        tracing::info!(
            "metrics listening on http://{}/metrics",
            metrics.local_addr()
        );
        runtime.spawn(async move {
            let stopped = async {
                let _ = metrics_stopped.await;
            };
            if let Err(e) = metrics.run(stopped).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    if let Some(services) = &services {
        log_services(services, &settings, stun_addr);
    }

    runtime.block_on(wait_for_shutdown(
        stun.as_ref(),
        services.as_ref(),
        signals,
        settings.stats_interval(),
        settings.drain_timeout(),
    ));
    tracing::info!("shutting down");
    if let Some(services) = services {
        if let Some(stats) = services.shutdown() {
            tracing::info!(
                sessions = stats.core.sessions_started,
                relayed_bytes = stats.core.relayed_bytes,
                "switchboard stopped"
            );
        }
    }
    if let Some(server) = stun {
        let stats = server.shutdown();
        tracing::info!(%stats, "stopped");
    }
    drop(stop_metrics);
    // Readers still lingering on closed connections are dropped here.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// The switchboard first: the rendezvous line is the one scripts wait for, and it comes last.
/// A service that only listens on loopback while STUN serves a public address is a warning:
/// clients on other hosts could not reach it.
fn log_services(services: &Services, settings: &cli::Settings, stun_addr: Option<SocketAddr>) {
    let public = !settings.primary().is_loopback();
    let warn_loopback = |service: &str, flag: &str, addr: SocketAddr| {
        if public && addr.ip().is_loopback() {
            tracing::warn!(
                primary = %settings.primary(),
                "the {service} listens on loopback only ({addr}): clients on other hosts \
                 cannot reach it (set --{flag} ADDR to serve them)"
            );
        }
    };
    if let Some(sb) = services.switchboard() {
        warn_loopback("switchboard", "switchboard", sb.local_addr());
    }
    warn_loopback(
        "rendezvous server",
        "rendezvous",
        services.rendezvous().local_addr(),
    );
    let tls = services.tls();
    tracing::info!(
        cert = %tls.cert_path().map_or("(in memory)".into(), |p| p.display().to_string()),
        generated = tls.generated(),
        "TLS certificate fingerprint {}",
        tls.fingerprint()
    );
    if let (Some(sb), Some(advertised)) = (services.switchboard(), services.switchboard_addr()) {
        tracing::info!(
            advertised = %advertised,
            "switchboard listening on {}",
            sb.local_addr()
        );
    }
    let server = services.rendezvous();
    tracing::info!(
        store = %settings
            .store_location()
            .map_or_else(|e| e.to_string(), |l| l.to_string()),
        registration = if settings.registration_open() { "open" } else { "closed" },
        stun = %stun_addr.map_or("none".into(), |a| a.to_string()),
        sb = %services.switchboard_addr().map_or("none".into(), |a| a.to_string()),
        "rendezvous listening on {}",
        server.local_addr()
    );
    let peers = settings.peer_nodes();
    tracing::info!(
        state = server.node_state().word(),
        max_sessions = %settings.max_sessions().map_or("unlimited".into(), |n| n.to_string()),
        peers = %if peers.is_empty() {
            "none".to_owned()
        } else {
            peers.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
        },
        cluster = settings.cluster_url().unwrap_or("none"),
        "rendezvous node ready (SIGUSR1 drains it)"
    );
}

fn log_stun(server: &ServerHandle, settings: &cli::Settings) {
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
    if settings.server_options().rate_limit.per_second == 0 {
        tracing::warn!("rate limiting is off");
    }
}

/// SIGINT and SIGTERM (stop now), SIGUSR1 (drain, then stop), registered before anything
/// else happens.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    drain: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            drain: signal(SignalKind::user_defined1())?,
        })
    }
}

/// How often a draining node looks whether its last client has gone.
const DRAIN_CHECK: Duration = Duration::from_millis(100);

/// Waits for Ctrl-C or SIGTERM, or for the end of a drain that SIGUSR1 started (the last
/// rendezvous connection gone, or `drain_timeout` over), logging counters every
/// `stats_interval` seconds (0: never).
async fn wait_for_shutdown(
    stun: Option<&ServerHandle>,
    services: Option<&Services>,
    mut signals: Signals,
    stats_interval: u64,
    drain_timeout: Duration,
) {
    let period = Duration::from_secs(stats_interval.max(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut drain_ends: Option<tokio::time::Instant> = None;
    let mut drain_check = tokio::time::interval(DRAIN_CHECK);
    loop {
        tokio::select! {
            _ = signals.interrupt.recv() => return,
            _ = signals.terminate.recv() => return,
            _ = signals.drain.recv() => match services {
                Some(services) if drain_ends.is_none() => {
                    tracing::info!(
                        sessions = services.rendezvous().session_count(),
                        timeout_s = drain_timeout.as_secs(),
                        "SIGUSR1: draining the rendezvous node"
                    );
                    services.rendezvous().control().drain();
                    drain_ends = Some(tokio::time::Instant::now() + drain_timeout);
                }
                Some(_) => tracing::info!("SIGUSR1: already draining"),
                None => {
                    tracing::info!("SIGUSR1: no rendezvous server to drain; stopping");
                    return;
                }
            },
            _ = drain_check.tick(), if drain_ends.is_some() => {
                let Some(server) = services.map(Services::rendezvous) else { return };
                let left = server.connection_count();
                if left == 0 {
                    tracing::info!("rendezvous node drained: every client has moved; stopping");
                    return;
                }
                if drain_ends.is_some_and(|end| tokio::time::Instant::now() >= end) {
                    tracing::warn!(
                        connections = left,
                        sessions = server.session_count(),
                        "drain period over with clients left: they get OUT SSD; stopping"
                    );
                    return;
                }
            }
            _ = ticker.tick(), if stats_interval > 0 => {
                if let Some(server) = stun {
                    tracing::info!(stats = %server.stats(), "counters");
                }
                if let Some(services) = services {
                    let server = services.rendezvous();
                    tracing::info!(
                        state = server.node_state().word(),
                        connections = server.connection_count(),
                        sessions = server.session_count(),
                        online = server.online_count(),
                        transfers = server.counters().transfers,
                        "rendezvous"
                    );
                    if let Some(sb) = services.switchboard() {
                        let stats = sb.stats();
                        tracing::info!(
                            connections = stats.open_connections,
                            sessions = stats.sessions,
                            relayed_bytes = stats.core.relayed_bytes,
                            slow_readers = stats.slow_readers,
                            "switchboard"
                        );
                    }
                }
            }
        }
    }
}
