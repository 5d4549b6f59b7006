//! Client-side STUN: one Binding transaction as a sans-IO state machine.
//!
//! The driver owns the socket and the clock, and drives it in the order every core here uses
//! ([`crate::transmit`]): after each input it sends every [`Transmit`]
//! [`BindingTransaction::poll_transmit`] gives (the request, and each retransmission when
//! due), then sleeps until [`BindingTransaction::poll_timeout`] and calls
//! [`BindingTransaction::handle_timeout`], feeding every datagram that arrives meanwhile to
//! [`BindingTransaction::handle_datagram`]. It stops when [`BindingTransaction::outcome`] is
//! set. The transaction has no events: the outcome is its one result.
//!
//! Retransmission follows RFC 8489 section 6.2.1: the request is resent after RTO, 2 RTO,
//! 4 RTO, ...; after the last send the client waits `last_wait_factor` RTO more before giving
//! up. A reply is accepted only from the address the transaction expects (so a server that
//! answers a CHANGE-REQUEST from the wrong address is caught, not believed) and only with the
//! transaction's own id.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::stun::{
    Attribute, ChangeRequest, Class, EncodeError, ErrorCode, Message, MessageWriter, Method,
    TransactionId, attr,
};
use crate::transmit::{SocketIndex, Transmit};

/// A fresh transaction id from `rng`, classic (128 bits, no cookie) or modern (96 bits).
pub fn random_transaction_id(rng: &mut crate::rng::SplitMix64, classic: bool) -> TransactionId {
    if classic {
        let mut id = [0u8; 16];
        rng.fill(&mut id);
        TransactionId::Classic(id)
    } else {
        let mut id = [0u8; 12];
        rng.fill(&mut id);
        TransactionId::Modern(id)
    }
}

/// How a transaction retransmits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransmitConfig {
    /// The first retransmission timeout.
    pub rto: Duration,
    /// How many times the request is sent in all (RFC 8489's Rc, default 7).
    pub max_sends: u32,
    /// After the last send, wait this many RTOs (RFC 8489's Rm, default 16).
    pub last_wait_factor: u32,
    /// Double the RTO after every send (RFC 8489). Off: resend every RTO, for short tests
    /// whose RTO already comes from a measured round trip.
    pub backoff: bool,
}

impl Default for RetransmitConfig {
    /// RFC 8489's defaults: RTO 500 ms, Rc 7, Rm 16 (39.5 s in all).
    fn default() -> Self {
        Self {
            rto: Duration::from_millis(500),
            max_sends: 7,
            last_wait_factor: 16,
            backoff: true,
        }
    }
}

/// What a Binding request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingRequest {
    /// Where to send it.
    pub server: SocketAddr,
    /// The transaction id; its form decides classic or modern.
    pub transaction_id: TransactionId,
    /// CHANGE-REQUEST flags; `None` sends no CHANGE-REQUEST.
    pub change: Option<ChangeRequest>,
    /// Where the reply must come from; `None`: from `server`.
    pub expect_from: Option<SocketAddr>,
    /// Add FINGERPRINT (modern only).
    pub fingerprint: bool,
}

/// What a successful Binding response told us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingResponse {
    /// Where the reply really came from.
    pub from: SocketAddr,
    /// Our address as the server saw it (XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS).
    pub mapped: Option<SocketAddr>,
    /// RESPONSE-ORIGIN or SOURCE-ADDRESS: where the server says it sent from.
    pub origin: Option<SocketAddr>,
    /// OTHER-ADDRESS or CHANGED-ADDRESS: the server's other IP and port.
    pub other: Option<SocketAddr>,
    /// Time from the first send to the reply (inflated by retransmissions, see `sends`).
    pub rtt: Duration,
    /// How many times the request had been sent when the reply came.
    pub sends: u32,
}

/// How a transaction ended without a success response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    /// No acceptable reply before the last timeout.
    #[error("no response after {sends} attempts")]
    Timeout {
        /// Requests sent.
        sends: u32,
    },
    /// The server answered with an error response.
    #[error("server answered with error {code}")]
    ErrorResponse {
        /// The ERROR-CODE value (0 if missing).
        code: u16,
    },
    /// The request could not be encoded.
    #[error("cannot encode the request: {0}")]
    Encode(#[from] EncodeError),
}

/// One Binding transaction; see the [module docs](self).
#[derive(Debug)]
pub struct BindingTransaction {
    request: BindingRequest,
    config: RetransmitConfig,
    started: Instant,
    sends: u32,
    next_send: Option<Instant>,
    deadline: Instant,
    outcome: Option<Result<BindingResponse, BindingError>>,
    /// Replies from an unexpected address, for diagnosing servers that ignore CHANGE-REQUEST.
    wrong_source: Option<SocketAddr>,
    any_source: bool,
    socket: SocketIndex,
    response_port: Option<u16>,
}

impl BindingTransaction {
    /// Starts a transaction; the first send is due at `now`.
    pub fn new(request: BindingRequest, config: RetransmitConfig, now: Instant) -> Self {
        Self {
            request,
            config,
            started: now,
            sends: 0,
            next_send: Some(now),
            deadline: now,
            outcome: None,
            wrong_source: None,
            any_source: false,
            socket: SocketIndex::ENDPOINT,
            response_port: None,
        }
    }

