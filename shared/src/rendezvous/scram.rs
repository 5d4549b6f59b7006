//! SCRAM-SHA-256 ([RFC 5802], [RFC 7677]) with its key-stretching function `Hi()` replaced by
//! Argon2id ([RFC 9106]): the login of docs/PROTOCOL.md section 5.
//!
//! Messages are RFC 5802's, unchanged, with one extension attribute: the server-first-message
//! carries `k=<kdf>` (for example `k=argon2id:m=19456:t=2:p=1`) after `i=` so the client can
//! derive the same SaltedPassword.
//!
//! Channel binding is mandatory: the GS2 header is always `p=tls-exporter,,` ([RFC 9266]), and
//! the client-final-message's `c=` is `base64("p=tls-exporter,," || cb-data)`, where cb-data is
//! the 32 bytes each end exports from its own side of the TLS 1.3 session with the label
//! [`TLS_EXPORTER_LABEL`] and no context ([`ChannelBinding`]). A login relayed by a man in the
//! middle who terminates TLS has two different sessions on its two sides, so the two ends
//! export different bytes and the proof fails.
//!
//! Both sides are here and both are sans-IO: [`ScramClient`] for the client, [`ServerExchange`]
//! for the server core. The server never runs the KDF; it stores `(kdf, salt, StoredKey,
//! ServerKey)` ([`Credentials`]) and checks proofs with SHA-256 and HMAC only.
//!
//! ```
//! # use shared::rendezvous::{scram::*, Kdf, UserName};
//! let kdf = Kdf { memory_kib: 8, iterations: 1, lanes: 1 };
//! let creds = derive_credentials(b"pencil", b"sixteen byte slt", kdf).unwrap();
//! let user = UserName::parse("alice").unwrap();
//! // Both ends export this from their side of the TLS session (RFC 9266).
//! let binding = ChannelBinding([5; 32]);
//! // The client refuses weaker stretching than it was told to expect (default: the server's).
//! let mut client = ScramClient::new(&user, &[7; 18], &binding).with_min_kdf(kdf);
//! let first = parse_client_first(&client.client_first()).unwrap();
//! let server = ServerExchange::new(&first, &[9; 18], &creds.salt, kdf);
//! let client_final = client.handle_server_first(server.server_first(), b"pencil").unwrap();
//! let server_final = server.verify_client_final(&client_final, &creds, &binding).unwrap();
//! client.handle_server_final(&server_final).unwrap();
//! // The same messages over another TLS session (a man in the middle) fail.
//! assert!(server.verify_client_final(&client_final, &creds, &ChannelBinding([6; 32])).is_err());
//! ```
//!
//! [RFC 5802]: https://www.rfc-editor.org/rfc/rfc5802
//! [RFC 7677]: https://www.rfc-editor.org/rfc/rfc7677
//! [RFC 9106]: https://www.rfc-editor.org/rfc/rfc9106
//! [RFC 9266]: https://www.rfc-editor.org/rfc/rfc9266

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use super::types::{Credentials, Kdf, UserName};

/// The mechanism name on the `USR` line.
pub const MECHANISM: &str = "SCRAM-SHA-256-ARGON2ID";
/// The fewest random bytes in a nonce ([`ScramClient::new`], [`ServerExchange::new`]).
pub const MIN_NONCE_BYTES: usize = 18;
/// The fewest characters the server accepts in a client nonce (base64 of 18 bytes).
pub const MIN_NONCE_CHARS: usize = 24;
/// The most characters accepted in a nonce.
pub const MAX_NONCE_CHARS: usize = 128;
/// The GS2 header of every login: channel binding of type `tls-exporter`, no authzid.
pub const GS2_HEADER: &str = "p=tls-exporter,,";
/// The exporter label of RFC 9266's `tls-exporter` channel binding. Both ends call the TLS
/// library's `export_keying_material` with this label, no context, for 32 bytes.
pub const TLS_EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// The `tls-exporter` channel binding data ([RFC 9266]): 32 bytes exported from the TLS 1.3
/// session with [`TLS_EXPORTER_LABEL`] and no context. Each end computes it on its own side of
/// the TLS session; they agree only if nobody terminates TLS in between.
///
/// [RFC 9266]: https://www.rfc-editor.org/rfc/rfc9266
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChannelBinding(pub [u8; 32]);

