//! Framing of the rendezvous line protocol: `CMD TrID [param ...]\r\n`, plus a byte-counted
//! payload for the few commands that carry one (docs/PROTOCOL.md section 1).
//!
//! Sans-IO: [`decode`] takes what has arrived so far in a [`BytesMut`] and either returns one
//! whole [`Line`], asks for more bytes (`Ok(None)`), or reports a [`FrameError`]. The drivers wrap
//! it in a `tokio_util::codec::Decoder`. A recoverable error has already consumed the bad line,
//! so the next call goes on with the next one; a fatal one means the stream cannot be resynced.

use bytes::{Buf, BufMut, BytesMut};

/// The longest line, `\r\n` included.
pub const MAX_LINE: usize = 1024;
/// The largest payload: room for the longest contact and block lists (docs/PROTOCOL.md section 7).
pub const MAX_PAYLOAD: usize = 96 * 1024;
/// Commands the server sends with a payload: their last parameter is its byte length. No
/// request from a client carries one.
pub const PAYLOAD_COMMANDS: [Command; 1] = [Command(*b"LST")];

/// Which way a line travels. It decides which lines carry a payload: the server's `LST`
/// answer does, the client's `LST` request does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// A request (or `QNG`/`OUT`) from a client.
    ToServer,
    /// An answer or a push from the server.
    ToClient,
}

/// A three-byte command: upper-case letters, or digits for an error.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Command(pub [u8; 3]);

impl Command {
    /// The command as text (always ASCII, by construction).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// The error number, if this is an error line (three digits).
    pub fn error_code(&self) -> Option<u16> {
        if self.0.iter().all(u8::is_ascii_digit) {
            Some(
                self.0
                    .iter()
                    .fold(0u16, |n, d| n * 10 + u16::from(d - b'0')),
            )
        } else {
            None
        }
    }

    /// Whether lines of this command carry a payload when they travel `direction`.
    pub fn has_payload(&self, direction: Direction) -> bool {
        direction == Direction::ToClient && PAYLOAD_COMMANDS.contains(self)
    }

    fn parse(token: &[u8]) -> Option<Command> {
        let bytes: [u8; 3] = token.try_into().ok()?;
        let letters = bytes.iter().all(u8::is_ascii_uppercase);
        let digits = bytes.iter().all(u8::is_ascii_digit);
        (letters || digits).then_some(Command(bytes))
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transaction id: ties an answer to its request. `0` marks a push from the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TrId(pub u32);

impl TrId {
    /// The id of server pushes.
    pub const PUSH: TrId = TrId(0);
}

impl std::fmt::Display for TrId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One command line with its parameters and, for payload commands, its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The command.
    pub command: Command,
    /// The transaction id.
    pub trid: TrId,
    /// The parameters, without the payload length (it is implied by `payload`).
    pub params: Vec<String>,
    /// The payload of a payload command (empty for other commands).
    pub payload: Vec<u8>,
}

impl Line {
    /// A line without payload. `command` must be three upper-case letters or digits, and every
    /// parameter non-empty printable ASCII without spaces; [`encode`] checks this.
    pub fn new(command: &str, trid: TrId, params: impl IntoIterator<Item = String>) -> Line {
        let mut bytes = [b'?'; 3];
        for (b, c) in bytes.iter_mut().zip(command.bytes()) {
            *b = c;
        }
        Line {
            command: Command(bytes),
            trid,
            params: params.into_iter().collect(),
            payload: Vec::new(),
        }
    }

    /// An error line: `NNN TrID text...`.
    pub fn error(code: u16, trid: TrId, text: &str) -> Line {
        let digits = format!("{:03}", code % 1000);
        Line::new(&digits, trid, text.split(' ').map(str::to_owned))
    }

    /// Parameter `i`, if present.
    pub fn param(&self, i: usize) -> Option<&str> {
        self.params.get(i).map(String::as_str)
    }

    /// The value of the first `key=value` parameter with this key.
    pub fn keyed<'a>(&'a self, key: &'a str) -> Option<&'a str> {
        self.keyed_all(key).next()
    }

