//! The address attribute format shared by MAPPED-ADDRESS and its relatives, plain and XORed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::AttributeError;

const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

/// Encoded value length of an address attribute for this address.
pub(crate) fn address_value_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 8,
        SocketAddr::V6(_) => 20,
    }
}

/// Writes an address value (`out` has exactly [`address_value_len`] bytes).
pub(crate) fn write_address(out: &mut [u8], addr: &SocketAddr, xor_key: Option<&[u8; 16]>) {
    out[0] = 0;
    let mut port = addr.port();
    if let Some(key) = xor_key {
        port ^= u16::from_be_bytes([key[0], key[1]]);
    }
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = FAMILY_V4;
            out[4..8].copy_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out[1] = FAMILY_V6;
            out[4..20].copy_from_slice(&ip.octets());
        }
    }
    if let Some(key) = xor_key {
        for (byte, k) in out[4..].iter_mut().zip(key.iter()) {
            *byte ^= k;
        }
    }
}

fn read_address(value: &[u8], xor_key: Option<&[u8; 16]>) -> Result<SocketAddr, AttributeError> {
    if value.len() < 4 {
        return Err(AttributeError::BadLength);
    }
    let key = xor_key.copied().unwrap_or([0; 16]);
    let port = u16::from_be_bytes([value[2], value[3]]) ^ u16::from_be_bytes([key[0], key[1]]);
    let ip = match (value[1], value.len()) {
        (FAMILY_V4, 8) => {
            let mut octets = [0u8; 4];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = value[4 + i] ^ key[i];
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        (FAMILY_V6, 20) => {
            let mut octets = [0u8; 16];
            for (i, o) in octets.iter_mut().enumerate() {
                *o = value[4 + i] ^ key[i];
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        (FAMILY_V4 | FAMILY_V6, _) => return Err(AttributeError::BadLength),
        _ => return Err(AttributeError::BadFamily),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Decodes a plain address value (MAPPED-ADDRESS, RESPONSE-ORIGIN, ...).
pub fn decode_address(value: &[u8]) -> Result<SocketAddr, AttributeError> {
    read_address(value, None)
}

/// Decodes an XORed address value with the message's key (header bytes 4..20).
pub fn decode_xor_address(value: &[u8], key: &[u8; 16]) -> Result<SocketAddr, AttributeError> {
    read_address(value, Some(key))
}
