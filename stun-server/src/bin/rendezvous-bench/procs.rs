//! The processes the bench starts (server nodes, PostgreSQL, NATS, its own workers), each
//! stopped by its pid, and what it reads about them from `/proc`.

use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shared::identity::Fingerprint;

/// A child process of ours, stopped by its pid on drop: `signal` first, SIGKILL after 10 s.
pub struct Managed {
    pub child: Child,
    signal: libc::c_int,
}

impl Managed {
    pub fn new(child: Child, signal: libc::c_int) -> Managed {
        Managed { child, signal }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the stop signal without waiting (to stop several at once, then [`stop`] each).
    ///
    /// [`stop`]: Managed::stop
    pub fn signal(&self) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on the pid of a child we started (a reaped one is not signalled:
            // `stop` reaps, and it runs after this).
            unsafe {
                libc::kill(pid, self.signal);
            }
        }
    }

    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on the pid of a child we started and have not reaped.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, self.signal);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A temporary directory of the bench's own, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> anyhow::Result<TempDir> {
        let dir =
            std::env::temp_dir().join(format!("rendezvous-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `stun-server` binary: `--server-bin`, else the one next to this program.
pub fn server_bin(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    Ok(match given {
        Some(b) => b.to_owned(),
        None => std::env::current_exe()?.with_file_name("stun-server"),
    })
}

/// `program`, under `taskset -c CPU` when `cpu` is given.
pub fn pinned(program: &Path, cpu: Option<&str>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Starts a `stun-server` (`cmd`, with `RUST_LOG` set by the caller) and waits until its log
/// says `ready`; returns it with the TLS key fingerprint it logged. Its warnings and errors
/// are echoed, prefixed with `name`.
pub fn start_server(
    name: &str,
    mut cmd: Command,
    ready: &'static str,
    timeout: Duration,
) -> anyhow::Result<(Managed, Fingerprint)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let stderr = child.stderr.take().context("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let tag = name.to_owned();
    std::thread::spawn(move || {
        let mut ready_tx = Some(tx);
        let mut fingerprint = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let marker = "TLS certificate fingerprint ";
            if let Some(rest) = line.split(marker).nth(1) {
                fingerprint = rest
                    .split_whitespace()
                    .next()
                    .and_then(|f| f.parse::<Fingerprint>().ok());
            }
            if line.contains(ready) {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(fingerprint);
                }
            }
            if line.contains("ERROR") || line.contains("WARN") {
                eprintln!("{tag}: {line}");
            }
        }
    });
    let mut server = Managed::new(child, libc::SIGTERM);
    match rx.recv_timeout(timeout) {
        Ok(Some(fingerprint)) => Ok((server, fingerprint)),
        Ok(None) => {
            server.stop();
            bail!("{name} did not log its TLS certificate fingerprint")
        }
        Err(_) => {
            server.stop();
            bail!("{name} did not log {ready:?} within {timeout:?}")
        }
    }
}

/// A loopback port for a server the bench starts, which binds it a moment later: drawn below
/// the kernel's ephemeral range (where `connect` takes its local ports, so another program's
/// connection cannot take it in between), checked free, and never handed out twice.
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (
        ephemeral_low.saturating_sub(12_000).max(10_000),
        ephemeral_low,
    );
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let mut x = u64::from(std::process::id()) ^ super::client::mono_ns() | 1;
    for _ in 0..500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let Ok(port) = u16::try_from(low + (x % u64::from(high.saturating_sub(low).max(1))) as u32)
        else {
            continue;
        };
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return Ok(port);
        }
    }
    bail!("no free port in {low}..{high}")
}

/// A throwaway PostgreSQL: `initdb` into `dir`, `postgres` on 127.0.0.1 with its sockets in
/// `dir`, run as the `postgres` user when we are root (it refuses to run as root).
pub struct Postgres {
    pub port: u16,
    pub server: Managed,
}

impl Postgres {
    pub fn start(dir: &Path, cpu: Option<&str>) -> anyhow::Result<Postgres> {
        let bin = pg_bindir().context("PostgreSQL (initdb, postgres) is not installed")?;
        let data = dir.join("data");
        let user = run_as()?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        }
        let command = |program: &str, cpu: Option<&str>| {
            let mut cmd = pinned(&bin.join(program), cpu);
            cmd.current_dir(dir);
            if let Some((uid, gid)) = user {
                cmd.uid(uid).gid(gid);
            }
            cmd
        };
        let out = command("initdb", None)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .output()?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = free_port()?;
        let log = std::fs::File::create(dir.join("postgres.log"))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.join("postgres.log"), Some(uid), Some(gid))?;
        }
        let child = command("postgres", cpu)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1"])
            .arg("-k")
            .arg(dir)
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "synchronous_commit=off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        // SIGINT: PostgreSQL's fast shutdown.
        let pg = Postgres {
            port,
            server: Managed::new(child, libc::SIGINT),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match postgres::Client::connect(&pg.url("postgres"), postgres::NoTls) {
                Ok(_) => return Ok(pg),
                Err(e) if Instant::now() > deadline => {
                    bail!("PostgreSQL did not start within 60 s: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

/// Where `initdb` and `postgres` are: the newest `/usr/lib/postgresql/*/bin` (Debian keeps
/// them off PATH), else `pg_config --bindir`.
fn pg_bindir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Some(bin);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && has_tools(&dir)).then_some(dir)
}

/// The uid and gid of the `postgres` user when we are root.
fn run_as() -> anyhow::Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres")?;
    // SAFETY: a valid C string; the record is read at once, before any other getpw* call.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        bail!("running as root and there is no `postgres` user to run PostgreSQL as");
    }
    // SAFETY: checked non-null above; getpwnam returns a valid passwd record.
    Ok(Some(unsafe { ((*entry).pw_uid, (*entry).pw_gid) }))
}

/// Debian's `nats-server` (`/usr/sbin`, which may not be on PATH) on 127.0.0.1:`port`, with
/// `extra` options (none: core NATS only), waited for until it says it is ready.
pub fn start_nats(cpu: Option<&str>, extra: &[&str]) -> anyhow::Result<(Managed, u16)> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let bin = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .context("nats-server is not installed (Debian package nats-server)")?;
    let port = free_port()?;
    let mut child = pinned(&bin, cpu)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("Server is ready") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            } else if line.contains("[ERR]") || line.contains("[WRN]") {
                eprintln!("nats-server: {line}");
            }
        }
    });
    let nats = Managed::new(child, libc::SIGTERM);
    rx.recv_timeout(Duration::from_secs(10))
        .context("nats-server did not say it was ready within 10 s")?;
    Ok((nats, port))
}

/// `(VmRSS, VmHWM)` of `pid` in KiB.
pub fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// User plus system CPU seconds of `pid` so far.
pub fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(11) + ticks(12)) / hz)
}

/// Proportional set size of `pid` in KiB: its share of the pages it shares with other
/// processes (PostgreSQL's shared buffers, mapped by each of its processes), so that a sum
/// over processes counts each page once.
pub fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Open file descriptors of `pid`.
pub fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// `pid` and its children (PostgreSQL's backends are children of its postmaster).
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The parent pid is the second field after the command name.
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}
