//! The classifier as a sans-IO state machine over several sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::decide::{Observations, ProbeResult, decide};
use super::lifetime::LifetimeSearch;
use super::report::Report;
use crate::rng::SplitMix64;
use crate::stun::{ChangeRequest, Class, Message, MessageWriter, Method, TransactionId};
use crate::stun_client::{
    BindingError, BindingRequest, BindingTransaction, RetransmitConfig, random_transaction_id,
};
use crate::transmit::{SocketIndex, Transmit};

/// The sockets a classification uses, each bound by the driver to the same local IP with its
/// own port. Tests that could bias each other (one test's outbound packet opening the NAT's
/// filter for another) never share a socket.
pub mod socket {
    use crate::transmit::SocketIndex;

    /// Tests I, II and III of RFC 5780 section 4.3 (mapping), and the hairpin receiver.
    pub const MAIN: SocketIndex = SocketIndex(0);
    /// Filtering test II: asks for a reply from the other IP and port.
    pub const FILTER_EIF: SocketIndex = SocketIndex(1);
    /// Filtering test III: asks for a reply from the other port.
    pub const FILTER_ADF: SocketIndex = SocketIndex(2);
    /// Sends to our own mapped address, to test hairpinning.
    pub const HAIRPIN: SocketIndex = SocketIndex(3);
    /// Opens its own filter to A2:P2, then asks for a reply from there: proves the server
    /// really changes its source.
    pub const CONTROL: SocketIndex = SocketIndex(4);
    /// One more port allocation sample.
    pub const ALLOCATION: SocketIndex = SocketIndex(5);
    /// The lifetime search's long-lived binding (X in RFC 5780 section 4.6).
    pub const LIFETIME_X: SocketIndex = SocketIndex(6);
    /// The lifetime search's prober (Y).
    pub const LIFETIME_Y: SocketIndex = SocketIndex(7);
    /// How many sockets the driver must bind.
    pub const COUNT: usize = 8;
}

/// One-shot requests taken for a clean RTT sample when test I was retransmitted.
const RTT_SAMPLES: u32 = 3;

/// How to classify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassifierConfig {
    /// The server's primary address (A1:P1).
    pub server: SocketAddr,
    /// Send classic (RFC 3489) requests instead of RFC 8489 ones.
    pub classic: bool,
    /// First RTO of test I; it doubles, so UDP-blocked is declared after about 25 RTOs.
    pub first_rto: Duration,
    /// Lower and upper bound of the RTO derived from the measured round trip.
    pub min_rto: Duration,
    /// See `min_rto`.
    pub max_rto: Duration,
    /// Sends per test after the first (constant interval).
    pub sends: u32,
    /// Search the binding lifetime up to this long (RFC 5780 section 4.6); `None` skips it.
    pub lifetime_max: Option<Duration>,
}

