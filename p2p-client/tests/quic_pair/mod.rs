//! A quinn client/server pair on 127.0.0.1 for the transfer and tunnel tests.
//!
//! The server has a fresh self-signed rcgen certificate, and the client trusts exactly that
//! certificate as its root: real TLS 1.3 verification, no verifier that skips checks.

#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, TransportConfig, VarInt};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

const ALPN: &[u8] = b"p2p-test";

/// Two connected endpoints. Keep it alive for as long as the connections are used.
pub struct QuicPair {
    /// The side that connected.
    pub client: Connection,
    /// The side that accepted.
    pub server: Connection,
    client_endpoint: Endpoint,
    server_endpoint: Endpoint,
}

impl QuicPair {
    /// Closes both connections and waits until the endpoints are idle.
    pub async fn shutdown(self) {
        self.client.close(VarInt::from_u32(0), b"done");
        self.server.close(VarInt::from_u32(0), b"done");
        self.client_endpoint.wait_idle().await;
        self.server_endpoint.wait_idle().await;
    }
}

fn transport() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    // Room for bulk transfers on loopback and for many tunnelled connections at once.
    t.stream_receive_window(VarInt::from_u32(8 << 20));
    t.receive_window(VarInt::from_u32(32 << 20));
    t.send_window(32 << 20);
    t.max_concurrent_bidi_streams(VarInt::from_u32(512));
    Arc::new(t)
}

/// The client's own TLS provider (ring, X25519 first).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    p2p_client::tls::provider()
}

/// A connected pair with a fresh certificate.
pub async fn pair() -> QuicPair {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = made.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(made.signing_key.serialize_der());

    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())
        .unwrap();
    server_tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut server_config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls).unwrap()));
    server_config.transport_config(transport());

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut client_config =
        quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls).unwrap()));
    client_config.transport_config(transport());

    let localhost = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let server_endpoint = Endpoint::server(server_config, localhost).unwrap();
    let server_addr = server_endpoint.local_addr().unwrap();
    let client_endpoint = Endpoint::client(localhost).unwrap();
    let connecting = client_endpoint
        .connect_with(client_config, server_addr, "localhost")
        .unwrap();
    let accept = async {
        let incoming = server_endpoint.accept().await.unwrap();
        incoming.await.unwrap()
    };
    let (client, server) = tokio::join!(connecting, accept);
    QuicPair {
        client: client.unwrap(),
        server,
        client_endpoint,
        server_endpoint,
    }
}
