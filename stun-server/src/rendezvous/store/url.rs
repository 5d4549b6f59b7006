//! `--store postgres://user[:password]@host[:port]/database`: parsed once, checked for what
//! this server can honour, and shown without its password.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use postgres::config::{Host, SslMode};

/// How long connecting may take before the store reports the database unreachable (the
/// client's own default is to wait for the kernel, minutes for a silent host).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a `--store` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --store {0}")]
pub struct StoreUrlError(String);

/// A PostgreSQL connection URL the store can use.
///
/// The connection is plain TCP (or a Unix socket): the database is expected on loopback or a
/// trusted private network, so no TLS client is built in. A URL that asks for TLS
/// (`sslmode=require`) is refused rather than silently connected without it; the client's
/// default `prefer` falls back to plain, as libpq's does when the server offers no TLS.
#[derive(Clone)]
pub struct PostgresUrl {
    /// Boxed: the client's settings are large, and a [`StoreLocation`](super::StoreLocation)
    /// or [`Store`](super::Store) holding one inline would be several times the size of its
    /// SQLite sibling.
    config: Box<postgres::Config>,
    /// The URL as given, for equality (the config itself has none).
    text: String,
}

impl PostgresUrl {
    /// The client settings, with the connect timeout filled in when the URL gave none.
    pub(super) fn config(&self) -> postgres::Config {
        let mut config = (*self.config).clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("stun-server");
        }
        config
    }

    /// `host:port` (or the socket directory), for "cannot connect" messages.
    pub fn target(&self) -> String {
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        match self.config.get_hosts().first() {
            Some(Host::Tcp(host)) if host.contains(':') => format!("[{host}]:{port}"),
            Some(Host::Tcp(host)) => format!("{host}:{port}"),
            Some(Host::Unix(dir)) => format!("{} (port {port})", dir.display()),
            None => format!("localhost:{port}"),
        }
    }
}

impl FromStr for PostgresUrl {
    type Err = StoreUrlError;

    fn from_str(text: &str) -> Result<Self, StoreUrlError> {
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(StoreUrlError(format!(
                "{:?}: expected postgres://USER@HOST:PORT/DATABASE (leave --store out for the \
                 SQLite file at --db)",
                redact(text)
            )));
        }
        let config: postgres::Config = text
            .parse()
            .map_err(|e| StoreUrlError(format!("{}: {e}", redact(text))))?;
        if config.get_hosts().is_empty() {
            return Err(StoreUrlError(format!("{}: no host", redact(text))));
        }
        if config.get_hosts().len() > 1 {
            return Err(StoreUrlError(format!(
                "{}: give one host (failover between hosts is not supported)",
                redact(text)
            )));
        }
        if config.get_ssl_mode() == SslMode::Require {
            return Err(StoreUrlError(format!(
                "{}: sslmode=require, but this server connects to PostgreSQL without TLS \
                 (use a database on loopback or a trusted network, and sslmode=disable or \
                 prefer)",
                redact(text)
            )));
        }
        Ok(PostgresUrl {
            config: Box::new(config),
            text: text.to_owned(),
        })
    }
}

impl PartialEq for PostgresUrl {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for PostgresUrl {}

impl fmt::Display for PostgresUrl {
    /// The URL with its password (if any) replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.text))
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({:?})", redact(&self.text))
    }
}

/// `text` with the password of its `user:password@` part (if any) replaced by `***`, so URLs
/// can go into logs and error messages. Query parameters (`?password=`) are dropped whole.
fn redact(text: &str) -> String {
    let (scheme, rest) = text.split_once("://").unwrap_or(("", text));
    let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let slash = if rest.contains('/') { "/" } else { "" };
    let query = if text.contains('?') { "?..." } else { "" };
    format!("{scheme}://{authority}{slash}{path}{query}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn urls_show_no_password_and_name_their_target() {
        let url: PostgresUrl = "postgres://rdv:s3cret@127.0.0.1:5999/accounts"
            .parse()
            .unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://rdv:***@127.0.0.1:5999/accounts"
        );
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(url.target(), "127.0.0.1:5999");
        let url: PostgresUrl = "postgresql://rdv@localhost/accounts?sslmode=disable"
            .parse()
            .unwrap();
        assert_eq!(url.to_string(), "postgresql://rdv@localhost/accounts?...");
        assert_eq!(url.target(), "localhost:5432");
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        for (text, why) in [
            ("sqlite:/tmp/x.db", "expected postgres://"),
            ("/tmp/x.db", "expected postgres://"),
            ("postgres://u@h/db?sslmode=require", "without TLS"),
            ("postgres://u@h1,h2/db", "one host"),
            ("postgres://u@h:notaport/db", "invalid"),
        ] {
            let err = text.parse::<PostgresUrl>().unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
