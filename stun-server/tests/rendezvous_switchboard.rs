// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

//! The rendezvous server and the switchboard wired together by `p2p_servers::services` (the
//! code the binary runs), over TLS on 127.0.0.1: an introduction's tickets work at the
//! switchboard, once each, and the switchboard is the one whose key `sbfp=` names.

mod rendezvous_support;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use p2p_servers::metrics::MetricsSources;
use p2p_servers::rendezvous::RendezvousOptions;
use p2p_servers::services::{self, Services, ServicesOptions};
use p2p_servers::switchboard::{SbCodec, SwitchboardOptions};
use p2p_servers::tls::{ServerTls, any_server_name, pinned_client_config};
use rendezvous_support::{CHEAP, Client, b64, text};
use shared::rendezvous::wire::Line;
use shared::rendezvous::{RendezvousConfig, SessionId};
use shared::switchboard::{ErrorCode, Frame, VERSION};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;

/// Every wait on the switchboard is bounded by this.
const PATIENCE: Duration = Duration::from_secs(10);

/// A database in a directory of its own, removed on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new(tag: &str) -> TempDb {
        let dir = std::env::temp_dir().join(format!("rdv-sb-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDb(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.join("rendezvous.db")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Both services on free ports (the switchboard only if asked for), with a cheap KDF allowed.
fn options(db: &TempDb, switchboard: bool) -> ServicesOptions {
    ServicesOptions {
        rendezvous: RendezvousOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            db_path: db.path(),
            config: RendezvousConfig {
                min_kdf: CHEAP,
                ..RendezvousConfig::default()
            },
            tls: ServerTls::ephemeral().unwrap(),
            ..RendezvousOptions::default()
        },
        switchboard: switchboard.then(|| SwitchboardOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..SwitchboardOptions::default()
        }),
        advertise_switchboard: None,
    }
}

fn start(db: &TempDb, switchboard: bool) -> Services {
    services::start(options(db, switchboard)).unwrap()
}

/// Registers and logs in `name`; returns the client and its `CFG` push.
fn online(services: &Services, name: &str) -> (Client, Line) {
    let mut client = Client::connect(services.rendezvous().local_addr(), services.fingerprint());
    client.register(name, &format!("{name} pw"));
    client.login(name, &format!("{name} pw")).unwrap();
    let cfg = client.wait_for("CFG", |l| l.command.as_str() == "CFG");
    (client, cfg)
}

/// alice and bob, mutual contacts, both online; alice invites bob and he answers. Returns
/// both clients, the session id and both `ITR` pushes.
fn introduce(services: &Services) -> (Client, Client, String, Line, Line) {
    let (mut alice, _) = online(services, "alice");
    let (mut bob, _) = online(services, "bob");
    alice.ok("ADC", &["bob"]);
    bob.ok("ADC", &["alice"]);
    alice.ok("CHG", &["NLN"]);
    bob.ok("CHG", &["NLN"]);
    let alice_key = format!("key={}", b64(&[1; 32]));
    let bob_key = format!("key={}", b64(&[2; 32]));
    let inv = alice.ok("INV", &["bob", &alice_key, "cand=host/127.0.0.1:40000"]);
    let sid = inv.param(1).unwrap().to_owned();
    bob.push("RNG", &[&sid, "alice"]);
    bob.ok("ANS", &[&sid, &bob_key]);
    let itr = |c: &mut Client| c.wait_for("ITR", |l| l.command.as_str() == "ITR");
    let (to_alice, to_bob) = (itr(&mut alice), itr(&mut bob));
    (alice, bob, sid, to_alice, to_bob)
}

