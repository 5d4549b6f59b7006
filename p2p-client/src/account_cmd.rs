//! `p2p-client register | contacts | passwd`: account commands against a rendezvous server.
//! `status` is in `status_cmd.rs`; both share [`AccountArgs`] and the helpers here. The
//! identity commands (`contacts fingerprint`, `contacts verify`) are in `identity_cmd.rs`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use p2p_client::chat::pinned_notice;
use p2p_client::home::Home;
use p2p_client::rendezvous::dispatch::parse_servers;
use p2p_client::rendezvous::{ClientConfig, ContactEntry, RendezvousClient};
use p2p_client::stdout::{self, WriteError};
use p2p_client::tls::{ServerLabel, ServerTrust};
use serde_json::json;
use shared::rendezvous::{Kdf, UserName};

use crate::prompt::{SecretSource, check_new_password};
use zeroize::Zeroizing;

/// How to reach the server and who you are (every account command takes these).
#[derive(clap::Args, Debug)]
pub struct AccountArgs {
    /// Rendezvous server as HOST, HOST:PORT, IPv6 or [IPv6]:PORT (the port defaults to 1863),
    /// or several, comma-separated (the nodes of one cluster). Every address they resolve to
    /// is tried in a random order, and a node that is full or draining sends the client to
    /// another one (XFR), whose key must be the same (docs/CLUSTER.md).
    #[arg(
        long,
        value_name = "HOST[:PORT]",
        default_value = "127.0.0.1:1863",
        global = true
    )]
    pub server: String,
    /// Your user name (1-32 of a-z 0-9 . _ -; case-insensitive).
    #[arg(long, value_name = "NAME", env = "P2P_USER", global = true)]
    pub user: Option<String>,
    /// File whose first line is your password. Without it the password is taken from the
    /// P2P_PASSWORD environment variable, else asked for when stdin is a terminal.
    #[arg(long, value_name = "FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Trust only the CA certificates in this PEM file for the server (its name checked).
    /// Without it, a certificate the system's roots verify is accepted, and any other is
    /// pinned on first use in <home>/known_servers: later connections to the same HOST:PORT
    /// must present the same key, or the command stops before sending anything (exit status
    /// 1).
    #[arg(long, value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,
    /// The weakest key stretching to accept from the server at login. A server, or a man in
    /// the middle you were made to trust, that asks for a cheaper KDF would get a proof it
    /// could crack offline at that cost, so the login stops first. Lower it only for a server
    /// whose accounts were registered with a cheaper --kdf on purpose (test servers).
    #[arg(
        long,
        value_name = "KDF",
        env = "P2P_MIN_KDF",
        default_value_t = Kdf::default(),
        global = true
    )]
    pub min_kdf: Kdf,
}

impl AccountArgs {
    /// The user name, checked.
    pub fn user(&self) -> anyhow::Result<UserName> {
        let name = self
            .user
            .as_deref()
            .context("no user: use --user NAME or set P2P_USER")?;
        Ok(UserName::parse(name)?)
    }

    /// The rendezvous client's settings these options ask for (`--min-kdf`).
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            min_kdf: self.min_kdf,
            ..ClientConfig::default()
        }
    }

    /// How to trust the server's key: `--ca`, else system roots and pinning in `home`.
    pub fn trust(&self, home: &Home) -> anyhow::Result<ServerTrust> {
        match &self.ca {
            Some(file) => Ok(ServerTrust::from_ca_file(file)?),
            None => Ok(ServerTrust::tofu(home.clone())),
        }
    }

    /// The servers, checked with the one `--server` parser of every command (each port
    /// defaulted to 1863).
    pub fn servers(&self) -> anyhow::Result<Vec<ServerLabel>> {
        parse_servers(&self.server).map_err(|_| {
            anyhow::anyhow!(
                "cannot resolve {:?}: expected {} (or several, comma-separated)",
                self.server,
                ServerLabel::FORMS
            )
        })
    }

    /// The servers, checked and written the way `known_servers` names them (`HOST:PORT`,
    /// comma-separated).
    pub fn server_list(&self) -> anyhow::Result<String> {
        let labels: Vec<String> = self.servers()?.iter().map(ToString::to_string).collect();
        Ok(labels.join(","))
    }

    /// The password from the file, the environment or the terminal.
    pub fn password(&self, confirm: bool) -> anyhow::Result<Zeroizing<String>> {
        SecretSource {
            file: self.password_file.as_deref(),
            flag: "--password-file",
            env: "P2P_PASSWORD",
            prompt: "Password",
            confirm,
        }
        .read()
    }
}

/// Arguments of `register`.
#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub account: AccountArgs,
    /// How to stretch the password: argon2id:m=KIB:t=ITERATIONS:p=LANES. The server refuses a
    /// KDF weaker than its minimum (by default this default, OWASP's recommendation).
    #[arg(long, value_name = "KDF", default_value_t = Kdf::default())]
    pub kdf: Kdf,
}