/// Which GS2 header an exchange uses. Only the RFC 7677 test vector runs without binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gs2 {
    /// `n,,`: no channel binding (`c=biws`). Crate tests only.
    #[cfg(test)]
    Unbound,
    /// `p=tls-exporter,,` with these 32 bytes.
    TlsExporter(ChannelBinding),
}

impl Gs2 {
    fn header(self) -> &'static str {
        match self {
            #[cfg(test)]
            Gs2::Unbound => "n,,",
            Gs2::TlsExporter(_) => GS2_HEADER,
        }
    }

    /// The `c=` value: `base64(gs2-header || cb-data)`.
    fn c_attribute(self) -> String {
        let mut input = self.header().as_bytes().to_vec();
        match self {
            Gs2::TlsExporter(ChannelBinding(data)) => input.extend_from_slice(&data),
            #[cfg(test)]
            Gs2::Unbound => {}
        }
        B64.encode(input)
    }
}

type HmacSha256 = Hmac<Sha256>;

/// Why a SCRAM step failed.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// A message does not follow RFC 5802's syntax (or uses a feature we do not support, such
    /// as an authzid, or lacks the mandatory `p=tls-exporter` channel binding).
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client-final-message's `c=` is not this end's channel binding: the two ends are not
    /// on the same TLS session (a man in the middle), or the client did not bind.
    #[error("SCRAM channel binding mismatch")]
    ChannelBindingMismatch,
    /// The server's nonce does not extend ours, or the client-final nonce is not the combined one.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The KDF parameters or the salt are refused by Argon2.
    #[error("KDF refused: {0}")]
    Kdf(String),
    /// The client's proof is wrong (wrong password, or unknown user).
    #[error("authentication failed")]
    AuthenticationFailed,
    /// The server's signature is wrong: it does not know our verifier. Hang up.
    #[error("server signature mismatch: the server does not know the verifier")]
    ServerSignatureMismatch,
    /// A method was called out of order.
    #[error("SCRAM step out of order")]
    OutOfOrder,
    /// The server named a KDF cheaper than the client accepts
    /// ([`ScramClient::with_min_kdf`]): no proof was made.
    #[error(
        "the server asks for key stretching {offered}, weaker than the {min} this client \
         accepts: refusing to make a proof an eavesdropper could crack cheaply"
    )]
    WeakKdf {
        /// What the server named.
        offered: Kdf,
        /// The client's floor.
        min: Kdf,
    },
}

/// `Hi()` for SCRAM-SHA-256-ARGON2ID: `Argon2id(password, salt, m, t, p)`, 32 bytes.
pub fn salted_password(password: &[u8], salt: &[u8], kdf: Kdf) -> Result<[u8; 32], ScramError> {
    let params = argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.lanes, Some(32))
        .map_err(|e| ScramError::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(password, salt, &mut out)
        .map_err(|e| ScramError::Kdf(e.to_string()))?;
    Ok(out)
}

