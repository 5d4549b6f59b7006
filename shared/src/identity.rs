//! Identities people compare: key fingerprints and safety numbers (docs/SECURITY.md).
//!
//! - [`Fingerprint`]: `SHA256:` and the unpadded base64 of a SHA-256 digest, the form OpenSSH
//!   shows for host keys. Of a TLS server it is taken over the certificate's public key (its
//!   DER `SubjectPublicKeyInfo`, see [`Fingerprint::of_spki`]), so a certificate renewed with
//!   the same key keeps its fingerprint; of a device's X25519 identity key over the 32 raw key
//!   bytes ([`Fingerprint::of_identity_key`]).
//! - [`safety_number`]: 60 decimal digits that two users compute from their two identity keys
//!   and names and compare out of band (read aloud, or side by side). Both compute the same
//!   number whoever computes it: the two `(name, key)` pairs are put in a canonical order first.
//!
//! Pure functions: no I/O, no clock, no randomness.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use sha2::{Digest, Sha256, Sha512};

/// Iterations of SHA-512 behind a safety number. Each digit group is then as costly to target
/// with a made-up key as Signal's (which uses 5200 too).
pub const SAFETY_NUMBER_ITERATIONS: usize = 5200;
/// The version tag hashed into every safety number; a new scheme gets a new tag.
const SAFETY_NUMBER_TAG: &[u8] = b"p2p-toolkit safety number v1";

