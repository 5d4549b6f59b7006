//! Command-line flags and the TOML config file, merged into [`ServerOptions`],
//! [`RendezvousOptions`] and [`SwitchboardOptions`]; the operator's `user` subcommands.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use p2p_servers::rendezvous::{
    DEFAULT_MAX_QUEUED_LINES, PostgresUrl, StoreLocation, StoreUrlError, default_db_path,
};
use p2p_servers::services::ServicesOptions;
use p2p_servers::switchboard::SwitchboardOptions;
use p2p_servers::tls::ServerTls;
use p2p_servers::{DEFAULT_ALT_PORT, DEFAULT_PORT, RendezvousOptions, ServerOptions};
use serde::{Deserialize, Serialize};
use shared::rendezvous::{Kdf, RendezvousConfig, UserName};
use shared::stun_server::RateLimitConfig;

/// STUN server with the classic two-address setup: RFC 3489 (classic), RFC 8489 and RFC 5780
/// (NAT behaviour discovery), and the rendezvous server (accounts, presence, introductions;
/// docs/PROTOCOL.md).
///
/// With no arguments it binds 127.0.0.1 and 127.0.0.2 (both exist on Linux loopback) on UDP
/// ports 3478 and 3479, and TCP 127.0.0.1:3478, runs the rendezvous server on 127.0.0.1:1863
/// with its database in the default place (see --db), and the switchboard relay on
/// 127.0.0.1:1865, both over TLS 1.3 with one certificate (see --tls-cert). For a public
/// deployment give the host's two addresses with --primary and --alternate: the rendezvous
/// server and the switchboard then listen on the primary address too (ports 1863 and 1865),
/// unless --rendezvous or --switchboard say otherwise. Flags override the config
/// file; the file overrides the defaults. RESPONSE-ADDRESS is never honoured (it would make the
/// server a reflector); responses are at most 172 bytes larger than their request.
#[derive(Parser, Debug)]
#[command(
    // The binary's name, not the package's (`p2p-servers`), in --version and --help.
    name = "stun-server",
    version,
    after_help = "Logging: set RUST_LOG (default \"info\"), e.g. RUST_LOG=debug.\n\
                  Accounts: `stun-server user add NAME`, `stun-server user list` (see `user --help`);\n\
                  with --store postgres://... they live in PostgreSQL instead of --db."
)]
pub struct Cli {
    /// TOML config file with the same keys as the long flags (e.g. `alt_port = 3479`).
    #[arg(
        long,
        short = 'c',
        env = "STUN_SERVER_CONFIG",
        value_name = "FILE",
        global = true
    )]
    pub config: Option<PathBuf>,
    /// Every setting, as flags (the same struct is the config file).
    #[command(flatten)]
    pub flags: Settings,
    /// Print the fingerprint of the TLS certificate's key (SHA256:..., what clients pin) and
    /// exit; generates the self-signed certificate first if there is none yet.
    #[arg(long)]
    pub print_fingerprint: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Operator commands (instead of serving).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Operator commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Rendezvous accounts in the database; works while the server runs (it picks new users up
    /// within about 2 seconds).
    #[command(subcommand)]
    User(UserCommand),
}

/// `stun-server user ...`
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add an account. The password is read from --password-file, else the P2P_PASSWORD
    /// environment variable, else asked for on the terminal (not echoed). Only the verifier is
    /// stored, never the password.
    Add {
        /// The user name: 1 to 32 of a-z 0-9 . _ - (case-insensitive).
        name: UserName,
        /// File whose first line is the password.
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Argon2id parameters for the verifier [default: argon2id:m=19456:t=2:p=1].
        #[arg(long, value_name = "KDF")]
        kdf: Option<Kdf>,
    },
    /// List accounts: name, KDF, creation time (UTC).
    List,
}

/// Who may create accounts.
#[derive(ValueEnum, Deserialize, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Anyone, with REG.
    Open,
    /// Only the operator, with `stun-server user add`.
    Closed,
}

