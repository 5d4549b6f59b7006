//! Port mapping on the default gateway with PCP (RFC 6887) and NAT-PMP (RFC 6886).
//!
//! A [`PortMapper`] asks the gateway to forward one external UDP port to the endpoint socket's
//! internal port, renews the lease halfway to expiry, and deletes it (a request with lifetime
//! 0) when told to. Leases are short (120 s by default), so a mapping whose deletion was lost
//! or whose client crashed disappears soon anyway. UPnP-IGD is not here: its SSDP and SOAP
//! exchanges run over HTTP in the client (docs/PORTMAP.md).
//!
//! The requests leave from a socket of their own towards the gateway's port 5351, but the
//! mapping is for [`MapperConfig::internal_port`], the endpoint socket's port: both protocols
//! map an internal port regardless of the request's source port.
//!
//! # Driving it
//! As every datagram core ([`crate::transmit`]): after [`PortMapper::new`] and after every
//! input, send each [`PortMapper::poll_transmit`] from the mapper's socket to its destination,
//! drain [`PortMapper::poll_event`], then sleep until [`PortMapper::poll_timeout`] and call
//! [`PortMapper::handle_timeout`], feeding replies to [`PortMapper::handle_datagram`].
//!
//! ```
//! use std::net::Ipv4Addr;
//! use std::time::Instant;
//! use shared::portmap::{MapperConfig, PortMapper, Protocol};
//! let now = Instant::now();
//! let config = MapperConfig::new(
//!     Protocol::Pcp,
//!     Ipv4Addr::new(192, 168, 1, 1),
//!     Ipv4Addr::new(192, 168, 1, 20),
//!     40000,
//! );
//! let mut mapper = PortMapper::new(config, 7, now);
//! let mut buf = [0u8; 64];
//! let t = mapper.poll_transmit(now, &mut buf).unwrap();
//! assert_eq!(t.destination.port(), 5351);
//! assert_eq!(t.size, 60); // a PCP MAP request without options
//! ```

mod mapper;
pub mod wire;

#[cfg(test)]
mod tests;

pub use mapper::{Event, MapError, MapperConfig, Mapping, PortMapper, Protocol};
