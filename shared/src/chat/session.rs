//! [`ChatSession`]: the handshake state machine, packet sealing and opening, and the glue
//! between the reliability layer and the wire.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use snow::{HandshakeState, StatelessTransportState};

use super::noise::{self, MAX_NONCE, ReplayVerdict, ReplayWindow};
use super::reliability::{Arrival, Receiver, RttEstimator, Sender};
use super::wire::{
    self, AEAD_TAG_LEN, DATA_FRAME_OVERHEAD, Frame, FrameReader, MAX_ACK_FRAME_LEN, PING_FRAME_LEN,
    Packet, SessionTag, TRANSPORT_HEADER_LEN,
};
use super::{
    ChatConfig, ChatError, ChatEvent, ChatStats, ChatTiming, MAX_MESSAGE_LEN, MAX_PACKET_SIZE,
    MIN_PACKET_SIZE, MessageId, Role,
};

enum Phase {
    /// Initiator: message 1 written, waiting for message 2. Responder: waiting for message 1.
    Handshaking(Box<HandshakeState>),
    /// Keys in place.
    Established(Box<StatelessTransportState>),
    /// Dead.
    Failed,
}

/// One chat session; see the [module docs](super).
pub struct ChatSession {
    role: Role,
    tag: SessionTag,
    timing: ChatTiming,
    max_packet_size: usize,
    phase: Phase,
    handshake_deadline: Instant,
    /// Our handshake packet: message 1 (initiator) or message 2 (responder).
    our_handshake: Vec<u8>,
    /// The peer's handshake body we accepted, to recognise copies of it.
    peer_handshake: Option<Vec<u8>>,
    /// Initiator: when message 1 is next due. Responder: `Some` when message 2 must be resent.
    handshake_due: Option<Instant>,
    handshake_sends: u32,
    send_nonce: u64,
    replay: ReplayWindow,
    sender: Sender,
    receiver: Receiver,
    /// An ACK is owed; it is due at `ack_due`.
    ack_due: Option<Instant>,
    /// Ack-eliciting packets received since the last ACK was sent.
    unacked_eliciting: u32,
    ping_pending: bool,
    last_tx: Option<Instant>,
    last_rx: Option<Instant>,
    /// `PeerUnresponsive` was reported for the current silence.
    silence_reported: bool,
    /// `PeerClosed` was reported.
    peer_closed: bool,
    /// We said goodbye.
    closed: bool,
    events: VecDeque<ChatEvent>,
    stats: ChatStats,
}