/// Password -> verifier (runs Argon2id; slow by design).
pub fn derive_credentials(
    password: &[u8],
    salt: &[u8],
    kdf: Kdf,
) -> Result<Credentials, ScramError> {
    let salted = salted_password(password, salt, kdf)?;
    let (_, stored_key, server_key) = keys(&salted);
    Ok(Credentials {
        kdf,
        salt: salt.to_vec(),
        stored_key,
        server_key,
    })
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// `(ClientKey, StoredKey, ServerKey)` from SaltedPassword.
fn keys(salted: &[u8; 32]) -> ([u8; 32], [u8; 32], [u8; 32]) {
    let client_key = hmac(salted, b"Client Key");
    (client_key, sha256(&client_key), hmac(salted, b"Server Key"))
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// Constant-time equality of two 32-byte values.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn decode_32(b64: &str) -> Option<[u8; 32]> {
    B64.decode(b64).ok()?.try_into().ok()
}

/// A printable nonce without commas (RFC 5802 `printable`).
fn nonce_ok(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce.len() <= 4 * MAX_NONCE_CHARS
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Splits `a=value` attributes; `expected` gives the attribute letters in order. Extra trailing
/// attributes are ignored only if `allow_extra`.
fn attributes<const N: usize>(
    msg: &str,
    expected: [char; N],
    allow_extra: bool,
) -> Result<[&str; N], ScramError> {
    let mut parts = msg.split(',');
    let mut out = [""; N];
    for (slot, letter) in out.iter_mut().zip(expected) {
        let part = parts
            .next()
            .ok_or(ScramError::Malformed("missing attribute"))?;
        let mut chars = part.chars();
        if chars.next() != Some(letter) || chars.next() != Some('=') {
            return Err(ScramError::Malformed("unexpected attribute"));
        }
        *slot = &part[2..];
    }
    if !allow_extra && parts.next().is_some() {
        return Err(ScramError::Malformed("unexpected trailing attribute"));
    }
    Ok(out)
}

/// The parsed client-first-message, as the server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user name as sent (`n=`), not yet checked against [`UserName`]'s rules.
    pub user: String,
    /// The client nonce (`r=`).
    pub nonce: String,
    /// The client-first-message-bare (`n=...,r=...`), part of the AuthMessage.
    pub bare: String,
}

/// Parses a client-first-message `p=tls-exporter,,n=user,r=nonce`. Refuses any other GS2
/// header (no binding `n,,`, `y,,`, other binding types, authzids) and mandatory extensions.
pub fn parse_client_first(msg: &str) -> Result<ClientFirst, ScramError> {
    parse_client_first_gs2(msg, GS2_HEADER)
}

fn parse_client_first_gs2(msg: &str, header: &str) -> Result<ClientFirst, ScramError> {
    let bare = msg.strip_prefix(header).ok_or(ScramError::Malformed(
        "GS2 header must be \"p=tls-exporter,,\"",
    ))?;
    let [user, nonce] = attributes(bare, ['n', 'r'], true)?;
    // Extensions after r= are allowed by RFC 5802 only if not mandatory (m= is first, refused
    // above by the attribute order); we take none.
    if user.is_empty() || user.contains('=') {
        return Err(ScramError::Malformed("bad user name"));
    }
    if !nonce_ok(nonce) {
        return Err(ScramError::Malformed("bad nonce"));
    }
    Ok(ClientFirst {
        user: user.to_owned(),
        nonce: nonce.to_owned(),
        bare: bare.to_owned(),
    })
}

/// The server's half of one SCRAM exchange: built from the client-first-message, it holds the
/// server-first-message and checks the client-final-message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerExchange {
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// Only the crate's RFC 7677 test runs without channel binding.
    #[cfg(test)]
    unbound: bool,
}

impl ServerExchange {
    /// Starts an exchange with `server_nonce` (at least [`MIN_NONCE_BYTES`] random bytes,
    /// base64'd inside) and the user's salt and KDF (or fake ones for an unknown user).
    pub fn new(client_first: &ClientFirst, server_nonce: &[u8], salt: &[u8], kdf: Kdf) -> Self {
        let nonce = format!("{}{}", client_first.nonce, B64.encode(server_nonce));
        let k = format!(",k={kdf}");
        Self::build(client_first, nonce, salt, kdf.iterations, &k)
    }

    fn build(cf: &ClientFirst, nonce: String, salt: &[u8], i: u32, extra: &str) -> Self {
        let server_first = format!("r={nonce},s={},i={i}{extra}", B64.encode(salt));
        ServerExchange {
            client_first_bare: cf.bare.clone(),
            server_first,
            nonce,
            #[cfg(test)]
            unbound: false,
        }
    }

    /// The server-first-message `r=...,s=...,i=...,k=...` (not base64'd).
    pub fn server_first(&self) -> &str {
        &self.server_first
    }