/// The `rendezvous` and `switchboard` keys: `false` to turn the service off, or its address.
#[derive(Deserialize, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(untagged)]
pub enum ServiceKey {
    /// `true`: on, at the default address; `false`: off.
    Enabled(bool),
    /// On, at this address.
    Listen(SocketAddr),
}

/// The address the rendezvous and the switchboard listen on by default: the primary address
/// unless it is a loopback one (or not given), else 127.0.0.1.
fn default_service_ip(primary: Option<IpAddr>) -> IpAddr {
    primary
        .filter(|ip| !ip.is_loopback())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The default rendezvous address with `primary` as the STUN primary address.
fn default_rendezvous(primary: Option<IpAddr>) -> SocketAddr {
    let port = RendezvousOptions::default().listen.port();
    SocketAddr::new(default_service_ip(primary), port)
}

/// The default switchboard address with `primary` as the STUN primary address.
fn default_switchboard(primary: Option<IpAddr>) -> SocketAddr {
    let port = SwitchboardOptions::default().listen.port();
    SocketAddr::new(default_service_ip(primary), port)
}

// The settings: each is declared once, here, and is both a flag (clap: the doc comment is its
// help) and a config-file key (serde: the field name). Every field is an `Option` so "not given"
// is distinguishable, which is what lets the file and the flags merge key by key (flags win) and
// then `resolve` fill in defaults. A few keys have a flag spelled differently: `tcp` and `stun`
// are turned off with `--no-tcp` and `--no-stun`, `single_address` is the bare
// `--single-address`. The three `no_*` fields below are flags only (`#[serde(skip)]`): second
// spellings of `software = ""`, `rendezvous = false` and `switchboard = false`.
//
// The order of the fields is the order of `--print-config`; `display_order` keeps `--help` in
// its own order where the two differ. (No `///` on the struct: clap would take it as the
// command's about text.)
#[allow(missing_docs)]
#[derive(Args, Deserialize, Serialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Primary IP address to bind [default: 127.0.0.1]. Given without --alternate, the server
    /// runs with one address.
    #[arg(long, value_name = "IP")]
    primary: Option<IpAddr>,
    /// Alternate IP address, for CHANGE-REQUEST and OTHER-ADDRESS [default: 127.0.0.2 when
    /// --primary is not given either].
    #[arg(long, value_name = "IP", conflicts_with = "single_address")]
    alternate: Option<IpAddr>,
    /// Use only the primary address: no OTHER-ADDRESS/CHANGED-ADDRESS, change-IP refused.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    single_address: Option<bool>,
    /// Primary port [default: 3478].
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// Alternate port [default: 3479].
    #[arg(long, value_name = "N")]
    alt_port: Option<u16>,
    /// Public address to advertise for --primary, for hosts behind 1:1 NAT (cloud VMs).
    #[arg(long, value_name = "IP")]
    advertise_primary: Option<IpAddr>,
    /// Public address to advertise for --alternate, for hosts behind 1:1 NAT.
    #[arg(long, value_name = "IP")]
    advertise_alternate: Option<IpAddr>,
    /// UDP worker threads; 0 = one per core this process may use [default: 0].
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Do not serve STUN over TCP.
    #[arg(long = "no-tcp", num_args = 0, default_missing_value = "false")]
    tcp: Option<bool>,
    /// Responses per second per source IP (per worker); 0 turns the limit off [default: 200].
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,
    /// Burst allowance per source IP above the rate [default: 400].
    #[arg(long, value_name = "N")]
    rate_burst: Option<u32>,
    /// SOFTWARE attribute in modern responses (at most 64 bytes).
    #[arg(long, value_name = "TEXT", conflicts_with = "no_software")]
    software: Option<String>,
    /// Send no SOFTWARE attribute.
    #[arg(long)]
    #[serde(skip)]
    no_software: bool,
    /// Receive/send buffer per socket in bytes [default: 8388608].
    #[arg(long, value_name = "BYTES")]
    socket_buffer: Option<usize>,
    /// Do not run the STUN server (rendezvous only).
    #[arg(long = "no-stun", num_args = 0, default_missing_value = "false")]
    #[arg(conflicts_with = "no_rendezvous", display_order = STUN_ORDER)]
    stun: Option<bool>,
    /// Rendezvous server (presence, introductions) TCP address; port 0 picks a free one
    /// [default: port 1863 on --primary if that is not a loopback address, else
    /// 127.0.0.1:1863].
    #[arg(long, value_name = "ADDR", value_parser = listen_on)]
    #[arg(conflicts_with = "no_rendezvous", display_order = STUN_ORDER + 1)]
    rendezvous: Option<ServiceKey>,
    /// Do not run the rendezvous server (STUN only).
    #[arg(long, display_order = STUN_ORDER + 2)]
    #[serde(skip)]
    no_rendezvous: bool,
    /// The rendezvous database (SQLite), created if missing [default:
    /// $XDG_DATA_HOME/p2p-toolkit/rendezvous.db, else
    /// $HOME/.local/share/p2p-toolkit/rendezvous.db, else ./rendezvous.db].
    #[arg(long, value_name = "PATH", global = true, display_order = STUN_ORDER + 3)]
    db: Option<PathBuf>,
    /// Keep the rendezvous state (accounts, lists, device keys, the server secret) in this
    /// PostgreSQL database instead of the SQLite file at --db, so several servers can share it:
    /// postgres://USER:PASSWORD@HOST:PORT/DATABASE (password and port optional). Its tables
    /// are created on first use.
    /// The connection is plain (no TLS; sslmode=require is refused): use a database on
    /// loopback or a trusted network [default: the SQLite file].
    #[arg(long, value_name = "URL", global = true, value_parser = store_url)]
    #[arg(display_order = STUN_ORDER + 4)]
    store: Option<String>,
    /// `open`: anyone may register with REG; `closed`: only the operator adds accounts, with
    /// `stun-server user add` [default: open].
    #[arg(long, value_name = "MODE", display_order = STUN_ORDER + 5)]
    registration: Option<Registration>,
    /// The weakest password KDF accepted at registration and password change
    /// [default: argon2id:m=19456:t=2:p=1].
    #[arg(long, value_name = "KDF", value_parser = kdf_text, display_order = STUN_ORDER + 6)]
    min_kdf: Option<String>,
    /// Seconds of silence from a rendezvous client before the server sends PNG [default: 30].
    #[arg(long, value_name = "SECS", display_order = STUN_ORDER + 7)]
    ping_interval: Option<u64>,
    /// Seconds of silence after which a rendezvous client is dropped (OUT TMO) [default: 75].
    #[arg(long, value_name = "SECS", display_order = STUN_ORDER + 8)]
    idle_timeout: Option<u64>,
    /// Switchboard (relay for peers that cannot punch through) TCP address; port 0 picks a free
    /// one. Rendezvous clients are told the bound address in CFG and ITR (sb=), and introductions
    /// hand it their tickets [default: port 1865 on --primary if that is not a loopback
    /// address, else 127.0.0.1:1865].
    #[arg(long, value_name = "ADDR", value_parser = listen_on)]
    #[arg(conflicts_with = "no_switchboard", display_order = STUN_ORDER + 9)]
    switchboard: Option<ServiceKey>,
    /// Do not run the switchboard: clients get no sb= and must connect directly. Implied by
    /// --no-rendezvous (only introductions issue switchboard tickets).
    #[arg(long, display_order = STUN_ORDER + 10)]
    #[serde(skip)]
    no_switchboard: bool,
    /// Public switchboard address to tell clients instead of the bound one, for hosts behind
    /// 1:1 NAT (cloud VMs); port 0 keeps the bound port.
    #[arg(long, value_name = "ADDR", conflicts_with = "no_switchboard")]
    #[arg(display_order = STUN_ORDER + 11)]
    advertise_switchboard: Option<SocketAddr>,
    /// Bytes per second the switchboard relays per session and direction, with K, M or G
    /// (binary) allowed, e.g. 50M; 0 = unlimited. The limit keeps one pair from taking a
    /// shared relay's whole uplink; raise it for a relay of your own that carries bulk
    /// transfers (send/receive) [default: 1M].
    #[arg(long, value_name = "BYTES", value_parser = byte_count, display_order = STUN_ORDER + 12)]
    relay_rate: Option<u64>,
    /// Bytes a switchboard session may relay in all (both directions), with K, M, G or T
    /// (binary); 0 = unlimited. The session ends when it is reached [default: 1G].
    #[arg(long, value_name = "BYTES", value_parser = byte_count, display_order = STUN_ORDER + 12)]
    relay_session_cap: Option<u64>,
    /// PEM certificate chain (end entity first) for the rendezvous server and the switchboard,
    /// which speak TLS 1.3 only; needs --tls-key. Without both, a self-signed certificate is
    /// generated on first start and kept next to the database (tls-cert.pem, tls-key.pem),
    /// and clients pin its key on first use.
    #[arg(long, value_name = "FILE", requires = "tls_key", display_order = STUN_ORDER + 12)]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1); needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert", display_order = STUN_ORDER + 13)]
    tls_key: Option<PathBuf>,
    /// Log counters every N seconds; 0 = only at shutdown [default: 60].
    #[arg(long, value_name = "SECS", display_order = STUN_ORDER - 1)]
    stats_interval: Option<u64>,
    /// Serve the counters of every service at http://ADDR/metrics in the Prometheus text
    /// format (docs/METRICS.md), e.g. 127.0.0.1:9100; port 0 picks a free one. Unauthenticated:
    /// keep it on loopback or a monitoring network [default: off].
    #[arg(long, value_name = "ADDR", display_order = STUN_ORDER + 14)]
    metrics: Option<SocketAddr>,
    /// Another rendezvous node of the cluster (IP:PORT; repeat the flag for several, the
    /// file's key is a list: peer_node = ["IP:PORT", ...]), sharing this one's --store and TLS
    /// key: a full or draining node sends clients there with XFR (docs/CLUSTER.md)
    /// [default: none].
    #[arg(long, value_name = "IP:PORT", action = clap::ArgAction::Append)]
    #[arg(display_order = STUN_ORDER + 15)]
    peer_node: Option<Vec<SocketAddr>>,
    /// The most logged-in rendezvous sessions this node serves; beyond it new clients are sent
    /// to a --peer-node with XFR (or refused with 600 without one) [default: no limit].
    #[arg(long, value_name = "N", display_order = STUN_ORDER + 16)]
    max_sessions: Option<usize>,
    /// Seconds a draining node (SIGUSR1) waits for its clients to move to other nodes before
    /// it stops anyway [default: 30].
    #[arg(long, value_name = "SECS", display_order = STUN_ORDER + 17)]
    drain_timeout: Option<u64>,
    /// Join a cluster of rendezvous nodes through this NATS server (nats://HOST:PORT, or
    /// tls://HOST:PORT to require TLS): presence and contact/block list changes cross nodes,
    /// and live nodes are peers for XFR. Every node needs the same --store postgres://... and
    /// TLS key (docs/CLUSTER.md) [default: off].
    #[arg(long, value_name = "URL", display_order = STUN_ORDER + 18)]
    cluster: Option<String>,
    /// PEM file of the CA that signed the NATS server's certificate: the connection uses TLS
    /// and checks the server against it [default: the system's roots, with tls://].
    #[arg(long, value_name = "FILE", display_order = STUN_ORDER + 19)]
    cluster_ca: Option<PathBuf>,
    /// PEM file of a client certificate for a NATS server that verifies clients (with
    /// --cluster-key; implies TLS) [default: none].
    #[arg(long, value_name = "FILE", display_order = STUN_ORDER + 20)]
    cluster_cert: Option<PathBuf>,
    /// PEM file of the key of --cluster-cert [default: none].
    #[arg(long, value_name = "FILE", display_order = STUN_ORDER + 21)]
    cluster_key: Option<PathBuf>,
    /// User name on the NATS server (with --cluster-password-file) [default: none].
    #[arg(long, value_name = "NAME", display_order = STUN_ORDER + 22)]
    cluster_user: Option<String>,
    /// File whose first line is the password of --cluster-user (a file, so that the password
    /// is in no command line and no log) [default: none].
    #[arg(long, value_name = "FILE", display_order = STUN_ORDER + 23)]
    cluster_password_file: Option<PathBuf>,
}

