// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

//! The rendezvous server and the switchboard served on the test's own tokio runtime through
//! their `run` entry points (no runtime or thread of their own), stopped by a shutdown future.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use p2p_servers::rendezvous::{BoundRendezvous, RendezvousOptions};
use p2p_servers::switchboard::{BoundSwitchboard, SbCodec, SwitchboardOptions};
use p2p_servers::tls::{any_server_name, pinned_client_config};
use shared::rendezvous::{SessionId, Ticket, UserName};
use shared::switchboard::{ErrorCode, Frame, VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

/// Every wait in these tests is bounded by this.
const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switchboard_runs_on_the_callers_runtime_until_shutdown() {
    let sb = BoundSwitchboard::bind(SwitchboardOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..SwitchboardOptions::default()
    })
    .unwrap();
    let (addr, fingerprint, granter) = (sb.local_addr(), sb.fingerprint(), sb.granter());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(sb.run(async move {
        let _ = stopped.await;
    }));

    let session = SessionId([7; 16]);
    let ticket = [9; 16];
    granter.grant(Ticket {
        value: ticket,
        session,
        user: UserName::parse("alice").unwrap(),
        peer: UserName::parse("bob").unwrap(),
        expires: Instant::now() + Duration::from_secs(60),
    });
    let stream = TcpStream::connect(addr).await.unwrap();
    let connector = TlsConnector::from(pinned_client_config(fingerprint));
    let tls = connector.connect(any_server_name(), stream).await.unwrap();
    let mut client = Framed::new(tls, SbCodec::default());
    let join = Frame::Join {
        version: VERSION,
        session,
        ticket,
    };
    client.send(join).await.unwrap();
    let answer = tokio::time::timeout(PATIENCE, client.next()).await.unwrap();
    assert_eq!(
        answer.unwrap().unwrap(),
        Frame::Joined {
            peer_present: false
        }
    );

    // Shutdown: the client hears 503 and `run` returns.
    stop.send(()).unwrap();
    let last = tokio::time::timeout(PATIENCE, client.next()).await.unwrap();
    assert!(
        matches!(last, Some(Ok(Frame::Error { code, .. })) if code == ErrorCode::SHUTDOWN),
        "{last:?}"
    );
    tokio::time::timeout(PATIENCE, server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendezvous_runs_on_the_callers_runtime_until_shutdown() {
    let dir = std::env::temp_dir().join(format!("rendezvous-embedded-{}", std::process::id()));
    let server = BoundRendezvous::bind(
        RendezvousOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            db_path: dir.join("rendezvous.db"),
            ..RendezvousOptions::default()
        },
        None,
    )
    .unwrap();
    let (addr, fingerprint) = (server.local_addr(), server.fingerprint());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    let stream = TcpStream::connect(addr).await.unwrap();
    let connector = TlsConnector::from(pinned_client_config(fingerprint));
    let mut tls = connector.connect(any_server_name(), stream).await.unwrap();
    // The answer means the core has registered the connection.
    tls.write_all(b"VER 1 P2P1\r\n").await.unwrap();
    let mut said = Vec::new();
    while !said.ends_with(b"\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(PATIENCE, tls.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        said.push(byte[0]);
    }
    let answer = String::from_utf8_lossy(&said);
    assert_eq!(answer, "VER 1 P2P1\r\n");

    // Shutdown: the client is told `OUT 0 SSD`, the connection closes, and `run` returns.
    stop.send(()).unwrap();
    let mut said = Vec::new();
    // The server closes without a TLS close_notify; what came before it is what counts.
    let _ = tokio::time::timeout(PATIENCE, tls.read_to_end(&mut said))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&said), "OUT 0 SSD\r\n");
    tokio::time::timeout(PATIENCE, server)
        .await
        .unwrap()
        .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
