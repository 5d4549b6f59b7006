//! `p2p_client::rendezvous::RendezvousClient` against the real rendezvous server on loopback:
//! presence events, introductions with offers, declines, keepalives, logins elsewhere and
//! device keys. The server's TLS key is given to the client exactly (`ServerTrust::Exact`).

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod loopback;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use loopback::CHEAP;
use p2p_client::rendezvous::{
    CancelReason, ClientConfig, Event, LoginSession, NatKind, Offer, OutReason, RendezvousClient,
    Role,
};
use p2p_client::tls::ServerTrust;
use p2p_servers::RendezvousHandle;
use p2p_servers::tls::ServerTls;
use shared::identity::Fingerprint;
use shared::rendezvous::{Presence, RendezvousConfig, UserName};

static NEXT: AtomicU32 = AtomicU32::new(0);

struct Server {
    handle: Option<RendezvousHandle>,
    db: PathBuf,
}

impl Server {
    fn start(config: RendezvousConfig) -> Server {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let db = std::env::temp_dir().join(format!("p2p-client-lib-{}-{n}.db", std::process::id()));
        let config = RendezvousConfig {
            min_kdf: CHEAP,
            switchboard_addr: Some("127.0.0.1:1865".parse().unwrap()),
            switchboard_fingerprint: Some(Fingerprint([7; 32])),
            ..config
        };
        let tls = ServerTls::ephemeral().unwrap();
        let options = loopback::rendezvous(loopback::any_port(), db.clone(), config, tls);
        let handle = RendezvousHandle::start(options).unwrap();
        Server {
            handle: Some(handle),
            db,
        }
    }

    fn addr(&self) -> String {
        self.handle.as_ref().unwrap().local_addr().to_string()
    }

    /// A connection that trusts exactly the server's key.
    async fn connect(&self) -> RendezvousClient {
        let trust = ServerTrust::Exact(self.handle.as_ref().unwrap().fingerprint());
        let config = ClientConfig {
            min_kdf: CHEAP,
            ..ClientConfig::default()
        };
        RendezvousClient::connect_with(&self.addr(), &trust, config)
            .await
            .unwrap()
    }

    /// A registered, logged-in client that shows `Online`.
    async fn user(&self, name: &str) -> (RendezvousClient, UserName) {
        let user = UserName::parse(name).unwrap();
        let client = self.connect().await;
        client
            .register(&user, name.as_bytes(), CHEAP)
            .await
            .unwrap();
        client.login(&user, name.as_bytes()).await.unwrap();
        client.set_status(Presence::Online).await.unwrap();
        (client, user)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
        loopback::remove_database(&self.db);
    }
}

/// The next event that is not a presence push.
async fn next_non_presence(client: &RendezvousClient) -> Event {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), client.next_event())
            .await
            .unwrap()
            .unwrap();
        if !matches!(event, Event::Presence { .. }) {
            return event;
        }
    }
}

/// Alice and Bob, online and mutual contacts.
async fn friends(server: &Server) -> [(RendezvousClient, UserName); 2] {
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    alice.0.add_contact(&bob.1).await.unwrap();
    bob.0.add_contact(&alice.1).await.unwrap();
    [alice, bob]
}

fn offer(key: u8, nat: NatKind, port: u16) -> Offer {
    Offer {
        key: [key; 32],
        nat: Some(nat),
        alloc: None,
        candidates: vec![
            format!("host/10.0.0.{key}:{port}").parse().unwrap(),
            format!("srflx/[2001:db8::{key}]:{port}").parse().unwrap(),
        ],
    }
}