    /// Adds RESPONSE-PORT (RFC 5780 section 7.5): the server answers to our reflexive IP at
    /// `port` instead of the port the request came from. A port mapping's reachability check
    /// uses it to have the server send to the mapped port (modern requests only).
    pub fn with_response_port(mut self, port: u16) -> Self {
        self.response_port = Some(port);
        self
    }

    /// Accepts a reply with our transaction id from any address. For callers that cannot know
    /// the reply's source in advance; [`BindingResponse::from`] still says where it came from.
    pub fn accept_any_source(mut self) -> Self {
        self.any_source = true;
        self
    }

    /// Sends from, and listens on, `socket` (default [`SocketIndex::ENDPOINT`]), for drivers
    /// that run transactions on more than one socket.
    pub fn on_socket(mut self, socket: SocketIndex) -> Self {
        self.socket = socket;
        self
    }

    /// The request's parameters.
    pub fn request(&self) -> &BindingRequest {
        &self.request
    }

    /// Writes the request into `buf` if a send is due at `now`; the [`Transmit`] says how many
    /// bytes, where to and from which socket.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if self.outcome.is_some() || self.next_send.is_none_or(|t| t > now) {
            return None;
        }
        let len = match self.encode(buf) {
            Ok(len) => len,
            Err(e) => {
                self.outcome = Some(Err(e.into()));
                return None;
            }
        };
        self.sends += 1;
        // RTO doubles with every send: the k-th send waits RTO * 2^(k-1).
        let wait = if self.config.backoff {
            self.config.rto * 2u32.saturating_pow(self.sends - 1)
        } else {
            self.config.rto
        };
        if self.sends >= self.config.max_sends {
            self.next_send = None;
            self.deadline = now + self.config.rto * self.config.last_wait_factor;
        } else {
            self.next_send = Some(now + wait);
            self.deadline = now + wait;
        }
        Some(Transmit {
            destination: self.request.server,
            socket: self.socket,
            ttl: None,
            size: len,
        })
    }

    fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let tid = self.request.transaction_id;
        let mut w = MessageWriter::new(buf, Method::BINDING, Class::Request, tid)?;
        if let Some(change) = self.request.change {
            w.add_change_request(change)?;
        }
        if let Some(port) = self.response_port
            && !tid.is_classic()
        {
            w.add_response_port(port)?;
        }
        if self.request.fingerprint && !tid.is_classic() {
            w.add_fingerprint()?;
        }
        Ok(w.finish())
    }

    /// When the driver must call [`BindingTransaction::handle_timeout`] (or
    /// [`BindingTransaction::poll_transmit`]) next; `None` once finished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.outcome.is_some() {
            return None;
        }
        Some(self.next_send.unwrap_or(self.deadline))
    }

    /// Advances time: gives up after the last wait.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.outcome.is_none() && self.next_send.is_none() && now >= self.deadline {
            self.outcome = Some(Err(BindingError::Timeout { sends: self.sends }));
        }
    }

    /// Offers a datagram received on `socket` from `from`; returns true if it belonged to this
    /// transaction (even if it was refused for coming from the wrong address). Datagrams on
    /// another socket than the transaction's are never its own.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        socket: SocketIndex,
        from: SocketAddr,
        data: &[u8],
    ) -> bool {
        if socket != self.socket {
            return false;
        }
        let Ok(msg) = Message::parse(data) else {
            return false;
        };
        if msg.transaction_id() != self.request.transaction_id || self.outcome.is_some() {
            return false;
        }
        let expected = self.request.expect_from.unwrap_or(self.request.server);
        if from != expected && !self.any_source {
            self.wrong_source = Some(from);
            return true;
        }
        match msg.class() {
            Class::SuccessResponse => {
                let response = read_response(&msg, from, now - self.started, self.sends);
                self.outcome = Some(Ok(response));
            }
            Class::ErrorResponse => {
                let code = match msg.get(attr::ERROR_CODE).map(|a| a.parse()) {
                    Some(Ok(Attribute::ErrorCode(ErrorCode { code, .. }))) => code,
                    _ => 0,
                };
                self.outcome = Some(Err(BindingError::ErrorResponse { code }));
            }
            Class::Request | Class::Indication => return false,
        }
        true
    }

    /// The result, once there is one.
    pub fn outcome(&self) -> Option<&Result<BindingResponse, BindingError>> {
        self.outcome.as_ref()
    }

    /// The last address a reply with our id came from when it was not the expected one.
    pub fn wrong_source(&self) -> Option<SocketAddr> {
        self.wrong_source
    }
}

fn read_response(
    msg: &Message<'_>,
    from: SocketAddr,
    rtt: Duration,
    sends: u32,
) -> BindingResponse {
    let mut response = BindingResponse {
        from,
        mapped: None,
        origin: None,
        other: None,
        rtt,
        sends,
    };
    let mut plain_mapped = None;
    for raw in msg.attributes() {
        match raw.parse() {
            Ok(Attribute::XorMappedAddress(a)) => response.mapped = Some(a),
            Ok(Attribute::MappedAddress(a)) => plain_mapped = Some(a),
            Ok(Attribute::ResponseOrigin(a) | Attribute::SourceAddress(a)) => {
                response.origin = Some(a)
            }
            Ok(Attribute::OtherAddress(a) | Attribute::ChangedAddress(a)) => {
                response.other = Some(a)
            }
            _ => {}
        }
    }
    response.mapped = response.mapped.or(plain_mapped);
    response
}

#[cfg(test)]
mod tests;
