//! QUIC over a link's changing path: reliable, congestion-controlled streams between two peers
//! whose packets share the endpoint socket with STUN, punching and the chat session, and travel
//! directly or through the switchboard relay, whichever the link's driver has up.
//!
//! - [`socket`]: the [`quinn::AsyncUdpSocket`] over the path ([`QuicRoute`] out,
//!   [`QuicInbound`] in). QUIC sees one constant peer address, so path changes are invisible
//!   to it.
//! - [`auth`]: mutual TLS 1.3 where each side accepts exactly the certificate whose fingerprint
//!   the peer announced over the authenticated Noise session.
//! - [`QuicLink`]: the endpoint for one link, client or server, and its one connection.
//!
//! Our endpoints never grease the QUIC bit (RFC 9287), so every packet they send starts with
//! 0x40 to 0x7F or 0xC0 to 0xFF, which is how the endpoint socket's demultiplexer
//! (`link::endpoint::classify`) tells QUIC from chat and punching packets.

pub mod auth;
#[cfg(target_os = "linux")]
mod gso;
pub mod socket;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quinn::{
    ConnectionError, Endpoint, EndpointConfig, IdleTimeout, MtuDiscoveryConfig, TokioRuntime,
    TransportConfig, TransportErrorCode, VarInt,
};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

pub use auth::{ALPN, AuthError, CertFingerprint, LinkCertificate, SERVER_NAME};
pub use socket::{INBOUND_QUEUE, LOCAL_ADDR, PEER_ADDR, QuicInbound, QuicPathStats, QuicRoute};

use socket::LinkSocket;

/// The largest UDP payload either side sends or accepts. 1500 (Ethernet) minus 40 (IPv6) minus
/// 8 (UDP): fits a direct path over any Ethernet-sized network in either address family, and
/// far below the relay's 65,000-byte `DATA` limit.
pub const MAX_UDP_PAYLOAD: u16 = 1452;

/// The datagram size QUIC starts with, and falls back to when MTU discovery finds a black
/// hole: QUIC's guaranteed minimum, safe on any path (relay, a direct path just punched, or one
/// behind a tunnel).
pub const INITIAL_MTU: u16 = 1200;

/// How long a connection survives without hearing from the peer. Generous because the driver
/// may need several seconds to notice a dead direct path, fall back to the relay or re-punch;
/// QUIC must not give up on the connection meanwhile.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a quiet connection sends a keep-alive: well inside [`IDLE_TIMEOUT`], and often
/// enough to keep the NAT mappings of a direct path alive (UDP mappings commonly last 30 s or
/// more), without costing anything noticeable (one small packet each way).
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// One stream's receive window (bytes in flight on one stream). A stream reaches 1 GB/s only if
/// this covers the bandwidth-delay product: 8 MiB is 1 GB/s at 8 ms of RTT, far more than a LAN
/// has, and still 100 MB/s at 80 ms on the Internet.
pub const STREAM_RECEIVE_WINDOW: u32 = 8 << 20;

/// The whole connection's receive window: two streams at full speed. It bounds the memory a
/// peer can make us buffer for one link.
pub const RECEIVE_WINDOW: u32 = 16 << 20;

/// How much data sent but not yet acknowledged the connection keeps, across streams: the same
/// bandwidth-delay reasoning as [`RECEIVE_WINDOW`] on the sending side.
pub const SEND_WINDOW: u64 = 16 << 20;

/// How long to wait after MTU discovery hit a black hole before trying again. Shorter than
/// quinn's minute because here a "black hole" is usually a path outage (the driver switching
/// paths), not a real MTU limit, and running at 1200 bytes costs about a sixth of the goodput.
pub const MTU_BLACK_HOLE_COOLDOWN: Duration = Duration::from_secs(10);

/// Which end of the QUIC connection this side is. The link's initiator is the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Connects to the peer.
    Client,
    /// Accepts the peer's connection, and only that one.
    Server,
}

