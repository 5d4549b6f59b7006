//! The worked session of docs/PROTOCOL.md section 10, through the public API only: two clients
//! register, log in with channel-bound SCRAM, register their device keys, add each other, change
//! presence, list contacts, fetch each other's device keys, get introduced, keep alive and log
//! out. Server output goes through the real framing (encode, then the
//! client-side decode), payloads included.

#![allow(clippy::unwrap_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "Instant::now() is the origin of virtual time"
)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::BytesMut;
use shared::identity::Fingerprint;
use shared::rendezvous::scram::{ChannelBinding, MECHANISM, ScramClient, derive_credentials};
use shared::rendezvous::wire::Direction::ToClient;
use shared::rendezvous::wire::{self, Line, TrId};
use shared::rendezvous::{
    ConnId, DirectorySnapshot, Kdf, Output, RendezvousConfig, RendezvousServer, StoreOp, UserName,
};

const KDF: Kdf = Kdf {
    memory_kib: 8,
    iterations: 1,
    lanes: 1,
};

struct World {
    server: RendezvousServer,
    now: Instant,
    /// Bytes the server sent each connection, not yet read.
    inbox: HashMap<ConnId, BytesMut>,
    closed: Vec<ConnId>,
    stored: Vec<StoreOp>,
}

impl World {
    fn pump(&mut self) {
        while let Some(o) = self.server.poll_output() {
            match o {
                Output::Send { conn, line } => {
                    assert!(!self.closed.contains(&conn));
                    wire::encode(&line, self.inbox.entry(conn).or_default(), ToClient).unwrap();
                }
                Output::Close(conn) => self.closed.push(conn),
                Output::Store { op, .. } => self.stored.push(op),
                _ => {}
            }
        }
    }

    /// Every line `conn` has received since the last call, decoded like a client would.
    fn read(&mut self, conn: ConnId) -> Vec<Line> {
        self.pump();
        let buf = self.inbox.entry(conn).or_default();
        let mut lines = Vec::new();
        while let Some(line) = wire::decode(buf, ToClient).unwrap() {
            lines.push(line);
        }
        assert!(buf.is_empty());
        lines
    }

    fn say(&mut self, conn: ConnId, cmd: &str, trid: u32, params: &[&str]) -> Vec<Line> {
        let line = Line::new(cmd, TrId(trid), params.iter().map(|p| p.to_string()));
        self.server.handle_line(self.now, conn, line);
        self.read(conn)
    }

    fn register_and_login(&mut self, conn: ConnId, user: &str, password: &[u8]) -> Vec<Line> {
        // Each TLS session exports its own channel binding; both ends agree on it.
        let binding = ChannelBinding([conn.0 as u8; 32]);
        self.server.handle_connected(
            self.now,
            conn,
            "203.0.113.5:50000".parse().unwrap(),
            binding,
        );
        assert_eq!(self.say(conn, "VER", 1, &["P2P1"])[0].params, ["P2P1"]);
        let c = derive_credentials(password, b"p0sLsixteenbytes", KDF).unwrap();
        let (salt, sk, srv) = (
            B64.encode(&c.salt),
            B64.encode(c.stored_key),
            B64.encode(c.server_key),
        );
        let kdf = KDF.to_string();
        let reg = self.say(conn, "REG", 2, &[user, &kdf, &salt, &sk, &srv]);
        assert_eq!(reg[0].params, [user]);
        assert!(
            matches!(self.stored.last(), Some(StoreOp::CreateUser(r)) if r.name.as_str() == user)
        );

        let mut scram = ScramClient::new(&UserName::parse(user).unwrap(), &[42; 24], &binding)
            .with_min_kdf(cheap_kdf());
        let first = B64.encode(scram.client_first());
        let answer = self.say(conn, "USR", 3, &[MECHANISM, "I", &first]);
        assert_eq!(answer[0].params[..2], [MECHANISM, "S"]);
        let server_first = String::from_utf8(B64.decode(&answer[0].params[2]).unwrap()).unwrap();
        let client_final = scram.handle_server_first(&server_first, password).unwrap();
        let mut lines = self.say(conn, "USR", 4, &[MECHANISM, "S", &B64.encode(client_final)]);
        let ok = lines.remove(0);
        assert_eq!(ok.params[..2], ["OK", user]);
        let server_final = String::from_utf8(B64.decode(&ok.params[2]).unwrap()).unwrap();
        scram.handle_server_final(&server_final).unwrap();
        lines
    }
}

fn texts(lines: &[Line]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let mut out = BytesMut::new();
            wire::encode(l, &mut out, ToClient).unwrap();
            String::from_utf8(out.to_vec())
                .unwrap()
                .trim_end()
                .to_owned()
        })
        .collect()
}

