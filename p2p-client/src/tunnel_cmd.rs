//! `tunnel`: TCP port forwarding over a link, like `ssh -L`.
//!
//! One side listens (`--listen ADDR`): every TCP connection it accepts is carried over the
//! link, in a QUIC stream of its own, to the other side (`--connect ADDR`), which opens a TCP
//! connection to ADDR for it and copies bytes both ways; half-closes pass through
//! ([`p2p_client::tunnel`]). The tunnel runs until Ctrl-C or until the peer leaves.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, bail};
use p2p_client::home::Home;
use p2p_client::tunnel::{self, TunnelEvent};
use serde_json::json;

use crate::account_cmd::AccountArgs;
use crate::link_cmd::{LinkArgs, Linked, open_link, show_link_event};

/// `p2p-client tunnel`.
#[derive(clap::Args, Debug)]
#[group(id = "side", required = true, multiple = false)]
pub struct TunnelArgs {
    #[command(flatten)]
    account: AccountArgs,
    #[command(flatten)]
    link: LinkArgs,
    /// Listen for TCP connections on ADDR (e.g. 127.0.0.1:8080) and carry each to the peer.
    #[arg(long, value_name = "ADDR", group = "side")]
    listen: Option<SocketAddr>,
    /// Connect every connection the peer carries over to ADDR (e.g. 127.0.0.1:80).
    #[arg(long, value_name = "ADDR", group = "side")]
    connect: Option<SocketAddr>,
}

/// How one tunnel event is shown.
fn show(event: &TunnelEvent, json_mode: bool) {
    if json_mode {
        let value = match event {
            TunnelEvent::Opened { id, peer } => {
                json!({"event": "tunnel_opened", "id": id, "peer": peer.to_string()})
            }
            TunnelEvent::Closed { id, error } => {
                json!({"event": "tunnel_closed", "id": id, "error": error})
            }
            TunnelEvent::ConnectFailed { id, error } => {
                json!({"event": "tunnel_connect_failed", "id": id, "error": error})
            }
        };
        println!("{value}");
        return;
    }
    match event {
        TunnelEvent::Opened { id, peer } => tracing::info!(id, %peer, "tunnelled connection"),
        TunnelEvent::Closed { id, error: None } => tracing::info!(id, "tunnelled connection ended"),
        TunnelEvent::Closed {
            id,
            error: Some(error),
        } => eprintln!("-- connection {id} aborted: {error}"),
        TunnelEvent::ConnectFailed { id, error } => {
            eprintln!("-- connection {id}: cannot reach the target: {error}");
        }
    }
}

/// `tunnel`.
pub async fn run(args: TunnelArgs, home: &Home) -> anyhow::Result<ExitCode> {
    // Bind first: a port in use is an error before anyone is bothered.
    let listener = match args.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--listen {addr}"))?,
        ),
        None => None,
    };
    let Some(target) = args.connect.or(args.listen) else {
        bail!("one of --listen ADDR and --connect ADDR is required");
    };
    let mut linked = open_link(&args.account, &args.link, home).await?;
    let result = serve(&mut linked, listener, target).await;
    let closed = linked.link.close().await;
    linked.session.logout().await;
    result?;
    match closed {
        Ok(()) | Err(p2p_client::link::LinkError::Closed) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
    }
}

async fn serve(
    linked: &mut Linked,
    listener: Option<tokio::net::TcpListener>,
    target: SocketAddr,
) -> anyhow::Result<()> {
    let Linked {
        link, out, peer, ..
    } = linked;
    let json_mode = out.is_json();
    let quic = link.quic();
    tokio::pin!(quic);
    let connection = loop {
        tokio::select! {
            c = &mut quic => break c?,
            event = link.next_event() => match event {
                Some(event) => show_link_event(&event, peer, out),
                None => bail!("the link ended before QUIC came up"),
            },
            _ = tokio::signal::ctrl_c() => {
                link.abort();
                return Ok(());
            }
        }
    };
    let mut on_event = move |event: TunnelEvent| show(&event, json_mode);
    let work = async {
        match listener {
            Some(listener) => {
                let addr = listener.local_addr()?;
                if json_mode {
                    println!(
                        "{}",
                        json!({"event": "listening", "addr": addr.to_string()})
                    );
                } else {
                    out.note(&format!("listening on {addr}; connections go to {peer}"));
                }
                let stats = tunnel::tunnel_listen(connection, listener, &mut on_event).await?;
                tracing::info!(?stats, "tunnel ended");
            }
            None => {
                if !json_mode {
                    out.note(&format!("connections from {peer} go to {target}"));
                }
                let stats = tunnel::tunnel_connect(connection, target, &mut on_event).await;
                tracing::info!(?stats, "tunnel ended");
            }
        }
        anyhow::Ok(())
    };
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return result,
            event = link.next_event() => match event {
                // The peer left: the tunnel is over (its QUIC connection closes with the link).
                Some(event) => show_link_event(&event, peer, out),
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => {
                link.abort();
                return Ok(());
            }
        }
    }
}
