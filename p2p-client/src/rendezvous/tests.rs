//! The client against a scripted fake server (over TLS, with a certificate made for the test):
//! request/answer matching, pushes in between, keepalives, timeouts, error answers, a server
//! that cannot prove the password verifier, the channel binding, device keys, and the trust
//! modes (an exact key, a pinned key, a changed key).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use shared::identity::Fingerprint;
use shared::rendezvous::scram::{
    ServerExchange, TLS_EXPORTER_LABEL, derive_credentials, parse_client_first,
};
use shared::rendezvous::{Kdf, Line, Presence, TrId, UserName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::codec::Framed;

use crate::home::Home;
use crate::tls::{KeyTrust, ServerTrust};

use codecs::line::{LineCodec, Side};

use super::*;

/// The fake server reads requests and writes answers and pushes with the server's codec.
type Fake = Framed<TlsStream<TcpStream>, LineCodec>;

/// A TLS identity for a fake server: its certificate chain, key and key fingerprint.
struct Identity {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
    fingerprint: Fingerprint,
}

impl Identity {
    fn new() -> Identity {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = made.cert.der().clone();
        let fingerprint = Fingerprint::of_certificate(cert.as_ref()).unwrap();
        Identity {
            cert,
            key: made.signing_key.serialize_der(),
            fingerprint,
        }
    }

    fn acceptor(&self) -> TlsAcceptor {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], key)
            .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }
}

/// The server side of the `tls-exporter` channel binding.
fn server_binding(fake: &Fake) -> ChannelBinding {
    let (_, conn) = fake.get_ref().get_ref();
    ChannelBinding(
        conn.export_keying_material([0u8; 32], TLS_EXPORTER_LABEL, None)
            .unwrap(),
    )
}

/// Accepts one TLS connection and answers `VER`.
async fn accept(listener: &TcpListener, identity: &Identity) -> Fake {
    let (stream, _) = listener.accept().await.unwrap();
    let tls = identity.acceptor().accept(stream).await.unwrap();
    let mut fake = Framed::new(tls, LineCodec::new(Side::Server));
    let ver = fake.next().await.unwrap().unwrap().unwrap();
    assert_eq!(
        (ver.command.as_str(), ver.params.clone()),
        ("VER", vec!["P2P1".to_owned()])
    );
    fake.send(Line::new("VER", ver.trid, ["P2P1".to_owned()]))
        .await
        .unwrap();
    fake
}

const CHEAP: Kdf = Kdf {
    memory_kib: 8,
    iterations: 1,
    lanes: 1,
};

fn quick() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_millis(500),
        min_kdf: CHEAP,
        ..ClientConfig::default()
    }
}

/// A client connected to a fake server that has answered `VER`.
async fn pair() -> (RendezvousClient, Fake) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let identity = Identity::new();
    let trust = ServerTrust::Exact(identity.fingerprint);
    let (client, fake) = tokio::join!(
        RendezvousClient::connect_with(&addr, &trust, quick()),
        accept(&listener, &identity)
    );
    let client = client.unwrap();
    assert_eq!(client.server_key().fingerprint, identity.fingerprint);
    assert_eq!(client.server_key().trust, KeyTrust::Exact);
    (client, fake)
}