    /// Checks the client-final-message against the stored verifier and this end's channel
    /// binding (`binding`, exported from the server's side of the TLS session); on success
    /// returns the server-final-message `v=...`. A wrong proof is
    /// [`ScramError::AuthenticationFailed`], a `c=` that is not
    /// `base64("p=tls-exporter,," || binding)` is [`ScramError::ChannelBindingMismatch`]: the
    /// caller treats both alike (a failed login).
    pub fn verify_client_final(
        &self,
        client_final: &str,
        credentials: &Credentials,
        binding: &ChannelBinding,
    ) -> Result<String, ScramError> {
        let gs2 = Gs2::TlsExporter(*binding);
        #[cfg(test)]
        let gs2 = if self.unbound { Gs2::Unbound } else { gs2 };
        let [c, r, p] = attributes(client_final, ['c', 'r', 'p'], false)?;
        // Not secret (both ends know it), but compared without early exit all the same.
        let expected = gs2.c_attribute();
        if c.len() != expected.len()
            || c.bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                != 0
        {
            return Err(ScramError::ChannelBindingMismatch);
        }
        if r != self.nonce {
            return Err(ScramError::NonceMismatch);
        }
        let proof = decode_32(p).ok_or(ScramError::Malformed("bad proof"))?;
        let without_proof = &client_final[..client_final.len() - p.len() - 3];
        let auth = auth_message(&self.client_first_bare, &self.server_first, without_proof);
        let client_signature = hmac(&credentials.stored_key, auth.as_bytes());
        let client_key = xor(&proof, &client_signature);
        if !ct_eq(&sha256(&client_key), &credentials.stored_key) {
            return Err(ScramError::AuthenticationFailed);
        }
        let server_signature = hmac(&credentials.server_key, auth.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

fn auth_message(
    client_first_bare: &str,
    server_first: &str,
    client_final_no_proof: &str,
) -> String {
    format!("{client_first_bare},{server_first},{client_final_no_proof}")
}

/// What the server-first-message said.
pub(crate) struct ServerFirst<'a> {
    nonce: &'a str,
    salt: Vec<u8>,
    iterations: u32,
    kdf: Option<&'a str>,
}

fn parse_server_first(msg: &str) -> Result<ServerFirst<'_>, ScramError> {
    let mut parts = msg.splitn(4, ',');
    let mut take = |letter: &'static str| {
        parts
            .next()
            .and_then(|p| p.strip_prefix(letter))
            .ok_or(ScramError::Malformed("missing attribute"))
    };
    let (r, s, i) = (take("r=")?, take("s=")?, take("i=")?);
    let kdf = match parts.next() {
        None => None,
        Some(k) => Some(
            k.strip_prefix("k=")
                .filter(|k| !k.contains(','))
                .ok_or(ScramError::Malformed("unexpected extension"))?,
        ),
    };
    if !nonce_ok(r) {
        return Err(ScramError::Malformed("bad nonce"));
    }
    let salt = B64
        .decode(s)
        .map_err(|_| ScramError::Malformed("bad salt"))?;
    let iterations = Some(i)
        .filter(|i| !i.is_empty() && i.len() <= 10 && i.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|i| i.parse::<u32>().ok())
        .filter(|&i| i >= 1)
        .ok_or(ScramError::Malformed("bad iteration count"))?;
    Ok(ServerFirst {
        nonce: r,
        salt,
        iterations,
        kdf,
    })
}

#[derive(Clone, Debug)]
enum ClientState {
    Initial,
    /// Waiting for the server-final-message, which must carry this signature.
    Final([u8; 32]),
    Failed,
}

/// The client's half of one SCRAM exchange.
#[derive(Clone, Debug)]
pub struct ScramClient {
    nonce: String,
    bare: String,
    gs2: Gs2,
    state: ClientState,
    min_kdf: Kdf,
}

/// The most memory a server may make the client spend on key stretching (1 GiB): more is
/// refused rather than let a server exhaust the client.
pub const MAX_CLIENT_KDF_MEMORY_KIB: u32 = 1024 * 1024;
/// The most Argon2id passes a server may ask of the client.
pub const MAX_CLIENT_KDF_ITERATIONS: u32 = 16;

impl ScramClient {
    /// `nonce`: at least 18 random bytes from the caller (the core has no rng); base64'd inside.
    /// The server refuses shorter nonces. `binding`: exported from the client's side of the TLS
    /// session to the server ([`TLS_EXPORTER_LABEL`], 32 bytes, no context).
    pub fn new(user: &UserName, nonce: &[u8], binding: &ChannelBinding) -> ScramClient {
        Self::with_nonce_text(user.as_str(), B64.encode(nonce), Gs2::TlsExporter(*binding))
    }

    /// A client with a nonce already in text form (the test vectors use one).
    fn with_nonce_text(user: &str, nonce: String, gs2: Gs2) -> ScramClient {
        ScramClient {
            bare: format!("n={user},r={nonce}"),
            nonce,
            gs2,
            state: ClientState::Initial,
            min_kdf: Kdf::default(),
        }
    }