impl std::fmt::Debug for ChatSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match self.phase {
            Phase::Handshaking(_) => "handshaking",
            Phase::Established(_) => "established",
            Phase::Failed => "failed",
        };
        f.debug_struct("ChatSession")
            .field("role", &self.role)
            .field("tag", &self.tag)
            .field("phase", &phase)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl ChatSession {
    /// Starts a session at `now`. The initiator's first handshake message is due at once.
    pub fn new(config: ChatConfig, now: Instant) -> Result<Self, ChatError> {
        if !(MIN_PACKET_SIZE..=MAX_PACKET_SIZE).contains(&config.max_packet_size) {
            return Err(ChatError::InvalidConfig("max_packet_size out of range"));
        }
        let t = &config.timing;
        if t.handshake_rto.is_zero() || t.initial_rto.is_zero() || t.min_rto.is_zero() {
            return Err(ChatError::InvalidConfig("zero retransmission timeout"));
        }
        if t.min_rto > t.max_rto
            || t.keepalive_interval.is_some_and(|k| k.is_zero())
            || t.idle_timeout.is_some_and(|k| k.is_zero())
        {
            return Err(ChatError::InvalidConfig("inconsistent timers"));
        }
        let initiator = config.role == Role::Initiator;
        let mut handshake = noise::build_handshake(
            initiator,
            &config.local_secret,
            &config.remote_public,
            &config.session_id,
            &config.seed,
        )?;
        let tag = SessionTag::from_session_id(&config.session_id);
        let mut our_handshake = Vec::new();
        if initiator {
            wire::put_header(&mut our_handshake, wire::TAG_HANDSHAKE_INIT, tag);
            our_handshake.extend_from_slice(&noise::write_handshake(&mut handshake)?);
        }
        // Room for the largest ACK and one DATA frame header in every packet, so a chunk
        // always fits, first time or resent.
        let chunk_size = config.max_packet_size
            - TRANSPORT_HEADER_LEN
            - AEAD_TAG_LEN
            - MAX_ACK_FRAME_LEN
            - DATA_FRAME_OVERHEAD;
        let rtt = RttEstimator::new(t.initial_rto, t.min_rto, t.max_rto);
        Ok(Self {
            role: config.role,
            tag,
            timing: config.timing,
            max_packet_size: config.max_packet_size,
            phase: Phase::Handshaking(Box::new(handshake)),
            handshake_deadline: now + config.timing.handshake_timeout,
            our_handshake,
            peer_handshake: None,
            handshake_due: initiator.then_some(now),
            handshake_sends: 0,
            send_nonce: 0,
            replay: ReplayWindow::default(),
            sender: Sender::new(
                chunk_size,
                config.max_in_flight as u64,
                config.send_buffer,
                rtt,
            ),
            receiver: Receiver::new(MAX_MESSAGE_LEN),
            ack_due: None,
            unacked_eliciting: 0,
            ping_pending: false,
            last_tx: None,
            last_rx: None,
            silence_reported: false,
            peer_closed: false,
            closed: false,
            events: VecDeque::new(),
            stats: ChatStats::default(),
        })
    }

    /// The tag this session's packets carry (compare with [`super::session_tag`]).
    pub fn session_tag(&self) -> SessionTag {
        self.tag
    }

    /// Our handshake role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the handshake has completed (and the session has not failed).
    pub fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Established(_))
    }

    /// Whether the session is dead ([`ChatEvent::HandshakeTimedOut`] was reported).
    pub fn is_failed(&self) -> bool {
        matches!(self.phase, Phase::Failed)
    }

    /// Messages sent and not yet acknowledged by the peer (queued or in flight).
    pub fn unacked_count(&self) -> usize {
        self.sender.undelivered_messages()
    }

    /// When the last packet that authenticated (and was not a replay) arrived, on any path.
    pub fn last_authenticated_rx(&self) -> Option<Instant> {
        self.last_rx
    }

    /// The smoothed round-trip time, once measured.
    pub fn srtt(&self) -> Option<Duration> {
        self.sender.rtt.srtt()
    }

    /// Counters.
    pub fn stats(&self) -> ChatStats {
        ChatStats {
            retransmissions: self.sender.retransmissions,
            duplicate_chunks: self.receiver.duplicates,
            ..self.stats
        }
    }

    /// Queues a message (UTF-8 text or bytes) for reliable, ordered delivery; it leaves with
    /// the next [`Self::poll_transmit`] calls once the session is established.
    pub fn send_message(&mut self, _now: Instant, message: &[u8]) -> Result<MessageId, ChatError> {
        if self.is_failed() {
            return Err(ChatError::Failed);
        }
        if message.len() > MAX_MESSAGE_LEN {
            return Err(ChatError::MessageTooLarge {
                len: message.len(),
                max: MAX_MESSAGE_LEN,
            });
        }
        self.sender.push(message)
    }

    /// [`Self::send_message`] for text.
    pub fn send_text(&mut self, now: Instant, text: &str) -> Result<MessageId, ChatError> {
        self.send_message(now, text.as_bytes())
    }

    /// Takes a packet that arrived on any path. `Err` means it was dropped (and counted in
    /// [`Self::stats`]); the session is unaffected.
    pub fn handle_datagram(&mut self, now: Instant, packet: &[u8]) -> Result<(), ChatError> {
        let result = self.dispatch(now, packet);
        if let Err(e) = &result {
            let counter = match e {
                ChatError::Malformed => &mut self.stats.malformed,
                ChatError::Authentication => &mut self.stats.authentication_failures,
                ChatError::Replay => &mut self.stats.replays,
                ChatError::WrongSession => &mut self.stats.wrong_session,
                ChatError::UnexpectedHandshake | ChatError::NotEstablished => {
                    &mut self.stats.unexpected
                }
                _ => return result,
            };
            *counter += 1;
        }
        result
    }

    fn dispatch(&mut self, now: Instant, packet: &[u8]) -> Result<(), ChatError> {
        if self.is_failed() {
            return Err(ChatError::Failed);
        }
        let packet = Packet::parse(packet)?;
        let session = match packet {
            Packet::HandshakeInit { session, .. }
            | Packet::HandshakeResponse { session, .. }
            | Packet::Transport { session, .. } => session,
        };
        if session != self.tag {
            return Err(ChatError::WrongSession);
        }
        match (packet, self.role) {
            (Packet::HandshakeInit { body, .. }, Role::Responder) => self.on_initiation(now, body),
            (Packet::HandshakeResponse { body, .. }, Role::Initiator) => {
                self.on_response(now, body)
            }
            (Packet::HandshakeInit { .. } | Packet::HandshakeResponse { .. }, _) => {
                Err(ChatError::UnexpectedHandshake)
            }
            (
                Packet::Transport {
                    nonce, ciphertext, ..
                },
                _,
            ) => self.on_transport(now, nonce, ciphertext),
        }
    }

    /// Responder: Noise message 1.
    fn on_initiation(&mut self, now: Instant, body: &[u8]) -> Result<(), ChatError> {
        if let Some(accepted) = &self.peer_handshake {
            // A copy of the initiation we answered: our answer was lost (or the copy is a
            // replay, which earns the replayer nothing). Answer again; never restart.
            if accepted.as_slice() != body {
                return Err(ChatError::UnexpectedHandshake);
            }
            self.stats.duplicate_handshakes += 1;
            self.handshake_due = Some(now);
            return Ok(());
        }
        let Phase::Handshaking(state) = &mut self.phase else {
            return Err(ChatError::UnexpectedHandshake);
        };
        noise::read_handshake(state, body)?;
        let reply = noise::write_handshake(state)?;
        self.our_handshake.clear();
        wire::put_header(
            &mut self.our_handshake,
            wire::TAG_HANDSHAKE_RESPONSE,
            self.tag,
        );
        self.our_handshake.extend_from_slice(&reply);
        self.handshake_due = Some(now);
        self.peer_handshake = Some(body.to_vec());
        self.establish(now)
    }

    /// Initiator: Noise message 2.
    fn on_response(&mut self, now: Instant, body: &[u8]) -> Result<(), ChatError> {
        if let Some(accepted) = &self.peer_handshake {
            if accepted.as_slice() != body {
                return Err(ChatError::UnexpectedHandshake);
            }
            self.stats.duplicate_handshakes += 1;
            return Ok(());
        }
        let Phase::Handshaking(state) = &mut self.phase else {
            return Err(ChatError::UnexpectedHandshake);
        };
        noise::read_handshake(state, body)?;
        self.peer_handshake = Some(body.to_vec());
        self.handshake_due = None;
        self.establish(now)
    }

    /// Moves a finished handshake into transport mode.
    fn establish(&mut self, now: Instant) -> Result<(), ChatError> {
        let Phase::Handshaking(state) = std::mem::replace(&mut self.phase, Phase::Failed) else {
            return Err(ChatError::UnexpectedHandshake);
        };
        let transport = noise::into_transport(*state)?;
        self.phase = Phase::Established(Box::new(transport));
        self.last_rx = Some(now);
        self.stats.packets_accepted += 1;
        self.events.push_back(ChatEvent::Established);
        Ok(())
    }

    fn on_transport(
        &mut self,
        now: Instant,
        nonce: u64,
        ciphertext: &[u8],
    ) -> Result<(), ChatError> {
        let Phase::Established(transport) = &self.phase else {
            return Err(ChatError::NotEstablished);
        };
        if ciphertext.len() < AEAD_TAG_LEN || ciphertext.len() > 65535 {
            return Err(ChatError::Malformed);
        }
        // Check before decrypting (cheap), record only after authentication (RFC 6479).
        if self.replay.check(nonce) != ReplayVerdict::Fresh {
            return Err(ChatError::Replay);
        }
        let mut plaintext = vec![0u8; ciphertext.len()];
        let n = transport
            .read_message(nonce, ciphertext, &mut plaintext)
            .map_err(|_| ChatError::Authentication)?;
        self.replay.accept(nonce);
        self.last_rx = Some(now);
        self.silence_reported = false;
        let plaintext = plaintext.get(..n).ok_or(ChatError::Malformed)?;
        // Validate every frame before acting on any.
        let frames: Vec<Frame<'_>> = FrameReader::new(plaintext).collect::<Result<_, _>>()?;
        self.stats.packets_accepted += 1;
        let mut eliciting = false;
        let mut ack_now = false;
        let mut closed_now = false;
        for frame in &frames {
            eliciting |= frame.is_ack_eliciting();
            match *frame {
                Frame::Ping => ack_now = true,
                Frame::Close => {
                    ack_now = true;
                    if !self.peer_closed {
                        self.peer_closed = true;
                        closed_now = true;
                    }
                }
                Frame::Ack(ack) => self.sender.on_ack(now, &ack),
                Frame::Data { seq, fin, data } => {
                    ack_now |= self.receiver.on_chunk(seq, fin, data) != Arrival::InOrder;
                }
            }
        }
        while let Some((id, bytes)) = self.receiver.pop_message() {
            self.events.push_back(ChatEvent::Message { id, bytes });
        }
        while let Some(id) = self.sender.pop_delivered() {
            self.events.push_back(ChatEvent::Delivered(id));
        }
        if closed_now {
            self.events.push_back(ChatEvent::PeerClosed);
        }
        if eliciting {
            self.unacked_eliciting += 1;
            // Acknowledge at once on gaps, duplicates, probes and every second packet; else
            // give the ACK a moment to ride on a reply.
            let due = if ack_now || self.unacked_eliciting >= 2 {
                now
            } else {
                now + self.timing.ack_delay
            };
            self.ack_due = Some(self.ack_due.map_or(due, |d| d.min(due)));
        }
        Ok(())
    }

    /// Advances time: handshake timeout, retransmission timers, keepalive.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Handshaking(_) if now >= self.handshake_deadline => {
                self.phase = Phase::Failed;
                self.events.push_back(ChatEvent::HandshakeTimedOut);
            }
            Phase::Established(_) => {
                self.sender.on_timeout(now);
                let keepalive = self.timing.keepalive_interval.zip(self.last_tx);
                if keepalive.is_some_and(|(interval, last)| now >= last + interval) {
                    self.ping_pending = true;
                }
                let idle = self.timing.idle_timeout.zip(self.last_rx);
                if !self.silence_reported
                    && idle.is_some_and(|(timeout, last)| now >= last + timeout)
                {
                    self.silence_reported = true;
                    self.events.push_back(ChatEvent::PeerUnresponsive);
                }
            }
            _ => {}
        }
    }

    /// The next packet to send on the current path, if one is due at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.handle_timeout(now);
        if self.handshake_due.is_some_and(|due| due <= now) {
            return Some(self.transmit_handshake(now));
        }
        if !self.is_established() {
            return None;
        }
        let ack_owed = self.ack_due.is_some();
        let ack_due_now = self.ack_due.is_some_and(|due| due <= now);
        if !ack_due_now && !self.ping_pending && !self.sender.has_sendable() {
            return None;
        }
        let budget = self.max_packet_size - TRANSPORT_HEADER_LEN - AEAD_TAG_LEN;
        let mut plaintext = Vec::with_capacity(budget);
        if ack_owed {
            Frame::Ack(self.receiver.ack_frame()).encode(&mut plaintext);
            self.ack_due = None;
            self.unacked_eliciting = 0;
        }
        let mut carries_data = false;
        while let Some(chunk) = self.sender.next_chunk(
            now,
            budget.saturating_sub(plaintext.len() + DATA_FRAME_OVERHEAD),
        ) {
            carries_data = true;
            Frame::Data {
                seq: chunk.seq,
                fin: chunk.fin,
                data: &chunk.data,
            }
            .encode(&mut plaintext);
        }
        if self.ping_pending && !carries_data && plaintext.len() + PING_FRAME_LEN <= budget {
            Frame::Ping.encode(&mut plaintext);
        }
        self.ping_pending = false;
        self.seal(now, &plaintext)
    }

    fn transmit_handshake(&mut self, now: Instant) -> Vec<u8> {
        match self.role {
            Role::Initiator => {
                if self.handshake_sends > 0 {
                    self.stats.handshake_retransmissions += 1;
                }
                self.handshake_sends += 1;
                let backoff = 1u32 << (self.handshake_sends - 1).min(16);
                let wait = self.timing.handshake_rto.saturating_mul(backoff);
                self.handshake_due = Some(now + wait.min(self.timing.max_rto));
            }
            Role::Responder => self.handshake_due = None,
        }
        self.stats.packets_sent += 1;
        self.last_tx = Some(now);
        self.our_handshake.clone()
    }

    /// Encrypts `plaintext` under the next nonce.
    fn seal(&mut self, now: Instant, plaintext: &[u8]) -> Option<Vec<u8>> {
        if self.send_nonce > MAX_NONCE {
            self.phase = Phase::Failed;
            return None;
        }
        let Phase::Established(transport) = &self.phase else {
            return None;
        };
        let nonce = self.send_nonce;
        let mut packet = Vec::with_capacity(TRANSPORT_HEADER_LEN + plaintext.len() + AEAD_TAG_LEN);
        wire::put_header(&mut packet, wire::TAG_TRANSPORT, self.tag);
        packet.extend_from_slice(&nonce.to_be_bytes());
        packet.resize(TRANSPORT_HEADER_LEN + plaintext.len() + AEAD_TAG_LEN, 0);
        let n = transport
            .write_message(nonce, plaintext, &mut packet[TRANSPORT_HEADER_LEN..])
            .ok()?;
        packet.truncate(TRANSPORT_HEADER_LEN + n);
        self.send_nonce += 1;
        self.stats.packets_sent += 1;
        self.last_tx = Some(now);
        Some(packet)
    }

    /// A keepalive packet (a PING, plus an ACK if one is owed) to send now on a path of the
    /// driver's choice; the peer answers with an ACK on its current path.
    pub fn probe_packet(&mut self, now: Instant) -> Result<Vec<u8>, ChatError> {
        if !self.is_established() {
            return Err(ChatError::NotEstablished);
        }
        let mut plaintext = Vec::new();
        if self.ack_due.take().is_some() {
            Frame::Ack(self.receiver.ack_frame()).encode(&mut plaintext);
            self.unacked_eliciting = 0;
        }
        Frame::Ping.encode(&mut plaintext);
        self.seal(now, &plaintext).ok_or(ChatError::Failed)
    }

    /// A path came (back) up after an outage: every chunk not yet acknowledged is resent with
    /// the next [`Self::poll_transmit`] calls, instead of when its backed-off timer (up to
    /// [`ChatTiming::max_rto`]) would fire.
    pub fn handle_path_up(&mut self, _now: Instant) {
        if self.is_established() {
            self.sender.retransmit_all();
        }
    }

    /// A goodbye packet (a CLOSE frame, plus an ACK if one is owed) to send now on every path
    /// that may be up, once or a few times (each call seals a fresh packet; the peer reports
    /// [`ChatEvent::PeerClosed`] once). Afterwards [`Self::is_closed`] holds; the session
    /// still answers the peer, so a driver may linger a moment.
    pub fn goodbye_packet(&mut self, now: Instant) -> Result<Vec<u8>, ChatError> {
        if !self.is_established() {
            return Err(ChatError::NotEstablished);
        }
        let mut plaintext = Vec::new();
        if self.ack_due.take().is_some() {
            Frame::Ack(self.receiver.ack_frame()).encode(&mut plaintext);
            self.unacked_eliciting = 0;
        }
        Frame::Close.encode(&mut plaintext);
        self.closed = true;
        self.seal(now, &plaintext).ok_or(ChatError::Failed)
    }

    /// Whether we said goodbye ([`Self::goodbye_packet`]).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether the peer said goodbye ([`ChatEvent::PeerClosed`] was reported).
    pub fn is_peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// The next thing that happened.
    pub fn poll_event(&mut self) -> Option<ChatEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] (or [`Self::poll_transmit`]) must next be called; `None`
    /// once the session has failed. Assumes `poll_transmit` was drained.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Failed => None,
            Phase::Handshaking(_) => {
                Some(self.handshake_due.map_or(self.handshake_deadline, |due| {
                    due.min(self.handshake_deadline)
                }))
            }
            Phase::Established(_) => {
                let keepalive = self
                    .timing
                    .keepalive_interval
                    .zip(self.last_tx)
                    .map(|(i, t)| t + i);
                let idle = if self.silence_reported {
                    None
                } else {
                    self.timing
                        .idle_timeout
                        .zip(self.last_rx)
                        .map(|(i, t)| t + i)
                };
                [
                    self.handshake_due,
                    self.ack_due,
                    self.sender.next_timeout(),
                    keepalive,
                    idle,
                ]
                .into_iter()
                .flatten()
                .min()
            }
        }
    }
}
