//! The cluster mode's coordinator: PostgreSQL, NATS, `N` nodes and `W` worker processes, all
//! started here and stopped by their pids; the timed presence changes are made from here.

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use postgres::NoTls;
use shared::identity::Fingerprint;
use shared::rendezvous::scram::derive_credentials;

use crate::Args;
use crate::client::{BENCH_KDF, PASSWORD};
use crate::procs::{self, Managed, Postgres, TempDir};
use crate::tally::{Tally, print_percentiles};

/// Open files a node or a worker may use on top of its client connections (listener, NATS,
/// PostgreSQL, epoll, pipes, the binary and its libraries), well above what they use.
const SPARE_FILES: usize = 500;
/// The per-process open-file limit this bench must stay under (the hard limit where it was
/// written; raised to the real hard limit if that is larger).
const FILE_LIMIT: usize = 20_000;

pub fn run(args: &Args) -> anyhow::Result<()> {
    let n = args.cluster_nodes;
    let per_node = args.clients.div_ceil(n);
    let workers = args
        .workers
        .unwrap_or_else(|| args.clients.div_ceil(15_000).max(2));
    let per_worker = args.clients.div_ceil(workers.max(1));
    if workers == 0 || per_node + SPARE_FILES > FILE_LIMIT || per_worker + SPARE_FILES > FILE_LIMIT
    {
        bail!(
            "{} clients over {n} nodes and {workers} workers is {per_node} per node and \
             {per_worker} per worker: more than {} open files in one process",
            args.clients,
            FILE_LIMIT - SPARE_FILES
        );
    }
    let half = args.contacts / 2;
    let same = (1..=half).filter(|d| d % n == 0).count() * 2;
    println!(
        "cluster: {n} nodes, {workers} worker processes, {} users x {} contacts; user i on \
         node i mod {n}: {} of each user's {} contacts on other nodes",
        args.clients,
        args.contacts,
        args.contacts - same,
        args.contacts
    );
    let cpu = args.server_cpu.map(|c| c.to_string());
    let other_cpus = args.server_cpu.map(|c| {
        let cpus = std::thread::available_parallelism().map_or(2, |p| p.get());
        (0..cpus)
            .filter(|&i| i != c)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    });
    let dir = TempDir::new("cluster")?;

    let pg_dir = dir.0.join("pg");
    std::fs::create_dir_all(&pg_dir)?;
    let started = Instant::now();
    let pg = Postgres::start(&pg_dir, cpu.as_deref())?;
    let url = pg.url("bench");
    postgres::Client::connect(&pg.url("postgres"), NoTls)?
        .batch_execute("CREATE DATABASE bench")?;
    populate(&url, args.clients, args.contacts)?;
    println!(
        "database: PostgreSQL started and filled with {} users x {} contacts in {:.1} s",
        args.clients,
        args.contacts,
        started.elapsed().as_secs_f64()
    );
    let (nats, nats_port) = procs::start_nats(cpu.as_deref(), &[])?;

    let bin = procs::server_bin(args.server_bin.as_deref())?;
    let fingerprint = make_key(&bin, &dir)?;
    let started = Instant::now();
    let nodes = start_nodes(
        args,
        &bin,
        &dir,
        &url,
        nats_port,
        cpu.as_deref(),
        fingerprint,
    )?;
    let addrs: Vec<String> = nodes.iter().map(|(_, a)| a.clone()).collect();
    println!(
        "nodes: {n} started (each read the directory from PostgreSQL) in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        addrs.join(" ")
    );
    // Every node hears every other's heartbeat (each second) before the clients come.
    std::thread::sleep(Duration::from_secs(3));
    let pids: Vec<u32> = nodes.iter().map(|(m, _)| m.pid()).collect();
    report_memory("nodes before any login", &pids)?;

    let mut workers = start_workers(
        args,
        workers,
        &addrs.join(","),
        fingerprint,
        other_cpus.as_deref(),
    )?;
    let result = measure(args, &mut workers, &pids, &nats, &pg);
    for w in &mut workers.procs {
        w.stdin.take();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for w in &mut workers.procs {
        while Instant::now() < deadline && matches!(w.proc.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        w.proc.stop();
    }
    // All at once: one after the other, the later ones would see the earlier ones go silent.
    for (node, _) in &nodes {
        node.signal();
    }
    drop(nodes);
    drop(nats);
    drop(pg);
    drop(dir);
    result
}

/// Creates the tables (the server's own migrations, through its store) and fills them in a
/// few statements that PostgreSQL runs by itself: one `INSERT ... SELECT` from
/// `generate_series` per table instead of millions of round trips.
fn populate(url: &str, clients: usize, contacts: usize) -> anyhow::Result<()> {
    drop(p2p_servers::rendezvous::PostgresStore::connect(
        &url.parse()?,
    )?);
    let credentials = derive_credentials(PASSWORD, b"bench-salt-16byt", BENCH_KDF)?;
    let mut db = postgres::Client::connect(url, NoTls)?;
    let n = i64::try_from(clients)?;
    let half = i64::try_from(contacts / 2)?;
    let mut tx = db.transaction()?;
    tx.execute(
        "INSERT INTO users (name, kdf, salt, stored_key, server_key, created) \
         SELECT 'u' || lpad(i::text, 6, '0'), $1, $2, $3, $4, 0 \
         FROM generate_series(0, $5::bigint - 1) AS i ORDER BY i",
        &[
            &credentials.kdf.to_string(),
            &credentials.salt,
            &&credentials.stored_key[..],
            &&credentials.server_key[..],
            &n,
        ],
    )?;
    tx.execute(
        "INSERT INTO contacts (owner, contact) \
         SELECT 'u' || lpad(i::text, 6, '0'), 'u' || lpad(((i + d) % $1::bigint)::text, 6, '0') \
         FROM generate_series(0, $1::bigint - 1) AS i, generate_series(1, $2::bigint) AS d \
         UNION ALL \
         SELECT 'u' || lpad(i::text, 6, '0'), 'u' || lpad(((i - d + $1::bigint) % $1::bigint)::text, 6, '0') \
         FROM generate_series(0, $1::bigint - 1) AS i, generate_series(1, $2::bigint) AS d",
        &[&n, &half],
    )?;
    tx.commit()?;
    db.batch_execute("ANALYZE")?;
    Ok(())
}

/// The cluster's one TLS key: `stun-server --print-fingerprint` makes a self-signed pair next
/// to the database it is given (`tls-cert.pem`, `tls-key.pem`) and prints its fingerprint.
fn make_key(bin: &std::path::Path, dir: &TempDir) -> anyhow::Result<Fingerprint> {
    let out = Command::new(bin)
        .args(["--print-fingerprint", "--no-stun", "--db"])
        .arg(dir.0.join("key.db"))
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "--print-fingerprint failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("--print-fingerprint printed no fingerprint: {e:?}"))
}

/// Starts the nodes at once (each reads the whole directory at start) and waits until each is
/// ready; every one must present the cluster's key.
fn start_nodes(
    args: &Args,
    bin: &std::path::Path,
    dir: &TempDir,
    url: &str,
    nats_port: u16,
    cpu: Option<&str>,
    fingerprint: Fingerprint,
) -> anyhow::Result<Vec<(Managed, String)>> {
    let mut specs = Vec::new();
    for k in 0..args.cluster_nodes {
        let addr = format!("127.0.0.1:{}", procs::free_port()?);
        let own = dir.0.join(format!("node{k}"));
        std::fs::create_dir_all(&own)?;
        let mut cmd = procs::pinned(bin, cpu);
        cmd.args(["--no-stun", "--no-switchboard", "--rendezvous", &addr])
            .args(["--store", url])
            .arg("--cluster")
            .arg(format!("nats://127.0.0.1:{nats_port}"))
            .arg("--tls-cert")
            .arg(dir.0.join("tls-cert.pem"))
            .arg("--tls-key")
            .arg(dir.0.join("tls-key.pem"))
            .args(["--min-kdf", "argon2id:m=8:t=1:p=1", "--db"])
            .arg(own.join("rendezvous.db"))
            .env("RUST_LOG", "warn,p2p_servers=info,stun_server=info");
        specs.push((k, addr, cmd));
    }
    let timeout = Duration::from_secs(args.phase_timeout);
    let started: Vec<anyhow::Result<(Managed, String)>> = std::thread::scope(|s| {
        let handles: Vec<_> = specs
            .into_iter()
            .map(|(k, addr, cmd)| {
                s.spawn(move || {
                    let (node, fp) = procs::start_server(
                        &format!("node{k}"),
                        cmd,
                        "rendezvous node ready",
                        timeout,
                    )?;
                    if fp != fingerprint {
                        bail!("node{k} presents another key than the cluster's");
                    }
                    Ok((node, addr))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a start thread panicked")))
            })
            .collect()
    });
    started.into_iter().collect()
}

/// A worker process with the pipe it takes commands on.
struct Worker {
    proc: Managed,
    stdin: Option<ChildStdin>,
}

struct Workers {
    procs: Vec<Worker>,
    /// `(worker, line)` from every worker's stdout; `None` when one closed it.
    lines: mpsc::Receiver<(usize, Option<String>)>,
}

fn start_workers(
    args: &Args,
    count: usize,
    nodes: &str,
    fingerprint: Fingerprint,
    cpus: Option<&str>,
) -> anyhow::Result<Workers> {
    let exe = std::env::current_exe()?;
    let (tx, lines) = mpsc::channel();
    let mut procs = Vec::with_capacity(count);
    for k in 0..count {
        let mut child = procs::pinned(&exe, cpus)
            .args(["--worker", &k.to_string(), "--workers", &count.to_string()])
            .args(["--clients", &args.clients.to_string()])
            .args(["--contacts", &args.contacts.to_string()])
            .args(["--login-window", &args.login_window.to_string()])
            .args(["--source-ips", &args.source_ips.to_string()])
            .args(["--phase-timeout", &args.phase_timeout.to_string()])
            .args(["--nodes", nodes, "--fingerprint", &fingerprint.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start a worker")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let stdin = child.stdin.take();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((k, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((k, None));
        });
        procs.push(Worker {
            proc: Managed::new(child, libc::SIGTERM),
            stdin,
        });
    }
    Ok(Workers { procs, lines })
}

impl Workers {
    fn send(&mut self, k: usize, line: &str) -> anyhow::Result<()> {
        let stdin = self.procs[k]
            .stdin
            .as_mut()
            .context("worker stdin closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits until every worker has sent a line starting with `word`; returns those lines.
    fn gather(&self, word: &str, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut got: Vec<Option<String>> = vec![None; self.procs.len()];
        while got.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((k, Some(line))) if line.starts_with(word) => got[k] = Some(line),
                Ok((_, Some(_))) => {}
                Ok((k, None)) => bail!("worker {k} ended before {word}"),
                Err(_) => bail!("not every worker said {word} within {timeout:?}"),
            }
        }
        Ok(got.into_iter().flatten().collect())
    }
}

fn measure(
    args: &Args,
    workers: &mut Workers,
    nodes: &[u32],
    nats: &Managed,
    pg: &Postgres,
) -> anyhow::Result<()> {
    let count = workers.procs.len();
    workers.gather("HELLO", Duration::from_secs(30))?;
    let login_started = Instant::now();
    for k in 0..count {
        workers.send(k, "GO")?;
    }
    let logged = workers.gather("LOGGED", Duration::from_secs(args.phase_timeout + 30))?;
    let login_secs = login_started.elapsed().as_secs_f64();
    let (mut ok, mut failed) = (0usize, 0usize);
    for line in &logged {
        let mut words = line.split_whitespace().skip(1);
        ok += words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        failed += words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        if line.split_whitespace().count() > 4 {
            eprintln!("worker: {line}");
        }
    }
    if ok < args.clients {
        bail!(
            "{ok} of {} clients logged in within {} s ({failed} failed)",
            args.clients,
            args.phase_timeout
        );
    }
    println!(
        "logged in: {ok} clients in {login_secs:.1} s ({:.0} TLS handshakes + logins/s over \
         {} nodes)",
        ok as f64 / login_secs,
        nodes.len()
    );
    // The log-in presence storm and a few heartbeats (each carries a node's online users)
    // settle before memory is read.
    std::thread::sleep(Duration::from_secs(5));
    report_memory("nodes with every client online", nodes)?;
    let worker_pids: Vec<u32> = workers.procs.iter().map(|w| w.proc.pid()).collect();
    report_others(nats, pg, &worker_pids)?;
    let cpu_before: f64 = nodes
        .iter()
        .map(|&p| procs::cpu_secs(p).unwrap_or(0.0))
        .sum();

    let n = args.cluster_nodes;
    let changes = args.changes.min(args.clients);
    let stride = (args.clients / changes).max(1);
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let mut tally = Tally::new(args.contacts);
    let mut next_send = Instant::now();
    let mut sent = 0usize;
    let phase_deadline = Instant::now() + Duration::from_secs(args.phase_timeout);
    while (sent < changes || tally.in_flight() > 0) && Instant::now() < phase_deadline {
        if sent < changes && Instant::now() >= next_send {
            // One client in each block of `stride`, at a varying offset so that the changers
            // spread over every node and worker whatever the stride.
            let who = (sent * stride + sent % stride) % args.clients;
            let state = if sent % 2 == 0 { "BSY" } else { "AWY" };
            tally.expect(u32::try_from(who)?, code(state).context("state")?);
            workers.send(who % count, &format!("CHG {who} {state}"))?;
            sent += 1;
            next_send += interval;
            continue;
        }
        let wait = if sent < changes {
            next_send.saturating_duration_since(Instant::now())
        } else {
            Duration::from_millis(100)
        };
        let Ok((_, Some(line))) = workers.lines.recv_timeout(wait) else {
            continue;
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["S", who, state, at] => {
                if let (Ok(who), Some(state), Ok(at)) = (who.parse(), code(state), at.parse()) {
                    tally.sent(who, state, at);
                }
            }
            ["P", who, state, at, receiver] => {
                if let (Ok(who), Some(state), Ok(at), Ok(receiver)) = (
                    who.parse::<u32>(),
                    code(state),
                    at.parse(),
                    receiver.parse::<u32>(),
                ) {
                    let other = who as usize % n != receiver as usize % n;
                    tally.push(who, state, at, other);
                }
            }
            _ => {}
        }
    }
    let cpu_after: f64 = nodes
        .iter()
        .map(|&p| procs::cpu_secs(p).unwrap_or(0.0))
        .sum();
    if tally.in_flight() > 0 {
        bail!(
            "{} of {changes} presence changes did not reach all {} contacts within {} s",
            tally.in_flight(),
            args.contacts,
            args.phase_timeout
        );
    }
    println!(
        "presence changes: {changes} at {}/s, each to {} online contacts; nodes' CPU {:.2} s",
        args.rate,
        args.contacts,
        cpu_after - cpu_before
    );
    print_percentiles("  time until ALL contacts had it   ", &mut tally.to_all);
    print_percentiles(
        "  per delivery, contact on another node",
        &mut tally.other_node,
    );
    print_percentiles(
        "  per delivery, contact on the same node",
        &mut tally.same_node,
    );
    report_memory("nodes at the end", nodes)?;
    Ok(())
}

fn code(state: &str) -> Option<[u8; 3]> {
    state.as_bytes().try_into().ok()
}

/// Prints each node's RSS, open files, and the total.
fn report_memory(label: &str, pids: &[u32]) -> anyhow::Result<()> {
    let mut total = 0u64;
    let mut peak = 0u64;
    let mut per = Vec::new();
    let mut most_files = 0;
    for &pid in pids {
        let (rss, hwm) = procs::memory_kib(pid)?;
        total += rss;
        peak += hwm;
        most_files = most_files.max(procs::open_files(pid));
        per.push(format!("{:.0}", rss as f64 / 1024.0));
    }
    println!(
        "{label}: total RSS {:.0} MiB (sum of peaks {:.0} MiB); per node {} MiB; at most {} \
         open files in one node",
        total as f64 / 1024.0,
        peak as f64 / 1024.0,
        per.join(" / "),
        most_files
    );
    Ok(())
}

/// The RSS of NATS, of PostgreSQL (all its processes) and of the workers, for the record.
fn report_others(nats: &Managed, pg: &Postgres, workers: &[u32]) -> anyhow::Result<()> {
    let (nats_rss, _) = procs::memory_kib(nats.pid())?;
    let pg_pss: u64 = procs::with_children(pg.server.pid())
        .into_iter()
        .map(procs::pss_kib)
        .sum();
    let worker_rss: u64 = workers
        .iter()
        .map(|&p| procs::memory_kib(p).map_or(0, |m| m.0))
        .sum();
    let most_files = workers
        .iter()
        .map(|&p| procs::open_files(p))
        .max()
        .unwrap_or(0);
    println!(
        "others: nats-server RSS {:.0} MiB, PostgreSQL {:.0} MiB (PSS of all its processes), \
         bench workers {:.0} MiB (at most {most_files} open files in one)",
        nats_rss as f64 / 1024.0,
        pg_pss as f64 / 1024.0,
        worker_rss as f64 / 1024.0
    );
    Ok(())
}