/// Where `--no-stun` comes in `--help` (after `--stats-interval`, which is last in the file).
/// Arguments without a `display_order` are numbered in declaration order from 0 (`--config` is
/// 0, `--primary` 1, ...): `--no-stun` is the 16th.
const STUN_ORDER: usize = 16;

/// `--drain-timeout`'s default, in seconds.
const DEFAULT_DRAIN_TIMEOUT: u64 = 30;

/// `--rendezvous` and `--switchboard` take an address (the file also takes `true`/`false`).
fn listen_on(text: &str) -> Result<ServiceKey, std::net::AddrParseError> {
    text.parse().map(ServiceKey::Listen)
}

/// `--relay-rate` and `--relay-session-cap`: a byte count, with an optional binary suffix.
fn byte_count(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&text[..text.len() - 1], 10),
        Some('M') => (&text[..text.len() - 1], 20),
        Some('G') => (&text[..text.len() - 1], 30),
        Some('T') => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    let value: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a byte count (e.g. 1048576, 512K, 50M, 2G)"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `--store`: checked when the flags are parsed, kept as text like the file's key.
fn store_url(text: &str) -> Result<String, StoreUrlError> {
    text.parse::<PostgresUrl>().map(|_| text.to_owned())
}

/// `--min-kdf`: checked when the flags are parsed, kept as text like the file's key.
fn kdf_text(text: &str) -> Result<String, <Kdf as std::str::FromStr>::Err> {
    text.parse::<Kdf>().map(|kdf| kdf.to_string())
}