    /// The weakest key stretching this client accepts from the server's `k=` (default
    /// [`Kdf::default`]). A server, or anyone the client wrongly trusts as one, that names a
    /// cheaper KDF would get a proof it could attack offline at that low cost: such a
    /// server-first-message is refused with [`ScramError::WeakKdf`] before the KDF runs and
    /// before any proof is made. Lower it only for test servers that use cheap verifiers.
    pub fn with_min_kdf(mut self, min: Kdf) -> ScramClient {
        self.min_kdf = min;
        self
    }

    /// RFC 5802 client-first-message, e.g. "p=tls-exporter,,n=alice,r=..." (NOT base64; the
    /// caller base64s it for the USR line).
    pub fn client_first(&self) -> String {
        format!("{}{}", self.gs2.header(), self.bare)
    }

    /// Takes the server-first-message (decoded from base64), runs the KDF, returns
    /// client-final-message. The server must name an Argon2id KDF with `k=` whose `t` is `i=`.
    pub fn handle_server_first(
        &mut self,
        server_first: &str,
        password: &[u8],
    ) -> Result<String, ScramError> {
        let min_kdf = self.min_kdf;
        self.handle_server_first_with(server_first, |sf| {
            let kdf: Kdf = sf
                .kdf
                .ok_or(ScramError::Malformed("missing k= attribute"))?
                .parse()
                .map_err(|_| ScramError::Malformed("bad k= attribute"))?;
            if kdf.iterations != sf.iterations {
                return Err(ScramError::Malformed("i= does not match k="));
            }
            if !kdf.at_least(&min_kdf) {
                return Err(ScramError::WeakKdf {
                    offered: kdf,
                    min: min_kdf,
                });
            }
            if kdf.memory_kib > MAX_CLIENT_KDF_MEMORY_KIB
                || kdf.iterations > MAX_CLIENT_KDF_ITERATIONS
            {
                return Err(ScramError::Kdf(format!(
                    "the server asks for {kdf}, more than this client spends (at most \
                     {MAX_CLIENT_KDF_MEMORY_KIB} KiB and {MAX_CLIENT_KDF_ITERATIONS} passes)"
                )));
            }
            salted_password(password, &sf.salt, kdf)
        })
    }

    /// The RFC 5802 client step with a pluggable `Hi()`.
    pub(crate) fn handle_server_first_with(
        &mut self,
        server_first: &str,
        hi: impl FnOnce(&ServerFirst<'_>) -> Result<[u8; 32], ScramError>,
    ) -> Result<String, ScramError> {
        if !matches!(self.state, ClientState::Initial) {
            return Err(ScramError::OutOfOrder);
        }
        self.state = ClientState::Failed;
        let sf = parse_server_first(server_first)?;
        if sf.nonce.len() <= self.nonce.len() || !sf.nonce.starts_with(&self.nonce) {
            return Err(ScramError::NonceMismatch);
        }
        let mut salted = hi(&sf)?;
        let (mut client_key, stored_key, server_key) = keys(&salted);
        salted.zeroize();
        let without_proof = format!("c={},r={}", self.gs2.c_attribute(), sf.nonce);
        let auth = auth_message(&self.bare, server_first, &without_proof);
        let proof = xor(&client_key, &hmac(&stored_key, auth.as_bytes()));
        // The password-equivalent secrets go now; the proof alone is safe to keep.
        client_key.zeroize();
        self.state = ClientState::Final(hmac(&server_key, auth.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Checks the server-final-message "v=...": proves the server knew the verifier.
    pub fn handle_server_final(&self, server_final: &str) -> Result<(), ScramError> {
        let ClientState::Final(expected) = &self.state else {
            return Err(ScramError::OutOfOrder);
        };
        if server_final.starts_with("e=") {
            return Err(ScramError::AuthenticationFailed);
        }
        let [v] = attributes(server_final, ['v'], false)?;
        let got = decode_32(v).ok_or(ScramError::Malformed("bad server signature"))?;
        if ct_eq(&got, expected) {
            Ok(())
        } else {
            Err(ScramError::ServerSignatureMismatch)
        }
    }
}

#[cfg(test)]
mod tests;