    /// The values of every `key=value` parameter with this key, in order.
    pub fn keyed_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.params
            .iter()
            .filter_map(move |p| p.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }
}

/// Why bytes could not be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The line was not well formed; it has been consumed and the stream can go on.
    #[error("syntax error: {0}")]
    Syntax(&'static str),
    /// More than [`MAX_LINE`] bytes without a line end. Fatal.
    #[error("line too long")]
    LineTooLong,
    /// A payload length on a command without payload, or over [`MAX_PAYLOAD`]. Fatal.
    #[error("payload not allowed")]
    BadPayload,
}

impl FrameError {
    /// Whether the stream can no longer be framed and the connection must close.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, FrameError::Syntax(_))
    }
}

/// Why a [`Line`] could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The command is not three upper-case letters or digits.
    #[error("bad command")]
    BadCommand,
    /// A parameter is empty or has a byte outside 0x21-0x7E.
    #[error("bad parameter {0:?}")]
    BadParam(String),
    /// The line or payload is over its limit, or a payload on a command without one.
    #[error("line or payload too long")]
    TooLong,
}

fn param_ok(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Appends `line`, travelling `direction`, to `out`. Nothing is written on error.
pub fn encode(line: &Line, out: &mut BytesMut, direction: Direction) -> Result<(), EncodeError> {
    if Command::parse(&line.command.0).is_none() {
        return Err(EncodeError::BadCommand);
    }
    if let Some(bad) = line.params.iter().find(|p| !param_ok(p)) {
        return Err(EncodeError::BadParam(bad.clone()));
    }
    let payload = line.command.has_payload(direction);
    if (!payload && !line.payload.is_empty()) || line.payload.len() > MAX_PAYLOAD {
        return Err(EncodeError::TooLong);
    }
    let mut text = format!("{} {}", line.command, line.trid);
    for p in &line.params {
        text.push(' ');
        text.push_str(p);
    }
    if payload {
        text.push_str(&format!(" {}", line.payload.len()));
    }
    text.push_str("\r\n");
    if text.len() > MAX_LINE {
        return Err(EncodeError::TooLong);
    }
    out.reserve(text.len() + line.payload.len());
    out.put_slice(text.as_bytes());
    out.put_slice(&line.payload);
    Ok(())
}

/// Takes one whole line (and its payload) travelling `direction` off the front of `buf`.
///
/// `Ok(None)`: not enough bytes yet (nothing consumed). `Err` with a non-fatal
/// [`FrameError::Syntax`]: the bad line was consumed.
pub fn decode(buf: &mut BytesMut, direction: Direction) -> Result<Option<Line>, FrameError> {
    let window = &buf[..buf.len().min(MAX_LINE)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_LINE {
            Err(FrameError::LineTooLong)
        } else {
            Ok(None)
        };
    };
    let parsed = parse_line(&buf[..lf], direction);
    let (mut line, payload_len) = match parsed {
        Ok(ok) => ok,
        Err(e) => {
            buf.advance(lf + 1);
            return Err(e);
        }
    };
    if payload_len > MAX_PAYLOAD {
        return Err(FrameError::BadPayload);
    }
    if buf.len() < lf + 1 + payload_len {
        buf.reserve(lf + 1 + payload_len - buf.len());
        return Ok(None);
    }
    buf.advance(lf + 1);
    line.payload = buf.split_to(payload_len).to_vec();
    Ok(Some(line))
}

/// Parses a line without its `\n`; returns the line and its payload length.
fn parse_line(raw: &[u8], direction: Direction) -> Result<(Line, usize), FrameError> {
    let raw = raw
        .strip_suffix(b"\r")
        .ok_or(FrameError::Syntax("line must end with CRLF"))?;
    if raw.iter().any(|&b| !(0x20..=0x7e).contains(&b)) {
        return Err(FrameError::Syntax("non-printable byte"));
    }
    // Checked above: every byte is printable ASCII.
    let text = std::str::from_utf8(raw).map_err(|_| FrameError::Syntax("not ASCII"))?;
    let mut tokens = text.split(' ');
    let command = tokens
        .next()
        .and_then(|t| Command::parse(t.as_bytes()))
        .ok_or(FrameError::Syntax("bad command"))?;
    let trid = tokens
        .next()
        .filter(|t| !t.is_empty() && t.len() <= 10 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u32>().ok())
        .map(TrId)
        .ok_or(FrameError::Syntax("bad transaction id"))?;
    let mut params = Vec::new();
    for t in tokens {
        if t.is_empty() {
            return Err(FrameError::Syntax("empty parameter"));
        }
        params.push(t.to_owned());
    }
    let payload_len = if command.has_payload(direction) {
        params
            .pop()
            .and_then(|p| p.parse::<usize>().ok())
            .ok_or(FrameError::BadPayload)?
    } else {
        0
    };
    Ok((
        Line {
            command,
            trid,
            params,
            payload: Vec::new(),
        },
        payload_len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{ToClient, ToServer};
    use proptest::prelude::*;

    fn bytes(s: &[u8]) -> BytesMut {
        BytesMut::from(s)
    }

    #[test]
    fn decodes_lines_one_at_a_time() {
        let mut buf = bytes(b"VER 1 P2P1\r\nCHG 2 BSY\r\nPNG 0");
        let first = decode(&mut buf, ToClient).unwrap().unwrap();
        assert_eq!(first.command.as_str(), "VER");
        assert_eq!(first.trid, TrId(1));
        assert_eq!(first.params, vec!["P2P1"]);
        let second = decode(&mut buf, ToClient).unwrap().unwrap();
        assert_eq!(second.param(0), Some("BSY"));
        assert_eq!(decode(&mut buf, ToClient), Ok(None));
        buf.extend_from_slice(b"\r\n");
        assert_eq!(
            decode(&mut buf, ToClient)
                .unwrap()
                .unwrap()
                .command
                .as_str(),
            "PNG"
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn payload_waits_for_all_its_bytes() {
        let mut buf = bytes(b"LST 7 13\r\nbob FLN C\r\n");
        assert_eq!(decode(&mut buf, ToClient), Ok(None));
        buf.extend_from_slice(b"\r\nX");
        let line = decode(&mut buf, ToClient).unwrap().unwrap();
        assert_eq!(line.payload, b"bob FLN C\r\n\r\n");
        assert!(line.params.is_empty());
        assert_eq!(&buf[..], b"X");
    }

    #[test]
    fn bad_lines_are_consumed_and_the_next_one_parses() {
        let mut buf = bytes(b"chg 1 X\r\nCHG x Y\r\nCHG 1  Y\r\nCHG 1 Y\n\xff\r\nCHG 2 NLN\r\n");
        for _ in 0..5 {
            let err = decode(&mut buf, ToClient).unwrap_err();
            assert!(!err.is_fatal(), "{err}");
        }
        assert_eq!(decode(&mut buf, ToClient).unwrap().unwrap().trid, TrId(2));
    }

    #[test]
    fn overlong_line_and_oversized_payload_are_fatal() {
        let mut buf = BytesMut::from(&[b'A'; MAX_LINE][..]);
        assert_eq!(decode(&mut buf, ToClient), Err(FrameError::LineTooLong));
        let mut buf = bytes(format!("LST 1 {}\r\n", MAX_PAYLOAD + 1).as_bytes());
        assert_eq!(decode(&mut buf, ToClient), Err(FrameError::BadPayload));
        let mut buf = bytes(b"LST 1 x\r\n");
        assert!(decode(&mut buf, ToClient).unwrap_err().is_fatal());
    }

    #[test]
    fn a_client_lst_is_a_plain_line_and_a_server_lst_carries_a_payload() {
        let mut buf = bytes(b"LST 7\r\nLST 8 3\r\nabc");
        let plain = decode(&mut buf, ToServer).unwrap().unwrap();
        assert!(plain.params.is_empty() && plain.payload.is_empty());
        // To the server a trailing number is only a parameter (the core refuses it).
        assert_eq!(
            decode(&mut buf, ToServer).unwrap().unwrap().params,
            vec!["3"]
        );
        let mut buf = bytes(b"LST 8 3\r\nabc");
        assert_eq!(decode(&mut buf, ToClient).unwrap().unwrap().payload, b"abc");
        let mut out = BytesMut::new();
        encode(&Line::new("LST", TrId(7), []), &mut out, ToServer).unwrap();
        assert_eq!(&out[..], b"LST 7\r\n");
        let mut with_payload = Line::new("LST", TrId(7), []);
        with_payload.payload = b"x".to_vec();
        assert_eq!(
            encode(&with_payload, &mut out, ToServer),
            Err(EncodeError::TooLong)
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_accepted() {
        let param = "p".repeat(MAX_LINE - "CHG 1 \r\n".len());
        let line = Line::new("CHG", TrId(1), [param]);
        let mut out = BytesMut::new();
        encode(&line, &mut out, ToClient).unwrap();
        assert_eq!(out.len(), MAX_LINE);
        assert_eq!(decode(&mut out, ToClient).unwrap().unwrap(), line);
        let too_long = Line::new("CHG", TrId(1), ["p".repeat(MAX_LINE)]);
        assert_eq!(
            encode(&too_long, &mut out, ToClient),
            Err(EncodeError::TooLong)
        );
    }

    #[test]
    fn encode_refuses_what_decode_would_refuse() {
        let mut out = BytesMut::new();
        let spaced = Line::new("CHG", TrId(1), ["a b".to_owned()]);
        assert!(encode(&spaced, &mut out, ToClient).is_err());
        let empty = Line::new("CHG", TrId(1), [String::new()]);
        assert!(encode(&empty, &mut out, ToClient).is_err());
        let lower = Line::new("chg", TrId(1), []);
        assert_eq!(
            encode(&lower, &mut out, ToClient),
            Err(EncodeError::BadCommand)
        );
        let mut payload = Line::new("CHG", TrId(1), []);
        payload.payload = b"x".to_vec();
        assert_eq!(
            encode(&payload, &mut out, ToClient),
            Err(EncodeError::TooLong)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn errors_and_keyed_params() {
        let e = Line::error(911, TrId(4), "authentication failed");
        assert_eq!(e.command.error_code(), Some(911));
        assert_eq!(e.params, vec!["authentication", "failed"]);
        let l = Line::new(
            "INV",
            TrId(6),
            [
                "bob",
                "key=abc=",
                "cand=host/1.2.3.4:5",
                "cand=srflx/5.6.7.8:9",
            ]
            .map(String::from),
        );
        assert_eq!(l.keyed("key"), Some("abc="));
        assert_eq!(l.keyed_all("cand").count(), 2);
        assert_eq!(l.keyed("ca"), None);
        assert_eq!(Command(*b"INV").error_code(), None);
    }

    fn arb_param() -> impl Strategy<Value = String> {
        "[!-~]{1,40}"
    }

    proptest! {
        #[test]
        fn round_trip(cmd in "[A-Z]{3}", trid in any::<u32>(), params in proptest::collection::vec(arb_param(), 0..8),
                      payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut line = Line::new(&cmd, TrId(trid), params);
            if line.command.has_payload(ToClient) { line.payload = payload; }
            let mut out = BytesMut::new();
            encode(&line, &mut out, ToClient).unwrap();
            // Byte by byte: a partial line is never taken early.
            let mut buf = BytesMut::new();
            let mut got = None;
            for b in out.iter() {
                prop_assert!(got.is_none());
                buf.put_u8(*b);
                got = decode(&mut buf, ToClient).unwrap();
            }
            prop_assert_eq!(got, Some(line));
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn garbage_never_panics_and_always_progresses(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let mut buf = BytesMut::from(&data[..]);
            for _ in 0..data.len() + 1 {
                let before = buf.len();
                match decode(&mut buf, ToClient) {
                    Ok(Some(_)) | Err(FrameError::Syntax(_)) => prop_assert!(buf.len() < before),
                    Ok(None) => break,
                    Err(e) => { prop_assert!(e.is_fatal()); break; }
                }
            }
        }
    }
}
