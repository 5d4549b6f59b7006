//! Requests and the checks on their replies: transaction ids that encode (slot, seq) so a reply
//! maps back to its request in O(1), and every reason a reply is refused.

use super::*;

/// Why a reply was rejected.
pub(super) enum Invalid {
    /// It came from an address other than the server's.
    WrongSource(SocketAddr),
    /// It was larger than a receive slot.
    Truncated,
    /// `Message::parse` refused it.
    Parse(String),
    /// Its transaction id is not one this run sent.
    NotOurs,
    /// Classic reply to a modern request or the reverse.
    WrongForm,
    /// Not a Binding message.
    WrongMethod(u16),
    /// Not a success response (with the ERROR-CODE, if any).
    NotSuccess(Class, Option<u16>),
    /// No (XOR-)MAPPED-ADDRESS.
    MissingAddress,
    /// The address attribute does not decode.
    BadAddress(String),
    /// The reflected address is not the socket's own.
    WrongAddress(SocketAddr),
    /// A reply for a slot that belongs to another of our sockets.
    WrongSocket,
    /// An echo reply that differs from the request.
    EchoMismatch,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WrongSource(a) => write!(f, "reply from unexpected source {a}"),
            Self::Truncated => write!(f, "reply larger than {RESPONSE_SLOT_LEN} bytes"),
            Self::Parse(e) => write!(f, "not a valid STUN message: {e}"),
            Self::NotOurs => write!(f, "transaction id not sent by this run"),
            Self::WrongForm => write!(f, "transaction id of the other form (classic/modern)"),
            Self::WrongMethod(m) => write!(f, "method 0x{m:03x} is not Binding"),
            Self::NotSuccess(class, code) => write!(f, "class {class:?}, error code {code:?}"),
            Self::MissingAddress => write!(f, "no (XOR-)MAPPED-ADDRESS"),
            Self::BadAddress(e) => write!(f, "address attribute unreadable: {e}"),
            Self::WrongAddress(a) => write!(f, "reflected address {a} is not the socket's own"),
            Self::WrongSocket => write!(f, "reply to a request sent from another socket"),
            Self::EchoMismatch => write!(f, "echo differs from the request"),
        }
    }
}

/// Builds the transaction id for a slot's request.
pub(super) fn transaction_id(form: Form, nonce: u32, slot: u32, seq: u32) -> TransactionId {
    match form {
        Form::Modern => {
            let mut id = [0u8; 12];
            id[0..4].copy_from_slice(&nonce.to_be_bytes());
            id[4..8].copy_from_slice(&slot.to_be_bytes());
            id[8..12].copy_from_slice(&seq.to_be_bytes());
            TransactionId::Modern(id)
        }
        Form::Classic => {
            let mut id = [0u8; 16];
            id[0..4].copy_from_slice(&CLASSIC_MARKER.to_be_bytes());
            id[4..8].copy_from_slice(&nonce.to_be_bytes());
            id[8..12].copy_from_slice(&slot.to_be_bytes());
            id[12..16].copy_from_slice(&seq.to_be_bytes());
            TransactionId::Classic(id)
        }
    }
}

/// Reads (slot, seq) back from a transaction id, if it is one of this run's.
pub(super) fn decode_id(form: Form, nonce: u32, id: &TransactionId) -> Result<(u32, u32), Invalid> {
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let (n, slot, seq) = match (form, id) {
        (Form::Modern, TransactionId::Modern(id)) => (be(&id[0..4]), be(&id[4..8]), be(&id[8..12])),
        (Form::Classic, TransactionId::Classic(id)) if be(&id[0..4]) == CLASSIC_MARKER => {
            (be(&id[4..8]), be(&id[8..12]), be(&id[12..16]))
        }
        (Form::Classic, TransactionId::Classic(_)) => return Err(Invalid::NotOurs),
        _ => return Err(Invalid::WrongForm),
    };
    if n != nonce {
        return Err(Invalid::NotOurs);
    }
    Ok((slot, seq))
}

/// Writes the Binding request for (slot, seq) into `out`, returning its length.
pub(super) fn write_request(out: &mut [u8], form: Form, nonce: u32, slot: u32, seq: u32) -> usize {
    let id = transaction_id(form, nonce, slot, seq);
    match MessageWriter::new(out, Method::BINDING, Class::Request, id) {
        Ok(w) => w.finish(),
        // REQUEST_SLOT_LEN is far above the 20-byte header, so this cannot happen.
        Err(_) => 0,
    }
}

/// Everything a reply is checked against.
pub(super) struct Validator {
    pub(super) form: Form,
    pub(super) expect: Expect,
    pub(super) nonce: u32,
    pub(super) server: SocketAddr,
    pub(super) window: u32,
}

