//! UPnP-IGD port mapping with `igd-next` (SSDP discovery, then SOAP `AddPortMapping` on the
//! gateway's WANIPConnection service, version 1 or 2): the crate is maintained, speaks both
//! IGD versions and copes with routers' XML; writing SSDP, HTTP and SOAP ourselves would only
//! repeat it. It is not sans-IO (it owns its sockets and HTTP client), so it lives here in the
//! client and not in `shared` (docs/PORTMAP.md).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use igd_next::aio::Gateway;
use igd_next::aio::tokio::{Tokio, search_gateway};
use igd_next::{PortMappingProtocol, SearchOptions};

use super::PortmapError;

/// What the mapping is called in the router's table.
const DESCRIPTION: &str = "p2p-client";
/// How long SSDP discovery may take. `igd-next` sends `MX: 3`, and a gateway may delay its
/// answer by up to MX seconds (miniupnpd picks a random delay in that range), so anything
/// shorter than 3 s misses some answers.
pub(super) const SEARCH_TIMEOUT: Duration = Duration::from_millis(3500);

/// A UPnP-IGD mapping held on the gateway.
pub(super) struct UpnpMapping {
    gateway: Gateway<Tokio>,
    internal: SocketAddr,
    pub(super) external: SocketAddr,
    pub(super) lease: Duration,
    pub(super) expires: Instant,
}

impl std::fmt::Debug for UpnpMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpnpMapping")
            .field("gateway", &self.gateway.addr)
            .field("internal", &self.internal)
            .field("external", &self.external)
            .finish_non_exhaustive()
    }
}

fn upnp_error(e: impl std::fmt::Display) -> PortmapError {
    PortmapError::Upnp(e.to_string())
}

fn lease_secs(lease: Duration) -> u32 {
    u32::try_from(lease.as_secs()).unwrap_or(u32::MAX).max(1)
}

/// Finds the IGD by SSDP from `client_ip` and maps UDP `internal_port` of `client_ip` for
/// `lease`: the same external port if it is free, else any port the gateway picks.
pub(super) async fn map(
    client_ip: Ipv4Addr,
    internal_port: u16,
    lease: Duration,
) -> Result<UpnpMapping, PortmapError> {
    let mut options = SearchOptions::default();
    options.bind_addr = SocketAddr::from((client_ip, 0));
    options.timeout = Some(SEARCH_TIMEOUT);
    options.single_search_timeout = Some(SEARCH_TIMEOUT);
    let gateway = search_gateway(options).await.map_err(upnp_error)?;
    let ip = gateway.get_external_ip().await.map_err(upnp_error)?;
    let internal = SocketAddr::from((client_ip, internal_port));
    let secs = lease_secs(lease);
    let port = match gateway
        .add_port(
            PortMappingProtocol::UDP,
            internal_port,
            internal,
            secs,
            DESCRIPTION,
        )
        .await
    {
        Ok(()) => internal_port,
        Err(e) => {
            tracing::debug!(error = %e, "UPnP: the same port is not free; asking for any");
            gateway
                .add_any_port(PortMappingProtocol::UDP, internal, secs, DESCRIPTION)
                .await
                .map_err(upnp_error)?
        }
    };
    Ok(UpnpMapping {
        gateway,
        internal,
        external: SocketAddr::new(ip, port),
        lease,
        expires: Instant::now() + lease,
    })
}

impl UpnpMapping {
    /// Asks for the same mapping again (UPnP has no separate renewal).
    pub(super) async fn renew(&mut self) -> Result<(), PortmapError> {
        self.gateway
            .add_port(
                PortMappingProtocol::UDP,
                self.external.port(),
                self.internal,
                lease_secs(self.lease),
                DESCRIPTION,
            )
            .await
            .map_err(upnp_error)?;
        self.expires = Instant::now() + self.lease;
        Ok(())
    }

    /// `DeletePortMapping`; true if the gateway confirmed it.
    pub(super) async fn delete(self) -> bool {
        let removed = self
            .gateway
            .remove_port(PortMappingProtocol::UDP, self.external.port())
            .await;
        if let Err(e) = &removed {
            tracing::info!(error = %e, "UPnP: the mapping was not deleted; its lease ends it");
        }
        removed.is_ok()
    }

    /// Keeps renewing at half the lease until a renewal fails past expiry; returns then.
    pub(super) async fn maintain(&mut self) {
        loop {
            let left = self.expires.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left / 2).await;
            if let Err(e) = self.renew().await {
                tracing::info!(error = %e, "UPnP: renewal failed; trying again");
                if left < Duration::from_secs(4) {
                    tokio::time::sleep(left).await;
                    return;
                }
            }
        }
    }
}
