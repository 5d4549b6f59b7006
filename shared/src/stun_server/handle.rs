//! One request in, at most one response out.

use std::net::SocketAddr;
use std::time::Instant;

use super::template::Templates;
use super::{
    ConfigError, MAX_SOFTWARE_LEN, RateLimiter, RequestKind, ServerConfig, ServerSocket,
    ServerStats, Transport,
};
use crate::stun::{
    Attribute, ChangeRequest, Class, EncodeError, HEADER_LEN, Message, MessageWriter, Method,
    TransactionId, attr,
};
use crate::transmit::Transmit;

/// At most this many unknown attribute types are listed in a 420 response.
pub const MAX_UNKNOWN_LISTED: usize = 16;

/// Largest address attribute: 4-byte header and an IPv6 value.
const ADDRESS_ATTR: usize = 4 + 20;

/// The most a response can exceed its request by, in bytes: every response without PADDING fits
/// in `HEADER_LEN + 4 addresses + SOFTWARE + FINGERPRINT`, and the smallest request is a bare
/// header. PADDING is echoed at the request's own length, so it adds as much to the response as
/// it did to the request. A bare 20-byte IPv4 request gets 96 bytes back (4.8x) with the default SOFTWARE; see
/// docs/STUN-SERVER.md for the amplification table.
pub const MAX_RESPONSE_OVERHEAD: usize =
    HEADER_LEN + 4 * ADDRESS_ATTR + (4 + MAX_SOFTWARE_LEN) + 8 - HEADER_LEN;

/// A datagram (or a framed TCP message) handed to the server.
#[derive(Clone, Copy, Debug)]
pub struct Received<'a> {
    /// Which server socket it arrived on (for TCP: the socket whose address it was sent to).
    pub local: ServerSocket,
    /// UDP or TCP.
    pub transport: Transport,
    /// The sender.
    pub from: SocketAddr,
    /// The bytes: one whole message.
    pub data: &'a [u8],
}

/// The STUN server state machine; see the [module docs](super).
#[derive(Debug)]
pub struct StunServer {
    config: ServerConfig,
    limiter: RateLimiter,
    stats: ServerStats,
    /// Prebuilt responses to bare Binding requests, derived from `config` (which never changes).
    templates: Templates,
}

/// What the attribute scan of a request found.
#[derive(Default)]
struct RequestAttributes {
    change: ChangeRequest,
    response_port: Option<u16>,
    padding_len: Option<usize>,
    response_address: bool,
    malformed: bool,
    unknown: [u16; MAX_UNKNOWN_LISTED],
    unknown_count: usize,
}

/// Attribute types a request may carry that this server understands (or knowingly ignores:
/// authentication attributes, since this server asks for no credentials, and the classic
/// attributes a client has no business sending but which are harmless).
fn understood(typ: u16) -> bool {
    matches!(
        typ,
        attr::MAPPED_ADDRESS
            ..=attr::REFLECTED_FROM
                | attr::REALM
                | attr::NONCE
                | attr::MESSAGE_INTEGRITY_SHA256
                | attr::PASSWORD_ALGORITHM
                | attr::USERHASH
                | attr::XOR_MAPPED_ADDRESS
                | attr::PADDING
                | attr::RESPONSE_PORT
    )
}

impl RequestAttributes {
    fn scan(message: &Message<'_>) -> Self {
        let mut found = Self::default();
        for raw in message.attributes() {
            match raw.typ {
                attr::CHANGE_REQUEST => match raw.parse() {
                    Ok(Attribute::ChangeRequest(change)) => found.change = change,
                    _ => found.malformed = true,
                },
                attr::RESPONSE_PORT => match raw.parse() {
                    Ok(Attribute::ResponsePort(port)) if port != 0 => {
                        found.response_port = Some(port)
                    }
                    _ => found.malformed = true,
                },
                attr::PADDING => found.padding_len = Some(raw.value.len()),
                attr::RESPONSE_ADDRESS => found.response_address = true,
                typ if understood(typ) || !attr::is_comprehension_required(typ) => {}
                typ => {
                    let listed = &found.unknown[..found.unknown_count];
                    if found.unknown_count < MAX_UNKNOWN_LISTED && !listed.contains(&typ) {
                        found.unknown[found.unknown_count] = typ;
                        found.unknown_count += 1;
                    }
                }
            }
        }
        found
    }
}

