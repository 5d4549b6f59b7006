//! Network namespaces by name: entering one from a thread, deleting one with whatever runs in
//! it, and finding the stale ones left by dead test processes.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::process::Command;

use super::{LabError, NS_PREFIX, run, tools};

/// Writes one sysctl inside namespace `ns` (nothing if `optional` and the key is absent).
pub(super) fn write_sysctl(
    ns: &str,
    key: &str,
    value: &str,
    optional: bool,
) -> Result<(), LabError> {
    let path = Path::new("/proc/sys").join(key.replace('.', "/"));
    in_namespace(ns, || {
        if optional && !path.exists() {
            return Ok(());
        }
        std::fs::write(&path, value)
    })
    .map_err(|source| LabError::Io {
        what: format!("sysctl {key}={value} in {ns}"),
        source,
    })
}

/// Runs `f` on a fresh thread that has entered the named network namespace (`setns` on
/// `/run/netns/NS`, which changes only that thread's namespace) and returns its result.
/// Sockets created by `f` stay in that namespace for their whole life.
pub fn in_namespace<T: Send>(ns: &str, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let path = Path::new("/run/netns").join(ns);
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(&path)?;
                // SAFETY: the fd is a valid open namespace file for the duration of the call;
                // setns only changes this (short-lived, scoped) thread's network namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

/// Kills (SIGKILL, by pid) every process inside namespace `ns`, then deletes it.
pub(super) fn delete_ns(ns: &str) -> Result<(), LabError> {
    let t = tools()?;
    if let Ok(out) = run(Command::new(&t.ip).args(["netns", "pids", ns]), None) {
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<libc::pid_t>().ok())
            // Never ourselves (a main thread that entered the namespace would be listed).
            .filter(|&p| u32::try_from(p).ok() != Some(std::process::id()))
        {
            // SAFETY: kill has no memory-safety preconditions; the pid was just listed as
            // running inside one of our namespaces.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    run(Command::new(&t.ip).args(["netns", "del", ns]), None).map(|_| ())
}

/// The pid encoded in a lab namespace name (`p2pl<pid>-...`).
pub fn ns_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NS_PREFIX)?;
    let digits = rest.split('-').next()?;
    digits.parse().ok()
}

/// Every lab namespace on the machine (names starting with [`NS_PREFIX`]).
pub fn lab_namespaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(NS_PREFIX))
        .collect();
    names.sort();
    names
}

/// Deletes lab namespaces whose pid is no longer alive, and those of the given pids (never
/// our own process's); returns the names deleted.
pub fn cleanup_stale(pids: &[u32]) -> Vec<String> {
    let me = std::process::id();
    let mut deleted = Vec::new();
    for name in lab_namespaces() {
        let Some(pid) = ns_pid(&name) else { continue };
        let dead = !Path::new(&format!("/proc/{pid}")).exists();
        if pid != me && (dead || pids.contains(&pid)) {
            match delete_ns(&name) {
                Ok(()) => deleted.push(name),
                Err(e) => eprintln!("natlab: could not delete stale namespace {name}: {e}"),
            }
        }
    }
    deleted
}

/// A UDP socket bound to `addr` inside the named network namespace.
///
/// On a fresh thread: opens `/run/netns/NS`, `setns(fd, CLONE_NEWNET)` (which changes only
/// that thread's namespace), binds the socket and returns it. A socket belongs to the
/// namespace it was created in for its whole life, so it can be used from any thread after.
pub fn udp_socket_in(ns: &str, addr: SocketAddr) -> io::Result<UdpSocket> {
    in_namespace(ns, || UdpSocket::bind(addr))
}