impl ClassifierConfig {
    /// Defaults for classifying against `server`.
    pub fn new(server: SocketAddr) -> Self {
        Self {
            server,
            classic: false,
            first_rto: Duration::from_millis(50),
            min_rto: Duration::from_millis(20),
            max_rto: Duration::from_millis(500),
            sends: 5,
            lifetime_max: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    First,
    /// A fresh round-trip sample, taken when test I needed retransmissions (Karn's rule: a
    /// retransmitted exchange does not say which send was answered).
    RttSample,
    OtherIp,
    OtherBoth,
    Eif,
    Adf,
    ControlOpen,
    ControlChange,
    Allocation,
}

struct Probe {
    purpose: Purpose,
    transaction: BindingTransaction,
}

/// The hairpin test: a request from [`socket::HAIRPIN`] to our own mapped address, resent at
/// the phase's RTO until [`socket::MAIN`] receives it or the sends run out.
struct Hairpin {
    tid: TransactionId,
    to: SocketAddr,
    sends_left: u32,
    next: Instant,
    rto: Duration,
    deadline: Instant,
    seen: Option<bool>,
}

/// Classifies the NAT between the driver's sockets and a STUN server.
///
/// Drive it like every core here, in the order of [`crate::transmit`]: after `new` and after
/// every input, send everything [`Classifier::poll_transmit`] gives (each [`Transmit`] names
/// which of the [`socket`]s sends it), then sleep until [`Classifier::poll_timeout`]; feed
/// received datagrams to [`Classifier::handle_datagram`] and call
/// [`Classifier::handle_timeout`] when the time is due, until [`Classifier::report`] is `Some`
/// (the classifier has no events: the report is its one result).
pub struct Classifier {
    config: ClassifierConfig,
    locals: [SocketAddr; socket::COUNT],
    rng: SplitMix64,
    started: Instant,
    probes: Vec<Probe>,
    obs: Observations,
    hairpin: Option<Hairpin>,
    phase_two_started: bool,
    rto: Duration,
    /// The round trip phase two was timed with (a clean sample when test I was retransmitted).
    measured_rtt: Option<Duration>,
    lifetime: Option<LifetimeSearch>,
    /// The report of the main tests while the lifetime search still runs.
    pending: Option<Report>,
    report: Option<Report>,
}

impl Classifier {
    /// Starts a classification; `locals` are the bound addresses of the driver's sockets
    /// (index = [`socket`] constant), `seed` makes transaction ids.
    pub fn new(
        config: ClassifierConfig,
        locals: [SocketAddr; socket::COUNT],
        seed: u64,
        now: Instant,
    ) -> Self {
        let obs = Observations {
            server: config.server,
            main_local: locals[socket::MAIN.index()],
            control_local: locals[socket::CONTROL.index()],
            allocation_local: locals[socket::ALLOCATION.index()],
            first: ProbeResult::Pending,
            other_ip: ProbeResult::Pending,
            other_both: ProbeResult::Pending,
            eif: ProbeResult::Pending,
            adf: ProbeResult::Pending,
            control_open: ProbeResult::Pending,
            control_change: ProbeResult::Pending,
            allocation: ProbeResult::Pending,
            hairpin: None,
        };
        let mut classifier = Self {
            config,
            locals,
            rng: SplitMix64::new(seed),
            started: now,
            probes: Vec::new(),
            obs,
            hairpin: None,
            phase_two_started: false,
            rto: config.min_rto,
            measured_rtt: None,
            lifetime: None,
            pending: None,
            report: None,
        };
        let first = classifier.first_retransmit();
        classifier.start(
            socket::MAIN,
            Purpose::First,
            config.server,
            config.server,
            None,
            first,
            now,
        );
        classifier
    }

    fn tid(&mut self) -> TransactionId {
        random_transaction_id(&mut self.rng, self.config.classic)
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        socket: SocketIndex,
        purpose: Purpose,
        to: SocketAddr,
        expect_from: SocketAddr,
        change: Option<ChangeRequest>,
        retransmit: RetransmitConfig,
        now: Instant,
    ) {
        let request = BindingRequest {
            server: to,
            transaction_id: self.tid(),
            change,
            expect_from: Some(expect_from),
            fingerprint: false,
        };
        let transaction = BindingTransaction::new(request, retransmit, now).on_socket(socket);
        self.probes.push(Probe {
            purpose,
            transaction,
        });
    }

    /// Test I's schedule: RFC 8489 back-off from `first_rto`, five sends.
    fn first_retransmit(&self) -> RetransmitConfig {
        RetransmitConfig {
            rto: self.config.first_rto,
            max_sends: 5,
            last_wait_factor: 10,
            backoff: true,
        }
    }

    fn phase_retransmit(&self) -> RetransmitConfig {
        RetransmitConfig {
            rto: self.rto,
            max_sends: self.config.sends,
            last_wait_factor: 2,
            backoff: false,
        }
    }

    /// The next datagram to send now, written into `buf`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if self.report.is_some() {
            return None;
        }
        for probe in &mut self.probes {
            if let Some(t) = probe.transaction.poll_transmit(now, buf) {
                return Some(t);
            }
        }
        if let Some(h) = &mut self.hairpin {
            if h.seen.is_none() && h.sends_left > 0 && h.next <= now {
                let w = MessageWriter::new(buf, Method::BINDING, Class::Request, h.tid).ok()?;
                let len = w.finish();
                h.sends_left -= 1;
                h.next = now + h.rto;
                return Some(Transmit {
                    destination: h.to,
                    socket: socket::HAIRPIN,
                    ttl: None,
                    size: len,
                });
            }
        }
        if let Some(search) = &mut self.lifetime {
            return search.poll_transmit(now, buf);
        }
        None
    }

