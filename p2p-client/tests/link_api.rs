//! The link library on its own, as a program would use it: two users in one process, each
//! with a `LinkSession`, make a link to each other and use messages, a QUIC stream, the path,
//! the counters and the events, then close.

#![allow(clippy::unwrap_used)]

mod client;
mod loopback;
mod sessions;

use std::time::Duration;

use p2p_client::home::Home;
use p2p_client::link::{Account, Link, LinkConfig, LinkEvent, LinkSession, PathKind};
use p2p_client::rendezvous::ClientConfig;
use p2p_client::tls::ServerTrust;
use sessions::Servers;
use shared::rendezvous::UserName;

async fn next_matching(link: &mut Link, want: impl Fn(&LinkEvent) -> bool) -> LinkEvent {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let event = link.next_event().await.expect("the link ended");
            if want(&event) {
                return event;
            }
        }
    })
    .await
    .expect("no such event within 20 s")
}

/// Logs `user` in to the test servers as a program would (pinning their key in the test home).
async fn login(servers: &Servers, user: &str) -> LinkSession {
    let home = Home::at(&servers.home);
    let account = Account {
        server: &servers.rendezvous.to_string(),
        trust: &ServerTrust::tofu(home.clone()),
        home: &home,
        user: user.parse().unwrap(),
        config: ClientConfig {
            min_kdf: loopback::KDF.parse().unwrap(),
            ..ClientConfig::default()
        },
    };
    LinkSession::login(&account, client::password(user).as_bytes())
        .await
        .unwrap()
}

#[test]
fn a_program_uses_messages_streams_path_and_stats_then_closes() {
    let servers = Servers::start();
    servers.pair("alice", "bob");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (alice, bob): (UserName, UserName) = ("alice".parse().unwrap(), "bob".parse().unwrap());
        let a_session = login(&servers, "alice").await;
        let b_session = login(&servers, "bob").await;
        let mut config = LinkConfig::with_streams();
        config.bind = Some("127.0.0.1:0".parse().unwrap());
        // Alice asks for bob; bob takes whoever asks.
        let (a, b) = tokio::join!(
            Link::connect(&a_session, &bob, config.clone()),
            Link::accept(&b_session, config),
        );
        let (mut a, mut b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.peer(), &bob);
        assert_eq!(b.peer(), &alice);
        // First contact: the peer's key is pinned, then the session starts.
        assert!(matches!(
            a.next_event().await,
            Some(LinkEvent::PeerKeyPinned { .. })
        ));
        assert!(matches!(
            a.next_event().await,
            Some(LinkEvent::Connected { .. })
        ));

        // Messages, both ways, in order; bytes need not be text.
        let first = a.send(b"hello bob".to_vec()).unwrap();
        let second = a.send(vec![0, 159, 255]).unwrap();
        assert_eq!((first, second), (1, 2));
        assert_eq!(b.recv().await.unwrap(), b"hello bob");
        assert_eq!(b.recv().await.unwrap(), vec![0, 159, 255]);
        b.send(b"hi alice".to_vec()).unwrap();
        assert_eq!(a.recv().await.unwrap(), b"hi alice");

        // On loopback punching succeeds: both end direct, and the event says so.
        next_matching(&mut a, |e| {
            matches!(
                e,
                LinkEvent::Path {
                    path: PathKind::Direct,
                    ..
                }
            )
        })
        .await;
        assert_eq!(a.path().unwrap().0, PathKind::Direct);

        // A stream: 4 MiB from alice to bob, finished, read to its end.
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
        let (mut tx, _rx) = a.open_stream().await.unwrap();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            tx.write_all(&data).await.unwrap();
            tx.finish().unwrap();
            tx.stopped().await.ok();
        });
        let (_btx, mut brx) = b.accept_stream().await.unwrap();
        let got = brx.read_to_end(8 << 20).await.unwrap();
        writer.await.unwrap();
        assert!(got == expected, "{} bytes", got.len());

        let stats = a.stats();
        assert!(stats.rtt.is_some(), "{stats:?}");
        assert_eq!(stats.messages_received, 1);
        assert!(stats.messages_delivered >= 2, "{stats:?}");
        assert!(stats.paths.iter().any(|p| p.path == PathKind::Direct));
        let (sent, _) = stats.quic_bytes.unwrap();
        assert!(sent > 4 << 20, "{stats:?}");

        // Closing one side: the other hears that the peer left, and both end cleanly.
        a.close().await.unwrap();
        next_matching(&mut b, |e| *e == LinkEvent::PeerLeft).await;
        b.join().await.unwrap();
        assert!(b.send(b"too late".to_vec()).is_err());
        a_session.logout().await;
        b_session.logout().await;
    });
}

/// Streams on one side only: the side without them refuses at once (`StreamsOff`), the side
/// with them gives up when the peer's QUIC certificate never comes (`PeerHasNoStreams`),
/// instead of waiting forever; messages work all the same.
#[test]
fn streams_asked_of_a_peer_without_them_fail_with_a_typed_error() {
    let servers = Servers::start();
    servers.pair("carol", "dave");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let c_session = login(&servers, "carol").await;
        let d_session = login(&servers, "dave").await;
        let mut with = LinkConfig::with_streams();
        with.bind = Some("127.0.0.1:0".parse().unwrap());
        let mut without = LinkConfig::default();
        without.bind = with.bind;
        let (carol, dave): (UserName, UserName) =
            ("carol".parse().unwrap(), "dave".parse().unwrap());
        let (c, d) = tokio::join!(
            Link::connect(&c_session, &dave, with),
            Link::connect(&d_session, &carol, without),
        );
        let (mut c, mut d) = (c.unwrap(), d.unwrap());
        assert!(matches!(
            d.open_stream().await,
            Err(p2p_client::link::LinkError::StreamsOff)
        ));
        c.send(b"no streams, but messages".to_vec()).unwrap();
        assert_eq!(d.recv().await.unwrap(), b"no streams, but messages");
        let waited = std::time::Instant::now();
        let refused = tokio::time::timeout(Duration::from_secs(20), c.open_stream())
            .await
            .expect("open_stream gives up by itself");
        assert!(
            matches!(refused, Err(p2p_client::link::LinkError::PeerHasNoStreams)),
            "{refused:?}"
        );
        assert!(
            waited.elapsed() < Duration::from_secs(15),
            "{:?}",
            waited.elapsed()
        );
        c.close().await.unwrap();
        d.join().await.unwrap();
        c_session.logout().await;
        d_session.logout().await;
    });
}