#[test]
fn worked_session() {
    let sbfp = Fingerprint([0x42; 32]);
    let config = RendezvousConfig {
        min_kdf: KDF,
        stun_addr: Some("127.0.0.1:3478".parse().unwrap()),
        switchboard_addr: Some("127.0.0.1:1865".parse().unwrap()),
        switchboard_fingerprint: Some(sbfp),
        ..RendezvousConfig::default()
    };
    let mut w = World {
        server: RendezvousServer::new(config, DirectorySnapshot::default(), [3; 32], [4; 32]),
        now: Instant::now(),
        inbox: HashMap::new(),
        closed: Vec::new(),
        stored: Vec::new(),
    };
    let (alice, bob) = (ConnId(1), ConnId(2));
    let pushes = w.register_and_login(alice, "alice", b"correct horse");
    assert_eq!(
        texts(&pushes),
        [format!(
            "CFG 0 stun=127.0.0.1:3478 sb=127.0.0.1:1865 sbfp={sbfp} ping=30"
        )]
    );
    w.register_and_login(bob, "bob", b"battery staple");
    // Device identity keys.
    let (ka, kb) = (B64.encode([1; 32]), B64.encode([2; 32]));
    assert_eq!(
        texts(&w.say(alice, "DEV", 4, &[&ka])),
        [format!("DEV 4 {ka}")]
    );
    assert_eq!(
        texts(&w.say(bob, "DEV", 4, &[&kb])),
        [format!("DEV 4 {kb}")]
    );
    assert!(matches!(
        w.stored.last(),
        Some(StoreOp::AddDeviceKey { owner, key }) if owner.as_str() == "bob" && *key == [2; 32]
    ));
    assert_eq!(texts(&w.say(alice, "ADC", 5, &["bob"])), ["ADC 5 bob"]);
    assert_eq!(texts(&w.say(alice, "CHG", 6, &["BSY"])), ["CHG 6 BSY"]);
    let lst = w.say(alice, "LST", 7, &[]);
    assert_eq!(lst[0].payload, b"bob FLN C\r\n");
    assert_eq!(texts(&lst), ["LST 7 11\r\nbob FLN C"]);
    assert!(w.read(bob).is_empty());

    // Bob comes online (still invisible to Alice: not mutual), then adds her.
    assert_eq!(texts(&w.say(bob, "CHG", 5, &["NLN"])), ["CHG 5 NLN"]);
    assert!(w.read(alice).is_empty());
    assert_eq!(
        texts(&w.say(bob, "ADC", 6, &["alice"])),
        ["ADC 6 alice", "ILN 0 BSY alice"]
    );
    assert_eq!(texts(&w.read(alice)), ["ILN 0 NLN bob"]);
    assert_eq!(
        texts(&w.say(alice, "KEY", 7, &["bob"])),
        [format!("KEY 7 bob {kb}")]
    );

    // Introduction.
    let a_key = format!("key={ka}");
    let inv = w.say(
        alice,
        "INV",
        8,
        &[
            "bob",
            &a_key,
            "nat=port-restricted",
            "cand=srflx/203.0.113.7:61000",
        ],
    );
    let sid = inv[0].params[1].clone();
    assert_eq!(texts(&w.read(bob)), [format!("RNG 0 {sid} alice")]);
    let b_key = format!("key={kb}");
    let ans = w.say(bob, "ANS", 11, &[&sid, &b_key, "nat=full-cone"]);
    assert_eq!(ans[0].params[0], sid);
    let itr_b = &ans[1];
    assert_eq!(itr_b.params[..3], [sid.as_str(), "alice", "role=responder"]);
    assert_eq!(itr_b.keyed("key"), Some(ka.as_str()));
    assert_eq!(itr_b.keyed("cand"), Some("srflx/203.0.113.7:61000"));
    let itr_a = w.read(alice).remove(0);
    assert_eq!(itr_a.params[..3], [sid.as_str(), "bob", "role=initiator"]);
    assert_eq!(itr_a.keyed("key"), Some(kb.as_str()));
    assert_eq!(itr_a.keyed("start"), Some("250"));
    assert_eq!(itr_a.keyed("sb"), Some("127.0.0.1:1865"));
    assert_eq!(itr_a.keyed("sbfp"), Some(sbfp.to_string().as_str()));
    assert_ne!(itr_a.keyed("ticket"), itr_b.keyed("ticket"));

    // Keepalive, then logout.
    let deadline = w.now + Duration::from_secs(31);
    while let Some(at) = w.server.poll_timeout().filter(|at| *at <= deadline) {
        w.now = at;
        w.server.handle_timeout(at);
    }
    assert_eq!(texts(&w.read(alice)), ["PNG 0"]);
    assert!(w.say(alice, "QNG", 0, &[]).is_empty());
    assert!(w.say(alice, "OUT", 12, &[]).is_empty());
    assert_eq!(w.closed, [alice]);
    assert_eq!(texts(&w.read(bob)), ["PNG 0", "FLN 0 alice"]);
    assert_eq!(
        (w.server.connection_count(), w.server.online_count()),
        (1, 1)
    );
}

/// The cheap KDF the tests register with; the client must be told to accept it.
fn cheap_kdf() -> shared::rendezvous::Kdf {
    shared::rendezvous::Kdf {
        memory_kib: 8,
        iterations: 1,
        lanes: 1,
    }
}
