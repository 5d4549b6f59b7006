//! Base64 (RFC 4648 section 4: standard alphabet, with padding), the encoding of binary values
//! on rendezvous lines (docs/PROTOCOL.md section 4): thin wrappers over the `base64` crate so the
//! rest of the client reads `b64::encode` / `b64::decode`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Encodes `data` with padding.
pub(crate) fn encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decodes padded standard base64; `None` for anything malformed.
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_test_vectors_and_refusals() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode(coded).as_deref(), Some(plain.as_bytes()));
        }
        for bad in ["Zg", "Z===", "Zm9v!mFy", "Zm 9v"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
