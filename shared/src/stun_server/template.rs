//! Prebuilt success responses for the request nearly every client sends: a bare Binding request.
//!
//! At saturation the kernel's send and receive take ~94 % of the server's CPU, so every cycle
//! of user-space work per reply is throughput lost against a plain echo server. A bare Binding
//! request (the 20-byte header and no attributes) is what clients send almost always, and its
//! success response varies from one request to the next only in the header's transaction id and
//! the sender's address (XOR-MAPPED-ADDRESS, MAPPED-ADDRESS). Everything after those depends
//! only on the socket the reply leaves from and the configuration, which is fixed for the
//! server's life: RESPONSE-ORIGIN, OTHER-ADDRESS and SOFTWARE for a modern request,
//! SOURCE-ADDRESS and CHANGED-ADDRESS for a classic one. [`Templates`] encodes that tail once
//! per (socket, header form) with the general [`MessageWriter`], so a reply is a header, one or
//! two address attributes and one copy, with no attribute walk, no padding to zero and no
//! per-attribute length update.
//!
//! The pre-check is deliberately narrow: anything that is not exactly a bare Binding request
//! (attributes, FINGERPRINT, another method or class, a socket on a missing alternate address,
//! a buffer too small) goes down the general path, which stays the single source of truth for
//! every rule. The tests (`template/tests.rs`) check, byte for byte and counter for counter,
//! that both paths agree.

use std::net::{IpAddr, SocketAddr};

use super::{MAX_SOFTWARE_LEN, ServerConfig, ServerSocket};
use crate::stun::{Class, HEADER_LEN, MAGIC_COOKIE, MessageWriter, Method, TransactionId, attr};

/// Largest address attribute: 4-byte header and an IPv6 value.
const ADDRESS_ATTR: usize = 4 + 20;

/// Longest tail: two IPv6 address attributes and the longest SOFTWARE (a modern tail; a
/// classic one is two address attributes).
const MAX_TAIL: usize = 2 * ADDRESS_ATTR + 4 + MAX_SOFTWARE_LEN;

/// The first four header bytes of a bare Binding request: type 0x0001, length 0.
const BARE_BINDING: [u8; 4] = [0x00, 0x01, 0x00, 0x00];

/// Message type of a Binding success response ([RFC 8489 section 5]); the same in both forms.
///
/// [RFC 8489 section 5]: https://www.rfc-editor.org/rfc/rfc8489#section-5
const BINDING_SUCCESS: [u8; 2] = [0x01, 0x01];

/// The fixed attributes that end a success response from one socket to one header form.
#[derive(Clone, Debug)]
pub(super) struct Tail {
    classic: bool,
    len: usize,
    /// An inline array rather than a `Vec`: no pointer to chase, and the server stays one
    /// allocation-free value apart from the rate limiter's table.
    bytes: [u8; MAX_TAIL],
}

/// A [`Tail`] for every socket the configuration gives an address, in both header forms.
#[derive(Clone, Debug)]
pub(super) struct Templates {
    /// Indexed by [`ServerSocket::index`], then 0 for modern and 1 for classic.
    tails: [[Option<Tail>; 2]; 4],
}

impl Templates {
    /// Encodes the tails for `config`, which must be valid. A socket without an address (the
    /// alternate IP of a single-address server) gets none, so its requests take the general
    /// path and are refused there exactly as before.
    pub(super) fn new(config: &ServerConfig) -> Self {
        Self {
            tails: ServerSocket::ALL
                .map(|socket| [false, true].map(|classic| Tail::build(config, socket, classic))),
        }
    }

    /// The tail to answer `data` with if it is a bare Binding request that arrived at `local`,
    /// the header bytes 4..20 (cookie and transaction id) to echo, and whether it is classic.
    /// `None` sends the request down the general path.
    pub(super) fn bare_binding<'a>(
        &self,
        local: ServerSocket,
        data: &'a [u8],
    ) -> Option<(&Tail, &'a [u8; 16], bool)> {
        let header: &[u8; HEADER_LEN] = data.try_into().ok()?;
        if header[..4] != BARE_BINDING {
            return None;
        }
        let id: &[u8; 16] = header[4..].try_into().ok()?;
        let classic = id[..4] != MAGIC_COOKIE.to_be_bytes();
        let tail = self.tails[local.index()][usize::from(classic)].as_ref()?;
        Some((tail, id, classic))
    }
}