async fn recv(fake: &mut Fake) -> Line {
    tokio::time::timeout(Duration::from_secs(5), fake.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap()
}

fn line(cmd: &str, trid: TrId, params: &[&str]) -> Line {
    Line::new(cmd, trid, params.iter().map(|p| p.to_string()))
}

#[tokio::test]
async fn pushes_during_a_request_become_events_and_pings_are_answered() {
    let (client, mut fake) = pair().await;
    let server = async {
        let chg = recv(&mut fake).await;
        assert_eq!(chg.params, ["BSY"]);
        fake.send(line("NLN", TrId::PUSH, &["IDL", "bob"]))
            .await
            .unwrap();
        fake.send(line("PNG", TrId::PUSH, &[])).await.unwrap();
        let qng = recv(&mut fake).await;
        assert_eq!((qng.command.as_str(), qng.trid), ("QNG", TrId::PUSH));
        fake.send(line("FLN", TrId::PUSH, &["carol"]))
            .await
            .unwrap();
        fake.send(line("CHG", chg.trid, &["BSY"])).await.unwrap();
    };
    let (result, ()) = tokio::join!(client.set_status(Presence::Busy), server);
    result.unwrap();
    let bob = UserName::parse("bob").unwrap();
    assert_eq!(
        client.next_event().await,
        Some(Event::Presence {
            name: bob,
            presence: Presence::Idle,
            initial: false
        })
    );
    assert!(matches!(
        client.next_event().await,
        Some(Event::Presence {
            presence: Presence::Offline,
            ..
        })
    ));
}

#[tokio::test]
async fn answers_are_matched_by_trid_and_errors_are_typed() {
    let (client, mut fake) = pair().await;
    let bob = UserName::parse("bob").unwrap();
    let carol = UserName::parse("carol").unwrap();
    let server = async {
        let first = recv(&mut fake).await;
        let second = recv(&mut fake).await;
        assert_ne!(first.trid, second.trid);
        // Answered out of order: the second request first.
        let (add, block) = if first.command.as_str() == "ADC" {
            (first, second)
        } else {
            (second, first)
        };
        fake.send(line("218", block.trid, &["already", "blocked"]))
            .await
            .unwrap();
        fake.send(line("ADC", add.trid, &["bob"])).await.unwrap();
    };
    let (added, blocked, ()) = tokio::join!(client.add_contact(&bob), client.block(&carol), server);
    added.unwrap();
    let e = blocked.unwrap_err();
    assert_eq!(e.server_code(), Some(code::ALREADY_BLOCKED));
    assert_eq!(e.to_string(), "already blocked (218)");
}

#[tokio::test]
async fn a_silent_server_gives_a_timeout_naming_the_request() {
    let (client, _fake) = pair().await;
    let e = client.contacts().await.unwrap_err();
    assert!(
        matches!(e, RendezvousError::Timeout { command: "LST", .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("no answer to LST"), "{e}");
}

#[tokio::test]
async fn contact_list_payload_arrives_with_its_answer() {
    let (client, mut fake) = pair().await;
    let server = async {
        let lst = recv(&mut fake).await;
        let mut answer = line("LST", lst.trid, &[]);
        answer.payload = b"bob NLN C\r\ncarol FLN B\r\n".to_vec();
        fake.send(answer).await.unwrap();
    };
    let (list, ()) = tokio::join!(client.contacts(), server);
    let list = list.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0].presence, list[0].contact),
        (Presence::Online, true)
    );
    assert_eq!((list[1].contact, list[1].blocked), (false, true));
}

#[tokio::test]
async fn out_then_close_is_reported_to_events_and_to_later_requests() {
    let (client, mut fake) = pair().await;
    fake.send(line("OUT", TrId::PUSH, &["OTH"])).await.unwrap();
    drop(fake);
    assert_eq!(
        client.next_event().await,
        Some(Event::LoggedOut(OutReason::OtherLogin))
    );
    assert_eq!(client.next_event().await, None);
    let e = client.ping().await.unwrap_err();
    assert!(e.is_closed(), "{e:?}");
    assert_eq!(
        e.to_string(),
        "the server logged us out: logged in elsewhere (OTH)"
    );
}

/// Runs the server side of a login; `forge` replaces the server-final-message.
async fn serve_login(fake: &mut Fake, password: &[u8], forge: Option<&str>) {
    let binding = server_binding(fake);
    let creds = derive_credentials(password, b"0123456789abcdef", CHEAP).unwrap();
    let first = recv(fake).await;
    assert_eq!(first.param(0), Some("SCRAM-SHA-256-ARGON2ID"));
    assert_eq!(first.param(1), Some("I"));
    let client_first = String::from_utf8(b64::decode(first.param(2).unwrap()).unwrap()).unwrap();
    let parsed = parse_client_first(&client_first).unwrap();
    let exchange = ServerExchange::new(&parsed, &[5; 18], &creds.salt, CHEAP);
    let server_first = b64::encode(exchange.server_first().as_bytes());
    fake.send(line(
        "USR",
        first.trid,
        &["SCRAM-SHA-256-ARGON2ID", "S", &server_first],
    ))
    .await
    .unwrap();
    let second = recv(fake).await;
    let client_final = String::from_utf8(b64::decode(second.param(2).unwrap()).unwrap()).unwrap();
    let server_final = match forge {
        Some(forged) => forged.to_owned(),
        None => exchange
            .verify_client_final(&client_final, &creds, &binding)
            .unwrap(),
    };
    let server_final = b64::encode(server_final.as_bytes());
    fake.send(line("USR", second.trid, &["OK", "alice", &server_final]))
        .await
        .unwrap();
    fake.send(line("CFG", TrId::PUSH, &["stun=127.0.0.1:3478", "ping=30"]))
        .await
        .unwrap();
    fake.send(line("ILN", TrId::PUSH, &["BSY", "bob"]))
        .await
        .unwrap();
}