impl Cli {
    /// Reads the config file (if any) and applies the flags over it, key by key.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                parse_file(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => Settings::default(),
        };
        let mut s = file.overlaid_with(&self.flags)?;
        if self.flags.no_software {
            s.software = Some(String::new());
        }
        if self.flags.no_rendezvous {
            s.rendezvous = Some(ServiceKey::Enabled(false));
        }
        if self.flags.no_switchboard {
            s.switchboard = Some(ServiceKey::Enabled(false));
        }
        s.resolve();
        s.validate()?;
        Ok(s)
    }
}

/// Parses a config file: only the documented keys (those of `--print-config`) are accepted.
fn parse_file(text: &str) -> anyhow::Result<Settings> {
    Ok(toml::from_str(text)?)
}

impl Settings {
    /// These settings with every key `over` gives replacing this one's: a merge through the
    /// keys themselves, so no list of fields is kept here.
    fn overlaid_with(&self, over: &Settings) -> anyhow::Result<Settings> {
        let mut table = toml::Table::try_from(self)?;
        table.extend(toml::Table::try_from(over)?);
        Ok(table.try_into()?)
    }

    /// Fills in defaults: the loopback pair when no primary was given at all.
    fn resolve(&mut self) {
        let single = self.single_address.unwrap_or(false);
        if self.primary.is_none() {
            self.primary = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
            if self.alternate.is_none() && !single {
                self.alternate = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
            }
        }
        if single {
            self.alternate = None;
        }
        self.single_address = Some(self.alternate.is_none());
        self.port.get_or_insert(DEFAULT_PORT);
        self.alt_port.get_or_insert(DEFAULT_ALT_PORT);
        self.workers.get_or_insert(0);
        self.tcp.get_or_insert(true);
        let defaults = RateLimitConfig::default();
        self.rate_limit.get_or_insert(defaults.per_second);
        self.rate_burst.get_or_insert(defaults.burst);
        let default_software = ServerOptions::default().software.unwrap_or_default();
        self.software.get_or_insert(default_software);
        self.socket_buffer
            .get_or_insert(ServerOptions::default().socket_buffer);
        self.stats_interval.get_or_insert(60);
        self.stun.get_or_insert(true);
        if matches!(self.rendezvous, None | Some(ServiceKey::Enabled(true))) {
            self.rendezvous = Some(ServiceKey::Listen(default_rendezvous(self.primary)));
        }
        // Without the rendezvous nothing issues tickets: the switchboard is off unless asked
        // for (which `validate` refuses).
        match (self.rendezvous, self.switchboard) {
            (Some(ServiceKey::Enabled(false)), None) => {
                self.switchboard = Some(ServiceKey::Enabled(false));
            }
            (Some(ServiceKey::Listen(_)), None | Some(ServiceKey::Enabled(true))) => {
                self.switchboard = Some(ServiceKey::Listen(default_switchboard(self.primary)));
            }
            _ => {}
        }
        self.db.get_or_insert_with(default_db_path);
        self.registration.get_or_insert(Registration::Open);
        self.min_kdf
            .get_or_insert_with(|| Kdf::default().to_string());
        let core = RendezvousConfig::default();
        self.ping_interval
            .get_or_insert(core.ping_interval.as_secs());
        self.idle_timeout.get_or_insert(core.idle_timeout.as_secs());
        self.peer_node.get_or_insert_with(Vec::new);
        self.drain_timeout.get_or_insert(DEFAULT_DRAIN_TIMEOUT);
    }

