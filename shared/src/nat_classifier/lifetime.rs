//! Binding lifetime discovery (RFC 5780 section 4.6): how long a NAT mapping survives silence.
//!
//! Socket X sends a Binding request (creating or refreshing its mapping Pa:Pp) and then stays
//! silent for T. Socket Y then asks the server, with RESPONSE-PORT = Pp, to answer to Pa:Pp.
//! If X receives that answer, the mapping outlived T. A first step with T = 0 checks that the
//! server honours RESPONSE-PORT at all (if the answer comes to Y instead, it does not, and no
//! lifetime is claimed); then T = max, then a binary search down to a resolution of
//! max(1 s, max/16). Every step refreshes X first, since some NATs refresh mappings only on
//! outbound traffic.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::machine::socket;
use super::report::BindingLifetime;
use crate::rng::SplitMix64;
use crate::stun::{Class, Message, MessageWriter, Method, TransactionId};
use crate::stun_client::{
    BindingRequest, BindingTransaction, RetransmitConfig, random_transaction_id,
};
use crate::transmit::{SocketIndex, Transmit};

enum Stage {
    /// X sends a plain request.
    Refresh(Box<BindingTransaction>),
    /// X stays silent until `until`; its mapped port is `port`.
    Wait { until: Instant, port: u16 },
    /// Y's RESPONSE-PORT request is out; where the answer lands decides.
    Probe {
        tid: TransactionId,
        port: u16,
        sends_left: u32,
        next: Instant,
        deadline: Instant,
    },
}

/// The search; driven by the classifier once its other tests are done.
pub struct LifetimeSearch {
    server: SocketAddr,
    max: Duration,
    rto: Duration,
    classic: bool,
    rng: SplitMix64,
    /// Idle time being tested now.
    testing: Duration,
    calibrated: bool,
    survived: Duration,
    died: Option<Duration>,
    stage: Stage,
    response_port: Option<bool>,
    result: Option<BindingLifetime>,
}

impl LifetimeSearch {
    /// Starts with the RESPONSE-PORT calibration (T = 0).
    pub fn new(
        server: SocketAddr,
        max: Duration,
        rto: Duration,
        classic: bool,
        seed: u64,
        now: Instant,
    ) -> Self {
        let mut search = Self {
            server,
            max,
            rto,
            classic,
            rng: SplitMix64::new(seed),
            testing: Duration::ZERO,
            calibrated: false,
            survived: Duration::ZERO,
            died: None,
            stage: Stage::Wait {
                until: now,
                port: 0,
            },
            response_port: None,
            result: None,
        };
        search.stage = Stage::Refresh(Box::new(search.refresh(now)));
        search
    }

    fn tid(&mut self) -> TransactionId {
        random_transaction_id(&mut self.rng, self.classic)
    }

    fn refresh(&mut self, now: Instant) -> BindingTransaction {
        let request = BindingRequest {
            server: self.server,
            transaction_id: self.tid(),
            change: None,
            expect_from: None,
            fingerprint: false,
        };
        let retransmit = RetransmitConfig {
            rto: self.rto,
            max_sends: 5,
            last_wait_factor: 2,
            backoff: false,
        };
        BindingTransaction::new(request, retransmit, now).on_socket(socket::LIFETIME_X)
    }

    /// Whether the server honoured RESPONSE-PORT (known after the first step).
    pub fn response_port_supported(&self) -> Option<bool> {
        self.response_port
    }

    /// The outcome, once the search has ended.
    pub fn result(&self) -> Option<BindingLifetime> {
        self.result
    }