    /// A datagram arrived on `socket` from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketIndex,
        from: SocketAddr,
        data: &[u8],
    ) {
        if self.report.is_some() {
            return;
        }
        if let Some(search) = &mut self.lifetime {
            search.handle_datagram(now, socket, from, data);
        } else {
            let mut consumed = false;
            for probe in &mut self.probes {
                if probe.transaction.handle_datagram(now, socket, from, data) {
                    consumed = true;
                    break;
                }
            }
            if !consumed && socket == socket::MAIN {
                self.check_hairpin(data);
            }
        }
        self.advance(now);
    }

    fn check_hairpin(&mut self, data: &[u8]) {
        let Some(h) = &mut self.hairpin else { return };
        if let Ok(msg) = Message::parse(data) {
            if msg.class() == Class::Request && msg.transaction_id() == h.tid {
                h.seen = Some(true);
            }
        }
    }

    /// When to call [`Classifier::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.report.is_some() {
            return None;
        }
        let probes = self
            .probes
            .iter()
            .filter_map(|p| p.transaction.poll_timeout());
        let hairpin = self.hairpin.as_ref().filter(|h| h.seen.is_none()).map(|h| {
            if h.sends_left > 0 {
                h.next.min(h.deadline)
            } else {
                h.deadline
            }
        });
        let lifetime = self.lifetime.as_ref().and_then(|s| s.poll_timeout());
        probes.chain(hairpin).chain(lifetime).min()
    }

    /// Time has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.report.is_some() {
            return;
        }
        for probe in &mut self.probes {
            probe.transaction.handle_timeout(now);
        }
        if let Some(h) = &mut self.hairpin {
            if h.seen.is_none() && now >= h.deadline {
                h.seen = Some(false);
            }
        }
        if let Some(search) = &mut self.lifetime {
            search.handle_timeout(now);
        }
        self.advance(now);
    }

    /// Records finished probes, starts the ones that waited on them, and decides when all
    /// are done.
    fn advance(&mut self, now: Instant) {
        let mut finished = Vec::new();
        for probe in &self.probes {
            if let Some(outcome) = probe.transaction.outcome() {
                let result = match outcome {
                    Ok(r) => ProbeResult::Answered(*r),
                    Err(BindingError::ErrorResponse { code }) => ProbeResult::Error(*code),
                    Err(_) => match probe.transaction.wrong_source() {
                        Some(from) => ProbeResult::WrongSource(from),
                        None => ProbeResult::Silent,
                    },
                };
                finished.push((probe.purpose, result));
            }
        }
        self.probes.retain(|p| p.transaction.outcome().is_none());
        for (purpose, result) in finished {
            self.record(purpose, result, now);
        }
        if let Some(search) = &self.lifetime {
            if let Some(lifetime) = search.result() {
                if let Some(mut report) = self.pending.take() {
                    report.binding_lifetime = Some(lifetime);
                    report.server.response_port = search.response_port_supported();
                    report.elapsed = now - self.started;
                    self.report = Some(report);
                }
            }
            return;
        }
        let hairpin_done = self.hairpin.as_ref().is_none_or(|h| h.seen.is_some());
        if self.phase_two_started && self.probes.is_empty() && hairpin_done {
            self.finish(now);
        }
    }

    fn record(&mut self, purpose: Purpose, result: ProbeResult, now: Instant) {
        let o = &mut self.obs;
        match purpose {
            Purpose::First => {
                o.first = result;
                match result {
                    ProbeResult::Answered(first) if first.sends > 1 => {
                        // Three one-shot requests 20 ms apart, each with its own id and a
                        // single send, so an answer is an exact sample; the first one wins.
                        let server = self.config.server;
                        let once = RetransmitConfig {
                            rto: first.rtt + Duration::from_millis(10),
                            max_sends: 1,
                            last_wait_factor: 1,
                            backoff: false,
                        };
                        for k in 0..RTT_SAMPLES {
                            let at = now + Duration::from_millis(20) * k;
                            self.start(
                                socket::MAIN,
                                Purpose::RttSample,
                                server,
                                server,
                                None,
                                once,
                                at,
                            );
                        }
                    }
                    _ => self.start_phase_two(now, None),
                }
            }
            Purpose::RttSample if self.phase_two_started => {}
            Purpose::RttSample => match result {
                ProbeResult::Answered(r) => {
                    self.probes.retain(|p| p.purpose != Purpose::RttSample);
                    self.start_phase_two(now, Some(r.rtt));
                }
                _ if self.probes.iter().any(|p| p.purpose == Purpose::RttSample) => {}
                _ => self.start_phase_two(now, None),
            },
            Purpose::OtherIp => {
                o.other_ip = result;
                if let ProbeResult::Answered(r) = result {
                    let to = r.from;
                    let other_both = SocketAddr::new(to.ip(), self.obs_other_port());
                    let rt = self.phase_retransmit();
                    self.start(
                        socket::MAIN,
                        Purpose::OtherBoth,
                        other_both,
                        other_both,
                        None,
                        rt,
                        now,
                    );
                }
            }
            Purpose::OtherBoth => o.other_both = result,
            Purpose::Eif => o.eif = result,
            Purpose::Adf => o.adf = result,
            Purpose::ControlOpen => {
                o.control_open = result;
                if let (ProbeResult::Answered(_), Some(other)) = (result, self.other_address()) {
                    let change = ChangeRequest {
                        change_ip: true,
                        change_port: true,
                    };
                    let rt = self.phase_retransmit();
                    let server = self.config.server;
                    self.start(
                        socket::CONTROL,
                        Purpose::ControlChange,
                        server,
                        other,
                        Some(change),
                        rt,
                        now,
                    );
                }
            }
            Purpose::ControlChange => o.control_change = result,
            Purpose::Allocation => o.allocation = result,
        }
    }

    fn other_address(&self) -> Option<SocketAddr> {
        match self.obs.first {
            ProbeResult::Answered(r) => r.other,
            _ => None,
        }
    }

    fn obs_other_port(&self) -> u16 {
        self.other_address().map_or(0, |a| a.port())
    }

    /// After test I: every other test at once, each on its own socket, with an RTO from the
    /// measured round trip.
    fn start_phase_two(&mut self, now: Instant, sample: Option<Duration>) {
        self.phase_two_started = true;
        let ProbeResult::Answered(first) = self.obs.first else {
            return;
        };
        let (Some(other), Some(mapped)) = (first.other, first.mapped) else {
            return;
        };
        // A clean sample (test I, or the extra one taken after test I was retransmitted) is
        // the RTT. Without one, test I's time divided by its sends overestimates it, which is
        // safe: slower, never wrong (an underestimate could cut answered tests short).
        let rtt = match (first.sends, sample) {
            (1, _) => first.rtt,
            (_, Some(sample)) => sample,
            (sends, None) => first.rtt / sends.max(1),
        };
        self.measured_rtt = Some(rtt);
        self.rto =
            (rtt * 4 + Duration::from_millis(5)).clamp(self.config.min_rto, self.config.max_rto);
        let server = self.config.server;
        let a2p1 = SocketAddr::new(other.ip(), server.port());
        let a1p2 = SocketAddr::new(server.ip(), other.port());
        let rt = self.phase_retransmit();
        // Allocation samples first, so consecutive new mappings are ours alone.
        self.start(
            socket::CONTROL,
            Purpose::ControlOpen,
            other,
            other,
            None,
            rt,
            now,
        );
        self.start(
            socket::ALLOCATION,
            Purpose::Allocation,
            server,
            server,
            None,
            rt,
            now,
        );
        self.start(socket::MAIN, Purpose::OtherIp, a2p1, a2p1, None, rt, now);
        let both = ChangeRequest {
            change_ip: true,
            change_port: true,
        };
        self.start(
            socket::FILTER_EIF,
            Purpose::Eif,
            server,
            other,
            Some(both),
            rt,
            now,
        );
        let port = ChangeRequest {
            change_ip: false,
            change_port: true,
        };
        self.start(
            socket::FILTER_ADF,
            Purpose::Adf,
            server,
            a1p2,
            Some(port),
            rt,
            now,
        );
        if mapped != self.locals[socket::MAIN.index()] {
            let tid = self.tid();
            let deadline = now + self.rto * (self.config.sends + 1);
            self.hairpin = Some(Hairpin {
                tid,
                to: mapped,
                sends_left: self.config.sends,
                next: now,
                rto: self.rto,
                deadline,
                seen: None,
            });
        }
    }

    fn finish(&mut self, now: Instant) {
        self.obs.hairpin = self.hairpin.as_ref().and_then(|h| h.seen);
        let mut report = decide(&self.obs, now - self.started);
        report.rtt = self.measured_rtt.or(report.rtt);
        let searchable = report
            .mapped_address
            .is_some_and(|m| m != self.locals[socket::MAIN.index()])
            && report.unsupported_reason.is_none();
        match self.config.lifetime_max {
            Some(max) if searchable && self.lifetime.is_none() => {
                let server = self.config.server;
                let seed = self.rng.next_u64();
                let rto = self.rto;
                let classic = self.config.classic;
                self.lifetime = Some(LifetimeSearch::new(server, max, rto, classic, seed, now));
                self.pending = Some(report);
            }
            _ => self.report = Some(report),
        }
    }

    /// The report, once the classification is complete.
    pub fn report(&self) -> Option<&Report> {
        self.report.as_ref()
    }
}
