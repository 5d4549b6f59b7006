//! The cryptography: static keys, the seeded snow resolver, the Noise KK handshake and
//! transport, and the anti-replay window.
//!
//! Nothing here reads ambient randomness. snow asks its resolver for an rng when it builds a
//! handshake (to make the ephemeral key); [`SeededResolver`] answers with a deterministic
//! stream derived from the caller's seed, hedged with the local static secret and the session
//! id, and delegates the primitives (X25519, ChaCha20-Poly1305, BLAKE2s) to snow's
//! [`DefaultResolver`].

use std::fmt;

use sha2::{Digest, Sha256};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{HandshakeState, StatelessTransportState};
use zeroize::Zeroize;

use super::ChatError;

/// The Noise protocol: both sides know each other's static key in advance (KK).
pub const NOISE_PARAMS: &str = "Noise_KK_25519_ChaChaPoly_BLAKE2s";

/// An X25519 public key, as exchanged through the introduction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// An X25519 private key. `Debug` does not print it, and it is zeroised when dropped (copies
/// taken out of `.0` are the caller's to wipe).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(pub [u8; 32]);

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// A static X25519 key pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticKeypair {
    /// The private half; never leaves this host.
    pub secret: SecretKey,
    /// The public half, published through the rendezvous server.
    pub public: PublicKey,
}

impl StaticKeypair {
    /// The key pair whose private key is `random` (32 bytes the caller drew from the operating
    /// system's CSPRNG; X25519 clamps them when they are used).
    pub fn from_random_bytes(mut random: [u8; 32]) -> Result<Self, ChatError> {
        let secret = SecretKey(random);
        random.zeroize();
        let mut dh = DefaultResolver
            .resolve_dh(&DHChoice::Curve25519)
            .ok_or(ChatError::Setup("snow lacks X25519"))?;
        dh.set(&secret.0);
        let mut public = [0u8; 32];
        public.copy_from_slice(
            dh.pubkey()
                .get(..32)
                .ok_or(ChatError::Setup("bad X25519"))?,
        );
        Ok(Self {
            secret,
            public: PublicKey(public),
        })
    }
}

/// A deterministic byte stream for snow's ephemeral keys: SHA-256 in counter mode over a key
/// derived from the seed. Unpredictable to anyone who knows neither the seed nor the local
/// static secret.
struct SeededRandom {
    key: [u8; 32],
    counter: u64,
}

impl Drop for SeededRandom {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        for chunk in dest.chunks_mut(32) {
            let mut h = Sha256::new();
            h.update(self.key);
            h.update(self.counter.to_be_bytes());
            self.counter = self.counter.checked_add(1).ok_or(snow::Error::Rng)?;
            chunk.copy_from_slice(&h.finalize()[..chunk.len()]);
        }
        Ok(())
    }
}

/// A snow resolver that wraps [`DefaultResolver`] for the primitives and supplies a seeded rng.
pub(crate) struct SeededResolver {
    rng_key: [u8; 32],
}

impl Drop for SeededResolver {
    fn drop(&mut self) {
        self.rng_key.zeroize();
    }
}

impl SeededResolver {
    /// The resolver for one session: `seed` must come from the operating system's CSPRNG in
    /// production; the secret and session id are mixed in so that a weak or repeated seed
    /// still gives distinct, secret ephemeral keys per session.
    pub(crate) fn new(seed: &[u8; 32], local_secret: &SecretKey, session_id: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update(b"p2p-chat/v1 ephemeral rng");
        h.update(seed);
        h.update(local_secret.0);
        h.update((session_id.len() as u64).to_be_bytes());
        h.update(session_id);
        Self {
            rng_key: h.finalize().into(),
        }
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom {
            key: self.rng_key,
            counter: 0,
        }))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// The Noise prologue: binds the protocol version and the whole session id into the handshake
/// hash, so a handshake message of another session (or version) fails authentication.
pub(crate) fn prologue(session_id: &[u8]) -> Vec<u8> {
    let mut p = b"p2p-chat/v1 prologue".to_vec();
    p.extend_from_slice(&(session_id.len() as u64).to_be_bytes());
    p.extend_from_slice(session_id);
    p
}

/// Builds the handshake state for one side.
pub(crate) fn build_handshake(
    initiator: bool,
    local_secret: &SecretKey,
    remote_public: &PublicKey,
    session_id: &[u8],
    seed: &[u8; 32],
) -> Result<HandshakeState, ChatError> {
    let params = NOISE_PARAMS
        .parse()
        .map_err(|_| ChatError::Setup("noise parameters"))?;
    let resolver = SeededResolver::new(seed, local_secret, session_id);
    let prologue = prologue(session_id);
    let builder = snow::Builder::with_resolver(params, Box::new(resolver))
        .local_private_key(&local_secret.0)
        .and_then(|b| b.remote_public_key(&remote_public.0))
        .and_then(|b| b.prologue(&prologue))
        .map_err(|_| ChatError::Setup("noise builder"))?;
    let state = if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    };
    state.map_err(|_| ChatError::Setup("noise handshake state (are snow's crypto features on?)"))
}

