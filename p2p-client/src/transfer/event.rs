//! What the drivers report while they run, and what they return per file.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

/// A progress report, for a progress bar or the CLI's JSON lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferEvent {
    /// A file resumes from a partial copy: the first `from` bytes are not sent again.
    Resumed {
        /// The file's name.
        file: String,
        /// Bytes already at the receiver.
        from: u64,
    },
    /// `bytes` of `total` are through (resumed prefix included). Sent when a file starts, at
    /// most about ten times a second while it runs, and when its data is through.
    Progress {
        /// The file's name.
        file: String,
        /// Bytes done.
        bytes: u64,
        /// The file's size.
        total: u64,
    },
    /// The receiver verified and stored the file.
    Done {
        /// The file's name.
        file: String,
        /// Its size.
        bytes: u64,
        /// Its SHA-256, lowercase hex.
        sha256_hex: String,
    },
}

impl TransferEvent {
    /// The event as one line of the CLI's JSON output, e.g.
    /// `{"event":"progress","file":"a","bytes":1,"total":2}` or
    /// `{"event":"done","file":"a","bytes":2,"sha256":"..."}`.
    pub fn to_json(&self) -> String {
        let value = match self {
            Self::Resumed { file, from } => json!({"event": "resumed", "file": file, "from": from}),
            Self::Progress { file, bytes, total } => {
                json!({"event": "progress", "file": file, "bytes": bytes, "total": total})
            }
            Self::Done {
                file,
                bytes,
                sha256_hex,
            } => json!({"event": "done", "file": file, "bytes": bytes, "sha256": sha256_hex}),
        };
        value.to_string()
    }
}

/// One file transferred in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDone {
    /// The name it was sent under.
    pub name: String,
    /// Sender: the source path; receiver: where the file now is.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Bytes that were already at the receiver from an interrupted run.
    pub resumed_from: u64,
    /// SHA-256 of the whole file.
    pub sha256: [u8; 32],
}

impl FileDone {
    /// [`FileDone::sha256`] in lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Emits [`TransferEvent::Progress`] for one file at most every [`Throttle::PERIOD`], plus
/// when forced (start and end), so a fast transfer does not flood the callback.
pub(super) struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    const PERIOD: Duration = Duration::from_millis(100);

    pub(super) fn new() -> Self {
        Self { last: None }
    }

    pub(super) fn report(
        &mut self,
        progress: &mut (dyn FnMut(TransferEvent) + Send),
        file: &str,
        bytes: u64,
        total: u64,
        force: bool,
    ) {
        let now = Instant::now();
        if !force
            && self
                .last
                .is_some_and(|t| now.duration_since(t) < Self::PERIOD)
        {
            return;
        }
        self.last = Some(now);
        progress(TransferEvent::Progress {
            file: file.to_owned(),
            bytes,
            total,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines() {
        let p = TransferEvent::Progress {
            file: "a\"b".into(),
            bytes: 1,
            total: 2,
        };
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"event": "progress", "file": "a\"b", "bytes": 1, "total": 2})
        );
        let d = TransferEvent::Done {
            file: "a".into(),
            bytes: 2,
            sha256_hex: "00".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"event": "done", "file": "a", "bytes": 2, "sha256": "00"})
        );
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0, 0xab, 0x0f]), "00ab0f");
    }
}
