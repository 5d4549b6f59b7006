//! Echo over a direct link: every message and every stream the peer sends comes back.
//!
//! ```text
//! P2P_PASSWORD=... cargo run -p p2p-client --example echo -- SERVER USER PEER
//! ```
//!
//! The peer connects to USER the same way (for instance with `p2p-client chat --peer USER`,
//! whose lines come back, or with a program on [`p2p_client::link::Link`] that opens
//! streams). Logs go to stderr with `RUST_LOG=info`.

use p2p_client::home::Home;
use p2p_client::link::{Account, Link, LinkConfig, LinkEvent, LinkSession};
use p2p_client::rendezvous::ClientConfig;
use p2p_client::tls::ServerTrust;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let (Some(server), Some(user), Some(peer)) = (args.next(), args.next(), args.next()) else {
        anyhow::bail!("usage: echo SERVER USER PEER (password in P2P_PASSWORD)");
    };
    let password = std::env::var("P2P_PASSWORD")?;
    let home = Home::resolve(None)?;
    let account = Account {
        server: &server,
        trust: &ServerTrust::tofu(home.clone()),
        home: &home,
        user: user.parse()?,
        config: ClientConfig::default(),
    };
    let session = LinkSession::login(&account, password.as_bytes()).await?;
    let mut link = Link::connect(&session, &peer.parse()?, LinkConfig::with_streams()).await?;
    let streams = link.quic();
    tokio::spawn(async move {
        let Ok(connection) = streams.await else {
            return;
        };
        // Each stream the peer opens is copied back to it until the peer finishes it.
        while let Ok((mut send, mut recv)) = connection.accept_bi().await {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut recv, &mut send).await;
                let _ = send.finish();
            });
        }
    });
    while let Some(event) = link.next_event().await {
        match event {
            LinkEvent::Message(bytes) => {
                link.send(bytes)?;
            }
            LinkEvent::Path { path, remote } => eprintln!("path: {} {remote}", path.word()),
            LinkEvent::PeerLeft => break,
            _ => {}
        }
    }
    link.close().await?;
    session.logout().await;
    Ok(())
}
