//! What the driver needs to start a server: where to bind, what to advertise, how many workers.

use std::net::{IpAddr, Ipv4Addr};

use shared::stun_server::{MAX_SOFTWARE_LEN, RateLimitConfig};

/// Default primary and alternate ports ([RFC 8489 section 18.1], RFC 5780's alternate).
///
/// [RFC 8489 section 18.1]: https://www.rfc-editor.org/rfc/rfc8489#section-18.1
pub const DEFAULT_PORT: u16 = 3478;
/// Default alternate port.
pub const DEFAULT_ALT_PORT: u16 = 3479;

/// Everything needed to start a [`crate::ServerHandle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerOptions {
    /// Primary IP address to bind.
    pub primary: IpAddr,
    /// Alternate IP address to bind; `None` runs a single-address server.
    pub alternate: Option<IpAddr>,
    /// Primary port; 0 picks a free pair of ports that exist on both addresses (for tests).
    pub port: u16,
    /// Alternate port; 0 picks one (with `port` 0 as well).
    pub alt_port: u16,
    /// Address to advertise for the primary IP (host behind 1:1 NAT); default: the bound one.
    pub advertise_primary: Option<IpAddr>,
    /// Address to advertise for the alternate IP; default: the bound one.
    pub advertise_alternate: Option<IpAddr>,
    /// UDP worker threads, each with its own four sockets (SO_REUSEPORT); 0 = one per core
    /// this process may run on.
    pub workers: usize,
    /// Whether to serve STUN over TCP on the primary address and port.
    pub tcp: bool,
    /// Per-source response rate limit (per worker).
    pub rate_limit: RateLimitConfig,
    /// SOFTWARE attribute for modern responses; `None` sends none.
    pub software: Option<String>,
    /// Requested receive and send buffer size per socket, in bytes.
    pub socket_buffer: usize,
}

impl Default for ServerOptions {
    /// 127.0.0.1 and 127.0.0.2 on 3478/3479 with TCP, one worker per core.
    fn default() -> Self {
        Self {
            primary: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            alternate: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
            port: DEFAULT_PORT,
            alt_port: DEFAULT_ALT_PORT,
            advertise_primary: None,
            advertise_alternate: None,
            workers: 0,
            tcp: true,
            rate_limit: RateLimitConfig::default(),
            software: shared::stun_server::ServerConfig::default().software,
            socket_buffer: 8 << 20,
        }
    }
}

/// Why options were refused before anything was bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// A contradiction in the addresses or ports.
    #[error("{0}")]
    Invalid(String),
}

impl ServerOptions {
    /// Worker count after resolving 0 to the cores available to this process.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Checks what can be checked without binding.
    pub fn validate(&self) -> Result<(), OptionsError> {
        let invalid = |s: String| Err(OptionsError::Invalid(s));
        if self.primary.is_unspecified() {
            return invalid(format!(
                "--primary {} is a wildcard; give the concrete address so replies can come \
                 from a known source",
                self.primary
            ));
        }
        if let Some(alt) = self.alternate {
            if alt == self.primary {
                return invalid(format!("--alternate {alt} must differ from --primary"));
            }
            if alt.is_ipv4() != self.primary.is_ipv4() {
                return invalid(format!(
                    "--primary {} and --alternate {alt} must be the same IP version",
                    self.primary
                ));
            }
            if alt.is_unspecified() {
                return invalid(format!("--alternate {alt} is a wildcard"));
            }
        }
        if self.advertise_alternate.is_some() && self.alternate.is_none() {
            return invalid("--advertise-alternate needs --alternate".into());
        }
        if (self.port == 0) != (self.alt_port == 0) {
            return invalid(
                "--port and --alt-port must both be 0 (pick free ports) or both set".into(),
            );
        }
        if self.port != 0 && self.port == self.alt_port {
            return invalid(format!(
                "--port and --alt-port must differ (both are {})",
                self.port
            ));
        }
        if let Some(s) = &self.software {
            if s.len() > MAX_SOFTWARE_LEN {
                return invalid(format!(
                    "--software is longer than {MAX_SOFTWARE_LEN} bytes"
                ));
            }
        }
        Ok(())
    }
}
