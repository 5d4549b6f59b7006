//! A model of a STUN message: what to write, and what reading it back must give.

use std::net::SocketAddr;

use shared::stun::{
    Attribute, ChangeRequest, Class, EncodeError, HEADER_LEN, Message, MessageWriter, Method,
    TransactionId, attr, message_length,
};

/// One attribute to write.
#[derive(Clone, Debug)]
pub(crate) enum Spec {
    Address(u16, SocketAddr),
    XorAddress(u16, SocketAddr),
    Change(ChangeRequest),
    Username(String),
    Password(Vec<u8>),
    Error(u16, String),
    Unknown(Vec<u16>),
    Software(String),
    ResponsePort(u16),
    Padding(usize),
    Raw(u16, Vec<u8>),
}

/// A whole message to write.
#[derive(Clone, Debug)]
pub(crate) struct MessageSpec {
    pub(crate) method: u16,
    pub(crate) class: Class,
    pub(crate) txid: TransactionId,
    pub(crate) attrs: Vec<Spec>,
    pub(crate) integrity: Option<Vec<u8>>,
    pub(crate) fingerprint: bool,
}

/// An owned typed attribute, to compare what was written with what is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Owned {
    Mapped(SocketAddr),
    Xor(SocketAddr),
    ResponseAddress(SocketAddr),
    Change(ChangeRequest),
    Source(SocketAddr),
    Changed(SocketAddr),
    ReflectedFrom(SocketAddr),
    Username(String),
    Password(Vec<u8>),
    Integrity,
    Error(u16, String),
    Unknown(Vec<u16>),
    Software(String),
    Fingerprint(u32),
    OtherAddress(SocketAddr),
    ResponseOrigin(SocketAddr),
    ResponsePort(u16),
    Padding(Vec<u8>),
    Other(u16, Vec<u8>),
}

pub(crate) fn owned(a: &Attribute<'_>) -> Owned {
    match *a {
        Attribute::MappedAddress(x) => Owned::Mapped(x),
        Attribute::XorMappedAddress(x) => Owned::Xor(x),
        Attribute::ResponseAddress(x) => Owned::ResponseAddress(x),
        Attribute::ChangeRequest(c) => Owned::Change(c),
        Attribute::SourceAddress(x) => Owned::Source(x),
        Attribute::ChangedAddress(x) => Owned::Changed(x),
        Attribute::ReflectedFrom(x) => Owned::ReflectedFrom(x),
        Attribute::Username(s) => Owned::Username(s.to_owned()),
        Attribute::Password(p) => Owned::Password(p.to_vec()),
        Attribute::MessageIntegrity(mac) => {
            assert_eq!(mac.len(), 20);
            Owned::Integrity
        }
        Attribute::ErrorCode(e) => Owned::Error(e.code, e.reason.to_owned()),
        Attribute::UnknownAttributes(list) => {
            Owned::Unknown(Attribute::unknown_types(list).collect())
        }
        Attribute::Software(s) => Owned::Software(s.to_owned()),
        Attribute::Fingerprint(f) => Owned::Fingerprint(f),
        Attribute::OtherAddress(x) => Owned::OtherAddress(x),
        Attribute::ResponseOrigin(x) => Owned::ResponseOrigin(x),
        Attribute::ResponsePort(p) => Owned::ResponsePort(p),
        Attribute::Padding(p) => Owned::Padding(p.to_vec()),
        Attribute::Other(t, v) => Owned::Other(t, v.to_vec()),
        _ => panic!("attribute variant this test does not know: {a:?}"),
    }
}

/// Types the codec types itself; `Spec::Raw` avoids them.
pub(crate) const TYPED: [u16; 19] = [
    attr::MAPPED_ADDRESS,
    attr::RESPONSE_ADDRESS,
    attr::CHANGE_REQUEST,
    attr::SOURCE_ADDRESS,
    attr::CHANGED_ADDRESS,
    attr::USERNAME,
    attr::PASSWORD,
    attr::MESSAGE_INTEGRITY,
    attr::ERROR_CODE,
    attr::UNKNOWN_ATTRIBUTES,
    attr::REFLECTED_FROM,
    attr::XOR_MAPPED_ADDRESS,
    attr::PADDING,
    attr::RESPONSE_PORT,
    attr::XOR_MAPPED_ADDRESS_DRAFT,
    attr::SOFTWARE,
    attr::FINGERPRINT,
    attr::RESPONSE_ORIGIN,
    attr::OTHER_ADDRESS,
];

pub(crate) const PLAIN_ADDRESS_TYPES: [u16; 7] = [
    attr::MAPPED_ADDRESS,
    attr::RESPONSE_ADDRESS,
    attr::SOURCE_ADDRESS,
    attr::CHANGED_ADDRESS,
    attr::REFLECTED_FROM,
    attr::RESPONSE_ORIGIN,
    attr::OTHER_ADDRESS,
];