#[tokio::test]
async fn login_returns_the_cfg_and_queues_the_initial_presence() {
    let (client, mut fake) = pair().await;
    let alice = UserName::parse("Alice").unwrap();
    let (info, ()) = tokio::join!(
        client.login(&alice, b"pencil"),
        serve_login(&mut fake, b"pencil", None)
    );
    let info = info.unwrap();
    assert_eq!(info.user.as_str(), "alice");
    assert_eq!(info.stun, Some("127.0.0.1:3478".parse().unwrap()));
    assert_eq!(info.switchboard, None);
    assert!(matches!(
        client.next_event().await,
        Some(Event::Presence {
            presence: Presence::Busy,
            initial: true,
            ..
        })
    ));
}

#[tokio::test]
async fn a_server_that_cannot_prove_the_verifier_is_hung_up_on() {
    let (client, mut fake) = pair().await;
    let alice = UserName::parse("alice").unwrap();
    let forged = format!("v={}", b64::encode(&[0; 32]));
    let (info, ()) = tokio::join!(
        client.login(&alice, b"pencil"),
        serve_login(&mut fake, b"pencil", Some(&forged))
    );
    let e = info.unwrap_err();
    assert!(
        matches!(
            e,
            RendezvousError::Scram(ScramError::ServerSignatureMismatch)
        ),
        "{e:?}"
    );
    // The client closed the connection: the fake reads end of stream.
    let end = tokio::time::timeout(Duration::from_secs(5), fake.next())
        .await
        .unwrap();
    assert!(end.is_none(), "{end:?}");
    assert!(client.ping().await.unwrap_err().is_closed());
}

#[tokio::test]
async fn logout_sends_out_and_waits_for_the_close() {
    let (client, mut fake) = pair().await;
    let server = async {
        let out = recv(&mut fake).await;
        assert_eq!(out.command.as_str(), "OUT");
        assert_ne!(out.trid, TrId::PUSH);
        drop(fake);
    };
    let started = std::time::Instant::now();
    tokio::join!(client.logout(), server);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "logout waited for its timeout"
    );
    assert_eq!(client.close_reason(), Some(CloseReason::ClosedByClient));
}

#[tokio::test]
async fn offline_is_not_a_state_to_set_and_bad_offers_are_not_sent() {
    let (client, _fake) = pair().await;
    let e = client.set_status(Presence::Offline).await.unwrap_err();
    assert!(matches!(e, RendezvousError::InvalidArgument(_)), "{e:?}");
    let mut offer = Offer::new([1; 32]);
    offer.candidates = vec!["host/10.0.0.1:1".parse().unwrap(); 9];
    let bob = UserName::parse("bob").unwrap();
    let e = client.invite(&bob, &offer).await.unwrap_err();
    assert!(matches!(e, RendezvousError::InvalidArgument(_)), "{e:?}");
}

#[tokio::test]
async fn primed_is_a_request_and_the_peers_primed_push_an_event() {
    let (client, mut fake) = pair().await;
    let sid = parse_session_id("00112233445566778899aabbccddeeff").unwrap();
    let server = async {
        let prm = recv(&mut fake).await;
        assert_eq!(
            (prm.command.as_str(), prm.params.clone()),
            ("PRM", vec![sid.to_string()])
        );
        // The peer's push may come before our answer.
        fake.send(line("PRM", TrId::PUSH, &[&sid.to_string()]))
            .await
            .unwrap();
        fake.send(line("PRM", prm.trid, &[&sid.to_string()]))
            .await
            .unwrap();
        let again = recv(&mut fake).await;
        fake.send(line("217", again.trid, &["user", "offline"]))
            .await
            .unwrap();
    };
    let (result, ()) = tokio::join!(
        async {
            client.primed(sid).await.unwrap();
            client.primed(sid).await
        },
        server
    );
    assert_eq!(result.unwrap_err().server_code(), Some(code::USER_OFFLINE));
    assert_eq!(client.next_event().await, Some(Event::PeerPrimed { sid }));
}

