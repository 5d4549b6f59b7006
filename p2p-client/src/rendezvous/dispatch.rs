//! Several servers, and `XFR` (docs/PROTOCOL.md section 11, docs/CLUSTER.md): `--server a,b,c`
//! (each `HOST[:PORT]`, a name may resolve to several addresses) is tried in a random order,
//! each failure logged and kept for the final error; a node that is full or draining answers
//! `XFR` with another node's address, and the client follows it, a bounded number of times and
//! never twice to the same address.
//!
//! **Trust.** Every address the user names is checked exactly as a single `--server` is
//! (`--ca`, or the key pinned for that `HOST:PORT`, pinned on first use). A node the client
//! reaches only because another node sent it there is never pinned on first use: it must
//! present **the same key** as the node that sent the `XFR` (with `--ca`, a certificate the roots
//! vouch for, for the name the user gave). So a cluster's nodes share one TLS key, and an `XFR`
//! cannot lead the client to a key it has not already trusted (docs/SECURITY.md section 4).

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::OsRng;
use rand::seq::SliceRandom;
use shared::identity::Fingerprint;
use shared::rendezvous::{Line, UserName};

use super::{ClientConfig, DEFAULT_PORT, LoginInfo, RendezvousClient, RendezvousError};
use crate::tls::{ServerLabel, ServerTrust, TlsError};

/// The most `XFR`s followed from one address of the list before giving up on it.
pub const MAX_REDIRECTS: usize = 3;
/// The most addresses tried (after resolving and shuffling) in one walk of the list.
pub const MAX_ATTEMPTS: usize = 8;
/// The longest one walk of the list may take; each attempt is bounded by
/// [`ClientConfig`]'s timeouts too, so a walk never hangs on one address.
pub const WALK_TIME: Duration = Duration::from_secs(60);

/// An `XFR` a node sent: go to `to` instead (docs/PROTOCOL.md section 11).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// The node to go to.
    pub to: SocketAddr,
    /// Why: `full` or `draining` (or a word of a newer server).
    pub reason: String,
    /// The node that sent it.
    pub from: SocketAddr,
    /// That node as the user named it (`HOST:PORT`): the name a `--ca` certificate of the next
    /// node must carry.
    pub server: String,
    /// That node's key: the next node must present the same one (unless `--ca` is used).
    pub key: Fingerprint,
}

impl fmt::Display for Redirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sent us to {} ({})", self.from, self.to, self.reason)
    }
}

impl Redirect {
    /// Reads `XFR TrID NS ip:port [reason]` from the node at `from` (`server`, `key`).
    pub(crate) fn parse(
        line: &Line,
        from: SocketAddr,
        server: &str,
        key: Fingerprint,
    ) -> Result<Redirect, RendezvousError> {
        let bad = || RendezvousError::unexpected(format!("malformed XFR {:?}", line.params));
        if line.param(0) != Some("NS") {
            return Err(bad());
        }
        let to: SocketAddr = line.param(1).and_then(|a| a.parse().ok()).ok_or_else(bad)?;
        if to.ip().is_unspecified() || to.port() == 0 {
            return Err(bad());
        }
        Ok(Redirect {
            to,
            reason: line.param(2).unwrap_or("unspecified").to_owned(),
            from,
            server: server.to_owned(),
            key,
        })
    }

    /// How to trust the node it points to: the sender's key exactly, or the `--ca` roots.
    fn trust(&self, trust: &ServerTrust) -> ServerTrust {
        match trust {
            ServerTrust::Roots(roots) => ServerTrust::Roots(roots.clone()),
            _ => ServerTrust::Exact(self.key),
        }
    }

