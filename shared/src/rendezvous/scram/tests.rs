//! Tests of the SCRAM exchange: the RFC 7677 vector, a channel-bound vector computed
//! independently, round trips and refusals.

#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

const CHEAP: Kdf = Kdf {
    memory_kib: 8,
    iterations: 1,
    lanes: 1,
};

fn pbkdf2_hi(
    password: &'static [u8],
) -> impl FnOnce(&ServerFirst<'_>) -> Result<[u8; 32], ScramError> {
    move |sf| {
        let mut out = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, &sf.salt, sf.iterations, &mut out);
        Ok(out)
    }
}

/// RFC 7677 section 3, with PBKDF2 plugged back in as `Hi()`.
#[test]
fn rfc7677_test_vector() {
    const SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    let mut client =
        ScramClient::with_nonce_text("user", "rOprNGfwEbeRWgbNEkqO".into(), Gs2::Unbound);
    assert_eq!(client.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
    let client_final = client
        .handle_server_first_with(SERVER_FIRST, pbkdf2_hi(b"pencil"))
        .unwrap();
    assert_eq!(client_final, CLIENT_FINAL);
    client.handle_server_final(SERVER_FINAL).unwrap();

    // The server side, from the stored verifier only. (Our server refuses `n,,`; only this
    // test runs an unbound exchange.)
    assert!(parse_client_first(&client.client_first()).is_err());
    let first = parse_client_first_gs2(&client.client_first(), "n,,").unwrap();
    assert_eq!(first.user, "user");
    let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(b"pencil", &salt, 4096, &mut salted);
    let (_, stored_key, server_key) = keys(&salted);
    let creds = Credentials {
        kdf: CHEAP,
        salt: salt.clone(),
        stored_key,
        server_key,
    };
    let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned();
    let server = ServerExchange {
        unbound: true,
        ..ServerExchange::build(&first, nonce, &salt, 4096, "")
    };
    assert_eq!(server.server_first(), SERVER_FIRST);
    let any = ChannelBinding([0; 32]);
    assert_eq!(
        server
            .verify_client_final(CLIENT_FINAL, &creds, &any)
            .unwrap(),
        SERVER_FINAL
    );

    // One flipped bit of the proof fails.
    let bad = CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
    assert_eq!(
        server.verify_client_final(&bad, &creds, &any),
        Err(ScramError::AuthenticationFailed)
    );
    // A bound server refuses the unbound client-final.
    let bound = ServerExchange::build(
        &first,
        "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned(),
        &salt,
        4096,
        "",
    );
    assert_eq!(
        bound.verify_client_final(CLIENT_FINAL, &creds, &any),
        Err(ScramError::ChannelBindingMismatch)
    );
}

/// RFC 7677's inputs (user `user`, password `pencil`, the same nonces, salt and PBKDF2
/// `Hi()` with 4096 iterations), now bound to the TLS session with
/// cb-data = the bytes 0x00, 0x01, ..., 0x1f. Computed independently with Python's
/// `hashlib`/`hmac`/`base64`:
///
/// ```text
/// gs2-header      = "p=tls-exporter,,"
/// c               = base64(gs2-header || cb-data)
///                 = "cD10bHMtZXhwb3J0ZXIsLAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"
/// SaltedPassword  = PBKDF2-HMAC-SHA-256("pencil", base64d("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)
/// ClientKey       = HMAC(SaltedPassword, "Client Key");  StoredKey = SHA-256(ClientKey)
/// ServerKey       = HMAC(SaltedPassword, "Server Key")
/// AuthMessage     = "n=user,r=rOprNGfwEbeRWgbNEkqO" + "," + server-first + ","
///                   + "c=" + c + ",r=" + combined nonce
/// ClientProof     = ClientKey XOR HMAC(StoredKey, AuthMessage)
///                 = base64 "QC6CS20quADQRb3mT99YUH+n3VJxUvzuK0K0E1Vrs2M="
/// ServerSignature = HMAC(ServerKey, AuthMessage)
///                 = base64 "2GiAgapEppLVlUXbxUDksL3VgYHzuqiK5tR4mhJGgvs="
/// ```
/// (The header changes AuthMessage, so the proof differs from RFC 7677's `dHzb...`.)
#[test]
fn tls_exporter_binding_vector() {
    const SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=cD10bHMtZXhwb3J0ZXIsLAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f,\
                                r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=QC6CS20quADQRb3mT99YUH+n3VJxUvzuK0K0E1Vrs2M=";
    const SERVER_FINAL: &str = "v=2GiAgapEppLVlUXbxUDksL3VgYHzuqiK5tR4mhJGgvs=";
    let binding = ChannelBinding(std::array::from_fn(|i| i as u8));
    let mut client = ScramClient::with_nonce_text(
        "user",
        "rOprNGfwEbeRWgbNEkqO".into(),
        Gs2::TlsExporter(binding),
    );
    assert_eq!(
        client.client_first(),
        "p=tls-exporter,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    );
    let client_final = client
        .handle_server_first_with(SERVER_FIRST, pbkdf2_hi(b"pencil"))
        .unwrap();
    assert_eq!(client_final, CLIENT_FINAL);
    client.handle_server_final(SERVER_FINAL).unwrap();

    let first = parse_client_first(&client.client_first()).unwrap();
    let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(b"pencil", &salt, 4096, &mut salted);
    let (_, stored_key, server_key) = keys(&salted);
    let creds = Credentials {
        kdf: CHEAP,
        salt: salt.clone(),
        stored_key,
        server_key,
    };
    let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_owned();
    let server = ServerExchange::build(&first, nonce, &salt, 4096, "");
    assert_eq!(
        server
            .verify_client_final(CLIENT_FINAL, &creds, &binding)
            .unwrap(),
        SERVER_FINAL
    );
    // The server's side of another TLS session exports other bytes.
    let mut other = binding;
    other.0[31] ^= 1;
    assert_eq!(
        server.verify_client_final(CLIENT_FINAL, &creds, &other),
        Err(ScramError::ChannelBindingMismatch)
    );
    // A client that rewrites c= to the server's binding has a proof over the wrong
    // AuthMessage (the proof covers c=).
    let rewritten = CLIENT_FINAL.replace(
        "c=cD10bHMtZXhwb3J0ZXIsLAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f",
        &format!("c={}", Gs2::TlsExporter(other).c_attribute()),
    );
    assert_eq!(
        server.verify_client_final(&rewritten, &creds, &other),
        Err(ScramError::AuthenticationFailed)
    );
}

const CB: ChannelBinding = ChannelBinding([0xcb; 32]);

fn exchange(password: &[u8], login_password: &[u8]) -> Result<(), ScramError> {
    exchange_bound(password, login_password, &CB, &CB)
}

fn exchange_bound(
    password: &[u8],
    login_password: &[u8],
    client_cb: &ChannelBinding,
    server_cb: &ChannelBinding,
) -> Result<(), ScramError> {
    let creds = derive_credentials(password, b"0123456789abcdef", CHEAP)?;
    let user = UserName::parse("alice").unwrap();
    let mut client = ScramClient::new(&user, &[1; 18], client_cb).with_min_kdf(cheap_kdf());
    let first = parse_client_first(&client.client_first())?;
    let server = ServerExchange::new(&first, &[2; 18], &creds.salt, creds.kdf);
    assert!(
        server
            .server_first()
            .ends_with(",i=1,k=argon2id:m=8:t=1:p=1")
    );
    let client_final = client.handle_server_first(server.server_first(), login_password)?;
    let server_final = server.verify_client_final(&client_final, &creds, server_cb)?;
    client.handle_server_final(&server_final)
}

#[test]
fn channel_binding_must_match() {
    exchange_bound(b"pw", b"pw", &CB, &CB).unwrap();
    assert_eq!(
        exchange_bound(b"pw", b"pw", &CB, &ChannelBinding([0xcc; 32])),
        Err(ScramError::ChannelBindingMismatch)
    );
    let client = ScramClient::new(&UserName::parse("alice").unwrap(), &[1; 18], &CB)
        .with_min_kdf(cheap_kdf());
    assert!(
        client
            .client_first()
            .starts_with("p=tls-exporter,,n=alice,r=")
    );
    assert_eq!(TLS_EXPORTER_LABEL, b"EXPORTER-Channel-Binding");
}

#[test]
fn argon2_round_trip_and_wrong_password() {
    exchange(b"correct horse", b"correct horse").unwrap();
    assert_eq!(
        exchange(b"correct horse", b"battery staple"),
        Err(ScramError::AuthenticationFailed)
    );
}

#[test]
fn derive_credentials_is_deterministic_and_salted() {
    let a = derive_credentials(b"pw", b"saltsalt", CHEAP).unwrap();
    assert_eq!(a, derive_credentials(b"pw", b"saltsalt", CHEAP).unwrap());
    assert_ne!(
        a.stored_key,
        derive_credentials(b"pw", b"saltsal2", CHEAP)
            .unwrap()
            .stored_key
    );
    assert_ne!(a.stored_key, a.server_key);
    assert!(matches!(
        derive_credentials(b"pw", b"short", CHEAP),
        Err(ScramError::Kdf(_))
    ));
}

#[test]
fn tampered_server_final_and_bad_server_first_fail() {
    let creds = derive_credentials(b"pw", b"0123456789abcdef", CHEAP).unwrap();
    let user = UserName::parse("bob").unwrap();
    let mut client = ScramClient::new(&user, &[3; 18], &CB).with_min_kdf(cheap_kdf());
    assert_eq!(
        client.handle_server_final("v=AAAA"),
        Err(ScramError::OutOfOrder)
    );
    let first = parse_client_first(&client.client_first()).unwrap();
    let server = ServerExchange::new(&first, &[4; 18], &creds.salt, creds.kdf);
    let client_final = client
        .handle_server_first(server.server_first(), b"pw")
        .unwrap();
    let good = server
        .verify_client_final(&client_final, &creds, &CB)
        .unwrap();
    // A server that does not know the verifier signs with the wrong key.
    let other = derive_credentials(b"other", b"0123456789abcdef", CHEAP).unwrap();
    let forged = server.verify_client_final(
        &client_final,
        &Credentials {
            stored_key: creds.stored_key,
            ..other
        },
        &CB,
    );
    let forged = forged.unwrap();
    assert_ne!(forged, good);
    assert_eq!(
        client.handle_server_final(&forged),
        Err(ScramError::ServerSignatureMismatch)
    );
    assert!(client.handle_server_final("v=notbase64!").is_err());
    assert_eq!(
        client.handle_server_final("e=other-error"),
        Err(ScramError::AuthenticationFailed)
    );
    client.handle_server_final(&good).unwrap();
    // The nonce must extend ours; k= must agree with i=.
    let mut c2 = ScramClient::new(&user, &[3; 18], &CB).with_min_kdf(cheap_kdf());
    let sf = server.server_first().replacen("r=A", "r=B", 1);
    assert_eq!(
        c2.handle_server_first(&sf, b"pw"),
        Err(ScramError::NonceMismatch)
    );
    let mut c3 = ScramClient::new(&user, &[3; 18], &CB).with_min_kdf(cheap_kdf());
    let sf = server.server_first().replace(",i=1,", ",i=2,");
    assert!(matches!(
        c3.handle_server_first(&sf, b"pw"),
        Err(ScramError::Malformed(_))
    ));
    let mut c4 = ScramClient::new(&user, &[3; 18], &CB).with_min_kdf(cheap_kdf());
    let sf = server.server_first().replace(",k=argon2id:m=8:t=1:p=1", "");
    assert!(matches!(
        c4.handle_server_first(&sf, b"pw"),
        Err(ScramError::Malformed(_))
    ));
}

#[test]
fn client_first_refuses_what_we_do_not_support() {
    for bad in [
        "p=tls-unique,,n=a,r=abc",
        "p=tls-server-end-point,,n=a,r=abc",
        "y,,n=a,r=abc",
        "n,,n=a,r=abc",
        "p=tls-exporter,a=admin,n=a,r=abc",
        "p=tls-exporter,,m=ext,n=a,r=abc",
        "p=tls-exporter,,n=,r=abc",
        "p=tls-exporter,,n=a,r=",
        "p=tls-exporter,,n=a",
        "p=tls-exporter,,r=abc,n=a",
    ] {
        assert!(parse_client_first(bad).is_err(), "{bad}");
    }
    let ok = parse_client_first("p=tls-exporter,,n=a,r=abc,x=ext").unwrap();
    assert_eq!((ok.user.as_str(), ok.nonce.as_str()), ("a", "abc"));
}

proptest! {
    #[test]
    fn malformed_messages_never_panic(text in "[ -~]{0,120}", cut in 0usize..200) {
        let _ = parse_client_first(&text);
        let user = UserName::parse("alice").unwrap();
        let mut client = ScramClient::new(&user, &[5; 18], &CB).with_min_kdf(cheap_kdf());
        let _ = client.handle_server_first_with(&text, |_| Ok([0; 32]));
        let _ = client.handle_server_final(&text);
        let first = parse_client_first(&client.client_first()).unwrap();
        let creds = derive_credentials(b"pw", b"0123456789abcdef", CHEAP).unwrap();
        let server = ServerExchange::new(&first, &[6; 18], &creds.salt, creds.kdf);
        let _ = server.verify_client_final(&text, &creds, &CB);
        // Truncations and splices of valid messages.
        let c = Gs2::TlsExporter(CB).c_attribute();
        let valid = format!("c={c},r={}{},p={}", "x", text, B64.encode([0u8; 32]));
        let cut = cut.min(valid.len());
        let _ = server.verify_client_final(&valid[..cut], &creds, &CB);
        let sf = server.server_first();
        let mut fresh = ScramClient::new(&user, &[5; 18], &CB).with_min_kdf(cheap_kdf());
        let _ = fresh.handle_server_first_with(&sf[..cut.min(sf.len())], |_| Ok([0; 32]));
        let _ = fresh.handle_server_first_with(&format!("{sf}{text}"), |_| Ok([0; 32]));
    }
}

/// The cheap KDF the tests register with; the client must be told to accept it.
fn cheap_kdf() -> crate::rendezvous::Kdf {
    crate::rendezvous::Kdf {
        memory_kib: 8,
        iterations: 1,
        lanes: 1,
    }
}