/// A SHA-256 fingerprint, shown as `SHA256:<base64>` (43 characters of base64, no padding).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a TLS certificate's public key: SHA-256 over its DER-encoded
    /// `SubjectPublicKeyInfo`.
    pub fn of_spki(spki_der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(spki_der).into())
    }

    /// The fingerprint of the public key of a DER-encoded X.509 certificate; `None` when the
    /// bytes are not a certificate.
    pub fn of_certificate(der: &[u8]) -> Option<Fingerprint> {
        let der = rustls_pki_types::CertificateDer::from(der);
        let cert = webpki::EndEntityCert::try_from(&der).ok()?;
        Some(Fingerprint::of_spki(
            cert.subject_public_key_info().as_ref(),
        ))
    }

    /// The fingerprint of a device's X25519 identity public key: SHA-256 over its 32 bytes.
    pub fn of_identity_key(key: &[u8; 32]) -> Fingerprint {
        Fingerprint(Sha256::digest(key).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SHA256:{}", B64.encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The X25519 public keys of small order, as 32 little-endian bytes with the top bit cleared
/// (X25519 ignores that bit, so it is cleared before comparing): 0, 1, the two points of order
/// 8, p - 1, p and p + 1 (p = 2^255 - 19). A Diffie-Hellman with any of them gives the same
/// all-zero secret whatever the other side's private key, so such a "key" authenticates
/// nobody: whoever announces one could be impersonated by anyone. Libraries that check this
/// (libsodium, for one) refuse the same seven values.
const SMALL_ORDER_KEYS: [[u8; 32]; 7] = [
    [0; 32],
    {
        let mut one = [0; 32];
        one[0] = 1;
        one
    },
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    top_byte_7f_after(0xec),
    top_byte_7f_after(0xed),
    top_byte_7f_after(0xee),
];

/// `[low, 0xff x 30, 0x7f]`: p - 1, p and p + 1 for `low` = 0xec, 0xed, 0xee.
const fn top_byte_7f_after(low: u8) -> [u8; 32] {
    let mut key = [0xff; 32];
    key[0] = low;
    key[31] = 0x7f;
    key
}

/// Whether `key` is unusable as an X25519 identity key because it has small order (see
/// `SMALL_ORDER_KEYS` below). Real keys (a clamped secret times the base point) never are.
pub fn is_small_order_key(key: &[u8; 32]) -> bool {
    let mut masked = *key;
    masked[31] &= 0x7f;
    SMALL_ORDER_KEYS.contains(&masked)
}

/// Decodes a device identity key as the protocol carries it: the padded base64 of 32 bytes,
/// canonical (no trailing bits), and not of small order ([`is_small_order_key`]). `None`
/// otherwise.
pub fn parse_identity_key(b64: &str) -> Option<[u8; 32]> {
    use base64::engine::general_purpose::STANDARD;
    let key: [u8; 32] = STANDARD.decode(b64).ok()?.try_into().ok()?;
    (!is_small_order_key(&key)).then_some(key)
}

/// Text that is not `SHA256:` followed by the base64 of 32 bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a fingerprint is SHA256: followed by 43 characters of base64")]
pub struct ParseFingerprintError;

impl std::str::FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    fn from_str(text: &str) -> Result<Fingerprint, ParseFingerprintError> {
        let b64 = text.strip_prefix("SHA256:").ok_or(ParseFingerprintError)?;
        let bytes = B64
            .decode(b64.trim_end_matches('='))
            .map_err(|_| ParseFingerprintError)?;
        bytes
            .try_into()
            .map(Fingerprint)
            .map_err(|_| ParseFingerprintError)
    }
}

/// The safety number of two users' identity keys: 12 groups of 5 digits, separated by spaces.
///
/// Order-independent: `safety_number(a, b) == safety_number(b, a)`. Each side is hashed alone
/// (its name and key, iterated [`SAFETY_NUMBER_ITERATIONS`] times) into 30 digits, and the two
/// halves are joined in ascending order, so each half stays the same for one party whoever
/// the other is (as in Signal, where a half belongs to one party).
pub fn safety_number(a: (&str, &[u8; 32]), b: (&str, &[u8; 32])) -> String {
    let mut halves = [half(a.0, a.1), half(b.0, b.1)];
    halves.sort();
    let digits: String = halves.concat();
    digits
        .as_bytes()
        .chunks(5)
        .map(|group| std::str::from_utf8(group).unwrap_or("?????"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// 30 digits for one party: six 5-byte big-endian chunks of the iterated digest, each modulo
/// 100,000.
fn half(name: &str, key: &[u8; 32]) -> String {
    let mut digest = {
        let mut h = Sha512::new();
        h.update(SAFETY_NUMBER_TAG);
        h.update((name.len() as u32).to_be_bytes());
        h.update(name.as_bytes());
        h.update(key);
        h.finalize()
    };
    for _ in 1..SAFETY_NUMBER_ITERATIONS {
        let mut h = Sha512::new();
        h.update(digest);
        h.update(key);
        digest = h.finalize();
    }
    digest[..30]
        .chunks(5)
        .map(|c| {
            let n = c.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
            format!("{:05}", n % 100_000)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each blocked key really has small order: with any secret the shared secret is zero
    /// (checked with curve25519-dalek, an independent implementation); a real key is not
    /// blocked.
    #[test]
    fn small_order_keys_give_an_all_zero_secret_and_are_refused() {
        use curve25519_dalek::montgomery::MontgomeryPoint;
        for key in SMALL_ORDER_KEYS {
            for secret in [[1u8; 32], [0x5a; 32], [0xfe; 32]] {
                assert_eq!(
                    MontgomeryPoint(key).mul_clamped(secret).0,
                    [0; 32],
                    "{key:02x?}"
                );
            }
            assert!(is_small_order_key(&key));
            let mut high = key;
            high[31] |= 0x80;
            assert!(is_small_order_key(&high), "the top bit does not matter");
            let b64 = base64::engine::general_purpose::STANDARD.encode(key);
            assert_eq!(parse_identity_key(&b64), None);
        }
        let real = MontgomeryPoint::mul_base_clamped([42; 32]).0;
        assert!(!is_small_order_key(&real));
        let b64 = base64::engine::general_purpose::STANDARD.encode(real);
        assert_eq!(parse_identity_key(&b64), Some(real));
        assert_eq!(parse_identity_key(&b64[..40]), None, "short");
        assert_eq!(parse_identity_key("not base64!"), None);
    }

    #[test]
    fn fingerprints_round_trip_and_look_like_openssh() {
        let f = Fingerprint::of_identity_key(&[7; 32]);
        let text = f.to_string();
        assert!(text.starts_with("SHA256:"));
        assert_eq!(text.len(), 7 + 43);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), f);
        assert!("SHA256:abc".parse::<Fingerprint>().is_err());
        assert!("MD5:xyz".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn the_fingerprint_of_nothing_is_sha256_of_nothing() {
        // SHA-256("") = e3b0c442...; its base64 is the well-known 47DEQpj8... of OpenSSH.
        assert_eq!(
            Fingerprint::of_spki(b"").to_string(),
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn safety_numbers_are_symmetric_and_sixty_digits() {
        let alice = ("alice", &[1u8; 32]);
        let bob = ("bob", &[2u8; 32]);
        let ab = safety_number(alice, bob);
        assert_eq!(ab, safety_number(bob, alice));
        let groups: Vec<&str> = ab.split(' ').collect();
        assert_eq!(groups.len(), 12);
        assert!(
            groups
                .iter()
                .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
        );
    }

    #[test]
    fn a_different_key_or_name_gives_a_different_number() {
        let ab = safety_number(("alice", &[1; 32]), ("bob", &[2; 32]));
        assert_ne!(ab, safety_number(("alice", &[1; 32]), ("bob", &[3; 32])));
        assert_ne!(ab, safety_number(("alice", &[9; 32]), ("bob", &[2; 32])));
        assert_ne!(ab, safety_number(("carol", &[1; 32]), ("bob", &[2; 32])));
    }

    #[test]
    fn one_half_belongs_to_one_party() {
        // alice's 30 digits are the same whether she talks to bob or to carol.
        let alice_half = half("alice", &[1; 32]);
        let with_bob = safety_number(("alice", &[1; 32]), ("bob", &[2; 32])).replace(' ', "");
        let with_carol = safety_number(("alice", &[1; 32]), ("carol", &[3; 32])).replace(' ', "");
        assert!(with_bob.contains(&alice_half));
        assert!(with_carol.contains(&alice_half));
    }
}