    /// Checks what the types do not: the KDF syntax, the keepalive timings, and that the
    /// switchboard has a rendezvous server to issue its tickets.
    fn validate(&self) -> anyhow::Result<()> {
        self.min_kdf()?;
        self.store_location()?;
        let switchboard = self.switchboard_listen().is_some();
        if switchboard && self.rendezvous_listen().is_none() {
            anyhow::bail!(
                "the switchboard needs the rendezvous server (its introductions issue the \
                 tickets): add --no-switchboard, or drop --no-rendezvous"
            );
        }
        if self.advertise_switchboard.is_some() && !switchboard {
            anyhow::bail!("--advertise-switchboard needs the switchboard");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            anyhow::bail!(
                "--tls-cert and --tls-key (tls_cert, tls_key) go together: give a certificate \
                 and its key, or neither for a self-signed certificate kept next to the database"
            );
        }
        self.check_cluster_access()?;
        if let Some(url) = &self.cluster {
            if !(url.starts_with("nats://") || url.starts_with("tls://")) || url.contains('@') {
                anyhow::bail!(
                    "--cluster {}: give the NATS server as nats://HOST:PORT or tls://HOST:PORT \
                     (a user and password go in --cluster-user and --cluster-password-file)",
                    url.split_once('@').map_or(url.as_str(), |(_, host)| host)
                );
            }
            if matches!(self.store_location()?, StoreLocation::Sqlite(_)) {
                anyhow::bail!(
                    "--cluster needs --store postgres://...: the nodes of a cluster share one \
                     directory of accounts and lists"
                );
            }
            if self
                .rendezvous_listen()
                .is_some_and(|a| a.ip().is_unspecified())
            {
                anyhow::bail!(
                    "--cluster: give --rendezvous the address clients reach this node at (the \
                     other nodes send clients there), not an unspecified one"
                );
            }
        }
        for peer in self.peer_node.iter().flatten() {
            if peer.ip().is_unspecified() || peer.port() == 0 {
                anyhow::bail!("--peer-node {peer}: give the address clients reach that node at");
            }
            if Some(*peer) == self.rendezvous_listen() {
                anyhow::bail!("--peer-node {peer} is this node's own rendezvous address");
            }
        }
        let ping = self.ping_interval.unwrap_or(30);
        let idle = self.idle_timeout.unwrap_or(75);
        if ping == 0 {
            anyhow::bail!("--ping-interval must be at least 1 second");
        }
        if idle <= ping {
            anyhow::bail!(
                "--idle-timeout ({idle} s) must be longer than --ping-interval ({ping} s)"
            );
        }
        Ok(())
    }

