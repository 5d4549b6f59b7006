// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]
#![allow(
    clippy::disallowed_methods,
    reason = "Instant::now() is the origin of virtual time"
)]

//! Whole chat sessions in virtual time: two [`ChatSession`]s joined by deterministic links
//! with seeded loss, duplication, delay and jitter (hence reordering), path switches, and an
//! adversary that forges, corrupts and replays packets.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use shared::chat::{
    ChatConfig, ChatError, ChatEvent, ChatSession, ChatTiming, MessageId, Role, StaticKeypair,
    TAG_HANDSHAKE_INIT, TAG_HANDSHAKE_RESPONSE, TAG_TRANSPORT, is_chat_packet, session_tag,
};
use shared::rng::SplitMix64;

const MS: Duration = Duration::from_millis(1);
/// Livelock guard: no scenario needs anywhere near this many steps.
const MAX_STEPS: u64 = 2_000_000;

fn keypair(byte: u8) -> StaticKeypair {
    StaticKeypair::from_random_bytes([byte; 32]).unwrap()
}

fn config(
    role: Role,
    me: &StaticKeypair,
    peer: &StaticKeypair,
    sid: &[u8],
    seed: u64,
) -> ChatConfig {
    let mut seed32 = [0u8; 32];
    seed32[..8].copy_from_slice(&seed.to_be_bytes());
    ChatConfig::new(role, me.secret.clone(), peer.public, sid.to_vec(), seed32)
}

/// How a link mistreats packets.
#[derive(Clone, Copy, Debug)]
struct LinkSpec {
    /// Percent of packets dropped.
    loss: u64,
    /// Percent of packets delivered twice.
    dup: u64,
    delay: Duration,
    /// Extra uniform delay in 0..jitter per copy: reorders packets sent close together.
    jitter: Duration,
}

/// A link with `loss` and `dup` percent, `delay_ms` plus up to `jitter_ms` of delay.
const fn spec(loss: u64, dup: u64, delay_ms: u64, jitter_ms: u64) -> LinkSpec {
    let (delay, jitter) = (
        Duration::from_millis(delay_ms),
        Duration::from_millis(jitter_ms),
    );
    LinkSpec {
        loss,
        dup,
        delay,
        jitter,
    }
}

const PERFECT: LinkSpec = spec(0, 0, 10, 0);

fn lossy(loss: u64) -> LinkSpec {
    spec(loss, 5, 20, 15)
}

/// A packet in flight: (arrival, send order, bytes, forged by the adversary).
type Flight = Reverse<(Instant, u64, Vec<u8>, bool)>;

/// One direction of one path.
struct Link {
    spec: LinkSpec,
    rng: SplitMix64,
    queue: BinaryHeap<Flight>,
    order: u64,
}

impl Link {
    fn new(spec: LinkSpec, seed: u64) -> Self {
        Self {
            spec,
            rng: SplitMix64::new(seed),
            queue: BinaryHeap::new(),
            order: 0,
        }
    }

    fn percent(&mut self, p: u64) -> bool {
        self.rng.next_u64() % 100 < p
    }

    fn push(&mut self, at: Instant, bytes: Vec<u8>, forged: bool) {
        self.order += 1;
        self.queue.push(Reverse((at, self.order, bytes, forged)));
    }

    fn send(&mut self, now: Instant, bytes: Vec<u8>) {
        if self.percent(self.spec.loss) {
            return;
        }
        let copies = if self.percent(self.spec.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let extra = self.rng.next_u64() % (self.spec.jitter.as_micros() as u64 + 1);
            let at = now + self.spec.delay + Duration::from_micros(extra);
            self.push(at, bytes.clone(), false);
        }
    }

    /// Holds back everything in flight by `extra` (a path degrading while we leave it).
    fn delay_all(&mut self, extra: Duration) {
        let old = std::mem::take(&mut self.queue);
        self.queue = old
            .into_iter()
            .map(|Reverse((at, o, b, f))| Reverse((at + extra, o, b, f)))
            .collect();
    }

    fn next_at(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, ..))| *at)
    }

    fn pop_due(&mut self, now: Instant) -> Option<(Vec<u8>, bool)> {
        if self.next_at()? > now {
            return None;
        }
        self.queue
            .pop()
            .map(|Reverse((_, _, bytes, forged))| (bytes, forged))
    }
}