impl Tail {
    /// Encodes the fixed attributes with the general writer, in the order `write_success`
    /// appends them. `None` when `socket` has no address (or, for an invalid config, when the
    /// tail would not fit), which leaves that socket to the general path.
    fn build(config: &ServerConfig, socket: ServerSocket, classic: bool) -> Option<Self> {
        let origin = config.address_of(socket)?;
        let other = config.address_of(socket.other());
        // Any id of the right form will do: the fixed attributes do not depend on it.
        let tid = if classic {
            TransactionId::Classic([0; 16])
        } else {
            TransactionId::Modern([0; 12])
        };
        let mut buf = [0u8; HEADER_LEN + MAX_TAIL];
        let mut w =
            MessageWriter::new(&mut buf, Method::BINDING, Class::SuccessResponse, tid).ok()?;
        if classic {
            w.add_address(attr::SOURCE_ADDRESS, origin).ok()?;
            if let Some(other) = other {
                w.add_address(attr::CHANGED_ADDRESS, other).ok()?;
            }
        } else {
            w.add_address(attr::RESPONSE_ORIGIN, origin).ok()?;
            if let Some(other) = other {
                w.add_address(attr::OTHER_ADDRESS, other).ok()?;
            }
            if let Some(software) = &config.software {
                w.add_software(software).ok()?;
            }
        }
        let len = w.finish() - HEADER_LEN;
        let mut bytes = [0u8; MAX_TAIL];
        bytes[..len].copy_from_slice(&buf[HEADER_LEN..HEADER_LEN + len]);
        Some(Self {
            classic,
            len,
            bytes,
        })
    }

    /// Size of the whole response to `to`.
    pub(super) fn response_len(&self, to: &SocketAddr) -> usize {
        let address = match to {
            SocketAddr::V4(_) => 4 + 8,
            SocketAddr::V6(_) => 4 + 20,
        };
        let addresses = if self.classic { 1 } else { 2 };
        HEADER_LEN + addresses * address + self.len
    }

    /// Writes the success response for the request whose header bytes 4..20 are `id`, sent by
    /// `to`, into the first [`Tail::response_len`] bytes of `out`, and returns that length.
    /// `None` (having written nothing) if `out` is shorter.
    pub(super) fn write(&self, id: &[u8; 16], to: SocketAddr, out: &mut [u8]) -> Option<usize> {
        let len = self.response_len(&to);
        let out = out.get_mut(..len)?;
        let (header, body) = out.split_at_mut(HEADER_LEN);
        header[..2].copy_from_slice(&BINDING_SUCCESS);
        // At most 2 * 24 + MAX_TAIL bytes, far below u16::MAX.
        header[2..4].copy_from_slice(&((len - HEADER_LEN) as u16).to_be_bytes());
        header[4..].copy_from_slice(id);
        let mut at = 0;
        if !self.classic {
            at += put_address(&mut body[at..], attr::XOR_MAPPED_ADDRESS, to, id);
        }
        at += put_address(&mut body[at..], attr::MAPPED_ADDRESS, to, &[0; 16]);
        body[at..].copy_from_slice(&self.bytes[..self.len]);
        Some(len)
    }
}

/// Writes an address attribute at the start of `out` and returns its size. The port and
/// address are XORed with `key` (header bytes 4..20 for XOR-MAPPED-ADDRESS, zeros for a plain
/// address), so both kinds take the same branch-free path; the format is the one
/// `MessageWriter::add_address` writes ([RFC 8489 section 14.1]).
///
/// [RFC 8489 section 14.1]: https://www.rfc-editor.org/rfc/rfc8489#section-14.1
fn put_address(out: &mut [u8], typ: u16, addr: SocketAddr, key: &[u8; 16]) -> usize {
    let port = addr.port() ^ u16::from_be_bytes([key[0], key[1]]);
    let [p0, p1] = port.to_be_bytes();
    let [t0, t1] = typ.to_be_bytes();
    match addr.ip() {
        IpAddr::V4(ip) => {
            let mask = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
            let ip = (u32::from(ip) ^ mask).to_be_bytes();
            let attr = [t0, t1, 0, 8, 0, 0x01, p0, p1, ip[0], ip[1], ip[2], ip[3]];
            out[..attr.len()].copy_from_slice(&attr);
            attr.len()
        }
        IpAddr::V6(ip) => {
            let ip = (u128::from(ip) ^ u128::from_be_bytes(*key)).to_be_bytes();
            out[..8].copy_from_slice(&[t0, t1, 0, 20, 0, 0x02, p0, p1]);
            out[8..24].copy_from_slice(&ip);
            24
        }
    }
}

#[cfg(test)]
mod tests;
