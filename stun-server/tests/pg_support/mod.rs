//! A throwaway PostgreSQL server for the tests: `initdb` into a temporary directory, `postgres`
//! on 127.0.0.1 on a free port with its sockets in that directory, stopped by its pid (SIGINT,
//! PostgreSQL's fast shutdown) and the directory removed when the last user drops it. Never a
//! system service.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: then both programs run as the
//! `postgres` user (Debian's package creates it) and the directory is handed to it.
//!
//! Without PostgreSQL installed the tests that need it are skipped with a loud note, except in
//! CI (`CI=true`), where a missing prerequisite is a failure (`.ci/run` installs it).

#![allow(dead_code)]

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How long `postgres` may take to accept connections.
const READY: Duration = Duration::from_secs(30);
/// How long it may take to stop on SIGINT before it is killed.
const STOP: Duration = Duration::from_secs(10);

/// A running cluster; the superuser is `postgres`, with trust authentication on loopback.
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    child: Mutex<Child>,
    databases: AtomicUsize,
}

/// The cluster the tests of this process share while any of them holds it: one `initdb`
/// instead of one per test, and each test still gets a database of its own.
static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

/// The shared cluster, started if none runs; `None` (with a note on stderr) when PostgreSQL
/// is not installed outside CI.
pub fn cluster(test: &str) -> Option<Arc<Cluster>> {
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(running) = shared.upgrade() {
        return Some(running);
    }
    let Some(bin) = bindir() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: PostgreSQL (initdb, postgres) is not installed; .ci/run installs it");
        }
        eprintln!(
            "SKIPPED {test}: PostgreSQL is not installed (apt-get install postgresql); \
             CI runs it"
        );
        return None;
    };
    let cluster = Arc::new(Cluster::start(&bin));
    *shared = Arc::downgrade(&cluster);
    Some(cluster)
}

/// Where `initdb` and `postgres` are: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian keeps them off PATH).
fn bindir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_tools(&dir) {
            return Some(dir);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The uid and gid of the `postgres` user, when we are root (PostgreSQL will not run as root).
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = CString::new("postgres").unwrap();
    // SAFETY: a valid C string; the result is read at once, before any other getpw* call in
    // this thread.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !entry.is_null(),
        "running as root and there is no `postgres` user to run PostgreSQL as"
    );
    // SAFETY: checked non-null above; getpwnam returns a valid passwd record.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Some((uid, gid))
}

/// A loopback TCP port for a server the test starts, which binds it a moment later.
///
/// A port from `bind(":0")` comes from the kernel's ephemeral range, the same range every
/// `connect` draws its local port from: between our release and the server's bind, any
/// connection of a test running alongside may take it ("Address already in use"). So the port
/// is drawn below that range, where the kernel never hands out ports by itself, is checked to
/// be free, and is never handed out twice in this process.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    // Below the ephemeral range, above the well-known ports and the usual service ports.
    let (low, high) = (
        ephemeral_low.saturating_sub(12_000).max(10_000),
        ephemeral_low,
    );
    let mut given = GIVEN.lock().unwrap();
    if high > low {
        let seed = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        let mut x = seed | 1;
        for _ in 0..200 {
            // xorshift: enough to spread the picks of parallel test processes.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let port = u16::try_from(low + (x % u64::from(high - low)) as u32).unwrap();
            if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.push(port);
                return port;
            }
        }
    }
    // No room below the ephemeral range on this machine: the kernel's pick, with the race.
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn start(bin: &Path) -> Cluster {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pg-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data");
        let user = run_as();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let command = |program: &str| {
            let mut cmd = Command::new(bin.join(program));
            cmd.current_dir(&dir);
            if let Some((uid, gid)) = user {
                cmd.uid(uid).gid(gid);
            }
            cmd
        };
        let out = command("initdb")
            .args(["-D", data.to_str().unwrap()])
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log = std::fs::File::create(dir.join("postgres.log")).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.join("postgres.log"), Some(uid), Some(gid)).unwrap();
        }
        let child = command("postgres")
            .args(["-D", data.to_str().unwrap()])
            .args(["-p", &port.to_string(), "-h", "127.0.0.1"])
            .args(["-k", dir.to_str().unwrap()])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "synchronous_commit=off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let cluster = Cluster {
            dir,
            port,
            child: Mutex::new(child),
            databases: AtomicUsize::new(0),
        };
        cluster.wait_ready();
        cluster
    }

    /// Polls a connection until one succeeds; fails with the server's log if it exits or
    /// takes longer than [`READY`].
    fn wait_ready(&self) {
        let deadline = Instant::now() + READY;
        loop {
            match postgres::Client::connect(&self.url("postgres"), postgres::NoTls) {
                Ok(_) => return,
                Err(e) => {
                    let exited = self.child.lock().unwrap().try_wait().unwrap();
                    if exited.is_some() || Instant::now() > deadline {
                        panic!(
                            "PostgreSQL did not start ({e}, exit {exited:?}); its log:\n{}",
                            std::fs::read_to_string(self.dir.join("postgres.log"))
                                .unwrap_or_default()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A superuser connection to `database`.
    pub fn admin(&self, database: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(database), postgres::NoTls).unwrap()
    }

    /// Creates an empty database with a name made from `tag` and returns its name.
    pub fn create_database(&self, tag: &str) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "t{n}_{}",
            tag.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        );
        self.admin("postgres")
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap();
        name
    }
}

impl Drop for Cluster {
    /// SIGINT (fast shutdown: clients are disconnected) and a wait; SIGKILL if it lingers.
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        // SAFETY: sending a signal to our own child by its pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + STOP;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Makes every insert, update and delete on the server's tables of `database` fail, from
/// outside, like a full disk would; takes effect at once, also for open connections.
pub fn break_writes(cluster: &Cluster, database: &str) {
    let mut admin = cluster.admin(database);
    admin
        .batch_execute(
            "CREATE FUNCTION test_fail() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'test: the disk is full'; END $$;",
        )
        .unwrap();
    for table in ["users", "contacts", "blocks", "devices"] {
        admin
            .batch_execute(&format!(
                "CREATE TRIGGER test_fail BEFORE INSERT OR UPDATE OR DELETE ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION test_fail();"
            ))
            .unwrap();
    }
}

/// Undoes [`break_writes`].
pub fn mend_writes(cluster: &Cluster, database: &str) {
    cluster
        .admin(database)
        .batch_execute("DROP FUNCTION test_fail() CASCADE;")
        .unwrap();
}
