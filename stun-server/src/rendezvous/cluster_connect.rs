//! How a node reaches the cluster's NATS server: the URL, and optionally TLS (the server's
//! certificate checked against a CA file or the system's roots, a client certificate) and a
//! user name and password (`--cluster`, `--cluster-ca`, `--cluster-cert`/`--cluster-key`,
//! `--cluster-user`/`--cluster-password-file`; docs/CLUSTER.md).
//!
//! Everything that crosses NATS (presence, list changes, invitations with their offers)
//! is readable and forgeable by whoever can reach the NATS server: off loopback, use TLS and
//! a password (or a client certificate).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The NATS server of a cluster and how to authenticate to it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClusterConnect {
    /// `nats://HOST:PORT`, or `tls://HOST:PORT` to require TLS.
    pub url: String,
    /// PEM file of the CA(s) the NATS server's certificate must chain to (implies TLS); the
    /// system's roots without it.
    pub ca: Option<PathBuf>,
    /// PEM files of a client certificate and its key, for a server that verifies clients
    /// (implies TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// User name and password.
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for ClusterConnect {
    /// Never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConnect")
            .field("url", &self.url)
            .field("ca", &self.ca)
            .field("client_cert", &self.client_cert)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}

impl fmt::Display for ClusterConnect {
    /// The URL, whether TLS is required, and the user: for logs (never the password).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.url)?;
        if self.tls() && !self.url.starts_with("tls://") {
            write!(f, " (TLS)")?;
        }
        if let Some((user, _)) = &self.credentials {
            write!(f, " as {user}")?;
        }
        Ok(())
    }
}

impl ClusterConnect {
    /// A server on `url` without TLS or credentials.
    pub fn plain(url: impl Into<String>) -> ClusterConnect {
        ClusterConnect {
            url: url.into(),
            ..ClusterConnect::default()
        }
    }

    /// Whether the connection must use TLS.
    pub fn tls(&self) -> bool {
        self.url.starts_with("tls://") || self.ca.is_some() || self.client_cert.is_some()
    }

    /// The client's options: reconnecting for ever, back within a second of the server.
    pub(crate) fn options(&self, name: String) -> async_nats::ConnectOptions {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            // The default backs off to seconds.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100 * u64::try_from(attempts.min(10)).unwrap_or(10))
            });
        if self.tls() {
            options = options.require_tls(true);
        }
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some((user, password)) = &self.credentials {
            options = options.user_and_password(user.clone(), password.clone());
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown() {
        let c = ClusterConnect {
            url: "nats://10.0.0.5:4222".into(),
            ca: Some("/etc/nats/ca.pem".into()),
            client_cert: None,
            credentials: Some(("rdv".into(), "hunter2-secret".into())),
        };
        assert_eq!(c.to_string(), "nats://10.0.0.5:4222 (TLS) as rdv");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(c.tls());
        assert!(!ClusterConnect::plain("nats://127.0.0.1:4222").tls());
        assert!(ClusterConnect::plain("tls://127.0.0.1:4222").tls());
        assert_eq!(
            ClusterConnect::plain("tls://127.0.0.1:4222").to_string(),
            "tls://127.0.0.1:4222"
        );
    }
}
