//! Property tests of the STUN codec in both header forms, and a check that it never allocates.
//!
//! - Round trips: whatever [`MessageWriter`] writes, [`Message::parse`] reads back as the same
//!   typed attributes, classic (RFC 3489) and modern (RFC 8489) alike.
//! - Robustness: every truncation of a valid message is rejected, random bytes never panic, and
//!   a flipped byte in a FINGERPRINTed message is caught.
//! - The classic encodings' quirks: an odd UNKNOWN-ATTRIBUTES list repeats its last type, and an
//!   ERROR-CODE reason is padded with spaces to a multiple of four.
//! - Decoding and encoding into a stack buffer allocate nothing (a counting global allocator).

mod codec_support;

use std::net::SocketAddr;

use codec_support::allocations::allocations_during;
use codec_support::model::{
    MessageSpec, Owned, TYPED, exercise, expected, owned, write, write_attr, write_vec,
};
use codec_support::strategies::{attr_spec, classic_txid, message_spec, message_spec_with};
use proptest::prelude::*;
use shared::stun::{
    Attribute, ChangeRequest, Class, DecodeError, EncodeError, FINGERPRINT_XOR, HEADER_LEN,
    IntegrityError, MAGIC_COOKIE, Message, MessageWriter, Method, TransactionId, attr, crc32,
    message_length,
};

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

/// Checks that `bytes` (written from `spec`) reads back as `spec`.
fn check_round_trip(spec: &MessageSpec, bytes: &[u8]) {
    let msg = Message::parse(bytes).expect("what the writer writes parses");
    let classic = spec.txid.is_classic();
    assert_eq!(msg.method(), Method(spec.method));
    assert_eq!(msg.class(), spec.class);
    assert_eq!(msg.transaction_id(), spec.txid);
    assert_eq!(msg.is_classic(), classic);
    assert_eq!(msg.has_fingerprint(), spec.fingerprint);
    assert_eq!(message_length(bytes), Some(bytes.len()));

    let got: Vec<Owned> = msg
        .attributes()
        .map(|a| owned(&a.parse().expect("written attributes parse")))
        .collect();
    let mut want: Vec<Owned> = spec.attrs.iter().map(|a| expected(a, classic)).collect();
    if spec.integrity.is_some() {
        want.push(Owned::Integrity);
    }
    if spec.fingerprint {
        let at = bytes.len() - 8;
        want.push(Owned::Fingerprint(crc32(&bytes[..at]) ^ FINGERPRINT_XOR));
    }
    assert_eq!(got, want);

    match &spec.integrity {
        Some(key) => {
            assert_eq!(msg.verify_integrity(key), Ok(()));
            let mut wrong = key.clone();
            wrong.push(0x55);
            assert_eq!(msg.verify_integrity(&wrong), Err(IntegrityError::Mismatch));
        }
        None => assert_eq!(msg.verify_integrity(b"key"), Err(IntegrityError::Missing)),
    }
    exercise(&msg);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Classic and modern, with and without MESSAGE-INTEGRITY and FINGERPRINT.
    #[test]
    fn write_then_parse_gives_the_same_attributes(spec in message_spec()) {
        let bytes = write_vec(&spec);
        check_round_trip(&spec, &bytes);

        // Neither writing into a stack buffer nor reading back allocates.
        let mut buf = [0u8; 8192];
        let (len, allocations) = allocations_during(|| write(&spec, &mut buf));
        prop_assert_eq!(allocations, 0, "encoding allocated");
        prop_assert_eq!(&buf[..len.expect("fits")], &bytes[..]);
        let (_, allocations) = allocations_during(|| decode_everything(&bytes));
        prop_assert_eq!(allocations, 0, "decoding allocated");
    }

    /// The classic form specifically, with MESSAGE-INTEGRITY followed by FINGERPRINT (which
    /// RFC 3489 did not have, but which this codec lets a classic message carry).
    #[test]
    fn classic_integrity_then_fingerprint_round_trips(
        spec in message_spec_with(classic_txid().boxed()),
        key in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let spec = MessageSpec { integrity: Some(key), fingerprint: true, ..spec };
        let bytes = write_vec(&spec);
        check_round_trip(&spec, &bytes);
    }

    /// Writing into any buffer too small fails cleanly; any buffer large enough gives the same
    /// bytes.
    #[test]
    fn short_buffers_are_refused_without_panicking(spec in message_spec()) {
        let full = write_vec(&spec);
        for size in 0..full.len() {
            let mut buf = vec![0u8; size];
            prop_assert_eq!(write(&spec, &mut buf), Err(EncodeError::BufferTooSmall));
        }
        let mut buf = vec![0xAAu8; full.len() + 7];
        prop_assert_eq!(write(&spec, &mut buf), Ok(full.len()));
        prop_assert_eq!(&buf[..full.len()], &full[..]);
    }
}