#[tokio::test]
async fn an_answered_invitation_introduces_both_peers_with_each_others_offer() {
    let server = Server::start(RendezvousConfig::default());
    let [(alice, _), (bob, bob_name)] = friends(&server).await;
    let alice_offer = offer(1, NatKind::PortRestricted, 40000);
    let bob_offer = offer(2, NatKind::FullCone, 50000);

    let sid = alice.invite(&bob_name, &alice_offer).await.unwrap();
    let Event::Ring { sid: rung, from } = next_non_presence(&bob).await else {
        panic!("no RNG");
    };
    assert_eq!((rung, from.as_str()), (sid, "alice"));
    bob.answer(sid, &bob_offer).await.unwrap();

    let Event::Introduced(to_alice) = next_non_presence(&alice).await else {
        panic!("no ITR for alice");
    };
    let Event::Introduced(to_bob) = next_non_presence(&bob).await else {
        panic!("no ITR for bob");
    };
    assert_eq!((to_alice.sid, to_bob.sid), (sid, sid));
    assert_eq!(
        (to_alice.role, to_bob.role),
        (Role::Initiator, Role::Responder)
    );
    assert_eq!(to_alice.peer.as_str(), "bob");
    assert_eq!(to_alice.offer, bob_offer);
    assert_eq!(to_bob.offer, alice_offer);
    assert_eq!(to_alice.start, Duration::from_millis(250));
    assert_eq!(
        to_alice.switchboard,
        Some("127.0.0.1:1865".parse().unwrap())
    );
    assert_eq!(to_alice.switchboard_fingerprint, Some(Fingerprint([7; 32])));
    let (a, b) = (to_alice.ticket.unwrap(), to_bob.ticket.unwrap());
    assert_ne!(a, b, "one ticket per peer");
}

/// The client's offers and the server's parser speak one vocabulary: every `nat=`, `alloc=` and
/// candidate kind the client can write passes the server's checks, and what the server writes
/// back in `ITR` parses with the client's parser to the same offer.
#[tokio::test]
async fn every_offer_word_passes_the_server_both_ways() {
    use p2p_client::rendezvous::{Allocation, CandidateKind};
    let server = Server::start(RendezvousConfig::default());
    let [(alice, _), (bob, bob_name)] = friends(&server).await;
    for (i, nat) in NatKind::ALL.iter().enumerate() {
        let mut sent = offer(1, *nat, 40000);
        sent.alloc = Some(Allocation::ALL[i % Allocation::ALL.len()]);
        sent.candidates = CandidateKind::ALL
            .iter()
            .map(|&kind| p2p_client::rendezvous::Candidate {
                kind,
                addr: format!("10.0.0.1:{}", 1000 + i).parse().unwrap(),
            })
            .collect();
        let sid = alice.invite(&bob_name, &sent).await.unwrap();
        let Event::Ring { .. } = next_non_presence(&bob).await else {
            panic!("no RNG");
        };
        bob.answer(sid, &offer(2, NatKind::Unknown, 1))
            .await
            .unwrap();
        let Event::Introduced(to_bob) = next_non_presence(&bob).await else {
            panic!("no ITR for bob");
        };
        let Event::Introduced(_) = next_non_presence(&alice).await else {
            panic!("no ITR for alice");
        };
        assert_eq!(to_bob.offer, sent, "{nat}");
    }
}

#[tokio::test]
async fn a_declined_invitation_is_cancelled_for_the_inviter() {
    let server = Server::start(RendezvousConfig::default());
    let [(alice, _), (bob, bob_name)] = friends(&server).await;
    let sid = alice
        .invite(&bob_name, &offer(1, NatKind::Unknown, 1))
        .await
        .unwrap();
    assert!(matches!(next_non_presence(&bob).await, Event::Ring { .. }));
    bob.decline(sid).await.unwrap();
    assert_eq!(
        next_non_presence(&alice).await,
        Event::Cancelled {
            sid,
            reason: CancelReason::Declined
        }
    );
}

#[tokio::test]
async fn inviting_someone_who_is_not_a_mutual_contact_is_user_offline() {
    let server = Server::start(RendezvousConfig::default());
    let (alice, _) = server.user("alice").await;
    let (_carol, carol) = server.user("carol").await;
    alice.add_contact(&carol).await.unwrap();
    let e = alice
        .invite(&carol, &offer(1, NatKind::Open, 1))
        .await
        .unwrap_err();
    assert!(e.is_user_offline(), "{e:?}");
}

#[tokio::test]
async fn presence_changes_arrive_as_events() {
    let server = Server::start(RendezvousConfig::default());
    let [(alice, _), (bob, bob_name)] = friends(&server).await;
    bob.set_status(Presence::Away).await.unwrap();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), alice.next_event())
            .await
            .unwrap()
            .unwrap();
        if let Event::Presence {
            name,
            presence: Presence::Away,
            initial: false,
        } = event
        {
            assert_eq!(name, bob_name);
            break;
        }
    }
    bob.logout().await;
    loop {
        let event = alice.next_event().await.unwrap();
        if event
            == (Event::Presence {
                name: bob_name.clone(),
                presence: Presence::Offline,
                initial: false,
            })
        {
            break;
        }
    }
}