/// Writes the next handshake message (empty payload) and returns its body.
pub(crate) fn write_handshake(state: &mut HandshakeState) -> Result<Vec<u8>, ChatError> {
    let mut buf = [0u8; super::wire::HANDSHAKE_BODY_LEN];
    let n = state
        .write_message(&[], &mut buf)
        .map_err(|_| ChatError::Setup("handshake write"))?;
    Ok(buf
        .get(..n)
        .ok_or(ChatError::Setup("handshake length"))?
        .to_vec())
}

/// Reads a handshake message; a failure leaves `state` as it was (snow rolls back).
pub(crate) fn read_handshake(state: &mut HandshakeState, body: &[u8]) -> Result<(), ChatError> {
    if body.len() != super::wire::HANDSHAKE_BODY_LEN {
        return Err(ChatError::Malformed);
    }
    let mut payload = [0u8; super::wire::HANDSHAKE_BODY_LEN];
    match state.read_message(body, &mut payload) {
        // We never send a handshake payload; a peer that does speaks another version.
        Ok(0) => Ok(()),
        Ok(_) => Err(ChatError::Malformed),
        Err(_) => Err(ChatError::Authentication),
    }
}

/// Switches a finished handshake to transport mode.
pub(crate) fn into_transport(state: HandshakeState) -> Result<StatelessTransportState, ChatError> {
    state
        .into_stateless_transport_mode()
        .map_err(|_| ChatError::Setup("handshake not finished"))
}

/// The nonce the transport may never use (Noise reserves 2^64 - 1).
pub(crate) const MAX_NONCE: u64 = u64::MAX - 1;

/// Sliding anti-replay window over explicit nonces, as in RFC 6479 (and WireGuard): a ring of
/// 64-bit blocks; a nonce is accepted once, and only if it is newer than `top - WINDOW`.
#[derive(Clone, Debug)]
pub(crate) struct ReplayWindow {
    /// The highest nonce accepted so far, if any.
    top: Option<u64>,
    blocks: [u64; REPLAY_BLOCKS],
}

const REPLAY_BLOCKS: usize = 17;
/// How far behind the newest nonce an older one may still be accepted.
pub const REPLAY_WINDOW: u64 = ((REPLAY_BLOCKS - 1) * 64) as u64;

/// Why the window refused a nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplayVerdict {
    /// Not seen before and within the window.
    Fresh,
    /// Already accepted once.
    Duplicate,
    /// Older than the window can remember.
    TooOld,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self {
            top: None,
            blocks: [0; REPLAY_BLOCKS],
        }
    }
}

impl ReplayWindow {
    fn slot(nonce: u64) -> (usize, u64) {
        (
            ((nonce / 64) % REPLAY_BLOCKS as u64) as usize,
            1u64 << (nonce % 64),
        )
    }

    /// Whether `nonce` would be accepted. Call before decrypting, and [`Self::accept`] after.
    pub(crate) fn check(&self, nonce: u64) -> ReplayVerdict {
        let Some(top) = self.top else {
            return ReplayVerdict::Fresh;
        };
        if nonce > top {
            return ReplayVerdict::Fresh;
        }
        if top - nonce >= REPLAY_WINDOW {
            return ReplayVerdict::TooOld;
        }
        let (block, bit) = Self::slot(nonce);
        if self.blocks[block] & bit != 0 {
            ReplayVerdict::Duplicate
        } else {
            ReplayVerdict::Fresh
        }
    }