/// Something the application does at a given instant.
enum Action {
    Send(Vec<u8>),
    /// Send on path `.0` from now on, and hold back what is in flight on the old path by `.1`.
    SwitchPath(usize, Duration),
}

struct Peer {
    s: ChatSession,
    path: usize,
    script: VecDeque<(Instant, Action)>,
    sent: Vec<(MessageId, Vec<u8>)>,
    received: Vec<(MessageId, Vec<u8>)>,
    delivered: Vec<MessageId>,
    /// Events other than `Message` and `Delivered`.
    events: Vec<ChatEvent>,
    /// handle_datagram errors by variant, for honest and forged packets together.
    errors: BTreeMap<String, u64>,
    /// Packets this peer accepted, for replaying later.
    accepted: Vec<Vec<u8>>,
}

impl Peer {
    fn new(s: ChatSession) -> Self {
        Self {
            s,
            path: 0,
            script: VecDeque::new(),
            sent: Vec::new(),
            received: Vec::new(),
            delivered: Vec::new(),
            events: Vec::new(),
            errors: BTreeMap::new(),
            accepted: Vec::new(),
        }
    }

    fn collect_events(&mut self) {
        while let Some(e) = self.s.poll_event() {
            match e {
                ChatEvent::Message { id, bytes } => self.received.push((id, bytes)),
                ChatEvent::Delivered(id) => self.delivered.push(id),
                other => self.events.push(other),
            }
        }
    }

    fn count(&self, event: &ChatEvent) -> usize {
        self.events.iter().filter(|e| *e == event).count()
    }
}

/// Corrupts and forges packets in flight.
struct Adversary {
    rng: SplitMix64,
    /// Percent of honest packets that get a bit-flipped twin and a random forgery.
    rate: u64,
    forged: u64,
}

struct Sim {
    now: Instant,
    peers: [Peer; 2],
    /// `links[d][path]`: direction 0 is peer 0 to peer 1.
    links: [Vec<Link>; 2],
    adversary: Option<Adversary>,
    /// Packets that were in flight on a path when a peer switched away from it.
    left_in_flight: usize,
    steps: u64,
}

impl Sim {
    fn new(a: ChatConfig, b: ChatConfig, paths: &[LinkSpec], seed: u64) -> Self {
        let now = Instant::now();
        let mut rng = SplitMix64::new(seed);
        let mut links = [Vec::new(), Vec::new()];
        for dir in &mut links {
            for spec in paths {
                dir.push(Link::new(*spec, rng.next_u64()));
            }
        }
        let a = Peer::new(ChatSession::new(a, now).unwrap());
        let b = Peer::new(ChatSession::new(b, now).unwrap());
        Self {
            now,
            peers: [a, b],
            links,
            adversary: None,
            left_in_flight: 0,
            steps: 0,
        }
    }

    fn drain(&mut self) {
        for i in 0..2 {
            let path = self.peers[i].path;
            while let Some(p) = self.peers[i].s.poll_transmit(self.now) {
                assert!(p.len() <= 1200, "packet of {} bytes", p.len());
                assert!(is_chat_packet(&p));
                assert_eq!(session_tag(&p), Some(self.peers[i].s.session_tag()));
                if let Some(adv) = &mut self.adversary {
                    if adv.rng.next_u64() % 100 < adv.rate {
                        let mut flipped = p.clone();
                        let bit = adv.rng.next_u64() as usize % (flipped.len() * 8);
                        flipped[bit / 8] ^= 1 << (bit % 8);
                        let mut random = p[..9].to_vec();
                        random.resize(p.len().max(33), 0);
                        adv.rng.fill(&mut random[9..]);
                        let at = self.now + MS * (adv.rng.next_u64() % 50) as u32;
                        self.links[i][path].push(at, flipped, true);
                        self.links[i][path].push(at, random, true);
                        adv.forged += 2;
                    }
                }
                self.links[i][path].send(self.now, p);
            }
            self.peers[i].collect_events();
        }
    }

    fn deliver(&mut self, to: usize, bytes: Vec<u8>, forged: bool) {
        let peer = &mut self.peers[to];
        match peer.s.handle_datagram(self.now, &bytes) {
            Ok(()) => {
                assert!(!forged, "forged packet accepted: {bytes:?}");
                peer.accepted.push(bytes);
            }
            Err(e) => *peer.errors.entry(format!("{e:?}")).or_default() += 1,
        }
    }

