//! The NAT-PMP (RFC 6886) and PCP (RFC 6887) packet formats this client uses: NAT-PMP's
//! external-address and UDP-mapping requests, PCP's MAP request, and both protocols' responses.
//!
//! Every multi-byte field is in network byte order. PCP carries IPv4 addresses as IPv4-mapped
//! IPv6 addresses (`::ffff:a.b.c.d`, RFC 6887 section 5); [`mapped_v6`] and [`unmap_v6`]
//! convert.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The UDP port a NAT-PMP or PCP server listens on (RFC 6886 section 3, RFC 6887 section 19.1).
pub const SERVER_PORT: u16 = 5351;
/// NAT-PMP's version number (RFC 6886 section 3.2).
pub const NATPMP_VERSION: u8 = 0;
/// PCP's version number (RFC 6887 section 7).
pub const PCP_VERSION: u8 = 2;
/// NAT-PMP opcode: ask for the external address (RFC 6886 section 3.2).
pub const NATPMP_OP_EXTERNAL_ADDRESS: u8 = 0;
/// NAT-PMP opcode: map a UDP port (RFC 6886 section 3.3).
pub const NATPMP_OP_MAP_UDP: u8 = 1;
/// PCP opcode MAP (RFC 6887 section 19.2).
pub const PCP_OP_MAP: u8 = 1;
/// IANA protocol number of UDP, which a PCP MAP request names (RFC 6887 section 11.1).
pub const PROTOCOL_UDP: u8 = 17;
/// Length of a NAT-PMP UDP mapping request (RFC 6886 section 3.3).
pub const NATPMP_MAP_LEN: usize = 12;
/// Length of a PCP MAP request or response without options: 24-byte header + 36-byte MAP body
/// (RFC 6887 sections 7.1, 7.2, 11.1).
pub const PCP_MAP_LEN: usize = 60;
/// The bit that marks a response in both protocols' opcode byte (NAT-PMP adds 128 to the
/// opcode; PCP sets the R bit, which is the same bit).
pub const RESPONSE_BIT: u8 = 0x80;

/// Why a datagram is not a response this client can read, or a request cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than the format needs (or the output buffer is).
    #[error("truncated: {have} bytes, need {need}")]
    Truncated {
        /// Bytes there are.
        have: usize,
        /// Bytes the format needs.
        need: usize,
    },
    /// Another protocol version than the one parsed.
    #[error("version {0}")]
    Version(u8),
    /// A request, not a response (R bit clear).
    #[error("not a response")]
    NotResponse,
}

/// `::ffff:a.b.c.d`, the form PCP carries an IPv4 address in.
pub fn mapped_v6(ip: Ipv4Addr) -> Ipv6Addr {
    ip.to_ipv6_mapped()
}

/// The IPv4 address inside an IPv4-mapped IPv6 address, else the IPv6 address itself.
pub fn unmap_v6(ip: Ipv6Addr) -> IpAddr {
    match ip.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(ip),
    }
}

fn need(buf: &[u8], n: usize) -> Result<(), WireError> {
    if buf.len() < n {
        Err(WireError::Truncated {
            have: buf.len(),
            need: n,
        })
    } else {
        Ok(())
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn v6_at(b: &[u8], i: usize) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&b[i..i + 16]);
    Ipv6Addr::from(octets)
}

/// Writes NAT-PMP's external address request (2 bytes: version 0, opcode 0).
pub fn natpmp_external_address_request(buf: &mut [u8]) -> Result<usize, WireError> {
    need(buf, 2)?;
    buf[0] = NATPMP_VERSION;
    buf[1] = NATPMP_OP_EXTERNAL_ADDRESS;
    Ok(2)
}