#[tokio::test]
async fn the_client_answers_keepalives_by_itself() {
    let server = Server::start(RendezvousConfig {
        ping_interval: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(2500),
        ..RendezvousConfig::default()
    });
    let (alice, _) = server.user("alice").await;
    // Silent for longer than the idle timeout: only the automatic QNG keeps us in. A fixed
    // wait on purpose: the idle timer (2.5 s) must run out, nearly twice, with nothing sent by
    // the test; there is no event to await, the point is that none comes.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(alice.close_reason(), None);
    alice.ping().await.unwrap();
    assert_eq!(server.handle.as_ref().unwrap().online_count(), 1);
}

#[tokio::test]
async fn a_login_of_the_same_session_replaces_the_first_and_another_session_does_not() {
    let server = Server::start(RendezvousConfig::default());
    let (first, alice) = server.user("alice").await;
    first.register_device(&[1; 32]).await.unwrap();
    // Another session of the same device (a one-shot command): nothing happens to the first.
    let trust = ServerTrust::Exact(server.handle.as_ref().unwrap().fingerprint());
    let config = ClientConfig {
        session: Some(LoginSession::random()),
        min_kdf: CHEAP,
        ..ClientConfig::default()
    };
    let other = RendezvousClient::connect_with(&server.addr(), &trust, config)
        .await
        .unwrap();
    other.login(&alice, b"alice").await.unwrap();
    other.register_device(&[1; 32]).await.unwrap();
    other.contacts().await.unwrap();
    first.contacts().await.unwrap();
    // This process's session again (a reconnect): the stale first one is replaced.
    let second = server.connect().await;
    second.login(&alice, b"alice").await.unwrap();
    second.register_device(&[1; 32]).await.unwrap();
    assert_eq!(
        next_non_presence(&first).await,
        Event::LoggedOut(OutReason::OtherLogin)
    );
    let e = first.contacts().await.unwrap_err();
    assert!(e.is_closed(), "{e:?}");
    assert!(e.to_string().contains("logged in elsewhere"), "{e}");
    second.contacts().await.unwrap();
    other.contacts().await.unwrap();
}

#[tokio::test]
async fn wrong_password_is_auth_failed_and_the_third_closes_the_connection() {
    let server = Server::start(RendezvousConfig::default());
    let (_, alice) = server.user("alice").await;
    let client = server.connect().await;
    for attempt in 1..=3 {
        let e = client.login(&alice, b"wrong").await.unwrap_err();
        assert!(e.is_auth_failed(), "attempt {attempt}: {e:?}");
    }
    assert_eq!(
        next_non_presence(&client).await,
        Event::LoggedOut(OutReason::TooManyErrors)
    );
    assert!(
        client
            .login(&alice, b"alice")
            .await
            .unwrap_err()
            .is_closed()
    );
}

#[tokio::test]
async fn device_keys_are_registered_and_handed_to_contacts_only() {
    let server = Server::start(RendezvousConfig::default());
    let [(alice, alice_name), (bob, bob_name)] = friends(&server).await;
    let (carol, _) = server.user("carol").await;
    assert!(alice.device_keys(&bob_name).await.unwrap().is_empty());
    bob.register_device(&[2; 32]).await.unwrap();
    assert_eq!(alice.device_keys(&bob_name).await.unwrap(), vec![[2; 32]]);
    // A second device of bob's comes first.
    let second = server.connect().await;
    second.login(&bob_name, b"bob").await.unwrap();
    second.register_device(&[3; 32]).await.unwrap();
    assert_eq!(
        alice.device_keys(&bob_name).await.unwrap(),
        vec![[3; 32], [2; 32]]
    );
    // Carol is nobody's contact: no keys for her.
    let e = carol.device_keys(&bob_name).await.unwrap_err();
    assert!(e.is_user_offline(), "{e:?}");
    let _ = alice_name;
}

#[tokio::test]
async fn a_server_with_another_key_is_refused() {
    let server = Server::start(RendezvousConfig::default());
    let trust = ServerTrust::Exact(Fingerprint([1; 32]));
    let e = RendezvousClient::connect(&server.addr(), &trust)
        .await
        .err()
        .unwrap();
    assert!(e.is_closed(), "{e:?}");
    assert!(e.to_string().contains("not the expected"), "{e}");
}