    /// The node it points to, with how to check it: with `--ca` under the name the user gave
    /// (the certificate must carry it), else under its own address (what errors then name).
    fn hop(&self, trust: &ServerTrust, fallback: &ServerLabel) -> Hop {
        let label = match trust {
            ServerTrust::Roots(_) => {
                ServerLabel::parse(&self.server, DEFAULT_PORT).unwrap_or_else(|| fallback.clone())
            }
            _ => ServerLabel {
                host: self.to.ip().to_string(),
                port: self.to.port(),
            },
        };
        Hop {
            label,
            addr: self.to,
            trust: self.trust(trust),
        }
    }
}

/// Parses `a,b,c` (each one of [`ServerLabel::FORMS`], the port defaulting to 1863).
pub fn parse_servers(text: &str) -> Result<Vec<ServerLabel>, RendezvousError> {
    let labels: Option<Vec<ServerLabel>> = text
        .split(',')
        .map(|one| ServerLabel::parse(one, DEFAULT_PORT))
        .collect();
    match labels {
        Some(labels) if !labels.is_empty() => Ok(labels),
        _ => Err(RendezvousError::Resolve {
            server: text.to_owned(),
            error: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("expected a comma-separated list of {}", ServerLabel::FORMS),
            ),
        }),
    }
}

/// One address to try, and how to check it.
struct Hop {
    label: ServerLabel,
    addr: SocketAddr,
    trust: ServerTrust,
}

/// Errors another address cannot fix: the walk stops at once. A changed key in particular
/// is said loudly rather than hidden behind a working node.
fn ends_walk(e: &RendezvousError) -> bool {
    match e {
        RendezvousError::ServerKeyChanged { .. }
        | RendezvousError::Scram(_)
        | RendezvousError::Kdf(_)
        | RendezvousError::InvalidArgument(_) => true,
        RendezvousError::Tls(t) => matches!(t, TlsError::Home(_) | TlsError::CaFile { .. }),
        _ => e.is_auth_failed(),
    }
}

/// Connects to one of `servers` (and logs in as `login`, if given), following `XFR`s;
/// `first`, a redirect already received (a draining node's push), is tried before the list.
pub(crate) async fn walk(
    servers: &str,
    trust: &ServerTrust,
    config: ClientConfig,
    login: Option<(&UserName, &[u8])>,
    first: Option<Redirect>,
) -> Result<(RendezvousClient, Option<LoginInfo>), RendezvousError> {
    let labels = parse_servers(servers)?;
    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut last_error = None;
    let mut hops: Vec<Hop> = Vec::new();
    for label in &labels {
        match tokio::net::lookup_host((label.host.as_str(), label.port)).await {
            Ok(addrs) => hops.extend(addrs.map(|addr| Hop {
                label: label.clone(),
                addr,
                trust: trust.clone(),
            })),
            Err(error) => {
                tracing::warn!(server = %label, error = %error, "cannot resolve a rendezvous server");
                failures.push(format!("{label}: cannot resolve: {error}"));
                last_error = Some(RendezvousError::Resolve {
                    server: label.to_string(),
                    error,
                });
            }
        }
    }
    let mut seen = HashSet::new();
    hops.retain(|h| seen.insert(h.addr));
    hops.shuffle(&mut OsRng);
    hops.truncate(MAX_ATTEMPTS);
    if let Some(r) = first.as_ref() {
        hops.insert(0, r.hop(trust, &labels[0]));
    }
    let tried = hops.len();
    // Whether any XFR was followed: then a lone failure needs the path to make sense.
    let mut followed = false;
    for start in hops {
        if started.elapsed() >= WALK_TIME {
            failures.push(format!("gave up after {} s", WALK_TIME.as_secs()));
            break;
        }
        let mut hop = start;
        let mut chain = vec![hop.addr];
        loop {
            match attempt(&hop, config, login).await {
                Ok(done) => return Ok(done),
                Err(RendezvousError::Redirected(r)) => {
                    tracing::info!(from = %r.from, to = %r.to, reason = %r.reason,
                        "the rendezvous node sent us to another node (XFR)");
                    let path = || {
                        let mut p: Vec<String> = chain.iter().map(ToString::to_string).collect();
                        p.push(r.to.to_string());
                        p.join(" -> ")
                    };
                    let stop = if chain.contains(&r.to) {
                        Some(format!("redirect loop {}", path()))
                    } else if chain.len() > MAX_REDIRECTS {
                        Some(format!("more than {MAX_REDIRECTS} redirects: {}", path()))
                    } else {
                        None
                    };
                    if let Some(why) = stop {
                        tracing::warn!(server = %chain[0], "{why}");
                        failures.push(format!(
                            "{}: {why} (every node full or draining?)",
                            chain[0]
                        ));
                        last_error = Some(RendezvousError::Redirected(r));
                        break;
                    }
                    chain.push(r.to);
                    followed = true;
                    hop = r.hop(&hop.trust, &hop.label);
                }
                Err(e) if ends_walk(&e) => return Err(e),
                Err(e) => {
                    let via = if chain.len() > 1 {
                        format!(" (reached by XFR from {})", chain[chain.len() - 2])
                    } else {
                        String::new()
                    };
                    tracing::warn!(server = %hop.addr, error = %e,
                        "rendezvous server failed{via}; trying the next one");
                    failures.push(format!("{}{via}: {e}", hop.addr));
                    last_error = Some(e);
                    break;
                }
            }
        }
    }
    // One server that failed once, without redirects: its own error, as before lists existed.
    match (failures.len(), last_error) {
        (1, Some(e)) if !followed && !matches!(e, RendezvousError::Redirected(_)) => Err(e),
        _ => Err(RendezvousError::NoServer { tried, failures }),
    }
}

