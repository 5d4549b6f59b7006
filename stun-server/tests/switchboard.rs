// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

//! The switchboard relay over TLS on 127.0.0.1, each test with its own switchboard on a free
//! port and its own in-memory certificate.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use p2p_servers::switchboard::{SbCodec, SwitchboardHandle, SwitchboardOptions};
use p2p_servers::tls::{any_server_name, pinned_client_config};
use shared::rendezvous::{SessionId, Ticket, UserName};
use shared::switchboard::{ErrorCode, Frame, SwitchboardConfig, VERSION};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;

type Client = Framed<TlsStream<TcpStream>, SbCodec>;

/// Every wait in these tests is bounded by this.
const PATIENCE: Duration = Duration::from_secs(10);

fn options(config: SwitchboardConfig) -> SwitchboardOptions {
    SwitchboardOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        config,
        ..SwitchboardOptions::default()
    }
}

fn start(options: SwitchboardOptions) -> SwitchboardHandle {
    SwitchboardHandle::start(options).expect("switchboard starts on loopback")
}

/// Grants both tickets of session `n` (users `a<n>` and `b<n>`); returns the session id and the
/// two ticket values.
fn grant_pair(sb: &SwitchboardHandle, n: u8) -> (SessionId, [u8; 16], [u8; 16]) {
    let session = SessionId([n; 16]);
    let (ta, tb) = (
        [n, 0xa0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
        [n ^ 0xff; 16],
    );
    let a = UserName::parse(&format!("a{n}")).unwrap();
    let b = UserName::parse(&format!("b{n}")).unwrap();
    let expires = Instant::now() + Duration::from_secs(60);
    for (value, user, peer) in [(ta, a.clone(), b.clone()), (tb, b, a)] {
        sb.grant(Ticket {
            value,
            session,
            user,
            peer,
            expires,
        });
    }
    (session, ta, tb)
}

/// A TLS connection to `sb` that trusts only its key.
async fn tls(sb: &SwitchboardHandle) -> TlsStream<TcpStream> {
    let stream = TcpStream::connect(sb.local_addr()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let connector = TlsConnector::from(pinned_client_config(sb.fingerprint()));
    connector.connect(any_server_name(), stream).await.unwrap()
}

async fn connect(sb: &SwitchboardHandle) -> Client {
    Framed::new(tls(sb).await, SbCodec::default())
}

async fn next(client: &mut Client) -> Option<Frame> {
    tokio::time::timeout(PATIENCE, client.next())
        .await
        .expect("a frame or a close in time")
        .map(|r| r.unwrap())
}

/// Connects and sends `JOIN`; returns the client and the switchboard's answer.
async fn join(sb: &SwitchboardHandle, session: SessionId, ticket: [u8; 16]) -> (Client, Frame) {
    let mut client = connect(sb).await;
    let join = Frame::Join {
        version: VERSION,
        session,
        ticket,
    };
    client.send(join).await.unwrap();
    let answer = next(&mut client).await.expect("an answer to JOIN");
    (client, answer)
}

/// Both peers of session `n`, joined.
async fn joined_pair(sb: &SwitchboardHandle, n: u8) -> (Client, Client) {
    let (session, ta, tb) = grant_pair(sb, n);
    let (mut a, answer) = join(sb, session, ta).await;
    assert_eq!(
        answer,
        Frame::Joined {
            peer_present: false
        }
    );
    let (b, answer) = join(sb, session, tb).await;
    assert_eq!(answer, Frame::Joined { peer_present: true });
    assert_eq!(next(&mut a).await, Some(Frame::PeerJoined));
    (a, b)
}

/// The client gets `ERROR code` and then the connection closes.
async fn assert_refused(client: &mut Client, first: Frame, code: ErrorCode) {
    assert!(
        matches!(&first, Frame::Error { code: c, .. } if *c == code),
        "expected ERROR {code}, got {first:?}"
    );
    assert_eq!(next(client).await, None, "closed after the ERROR");
}

fn payload(side: u8, i: usize) -> Bytes {
    let len = (i * 37) % 1500;
    (0..len)
        .map(|k| (k as u8) ^ (i as u8) ^ side)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn two_peers_exchange_a_thousand_frames_each_way_in_order() {
    let sb = start(options(SwitchboardConfig::default()));
    let (a, b) = joined_pair(&sb, 1).await;
    let run = |client: Client, side: u8| async move {
        let (mut tx, mut rx) = client.split();
        let send = async move {
            for i in 0..1000 {
                tx.feed(Frame::Data(payload(side, i))).await.unwrap();
            }
            tx.flush().await.unwrap();
            tx
        };
        let receive = async move {
            for i in 0..1000 {
                let frame = tokio::time::timeout(PATIENCE, rx.next()).await.unwrap();
                let got = frame.unwrap().unwrap();
                assert_eq!(got, Frame::Data(payload(side ^ 1, i)), "frame {i}");
            }
            rx
        };
        tokio::join!(send, receive)
    };
    let ((_a_tx, _a_rx), (_b_tx, _b_rx)) = tokio::join!(run(a, 0), run(b, 1));
    let stats = sb.stats();
    assert_eq!(stats.core.relayed_frames, 2000);
    assert_eq!(stats.core.sessions_started, 1);
    assert_eq!(stats.core.rate_dropped, 0);
}

#[tokio::test]
async fn a_wrong_ticket_is_refused_and_closed() {
    let sb = start(options(SwitchboardConfig::default()));
    let (session, ta, _) = grant_pair(&sb, 2);
    let (mut c, answer) = join(&sb, session, [0x77; 16]).await;
    assert_refused(&mut c, answer, ErrorCode::TICKET_REFUSED).await;
    // The right ticket with another session id is refused too, and burnt.
    let (mut c, answer) = join(&sb, SessionId([9; 16]), ta).await;
    assert_refused(&mut c, answer, ErrorCode::TICKET_REFUSED).await;
    let (mut c, answer) = join(&sb, session, ta).await;
    assert_refused(&mut c, answer, ErrorCode::TICKET_REFUSED).await;
    assert_eq!(sb.stats().core.joins_refused, 3);
}

#[tokio::test]
async fn a_used_ticket_is_refused_and_a_leaving_peer_ends_the_session() {
    let sb = start(options(SwitchboardConfig::default()));
    let (session, ta, tb) = grant_pair(&sb, 3);
    let (a, _) = join(&sb, session, ta).await;
    let (mut b, _) = join(&sb, session, tb).await;
    // A third connection with an already used ticket.
    let (mut c, answer) = join(&sb, session, tb).await;
    assert_refused(&mut c, answer, ErrorCode::TICKET_REFUSED).await;
    drop(a);
    assert_eq!(next(&mut b).await, Some(Frame::PeerLeft));
    assert_eq!(next(&mut b).await, None);
    // A cannot come back with its ticket.
    let (mut a, answer) = join(&sb, session, ta).await;
    assert_refused(&mut a, answer, ErrorCode::TICKET_REFUSED).await;
}

#[tokio::test]
async fn no_join_in_time_and_garbage_are_refused() {
    let sb = start(options(SwitchboardConfig {
        join_timeout: Duration::from_millis(200),
        ..SwitchboardConfig::default()
    }));
    let mut idle = connect(&sb).await;
    let first = next(&mut idle).await.unwrap();
    assert_refused(&mut idle, first, ErrorCode::JOIN_TIMEOUT).await;

    let mut garbage = tls(&sb).await;
    garbage.write_all(&[0, 3, 0x42, 1, 2]).await.unwrap();
    garbage.flush().await.unwrap();
    let mut garbage = Framed::new(garbage, SbCodec::default());
    let first = next(&mut garbage).await.unwrap();
    assert_refused(&mut garbage, first, ErrorCode::BAD_FRAME).await;

    let mut early = connect(&sb).await;
    early
        .send(Frame::Data(Bytes::from_static(b"hi")))
        .await
        .unwrap();
    let first = next(&mut early).await.unwrap();
    assert_refused(&mut early, first, ErrorCode::UNEXPECTED).await;
}

#[tokio::test]
async fn a_slow_reader_is_disconnected_without_stalling_another_session() {
    let sb = start(SwitchboardOptions {
        max_queued_bytes: 256 * 1024,
        write_timeout: Duration::from_secs(2),
        ..options(SwitchboardConfig {
            rate: 0,
            ..SwitchboardConfig::default()
        })
    });
    let (flooder, sleeper) = joined_pair(&sb, 4).await;
    let (mut c, mut d) = joined_pair(&sb, 5).await;
    let (mut flood_tx, mut flood_rx) = flooder.split();
    let big = Bytes::from(vec![0xee; 65_000]);
    let flood = async move {
        // At most 1 GB; the sleeper is cut off long before.
        for _ in 0..16_000 {
            if flood_tx.send(Frame::Data(big.clone())).await.is_err() {
                break;
            }
        }
    };
    let flooded = async move {
        let mut last = None;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(PATIENCE, flood_rx.next()).await {
            last = Some(frame);
        }
        last
    };
    let ping_pong = async move {
        let start = Instant::now();
        for i in 0..200u32 {
            let ping = Bytes::copy_from_slice(&i.to_be_bytes());
            c.send(Frame::Data(ping.clone())).await.unwrap();
            assert_eq!(next(&mut d).await, Some(Frame::Data(ping.clone())));
            d.send(Frame::Data(ping.clone())).await.unwrap();
            assert_eq!(next(&mut c).await, Some(Frame::Data(ping)));
        }
        start.elapsed()
    };
    let flood = tokio::spawn(flood);
    let (last, took) = tokio::join!(flooded, ping_pong);
    flood.await.unwrap();
    assert_eq!(
        last,
        Some(Frame::PeerLeft),
        "the flooder learns its peer is gone"
    );
    assert!(
        took < Duration::from_secs(5),
        "the other session was stalled: {took:?}"
    );
    assert!(sb.stats().slow_readers >= 1, "{:?}", sb.stats());
    drop(sleeper);
}

/// A sender faster than its peer's link: the frames that do not fit the peer's queue are
/// dropped and counted (a relay of datagrams drops like a router), the connection stays up, and
/// a control frame still gets through afterwards.
#[tokio::test]
async fn a_receiver_that_reads_slowly_loses_frames_not_its_connection() {
    let sb = start(SwitchboardOptions {
        max_queued_bytes: 128 * 1024,
        write_timeout: Duration::from_secs(5),
        ..options(SwitchboardConfig {
            rate: 0,
            ..SwitchboardConfig::default()
        })
    });
    let (mut fast, mut slow) = joined_pair(&sb, 7).await;
    let frame = Bytes::from(vec![0x5a; 60_000]);
    // 24 MB in one go: far more than the queue and the socket buffers hold.
    for _ in 0..400 {
        fast.feed(Frame::Data(frame.clone())).await.unwrap();
    }
    fast.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Now the slow side reads, a frame at a time, with pauses, but well within the write
    // timeout: it gets some of the frames, not all, and stays connected.
    let mut received = 0usize;
    while let Ok(Some(Ok(Frame::Data(data)))) =
        tokio::time::timeout(Duration::from_millis(500), slow.next()).await
    {
        assert_eq!(data.len(), 60_000);
        received += 1;
    }
    assert!(received > 0 && received < 400, "{received} of 400");
    let stats = sb.stats();
    assert!(stats.queue_dropped > 0, "{stats:?}");
    assert_eq!(stats.slow_readers, 0, "{stats:?}");
    // Both ends are still joined: a frame each way goes through.
    fast.send(Frame::Data(Bytes::from_static(b"still there?")))
        .await
        .unwrap();
    assert_eq!(
        next(&mut slow).await,
        Some(Frame::Data(Bytes::from_static(b"still there?")))
    );
    slow.send(Frame::Data(Bytes::from_static(b"yes")))
        .await
        .unwrap();
    assert_eq!(
        next(&mut fast).await,
        Some(Frame::Data(Bytes::from_static(b"yes")))
    );
}

#[tokio::test]
async fn tickets_can_be_granted_from_another_thread_and_shutdown_tells_clients() {
    let sb = start(options(SwitchboardConfig::default()));
    let granter = sb.granter();
    let session = SessionId([6; 16]);
    std::thread::spawn(move || {
        granter.grant(Ticket {
            value: [0x66; 16],
            session,
            user: UserName::parse("x").unwrap(),
            peer: UserName::parse("y").unwrap(),
            expires: Instant::now() + Duration::from_secs(60),
        });
    })
    .join()
    .unwrap();
    let (mut x, answer) = join(&sb, session, [0x66; 16]).await;
    assert_eq!(
        answer,
        Frame::Joined {
            peer_present: false
        }
    );
    let stats = tokio::task::spawn_blocking(move || sb.shutdown())
        .await
        .unwrap();
    let first = next(&mut x).await.unwrap();
    assert_refused(&mut x, first, ErrorCode::SHUTDOWN).await;
    assert_eq!(stats.core.joins, 1);
    assert_eq!(stats.open_connections, 0);
}