/// Why a link's QUIC connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuicLinkError {
    /// The TLS side could not be configured.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// quinn refused the configuration (a bug, not a network condition).
    #[error("QUIC configuration refused: {0}")]
    Config(#[from] quinn::ConfigError),
    /// The QUIC endpoint could not be created.
    #[error("cannot create the link's QUIC endpoint: {0}")]
    Endpoint(#[source] std::io::Error),
    /// The connection attempt could not even start.
    #[error("cannot start the QUIC connection: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The peer presented a certificate other than the one whose fingerprint it announced
    /// over the chat session; we refused it.
    #[error(
        "the peer's QUIC certificate is not the one it announced over the chat session; connection refused"
    )]
    PeerNotAuthenticated,
    /// The peer refused our certificate: it expected another fingerprint.
    #[error(
        "the peer refused our QUIC certificate (it expected another fingerprint); connection refused"
    )]
    RefusedByPeer,
    /// The handshake failed otherwise (timeout, protocol error, closed by the peer).
    #[error("QUIC handshake with the peer failed: {0}")]
    Handshake(#[source] ConnectionError),
    /// The endpoint was closed before a connection came up.
    #[error("the link's QUIC endpoint is closed")]
    Closed,
}

impl QuicLinkError {
    /// Sorts a handshake failure: a certificate refusal either way gets its own variant.
    fn from_connection(error: ConnectionError) -> QuicLinkError {
        let refused = TransportErrorCode::crypto(auth::REFUSED_ALERT);
        match &error {
            ConnectionError::TransportError(e) if e.code == refused => {
                QuicLinkError::PeerNotAuthenticated
            }
            ConnectionError::ConnectionClosed(c) if c.error_code == refused => {
                QuicLinkError::RefusedByPeer
            }
            _ => QuicLinkError::Handshake(error),
        }
    }
}

/// The transport parameters of a link (see the constants for why each value).
pub fn transport_config() -> TransportConfig {
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD)
        .black_hole_cooldown(MTU_BLACK_HOLE_COOLDOWN);
    let mut config = TransportConfig::default();
    config
        .max_idle_timeout(Some(IdleTimeout::from(VarInt::from_u32(
            // 60 000 ms fits a VarInt by far.
            IDLE_TIMEOUT.as_millis() as u32,
        ))))
        .keep_alive_interval(Some(KEEP_ALIVE))
        .initial_mtu(INITIAL_MTU)
        .min_mtu(INITIAL_MTU)
        .mtu_discovery_config(Some(mtu))
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(VarInt::from_u32(RECEIVE_WINDOW))
        .send_window(SEND_WINDOW);
    config
}

/// The endpoint parameters of a link: no QUIC bit greasing (the demultiplexer relies on it) and
/// datagrams of at most [`MAX_UDP_PAYLOAD`] bytes.
fn endpoint_config() -> Result<EndpointConfig, QuicLinkError> {
    let mut config = EndpointConfig::default();
    config
        .grease_quic_bit(false)
        .max_udp_payload_size(MAX_UDP_PAYLOAD)?;
    Ok(config)
}