    fn min_kdf(&self) -> anyhow::Result<Kdf> {
        match &self.min_kdf {
            Some(text) => text.parse().context("invalid min_kdf"),
            None => Ok(Kdf::default()),
        }
    }

    /// Whether anyone may register.
    pub fn registration_open(&self) -> bool {
        self.registration != Some(Registration::Closed)
    }

    /// The other rendezvous nodes (`--peer-node`).
    pub fn peer_nodes(&self) -> Vec<SocketAddr> {
        self.peer_node.clone().unwrap_or_default()
    }

    /// The cluster's NATS server (`--cluster`), if any.
    pub fn cluster_url(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// The session limit (`--max-sessions`), if any.
    pub fn max_sessions(&self) -> Option<usize> {
        self.max_sessions
    }

    /// How long a draining node waits for its clients to move (`--drain-timeout`).
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT))
    }

    /// Where to serve `/metrics`, if anywhere.
    pub fn metrics(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// Seconds between counter logs; 0: only at shutdown.
    pub fn stats_interval(&self) -> u64 {
        self.stats_interval.unwrap_or(60)
    }

    /// The STUN primary address (127.0.0.1 unless given).
    pub fn primary(&self) -> IpAddr {
        self.primary.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    /// Whether the STUN server runs.
    pub fn stun_enabled(&self) -> bool {
        self.stun.unwrap_or(true)
    }

    /// Where the rendezvous server listens, if it runs.
    pub fn rendezvous_listen(&self) -> Option<SocketAddr> {
        match self.rendezvous {
            None | Some(ServiceKey::Enabled(true)) => Some(default_rendezvous(self.primary)),
            Some(ServiceKey::Enabled(false)) => None,
            Some(ServiceKey::Listen(addr)) => Some(addr),
        }
    }

    /// Where the switchboard listens, if it runs.
    pub fn switchboard_listen(&self) -> Option<SocketAddr> {
        match self.switchboard {
            None | Some(ServiceKey::Enabled(true)) => Some(default_switchboard(self.primary)),
            Some(ServiceKey::Enabled(false)) => None,
            Some(ServiceKey::Listen(addr)) => Some(addr),
        }
    }

    /// The certificate both services present: `--tls-cert`/`--tls-key`, else the self-signed
    /// one next to the database (generated on first use for "localhost", the listen addresses
    /// and the advertised ones).
    pub fn server_tls(&self) -> anyhow::Result<ServerTls> {
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            return Ok(ServerTls::from_pem_files(cert, key)?);
        }
        let db = self.db_path();
        let dir = match db.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let ips: Vec<IpAddr> = [
            self.rendezvous_listen().map(|a| a.ip()),
            self.switchboard_listen().map(|a| a.ip()),
            self.advertise_switchboard.map(|a| a.ip()),
            self.advertise_primary,
        ]
        .into_iter()
        .flatten()
        .collect();
        Ok(ServerTls::self_signed_in(&dir, &ips)?)
    }

    /// The rendezvous server and the switchboard, wired (`None` when the rendezvous is off),
    /// presenting `tls`; `stun_addr` is what `CFG` advertises.
    pub fn services_options(
        &self,
        stun_addr: Option<SocketAddr>,
        tls: ServerTls,
    ) -> anyhow::Result<Option<ServicesOptions>> {
        let Some(mut rendezvous) = self.rendezvous_options(stun_addr)? else {
            return Ok(None);
        };
        rendezvous.tls = tls;
        let switchboard = self.switchboard_listen().map(|listen| {
            let mut config = SwitchboardOptions::default().config;
            if let Some(rate) = self.relay_rate {
                config.rate = rate;
                // One second's worth may pass in a burst, and never less than a whole frame.
                config.burst = rate.max(config.max_data as u64);
            }
            if let Some(cap) = self.relay_session_cap {
                config.byte_cap = if cap == 0 { u64::MAX } else { cap };
            }
            SwitchboardOptions {
                listen,
                config,
                ..SwitchboardOptions::default()
            }
        });
        Ok(Some(ServicesOptions {
            rendezvous,
            switchboard,
            advertise_switchboard: self.advertise_switchboard,
        }))
    }

    /// The SQLite rendezvous database (also where the self-signed certificate is kept).
    pub fn db_path(&self) -> PathBuf {
        self.db.clone().unwrap_or_else(default_db_path)
    }

    /// `--store`: a PostgreSQL database if given, else the SQLite file at `--db`.
    pub fn store_location(&self) -> anyhow::Result<StoreLocation> {
        match &self.store {
            Some(url) => Ok(StoreLocation::Postgres(url.parse()?)),
            None => Ok(StoreLocation::Sqlite(self.db_path())),
        }
    }

    /// The options to start the rendezvous server with (`None` when it is turned off);
    /// `stun_addr` is what `CFG` advertises. The switchboard's address is filled in when it is
    /// started ([`Settings::services_options`]).
    pub fn rendezvous_options(
        &self,
        stun_addr: Option<SocketAddr>,
    ) -> anyhow::Result<Option<RendezvousOptions>> {
        let Some(listen) = self.rendezvous_listen() else {
            return Ok(None);
        };
        let defaults = RendezvousConfig::default();
        let config = RendezvousConfig {
            registration_open: self.registration_open(),
            min_kdf: self.min_kdf()?,
            ping_interval: self
                .ping_interval
                .map_or(defaults.ping_interval, Duration::from_secs),
            idle_timeout: self
                .idle_timeout
                .map_or(defaults.idle_timeout, Duration::from_secs),
            stun_addr,
            switchboard_addr: None,
            max_sessions: self.max_sessions,
            ..defaults
        };
        Ok(Some(RendezvousOptions {
            listen,
            db_path: self.db_path(),
            postgres: match self.store_location()? {
                StoreLocation::Postgres(url) => Some(url),
                StoreLocation::Sqlite(_) => None,
            },
            config,
            max_queued_lines: DEFAULT_MAX_QUEUED_LINES,
            peer_nodes: self.peer_node.clone().unwrap_or_default(),
            cluster: self.cluster_connect()?,
            ..RendezvousOptions::default()
        }))
    }

    /// The effective configuration as TOML.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string(self)?)
    }

    /// The options to start the server with.
    pub fn server_options(&self) -> ServerOptions {
        let d = ServerOptions::default();
        ServerOptions {
            primary: self.primary.unwrap_or(d.primary),
            alternate: self.alternate,
            port: self.port.unwrap_or(d.port),
            alt_port: self.alt_port.unwrap_or(d.alt_port),
            advertise_primary: self.advertise_primary,
            advertise_alternate: self.advertise_alternate,
            workers: self.workers.unwrap_or(d.workers),
            tcp: self.tcp.unwrap_or(d.tcp),
            rate_limit: RateLimitConfig {
                per_second: self.rate_limit.unwrap_or(d.rate_limit.per_second),
                burst: self.rate_burst.unwrap_or(d.rate_limit.burst),
            },
            software: self.software.clone().filter(|s| !s.is_empty()),
            socket_buffer: self.socket_buffer.unwrap_or(d.socket_buffer),
        }
    }
}
mod cluster;

#[cfg(test)]
mod tests;
