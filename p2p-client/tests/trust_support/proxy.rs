//! A man in the middle for tests: a TCP proxy on loopback between the client and a real
//! server, in one of two modes that can be switched between connections.
//!
//! - [`Mode::Forward`]: copies bytes both ways, as a router on the path would; meanwhile
//!   [`Proxy::inject`] writes bytes of the attacker's choice into every open stream towards the
//!   server, as an attacker on the path who waited for the login to finish would.
//! - [`Mode::Terminate`]: ends the client's TLS with a certificate of its own, opens its own
//!   TLS connection to the server (accepting any certificate), and copies the plaintext both
//!   ways, keeping what the client sent: a TLS-terminating man in the middle.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use shared::identity::Fingerprint;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::serve_in_background;

/// What the proxy does with the next connections.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Copy bytes both ways.
    Forward,
    /// Terminate TLS with the proxy's own certificate.
    Terminate,
}

/// What the proxy saw.
#[derive(Default, Debug)]
pub struct Seen {
    /// Bytes the client sent, as the proxy read them (ciphertext, or plaintext in
    /// [`Mode::Terminate`]).
    pub from_client: Vec<u8>,
    /// Bytes the server sent, as the proxy read them.
    pub from_server: Vec<u8>,
    /// Injections written into a stream towards the server.
    pub injected: usize,
    /// One sender per open connection, for [`Proxy::inject`].
    injectors: Vec<tokio::sync::mpsc::UnboundedSender<Vec<u8>>>,
    /// TLS handshakes with a client that failed ([`Mode::Terminate`]).
    pub failed_handshakes: usize,
    /// Bumped by [`Proxy::set_mode`]. A connection records bytes only while the generation it
    /// was accepted under is current: a connection of the previous mode may still be
    /// draining (the exiting client's encrypted close_notify arrives after the switch), and
    /// its bytes must not show up among what the next mode saw.
    generation: u64,
}

/// A running proxy; stops with the test process (its runtime lives on a detached thread).
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The fingerprint of the proxy's own certificate.
    pub fingerprint: Fingerprint,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Seen>>,
}

impl Proxy {
    /// Starts a proxy on 127.0.0.1 (a free port) in front of `upstream`, whose TLS key has
    /// `upstream_key` (the proxy's own onward connection trusts exactly that key).
    pub fn start(upstream: SocketAddr, upstream_key: Fingerprint, mode: Mode) -> Proxy {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("self-signed certificate");
        let cert_der = CertificateDer::from(cert.cert.der().to_vec());
        let fingerprint = Fingerprint::of_certificate(&cert_der).expect("fingerprint");
        let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der()).expect("key");
        let provider = p2p_client::tls::provider();
        let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_no_client_auth()
            .with_single_cert(vec![cert_der], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let connector =
            tokio_rustls::TlsConnector::from(p2p_servers::tls::pinned_client_config(upstream_key));

        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let mode = Arc::new(Mutex::new(mode));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (task_mode, task_seen) = (mode.clone(), seen.clone());
        serve_in_background(std_listener, move |listener| async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let mode = task_mode.lock().expect("mode").clone();
                let generation = task_seen.lock().expect("seen").generation;
                let (seen, acceptor, connector) =
                    (task_seen.clone(), acceptor.clone(), connector.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    match mode {
                        Mode::Forward => relay(client, server, seen, generation).await,
                        Mode::Terminate => {
                            let client = match acceptor.accept(client).await {
                                Ok(tls) => tls,
                                Err(_) => {
                                    seen.lock().expect("seen").failed_handshakes += 1;
                                    return;
                                }
                            };
                            let name = ServerName::try_from("localhost").expect("name");
                            let Ok(server) = connector.connect(name, server).await else {
                                return;
                            };
                            relay(client, server, seen, generation).await
                        }
                    }
                });
            }
        });
        Proxy {
            addr,
            fingerprint,
            mode,
            seen,
        }
    }

    /// Switches the mode for the next connections and forgets what was seen so far.
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
        let mut seen = self.seen.lock().expect("seen");
        seen.generation += 1;
        seen.from_client.clear();
        seen.from_server.clear();
    }

    /// Writes `bytes` into every open client-to-server stream.
    pub fn inject(&self, bytes: &[u8]) {
        let seen = self.seen.lock().expect("seen");
        for injector in &seen.injectors {
            let _ = injector.send(bytes.to_vec());
        }
    }

    /// What the proxy saw so far.
    pub fn seen<T>(&self, read: impl FnOnce(&Seen) -> T) -> T {
        read(&self.seen.lock().expect("seen"))
    }
}

/// Copies both ways until either side closes; records what passes, and writes what
/// [`Proxy::inject`] hands it towards the server.
async fn relay<C, S>(client: C, server: S, seen: Arc<Mutex<Seen>>, generation: u64)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut client_rd, client_wr) = tokio::io::split(client);
    let (mut server_rd, mut server_wr) = tokio::io::split(server);
    let client_wr = Arc::new(tokio::sync::Mutex::new(client_wr));
    let (inject_tx, mut inject_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    seen.lock().expect("seen").injectors.push(inject_tx);
    let down_seen = seen.clone();
    let down = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match server_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            {
                let mut seen = down_seen.lock().expect("seen");
                if seen.generation == generation {
                    seen.from_server.extend_from_slice(&buf[..n]);
                }
            }
            if client_wr.lock().await.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_wr.lock().await.shutdown().await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = client_rd.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                {
                    let mut seen = seen.lock().expect("seen");
                    if seen.generation == generation {
                        seen.from_client.extend_from_slice(&buf[..n]);
                    }
                }
                if server_wr.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            Some(bytes) = inject_rx.recv() => {
                if server_wr.write_all(&bytes).await.is_err() {
                    break;
                }
                seen.lock().expect("seen").injected += 1;
            }
        }
    }
    let _ = server_wr.shutdown().await;
    let _ = down.await;
}
