//! `p2p-client`: the toolkit's client CLI.
//!
//! - `nat-type`: classify the NAT (RFC 3489 type and RFC 4787/5780 behaviours).
//! - `binding`: one STUN Binding transaction that reports the address a server sees (like
//!   `stun` or `turnutils_stunclient`, with RFC 8489 retransmission).
//! - `register`, `contacts`, `status`, `passwd`: accounts, contact lists and presence on a
//!   rendezvous server (docs/PROTOCOL.md).
//! - `chat`: an end-to-end encrypted chat with a contact, direct when a hole can be punched
//!   and through the switchboard relay otherwise.
//!
//! Every connection to the rendezvous server and the switchboard is TLS 1.3; the client's home
//! (`--home`, `P2P_HOME`, ...) keeps the servers' pinned keys, each user's device identity key
//! and the contacts' pinned keys.

mod account_cmd;
mod identity_cmd;
mod link_cmd;
mod nat_type_cmd;
mod nat_type_v6;
mod prompt;
mod status_cmd;
mod tunnel_cmd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use p2p_client::binding::StunBinding;
use p2p_client::chat::{Account, ChatRunError};
use p2p_client::classify::STUN_PORT;
use p2p_client::home::Home;
use p2p_client::stdout;
use p2p_client::tls::resolve_server;
use shared::stun::{ChangeRequest, TransactionId};
use shared::stun_client::{BindingError, BindingRequest, BindingTransaction, RetransmitConfig};
use tokio::net::UdpSocket;

