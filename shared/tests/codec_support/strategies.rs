//! The proptest strategies that generate messages of the model.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use shared::stun::{ChangeRequest, Class, MAGIC_COOKIE, TransactionId, attr};

use super::model::{MessageSpec, PLAIN_ADDRESS_TYPES, Spec, TYPED};

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn raw_type() -> impl Strategy<Value = u16> {
    any::<u16>().prop_filter("typed by the codec", |t| !TYPED.contains(t))
}

pub(crate) fn attr_spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        (
            proptest::sample::select(PLAIN_ADDRESS_TYPES.to_vec()),
            socket_addr()
        )
            .prop_map(|(t, a)| Spec::Address(t, a)),
        (
            proptest::sample::select(vec![
                attr::XOR_MAPPED_ADDRESS,
                attr::XOR_MAPPED_ADDRESS_DRAFT
            ]),
            socket_addr()
        )
            .prop_map(|(t, a)| Spec::XorAddress(t, a)),
        (any::<bool>(), any::<bool>()).prop_map(|(change_ip, change_port)| Spec::Change(
            ChangeRequest {
                change_ip,
                change_port
            }
        )),
        "\\PC{0,24}".prop_map(Spec::Username),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Spec::Password),
        (300u16..=699, "\\PC{0,24}").prop_map(|(c, r)| Spec::Error(c, r)),
        proptest::collection::vec(any::<u16>(), 0..9).prop_map(Spec::Unknown),
        "\\PC{0,24}".prop_map(Spec::Software),
        any::<u16>().prop_map(Spec::ResponsePort),
        (0usize..80).prop_map(Spec::Padding),
        (raw_type(), proptest::collection::vec(any::<u8>(), 0..24))
            .prop_map(|(t, v)| Spec::Raw(t, v)),
    ]
}

fn class() -> impl Strategy<Value = Class> {
    proptest::sample::select(vec![
        Class::Request,
        Class::Indication,
        Class::SuccessResponse,
        Class::ErrorResponse,
    ])
}

pub(crate) fn classic_txid() -> impl Strategy<Value = TransactionId> {
    any::<[u8; 16]>()
        .prop_filter("starts with the magic cookie", |id| {
            id[..4] != MAGIC_COOKIE.to_be_bytes()
        })
        .prop_map(TransactionId::Classic)
}

fn modern_txid() -> impl Strategy<Value = TransactionId> {
    any::<[u8; 12]>().prop_map(TransactionId::Modern)
}

pub(crate) fn message_spec_with(
    txid: BoxedStrategy<TransactionId>,
) -> impl Strategy<Value = MessageSpec> {
    (
        0u16..0x1000,
        class(),
        txid,
        proptest::collection::vec(attr_spec(), 0..8),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        any::<bool>(),
    )
        .prop_map(
            |(method, class, txid, attrs, integrity, fingerprint)| MessageSpec {
                method,
                class,
                txid,
                attrs,
                integrity,
                fingerprint,
            },
        )
}

pub(crate) fn message_spec() -> impl Strategy<Value = MessageSpec> {
    prop_oneof![
        message_spec_with(classic_txid().boxed()),
        message_spec_with(modern_txid().boxed()),
    ]
}