impl Validator {
    /// Checks one reply received on a socket bound to `local`; returns the (slot, seq) it
    /// answers.
    pub(super) fn check(
        &self,
        from: SocketAddr,
        data: &[u8],
        local: SocketAddr,
    ) -> Result<(u32, u32), Invalid> {
        if from != self.server {
            return Err(Invalid::WrongSource(from));
        }
        match self.expect {
            Expect::Echo => self.check_echo(data),
            Expect::Stun => self.check_stun(data, local),
        }
    }

    pub(super) fn check_echo(&self, data: &[u8]) -> Result<(u32, u32), Invalid> {
        if data.len() < HEADER_LEN {
            return Err(Invalid::EchoMismatch);
        }
        let mut tail = [0u8; 16];
        tail.copy_from_slice(&data[4..HEADER_LEN]);
        let (slot, seq) = decode_id(
            self.form,
            self.nonce,
            &TransactionId::from_header_tail(&tail),
        )?;
        let mut expected = [0u8; REQUEST_SLOT_LEN];
        let n = write_request(&mut expected, self.form, self.nonce, slot, seq);
        if data != &expected[..n] {
            return Err(Invalid::EchoMismatch);
        }
        if slot >= self.window {
            return Err(Invalid::NotOurs);
        }
        Ok((slot, seq))
    }

    pub(super) fn check_stun(&self, data: &[u8], local: SocketAddr) -> Result<(u32, u32), Invalid> {
        let msg = Message::parse(data).map_err(|e| Invalid::Parse(e.to_string()))?;
        let (slot, seq) = decode_id(self.form, self.nonce, &msg.transaction_id())?;
        if slot >= self.window {
            return Err(Invalid::NotOurs);
        }
        if msg.method() != Method::BINDING {
            return Err(Invalid::WrongMethod(msg.method().0));
        }
        if msg.class() != Class::SuccessResponse {
            let code = msg.get(attr::ERROR_CODE).and_then(|a| match a.parse() {
                Ok(Attribute::ErrorCode(e)) => Some(e.code),
                _ => None,
            });
            return Err(Invalid::NotSuccess(msg.class(), code));
        }
        let typ = match self.form {
            Form::Modern => attr::XOR_MAPPED_ADDRESS,
            Form::Classic => attr::MAPPED_ADDRESS,
        };
        let raw = msg.get(typ).ok_or(Invalid::MissingAddress)?;
        let mapped = match raw.parse() {
            Ok(Attribute::XorMappedAddress(a) | Attribute::MappedAddress(a)) => a,
            Ok(other) => return Err(Invalid::BadAddress(format!("{other:?}"))),
            Err(e) => return Err(Invalid::BadAddress(e.to_string())),
        };
        if mapped != local {
            return Err(Invalid::WrongAddress(mapped));
        }
        Ok((slot, seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_in_both_forms() {
        for form in [Form::Modern, Form::Classic] {
            let id = transaction_id(form, 77, 5, 9);
            assert_eq!(id.is_classic(), form == Form::Classic);
            assert_eq!(decode_id(form, 77, &id).ok(), Some((5, 9)));
            assert!(decode_id(form, 78, &id).is_err());
            let mut buf = [0u8; REQUEST_SLOT_LEN];
            let n = write_request(&mut buf, form, 77, 5, 9);
            assert_eq!(n, HEADER_LEN);
            let msg = Message::parse(&buf[..n]).expect("our own request parses");
            assert_eq!(msg.transaction_id(), id);
        }
    }

    #[test]
    fn stun_validation_checks_address_and_class() {
        let server: SocketAddr = "127.0.0.1:3478".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let v = Validator {
            form: Form::Modern,
            expect: Expect::Stun,
            nonce: 1,
            server,
            window: 8,
        };
        let mut buf = [0u8; 128];
        let id = transaction_id(Form::Modern, 1, 3, 4);
        let mut w = MessageWriter::new(&mut buf, Method::BINDING, Class::SuccessResponse, id)
            .expect("writer");
        w.add_xor_address(attr::XOR_MAPPED_ADDRESS, local)
            .expect("attr");
        let n = w.finish();
        assert_eq!(v.check(server, &buf[..n], local).ok(), Some((3, 4)));
        let other: SocketAddr = "127.0.0.1:40001".parse().expect("addr");
        assert!(matches!(
            v.check(server, &buf[..n], other),
            Err(Invalid::WrongAddress(_))
        ));
        assert!(matches!(
            v.check(other, &buf[..n], local),
            Err(Invalid::WrongSource(_))
        ));
        assert!(matches!(
            v.check(server, &buf[..n - 4], local),
            Err(Invalid::Parse(_))
        ));
    }
}