/// Arguments of `passwd`.
#[derive(clap::Args, Debug)]
pub struct PasswdArgs {
    #[command(flatten)]
    pub account: AccountArgs,
    /// File whose first line is the new password. Without it the new password is taken from
    /// the P2P_NEW_PASSWORD environment variable, else asked for (twice) when stdin is a
    /// terminal.
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// How to stretch the new password (see `register --kdf`).
    #[arg(long, value_name = "KDF", default_value_t = Kdf::default())]
    pub kdf: Kdf,
}

/// Arguments of `contacts`.
#[derive(clap::Args, Debug)]
pub struct ContactsArgs {
    #[command(flatten)]
    pub account: AccountArgs,
    #[command(subcommand)]
    pub action: ContactsAction,
}

/// What `contacts` does.
#[derive(clap::Subcommand, Debug)]
pub enum ContactsAction {
    /// Print your contact and block lists with each name's presence as you may see it.
    ///
    /// Text: one line per name, `NAME PRESENCE FLAGS` (flags: contact, blocked). With --json:
    /// one array of {"name", "presence", "contact", "blocked"} where presence is a word
    /// (online, busy, idle, brb, away, lunch, phone, offline).
    List {
        /// Print one JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Add NAME to your contact list. You see each other's presence once NAME adds you too.
    Add {
        /// Who.
        name: String,
    },
    /// Remove NAME from your contact list.
    Remove {
        /// Who.
        name: String,
    },
    /// Block NAME: they see you offline and cannot invite you (they are not told).
    Block {
        /// Who.
        name: String,
    },
    /// Unblock NAME.
    Allow {
        /// Who.
        name: String,
    },
    /// Print the safety number you and NAME share, and both identity keys.
    ///
    /// The first line is the safety number: 60 digits that NAME computes identically (`p2p-client
    /// contacts fingerprint YOU`). Compare them in person or over a channel you trust; if they
    /// match, run `contacts verify NAME`. The next lines are your key's and NAME's key's
    /// fingerprints and whether NAME is verified. NAME's key is the one pinned when you first
    /// saw it; if none is pinned yet, it is asked from the server (which needs the password)
    /// and pinned. With --json: one object {"peer", "safety_number", "my_fingerprint",
    /// "peer_fingerprint", "verified"}.
    Fingerprint {
        /// Who.
        name: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Mark NAME's pinned identity key as verified, after comparing safety numbers.
    ///
    /// A verified contact whose key later changes loses the mark (see `chat
    /// --accept-new-key`). Fails when no key is pinned for NAME (see `contacts fingerprint`).
    /// Works offline: nothing is sent to the server.
    Verify {
        /// Who.
        name: String,
    },
}

/// Runs an async command on a fresh single-threaded runtime (with logging to stderr when
/// `RUST_LOG` asks for it).
pub fn block_on<F>(command: F) -> anyhow::Result<ExitCode>
where
    F: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    init_logs();
    runtime()?.block_on(command)
}

/// [`block_on`] on a multi-threaded runtime (a worker per core): for the commands that move
/// bulk data (`send`, `receive`, `tunnel`), where QUIC, the socket readers, hashing and the
/// copies must not all share one thread.
pub fn block_on_parallel<F>(command: F) -> anyhow::Result<ExitCode>
where
    F: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    init_logs();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(command)
}

