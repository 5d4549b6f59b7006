//! Finding the two binaries a chat lab runs (see the [parent module's docs](super)): next to
//! the running test (`target/<profile>/`), brought up to date with `cargo build` first, or
//! named by `LAB_STUN_SERVER_BIN` / `LAB_P2P_CLIENT_BIN`.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use super::io_error;
use crate::lab::LabError;

/// The two binaries a chat lab runs.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `stun-server`.
    pub server: PathBuf,
    /// `p2p-client`.
    pub client: PathBuf,
}

/// The binaries (see the [module docs](super)); built once per test process.
pub fn binaries() -> Result<&'static Binaries, LabError> {
    static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();
    BINARIES
        .get_or_init(find_binaries)
        .as_ref()
        .map_err(|e| io_error("the lab chat binaries", io::Error::other(e.clone())))
}

fn find_binaries() -> Result<Binaries, String> {
    let server_env = std::env::var_os("LAB_STUN_SERVER_BIN");
    let client_env = std::env::var_os("LAB_P2P_CLIENT_BIN");
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = me
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("no profile directory above {}", me.display()))?
        .to_path_buf();
    if server_env.is_none() || client_env.is_none() {
        build(&profile_dir);
    }
    let pick = |env: Option<OsString>, name: &str| -> Result<PathBuf, String> {
        let path = env.map_or_else(|| profile_dir.join(name), PathBuf::from);
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{} is missing (cargo build -p p2p-servers -p p2p-client)",
                path.display()
            ))
        }
    };
    Ok(Binaries {
        server: pick(server_env, "stun-server")?,
        client: pick(client_env, "p2p-client")?,
    })
}

/// `cargo build` of both binaries into the target directory this test was built in.
fn build(profile_dir: &Path) {
    let Some(target_dir) = profile_dir.parent() else {
        return;
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-q",
        "-p",
        "p2p-servers",
        "-p",
        "p2p-client",
        "--bins",
    ])
    .arg("--target-dir")
    .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let started = Instant::now();
    match cmd.status() {
        Ok(status) if status.success() => {}
        other => eprintln!(
            "natlab: cargo build of stun-server and p2p-client failed ({other:?}); \
             using the binaries as they are"
        ),
    }
    if super::super::trace() {
        eprintln!(
            "natlab: {:>5} ms  cargo build (chat binaries)",
            started.elapsed().as_millis()
        );
    }
}
