//! Reliable, ordered delivery of chunked messages: sequence numbers, acknowledgements,
//! retransmission and reassembly. Knows nothing of encryption or packets.
//!
//! Each message is cut into chunks that fit a packet; every chunk gets the next 64-bit
//! sequence number and the last chunk of a message carries FIN. The receiver keeps chunks in
//! a window of [`RECV_WINDOW`] sequence numbers above its cumulative ack, hands complete
//! messages up strictly in order, and acknowledges with the cumulative ack plus a bitmap of
//! what it holds above it. The sender keeps at most `max_in_flight` (at most [`RECV_WINDOW`])
//! chunks outstanding, so every chunk it sends fits the receiver's window; it retransmits a
//! chunk when its RTO (RFC 6298 estimator, doubled per resend, capped) expires, or early when
//! three later-sent chunks have been acknowledged (fast retransmit).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::wire::{ACK_BITMAP_BYTES, AckFrame};
use super::{ChatError, MessageId};

/// How many sequence numbers above its cumulative ack a receiver buffers; the bitmap covers
/// exactly these.
pub const RECV_WINDOW: u64 = (ACK_BITMAP_BYTES * 8) as u64;

/// Acknowledged chunks above an unacknowledged one, sent after it, that declare it lost.
const FAST_RETRANSMIT_THRESHOLD: usize = 3;

/// Round-trip estimator and retransmission timeout (RFC 6298).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    min_rto: Duration,
    max_rto: Duration,
}

impl RttEstimator {
    pub(crate) fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        Self {
            srtt: None,
            rttvar: Duration::ZERO,
            rto: initial_rto,
            min_rto,
            max_rto,
        }
    }

    /// Feeds one sample (from a chunk sent exactly once: Karn's algorithm).
    pub(crate) fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let err = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + err) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(rtt);
        self.rto = (srtt + (self.rttvar * 4).max(Duration::from_millis(1)))
            .clamp(self.min_rto, self.max_rto);
    }

    /// The timeout for a chunk sent `sends` times: RTO doubled per resend, capped.
    pub(crate) fn rto_after(&self, sends: u32) -> Duration {
        let factor = 1u32 << sends.saturating_sub(1).min(16);
        self.rto.saturating_mul(factor).min(self.max_rto)
    }

    /// The smoothed round-trip time, once there is a sample.
    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.srtt
    }
}

/// A chunk of a message.
#[derive(Clone, Debug)]
pub(crate) struct Chunk {
    pub seq: u64,
    pub fin: bool,
    pub data: Bytes,
}

#[derive(Debug)]
struct InFlight {
    chunk: Chunk,
    first_sent: Instant,
    last_sent: Instant,
    sends: u32,
    /// Selectively acknowledged (the cumulative ack has not reached it yet).
    sacked: bool,
    /// Declared lost; waiting in the retransmit queue.
    lost: bool,
}

/// The sending half.
#[derive(Debug)]
pub(crate) struct Sender {
    /// Chunks not yet sent, in sequence order.
    unsent: VecDeque<Chunk>,
    /// Sent and not cumulatively acknowledged, keyed by sequence number.
    in_flight: BTreeMap<u64, InFlight>,
    /// Every sequence number below this is acknowledged.
    acked_below: u64,
    /// The next sequence number to assign.
    next_seq: u64,
    /// The next message id to assign.
    next_message: u64,
    /// Per message, its last sequence number; front is the oldest undelivered.
    message_ends: VecDeque<(MessageId, u64)>,
    /// Messages the peer has fully received, in order, for `Delivered` events.
    delivered: VecDeque<MessageId>,
    buffered_bytes: usize,
    max_buffered_bytes: usize,
    max_in_flight: u64,
    chunk_size: usize,
    pub(crate) rtt: RttEstimator,
    /// Chunks retransmitted so far (statistics).
    pub(crate) retransmissions: u64,
}

impl Sender {
    pub(crate) fn new(
        chunk_size: usize,
        max_in_flight: u64,
        max_buffered_bytes: usize,
        rtt: RttEstimator,
    ) -> Self {
        Self {
            unsent: VecDeque::new(),
            in_flight: BTreeMap::new(),
            acked_below: 0,
            next_seq: 0,
            next_message: 0,
            message_ends: VecDeque::new(),
            delivered: VecDeque::new(),
            buffered_bytes: 0,
            max_buffered_bytes,
            max_in_flight: max_in_flight.clamp(1, RECV_WINDOW),
            chunk_size: chunk_size.max(1),
            rtt,
            retransmissions: 0,
        }
    }