/// An error response to build.
struct ErrorReply<'a> {
    code: u16,
    reason: &'static str,
    unknown: &'a [u16],
    /// The refusal is of a CHANGE-REQUEST that cannot be honoured.
    refuses_change: bool,
}

/// The sender as the server sees it: an IPv4-mapped IPv6 address (a dual-stack socket's view of
/// an IPv4 client) becomes the IPv4 address, which is what the client itself knows.
fn canonical(from: SocketAddr) -> SocketAddr {
    SocketAddr::new(from.ip().to_canonical(), from.port())
}

impl StunServer {
    /// A server with this configuration; `seed` keys the rate limiter's hash (pass a random
    /// value in production, a fixed one in tests) and `now` starts its clock.
    pub fn new(config: ServerConfig, seed: u64, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let limiter = RateLimiter::new(config.rate_limit, seed, now);
        let templates = Templates::new(&config);
        Ok(Self {
            config,
            limiter,
            stats: ServerStats::default(),
            templates,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Counters since start.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Handles one datagram, writing the response (if any) into `out`: the returned
    /// [`Transmit`] says how many bytes of `out` to send, where to, and from which server socket
    /// (a [`SocketIndex`](crate::SocketIndex) in [`ServerSocket::index`] order; for TCP, always
    /// the connection the request came on).
    ///
    /// `out` should hold `received.data.len() + MAX_RESPONSE_OVERHEAD` bytes; a smaller buffer
    /// can only make the server drop a response, never write a truncated one. Nothing in `out`
    /// needs to be zeroed: every byte of a response is written.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        received: Received<'_>,
        out: &mut [u8],
    ) -> Option<Transmit> {
        // The common case, a bare Binding request, is answered from a template (see
        // `template.rs`). It passes the same rate limit and counts the same counters as the
        // general path below would for that request: no attributes means no rule but the rate
        // limit can apply, and the reply leaves from the socket it came in on.
        if let Some((tail, id, classic)) =
            self.templates.bare_binding(received.local, received.data)
        {
            let from = canonical(received.from);
            if out.len() >= tail.response_len(&from) {
                let kind = RequestKind::of(classic);
                self.stats.received += 1;
                self.stats.requests_by.add(received.local, kind);
                if !self.limiter.allow(from.ip(), now) {
                    self.stats.rate_limited += 1;
                    return None;
                }
                // Cannot be `None`: `out` was checked to be long enough above.
                let len = tail.write(id, from, out)?;
                self.stats.responses += 1;
                self.stats.responses_by.add(received.local, kind);
                return Some(Transmit {
                    destination: from,
                    socket: received.local.into(),
                    ttl: None,
                    size: len,
                });
            }
        }
        self.handle_general(now, received, out)
    }

    /// [`StunServer::handle_datagram`] for every request, without the bare-request shortcut:
    /// the rules in full, and the reference the shortcut is tested against.
    pub(super) fn handle_general(
        &mut self,
        now: Instant,
        received: Received<'_>,
        out: &mut [u8],
    ) -> Option<Transmit> {
        self.stats.received += 1;
        let Ok(request) = Message::parse(received.data) else {
            self.stats.malformed += 1;
            return None;
        };
        if request.class() != Class::Request {
            self.stats.not_request += 1;
            return None;
        }
        let kind = RequestKind::of(request.is_classic());
        self.stats.requests_by.add(received.local, kind);
        let from = canonical(received.from);
        if !self.limiter.allow(from.ip(), now) {
            self.stats.rate_limited += 1;
            return None;
        }
        let found = RequestAttributes::scan(&request);
        if found.response_address {
            self.stats.response_address_ignored += 1;
        }
        let error = |code, reason| {
            Some(ErrorReply {
                code,
                reason,
                unknown: &[],
                refuses_change: false,
            })
        };
        let refusal = if request.method() != Method::BINDING {
            error(400, "Bad Request: only Binding is served")
        } else if found.unknown_count > 0 {
            Some(ErrorReply {
                code: 420,
                reason: "Unknown Attribute",
                unknown: &found.unknown[..found.unknown_count],
                refuses_change: false,
            })
        } else if found.malformed {
            error(400, "Bad Request: malformed attribute")
        } else if found.padding_len.is_some() && found.response_port.is_some() {
            // RFC 5780 section 6.1: PADDING and RESPONSE-PORT together are refused.
            error(400, "Bad Request: PADDING with RESPONSE-PORT")
        } else if received.transport == Transport::Tcp
            && (found.change != ChangeRequest::default() || found.response_port.is_some())
        {
            Some(ErrorReply {
                code: 400,
                reason: "Bad Request: not possible over TCP",
                unknown: &[],
                refuses_change: true,
            })
        } else if self
            .config
            .address_of(received.local.changed(found.change))
            .is_none()
        {
            // RFC 5780 section 6.1: no alternate address, so change-IP is answered with 420.
            Some(ErrorReply {
                code: 420,
                reason: "Unknown Attribute: no alternate address",
                unknown: &[attr::CHANGE_REQUEST],
                refuses_change: true,
            })
        } else {
            None
        };

        let written = match refusal {
            Some(reply) => {
                // A classic client reads any reply to a CHANGE-REQUEST as success, and knows
                // nothing of these refusals: it gets silence rather than a misleading answer.
                if request.is_classic() && reply.refuses_change {
                    self.stats.change_refused += 1;
                    return None;
                }
                let written = self.write_error(&request, &reply, out);
                if written.is_ok() {
                    self.stats.error_responses_by.add(received.local, kind);
                }
                written.map(|len| (received.local, from, len))
            }
            None => self.write_success(&request, &received, from, &found, out),
        };
        match written {
            Ok((socket, to, len)) => Some(Transmit {
                destination: to,
                socket: socket.into(),
                ttl: None,
                size: len,
            }),
            Err(_) => {
                self.stats.malformed += 1;
                None
            }
        }
    }

    fn write_success(
        &mut self,
        request: &Message<'_>,
        received: &Received<'_>,
        from: SocketAddr,
        found: &RequestAttributes,
        out: &mut [u8],
    ) -> Result<(ServerSocket, SocketAddr, usize), EncodeError> {
        let reply_socket = received.local.changed(found.change);
        // Checked by the caller: the reply socket exists.
        let origin = self
            .config
            .address_of(reply_socket)
            .ok_or(EncodeError::BufferTooSmall)?;
        let other = self.config.address_of(received.local.other());
        let to = match found.response_port {
            Some(port) => SocketAddr::new(from.ip(), port),
            None => from,
        };
        let tid: TransactionId = request.transaction_id();
        let mut w = MessageWriter::new(out, Method::BINDING, Class::SuccessResponse, tid)?;
        if request.is_classic() {
            w.add_address(attr::MAPPED_ADDRESS, from)?;
            w.add_address(attr::SOURCE_ADDRESS, origin)?;
            if let Some(other) = other {
                w.add_address(attr::CHANGED_ADDRESS, other)?;
            }
        } else {
            w.add_xor_address(attr::XOR_MAPPED_ADDRESS, from)?;
            w.add_address(attr::MAPPED_ADDRESS, from)?;
            w.add_address(attr::RESPONSE_ORIGIN, origin)?;
            if let Some(other) = other {
                w.add_address(attr::OTHER_ADDRESS, other)?;
            }
            if let Some(len) = found.padding_len {
                w.add_padding(len)?;
            }
            if let Some(software) = &self.config.software {
                w.add_software(software)?;
            }
            if request.has_fingerprint() {
                w.add_fingerprint()?;
            }
        }
        self.stats.responses += 1;
        let kind = RequestKind::of(request.is_classic());
        self.stats.responses_by.add(reply_socket, kind);
        Ok((reply_socket, to, w.finish()))
    }

    fn write_error(
        &mut self,
        request: &Message<'_>,
        reply: &ErrorReply<'_>,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let tid = request.transaction_id();
        let mut w = MessageWriter::new(out, request.method(), Class::ErrorResponse, tid)?;
        w.add_error_code(reply.code, reply.reason)?;
        if !reply.unknown.is_empty() {
            w.add_unknown_attributes(reply.unknown)?;
        }
        if !request.is_classic() {
            if let Some(software) = &self.config.software {
                w.add_software(software)?;
            }
            if request.has_fingerprint() {
                w.add_fingerprint()?;
            }
        }
        self.stats.error_responses += 1;
        Ok(w.finish())
    }
}