    /// Records `nonce` (which [`Self::check`] called fresh and which authenticated).
    pub(crate) fn accept(&mut self, nonce: u64) {
        match self.top {
            Some(top) if nonce <= top => {}
            Some(top) => {
                // Clear the blocks the window slides over (at most the whole ring).
                let old_block = top / 64;
                let new_block = nonce / 64;
                let clear = (new_block - old_block).min(REPLAY_BLOCKS as u64);
                for i in 1..=clear {
                    self.blocks[((old_block + i) % REPLAY_BLOCKS as u64) as usize] = 0;
                }
                self.top = Some(nonce);
            }
            None => {
                self.blocks = [0; REPLAY_BLOCKS];
                self.top = Some(nonce);
            }
        }
        let (block, bit) = Self::slot(nonce);
        self.blocks[block] |= bit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn keypair_matches_rfc7748_vector() {
        // RFC 7748 section 6.1, Alice.
        let secret = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let public = hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        let kp = StaticKeypair::from_random_bytes(secret).unwrap();
        assert_eq!(kp.public, PublicKey(public));
        assert_eq!(format!("{:?}", kp.secret), "SecretKey(..)");
    }

    #[test]
    fn seeded_rng_is_deterministic_and_hedged() {
        let a = SecretKey([1; 32]);
        let b = SecretKey([2; 32]);
        let draw = |r: &SeededResolver| {
            let mut rng = r.resolve_rng().unwrap();
            let mut out = [0u8; 40];
            rng.try_fill_bytes(&mut out).unwrap();
            out
        };
        let (seven, mut eight) = ([7; 32], [7; 32]);
        eight[31] = 8;
        let x = draw(&SeededResolver::new(&seven, &a, b"s"));
        assert_eq!(x, draw(&SeededResolver::new(&seven, &a, b"s")));
        assert_ne!(
            x,
            draw(&SeededResolver::new(&eight, &a, b"s")),
            "every seed byte counts"
        );
        assert_ne!(x, draw(&SeededResolver::new(&seven, &b, b"s")));
        assert_ne!(x, draw(&SeededResolver::new(&seven, &a, b"t")));
        assert_ne!(x[..32], x[8..40]);
    }

    #[test]
    fn replay_window_accepts_each_nonce_once() {
        let mut w = ReplayWindow::default();
        for n in [5, 3, 4, 0, 1000, 6, 1003] {
            assert_eq!(w.check(n), ReplayVerdict::Fresh, "nonce {n}");
            w.accept(n);
            assert_eq!(w.check(n), ReplayVerdict::Duplicate, "nonce {n}");
        }
        assert_eq!(w.check(2), ReplayVerdict::Fresh);
        // 1003 - 2 < 1024: still remembered as unseen; 5 remembered as seen.
        assert_eq!(w.check(5), ReplayVerdict::Duplicate);
        w.accept(1030);
        assert_eq!(w.check(6), ReplayVerdict::TooOld);
        assert_eq!(w.check(7), ReplayVerdict::Fresh);
        assert_eq!(w.check(1003), ReplayVerdict::Duplicate);
    }

    #[test]
    fn replay_window_matches_a_naive_model() {
        // A naive set-based model of the same rule, driven by a fixed pseudo-random walk.
        let mut rng = crate::rng::SplitMix64::new(99);
        let mut w = ReplayWindow::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut top: Option<u64> = None;
        let mut base = 0u64;
        for _ in 0..20_000 {
            let r = rng.next_u64();
            // Mostly near the front, sometimes far behind, sometimes a big jump ahead.
            base += r % 4;
            if r % 97 == 0 {
                base += 3000;
            }
            let n = base.saturating_sub((r >> 8) % 1500);
            let expected = match top {
                Some(t) if n <= t && t - n >= REPLAY_WINDOW => ReplayVerdict::TooOld,
                _ if seen.contains(&n) => ReplayVerdict::Duplicate,
                _ => ReplayVerdict::Fresh,
            };
            assert_eq!(w.check(n), expected, "nonce {n} top {top:?}");
            if expected == ReplayVerdict::Fresh {
                w.accept(n);
                seen.insert(n);
                top = top.max(Some(n));
            }
        }
    }

    #[test]
    fn kk_handshake_and_transport_round_trip() {
        let i = StaticKeypair::from_random_bytes([3; 32]).unwrap();
        let r = StaticKeypair::from_random_bytes([4; 32]).unwrap();
        let mut hi = build_handshake(true, &i.secret, &r.public, b"sid", &[1; 32]).unwrap();
        let mut hr = build_handshake(false, &r.secret, &i.public, b"sid", &[2; 32]).unwrap();
        let m1 = write_handshake(&mut hi).unwrap();
        assert_eq!(m1.len(), super::super::wire::HANDSHAKE_BODY_LEN);
        // A bit flip fails and leaves the responder able to read the real message.
        let mut bad = m1.clone();
        bad[40] ^= 1;
        assert_eq!(
            read_handshake(&mut hr, &bad),
            Err(ChatError::Authentication)
        );
        read_handshake(&mut hr, &m1).unwrap();
        let m2 = write_handshake(&mut hr).unwrap();
        read_handshake(&mut hi, &m2).unwrap();
        let ti = into_transport(hi).unwrap();
        let tr = into_transport(hr).unwrap();
        let mut ct = [0u8; 64];
        let n = ti.write_message(9, b"hi", &mut ct).unwrap();
        let mut pt = [0u8; 64];
        assert_eq!(tr.read_message(9, &ct[..n], &mut pt).unwrap(), 2);
        assert_eq!(&pt[..2], b"hi");
        assert!(tr.read_message(10, &ct[..n], &mut pt).is_err());
    }

    #[test]
    fn handshake_of_another_session_or_key_fails() {
        let i = StaticKeypair::from_random_bytes([3; 32]).unwrap();
        let r = StaticKeypair::from_random_bytes([4; 32]).unwrap();
        let m = StaticKeypair::from_random_bytes([5; 32]).unwrap();
        let mut hi = build_handshake(true, &i.secret, &r.public, b"sid", &[1; 32]).unwrap();
        let m1 = write_handshake(&mut hi).unwrap();
        let mut other_session =
            build_handshake(false, &r.secret, &i.public, b"sie", &[2; 32]).unwrap();
        assert_eq!(
            read_handshake(&mut other_session, &m1),
            Err(ChatError::Authentication)
        );
        let mut other_key = build_handshake(false, &r.secret, &m.public, b"sid", &[2; 32]).unwrap();
        assert_eq!(
            read_handshake(&mut other_key, &m1),
            Err(ChatError::Authentication)
        );
    }
}
