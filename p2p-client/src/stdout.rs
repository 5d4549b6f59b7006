//! Printing for commands whose reader may go away.
//!
//! `println!` panics when standard output is a closed pipe (`p2p-client nat-type | head -1`,
//! or a reader that exits early): "failed printing to stdout: Broken pipe", exit status 101.
//! The functions here write and flush each line, and turn a closed pipe into [`WriteError::Closed`], which
//! a command treats as a quiet end: the reader has all it wanted. Other write errors (a full
//! disk behind a redirection) stay errors. Notes on standard error never fail: a closed
//! stderr loses the note and nothing else.
//!
//! ```no_run
//! # fn main() -> Result<(), p2p_client::stdout::WriteError> {
//! use p2p_client::stdout;
//!
//! stdout::line(format_args!("mapped address: {}", "192.0.2.1:4242"))?;
//! stdout::note(format_args!("p2p-client: pinned the server"));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io::{self, Write};

/// Why a line could not be printed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The reader went away (`EPIPE`, a closed pipe): a quiet end. The command stops
    /// printing and exits with the status it would have had.
    #[error("standard output was closed by its reader")]
    Closed,
    /// Any other write error (for example a full disk behind a redirection).
    #[error("cannot write to standard output: {0}")]
    Failed(io::Error),
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> WriteError {
        if e.kind() == io::ErrorKind::BrokenPipe {
            WriteError::Closed
        } else {
            WriteError::Failed(e)
        }
    }
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> io::Error {
        match e {
            WriteError::Closed => io::Error::from(io::ErrorKind::BrokenPipe),
            WriteError::Failed(e) => e,
        }
    }
}

/// Writes `text` and a newline to standard output and flushes it.
///
/// A closed pipe is [`WriteError::Closed`]; any other failure is [`WriteError::Failed`].
pub fn line(text: impl fmt::Display) -> Result<(), WriteError> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

/// Writes several lines with one flush, with the same rules as [`line()`].
pub fn lines<I, T>(lines: I) -> Result<(), WriteError>
where
    I: IntoIterator<Item = T>,
    T: fmt::Display,
{
    let mut out = io::stdout().lock();
    for text in lines {
        writeln!(out, "{text}")?;
    }
    out.flush()?;
    Ok(())
}

/// Writes `text` and a newline to standard error, ignoring errors (`eprintln!` panics when
/// stderr is a closed pipe, as in `p2p-client ... 2>&1 | head -1`).
pub fn note(text: impl fmt::Display) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "{text}");
    let _ = err.flush();
}

/// Whether `error` (anywhere in its chain) is a closed standard output: commands that end
/// with such an error end quietly, with the status they would have had.
pub fn is_closed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if matches!(e.downcast_ref::<WriteError>(), Some(WriteError::Closed)) {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_is_closed_and_other_errors_are_failures() {
        let closed = WriteError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(closed, WriteError::Closed));
        assert!(is_closed(&closed));
        let full = WriteError::from(io::Error::other("no space left"));
        assert!(matches!(full, WriteError::Failed(_)));
        assert!(!is_closed(&full));
    }
}