    /// Queues a message; it is cut into chunks of at most `chunk_size` bytes.
    pub(crate) fn push(&mut self, message: &[u8]) -> Result<MessageId, ChatError> {
        if self.buffered_bytes + message.len() > self.max_buffered_bytes {
            return Err(ChatError::SendBufferFull);
        }
        let id = MessageId(self.next_message);
        self.next_message += 1;
        let all = Bytes::copy_from_slice(message);
        let mut offset = 0;
        loop {
            let end = (offset + self.chunk_size).min(all.len());
            let fin = end == all.len();
            self.unsent.push_back(Chunk {
                seq: self.next_seq,
                fin,
                data: all.slice(offset..end),
            });
            self.next_seq += 1;
            offset = end;
            if fin {
                break;
            }
        }
        self.message_ends.push_back((id, self.next_seq - 1));
        self.buffered_bytes += message.len();
        Ok(id)
    }

    /// Chunks sent and not yet cumulatively acknowledged.
    #[cfg(test)]
    pub(crate) fn unacked_chunks(&self) -> usize {
        self.in_flight.len()
    }

    /// Messages not yet known delivered.
    pub(crate) fn undelivered_messages(&self) -> usize {
        self.message_ends.len()
    }

    /// The next `Delivered` notification.
    pub(crate) fn pop_delivered(&mut self) -> Option<MessageId> {
        self.delivered.pop_front()
    }

    /// Whether [`Self::next_chunk`] would return something.
    pub(crate) fn has_sendable(&self) -> bool {
        self.in_flight.values().any(|f| f.lost)
            || self
                .unsent
                .front()
                .is_some_and(|c| c.seq < self.acked_below + self.max_in_flight)
    }

    /// The next chunk to put on the wire if its frame fits in `room` bytes of data: first the
    /// oldest chunk declared lost, then the oldest unsent one the window allows. Marks it sent
    /// at `now`.
    pub(crate) fn next_chunk(&mut self, now: Instant, room: usize) -> Option<Chunk> {
        if let Some(f) = self.in_flight.values_mut().find(|f| f.lost) {
            if f.chunk.data.len() > room {
                return None;
            }
            f.lost = false;
            f.sends += 1;
            f.last_sent = now;
            self.retransmissions += 1;
            return Some(f.chunk.clone());
        }
        let front = self.unsent.front()?;
        if front.seq >= self.acked_below + self.max_in_flight || front.data.len() > room {
            return None;
        }
        let chunk = self.unsent.pop_front()?;
        self.in_flight.insert(
            chunk.seq,
            InFlight {
                chunk: chunk.clone(),
                first_sent: now,
                last_sent: now,
                sends: 1,
                sacked: false,
                lost: false,
            },
        );
        Some(chunk)
    }

    /// Applies an acknowledgement received at `now`.
    pub(crate) fn on_ack(&mut self, now: Instant, ack: &AckFrame) {
        // An ack for sequence numbers never sent is a peer bug; ignore it whole.
        let sent_below = self.unsent.front().map_or(self.next_seq, |c| c.seq);
        if ack.cumulative > sent_below {
            return;
        }
        let mut newest_sample: Option<(u64, Duration)> = None;
        let mut consider = |seq: u64, f: &InFlight| {
            if f.sends == 1 && !f.sacked && newest_sample.is_none_or(|(s, _)| seq > s) {
                newest_sample = Some((seq, now.saturating_duration_since(f.first_sent)));
            }
        };
        while let Some(entry) = self.in_flight.first_entry() {
            if *entry.key() >= ack.cumulative {
                break;
            }
            let (seq, f) = entry.remove_entry();
            consider(seq, &f);
            self.buffered_bytes = self.buffered_bytes.saturating_sub(f.chunk.data.len());
        }
        self.acked_below = self.acked_below.max(ack.cumulative);
        for seq in ack.selective() {
            if let Some(f) = self.in_flight.get_mut(&seq) {
                consider(seq, f);
                f.sacked = true;
                f.lost = false;
            }
        }
        if let Some((_, rtt)) = newest_sample {
            self.rtt.sample(rtt);
        }
        while let Some(&(id, last)) = self.message_ends.front() {
            if last >= self.acked_below {
                break;
            }
            self.message_ends.pop_front();
            self.delivered.push_back(id);
        }
        self.detect_fast_loss();
    }