    fn act(&mut self, i: usize, action: Action) {
        match action {
            Action::Send(msg) => {
                let id = self.peers[i].s.send_message(self.now, &msg).unwrap();
                self.peers[i].sent.push((id, msg));
            }
            Action::SwitchPath(to, old_path_extra_delay) => {
                let old = self.peers[i].path;
                self.left_in_flight += self.links[i][old].queue.len();
                self.links[i][old].delay_all(old_path_extra_delay);
                self.peers[i].path = to;
            }
        }
    }

    /// One jump of virtual time to the next thing that happens; false when nothing will.
    fn step(&mut self) -> bool {
        self.drain();
        let timers = self.peers.iter().filter_map(|p| p.s.poll_timeout());
        let scripts = self
            .peers
            .iter()
            .filter_map(|p| p.script.front().map(|(t, _)| *t));
        let arrivals = self.links.iter().flatten().filter_map(Link::next_at);
        let Some(next) = timers.chain(scripts).chain(arrivals).min() else {
            return false;
        };
        self.now = self.now.max(next);
        for i in 0..2 {
            while self.peers[i]
                .script
                .front()
                .is_some_and(|(t, _)| *t <= self.now)
            {
                let (_, action) = self.peers[i].script.pop_front().unwrap();
                self.act(i, action);
            }
        }
        for dir in 0..2 {
            for path in 0..self.links[dir].len() {
                while let Some((bytes, forged)) = self.links[dir][path].pop_due(self.now) {
                    self.deliver(1 - dir, bytes, forged);
                }
            }
        }
        for p in &mut self.peers {
            if p.s.poll_timeout().is_some_and(|t| t <= self.now) {
                p.s.handle_timeout(self.now);
            }
        }
        self.drain();
        self.steps += 1;
        assert!(self.steps < MAX_STEPS, "livelock? {} steps", self.steps);
        true
    }

    /// Runs until `done` holds; panics if it does not within `limit` of virtual time.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Sim) -> bool) {
        let deadline = self.now + limit;
        while !done(self) {
            assert!(
                self.now <= deadline,
                "not done by the deadline; steps {}",
                self.steps
            );
            assert!(self.step(), "nothing left to happen and not done");
        }
    }

    /// Runs for `span` of virtual time.
    fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        while self.now < end && self.step() {}
    }

    fn established(&self) -> bool {
        self.peers.iter().all(|p| p.s.is_established())
    }
}

fn pair_configs(sid: &[u8], seed: u64) -> (ChatConfig, ChatConfig) {
    let (a, b) = (keypair(1), keypair(2));
    (
        config(Role::Initiator, &a, &b, sid, seed),
        config(Role::Responder, &b, &a, sid, seed ^ 0xFFFF),
    )
}

/// Message `i`: mostly short text, every 97th long enough to need several chunks.
fn message(i: usize, rng: &mut SplitMix64) -> Vec<u8> {
    let mut m = format!("message {i}: ").into_bytes();
    let extra = if i % 97 == 0 {
        2500 + (rng.next_u64() % 2000)
    } else {
        rng.next_u64() % 80
    };
    m.extend((0..extra).map(|k| b'a' + ((k + i as u64) % 26) as u8));
    m
}

/// Schedules `count` messages on peer `i`, one every `gap`, starting at `start`.
fn script_messages(
    sim: &mut Sim,
    i: usize,
    count: usize,
    start: Instant,
    gap: Duration,
    seed: u64,
) {
    let mut rng = SplitMix64::new(seed);
    for k in 0..count {
        sim.peers[i]
            .script
            .push_back((start + gap * k as u32, Action::Send(message(k, &mut rng))));
    }
}

/// Everything `from` sent arrived at `to` exactly once, in order, and `from` heard about it.
fn assert_stream_intact(sim: &Sim, from: usize, to: usize) {
    let sent = &sim.peers[from].sent;
    let got = &sim.peers[to].received;
    assert_eq!(got.len(), sent.len(), "message count");
    for (k, ((sid, sbytes), (gid, gbytes))) in sent.iter().zip(got).enumerate() {
        assert_eq!((sid, gid), (&MessageId(k as u64), &MessageId(k as u64)));
        assert!(sbytes == gbytes, "message {k} differs");
    }
    let delivered = sim.peers[from].delivered.clone();
    assert_eq!(
        delivered,
        (0..sent.len() as u64).map(MessageId).collect::<Vec<_>>()
    );
    assert_eq!(sim.peers[from].s.unacked_count(), 0);
}