fn unhex(text: &str) -> [u8; 16] {
    assert_eq!(text.len(), 32, "{text}");
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

type SbClient = Framed<TlsStream<TcpStream>, SbCodec>;

async fn next(client: &mut SbClient) -> Frame {
    tokio::time::timeout(PATIENCE, client.next())
        .await
        .expect("a frame in time")
        .expect("a frame, not a close")
        .unwrap()
}

/// Connects to the `sb=` of `itr` over TLS, trusting only the key `sbfp=` names, and joins
/// with its ticket; returns the client and the answer.
async fn join(itr: &Line, sid: &str) -> (SbClient, Frame) {
    let sb = itr
        .keyed("sb")
        .unwrap_or_else(|| panic!("no sb= in {}", text(itr)));
    let sbfp = itr
        .keyed("sbfp")
        .unwrap_or_else(|| panic!("no sbfp= in {}", text(itr)))
        .parse()
        .unwrap();
    let ticket = unhex(itr.keyed("ticket").unwrap());
    let tcp = TcpStream::connect(sb).await.unwrap();
    let connector = TlsConnector::from(pinned_client_config(sbfp));
    let stream = connector.connect(any_server_name(), tcp).await.unwrap();
    let mut client = Framed::new(stream, SbCodec::default());
    let join = Frame::Join {
        version: VERSION,
        session: sid.parse::<SessionId>().unwrap(),
        ticket,
    };
    client.send(join).await.unwrap();
    let answer = next(&mut client).await;
    (client, answer)
}

#[tokio::test]
async fn introduced_peers_meet_at_the_switchboard_with_their_tickets() {
    let db = TempDb::new("meet");
    let services = start(&db, true);
    let sb = services.switchboard_addr().unwrap();
    assert_eq!(sb, services.switchboard().unwrap().local_addr());
    assert_ne!(sb.port(), 0);
    let (_, cfg) = online(&services, "carol");
    assert_eq!(cfg.keyed("sb"), Some(sb.to_string().as_str()), "{cfg:?}");
    // The switchboard's key: the one certificate both services present.
    let sbfp = services.switchboard().unwrap().fingerprint();
    assert_eq!(sbfp, services.fingerprint());
    assert_eq!(
        cfg.keyed("sbfp"),
        Some(sbfp.to_string().as_str()),
        "{cfg:?}"
    );

    let (mut alice, mut bob, sid, to_alice, to_bob) = introduce(&services);
    for itr in [&to_alice, &to_bob] {
        assert_eq!(itr.param(0), Some(sid.as_str()));
        assert_eq!(itr.keyed("sb"), Some(sb.to_string().as_str()), "{itr:?}");
        assert_eq!(
            itr.keyed("sbfp"),
            Some(sbfp.to_string().as_str()),
            "{itr:?}"
        );
        assert!(itr.keyed("ticket").is_some(), "{itr:?}");
    }
    assert_ne!(to_alice.keyed("ticket"), to_bob.keyed("ticket"));
    // Both say they are primed; each hears of the other.
    alice.ok("PRM", &[&sid]);
    bob.push("PRM", &[&sid]);
    bob.ok("PRM", &[&sid]);
    alice.push("PRM", &[&sid]);

    let (mut a, answer) = join(&to_alice, &sid).await;
    assert_eq!(
        answer,
        Frame::Joined {
            peer_present: false
        }
    );
    let (mut b, answer) = join(&to_bob, &sid).await;
    assert_eq!(answer, Frame::Joined { peer_present: true });
    assert_eq!(next(&mut a).await, Frame::PeerJoined);

    a.send(Frame::Data(Bytes::from_static(b"hello from alice")))
        .await
        .unwrap();
    assert_eq!(
        next(&mut b).await,
        Frame::Data(Bytes::from_static(b"hello from alice"))
    );
    b.send(Frame::Data(Bytes::from_static(b"hello from bob")))
        .await
        .unwrap();
    assert_eq!(
        next(&mut a).await,
        Frame::Data(Bytes::from_static(b"hello from bob"))
    );

    // A ticket is good for one join.
    let (mut again, answer) = join(&to_alice, &sid).await;
    assert!(
        matches!(answer, Frame::Error { code, .. } if code == ErrorCode::TICKET_REFUSED),
        "{answer:?}"
    );
    let closed = tokio::time::timeout(PATIENCE, again.next()).await.unwrap();
    assert!(!matches!(closed, Some(Ok(Frame::Data(_)))), "{closed:?}");
    // The session itself is untouched.
    a.send(Frame::Data(Bytes::from_static(b"still here")))
        .await
        .unwrap();
    assert_eq!(
        next(&mut b).await,
        Frame::Data(Bytes::from_static(b"still here"))
    );

    // What a metrics scrape reads is current: the three frames' 40 payload bytes, both joins,
    // the three logins and the one introduction.
    let text = MetricsSources::new(None, Some(&services)).render();
    for line in [
        "switchboard_relayed_bytes_total 40",
        "switchboard_relayed_frames_total 3",
        "switchboard_sessions_started_total 1",
        "switchboard_joins_total{outcome=\"ok\"} 2",
        "rendezvous_logins_total{outcome=\"ok\"} 3",
        "rendezvous_introductions_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    assert!(
        !text.contains("stun_"),
        "no STUN server, no STUN series:\n{text}"
    );

    let stats = services.shutdown().unwrap();
    assert_eq!(stats.core.sessions_started, 1);
    assert_eq!(stats.core.joins, 2);
    assert!(stats.core.joins_refused >= 1, "{stats:?}");
}

#[tokio::test]
async fn without_a_switchboard_nothing_advertises_one() {
    let db = TempDb::new("none");
    let services = start(&db, false);
    assert!(services.switchboard().is_none());
    assert_eq!(services.switchboard_addr(), None);
    let (_alice, _bob, sid, to_alice, to_bob) = introduce(&services);
    for itr in [&to_alice, &to_bob] {
        assert_eq!(itr.param(0), Some(sid.as_str()));
        assert_eq!(itr.keyed("sb"), None, "{itr:?}");
        assert_eq!(itr.keyed("sbfp"), None, "{itr:?}");
        // The ticket is still issued (and harmlessly kept until it expires).
        assert!(itr.keyed("ticket").is_some(), "{itr:?}");
    }
    assert_eq!(services.rendezvous().tickets().len(), 2);
    assert_eq!(services.shutdown(), None);
}

#[test]
fn an_advertised_switchboard_address_is_what_clients_are_told() {
    let db = TempDb::new("adv");
    let services = services::start(ServicesOptions {
        // Port 0: the bound port, on the public address.
        advertise_switchboard: Some("203.0.113.5:0".parse().unwrap()),
        ..options(&db, true)
    })
    .unwrap();
    let bound = services.switchboard().unwrap().local_addr();
    let told = services.switchboard_addr().unwrap();
    assert_eq!(told.to_string(), format!("203.0.113.5:{}", bound.port()));
    let (_, cfg) = online(&services, "alice");
    assert_eq!(cfg.keyed("sb"), Some(told.to_string().as_str()));
    services.shutdown();
}