    pub(crate) fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        match &mut self.stage {
            Stage::Refresh(t) => t.poll_transmit(now, buf),
            Stage::Probe {
                tid,
                port,
                sends_left,
                next,
                ..
            } => {
                if *sends_left == 0 || *next > now {
                    return None;
                }
                let mut w = MessageWriter::new(buf, Method::BINDING, Class::Request, *tid).ok()?;
                w.add_response_port(*port).ok()?;
                let len = w.finish();
                *sends_left -= 1;
                *next = now + self.rto;
                Some(Transmit {
                    destination: self.server,
                    socket: socket::LIFETIME_Y,
                    ttl: None,
                    size: len,
                })
            }
            Stage::Wait { .. } => None,
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.result.is_some() {
            return None;
        }
        match &self.stage {
            Stage::Refresh(t) => t.poll_timeout(),
            Stage::Wait { until, .. } => Some(*until),
            Stage::Probe {
                sends_left,
                next,
                deadline,
                ..
            } => Some(if *sends_left > 0 {
                (*next).min(*deadline)
            } else {
                *deadline
            }),
        }
    }

    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        on: SocketIndex,
        from: SocketAddr,
        data: &[u8],
    ) {
        match &mut self.stage {
            Stage::Refresh(t) if on == socket::LIFETIME_X => {
                t.handle_datagram(now, on, from, data);
                self.after_refresh(now);
            }
            Stage::Probe { tid, .. } => {
                let Ok(msg) = Message::parse(data) else {
                    return;
                };
                if msg.transaction_id() != *tid || msg.class() != Class::SuccessResponse {
                    return;
                }
                let alive = on == socket::LIFETIME_X;
                if !self.calibrated && on == socket::LIFETIME_Y {
                    // At T = 0 the answer went to Y: the server ignores RESPONSE-PORT.
                    self.response_port = Some(false);
                    self.result = Some(BindingLifetime::Unsupported);
                    return;
                }
                self.step_done(alive, now);
            }
            _ => {}
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match &mut self.stage {
            Stage::Refresh(t) => {
                t.handle_timeout(now);
                self.after_refresh(now);
            }
            Stage::Wait { until, port } if *until <= now => {
                let (port, tid) = (*port, self.tid());
                let deadline = now + self.rto * 6;
                self.stage = Stage::Probe {
                    tid,
                    port,
                    sends_left: 5,
                    next: now,
                    deadline,
                };
            }
            Stage::Probe { deadline, .. } if *deadline <= now => self.step_done(false, now),
            _ => {}
        }
    }

    fn after_refresh(&mut self, now: Instant) {
        let Stage::Refresh(t) = &self.stage else {
            return;
        };
        match t.outcome() {
            Some(Ok(r)) => match r.mapped {
                Some(mapped) => {
                    self.stage = Stage::Wait {
                        until: now + self.testing,
                        port: mapped.port(),
                    };
                }
                None => self.result = Some(BindingLifetime::Unsupported),
            },
            Some(Err(_)) => self.result = Some(BindingLifetime::Unsupported),
            None => {}
        }
    }

    fn step_done(&mut self, alive: bool, now: Instant) {
        if !self.calibrated {
            self.calibrated = true;
            if !alive {
                self.response_port = Some(false);
                self.result = Some(BindingLifetime::Unsupported);
                return;
            }
            self.response_port = Some(true);
            self.testing = self.max;
        } else if alive {
            self.survived = self.survived.max(self.testing);
        } else {
            self.died = Some(self.died.map_or(self.testing, |d| d.min(self.testing)));
        }
        let resolution = (self.max / 16).max(Duration::from_secs(1));
        match self.died {
            _ if self.calibrated && self.survived >= self.max => {
                self.result = Some(BindingLifetime::AtLeast(self.max));
                return;
            }
            Some(died) if died.saturating_sub(self.survived) <= resolution => {
                self.result = Some(BindingLifetime::Between {
                    at_least: self.survived,
                    less_than: died,
                });
                return;
            }
            Some(died) if self.testing != self.max || !alive => {
                self.testing = self.survived + (died - self.survived) / 2;
            }
            _ => {}
        }
        let refresh = self.refresh(now);
        self.stage = Stage::Refresh(Box::new(refresh));
    }
}