#[tokio::test]
async fn the_login_is_bound_to_this_tls_session() {
    let (client, mut fake) = pair().await;
    let alice = UserName::parse("alice").unwrap();
    let server = async {
        let first = recv(&mut fake).await;
        let client_first =
            String::from_utf8(b64::decode(first.param(2).unwrap()).unwrap()).unwrap();
        assert!(
            client_first.starts_with("p=tls-exporter,,n=alice,r="),
            "{client_first}"
        );
        // A man in the middle has another TLS session, hence another binding.
        let parsed = parse_client_first(&client_first).unwrap();
        let creds = derive_credentials(b"pencil", b"0123456789abcdef", CHEAP).unwrap();
        let exchange = ServerExchange::new(&parsed, &[5; 18], &creds.salt, CHEAP);
        let server_first = b64::encode(exchange.server_first().as_bytes());
        fake.send(line(
            "USR",
            first.trid,
            &["SCRAM-SHA-256-ARGON2ID", "S", &server_first],
        ))
        .await
        .unwrap();
        let second = recv(&mut fake).await;
        let client_final =
            String::from_utf8(b64::decode(second.param(2).unwrap()).unwrap()).unwrap();
        let ours = server_binding(&fake);
        assert!(
            exchange
                .verify_client_final(&client_final, &creds, &ours)
                .is_ok()
        );
        let theirs = ChannelBinding([9; 32]);
        assert!(
            exchange
                .verify_client_final(&client_final, &creds, &theirs)
                .is_err()
        );
        fake.send(line("911", second.trid, &["authentication", "failed"]))
            .await
            .unwrap();
    };
    let (result, ()) = tokio::join!(client.login(&alice, b"pencil"), server);
    assert!(result.unwrap_err().is_auth_failed());
}

#[tokio::test]
async fn device_keys_are_registered_and_looked_up() {
    let (client, mut fake) = pair().await;
    let bob = UserName::parse("bob").unwrap();
    let server = async {
        // With this process's login session, the same every time.
        let dev = recv(&mut fake).await;
        assert_eq!(dev.command.as_str(), "DEV");
        let session = LoginSession::of_process().to_string();
        assert_eq!(dev.params, [b64::encode(&[3; 32]), session.clone()]);
        fake.send(line("DEV", dev.trid, &[&b64::encode(&[3; 32]), &session]))
            .await
            .unwrap();
        // A server from before login sessions refuses the second parameter: the key alone.
        let dev = recv(&mut fake).await;
        assert_eq!(dev.params, [b64::encode(&[3; 32]), session]);
        fake.send(line("201", dev.trid, &["invalid", "parameter"]))
            .await
            .unwrap();
        let dev = recv(&mut fake).await;
        assert_eq!(dev.params, [b64::encode(&[3; 32])]);
        fake.send(line("DEV", dev.trid, &[&b64::encode(&[3; 32])]))
            .await
            .unwrap();
        let key = recv(&mut fake).await;
        assert_eq!(
            (key.command.as_str(), key.params.clone()),
            ("KEY", vec!["bob".to_owned()])
        );
        let (k1, k2) = (b64::encode(&[1; 32]), b64::encode(&[2; 32]));
        fake.send(line("KEY", key.trid, &["bob", &k1, &k2]))
            .await
            .unwrap();
        let none = recv(&mut fake).await;
        fake.send(line("KEY", none.trid, &["bob"])).await.unwrap();
        let hidden = recv(&mut fake).await;
        fake.send(line("217", hidden.trid, &[])).await.unwrap();
        let bad = recv(&mut fake).await;
        fake.send(line("KEY", bad.trid, &["bob", "AAAA"]))
            .await
            .unwrap();
    };
    let (keys, ()) = tokio::join!(
        async {
            client.register_device(&[3; 32]).await.unwrap();
            client.register_device(&[3; 32]).await.unwrap();
            let keys = client.device_keys(&bob).await.unwrap();
            let none = client.device_keys(&bob).await.unwrap();
            let hidden = client.device_keys(&bob).await.unwrap_err();
            let bad = client.device_keys(&bob).await.unwrap_err();
            (keys, none, hidden, bad)
        },
        server
    );
    let (keys, none, hidden, bad) = keys;
    assert_eq!(keys, vec![[1; 32], [2; 32]]);
    assert!(none.is_empty());
    assert!(hidden.is_user_offline(), "{hidden:?}");
    assert!(matches!(bad, RendezvousError::Unexpected(_)), "{bad:?}");
}