/// What reading back `spec` must give, in a message of the given form.
pub(crate) fn expected(spec: &Spec, classic: bool) -> Owned {
    match spec {
        Spec::Address(typ, a) => match *typ {
            attr::MAPPED_ADDRESS => Owned::Mapped(*a),
            attr::RESPONSE_ADDRESS => Owned::ResponseAddress(*a),
            attr::SOURCE_ADDRESS => Owned::Source(*a),
            attr::CHANGED_ADDRESS => Owned::Changed(*a),
            attr::REFLECTED_FROM => Owned::ReflectedFrom(*a),
            attr::RESPONSE_ORIGIN => Owned::ResponseOrigin(*a),
            attr::OTHER_ADDRESS => Owned::OtherAddress(*a),
            other => panic!("not a plain address type: {other:#06x}"),
        },
        Spec::XorAddress(_, a) => Owned::Xor(*a),
        Spec::Change(c) => Owned::Change(*c),
        Spec::Username(s) => Owned::Username(s.clone()),
        Spec::Password(p) => Owned::Password(p.clone()),
        Spec::Error(code, reason) => {
            let mut reason = reason.clone();
            if classic {
                // RFC 3489 section 11.2.9: the reason is padded with spaces to a multiple of 4.
                while reason.len() % 4 != 0 {
                    reason.push(' ');
                }
            }
            Owned::Error(*code, reason)
        }
        Spec::Unknown(types) => {
            let mut types = types.clone();
            if classic && types.len() % 2 == 1 {
                // RFC 3489 section 11.2.10: an odd list repeats one type (we repeat the last).
                types.push(*types.last().expect("odd, so not empty"));
            }
            Owned::Unknown(types)
        }
        Spec::Software(s) => Owned::Software(s.clone()),
        Spec::ResponsePort(p) => Owned::ResponsePort(*p),
        Spec::Padding(n) => Owned::Padding(vec![0; *n]),
        Spec::Raw(t, v) => Owned::Other(*t, v.clone()),
    }
}

pub(crate) fn write_attr(w: &mut MessageWriter<'_>, spec: &Spec) -> Result<(), EncodeError> {
    match spec {
        Spec::Address(typ, a) => w.add_address(*typ, *a),
        Spec::XorAddress(typ, a) => w.add_xor_address(*typ, *a),
        Spec::Change(c) => w.add_change_request(*c),
        Spec::Username(s) => w.add_username(s),
        Spec::Password(p) => w.add_raw(attr::PASSWORD, p),
        Spec::Error(code, reason) => w.add_error_code(*code, reason),
        Spec::Unknown(types) => w.add_unknown_attributes(types),
        Spec::Software(s) => w.add_software(s),
        Spec::ResponsePort(p) => w.add_response_port(*p),
        Spec::Padding(n) => w.add_padding(*n),
        Spec::Raw(t, v) => w.add_raw(*t, v),
    }
}

/// Writes `spec` into `buf`, returning the message length.
pub(crate) fn write(spec: &MessageSpec, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let mut w = MessageWriter::new(buf, Method(spec.method), spec.class, spec.txid)?;
    for a in &spec.attrs {
        write_attr(&mut w, a)?;
    }
    if let Some(key) = &spec.integrity {
        w.add_message_integrity(key)?;
    }
    if spec.fingerprint {
        w.add_fingerprint()?;
    }
    Ok(w.finish())
}

pub(crate) fn write_vec(spec: &MessageSpec) -> Vec<u8> {
    let mut buf = vec![0u8; 8192];
    let len = write(spec, &mut buf).expect("a generated message fits 8 KiB");
    buf.truncate(len);
    buf
}

/// Parses every attribute of a message that parsed, exercising every read path, and checks
/// what must hold of any parsed message whatever its content.
pub(crate) fn exercise(msg: &Message<'_>) {
    let bytes = msg.as_bytes();
    assert_eq!(message_length(bytes), Some(bytes.len()));
    assert_eq!(msg.is_classic(), msg.transaction_id().is_classic());
    assert_eq!(msg.transaction_id().header_tail()[..], bytes[4..HEADER_LEN]);
    let mut seen_fingerprint = false;
    for a in msg.attributes() {
        assert!(
            !seen_fingerprint,
            "an attribute was yielded after FINGERPRINT"
        );
        seen_fingerprint = a.typ == attr::FINGERPRINT;
        if let Ok(Attribute::UnknownAttributes(list)) = a.parse() {
            assert_eq!(Attribute::unknown_types(list).count(), list.len() / 2);
        }
        assert_eq!(msg.get(a.typ).map(|first| first.typ), Some(a.typ));
    }
    assert_eq!(seen_fingerprint, msg.has_fingerprint());
    let _ = msg.verify_integrity(b"key");
    let _ = msg.verify_integrity(b"");
}