/// Client for the p2p toolkit: find out what the network does to your traffic.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// The client's home directory: device identity keys, contacts' pinned keys, servers'
    /// pinned keys [default: $P2P_HOME, else $XDG_DATA_HOME/p2p-toolkit, else
    /// ~/.local/share/p2p-toolkit].
    #[arg(long, value_name = "DIR", global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Classify the NAT between this host and a STUN server with two addresses.
    ///
    /// Reports the RFC 3489 type (open-internet, full-cone, restricted-cone,
    /// port-restricted-cone, symmetric, symmetric-udp-firewall, udp-blocked, or
    /// unsupported-server when the server cannot really change its source address) with the
    /// mapping, filtering, hairpinning and port allocation behind it, and what it means for
    /// hole punching. Every test uses its own socket and every reply must come from the
    /// address its test requires. With no answer at all it gives up after about 1.3 s and
    /// says so: the server is down or UDP is blocked, and the client cannot tell which. Exit
    /// status: 0 on a classification, 2 when nothing came back, 1 on bad arguments or a name
    /// that does not resolve.
    NatType(nat_type_cmd::NatTypeArgs),
    /// Send one STUN Binding request and print the address the server saw.
    ///
    /// The request is retransmitted as RFC 8489 section 6.2.1 says (RTO doubling from
    /// --rto-ms, --attempts requests in all, then --last-wait RTOs), with defaults that give
    /// up after 4.5 s of silence: requests at 0, 0.5, 1.5 and 3.5 s, then a 1 s wait. No
    /// answer means the server is down or UDP is blocked on the path; the client cannot tell
    /// which, and says so. Exit status: 0 on a success response, 1 on no answer, an error
    /// response or bad input.
    Binding(BindingArgs),
    /// Create an account on a rendezvous server.
    ///
    /// The password is stretched here (Argon2id, see --kdf) and only the resulting verifier is
    /// sent; register over a network you trust. Prints `registered NAME`. Exit status: 0 on
    /// success, 1 on any error (for example a taken name).
    Register(account_cmd::RegisterArgs),
    /// Show or change your contact and block lists; compare and verify identity keys.
    ///
    /// You see a contact's presence once each of you has the other as a contact and that
    /// contact has not blocked you (blocking is one-way: whom you block sees you offline, you
    /// still see them). `contacts fingerprint NAME` shows the safety number to compare with
    /// NAME, `contacts verify NAME` records that it matched. Exit status: 0 on success, 1 on
    /// any error.
    Contacts(account_cmd::ContactsArgs),
    /// Go online in STATE and print your contacts' presence as it changes.
    ///
    /// Logs in, sets STATE, prints each contact's presence, then every change as it arrives,
    /// and stays connected: presence lasts as long as the command runs. When standard input
    /// reaches end of file (Ctrl-D, or the end of a pipe) or on Ctrl-C it logs out and exits
    /// 0; contacts then see you offline. Run it with stdin open (`p2p-client status busy <
    /// /dev/null` would log out at once). Exit status: 1 if the login fails or the server
    /// ends the session (for example a login elsewhere).
    Status(status_cmd::StatusArgs),
    /// Change your password.
    ///
    /// Logs in with the current password (--password-file, P2P_PASSWORD or a prompt) and sets
    /// the new one (--new-password-file, P2P_NEW_PASSWORD or a prompt, asked twice). Exit
    /// status: 0 on success, 1 on any error.
    Passwd(account_cmd::PasswdArgs),
    /// Chat with a contact, end-to-end encrypted, direct when possible, else relayed.
    ///
    /// Logs in, invites --peer (who runs `chat --peer YOU` too; the server pairs you), then
    /// punches a direct UDP path while the chat already runs through the switchboard relay.
    /// Each line on stdin is a message; received messages are printed, and every change of
    /// the path (direct or relayed) is announced. At the end of stdin it waits up to 10 s
    /// until the peer has acknowledged every message, says goodbye to the peer, logs out and
    /// exits; Ctrl-C says goodbye and exits at once. It ends when the peer says goodbye, or
    /// stops answering for 14 s. Without --peer, on a terminal, it shows your contacts and
    /// you type a name; a --peer that is not a contact is an error at once.
    ///
    /// A lost connection to the server (a restart, a network change) is made again with
    /// back-off; the chat goes on meanwhile over a direct path, and rejoins the relay once
    /// the server is back.
    ///
    /// Every message is either acknowledged by the peer or reported as not delivered, with
    /// its number and text (a line over 60 KiB is refused as "too long", not split).
    ///
    /// The chat's keys are this device's identity key (made on first use in the home) and the
    /// peer's, pinned the first time it is seen. If the server introduces a peer whose key is
    /// not the pinned one, the chat does not start: it says so, sends nothing and exits 3;
    /// it also shows the safety number with the new key: if the peer sees the same number
    /// (`contacts fingerprint YOU` on their side), run again with --accept-new-key
    /// SHA256:... naming that new key. Exit status: 0 when every message typed was delivered
    /// (acknowledged by the peer; also on Ctrl-C or when the peer leaves with nothing of ours
    /// pending), 3 when the peer's key changed, 1 when any message was not delivered (too
    /// long, not acknowledged in time, the peer left, Ctrl-C with messages pending) and on
    /// any other error (the peer never came or is not a contact, a server key that is not
    /// the pinned one).
    Chat(ChatCmdArgs),
    /// Send files to a contact over a direct link (or the relay), end-to-end encrypted.
    ///
    /// The contact runs `receive --peer YOU`. The link is made as for `chat`, then the files
    /// go over QUIC streams inside it (congestion controlled; a change of path mid-transfer
    /// neither restarts nor corrupts anything). Each file arrives complete or not at all:
    /// the receiver writes it under a temporary name, checks its SHA-256 and only then gives
    /// it its name. Run the same command again after an interruption and an unfinished file
    /// resumes where it stopped. Shows a progress bar on a terminal (bytes, rate, ETA, path);
    /// --json prints {"event":"progress","file","bytes","total"} and
    /// {"event":"done","file","bytes","sha256"} lines. Exit status: 0 when every file was
    /// received and checked, 3 when the peer's key changed, 1 on any other failure.
    Send(link_cmd::SendArgs),
    /// Receive files a contact sends with `send --peer YOU`, into --out.
    ///
    /// Names are checked: absolute paths, `..`, separators and other tricks are refused, a
    /// link at the name is not followed, an existing file is never replaced, and a file that
    /// cannot fit in the free space is refused before anything is written. Exit status:
    /// 0 when every file announced arrived and was checked, 3 when the peer's key changed, 1
    /// on any other failure (an unfinished file is kept for the next run to resume).
    Receive(link_cmd::ReceiveArgs),
    /// Forward TCP connections over a direct link (or the relay), like `ssh -L`.
    ///
    /// One side runs `tunnel --peer B --listen 127.0.0.1:8080`, the other `tunnel --peer A
    /// --connect 127.0.0.1:80`: every connection made to the listening address is carried,
    /// end-to-end encrypted in a QUIC stream of its own, to the other side, which connects to
    /// its address. Many connections at once; each direction ends on its own (half-close), and
    /// a target that cannot be reached resets the client's connection. Runs until Ctrl-C or
    /// until the peer leaves. --json prints {"event":"listening","addr"},
    /// {"event":"tunnel_opened","id","peer"} and {"event":"tunnel_closed","id","error"} lines.
    /// Exit status: 0 when the tunnel ended by Ctrl-C or the peer leaving, 3 when the peer's key
    /// changed, 1 on any other failure.
    Tunnel(tunnel_cmd::TunnelArgs),
}