/// Peer 1 received `ab` messages and peer 0 `ba`, and both senders know it.
fn all_done(ab: usize, ba: usize) -> impl Fn(&Sim) -> bool {
    move |sim: &Sim| {
        let [a, b] = &sim.peers;
        b.received.len() >= ab
            && a.delivered.len() >= ab
            && a.received.len() >= ba
            && b.delivered.len() >= ba
    }
}

#[test]
fn handshake_completes_without_loss() {
    let (a, b) = pair_configs(b"hs-0", 1);
    let mut sim = Sim::new(a, b, &[PERFECT], 1);
    let start = sim.now;
    sim.run_until(Duration::from_secs(1), Sim::established);
    // One round trip: 10 ms each way.
    assert_eq!(sim.now - start, 20 * MS);
    for p in &sim.peers {
        assert_eq!(p.count(&ChatEvent::Established), 1);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
    }
    assert_eq!(sim.peers[0].s.stats().handshake_retransmissions, 0);
}

#[test]
fn handshake_completes_with_10_to_30_percent_loss() {
    let timing = ChatTiming {
        handshake_timeout: Duration::from_secs(120),
        ..ChatTiming::default()
    };
    let mut retransmitted = 0;
    for loss in [10, 20, 30] {
        for seed in 0..12 {
            let (a, b) = pair_configs(format!("hs-{loss}-{seed}").as_bytes(), seed);
            let (a, b) = (a.with_timing(timing), b.with_timing(timing));
            let mut sim = Sim::new(a, b, &[lossy(loss)], seed * 1000 + loss);
            sim.run_until(Duration::from_secs(120), Sim::established);
            // Let stray copies land: nothing breaks and nothing is established twice.
            sim.run_for(Duration::from_secs(5));
            for p in &sim.peers {
                assert_eq!(
                    p.count(&ChatEvent::Established),
                    1,
                    "loss {loss} seed {seed}"
                );
                assert_eq!(p.count(&ChatEvent::HandshakeTimedOut), 0);
                assert_eq!(p.s.stats().authentication_failures, 0);
            }
            retransmitted += sim.peers[0].s.stats().handshake_retransmissions;
        }
    }
    assert!(
        retransmitted > 10,
        "only {retransmitted} handshake retransmissions"
    );
}

#[test]
fn thousand_messages_in_order_with_loss_reordering_and_duplication() {
    let (a, b) = pair_configs(b"stream", 7);
    let spec = spec(10, 10, 30, 40);
    let mut sim = Sim::new(a, b, &[spec], 7);
    let start = sim.now;
    script_messages(&mut sim, 0, 1000, start, 2 * MS, 70);
    script_messages(&mut sim, 1, 300, start, 7 * MS, 71);
    sim.run_until(Duration::from_secs(600), all_done(1000, 300));
    assert_stream_intact(&sim, 0, 1);
    assert_stream_intact(&sim, 1, 0);
    let (sa, sb) = (sim.peers[0].s.stats(), sim.peers[1].s.stats());
    // The link really lost, duplicated and reordered, and the session really recovered.
    assert!(sa.retransmissions > 50, "{sa:?}");
    assert!(sb.duplicate_chunks > 20, "{sb:?}");
    // Copies the link made are refused by the replay window.
    assert!(sb.replays > 20, "{sb:?}");
    assert_eq!(sa.authentication_failures + sb.authentication_failures, 0);
    assert_eq!(sa.malformed + sb.malformed, 0);
}

#[test]
fn path_switch_mid_stream_loses_and_duplicates_nothing() {
    let direct = spec(5, 2, 15, 10);
    let relay = spec(0, 0, 60, 5);
    for (seed, paths) in [(11, [direct, relay]), (12, [relay, direct])] {
        let (a, b) = pair_configs(b"switch", seed);
        let mut sim = Sim::new(a, b, &paths, seed);
        let start = sim.now;
        script_messages(&mut sim, 0, 1000, start, 3 * MS, seed);
        // Both sides move to path 1 when message 500 is sent; what is in flight on path 0
        // arrives 400 ms late.
        let switch_at = start + 3 * MS * 500;
        for i in 0..2 {
            let action = Action::SwitchPath(1, 400 * MS);
            let pos = sim.peers[i]
                .script
                .iter()
                .position(|(t, _)| *t >= switch_at);
            let pos = pos.unwrap_or(sim.peers[i].script.len());
            sim.peers[i].script.insert(pos, (switch_at, action));
        }
        sim.run_until(Duration::from_secs(600), all_done(1000, 0));
        assert!(
            sim.left_in_flight > 0,
            "nothing was in flight on the old path"
        );
        sim.run_for(Duration::from_secs(2));
        assert_stream_intact(&sim, 0, 1);
        assert_eq!(sim.peers[1].received.len(), 1000, "late duplicates");
    }
}

