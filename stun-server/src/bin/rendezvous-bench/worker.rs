//! A worker process of the cluster mode: holds the clients `i` with `i mod W == K` (user `i`
//! logs in at node `i mod N`), and talks with the coordinator in lines.
//!
//! stdout (to the coordinator): `HELLO` when ready to start, `LOGGED ok failed seconds
//! [first error]` when its clients are in (or its deadline passed), then `S who state ns` when
//! a client writes a change and `P who state ns receiver` when a client sees one.
//! stdin (from the coordinator): `GO` starts the logins, `CHG who state` makes client `who`
//! change its presence; end of input ends the worker.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shared::identity::Fingerprint;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use crate::client::{BenchClient, Report};
use crate::{Args, source_of};

pub fn run(args: &Args) -> anyhow::Result<()> {
    p2p_servers::raise_open_file_limit();
    let me = args.worker.context("not a worker")?;
    let workers = args.workers.context("--workers")?;
    let nodes: Vec<SocketAddr> = args
        .nodes
        .as_deref()
        .context("--nodes")?
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let fingerprint: Fingerprint = args
        .fingerprint
        .as_deref()
        .context("--fingerprint")?
        .parse()
        .map_err(|e| anyhow::anyhow!("--fingerprint: {e:?}"))?;
    if nodes.is_empty() || workers == 0 || me >= workers {
        bail!("bad worker arguments");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args, me, workers, &nodes, fingerprint))
}

async fn serve(
    args: &Args,
    me: usize,
    workers: usize,
    nodes: &[SocketAddr],
    fingerprint: Fingerprint,
) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout());
    // stdin is read on a thread of its own (blocking reads), its lines handed over here.
    let (line_tx, mut stdin) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                return;
            }
        }
    });
    writeln!(out, "HELLO")?;
    out.flush()?;
    match stdin.recv().await {
        Some(line) if line == "GO" => {}
        other => bail!("expected GO, got {other:?}"),
    }
    let tls = TlsConnector::from(p2p_servers::tls::pinned_client_config(fingerprint));
    let (report_tx, mut reports) = mpsc::unbounded_channel();
    let gate = Arc::new(tokio::sync::Semaphore::new(
        (args.login_window / workers).max(1),
    ));
    let mine: Vec<usize> = (me..args.clients).step_by(workers).collect();
    let mut commands = Vec::with_capacity(mine.len());
    let started = Instant::now();
    for &i in &mine {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        commands.push(cmd_tx);
        let client = BenchClient {
            index: i,
            server: nodes[i % nodes.len()],
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

    let deadline = started + Duration::from_secs(args.phase_timeout);
    let (mut ok, mut failed, mut first_error) = (0usize, 0usize, None);
    while ok + failed < mine.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reports.recv()).await {
            Ok(Some(Report::LoggedIn)) => ok += 1,
            Ok(Some(Report::Failed(e))) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    writeln!(
        out,
        "LOGGED {ok} {failed} {:.3} {}",
        started.elapsed().as_secs_f64(),
        first_error.unwrap_or_default().replace('\n', " ")
    )?;
    out.flush()?;

    loop {
        tokio::select! {
            line = stdin.recv() => {
                let Some(line) = line else { return Ok(()) };
                let mut words = line.split_whitespace();
                let (Some("CHG"), Some(who), Some(state)) = (words.next(), words.next(), words.next()) else {
                    continue;
                };
                let Ok(who) = who.parse::<usize>() else { continue };
                let Ok(code) = <[u8; 3]>::try_from(state.as_bytes()) else { continue };
                if who % workers == me {
                    if let Some(tx) = commands.get(who / workers) {
                        let _ = tx.send(code);
                    }
                }
            }
            report = reports.recv() => {
                let Some(report) = report else { return Ok(()) };
                print_report(&mut out, report)?;
                // Everything already queued goes out in the same write.
                for _ in 0..4096 {
                    let Ok(report) = reports.try_recv() else { break };
                    print_report(&mut out, report)?;
                }
                out.flush()?;
            }
        }
    }
}

fn print_report(out: &mut impl Write, report: Report) -> std::io::Result<()> {
    let text = |s: [u8; 3]| String::from_utf8_lossy(&s).into_owned();
    match report {
        Report::Sent { who, state, at } => writeln!(out, "S {who} {} {at}", text(state)),
        Report::Push {
            who,
            state,
            at,
            receiver,
        } => writeln!(out, "P {who} {} {at} {receiver}", text(state)),
        Report::LoggedIn | Report::Failed(_) => Ok(()),
    }
}