/// Writes a NAT-PMP UDP mapping request (RFC 6886 section 3.3). A deletion is `lifetime` 0,
/// and then `suggested_external_port` must be 0 too (section 3.4).
pub fn natpmp_map_request(
    buf: &mut [u8],
    internal_port: u16,
    suggested_external_port: u16,
    lifetime: u32,
) -> Result<usize, WireError> {
    need(buf, NATPMP_MAP_LEN)?;
    buf[0] = NATPMP_VERSION;
    buf[1] = NATPMP_OP_MAP_UDP;
    buf[2..4].fill(0);
    buf[4..6].copy_from_slice(&internal_port.to_be_bytes());
    buf[6..8].copy_from_slice(&suggested_external_port.to_be_bytes());
    buf[8..12].copy_from_slice(&lifetime.to_be_bytes());
    Ok(NATPMP_MAP_LEN)
}

/// A NAT-PMP response's body, by the opcode it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatPmpBody {
    /// The answer to opcode 0.
    ExternalAddress(Ipv4Addr),
    /// The answer to a mapping request.
    Map {
        /// The internal port the mapping is for.
        internal_port: u16,
        /// The external port the gateway chose.
        external_port: u16,
        /// Seconds the mapping lives.
        lifetime: u32,
    },
    /// No body: an error response, or an opcode this client does not read.
    None,
}

/// A NAT-PMP response (RFC 6886 sections 3.2, 3.3, 3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatPmpResponse {
    /// The opcode of the request it answers (without the response bit).
    pub opcode: u8,
    /// The result code; 0 is success (section 3.5).
    pub result: u16,
    /// Seconds since the gateway's port-mapping table was (re)initialised (section 3.6).
    pub epoch: u32,
    /// The fields after the header; read only when `result` is 0.
    pub body: NatPmpBody,
}

impl NatPmpResponse {
    /// Parses a NAT-PMP response. An error response can be 8 bytes long (an unsupported
    /// version answer is), so the body is only required on success.
    pub fn parse(data: &[u8]) -> Result<Self, WireError> {
        need(data, 2)?;
        if data[0] != NATPMP_VERSION {
            return Err(WireError::Version(data[0]));
        }
        if data[1] & RESPONSE_BIT == 0 {
            return Err(WireError::NotResponse);
        }
        need(data, 8)?;
        let opcode = data[1] & !RESPONSE_BIT;
        let result = u16_at(data, 2);
        let epoch = u32_at(data, 4);
        let body = match (result, opcode) {
            (0, NATPMP_OP_EXTERNAL_ADDRESS) => {
                need(data, 12)?;
                NatPmpBody::ExternalAddress(Ipv4Addr::new(data[8], data[9], data[10], data[11]))
            }
            (0, NATPMP_OP_MAP_UDP) => {
                need(data, 16)?;
                NatPmpBody::Map {
                    internal_port: u16_at(data, 8),
                    external_port: u16_at(data, 10),
                    lifetime: u32_at(data, 12),
                }
            }
            _ => NatPmpBody::None,
        };
        Ok(Self {
            opcode,
            result,
            epoch,
            body,
        })
    }
}

/// A PCP MAP request for UDP (RFC 6887 sections 7.1 and 11.1), without options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcpMapRequest {
    /// Requested lifetime in seconds; 0 deletes the mapping (section 11.1).
    pub lifetime: u32,
    /// The client's own address as it sends the request: the server checks it against the
    /// packet's source and answers ADDRESS_MISMATCH when they differ (section 8.1).
    pub client: Ipv4Addr,
    /// Random, chosen once per mapping; renewals and the deletion repeat it (section 11.1).
    pub nonce: [u8; 12],
    /// The internal port to map.
    pub internal_port: u16,
    /// The external address and port asked for; `0.0.0.0:0` for no preference.
    pub suggested_external: (Ipv4Addr, u16),
}