    /// Declares lost every unacknowledged chunk with at least three acknowledged chunks above
    /// it that were sent after it was (last) sent.
    fn detect_fast_loss(&mut self) {
        // The latest send times of acknowledged chunks above the current one, newest first:
        // the threshold-th of them decides.
        let mut latest = [None::<Instant>; FAST_RETRANSMIT_THRESHOLD];
        for f in self.in_flight.values_mut().rev() {
            if f.sacked {
                let mut t = Some(f.last_sent);
                for slot in &mut latest {
                    if t > *slot {
                        std::mem::swap(slot, &mut t);
                    }
                }
                continue;
            }
            if !f.lost && latest[FAST_RETRANSMIT_THRESHOLD - 1].is_some_and(|t| t > f.last_sent) {
                f.lost = true;
            }
        }
    }

    /// Declares lost every chunk whose retransmission timeout has passed.
    pub(crate) fn on_timeout(&mut self, now: Instant) {
        let rtt = self.rtt;
        for f in self.in_flight.values_mut() {
            if !f.sacked && !f.lost && f.last_sent + rtt.rto_after(f.sends) <= now {
                f.lost = true;
            }
        }
    }

    /// Declares lost every chunk not yet acknowledged (a new path is up: resend now rather
    /// than after the backed-off timers).
    pub(crate) fn retransmit_all(&mut self) {
        for f in self.in_flight.values_mut() {
            if !f.sacked {
                f.lost = true;
            }
        }
    }

    /// When the earliest outstanding chunk times out.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.in_flight
            .values()
            .filter(|f| !f.sacked && !f.lost)
            .map(|f| f.last_sent + self.rtt.rto_after(f.sends))
            .min()
    }
}

/// What one received chunk did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// The next expected chunk.
    InOrder,
    /// New, but above a gap: the sender should learn of the gap now.
    OutOfOrder,
    /// Already received (or beyond the window): acknowledge again at once.
    Duplicate,
}

/// The receiving half.
#[derive(Debug, Default)]
pub(crate) struct Receiver {
    /// Every sequence number below this has been received.
    cumulative: u64,
    /// Received chunks above `cumulative`.
    buffered: BTreeMap<u64, Chunk>,
    /// The message being reassembled.
    partial: Vec<u8>,
    /// The current message exceeded the size limit; drop until its FIN.
    discarding: bool,
    next_message: u64,
    ready: VecDeque<(MessageId, Vec<u8>)>,
    max_message_len: usize,
    /// Chunks received more than once (statistics).
    pub(crate) duplicates: u64,
    /// Messages dropped for exceeding the size limit (statistics; a peer bug).
    pub(crate) oversized: u64,
}

impl Receiver {
    pub(crate) fn new(max_message_len: usize) -> Self {
        Self {
            max_message_len,
            ..Self::default()
        }
    }

