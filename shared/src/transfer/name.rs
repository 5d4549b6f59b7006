//! Which file names a receiver accepts, and the names of its own temporary files.
//!
//! A received name is a single path component chosen by the peer, so it is hostile until
//! proven otherwise: joined onto the output directory it must name an entry *in* that
//! directory and nothing else. [`validate_name`] is the one gate; the rules and why each
//! exists are listed on [`NameError`].

use thiserror::Error;

/// Longest accepted name, in bytes of UTF-8.
///
/// Common file systems allow 255 bytes per component; the receiver's sidecar
/// ([`sidecar_name`]) adds 17 bytes to the name, so 200 leaves room with a margin.
pub const MAX_NAME_LEN: usize = 200;

/// Suffix of a partially received file: `.NAME.p2p-partial`.
pub const PARTIAL_SUFFIX: &str = ".p2p-partial";
/// Suffix of the sidecar holding a partial file's resume key: `.NAME.p2p-partial.key`.
pub const SIDECAR_SUFFIX: &str = ".p2p-partial.key";

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// The empty name names the directory itself.
    #[error("empty file name")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`] bytes.
    #[error("file name is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// Length of the name in bytes.
        len: usize,
        /// [`MAX_NAME_LEN`].
        max: usize,
    },
    /// `.` or `..`: the directory itself or its parent.
    #[error("file name {0:?} names a directory")]
    DotOrDotDot(String),
    /// A `/` or `\`: a path rather than a name. Covers absolute paths (`/etc/x`, `C:\x`),
    /// `a/b`, `../x` and empty components (`a//b`), since a sender sends one base name per
    /// file and never a path.
    #[error("file name contains a path separator")]
    Separator,
    /// NUL or another control character (U+0000 to U+001F, U+007F): NUL truncates names in
    /// C APIs, and the others spoof terminal output when the name is printed.
    #[error("file name contains a control character")]
    Control,
    /// Ends like the receiver's own temporary files ([`PARTIAL_SUFFIX`], [`SIDECAR_SUFFIX`]),
    /// so a sender cannot overwrite another transfer's partial data or resume key.
    #[error("file name ends with a suffix reserved for partial files")]
    ReservedSuffix,
}

/// Checks that `name` is a single, plain file name the receiver may create in its output
/// directory.
///
/// Accepted: any UTF-8 of 1 to [`MAX_NAME_LEN`] bytes that is not `.` or `..`, has no `/`,
/// `\` or control character, and does not end in [`PARTIAL_SUFFIX`] or [`SIDECAR_SUFFIX`].
/// Leading dots (hidden files), spaces and `:` are allowed; Windows device names (`CON`,
/// `NUL`, ...) and trailing dots are not checked, as the receiver runs on Unix-like systems.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    if name == "." || name == ".." {
        return Err(NameError::DotOrDotDot(name.to_owned()));
    }
    if name.contains(['/', '\\']) {
        return Err(NameError::Separator);
    }
    if name.chars().any(|c| c.is_ascii_control()) {
        return Err(NameError::Control);
    }
    if name.ends_with(PARTIAL_SUFFIX) || name.ends_with(SIDECAR_SUFFIX) {
        return Err(NameError::ReservedSuffix);
    }
    Ok(())
}

/// The name a file is received under until it is complete and verified: `.NAME.p2p-partial`.
/// Hidden, and never a valid received name itself.
pub fn partial_name(name: &str) -> String {
    format!(".{name}{PARTIAL_SUFFIX}")
}

/// The name of the sidecar holding the resume key of [`partial_name`]:
/// `.NAME.p2p-partial.key`.
pub fn sidecar_name(name: &str) -> String {
    format!(".{name}{SIDECAR_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use std::path::{Component, Path};

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever a peer sends, an accepted name joined onto a directory is one plain
        /// component inside it.
        #[test]
        fn accepted_names_stay_inside(name in r"[./\\a\x00-\x1f\PC]{0,12}") {
            if validate_name(&name).is_ok() {
                let joined = Path::new("/out").join(&name);
                prop_assert_eq!(joined.parent(), Some(Path::new("/out")));
                let components: Vec<_> = Path::new(&name).components().collect();
                prop_assert!(matches!(components[..], [Component::Normal(_)]), "{:?}", name);
            }
        }
    }

    #[test]
    fn plain_names_are_accepted() {
        for name in [
            "a",
            "report.pdf",
            ".hidden",
            "with space",
            "10:30 notes",
            "é😀",
            "...",
        ] {
            assert_eq!(validate_name(name), Ok(()), "{name}");
        }
        assert_eq!(validate_name(&"x".repeat(MAX_NAME_LEN)), Ok(()));
    }

    #[test]
    fn hostile_names_are_refused() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert!(matches!(validate_name("."), Err(NameError::DotOrDotDot(_))));
        assert!(matches!(
            validate_name(".."),
            Err(NameError::DotOrDotDot(_))
        ));
        for name in ["../x", "/etc/x", "a/b", "a//b", "/", "x/", "C:\\x", "..\\x"] {
            assert_eq!(validate_name(name), Err(NameError::Separator), "{name}");
        }
        for name in ["a\0b", "\0", "a\nb", "\x1b[31m", "x\x7f"] {
            assert_eq!(validate_name(name), Err(NameError::Control), "{name:?}");
        }
        assert_eq!(
            validate_name(&"x".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::TooLong {
                len: MAX_NAME_LEN + 1,
                max: MAX_NAME_LEN
            })
        );
        for name in [".a.p2p-partial", "b.p2p-partial.key"] {
            assert_eq!(
                validate_name(name),
                Err(NameError::ReservedSuffix),
                "{name}"
            );
        }
    }

    #[test]
    fn temporary_names_are_refused_as_received_names_and_fit_a_component() {
        let long = "x".repeat(MAX_NAME_LEN);
        for name in [partial_name("a"), sidecar_name("a")] {
            assert!(validate_name(&name).is_err(), "{name}");
        }
        assert!(sidecar_name(&long).len() <= 255);
        assert!(partial_name(&long).len() <= 255);
    }
}
