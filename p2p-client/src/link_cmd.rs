//! `send`, `receive` and `tunnel`: programs on a [`Link`] with QUIC streams.
//!
//! All three make the link the way `chat` does (log in, invite the peer, who runs the
//! matching command, punch while the relay already carries the link), then use its QUIC
//! streams: [`p2p_client::transfer`] for files, [`p2p_client::tunnel`] for TCP forwarding.
//! The link's events (path changes, the peer leaving) are shown as they come: on a terminal
//! beside the progress bar, with `--json` as JSON lines on stdout.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use p2p_client::chat::output::{Output, Shown};
use p2p_client::chat::show_pinned;
use p2p_client::home::Home;
use p2p_client::link::{Account, Link, LinkConfig, LinkError, LinkEvent, LinkSession, PathKind};
use p2p_client::portmap::PortMapping;
use p2p_client::transfer::{self, TransferEvent};
use shared::identity::Fingerprint;
use shared::rendezvous::UserName;

use crate::account_cmd::AccountArgs;

/// How long QUIC may take to come up once the link is made.
const STREAMS_WAIT: Duration = Duration::from_secs(30);
/// How long the receiver waits for the sender's goodbye after the last file.
const GOODBYE_WAIT: Duration = Duration::from_secs(10);

/// The options every link command shares.
#[derive(clap::Args, Debug, Clone)]
pub struct LinkArgs {
    /// The contact at the other end (who runs the matching command with --peer YOU).
    #[arg(long, value_name = "NAME")]
    pub peer: String,
    /// How long to wait for the peer to come online and join, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub wait: u64,
    /// Local address of the UDP endpoint socket: IP or IP:PORT [default: every address of
    /// IPv4 and IPv6, any port; an IPv4 address keeps the link on IPv4].
    #[arg(long, value_name = "IP[:PORT]", value_parser = p2p_client::chat::parse_bind)]
    pub bind: Option<SocketAddr>,
    /// Do not classify the NAT before the offer (saves about 0.15 s; punching through
    /// symmetric NATs then fails).
    #[arg(long)]
    pub no_classify: bool,
    /// Link even though the peer's identity key differs from the pinned one, if the new key
    /// is the one with this fingerprint (compare safety numbers first).
    #[arg(long, value_name = "SHA256:...")]
    pub accept_new_key: Option<Fingerprint>,
    /// For testing: do not punch; use the switchboard relay only.
    #[arg(long, hide = true)]
    pub no_direct: bool,
    /// Do not report how the connection turned out to the rendezvous server (see `chat
    /// --help`). Also set by P2P_NO_TELEMETRY=1 (any value but 0, false, no, off or empty).
    #[arg(long, env = "P2P_NO_TELEMETRY", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_telemetry: bool,
    /// Ask the default gateway for a port mapping of the link's socket with these protocols
    /// (`auto`: PCP, then NAT-PMP, then UPnP-IGD), offered to the peer and deleted when the
    /// link ends (see `chat --help`).
    #[arg(long, value_enum, default_value_t = PortMapping::Auto)]
    pub port_mapping: PortMapping,
    /// Print one JSON object per line on stdout (the link's events, as `chat --json` prints
    /// them, and the command's own); logs go to stderr.
    #[arg(long)]
    pub json: bool,
}

impl LinkArgs {
    fn config(&self) -> LinkConfig {
        let mut config = LinkConfig::with_streams();
        config.wait = Duration::from_secs(self.wait);
        config.bind = self.bind;
        config.classify = !self.no_classify;
        config.accept_new_key = self.accept_new_key;
        config.direct = !self.no_direct;
        config.telemetry = !self.no_telemetry;
        config.port_mapping = self.port_mapping;
        config
    }
}