/// The QUIC side of one link: an endpoint over the link's path, and its single connection.
///
/// Dropping it stops refusing extra connections; the connection itself lives as long as a
/// [`quinn::Connection`] handle does.
#[derive(Debug)]
pub struct QuicLink {
    role: Role,
    endpoint: Endpoint,
    route: QuicRoute,
    client: Option<quinn::ClientConfig>,
    connection: OnceCell<quinn::Connection>,
    /// Server side: refuses every connection attempt after the first success.
    refuser: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for QuicLink {
    fn drop(&mut self) {
        if let Some(task) = self
            .refuser
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl QuicLink {
    /// Sets up the QUIC endpoint of a link: this side presents `cert`, accepts only the peer
    /// whose certificate fingerprint is `peer_fingerprint` (received over the chat session),
    /// and sends by `route`. Returns the link and the handle the endpoint socket's reader and
    /// the relay task feed the peer's QUIC packets to.
    ///
    /// Must run inside a Tokio runtime: quinn spawns its endpoint task here.
    pub fn new(
        role: Role,
        cert: &LinkCertificate,
        peer_fingerprint: CertFingerprint,
        route: QuicRoute,
    ) -> Result<(QuicLink, QuicInbound), QuicLinkError> {
        let transport = Arc::new(transport_config());
        let (server, client) = match role {
            Role::Server => {
                let crypto = auth::server_crypto(cert, peer_fingerprint)?;
                let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
                // The peer's address is a constant; there is nothing to migrate to.
                server.transport_config(transport).migration(false);
                (Some(server), None)
            }
            Role::Client => {
                let crypto = auth::client_crypto(cert, peer_fingerprint)?;
                let mut client = quinn::ClientConfig::new(Arc::new(crypto));
                client.transport_config(transport);
                (None, Some(client))
            }
        };
        let (socket, inbound) = LinkSocket::new(&route);
        let endpoint = Endpoint::new_with_abstract_socket(
            endpoint_config()?,
            server,
            Arc::new(socket),
            Arc::new(TokioRuntime),
        )
        .map_err(QuicLinkError::Endpoint)?;
        let link = QuicLink {
            role,
            endpoint,
            route,
            client,
            connection: OnceCell::new(),
            refuser: Mutex::new(None),
        };
        Ok((link, inbound))
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The link's connection, set up on the first call (the client connects, the server
    /// accepts) and the same one on later calls. A failed attempt may be retried by calling
    /// again.
    ///
    /// The client's call returns only once the server has accepted the client's certificate
    /// (the server opens and finishes an empty unidirectional stream for that), so a refused
    /// certificate is an error here on both sides rather than on the first stream operation.
    /// Waits as long as the path allows: bound it with a timeout if the peer may never come.
    pub async fn connection(&self) -> Result<quinn::Connection, QuicLinkError> {
        self.connection
            .get_or_try_init(|| async {
                match self.role {
                    Role::Client => self.connect().await,
                    Role::Server => self.accept().await,
                }
            })
            .await
            .cloned()
    }

    async fn connect(&self) -> Result<quinn::Connection, QuicLinkError> {
        let config = self.client.clone().ok_or(QuicLinkError::Closed)?;
        let connection = self
            .endpoint
            .connect_with(config, PEER_ADDR, SERVER_NAME)?
            .await
            .map_err(QuicLinkError::from_connection)?;
        // The server's word that it accepted our certificate (see `connection`).
        let mut accepted = connection
            .accept_uni()
            .await
            .map_err(QuicLinkError::from_connection)?;
        match accepted.read_to_end(0).await {
            Ok(_) => {}
            Err(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e))) => {
                return Err(QuicLinkError::from_connection(e));
            }
            Err(e) => {
                tracing::debug!(error = %e, "QUIC link: bad acceptance stream");
                connection.close(VarInt::from_u32(0), b"bad acceptance stream");
                return Err(QuicLinkError::Handshake(ConnectionError::LocallyClosed));
            }
        }
        tracing::debug!("QUIC link connected");
        Ok(connection)
    }

    async fn accept(&self) -> Result<quinn::Connection, QuicLinkError> {
        let incoming = self.endpoint.accept().await.ok_or(QuicLinkError::Closed)?;
        let connection = incoming.await.map_err(QuicLinkError::from_connection)?;
        let mut accepted = connection
            .open_uni()
            .await
            .map_err(QuicLinkError::from_connection)?;
        // Only fails if the stream is already gone, which the connection's fate reports.
        let _ = accepted.finish();
        let endpoint = self.endpoint.clone();
        let refuser = tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                tracing::debug!("QUIC link: extra connection attempt refused");
                incoming.refuse();
            }
        });
        *self.refuser.lock().unwrap_or_else(PoisonError::into_inner) = Some(refuser);
        tracing::debug!("QUIC link accepted");
        Ok(connection)
    }

    /// The route's datagram counters.
    pub fn stats(&self) -> QuicPathStats {
        self.route.stats()
    }

    /// Closes the connection (if any) with `reason` and waits until the peer has been told or
    /// the close timed out, so that the route can be torn down afterwards.
    pub async fn close(&self, reason: &[u8]) {
        self.endpoint.close(VarInt::from_u32(0), reason);
        self.endpoint.wait_idle().await;
    }
}
