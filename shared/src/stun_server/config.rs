//! What the server core needs to know: the addresses it advertises and its limits.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::{IpSlot, PortSlot, ServerSocket};

/// Longest SOFTWARE value the server will send; part of the response size bound.
pub const MAX_SOFTWARE_LEN: usize = 64;

/// Per-source-address rate limit for responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Sustained responses per second per source IP; 0 turns the limit off.
    pub per_second: u32,
    /// How many responses a source may get in a burst above the sustained rate.
    pub burst: u32,
}

impl Default for RateLimitConfig {
    /// 200 per second with bursts of 400: a classifier sends about ten requests and a chatty
    /// ICE agent a few per second, so only floods (or thousands of hosts behind one CGNAT
    /// address hammering us at once) are cut.
    fn default() -> Self {
        Self {
            per_second: 200,
            burst: 400,
        }
    }
}

/// The server's advertised addresses and limits.
///
/// The addresses are the ones clients see: on a host behind 1:1 NAT (a cloud VM) they are the
/// public addresses, not the ones the driver binds. They go into RESPONSE-ORIGIN, OTHER-ADDRESS,
/// SOURCE-ADDRESS and CHANGED-ADDRESS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// The primary IP address (A1).
    pub primary_ip: IpAddr,
    /// The alternate IP address (A2); `None` for a single-address deployment, which then sends
    /// no OTHER-ADDRESS or CHANGED-ADDRESS and cannot honour change-IP.
    pub alternate_ip: Option<IpAddr>,
    /// The primary port (P1).
    pub primary_port: u16,
    /// The alternate port (P2).
    pub alternate_port: u16,
    /// SOFTWARE sent in modern responses; `None` sends none. At most [`MAX_SOFTWARE_LEN`] bytes.
    pub software: Option<String>,
    /// The per-source rate limit.
    pub rate_limit: RateLimitConfig,
}

impl Default for ServerConfig {
    /// 127.0.0.1 and 127.0.0.2 on 3478 and 3479: both addresses exist on Linux loopback, so the
    /// default runs anywhere with no setup.
    fn default() -> Self {
        Self {
            primary_ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            alternate_ip: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
            primary_port: 3478,
            alternate_port: 3479,
            software: Some(concat!("p2p-toolkit stun ", env!("CARGO_PKG_VERSION")).to_owned()),
            rate_limit: RateLimitConfig::default(),
        }
    }
}

/// Why a [`ServerConfig`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Both IP slots hold the same address.
    #[error("the primary and alternate addresses must differ (both are {0})")]
    SameAddress(IpAddr),
    /// The two IP addresses are of different families.
    #[error("the primary ({0}) and alternate ({1}) addresses must both be IPv4 or both IPv6")]
    MixedFamilies(IpAddr, IpAddr),
    /// Both port slots hold the same port.
    #[error("the primary and alternate ports must differ (both are {0})")]
    SamePort(u16),
    /// A port of 0 (drivers resolve "any port" before building the config).
    #[error("ports must be non-zero")]
    ZeroPort,
    /// SOFTWARE longer than [`MAX_SOFTWARE_LEN`].
    #[error("the software name is {0} bytes; at most {MAX_SOFTWARE_LEN} are allowed")]
    SoftwareTooLong(usize),
}

impl ServerConfig {
    /// Checks the configuration for contradictions.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(alt) = self.alternate_ip {
            if alt == self.primary_ip {
                return Err(ConfigError::SameAddress(alt));
            }
            if alt.is_ipv4() != self.primary_ip.is_ipv4() {
                return Err(ConfigError::MixedFamilies(self.primary_ip, alt));
            }
        }
        if self.primary_port == 0 || self.alternate_port == 0 {
            return Err(ConfigError::ZeroPort);
        }
        if self.primary_port == self.alternate_port {
            return Err(ConfigError::SamePort(self.primary_port));
        }
        if let Some(software) = &self.software {
            if software.len() > MAX_SOFTWARE_LEN {
                return Err(ConfigError::SoftwareTooLong(software.len()));
            }
        }
        Ok(())
    }

    /// The advertised address of a socket, or `None` if it is on the missing alternate IP.
    pub fn address_of(&self, socket: ServerSocket) -> Option<SocketAddr> {
        let ip = match socket.ip {
            IpSlot::Primary => self.primary_ip,
            IpSlot::Alternate => self.alternate_ip?,
        };
        let port = match socket.port {
            PortSlot::Primary => self.primary_port,
            PortSlot::Alternate => self.alternate_port,
        };
        Some(SocketAddr::new(ip, port))
    }
}