// ---------------------------------------------------------------------------------------------
// Truncation, garbage, and corruption
// ---------------------------------------------------------------------------------------------

/// Any byte string whose header announces exactly its length (so that parsing gets past the
/// header), in either form.
fn framed_garbage() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..0x40,
        any::<u8>(),
        any::<bool>(),
        any::<[u8; 16]>(),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(|mut body| {
            body.truncate(body.len() / 4 * 4);
            body
        }),
    )
        .prop_map(|(t0, t1, modern, mut tail, body)| {
            if modern {
                tail[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            }
            let mut out = vec![t0, t1];
            let len = u16::try_from(body.len()).expect("short");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&tail);
            out.extend_from_slice(&body);
            out
        })
}

/// A framed body made of plausible attributes: random types (often known ones) with lengths
/// that usually fit, so that parsing reaches the typed readers.
fn framed_attributes() -> impl Strategy<Value = Vec<u8>> {
    let one = (
        prop_oneof![proptest::sample::select(TYPED.to_vec()), any::<u16>()],
        proptest::collection::vec(any::<u8>(), 0..24),
        any::<bool>(),
    );
    (
        any::<bool>(),
        any::<[u8; 16]>(),
        proptest::collection::vec(one, 0..6),
    )
        .prop_map(|(modern, mut tail, attrs)| {
            if modern {
                tail[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            }
            let mut body = Vec::new();
            for (typ, value, lie) in attrs {
                body.extend_from_slice(&typ.to_be_bytes());
                let len = u16::try_from(value.len()).expect("short");
                // Sometimes lie about the length by a little.
                let stated = if lie { len ^ 1 } else { len };
                body.extend_from_slice(&stated.to_be_bytes());
                body.extend_from_slice(&value);
                body.resize(body.len().next_multiple_of(4), 0);
            }
            let mut out = vec![0x01, 0x01];
            out.extend_from_slice(&u16::try_from(body.len()).expect("short").to_be_bytes());
            out.extend_from_slice(&tail);
            out.extend_from_slice(&body);
            out
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A datagram cut short is rejected (the header length no longer matches), never parsed
    /// and never a panic.
    #[test]
    fn every_truncation_is_rejected(spec in message_spec()) {
        let bytes = write_vec(&spec);
        for len in 0..bytes.len() {
            let err = Message::parse(&bytes[..len]);
            prop_assert!(err.is_err(), "prefix of {} of {} bytes parsed", len, bytes.len());
            if len < HEADER_LEN {
                prop_assert_eq!(err.err(), Some(DecodeError::TooShort));
            } else {
                let is_length_mismatch =
                    matches!(err, Err(DecodeError::LengthMismatch { .. }));
                prop_assert!(is_length_mismatch);
            }
        }
    }

    /// A truncation whose header length is rewritten to match (as a stream reader that trusted
    /// a corrupted length would produce) may parse or not, but never panics, and whatever
    /// parses reads consistently.
    #[test]
    fn truncations_with_a_matching_length_never_panic(spec in message_spec()) {
        let bytes = write_vec(&spec);
        for len in (HEADER_LEN..bytes.len()).step_by(4) {
            let mut cut = bytes[..len].to_vec();
            let body = u16::try_from(len - HEADER_LEN).expect("short");
            cut[2..4].copy_from_slice(&body.to_be_bytes());
            if let Ok(msg) = Message::parse(&cut) {
                exercise(&msg);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(msg) = Message::parse(&bytes) {
            exercise(&msg);
        }
        let _ = message_length(&bytes);
        let (_, allocations) = allocations_during(|| decode_everything(&bytes));
        prop_assert_eq!(allocations, 0);
    }

    #[test]
    fn framed_garbage_never_panics(bytes in framed_garbage()) {
        // The header is right by construction, so only the attributes can be refused.
        match Message::parse(&bytes) {
            Ok(msg) => exercise(&msg),
            Err(e) => {
                let is_attribute_error = matches!(
                    e,
                    DecodeError::AttributeOverflow(_)
                        | DecodeError::FingerprintMismatch
                        | DecodeError::FingerprintNotLast
                );
                prop_assert!(is_attribute_error, "{:?}", e);
            }
        }
    }

    #[test]
    fn plausible_attributes_never_panic(bytes in framed_attributes()) {
        if let Ok(msg) = Message::parse(&bytes) {
            exercise(&msg);
        }
        let (_, allocations) = allocations_during(|| decode_everything(&bytes));
        prop_assert_eq!(allocations, 0);
    }

    /// Flipping any byte of a FINGERPRINTed message is caught: where the attribute framing is
    /// unchanged the CRC no longer matches; where a length or FINGERPRINT's own type changes,
    /// the message may still be well-formed, but then it no longer has a FINGERPRINT.
    #[test]
    fn flipping_any_byte_of_a_fingerprinted_message_is_caught(
        spec in message_spec(),
        mask in 1u8..=255,
    ) {
        let spec = MessageSpec { fingerprint: true, ..spec };
        let bytes = write_vec(&spec);
        // The attribute length fields, and FINGERPRINT's type: the bytes that move framing.
        let mut framing = Vec::new();
        let mut pos = HEADER_LEN;
        while pos < bytes.len() {
            let len = usize::from(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]));
            framing.extend([pos + 2, pos + 3]);
            if pos + 8 == bytes.len() {
                framing.extend([pos, pos + 1]);
            }
            pos += 4 + len.next_multiple_of(4);
        }
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= mask;
            let result = Message::parse(&flipped);
            if framing.contains(&i) {
                if let Ok(msg) = result {
                    prop_assert!(!msg.has_fingerprint(), "byte {} ^ {:#04x}", i, mask);
                    exercise(&msg);
                }
            } else if (4..HEADER_LEN).contains(&i) || i >= HEADER_LEN {
                // Transaction id (or cookie), a value, padding, an attribute type, or the CRC.
                match result {
                    Err(DecodeError::FingerprintMismatch | DecodeError::FingerprintNotLast) => {}
                    other => prop_assert!(false, "byte {} ^ {:#04x}: {:?}", i, mask, other),
                }
            } else {
                // The message type (first two bytes) or the header length.
                prop_assert!(result.is_err(), "byte {} ^ {:#04x} parsed", i, mask);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The classic encodings' quirks
// ---------------------------------------------------------------------------------------------

fn classic_writer(buf: &mut [u8]) -> MessageWriter<'_> {
    MessageWriter::new(
        buf,
        Method::BINDING,
        Class::ErrorResponse,
        TransactionId::Classic([7; 16]),
    )
    .expect("header fits")
}

fn modern_writer(buf: &mut [u8]) -> MessageWriter<'_> {
    MessageWriter::new(
        buf,
        Method::BINDING,
        Class::ErrorResponse,
        TransactionId::Modern([7; 12]),
    )
    .expect("header fits")
}

/// The raw value of the first attribute of `typ` in `bytes`.
fn raw_value(bytes: &[u8], typ: u16) -> Vec<u8> {
    let msg = Message::parse(bytes).expect("parses");
    msg.get(typ).expect("attribute present").value.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn classic_unknown_attributes_with_an_odd_count_repeat_the_last(
        types in proptest::collection::vec(any::<u16>(), 0..12)
    ) {
        let mut buf = [0u8; 256];
        let mut w = classic_writer(&mut buf);
        w.add_unknown_attributes(&types).expect("fits");
        let len = w.finish();
        let value = raw_value(&buf[..len], attr::UNKNOWN_ATTRIBUTES);
        let listed: Vec<u16> = Attribute::unknown_types(&value).collect();
        prop_assert_eq!(value.len() % 4, 0);
        prop_assert_eq!(&listed[..types.len()], &types[..]);
        if types.len() % 2 == 1 {
            prop_assert_eq!(listed.len(), types.len() + 1);
            prop_assert_eq!(listed.last(), types.last());
        } else {
            prop_assert_eq!(listed.len(), types.len());
        }

        // The modern form lists each type once and pads with zeroes outside the value.
        let mut buf = [0u8; 256];
        let mut w = modern_writer(&mut buf);
        w.add_unknown_attributes(&types).expect("fits");
        let len = w.finish();
        let value = raw_value(&buf[..len], attr::UNKNOWN_ATTRIBUTES);
        prop_assert_eq!(value.len(), 2 * types.len());
        prop_assert_eq!(Attribute::unknown_types(&value).collect::<Vec<_>>(), types);
        prop_assert_eq!(len % 4, 0);
    }

    #[test]
    fn classic_error_reason_is_padded_to_a_multiple_of_four(
        code in 300u16..=699,
        reason in "\\PC{0,30}",
    ) {
        let mut buf = [0u8; 512];
        let mut w = classic_writer(&mut buf);
        w.add_error_code(code, &reason).expect("fits");
        let len = w.finish();
        let value = raw_value(&buf[..len], attr::ERROR_CODE);
        prop_assert_eq!(value.len() % 4, 0);
        prop_assert_eq!(value.len(), 4 + reason.len().next_multiple_of(4));
        prop_assert_eq!(&value[4..4 + reason.len()], reason.as_bytes());
        prop_assert!(value[4 + reason.len()..].iter().all(|&b| b == b' '));
        prop_assert_eq!(value[2], u8::try_from(code / 100).expect("small"));
        prop_assert_eq!(value[3], u8::try_from(code % 100).expect("small"));

        // The modern form states the reason's exact length.
        let mut buf = [0u8; 512];
        let mut w = modern_writer(&mut buf);
        w.add_error_code(code, &reason).expect("fits");
        let len = w.finish();
        let value = raw_value(&buf[..len], attr::ERROR_CODE);
        prop_assert_eq!(value.len(), 4 + reason.len());
        let msg = Message::parse(&buf[..len]).expect("parses");
        let parsed = msg.get(attr::ERROR_CODE).expect("present").parse();
        let is_same = matches!(
            parsed,
            Ok(Attribute::ErrorCode(e)) if e.code == code && e.reason == reason
        );
        prop_assert!(is_same, "{:?}", parsed);
    }
}

#[test]
fn classic_quirks_by_example() {
    let mut buf = [0u8; 128];
    let mut w = classic_writer(&mut buf);
    w.add_unknown_attributes(&[0x0031, 0x0032, 0x0033])
        .expect("fits");
    w.add_error_code(420, "Unknown Attribute").expect("fits");
    let len = w.finish();
    #[rustfmt::skip]
    let want: [u8; 60] = [
        0x01, 0x11, 0x00, 0x28, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
        0x00, 0x0a, 0x00, 0x08, 0x00, 0x31, 0x00, 0x32, 0x00, 0x33, 0x00, 0x33,
        0x00, 0x09, 0x00, 0x18, 0x00, 0x00, 0x04, 0x14,
        b'U', b'n', b'k', b'n', b'o', b'w', b'n', b' ', b'A', b't', b't', b'r',
        b'i', b'b', b'u', b't', b'e', b' ', b' ', b' ',
    ];
    assert_eq!(buf[..len], want);
}

#[test]
fn out_of_range_error_codes_are_refused() {
    let mut buf = [0u8; 64];
    let mut w = modern_writer(&mut buf);
    for code in [0, 299, 700, 999, u16::MAX] {
        assert_eq!(
            w.add_error_code(code, "x"),
            Err(EncodeError::BadErrorCode(code))
        );
    }
    assert!(w.is_empty());
}

#[test]
fn oversized_values_are_refused() {
    let mut buf = vec![0u8; 70_000];
    let mut w = modern_writer(&mut buf);
    assert_eq!(w.add_raw(0x7F00, &[0; 65_536]), Err(EncodeError::TooLong));
    assert_eq!(w.add_padding(65_533), Err(EncodeError::TooLong));
    assert!(w.is_empty());
    // The largest value that fits the 16-bit message length.
    // The largest attribute that fits the 16-bit message length (a multiple of four).
    w.add_padding(65_528)
        .expect("4 + 65528 = 65532 bytes of attributes fit");
    assert_eq!(w.len(), HEADER_LEN + 65_532);
    assert_eq!(w.add_raw(0x7F00, &[]), Err(EncodeError::TooLong));
    let len = w.finish();
    assert!(Message::parse(&buf[..len]).is_ok());
}

// ---------------------------------------------------------------------------------------------
// MESSAGE-INTEGRITY placement
// ---------------------------------------------------------------------------------------------

proptest! {
    /// Attributes after MESSAGE-INTEGRITY (other than FINGERPRINT) are ignored, and do not
    /// disturb verification.
    #[test]
    fn attributes_after_integrity_are_ignored(
        spec in message_spec(),
        key in proptest::collection::vec(any::<u8>(), 1..30),
        after in proptest::collection::vec(attr_spec(), 1..4),
        fingerprint in any::<bool>(),
    ) {
        let mut buf = vec![0u8; 8192];
        let mut w = MessageWriter::new(&mut buf, Method(spec.method), spec.class, spec.txid)
            .expect("header fits");
        for a in &spec.attrs {
            write_attr(&mut w, a).expect("fits");
        }
        w.add_message_integrity(&key).expect("fits");
        for a in &after {
            write_attr(&mut w, a).expect("fits");
        }
        if fingerprint {
            w.add_fingerprint().expect("fits");
        }
        let len = w.finish();
        let msg = Message::parse(&buf[..len]).expect("parses");
        prop_assert_eq!(msg.verify_integrity(&key), Ok(()));
        let classic = spec.txid.is_classic();
        let got: Vec<Owned> = msg
            .attributes()
            .map(|a| owned(&a.parse().expect("parses")))
            .filter(|a| !matches!(a, Owned::Fingerprint(_)))
            .collect();
        let mut want: Vec<Owned> = spec.attrs.iter().map(|a| expected(a, classic)).collect();
        want.push(Owned::Integrity);
        prop_assert_eq!(got, want);
        prop_assert_eq!(msg.has_fingerprint(), fingerprint);
    }
}

/// RFC 8489 section 14.5: MESSAGE-INTEGRITY is 20 bytes. One whose length field says otherwise
/// is malformed and must not verify, even though the 20 bytes after its header are the right
/// HMAC (which is what an attacker replaying a captured MAC into a reframed message has).
#[test]
fn integrity_with_a_wrong_length_never_verifies() {
    for txid in [
        TransactionId::Modern([3; 12]),
        TransactionId::Classic([3; 16]),
    ] {
        let key = b"secret";
        let mut buf = [0u8; 256];
        let mut w = MessageWriter::new(&mut buf, Method::BINDING, Class::Request, txid)
            .expect("header fits");
        w.add_username("alice").expect("fits");
        let mi = w.len();
        w.add_message_integrity(key).expect("fits");
        let len = w.finish();
        assert_eq!(
            Message::parse(&buf[..len])
                .expect("parses")
                .verify_integrity(key),
            Ok(())
        );

        // The same MAC, under a length of 24: the value is the MAC and four more bytes.
        let mut longer = buf[..len].to_vec();
        longer[mi + 2..mi + 4].copy_from_slice(&24u16.to_be_bytes());
        longer.extend_from_slice(&[0; 4]);
        let body = u16::try_from(longer.len() - HEADER_LEN).expect("short");
        longer[2..4].copy_from_slice(&body.to_be_bytes());
        let msg = Message::parse(&longer).expect("well-framed");
        let raw = msg.get(attr::MESSAGE_INTEGRITY).expect("present");
        assert!(
            raw.parse().is_err(),
            "a 24-byte MESSAGE-INTEGRITY reads as malformed"
        );
        assert!(
            msg.verify_integrity(key).is_err(),
            "a 24-byte MESSAGE-INTEGRITY verified"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// No allocation
// ---------------------------------------------------------------------------------------------

/// A message with one of everything, in the given form.
fn everything(txid: TransactionId, buf: &mut [u8]) -> usize {
    let v4: SocketAddr = "192.0.2.1:3478".parse().expect("address");
    let v6: SocketAddr = "[2001:db8::1]:3479".parse().expect("address");
    let mut w = MessageWriter::new(buf, Method::BINDING, Class::SuccessResponse, txid)
        .expect("header fits");
    w.add_address(attr::MAPPED_ADDRESS, v4).expect("fits");
    w.add_xor_address(attr::XOR_MAPPED_ADDRESS, v6)
        .expect("fits");
    w.add_xor_address(attr::XOR_MAPPED_ADDRESS_DRAFT, v4)
        .expect("fits");
    w.add_address(attr::RESPONSE_ADDRESS, v6).expect("fits");
    w.add_change_request(ChangeRequest {
        change_ip: true,
        change_port: true,
    })
    .expect("fits");
    w.add_address(attr::SOURCE_ADDRESS, v4).expect("fits");
    w.add_address(attr::CHANGED_ADDRESS, v6).expect("fits");
    w.add_address(attr::REFLECTED_FROM, v4).expect("fits");
    w.add_username("user:name").expect("fits");
    w.add_raw(attr::PASSWORD, b"pass").expect("fits");
    w.add_error_code(487, "Role Conflict").expect("fits");
    w.add_unknown_attributes(&[0x0031, 0x0032, 0x0033])
        .expect("fits");
    w.add_software("toolkit 1.0").expect("fits");
    w.add_address(attr::OTHER_ADDRESS, v6).expect("fits");
    w.add_address(attr::RESPONSE_ORIGIN, v4).expect("fits");
    w.add_response_port(40_000).expect("fits");
    w.add_padding(13).expect("fits");
    w.add_raw(0x0024, &[1, 2, 3, 4]).expect("fits");
    w.add_message_integrity(b"key").expect("fits");
    w.add_fingerprint().expect("fits");
    w.finish()
}

/// Parses, walks and types a message, returning a digest so nothing is optimised away.
fn decode_everything(bytes: &[u8]) -> usize {
    let mut digest = 0usize;
    let msg = match Message::parse(bytes) {
        Ok(msg) => msg,
        Err(_) => return usize::MAX,
    };
    for a in msg.attributes() {
        digest = digest.wrapping_add(usize::from(a.typ));
        match a.parse() {
            Ok(Attribute::UnknownAttributes(list)) => {
                digest = digest.wrapping_add(Attribute::unknown_types(list).count());
            }
            Ok(Attribute::Username(s) | Attribute::Software(s)) => {
                digest = digest.wrapping_add(s.len());
            }
            Ok(Attribute::ErrorCode(e)) => digest = digest.wrapping_add(e.reason.len()),
            Ok(_) => digest = digest.wrapping_add(1),
            Err(_) => digest = digest.wrapping_add(2),
        }
    }
    digest = digest.wrapping_add(usize::from(msg.verify_integrity(b"key").is_ok()));
    digest = digest.wrapping_add(usize::from(msg.verify_integrity(b"nope").is_ok()));
    digest = digest.wrapping_add(usize::from(msg.get(attr::SOFTWARE).is_some()));
    digest.wrapping_add(usize::from(msg.has_fingerprint()))
}

#[test]
fn decoding_does_not_allocate() {
    let mut classic = [0u8; 1024];
    let classic_len = everything(TransactionId::Classic([9; 16]), &mut classic);
    let mut modern = [0u8; 1024];
    let modern_len = everything(TransactionId::Modern([9; 12]), &mut modern);
    // Some malformed inputs too: a truncation, garbage, a corrupted FINGERPRINT.
    let mut corrupted = modern;
    corrupted[modern_len - 1] ^= 1;
    let garbage = [0x5Au8; 64];

    let inputs: [&[u8]; 5] = [
        &classic[..classic_len],
        &modern[..modern_len],
        &modern[..modern_len - 4],
        &corrupted[..modern_len],
        &garbage,
    ];
    // Sanity: the two good ones decode fully, before counting.
    for good in &inputs[..2] {
        let msg = Message::parse(good).expect("parses");
        assert_eq!(msg.verify_integrity(b"key"), Ok(()));
        assert_eq!(msg.attributes().count(), 20);
    }

    let (digests, allocations) =
        allocations_during(|| inputs.map(|bytes| std::hint::black_box(decode_everything(bytes))));
    assert_eq!(allocations, 0, "decoding allocated");
    assert!(digests[0] != usize::MAX && digests[1] != usize::MAX);

    // The counter does count: a sanity check of the harness itself.
    let (_, counted) = allocations_during(|| std::hint::black_box(vec![1u8; 32]));
    assert!(counted >= 1, "the counting allocator counted nothing");
}

#[test]
fn encoding_into_a_stack_buffer_does_not_allocate() {
    let ((classic, modern), allocations) = allocations_during(|| {
        let mut classic = [0u8; 1024];
        let classic_len = everything(TransactionId::Classic([9; 16]), &mut classic);
        let mut modern = [0u8; 1024];
        let modern_len = everything(TransactionId::Modern([9; 12]), &mut modern);
        std::hint::black_box((classic_len, modern_len))
    });
    assert_eq!(allocations, 0, "encoding allocated");
    assert!(classic > HEADER_LEN && modern > HEADER_LEN);
}