    /// Takes one chunk.
    pub(crate) fn on_chunk(&mut self, seq: u64, fin: bool, data: &[u8]) -> Arrival {
        if seq < self.cumulative
            || seq >= self.cumulative + RECV_WINDOW
            || self.buffered.contains_key(&seq)
        {
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        let arrival = if seq == self.cumulative {
            Arrival::InOrder
        } else {
            Arrival::OutOfOrder
        };
        self.buffered.insert(
            seq,
            Chunk {
                seq,
                fin,
                data: Bytes::copy_from_slice(data),
            },
        );
        while let Some(chunk) = self.buffered.remove(&self.cumulative) {
            self.cumulative += 1;
            self.assemble(chunk);
        }
        arrival
    }

    fn assemble(&mut self, chunk: Chunk) {
        if !self.discarding {
            if self.partial.len() + chunk.data.len() > self.max_message_len {
                self.discarding = true;
                self.partial = Vec::new();
            } else {
                self.partial.extend_from_slice(&chunk.data);
            }
        }
        if chunk.fin {
            let id = MessageId(self.next_message);
            self.next_message += 1;
            if std::mem::take(&mut self.discarding) {
                self.oversized += 1;
            } else {
                self.ready
                    .push_back((id, std::mem::take(&mut self.partial)));
            }
        }
    }

    /// The next complete message, in order.
    pub(crate) fn pop_message(&mut self) -> Option<(MessageId, Vec<u8>)> {
        self.ready.pop_front()
    }

    /// The acknowledgement describing what has arrived.
    pub(crate) fn ack_frame(&self) -> AckFrame {
        let mut ack = AckFrame {
            cumulative: self.cumulative,
            bitmap: [0; ACK_BITMAP_BYTES],
        };
        for &seq in self.buffered.keys() {
            // Buffered chunks are in (cumulative, cumulative + RECV_WINDOW).
            let i = seq - self.cumulative - 1;
            if let Some(byte) = ack.bitmap.get_mut((i / 8) as usize) {
                *byte |= 1 << (i % 8);
            }
        }
        ack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtt() -> RttEstimator {
        RttEstimator::new(
            Duration::from_millis(500),
            Duration::from_millis(100),
            Duration::from_secs(8),
        )
    }

    #[test]
    fn rto_follows_rfc6298_and_backs_off() {
        let mut r = rtt();
        assert_eq!(r.rto_after(1), Duration::from_millis(500));
        assert_eq!(r.rto_after(3), Duration::from_millis(2000));
        assert_eq!(r.rto_after(30), Duration::from_secs(8));
        r.sample(Duration::from_millis(100));
        // srtt 100, rttvar 50: rto = 100 + 200.
        assert_eq!(r.rto_after(1), Duration::from_millis(300));
        r.sample(Duration::from_millis(100));
        // rttvar 37.5, srtt 100: rto = 250.
        assert_eq!(r.rto_after(1), Duration::from_micros(250_000));
        assert_eq!(r.srtt(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn messages_are_chunked_and_reassembled_in_order() {
        let now = Instant::now();
        let mut s = Sender::new(4, 64, 1 << 20, rtt());
        let a = s.push(b"hello world").unwrap();
        let b = s.push(b"").unwrap();
        assert_eq!((a, b), (MessageId(0), MessageId(1)));
        let mut chunks = Vec::new();
        while let Some(c) = s.next_chunk(now, 100) {
            chunks.push(c);
        }
        assert_eq!(chunks.len(), 4);
        assert_eq!(
            chunks.iter().map(|c| c.fin).collect::<Vec<_>>(),
            [false, false, true, true]
        );
        let mut r = Receiver::new(1000);
        // Deliver in reverse order: nothing comes out until the first chunk arrives.
        for c in chunks.iter().rev() {
            let arrival = r.on_chunk(c.seq, c.fin, &c.data);
            assert_eq!(
                arrival,
                if c.seq == 0 {
                    Arrival::InOrder
                } else {
                    Arrival::OutOfOrder
                }
            );
        }
        assert_eq!(
            r.pop_message(),
            Some((MessageId(0), b"hello world".to_vec()))
        );
        assert_eq!(r.pop_message(), Some((MessageId(1), Vec::new())));
        assert_eq!(r.pop_message(), None);
        assert_eq!(r.on_chunk(1, false, b"o wo"), Arrival::Duplicate);
        assert_eq!(r.duplicates, 1);
        // The ack releases the sender and reports both messages delivered.
        s.on_ack(now + Duration::from_millis(50), &r.ack_frame());
        assert_eq!(s.pop_delivered(), Some(a));
        assert_eq!(s.pop_delivered(), Some(b));
        assert_eq!(s.unacked_chunks(), 0);
        assert_eq!(s.undelivered_messages(), 0);
    }

    #[test]
    fn ack_bitmap_reflects_gaps() {
        let mut r = Receiver::new(1000);
        for seq in [0, 2, 3, 9, 255] {
            r.on_chunk(seq, true, b"x");
        }
        let ack = r.ack_frame();
        assert_eq!(ack.cumulative, 1);
        assert_eq!(ack.selective().collect::<Vec<_>>(), vec![2, 3, 9, 255]);
        // 256 is the first sequence number beyond the window.
        assert_eq!(r.on_chunk(257, true, b"x"), Arrival::Duplicate);
        assert_eq!(r.on_chunk(256, true, b"x"), Arrival::OutOfOrder);
    }

    #[test]
    fn window_limits_in_flight_and_rto_retransmits() {
        let t0 = Instant::now();
        let mut s = Sender::new(10, 3, 1 << 20, rtt());
        for i in 0..5u8 {
            s.push(&[i]).unwrap();
        }
        let sent: Vec<u64> = std::iter::from_fn(|| s.next_chunk(t0, 100))
            .map(|c| c.seq)
            .collect();
        assert_eq!(sent, [0, 1, 2]);
        assert!(!s.has_sendable());
        assert_eq!(s.next_timeout(), Some(t0 + Duration::from_millis(500)));
        s.on_timeout(t0 + Duration::from_millis(499));
        assert!(!s.has_sendable());
        s.on_timeout(t0 + Duration::from_millis(500));
        let t1 = t0 + Duration::from_millis(500);
        let resent: Vec<u64> = std::iter::from_fn(|| s.next_chunk(t1, 100))
            .map(|c| c.seq)
            .collect();
        assert_eq!(resent, [0, 1, 2]);
        assert_eq!(s.retransmissions, 3);
        // Backed off: the second timeout is twice as long.
        assert_eq!(s.next_timeout(), Some(t1 + Duration::from_secs(1)));
        // Acknowledging 0 opens the window by one.
        let ack = AckFrame {
            cumulative: 1,
            ..AckFrame::default()
        };
        s.on_ack(t1, &ack);
        assert_eq!(s.pop_delivered(), Some(MessageId(0)));
        assert_eq!(s.next_chunk(t1, 100).map(|c| c.seq), Some(3));
        assert!(s.next_chunk(t1, 100).is_none());
    }

    #[test]
    fn three_later_acks_trigger_fast_retransmit() {
        let t0 = Instant::now();
        let mut s = Sender::new(10, 64, 1 << 20, rtt());
        for i in 0..5u8 {
            s.push(&[i]).unwrap();
        }
        for k in 0..5 {
            s.next_chunk(t0 + Duration::from_millis(k), 100).unwrap();
        }
        let mut r = Receiver::new(100);
        for seq in [1, 2] {
            r.on_chunk(seq, true, b"x");
        }
        s.on_ack(t0 + Duration::from_millis(20), &r.ack_frame());
        assert!(!s.has_sendable(), "two later acks are not enough");
        r.on_chunk(3, true, b"x");
        s.on_ack(t0 + Duration::from_millis(21), &r.ack_frame());
        assert_eq!(
            s.next_chunk(t0 + Duration::from_millis(22), 100)
                .map(|c| c.seq),
            Some(0)
        );
        assert!(s.next_chunk(t0 + Duration::from_millis(22), 100).is_none());
    }

    #[test]
    fn send_buffer_and_bogus_acks() {
        let now = Instant::now();
        let mut s = Sender::new(10, 64, 25, rtt());
        s.push(&[0; 20]).unwrap();
        assert_eq!(s.push(&[0; 6]), Err(ChatError::SendBufferFull));
        s.next_chunk(now, 100).unwrap();
        // Acknowledging chunks that were never sent is ignored.
        let ack = AckFrame {
            cumulative: 10,
            ..AckFrame::default()
        };
        s.on_ack(now, &ack);
        assert_eq!(s.unacked_chunks(), 1);
        assert_eq!(s.pop_delivered(), None);
        // A chunk too big for the room left is not taken.
        s.on_timeout(now + Duration::from_secs(1));
        assert!(s.next_chunk(now, 5).is_none());
        assert!(s.next_chunk(now, 10).is_some());
    }

    #[test]
    fn oversized_messages_are_dropped_but_numbered() {
        let mut r = Receiver::new(4);
        r.on_chunk(0, false, b"abc");
        r.on_chunk(1, true, b"de");
        r.on_chunk(2, true, b"ok");
        assert_eq!(r.pop_message(), Some((MessageId(1), b"ok".to_vec())));
        assert_eq!(r.oversized, 1);
    }
}
