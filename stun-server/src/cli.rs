//! Command-line flags and the TOML config file, merged into [`ServerOptions`].

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use serde::{Deserialize, Serialize};
use shared::stun_server::RateLimitConfig;
use stun_server::{DEFAULT_ALT_PORT, DEFAULT_PORT, ServerOptions};

/// STUN server with the classic two-address setup: RFC 3489 (classic), RFC 8489 and RFC 5780
/// (NAT behaviour discovery).
///
/// With no arguments it binds 127.0.0.1 and 127.0.0.2 (both exist on Linux loopback) on UDP
/// ports 3478 and 3479, and TCP 127.0.0.1:3478. For a public deployment give the host's two
/// addresses with --primary and --alternate. Flags override the config file; the file
/// overrides the defaults. RESPONSE-ADDRESS is never honoured (it would make the server a
/// reflector); responses are at most 172 bytes larger than their request.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Logging: set RUST_LOG (default \"info\"), e.g. RUST_LOG=debug."
)]
pub struct Cli {
    /// TOML config file with the same keys as the long flags (e.g. `alt_port = 3479`).
    #[arg(long, short = 'c', env = "STUN_SERVER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Primary IP address to bind [default: 127.0.0.1]. Given without --alternate, the server
    /// runs with one address.
    #[arg(long, value_name = "IP")]
    pub primary: Option<IpAddr>,
    /// Alternate IP address, for CHANGE-REQUEST and OTHER-ADDRESS [default: 127.0.0.2 when
    /// --primary is not given either].
    #[arg(long, value_name = "IP", conflicts_with = "single_address")]
    pub alternate: Option<IpAddr>,
    /// Use only the primary address: no OTHER-ADDRESS/CHANGED-ADDRESS, change-IP refused.
    #[arg(long)]
    pub single_address: bool,
    /// Primary port [default: 3478].
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,
    /// Alternate port [default: 3479].
    #[arg(long, value_name = "N")]
    pub alt_port: Option<u16>,
    /// Public address to advertise for --primary, for hosts behind 1:1 NAT (cloud VMs).
    #[arg(long, value_name = "IP")]
    pub advertise_primary: Option<IpAddr>,
    /// Public address to advertise for --alternate, for hosts behind 1:1 NAT.
    #[arg(long, value_name = "IP")]
    pub advertise_alternate: Option<IpAddr>,
    /// UDP worker threads; 0 = one per core this process may use [default: 0].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Do not serve STUN over TCP.
    #[arg(long)]
    pub no_tcp: bool,
    /// Responses per second per source IP (per worker); 0 turns the limit off [default: 200].
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u32>,
    /// Burst allowance per source IP above the rate [default: 400].
    #[arg(long, value_name = "N")]
    pub rate_burst: Option<u32>,
    /// SOFTWARE attribute in modern responses (at most 64 bytes).
    #[arg(long, value_name = "TEXT", conflicts_with = "no_software")]
    pub software: Option<String>,
    /// Send no SOFTWARE attribute.
    #[arg(long)]
    pub no_software: bool,
    /// Receive/send buffer per socket in bytes [default: 8388608].
    #[arg(long, value_name = "BYTES")]
    pub socket_buffer: Option<usize>,
    /// Log counters every N seconds; 0 = only at shutdown [default: 60].
    #[arg(long, value_name = "SECS")]
    pub stats_interval: Option<u64>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// The config file, and the merged settings (same shape, so `--print-config` output can be
/// used as a config file).
#[derive(Deserialize, Serialize, Debug, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    primary: Option<IpAddr>,
    alternate: Option<IpAddr>,
    single_address: Option<bool>,
    port: Option<u16>,
    alt_port: Option<u16>,
    advertise_primary: Option<IpAddr>,
    advertise_alternate: Option<IpAddr>,
    workers: Option<usize>,
    tcp: Option<bool>,
    rate_limit: Option<u32>,
    rate_burst: Option<u32>,
    software: Option<String>,
    socket_buffer: Option<usize>,
    #[serde(skip_serializing)]
    stats_interval_opt: Option<u64>,
    /// Seconds between counter logs (resolved).
    #[serde(skip_deserializing, rename = "stats_interval")]
    pub stats_interval: u64,
}

impl Cli {
    /// Reads the config file (if any) and applies the flags over it.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                parse_file(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => Settings::default(),
        };
        macro_rules! over {
            ($($field:ident),*) => { $( if self.$field.is_some() { s.$field = self.$field.clone(); } )* };
        }
        over!(
            primary,
            alternate,
            port,
            alt_port,
            advertise_primary,
            advertise_alternate
        );
        over!(workers, rate_limit, rate_burst, software, socket_buffer);
        if self.stats_interval.is_some() {
            s.stats_interval_opt = self.stats_interval;
        }
        if self.single_address {
            s.single_address = Some(true);
        }
        if self.no_tcp {
            s.tcp = Some(false);
        }
        if self.no_software {
            s.software = Some(String::new());
        }
        s.resolve();
        Ok(s)
    }
}

/// Parses a config file. `stats_interval` is read into its own field so the resolved value
/// can be printed under the same key.
fn parse_file(text: &str) -> anyhow::Result<Settings> {
    let mut table: toml::Table = toml::from_str(text)?;
    let interval = match table.remove("stats_interval") {
        Some(v) => Some(
            v.as_integer()
                .and_then(|i| u64::try_from(i).ok())
                .context("stats_interval must be a non-negative integer")?,
        ),
        None => None,
    };
    let mut settings: Settings = table.try_into()?;
    settings.stats_interval_opt = interval;
    Ok(settings)
}

impl Settings {
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
        self.stats_interval = self.stats_interval_opt.unwrap_or(60);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Settings {
        let mut argv = vec!["stun-server"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().settings().unwrap()
    }

    #[test]
    fn no_arguments_is_the_loopback_pair() {
        let o = settings(&[]).server_options();
        assert_eq!(o.primary, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(o.alternate, Some(IpAddr::from([127, 0, 0, 2])));
        assert_eq!((o.port, o.alt_port), (3478, 3479));
        assert!(o.tcp);
    }

    #[test]
    fn primary_alone_means_single_address() {
        let o = settings(&["--primary", "192.0.2.1"]).server_options();
        assert_eq!(o.alternate, None);
        let o = settings(&["--single-address"]).server_options();
        assert_eq!(o.alternate, None);
    }

    #[test]
    fn flags_override_the_file_and_print_config_round_trips() {
        let file = "primary = \"10.0.0.1\"\nalternate = \"10.0.0.2\"\nport = 4000\n\
                    alt_port = 4001\nrate_limit = 5\nstats_interval = 7\n";
        let mut s = parse_file(file).unwrap();
        s.resolve();
        assert_eq!(s.stats_interval, 7);
        let reparsed = {
            let mut r = parse_file(&s.to_toml().unwrap()).unwrap();
            r.resolve();
            r
        };
        assert_eq!(reparsed, s);
        let dir = std::env::temp_dir().join(format!("stun-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, file).unwrap();
        let path = path.to_str().unwrap();
        let o = settings(&["-c", path, "--port", "5000", "--no-tcp"]).server_options();
        assert_eq!(o.port, 5000);
        assert_eq!(o.alt_port, 4001);
        assert_eq!(o.rate_limit.per_second, 5);
        assert!(!o.tcp);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        assert!(parse_file("primray = \"10.0.0.1\"").is_err());
    }
}