fn init_logs() {
    use std::io::IsTerminal;
    // Colours only for a person: a redirected log gets plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The single-threaded runtime every async command runs on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Connects to the server over TLS (trusted as `--ca` says, else pinned in `home`), saying
/// on stderr when its key was pinned just now.
pub async fn connect(account: &AccountArgs, home: &Home) -> anyhow::Result<RendezvousClient> {
    let server = account.server_list()?;
    let trust = account.trust(home)?;
    let client = RendezvousClient::connect_with(&server, &trust, account.client_config()).await?;
    if let Some(notice) = pinned_notice(client.server_key()) {
        stdout::note(notice);
    }
    Ok(client)
}

/// Connects, logs in and registers this device's identity key (`DEV`).
pub async fn login(
    account: &AccountArgs,
    home: &Home,
    user: &UserName,
    password: &str,
) -> anyhow::Result<RendezvousClient> {
    let identity = home.user(user)?.identity()?;
    let server = account.server_list()?;
    let trust = account.trust(home)?;
    let config = account.client_config();
    let (client, _) =
        RendezvousClient::connect_and_login(&server, &trust, config, user, password.as_bytes())
            .await
            .with_context(|| format!("cannot log in as {user}"))?;
    if let Some(notice) = pinned_notice(client.server_key()) {
        stdout::note(notice);
    }
    client
        .register_device(&identity.public())
        .await
        .context("cannot register this device's identity key")?;
    Ok(client)
}

/// `register`.
pub async fn register(args: RegisterArgs, home: &Home) -> anyhow::Result<ExitCode> {
    let user = args.account.user()?;
    args.account.servers()?;
    let password = args.account.password(true)?;
    check_new_password(&password)?;
    let client = connect(&args.account, home).await?;
    client
        .register(&user, password.as_bytes(), args.kdf)
        .await
        .with_context(|| format!("cannot register {user}"))?;
    client.logout().await;
    stdout::line(format_args!("registered {user}"))?;
    Ok(ExitCode::SUCCESS)
}

/// `passwd`.
pub async fn passwd(args: PasswdArgs, home: &Home) -> anyhow::Result<ExitCode> {
    let user = args.account.user()?;
    args.account.servers()?;
    let password = args.account.password(false)?;
    let new_password = SecretSource {
        file: args.new_password_file.as_deref(),
        flag: "--new-password-file",
        env: "P2P_NEW_PASSWORD",
        prompt: "New password",
        confirm: true,
    }
    .read()?;
    check_new_password(&new_password)?;
    let client = login(&args.account, home, &user, &password).await?;
    client
        .change_password(new_password.as_bytes(), args.kdf)
        .await
        .with_context(|| format!("cannot change the password of {user}"))?;
    client.logout().await;
    stdout::line(format_args!("changed the password of {user}"))?;
    Ok(ExitCode::SUCCESS)
}

/// A change to the contact or block list.
#[derive(Clone, Copy, Debug)]
enum Edit {
    Add,
    Remove,
    Block,
    Allow,
}

impl Edit {
    async fn apply(self, client: &RendezvousClient, name: &UserName) -> anyhow::Result<String> {
        let (result, verb, done) = match self {
            Edit::Add => (
                client.add_contact(name).await,
                "add",
                "added {} to your contacts",
            ),
            Edit::Remove => (
                client.remove_contact(name).await,
                "remove",
                "removed {} from your contacts",
            ),
            Edit::Block => (client.block(name).await, "block", "blocked {}"),
            Edit::Allow => (client.allow(name).await, "unblock", "unblocked {}"),
        };
        result.with_context(|| format!("cannot {verb} {name}"))?;
        Ok(done.replace("{}", name.as_str()))
    }
}

/// `contacts`.
pub async fn contacts(args: ContactsArgs, home: &Home) -> anyhow::Result<ExitCode> {
    let user = args.account.user()?;
    // Names are checked before anything goes over the network.
    let (edit, json) = match &args.action {
        ContactsAction::Fingerprint { name, json } => {
            let name = UserName::parse(name)?;
            return crate::identity_cmd::fingerprint(&args.account, home, &user, &name, *json)
                .await;
        }
        ContactsAction::Verify { name } => {
            return crate::identity_cmd::verify(home, &user, &UserName::parse(name)?);
        }
        ContactsAction::List { json } => (None, *json),
        ContactsAction::Add { name } => (Some((Edit::Add, UserName::parse(name)?)), false),
        ContactsAction::Remove { name } => (Some((Edit::Remove, UserName::parse(name)?)), false),
        ContactsAction::Block { name } => (Some((Edit::Block, UserName::parse(name)?)), false),
        ContactsAction::Allow { name } => (Some((Edit::Allow, UserName::parse(name)?)), false),
    };
    args.account.servers()?;
    let password = args.account.password(false)?;
    let client = login(&args.account, home, &user, &password).await?;
    let result = match edit {
        None => match client.contacts().await.context("cannot list contacts") {
            Ok(list) => print_list(&list, json).map_err(anyhow::Error::from),
            Err(e) => Err(e),
        },
        Some((edit, name)) => match edit.apply(&client, &name).await {
            Ok(done) => stdout::line(done).map_err(anyhow::Error::from),
            Err(e) => Err(e),
        },
    };
    client.logout().await;
    result.map(|()| ExitCode::SUCCESS)
}

fn print_list(list: &[ContactEntry], json: bool) -> Result<(), WriteError> {
    if json {
        let entries: Vec<_> = list
            .iter()
            .map(|e| {
                json!({
                    "name": e.name.as_str(),
                    "presence": e.presence.word(),
                    "contact": e.contact,
                    "blocked": e.blocked,
                })
            })
            .collect();
        return stdout::line(serde_json::Value::Array(entries));
    }
    let width = list
        .iter()
        .map(|e| e.name.as_str().len())
        .max()
        .unwrap_or(0);
    stdout::lines(list.iter().map(|e| {
        let flags: Vec<&str> = [(e.contact, "contact"), (e.blocked, "blocked")]
            .into_iter()
            .filter_map(|(set, word)| set.then_some(word))
            .collect();
        format!(
            "{:width$}  {:9}  {}",
            e.name.as_str(),
            e.presence.word(),
            flags.join(",")
        )
    }))
}