#[test]
fn forged_and_corrupted_packets_are_rejected_and_do_not_disturb_the_stream() {
    let (a, b) = pair_configs(b"forgery", 21);
    let mut sim = Sim::new(a, b, &[lossy(5)], 21);
    sim.adversary = Some(Adversary {
        rng: SplitMix64::new(99),
        rate: 30,
        forged: 0,
    });
    let start = sim.now;
    script_messages(&mut sim, 0, 300, start, 3 * MS, 22);
    script_messages(&mut sim, 1, 100, start, 9 * MS, 23);
    sim.run_until(Duration::from_secs(600), all_done(300, 100));
    assert_stream_intact(&sim, 0, 1);
    assert_stream_intact(&sim, 1, 0);
    let forged = sim.adversary.as_ref().unwrap().forged;
    assert!(forged > 100, "{forged}");
    // Every forgery was refused (Sim::deliver asserts it); most fail authentication.
    let auth: u64 = sim
        .peers
        .iter()
        .map(|p| p.s.stats().authentication_failures)
        .sum();
    assert!(auth > forged / 2, "{auth} of {forged}");

    // Random bytes behind each kind byte and the right session tag.
    let mut rng = SplitMix64::new(5);
    let tag = sim.peers[1].s.session_tag().0;
    for kind in [TAG_HANDSHAKE_INIT, TAG_HANDSHAKE_RESPONSE, TAG_TRANSPORT] {
        for len in [57, 60, 200, 1200] {
            let mut p = vec![kind];
            p.extend_from_slice(&tag);
            p.resize(len, 0);
            rng.fill(&mut p[9..]);
            for peer in &mut sim.peers {
                assert!(peer.s.handle_datagram(sim.now, &p).is_err());
            }
        }
    }
    // Packets from a third party holding another key, for the same session id.
    let (c, d) = (keypair(3), keypair(4));
    let mut mallory = Sim::new(
        config(Role::Initiator, &c, &d, b"forgery", 1),
        config(Role::Responder, &d, &c, b"forgery", 2),
        &[PERFECT],
        3,
    );
    mallory.run_until(Duration::from_secs(1), |s| s.peers[0].s.is_established());
    let intruder = &mut mallory.peers[0].s;
    intruder.send_text(mallory.now, "let me in").unwrap();
    let mut packets: Vec<Vec<u8>> =
        std::iter::from_fn(|| intruder.poll_transmit(mallory.now)).collect();
    packets.push(intruder.probe_packet(mallory.now).unwrap());
    for p in &packets {
        for peer in &mut sim.peers {
            // Refused by the replay window when the nonce is old, else by authentication.
            let r = peer.s.handle_datagram(sim.now, p);
            assert!(
                matches!(r, Err(ChatError::Authentication | ChatError::Replay)),
                "{r:?}"
            );
            // With a nonce the window has not seen, it gets to the AEAD and fails there.
            let mut fresh_nonce = p.clone();
            fresh_nonce[9..17].copy_from_slice(&(u64::MAX - 5).to_be_bytes());
            let r = peer.s.handle_datagram(sim.now, &fresh_nonce);
            assert_eq!(r, Err(ChatError::Authentication));
        }
    }
    // The stream still works afterwards.
    let before = sim.peers[1].received.len();
    let at = sim.now;
    sim.peers[0]
        .script
        .push_back((at, Action::Send(b"still here".to_vec())));
    sim.run_until(Duration::from_secs(60), |s| {
        s.peers[1].received.len() == before + 1
    });
    assert_eq!(sim.peers[1].received.last().unwrap().1, b"still here");
}