impl PcpMapRequest {
    /// Writes the 60-byte request.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        need(buf, PCP_MAP_LEN)?;
        let buf = &mut buf[..PCP_MAP_LEN];
        buf.fill(0);
        buf[0] = PCP_VERSION;
        buf[1] = PCP_OP_MAP;
        buf[4..8].copy_from_slice(&self.lifetime.to_be_bytes());
        buf[8..24].copy_from_slice(&mapped_v6(self.client).octets());
        buf[24..36].copy_from_slice(&self.nonce);
        buf[36] = PROTOCOL_UDP;
        buf[40..42].copy_from_slice(&self.internal_port.to_be_bytes());
        buf[42..44].copy_from_slice(&self.suggested_external.1.to_be_bytes());
        buf[44..60].copy_from_slice(&mapped_v6(self.suggested_external.0).octets());
        Ok(PCP_MAP_LEN)
    }
}

/// The MAP opcode's fields in a response (RFC 6887 section 11.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcpMapBody {
    /// The request's nonce, echoed.
    pub nonce: [u8; 12],
    /// The request's protocol, echoed.
    pub protocol: u8,
    /// The request's internal port, echoed.
    pub internal_port: u16,
    /// The external address and port the server assigned.
    pub external: SocketAddr,
}

/// A PCP response (RFC 6887 section 7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PcpResponse {
    /// The opcode it answers (without the R bit).
    pub opcode: u8,
    /// The result code; 0 is SUCCESS (section 7.4).
    pub result: u8,
    /// The granted lifetime in seconds (on an error: how long the error is likely to last).
    pub lifetime: u32,
    /// Seconds since the server's state was (re)initialised (section 8.5).
    pub epoch: u32,
    /// The MAP fields, when the opcode is MAP and the packet is long enough.
    pub map: Option<PcpMapBody>,
}

impl PcpResponse {
    /// Parses a PCP response. A version-0 datagram (a NAT-PMP-only gateway's "unsupported
    /// version" answer, RFC 6887 section 9) is [`WireError::Version`]`(0)`.
    pub fn parse(data: &[u8]) -> Result<Self, WireError> {
        need(data, 2)?;
        if data[0] != PCP_VERSION {
            return Err(WireError::Version(data[0]));
        }
        if data[1] & RESPONSE_BIT == 0 {
            return Err(WireError::NotResponse);
        }
        need(data, 24)?;
        let opcode = data[1] & !RESPONSE_BIT;
        let map = if opcode == PCP_OP_MAP && data.len() >= PCP_MAP_LEN {
            let mut nonce = [0u8; 12];
            nonce.copy_from_slice(&data[24..36]);
            Some(PcpMapBody {
                nonce,
                protocol: data[36],
                internal_port: u16_at(data, 40),
                external: SocketAddr::new(unmap_v6(v6_at(data, 44)), u16_at(data, 42)),
            })
        } else {
            None
        };
        Ok(Self {
            opcode,
            result: data[3],
            lifetime: u32_at(data, 4),
            epoch: u32_at(data, 8),
            map,
        })
    }
}

/// The text of a NAT-PMP result code (RFC 6886 section 3.5).
pub fn natpmp_result_text(code: u16) -> &'static str {
    match code {
        0 => "success",
        1 => "unsupported version",
        2 => "not authorized or refused",
        3 => "network failure",
        4 => "out of resources",
        5 => "unsupported opcode",
        _ => "unknown result code",
    }
}

/// The name of a PCP result code (RFC 6887 section 7.4).
pub fn pcp_result_text(code: u8) -> &'static str {
    match code {
        0 => "SUCCESS",
        1 => "UNSUPP_VERSION",
        2 => "NOT_AUTHORIZED",
        3 => "MALFORMED_REQUEST",
        4 => "UNSUPP_OPCODE",
        5 => "UNSUPP_OPTION",
        6 => "MALFORMED_OPTION",
        7 => "NETWORK_FAILURE",
        8 => "NO_RESOURCES",
        9 => "UNSUPP_PROTOCOL",
        10 => "USER_EX_QUOTA",
        11 => "CANNOT_PROVIDE_EXTERNAL",
        12 => "ADDRESS_MISMATCH",
        13 => "EXCESSIVE_REMOTE_PEERS",
        _ => "unknown result code",
    }
}
