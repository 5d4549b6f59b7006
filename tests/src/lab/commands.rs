//! Finding the host tools a lab needs (`ip`, `nft`, `conntrack`) and running them with their
//! failures reported, so every caller sees the command line and its stderr.

use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use super::{LabError, LabUnavailable};

/// Absolute paths of the tools a lab needs.
#[derive(Debug, Clone)]
pub(super) struct Tools {
    pub(super) ip: PathBuf,
    pub(super) nft: PathBuf,
    pub(super) conntrack: PathBuf,
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

pub(super) fn tools() -> Result<&'static Tools, LabUnavailable> {
    static TOOLS: OnceLock<Result<Tools, LabUnavailable>> = OnceLock::new();
    TOOLS
        .get_or_init(|| {
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } != 0 {
                return Err(LabUnavailable("not running as root".into()));
            }
            let get = |name| {
                find_tool(name).ok_or_else(|| {
                    LabUnavailable(format!(
                        "`{name}` not found (apt-get install iproute2 nftables conntrack)"
                    ))
                })
            };
            Ok(Tools {
                ip: get("ip")?,
                nft: get("nft")?,
                conntrack: get("conntrack")?,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Whether a lab can be built here (root, with `ip`, `nft` and `conntrack`).
pub fn available() -> Result<(), LabUnavailable> {
    tools().map(|_| ())
}

/// The shared prologue of every lab test: `true` if a lab can be built. Otherwise prints a
/// loud `SKIPPED: needs root and nftables` line to stderr and returns `false`, except when
/// the environment has `CI=true`, where it panics (a CI run must not silently skip).
pub fn require_lab() -> bool {
    match available() {
        Ok(()) => true,
        Err(e) => {
            let line = format!("SKIPPED: needs root and nftables ({e})");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{line}; lab prerequisites are mandatory when CI=true");
            }
            // Straight to the stderr handle: libtest captures `eprintln!`, and this line must
            // be seen.
            let _ = writeln!(io::stderr(), "{line}");
            false
        }
    }
}

/// Whether the program `name` is on `PATH` or in one of the system binary directories.
pub fn tool_installed(name: &str) -> bool {
    find_tool(name).is_some()
}

/// The prologue of a lab test that also needs a third-party program: `true` if `tool` is
/// installed. Otherwise prints a loud `SKIPPED: <tool> not installed` line to stderr and
/// returns `false`, except when `CI=true`, where it panics (as [`require_lab`] does).
pub fn require_tool(tool: &str) -> bool {
    if tool_installed(tool) {
        return true;
    }
    let line = format!("SKIPPED: {tool} not installed");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{line}; mandatory when CI=true");
    }
    // Straight to the stderr handle, as in `require_lab`.
    let _ = writeln!(io::stderr(), "{line}");
    false
}

/// Whether `NATLAB_TRACE` is set: every lab command is then printed with its duration.
pub(super) fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("NATLAB_TRACE").is_some())
}

pub(super) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` (with `input` on stdin if given) and fails with its stderr unless it succeeds.
pub(super) fn run(cmd: &mut Command, input: Option<&str>) -> Result<Output, LabError> {
    let command = describe(cmd);
    let io_err = |source| LabError::Io {
        what: format!("run `{command}`"),
        source,
    };
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(io_err)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).map_err(io_err)?;
    }
    let out = child.wait_with_output().map_err(io_err)?;
    if trace() {
        eprintln!("natlab: {:>5} ms  {command}", started.elapsed().as_millis());
    }
    if out.status.success() {
        Ok(out)
    } else {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if let Some(text) = input {
            stderr.push_str("\n--- input ---\n");
            stderr.push_str(text);
        }
        Err(LabError::Command {
            command,
            status: out.status.to_string(),
            stderr,
        })
    }
}