/// A home under the temp dir, removed on drop.
struct TempHome(std::path::PathBuf);

impl TempHome {
    fn new(tag: &str) -> TempHome {
        use rand::RngCore;
        TempHome(std::env::temp_dir().join(format!(
            "p2p-client-{tag}-{}-{:x}",
            std::process::id(),
            rand::rngs::OsRng.next_u64()
        )))
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn a_server_is_pinned_on_first_use_and_a_changed_key_is_refused_before_sending() {
    let temp = TempHome::new("pin");
    let home = Home::at(&temp.0);
    let trust = ServerTrust::pin_only(home.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let identity = Identity::new();
    for expected in [KeyTrust::PinnedNow, KeyTrust::Pinned] {
        let (client, _fake) = tokio::join!(
            RendezvousClient::connect_with(&addr, &trust, quick()),
            accept(&listener, &identity)
        );
        let key = client.unwrap().server_key().clone();
        assert_eq!(
            (key.fingerprint, key.trust),
            (identity.fingerprint, expected)
        );
        assert_eq!(key.server, addr);
    }
    assert_eq!(
        home.known_server(&addr).unwrap(),
        Some(identity.fingerprint)
    );
    // Another key on the same address: the handshake is refused, nothing reaches the server.
    let other = Identity::new();
    let server = async {
        let (stream, _) = listener.accept().await.unwrap();
        let accepted = other.acceptor().accept(stream).await;
        assert!(accepted.is_err(), "the client refused the handshake");
    };
    let (client, ()) = tokio::join!(
        RendezvousClient::connect_with(&addr, &trust, quick()),
        server
    );
    let Err(e) = client else {
        panic!("connected to a server with another key");
    };
    assert!(e.is_server_key_changed(), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&identity.fingerprint.to_string())
            && text.contains(&other.fingerprint.to_string())
            && text.contains("known_servers")
            && !text.contains('\n'),
        "{text}"
    );
    // The pin did not move.
    assert_eq!(
        home.known_server(&addr).unwrap(),
        Some(identity.fingerprint)
    );
}

#[tokio::test]
async fn a_strict_ca_refuses_a_certificate_it_did_not_sign() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let identity = Identity::new();
    let pem = |der: &CertificateDer<'_>| {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let body: Vec<String> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            body.join("\n")
        )
    };
    let temp = TempHome::new("ca");
    std::fs::create_dir_all(&temp.0).unwrap();
    let ca_file = temp.0.join("ca.pem");
    // The self-signed certificate is its own root; it names "localhost", not the IP.
    std::fs::write(&ca_file, pem(&identity.cert)).unwrap();
    let trust = ServerTrust::from_ca_file(&ca_file).unwrap();
    let by_name = format!("localhost:{}", addr.port());
    let (client, _fake) = tokio::join!(
        RendezvousClient::connect_with(&by_name, &trust, quick()),
        accept(&listener, &identity)
    );
    assert_eq!(client.unwrap().server_key().trust, KeyTrust::Ca);
    let other = Identity::new();
    let server = async {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = other.acceptor().accept(stream).await;
    };
    let (client, ()) = tokio::join!(
        RendezvousClient::connect_with(&by_name, &trust, quick()),
        server
    );
    let e = client.err().unwrap();
    assert!(matches!(e, RendezvousError::Tls(_)), "{e:?}");
    std::fs::write(&ca_file, "not pem").unwrap();
    assert!(ServerTrust::from_ca_file(&ca_file).is_err());
}
