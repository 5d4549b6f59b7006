//! Fuzzes the STUN decoder, then the encoder with what the decoder read.
//!
//! For any input: `Message::parse` must not panic. For input that parses: every attribute is
//! typed, MESSAGE-INTEGRITY is checked with a fixed key, and the typed attributes are written
//! back with `MessageWriter` (MESSAGE-INTEGRITY recomputed with the fixed key, FINGERPRINT
//! recomputed). The result must parse, in the same form and with the same header, to the same
//! typed values, allowing only for what the writer normalises (see `assert_same`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::stun::{
    Attribute, EncodeError, HEADER_LEN, Message, MessageWriter, RawAttribute, message_length,
};

/// The key MESSAGE-INTEGRITY is checked and recomputed with.
const KEY: &[u8] = b"fuzz-key";

fuzz_target!(|data: &[u8]| {
    let _ = message_length(data);
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    assert_eq!(message_length(data), Some(data.len()));
    let _ = msg.verify_integrity(KEY);
    let _ = msg.verify_integrity(b"");

    // Re-encode. A re-encoded message is never larger than the original (see `write_back`).
    let mut buf = [0u8; HEADER_LEN + 65_536];
    let (len, with_integrity) = match write_back(&msg, &mut buf) {
        Ok(done) => done,
        Err(e) => panic!("re-encoding what parsed failed: {e:?}"),
    };
    assert!(
        len <= data.len(),
        "re-encoding grew the message from {} to {len}",
        data.len()
    );
    let again = match Message::parse(&buf[..len]) {
        Ok(again) => again,
        Err(e) => panic!("the re-encoded message does not parse: {e:?}"),
    };
    assert_eq!(again.method(), msg.method());
    assert_eq!(again.class(), msg.class());
    assert_eq!(again.transaction_id(), msg.transaction_id());
    assert_eq!(again.has_fingerprint(), msg.has_fingerprint());
    assert_eq!(again.verify_integrity(KEY).is_ok(), with_integrity);

    let mut before = msg.attributes();
    let mut after = again.attributes();
    loop {
        match (before.next(), after.next()) {
            (None, None) => break,
            (Some(a), Some(b)) => assert_same(&a, &b, msg.is_classic()),
            (a, b) => panic!("attribute lists differ in length: {a:?} vs {b:?}"),
        }
    }
});

/// Writes the attributes `msg` yields into `buf`; returns the length and whether a
/// MESSAGE-INTEGRITY was computed.
///
/// Typed values are written with their typed writer, under the type they came with; values
/// that do not type are copied raw so they fail the same way when read again. Nothing grows:
/// the classic ERROR-CODE and UNKNOWN-ATTRIBUTES padding only fills the 4-byte alignment the
/// original already had, and RESPONSE-PORT written with 4 bytes takes the same room as 2.
fn write_back(msg: &Message<'_>, buf: &mut [u8]) -> Result<(usize, bool), EncodeError> {
    let mut w = MessageWriter::new(buf, msg.method(), msg.class(), msg.transaction_id())?;
    let mut with_integrity = false;
    for raw in msg.attributes() {
        match raw.parse() {
            Ok(Attribute::MappedAddress(a))
            | Ok(Attribute::ResponseAddress(a))
            | Ok(Attribute::SourceAddress(a))
            | Ok(Attribute::ChangedAddress(a))
            | Ok(Attribute::ReflectedFrom(a))
            | Ok(Attribute::OtherAddress(a))
            | Ok(Attribute::ResponseOrigin(a)) => w.add_address(raw.typ, a)?,
            Ok(Attribute::XorMappedAddress(a)) => w.add_xor_address(raw.typ, a)?,
            Ok(Attribute::ChangeRequest(c)) => w.add_change_request(c)?,
            Ok(Attribute::Username(s)) => w.add_username(s)?,
            Ok(Attribute::Software(s)) => w.add_software(s)?,
            Ok(Attribute::ErrorCode(e)) => w.add_error_code(e.code, e.reason)?,
            Ok(Attribute::UnknownAttributes(list)) => {
                let types: Vec<u16> = Attribute::unknown_types(list).collect();
                w.add_unknown_attributes(&types)?;
            }
            Ok(Attribute::ResponsePort(p)) => w.add_response_port(p)?,
            Ok(Attribute::Padding(p)) => w.add_padding(p.len())?,
            Ok(Attribute::MessageIntegrity(_)) => {
                w.add_message_integrity(KEY)?;
                with_integrity = true;
            }
            Ok(Attribute::Fingerprint(_)) => w.add_fingerprint()?,
            // PASSWORD, `Other`, future variants, and values that do not type.
            _ => w.add_raw(raw.typ, raw.value)?,
        }
    }
    Ok((w.finish(), with_integrity))
}

/// Checks that `b` (re-read) carries what `a` (read) did, allowing for what the writer
/// normalises: PADDING content becomes zeroes, MESSAGE-INTEGRITY and FINGERPRINT are
/// recomputed, and in a classic message an ERROR-CODE reason is padded with spaces to a multiple
/// of four and an odd UNKNOWN-ATTRIBUTES list repeats its last type.
fn assert_same(a: &RawAttribute<'_>, b: &RawAttribute<'_>, classic: bool) {
    assert_eq!(a.typ, b.typ);
    match (a.parse(), b.parse()) {
        (Ok(Attribute::Padding(x)), Ok(Attribute::Padding(y))) => {
            assert_eq!(x.len(), y.len());
            assert!(y.iter().all(|&byte| byte == 0));
        }
        (Ok(Attribute::MessageIntegrity(_)), Ok(Attribute::MessageIntegrity(_))) => {}
        (Ok(Attribute::Fingerprint(_)), Ok(Attribute::Fingerprint(_))) => {}
        (Ok(Attribute::ErrorCode(x)), Ok(Attribute::ErrorCode(y))) if classic => {
            assert_eq!(x.code, y.code);
            assert_eq!(y.reason.len(), x.reason.len().next_multiple_of(4));
            assert!(y.reason.starts_with(x.reason));
            assert!(y.reason[x.reason.len()..].bytes().all(|byte| byte == b' '));
        }
        (Ok(Attribute::UnknownAttributes(x)), Ok(Attribute::UnknownAttributes(y))) if classic => {
            let mut xs = Attribute::unknown_types(x);
            let mut ys = Attribute::unknown_types(y);
            let mut last = None;
            for t in xs.by_ref() {
                assert_eq!(ys.next(), Some(t));
                last = Some(t);
            }
            if (x.len() / 2) % 2 == 1 {
                assert_eq!(ys.next(), last);
            }
            assert_eq!(ys.next(), None);
        }
        (x, y) => assert_eq!(x, y),
    }
}