/// Connects to `hop` and, if asked, logs in.
async fn attempt(
    hop: &Hop,
    config: ClientConfig,
    login: Option<(&UserName, &[u8])>,
) -> Result<(RendezvousClient, Option<LoginInfo>), RendezvousError> {
    let client = RendezvousClient::connect_at(&hop.label, hop.addr, &hop.trust, config).await?;
    let info = match login {
        Some((user, password)) => Some(client.login(user, password).await?),
        None => None,
    };
    Ok((client, info))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use shared::rendezvous::TrId;

    use super::*;

    #[test]
    fn lists_parse_with_default_ports() {
        let labels = parse_servers("127.0.0.1:1,example.org, [::1]:5").unwrap();
        let text: Vec<String> = labels.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["127.0.0.1:1", "example.org:1863", "[::1]:5"]);
        assert!(parse_servers("a,,b").is_err());
        assert!(parse_servers("a:notaport").is_err());
    }

    #[test]
    fn xfr_lines_parse_and_bad_ones_are_refused() {
        let from: SocketAddr = "127.0.0.1:1863".parse().unwrap();
        let key = Fingerprint([1; 32]);
        let line =
            |params: &[&str]| Line::new("XFR", TrId(2), params.iter().map(|p| (*p).to_owned()));
        let r = Redirect::parse(
            &line(&["NS", "127.0.0.2:1864", "full"]),
            from,
            "n1:1863",
            key,
        )
        .unwrap();
        assert_eq!(r.to, "127.0.0.2:1864".parse().unwrap());
        assert_eq!(r.reason, "full");
        assert_eq!(
            r.to_string(),
            "127.0.0.1:1863 sent us to 127.0.0.2:1864 (full)"
        );
        // The redirected node must present the sender's key; --ca roots stay roots.
        assert!(matches!(r.trust(&ServerTrust::Exact(Fingerprint([9; 32]))),
            ServerTrust::Exact(k) if k == key));
        for bad in [
            &["SB", "127.0.0.2:1864"][..],
            &["NS", "nowhere"],
            &["NS", "0.0.0.0:1863"],
            &["NS"],
        ] {
            assert!(
                Redirect::parse(&line(bad), from, "n1:1863", key).is_err(),
                "{bad:?}"
            );
        }
    }
}