/// `p2p-client send`.
#[derive(clap::Args, Debug)]
pub struct SendArgs {
    #[command(flatten)]
    account: AccountArgs,
    #[command(flatten)]
    link: LinkArgs,
    /// The files to send (regular files; each arrives under its base name).
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

/// `p2p-client receive`.
#[derive(clap::Args, Debug)]
pub struct ReceiveArgs {
    #[command(flatten)]
    account: AccountArgs,
    #[command(flatten)]
    link: LinkArgs,
    /// The directory the files go to (it must exist). Nothing is written outside it, and an
    /// existing name is never replaced.
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
}

/// A made link and the login it came from.
pub struct Linked {
    pub session: LinkSession,
    pub link: Link,
    pub out: Output,
    pub peer: UserName,
}

/// Logs in and makes the link with streams.
pub async fn open_link(
    account_args: &AccountArgs,
    link_args: &LinkArgs,
    home: &Home,
) -> anyhow::Result<Linked> {
    let user = account_args.user()?;
    account_args.servers()?;
    let peer = UserName::parse(&link_args.peer).context("--peer")?;
    if peer == user {
        bail!("--peer: you cannot link to yourself");
    }
    let password = account_args.password(false)?;
    let trust = account_args.trust(home)?;
    let account = Account {
        server: &account_args.server,
        trust: &trust,
        home,
        user,
        config: account_args.client_config(),
    };
    let out = Output::new(link_args.json);
    let session = LinkSession::login(&account, password.as_bytes()).await?;
    show_pinned(&session, &out);
    if !session.is_contact(&peer).await? {
        session.logout().await;
        return Err(LinkError::NotAContact(peer).into());
    }
    if !out.is_json() {
        out.note(&format!(
            "waiting for {peer} (at most {} s)",
            link_args.wait
        ));
    }
    match Link::connect(&session, &peer, link_args.config()).await {
        Ok(link) => Ok(Linked {
            session,
            link,
            out,
            peer,
        }),
        Err(e) => {
            session.logout().await;
            Err(e.into())
        }
    }
}

/// Shows one link event the way `chat` does (JSON lines, or notes on stderr).
pub fn show_link_event(event: &LinkEvent, peer: &UserName, out: &Output) {
    match event {
        LinkEvent::Connected { peer, sid, role } => {
            if out.is_json() {
                out.show(&Shown::Connected {
                    peer: peer.as_str(),
                    sid: &sid.to_string(),
                    role: role.word(),
                });
            } else {
                out.note(&format!("connected to {peer}"));
            }
        }
        LinkEvent::Path { path, remote } => out.show(&Shown::Path {
            path: *path,
            remote: *remote,
        }),
        LinkEvent::PeerLeft => out.show(&Shown::PeerLeft {
            peer: peer.as_str(),
        }),
        LinkEvent::PeerKeyPinned { peer, fingerprint } => {
            out.note(&format!(
                "pinned {peer}'s identity key {fingerprint} (first contact)"
            ));
        }
        LinkEvent::Warning(text) => out.note(text),
        LinkEvent::PunchingAgain { attempt, .. } => {
            out.show(&Shown::PunchingAgain { attempt: *attempt });
        }
        other => tracing::debug!(event = ?other, "link event"),
    }
}

/// The progress display: a bar on a terminal, JSON lines with `--json`, nothing otherwise.
/// Clones share the bar, so the link's path changes show in it while a transfer runs.
#[derive(Clone)]
struct Progress {
    out: Output,
    bar: Option<ProgressBar>,
    state: Arc<Mutex<ProgressState>>,
}

#[derive(Default)]
struct ProgressState {
    path: Option<PathKind>,
    file: String,
}

impl Progress {
    fn new(out: &Output) -> Progress {
        let bar = (!out.is_json() && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        Progress {
            out: *out,
            bar,
            state: Arc::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn set_path(&self, path: PathKind) {
        self.state().path = Some(path);
        self.refresh_message();
    }

    fn refresh_message(&self) {
        if let Some(bar) = &self.bar {
            let state = self.state();
            let path = state.path.map(PathKind::word).unwrap_or("connecting");
            bar.set_message(format!("{} ({path})", state.file));
        }
    }

    fn event(&self, event: &TransferEvent) {
        if self.out.is_json() {
            println!("{}", event.to_json());
            return;
        }
        match event {
            TransferEvent::Progress { file, bytes, total } => {
                if let Some(bar) = &self.bar {
                    let new_file = {
                        let mut state = self.state();
                        let new_file = state.file != *file;
                        if new_file {
                            state.file.clone_from(file);
                        }
                        new_file
                    };
                    if new_file {
                        bar.reset();
                        self.refresh_message();
                    }
                    bar.set_length(*total);
                    bar.set_position(*bytes);
                }
            }
            TransferEvent::Resumed { file, from } => {
                self.note(&format!("{file}: resuming at byte {from}"));
            }
            TransferEvent::Done {
                file,
                bytes,
                sha256_hex,
            } => self.note(&format!("{file}: {bytes} bytes, sha256 {sha256_hex}")),
        }
    }

    fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("-- {text}")),
            None => eprintln!("-- {text}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Runs `work` on the link's QUIC connection while showing the link's events; aborts the
/// link on Ctrl-C.
async fn with_streams<T>(
    linked: &mut Linked,
    progress: &Progress,
    work: impl AsyncFnOnce(quinn::Connection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let Linked {
        link, out, peer, ..
    } = linked;
    let connection = {
        let quic = link.quic();
        tokio::pin!(quic);
        let deadline = tokio::time::Instant::now() + STREAMS_WAIT;
        loop {
            tokio::select! {
                c = &mut quic => break c?,
                event = link.next_event() => match event {
                    Some(event) => show(&event, peer, out, progress),
                    None => bail!("the link ended before QUIC came up"),
                },
                () = tokio::time::sleep_until(deadline) => {
                    bail!("QUIC did not come up over the link within {STREAMS_WAIT:?}")
                }
            }
        }
    };
    let work = work(connection);
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return result,
            event = link.next_event() => match event {
                Some(event) => show(&event, peer, out, progress),
                None => bail!("the link ended"),
            },
            _ = tokio::signal::ctrl_c() => {
                link.abort();
                bail!("interrupted")
            }
        }
    }
}

fn show(event: &LinkEvent, peer: &UserName, out: &Output, progress: &Progress) {
    if let LinkEvent::Path { path, .. } = event {
        progress.set_path(*path);
    }
    show_link_event(event, peer, out);
}

/// Ends the link (gracefully) and logs out; the link's own failure is reported only when
/// `result` is fine.
async fn close(mut linked: Linked, result: anyhow::Result<()>) -> anyhow::Result<ExitCode> {
    let closed = linked.link.close().await;
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(10), linked.link.next_event()).await
    {
        show_link_event(&event, &linked.peer, &linked.out);
    }
    linked.session.logout().await;
    result?;
    match closed {
        Ok(()) | Err(LinkError::Closed) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
    }
}

/// `send`.
pub async fn send(args: SendArgs, home: &Home) -> anyhow::Result<ExitCode> {
    for file in &args.files {
        let meta = std::fs::metadata(file).with_context(|| format!("{}", file.display()))?;
        if !meta.is_file() {
            bail!("{}: not a regular file", file.display());
        }
    }
    let mut linked = open_link(&args.account, &args.link, home).await?;
    let progress = Progress::new(&linked.out);
    let shown = progress.clone();
    let files = args.files.clone();
    let result = with_streams(&mut linked, &progress, async move |connection| {
        let done = transfer::send_files(&connection, &files, &mut |e| shown.event(&e)).await?;
        Ok(done)
    })
    .await;
    progress.finish();
    let result = result.map(|done| {
        if !linked.out.is_json() {
            let bytes: u64 = done.iter().map(|f| f.bytes).sum();
            linked
                .out
                .note(&format!("sent {} file(s), {bytes} bytes", done.len()));
        }
    });
    close(linked, result).await
}

/// `receive`.
pub async fn receive(args: ReceiveArgs, home: &Home) -> anyhow::Result<ExitCode> {
    let meta =
        std::fs::metadata(&args.out).with_context(|| format!("--out {}", args.out.display()))?;
    if !meta.is_dir() {
        bail!("--out {}: not a directory", args.out.display());
    }
    let mut linked = open_link(&args.account, &args.link, home).await?;
    let progress = Progress::new(&linked.out);
    let shown = progress.clone();
    let out_dir = args.out.clone();
    let result = with_streams(&mut linked, &progress, async move |connection| {
        let done = transfer::receive_files(&connection, &out_dir, &mut |e| shown.event(&e)).await?;
        Ok(done)
    })
    .await;
    progress.finish();
    let result = match result {
        Ok(done) => {
            if !linked.out.is_json() {
                let bytes: u64 = done.iter().map(|f| f.bytes).sum();
                linked
                    .out
                    .note(&format!("received {} file(s), {bytes} bytes", done.len()));
            }
            // The sender ends the link once it has our last acknowledgement; closing first
            // could cut that acknowledgement off.
            let _ = tokio::time::timeout(GOODBYE_WAIT, async {
                while let Some(event) = linked.link.next_event().await {
                    show_link_event(&event, &linked.peer, &linked.out);
                    if event == LinkEvent::PeerLeft {
                        break;
                    }
                }
            })
            .await;
            Ok(())
        }
        Err(e) => Err(e),
    };
    close(linked, result).await
}