#[test]
fn replayed_packets_never_duplicate_a_message_and_are_counted() {
    let (a, b) = pair_configs(b"replay", 31);
    let spec = spec(10, 0, 20, 20);
    let mut sim = Sim::new(a, b, &[spec], 31);
    // Start once the handshake is surely done, so the streams need many packets.
    let start = sim.now + Duration::from_secs(5);
    script_messages(&mut sim, 0, 200, start, 5 * MS, 32);
    script_messages(&mut sim, 1, 50, start, 20 * MS, 33);
    sim.run_until(Duration::from_secs(600), all_done(200, 50));
    sim.run_for(Duration::from_secs(1));
    for to in 0..2 {
        let captured = sim.peers[to].accepted.clone();
        let transport = captured.iter().filter(|p| p[0] == TAG_TRANSPORT).count() as u64;
        assert!(transport > 40, "peer {to} accepted {transport}");
        let messages_before = sim.peers[to].received.len();
        let stats_before = sim.peers[to].s.stats();
        let rx_before = sim.peers[to].s.last_authenticated_rx();
        // Replay everything, twice, in reverse order too.
        for p in captured.iter().chain(captured.iter().rev()) {
            let r = sim.peers[to].s.handle_datagram(sim.now, p);
            match p[0] {
                TAG_TRANSPORT => assert_eq!(r, Err(ChatError::Replay)),
                // A copy of the accepted handshake message only earns a resent answer.
                _ => assert!(
                    matches!(r, Ok(()) | Err(ChatError::UnexpectedHandshake)),
                    "{r:?}"
                ),
            }
        }
        let stats = sim.peers[to].s.stats();
        assert_eq!(stats.replays - stats_before.replays, 2 * transport);
        assert_eq!(stats.packets_accepted, stats_before.packets_accepted);
        assert_eq!(
            sim.peers[to].s.last_authenticated_rx(),
            rx_before,
            "replays are not liveness"
        );
        sim.run_for(Duration::from_secs(2));
        assert_eq!(sim.peers[to].received.len(), messages_before);
    }
    assert_stream_intact(&sim, 0, 1);
    assert_stream_intact(&sim, 1, 0);
}