/// Arguments of `chat`: the account, then the chat's own options.
#[derive(clap::Args, Debug)]
struct ChatCmdArgs {
    #[command(flatten)]
    account: account_cmd::AccountArgs,
    #[command(flatten)]
    chat: p2p_client::chat::ChatArgs,
}

#[derive(clap::Args, Debug)]
struct BindingArgs {
    /// STUN server as HOST, HOST:PORT, IPv6 or [IPv6]:PORT (a name is resolved; the first
    /// address is used; the port defaults to 3478).
    #[arg(long, value_name = "HOST[:PORT]")]
    server: String,
    /// Local address to send from [default: any address, any port].
    #[arg(long, value_name = "IP:PORT")]
    bind: Option<SocketAddr>,
    /// Send a classic RFC 3489 request (no magic cookie) instead of an RFC 8489 one.
    #[arg(long)]
    classic: bool,
    /// Ask the server to reply from its other IP address (CHANGE-REQUEST).
    #[arg(long)]
    change_ip: bool,
    /// Ask the server to reply from its other port (CHANGE-REQUEST).
    #[arg(long)]
    change_port: bool,
    /// First retransmission timeout in milliseconds (doubles on every retry; RFC 8489 asks
    /// for at least 500).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    rto_ms: u64,
    /// Requests to send before giving up (RFC 8489's Rc; the RFC's 7 with the other defaults
    /// waits 39.5 s).
    #[arg(long, value_name = "N", default_value_t = 4)]
    attempts: u32,
    /// After the last request, wait this many first RTOs for an answer (RFC 8489's Rm; the
    /// RFC's default is 16).
    #[arg(long, value_name = "N", default_value_t = 2)]
    last_wait: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only the commands that talk to the rendezvous server need the home.
    let home = || Home::resolve(cli.home.as_deref()).map_err(anyhow::Error::from);
    let result = match cli.command {
        Command::Binding(args) => binding(args).map(|()| ExitCode::SUCCESS),
        Command::NatType(args) => {
            resolve(&args.server, STUN_PORT).and_then(|server| nat_type_cmd::run(args, server))
        }
        Command::Register(args) => {
            home().and_then(|home| account_cmd::block_on(account_cmd::register(args, &home)))
        }
        Command::Contacts(args) => {
            home().and_then(|home| account_cmd::block_on(account_cmd::contacts(args, &home)))
        }
        Command::Status(args) => {
            home().and_then(|home| account_cmd::block_on(status_cmd::run(args, &home)))
        }
        Command::Passwd(args) => {
            home().and_then(|home| account_cmd::block_on(account_cmd::passwd(args, &home)))
        }
        Command::Chat(args) => home().and_then(|home| account_cmd::block_on(chat(args, &home))),
        Command::Send(args) => home().and_then(|home| {
            account_cmd::block_on_parallel(key_checked(link_cmd::send(args, &home)))
        }),
        Command::Receive(args) => home().and_then(|home| {
            account_cmd::block_on_parallel(key_checked(link_cmd::receive(args, &home)))
        }),
        Command::Tunnel(args) => home().and_then(|home| {
            account_cmd::block_on_parallel(key_checked(tunnel_cmd::run(args, &home)))
        }),
    };
    match result {
        Ok(code) => code,
        // The reader closed standard output: it had all it wanted.
        Err(e) if stdout::is_closed(e.as_ref()) => ExitCode::SUCCESS,
        Err(e) => {
            stdout::note(format_args!("p2p-client: error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Exit status of `chat` when the peer's identity key is not the pinned one.
const EXIT_KEY_CHANGED: u8 = 3;

/// `chat`: reads the password and runs the chat.
async fn chat(args: ChatCmdArgs, home: &Home) -> anyhow::Result<ExitCode> {
    let user = args.account.user()?;
    // The same `--server` parser and message as every other command, before any prompt.
    args.account.servers()?;
    let password = args.account.password(false)?;
    let trust = args.account.trust(home)?;
    let account = Account {
        server: &args.account.server,
        trust: &trust,
        home,
        user,
        config: args.account.client_config(),
    };
    match p2p_client::chat::run(account, password.as_bytes(), args.chat).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ ChatRunError::KeyChanged { .. }) => {
            stdout::note(format_args!("p2p-client: {e}"));
            Ok(ExitCode::from(EXIT_KEY_CHANGED))
        }
        Err(e) => Err(e.into()),
    }
}

/// Exit status 3 for a changed peer key, as `chat` has it.
async fn key_checked(
    run: impl Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    match run.await {
        Err(e) if matches!(e.downcast_ref(), Some(ChatRunError::KeyChanged { .. })) => {
            stdout::note(format_args!("p2p-client: {e}"));
            Ok(ExitCode::from(EXIT_KEY_CHANGED))
        }
        other => other,
    }
}

/// Random bytes for transaction ids, from the operating system.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut out);
    out
}

/// `--server` of the UDP commands, parsed like every other `--server` (see
/// [`p2p_client::tls::ServerLabel::parse`]) and resolved.
fn resolve(server: &str, default_port: u16) -> anyhow::Result<SocketAddr> {
    Ok(resolve_server(server, default_port)?)
}

fn binding(args: BindingArgs) -> anyhow::Result<()> {
    let server = resolve(&args.server, STUN_PORT)?;
    if args.attempts == 0 || args.rto_ms == 0 || args.last_wait == 0 {
        bail!("--attempts, --rto-ms and --last-wait must be at least 1");
    }
    let bind = args.bind.unwrap_or_else(|| match server {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
    });
    let change = (args.change_ip || args.change_port).then_some(ChangeRequest {
        change_ip: args.change_ip,
        change_port: args.change_port,
    });
    let transaction_id = if args.classic {
        TransactionId::Classic(random_bytes())
    } else {
        TransactionId::Modern(random_bytes())
    };
    let request = BindingRequest {
        server,
        transaction_id,
        change,
        expect_from: None,
        fingerprint: true,
    };
    let config = RetransmitConfig {
        rto: Duration::from_millis(args.rto_ms),
        max_sends: args.attempts,
        last_wait_factor: args.last_wait,
        ..RetransmitConfig::default()
    };
    // Without the log set-up of `account_cmd::block_on`: stdout and stderr carry the report
    // and its errors alone.
    let (local, started, outcome) = account_cmd::runtime()?.block_on(async {
        let mut socket = UdpSocket::bind(bind)
            .await
            .with_context(|| format!("cannot bind {bind}"))?;
        let local = socket.local_addr()?;
        let started = Instant::now();
        let mut transaction = BindingTransaction::new(request, config, started);
        if change.is_some() {
            // The reply comes from elsewhere by design, and where is only known from
            // OTHER-ADDRESS after a first exchange: accept any source, and report it as
            // `reply from`.
            transaction = transaction.accept_any_source();
        }
        let outcome = StunBinding::new(transaction).run(&mut socket).await?;
        anyhow::Ok((local, started, outcome))
    })?;
    let response = match outcome {
        Ok(response) => response,
        Err(BindingError::Timeout { sends }) => bail!(
            "no answer from {server} after {sends} attempts in {:.1} s: either the server is \
             down or UDP is blocked on the path; we cannot tell which",
            started.elapsed().as_secs_f64()
        ),
        Err(e) => return Err(e).with_context(|| format!("no success response from {server}")),
    };
    let show = |a: Option<SocketAddr>| a.map_or("-".to_owned(), |a| a.to_string());
    if args.json {
        let value = serde_json::json!({
            "server": server.to_string(),
            "local_address": local.to_string(),
            "mapped_address": response.mapped.map(|a| a.to_string()),
            "reply_from": response.from.to_string(),
            "response_origin": response.origin.map(|a| a.to_string()),
            "other_address": response.other.map(|a| a.to_string()),
            "rtt_ms": response.rtt.as_secs_f64() * 1000.0,
            "attempts": response.sends,
        });
        stdout::line(value)?;
    } else {
        stdout::lines([
            format!("mapped address:  {}", show(response.mapped)),
            format!("local address:   {local}"),
            format!("reply from:      {}", response.from),
            format!("response origin: {}", show(response.origin)),
            format!("other address:   {}", show(response.other)),
            format!(
                "round trip:      {:.1} ms ({} attempt(s))",
                response.rtt.as_secs_f64() * 1e3,
                response.sends
            ),
        ])?;
    }
    Ok(())
}