#[test]
fn packets_of_another_session_are_rejected() {
    let (a1, b1) = pair_configs(b"session-one", 41);
    let (a2, b2) = pair_configs(b"session-two", 41);
    let mut one = Sim::new(a1, b1, &[PERFECT], 41);
    let mut two = Sim::new(a2, b2, &[PERFECT], 42);
    one.run_until(Duration::from_secs(1), Sim::established);
    two.run_until(Duration::from_secs(1), Sim::established);
    let tag_one = one.peers[1].s.session_tag();
    assert_ne!(tag_one, two.peers[1].s.session_tag());
    // Same keys, other session: refused by tag, and by the crypto when the tag is rewritten.
    let now = two.now;
    two.peers[0].s.send_text(now, "wrong session").unwrap();
    let p = two.peers[0].s.poll_transmit(now).unwrap();
    assert_eq!(
        one.peers[1].s.handle_datagram(one.now, &p),
        Err(ChatError::WrongSession)
    );
    let mut retagged = p.clone();
    retagged[1..9].copy_from_slice(&tag_one.0);
    assert_eq!(
        one.peers[1].s.handle_datagram(one.now, &retagged),
        Err(ChatError::Authentication)
    );
    // A handshake of the other session, retagged, fails on the prologue.
    let (a3, _) = pair_configs(b"session-two", 43);
    let (_, b4) = pair_configs(b"session-one", 44);
    let mut init = ChatSession::new(a3, now)
        .unwrap()
        .poll_transmit(now)
        .unwrap();
    init[1..9].copy_from_slice(&tag_one.0);
    let mut responder = ChatSession::new(b4, now).unwrap();
    assert_eq!(
        responder.handle_datagram(now, &init),
        Err(ChatError::Authentication)
    );
    assert!(!responder.is_established());
    assert_eq!(one.peers[1].s.stats().wrong_session, 1);
    // STUN on the same socket is told apart by its first byte.
    let stun = [
        0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    assert!(!is_chat_packet(&stun) && session_tag(&stun).is_none());
    assert_eq!(
        one.peers[1].s.handle_datagram(now, &stun),
        Err(ChatError::NotChat)
    );
    one.run_for(Duration::from_secs(1));
    assert!(one.peers[1].received.is_empty());
}

#[test]
fn wrong_remote_static_key_never_completes() {
    let (a, b, m) = (keypair(1), keypair(2), keypair(3));
    // Each side in turn believes the other's key is m's.
    for (a_thinks_b_is, b_thinks_a_is) in [(&m, &a), (&b, &m)] {
        let ca = config(Role::Initiator, &a, a_thinks_b_is, b"k", 1);
        let cb = config(Role::Responder, &b, b_thinks_a_is, b"k", 2);
        let mut sim = Sim::new(ca, cb, &[PERFECT], 51);
        let start = sim.now;
        for p in &mut sim.peers {
            p.script
                .push_back((start, Action::Send(b"secret".to_vec())));
        }
        while sim.step() {}
        // 30 s handshake timeout, then nothing more is scheduled.
        assert!(sim.now - start <= Duration::from_secs(31));
        for p in &sim.peers {
            assert!(!p.s.is_established() && p.s.is_failed());
            assert_eq!(p.events, [ChatEvent::HandshakeTimedOut]);
            assert!(p.received.is_empty());
        }
        let b_stats = sim.peers[1].s.stats();
        assert_eq!(
            b_stats.authentication_failures,
            sim.peers[0].s.stats().packets_sent
        );
        assert_eq!(
            sim.peers[1].errors.get("Authentication").copied(),
            Some(b_stats.authentication_failures)
        );
    }
}

struct FuzzTargets {
    a: ChatSession,
    b: ChatSession,
    fresh_initiator: ChatSession,
    fresh_responder: ChatSession,
    now: Instant,
    sent: u64,
}

fn fuzz_targets() -> FuzzTargets {
    let (a, b) = pair_configs(b"fuzz", 61);
    let mut sim = Sim::new(a, b, &[PERFECT], 61);
    sim.run_until(Duration::from_secs(1), Sim::established);
    let [a, b] = sim.peers;
    let (ca, cb) = pair_configs(b"fuzz", 62);
    FuzzTargets {
        a: a.s,
        b: b.s,
        fresh_initiator: ChatSession::new(ca, sim.now).unwrap(),
        fresh_responder: ChatSession::new(cb, sim.now).unwrap(),
        now: sim.now,
        sent: 0,
    }
}

thread_local! {
    /// Shared by all cases (the handshakes are slow in debug builds): garbage must never change
    /// a session's state, so accumulating it across cases only makes the test stronger.
    static FUZZ: std::cell::RefCell<Option<FuzzTargets>> = const { std::cell::RefCell::new(None) };
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..1500),
        kind in prop_oneof![Just(None), Just(Some(0x80u8)), Just(Some(0x81)), Just(Some(0x82))],
    ) {
        FUZZ.with_borrow_mut(|slot| {
            let t = slot.get_or_insert_with(fuzz_targets);
            t.now += 20 * MS;
            let now = t.now;
            // Raw bytes, and bytes behind a valid kind byte and session tag.
            let mut framed = bytes.clone();
            if let Some(kind) = kind {
                framed = vec![kind];
                framed.extend_from_slice(&t.a.session_tag().0);
                framed.extend_from_slice(&bytes);
            }
            for input in [&bytes, &framed] {
                for s in [&mut t.a, &mut t.b, &mut t.fresh_initiator, &mut t.fresh_responder] {
                    prop_assert!(s.handle_datagram(now, input).is_err());
                    prop_assert_eq!(s.poll_event(), None);
                }
            }
            while t.fresh_initiator.poll_transmit(now).is_some() {}
            prop_assert_eq!(t.fresh_responder.poll_transmit(now), None);
            prop_assert!(!t.fresh_responder.is_established());
            // The established pair still talks.
            t.a.send_text(now, "ok").unwrap();
            for _ in 0..10 {
                while let Some(p) = t.a.poll_transmit(now) {
                    t.b.handle_datagram(now, &p).unwrap();
                }
                while let Some(p) = t.b.poll_transmit(now) {
                    t.a.handle_datagram(now, &p).unwrap();
                }
            }
            let expected = ChatEvent::Message { id: MessageId(t.sent), bytes: b"ok".to_vec() };
            t.sent += 1;
            prop_assert_eq!(t.b.poll_event(), Some(expected));
            prop_assert_eq!(t.b.poll_event(), None);
            while t.a.poll_event().is_some() {}
            prop_assert!(t.a.unacked_count() <= 1);
            Ok(())
        })?;
    }
}
