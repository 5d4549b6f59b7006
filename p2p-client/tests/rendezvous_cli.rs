//! The account commands of `p2p-client` (`register`, `contacts`, `status`, `passwd`) against
//! the real rendezvous server, started in-process on loopback (TLS, with a certificate made for
//! the test) with a temporary database. Every command runs with a fresh home per server
//! (`P2P_HOME`), where the first one pins the server's key.

// Test code: a panic with the failing value is the report we want.
#![allow(clippy::unwrap_used)]

mod client;
mod loopback;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use client::Proc;
use loopback::KDF;
use p2p_servers::RendezvousHandle;
use p2p_servers::tls::ServerTls;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A path under the temp dir, unique to this process and call.
fn temp_path(tag: &str) -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("p2p-client-{tag}-{}-{n}", std::process::id()))
}

/// A file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn with(tag: &str, contents: &str) -> TempFile {
        let path = temp_path(tag);
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The server with a cheap minimum KDF, and a database and a client home removed on drop.
struct Server {
    handle: Option<RendezvousHandle>,
    addr: String,
    db: PathBuf,
    home: PathBuf,
}

impl Server {
    fn start() -> Server {
        Server::start_on("127.0.0.1:0")
    }

    /// The server on `listen` (an IP address and port 0).
    fn start_on(listen: &str) -> Server {
        let db = temp_path("rendezvous-db").with_extension("db");
        let tls = ServerTls::ephemeral().unwrap();
        let options = loopback::rendezvous(
            listen.parse().unwrap(),
            db.clone(),
            loopback::config(None),
            tls,
        );
        let handle = RendezvousHandle::start(options).unwrap();
        let addr = handle.local_addr().to_string();
        Server {
            handle: Some(handle),
            addr,
            db,
            home: temp_path("home"),
        }
    }

    /// A `p2p-client` command against this server, with a clean environment and no stdin.
    fn command(&self, args: &[&str]) -> Command {
        client::command(&self.addr, &self.home, args)
    }

    /// Runs `args` as `user` with `password` from the environment.
    fn run_as(&self, user: &str, password: &str, args: &[&str]) -> Output {
        self.command(args)
            .args(["--user", user])
            .env("P2P_PASSWORD", password)
            .output()
            .unwrap()
    }

    fn register(&self, user: &str, password: &str) {
        let out = self.run_as(user, password, &["register", "--kdf", KDF]);
        assert_success(&out);
        assert_eq!(
            stdout(&out).trim(),
            format!("registered {}", user.to_lowercase())
        );
    }

    fn contacts_json(&self, user: &str, password: &str) -> Vec<serde_json::Value> {
        let out = self.run_as(user, password, &["contacts", "list", "--json"]);
        assert_success(&out);
        let value: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        value.as_array().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
        loopback::remove_database(&self.db);
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "status {:?}, stdout {:?}, stderr {:?}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// Asserts exit status 1 and a one-line `p2p-client: error: ...` containing `needle`.
fn assert_error(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr {err:?}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("p2p-client: error: "), "{err:?}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
}

fn entry<'a>(list: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    list.iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list:?}"))
}

#[test]
fn register_creates_an_account_and_a_second_registration_names_the_taken_name() {
    let s = Server::start();
    s.register("Alice", "pw-alice-1");
    let again = s.run_as("alice", "other password", &["register", "--kdf", KDF]);
    assert_error(&again, "cannot register alice: name taken (711)");
    // The account works: an empty contact list.
    assert!(s.contacts_json("alice", "pw-alice-1").is_empty());
    // A KDF under the server's minimum is refused, with the server's reason.
    let weak = s.run_as("bob", "pw", &["register", "--kdf", "argon2id:m=8:t=0:p=1"]);
    assert_eq!(
        weak.status.code(),
        Some(2),
        "bad --kdf is a usage error: {}",
        stderr(&weak)
    );
}

#[test]
fn wrong_password_and_unknown_user_are_refused_alike() {
    let s = Server::start();
    s.register("alice", "right password");
    for (user, password) in [("alice", "wrong password"), ("nobody", "right password")] {
        let out = s.run_as(user, password, &["contacts", "list"]);
        assert_error(
            &out,
            &format!("cannot log in as {user}: authentication failed (911)"),
        );
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn a_password_under_8_characters_is_refused_before_anything_is_sent() {
    let s = Server::start();
    let out = s.run_as("alice", "1234567", &["register", "--kdf", KDF]);
    assert_error(
        &out,
        "the password is too short: a new password needs at least 8 characters",
    );
    // Nothing was registered: the name is still free.
    s.register("alice", "12345678");
    // Characters, not bytes: seven of them are too few however they are encoded.
    let out = s.run_as("bob", "ééééééé", &["register", "--kdf", KDF]);
    assert_error(&out, "at least 8 characters");

    let out = s
        .command(&["passwd", "--user", "alice", "--kdf", KDF])
        .env("P2P_PASSWORD", "12345678")
        .env("P2P_NEW_PASSWORD", "short")
        .output()
        .unwrap();
    assert_error(&out, "at least 8 characters");
    // The old password still works.
    s.contacts_json("alice", "12345678");
}

#[test]
fn server_takes_ipv6_bare_or_in_brackets_and_the_default_port() {
    let s = Server::start_on("[::1]:0");
    let port = s.addr.rsplit(':').next().unwrap().to_owned();
    s.register("alice", "password-alice");
    assert_eq!(s.addr, format!("[::1]:{port}"));
    assert!(s.contacts_json("alice", "password-alice").is_empty());
    // `::1` and `[::1]` take port 1863. Whatever listens there (or nothing), the client goes
    // to [::1]:1863 and never rejects the form.
    for given in ["::1", "[::1]"] {
        let home = temp_path("home-v6");
        let out = client::command(given, &home, &["contacts", "list", "--user", "alice"])
            .env("P2P_PASSWORD", "password-alice")
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(
            err.contains("[::1]:1863") || err.contains("cannot log in as alice"),
            "{given}: {err}"
        );
        assert!(!err.contains("cannot resolve"), "{given}: {err}");
        let _ = std::fs::remove_dir_all(&home);
    }
    let out = client::command("[::1]x", &s.home, &["contacts", "list", "--user", "alice"])
        .env("P2P_PASSWORD", "password-alice")
        .output()
        .unwrap();
    assert_error(&out, "expected HOST, HOST:PORT, IPv6 or [IPv6]:PORT");
}

#[test]
fn a_closed_stdout_is_a_quiet_end() {
    let s = Server::start();
    s.register("alice", "password-alice");
    s.register("bob", "pw-bob-1");
    assert_success(&s.run_as("alice", "password-alice", &["contacts", "add", "bob"]));
    // Mutual contacts, and Bob's login registers his key: `fingerprint` can fetch it.
    assert_success(&s.run_as("bob", "pw-bob-1", &["contacts", "add", "alice"]));
    for args in [
        &["contacts", "fingerprint", "bob"][..],
        &["contacts", "fingerprint", "bob", "--json"][..],
        &["contacts", "verify", "bob"][..],
        &["contacts", "list"][..],
        &["contacts", "list", "--json"][..],
        &["contacts", "block", "bob"][..],
    ] {
        let mut child = s
            .command(args)
            .args(["--user", "alice"])
            .env("P2P_PASSWORD", "password-alice")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
}

#[test]
fn logs_have_no_colours_off_a_terminal() {
    let s = Server::start();
    s.register("alice", "password-alice");
    let out = s
        .command(&["contacts", "list", "--user", "alice"])
        .env("P2P_PASSWORD", "password-alice")
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert_success(&out);
    let err = stderr(&out);
    assert!(err.contains("DEBUG"), "the log is there: {err}");
    assert!(
        !err.contains('\x1b'),
        "no ANSI escapes in a redirected log: {err:?}"
    );
}

#[test]
fn contacts_add_list_block_allow_and_remove() {
    let s = Server::start();
    for user in ["alice", "bob", "carol"] {
        s.register(user, &format!("password-{user}"));
    }
    let add = s.run_as("alice", "password-alice", &["contacts", "add", "Bob"]);
    assert_success(&add);
    assert_eq!(stdout(&add).trim(), "added bob to your contacts");
    let missing = s.run_as("alice", "password-alice", &["contacts", "add", "dave"]);
    assert_error(&missing, "cannot add dave: no such user (205)");
    let twice = s.run_as("alice", "password-alice", &["contacts", "add", "bob"]);
    assert_error(&twice, "(215)");

    let list = s.contacts_json("alice", "password-alice");
    assert_eq!(
        list,
        [
            serde_json::json!({"name": "bob", "presence": "offline", "contact": true, "blocked": false})
        ]
    );

    assert_success(&s.run_as("alice", "password-alice", &["contacts", "block", "bob"]));
    assert_success(&s.run_as("alice", "password-alice", &["contacts", "block", "carol"]));
    let list = s.contacts_json("alice", "password-alice");
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(entry(&list, "bob")["blocked"], true);
    assert_eq!(entry(&list, "bob")["contact"], true);
    assert_eq!(entry(&list, "carol")["blocked"], true);
    assert_eq!(entry(&list, "carol")["contact"], false);

    assert_success(&s.run_as("alice", "password-alice", &["contacts", "allow", "bob"]));
    let list = s.contacts_json("alice", "password-alice");
    assert_eq!(entry(&list, "bob")["blocked"], false);
    // Text output: one line per name with its flags.
    let text = s.run_as("alice", "password-alice", &["contacts", "list"]);
    assert_success(&text);
    let lines: Vec<Vec<String>> = stdout(&text)
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(
        lines,
        [
            ["bob", "offline", "contact"],
            ["carol", "offline", "blocked"]
        ]
    );

    assert_success(&s.run_as("alice", "password-alice", &["contacts", "remove", "bob"]));
    let not_there = s.run_as("alice", "password-alice", &["contacts", "remove", "bob"]);
    assert_error(&not_there, "cannot remove bob: ");
    assert!(
        stderr(&not_there).trim_end().ends_with("(216)"),
        "{}",
        stderr(&not_there)
    );
    assert_error(
        &s.run_as(
            "alice",
            "password-alice",
            &["contacts", "add", "not a name"],
        ),
        "invalid user name",
    );
    let list = s.contacts_json("alice", "password-alice");
    assert_eq!(list.len(), 1, "only carol (blocked) is left: {list:?}");
}

/// How long a status process gets for each expected line and for its exit.
const STATUS_WAIT: Duration = Duration::from_secs(10);

fn presence_is(name: &'static str, presence: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |v| v["name"] == name && v["presence"] == presence
}

#[test]
fn status_presence_reaches_a_mutual_contact_and_ending_input_logs_out() {
    let s = Server::start();
    s.register("alice", "password-alice");
    s.register("bob", "password-bob");
    assert_success(&s.run_as("alice", "password-alice", &["contacts", "add", "bob"]));
    assert_success(&s.run_as("bob", "password-bob", &["contacts", "add", "alice"]));

    let status_as = |user: &str, state: &str| {
        let mut cmd = s.command(&["status", state, "--json", "--user", user]);
        cmd.env("P2P_PASSWORD", format!("password-{user}"));
        Proc::spawn(user, cmd)
    };
    let mut alice = status_as("alice", "busy");
    // Alice is online before Bob: her first line is Bob's initial (offline) presence.
    let first = alice.expect(STATUS_WAIT, |_| true);
    assert_eq!(
        first,
        serde_json::json!({"name": "bob", "presence": "offline", "initial": true})
    );

    let mut bob = status_as("bob", "online");
    let seen = bob.expect(STATUS_WAIT, presence_is("alice", "busy"));
    assert_eq!(seen["name"], "alice", "{seen}");
    alice.expect(STATUS_WAIT, presence_is("bob", "online"));

    // Writing to stdin does nothing; ending it logs Alice out.
    alice.send_lines(&["anything".to_owned()]);
    let status = alice.finish(STATUS_WAIT);
    assert!(status.success(), "{status:?}");
    bob.expect(STATUS_WAIT, presence_is("alice", "offline"));

    let status = bob.finish(STATUS_WAIT);
    assert!(status.success(), "{status:?}");
    // Nobody is left online.
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.handle.as_ref().unwrap().online_count() != 0 {
        assert!(Instant::now() < deadline, "still online after logout");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn status_is_hidden_from_a_one_sided_contact_and_a_login_elsewhere_leaves_it() {
    let s = Server::start();
    for user in ["alice", "bob", "carol"] {
        s.register(user, &format!("password-{user}"));
    }
    // Only Alice adds Bob: Bob's presence stays hidden from her. Bob and Carol are mutual
    // contacts, so Bob's output shows when his state is set.
    assert_success(&s.run_as("alice", "password-alice", &["contacts", "add", "bob"]));
    assert_success(&s.run_as("bob", "password-bob", &["contacts", "add", "carol"]));
    assert_success(&s.run_as("carol", "password-carol", &["contacts", "add", "bob"]));
    let mut cmd = s.command(&["status", "online", "--json", "--user", "bob"]);
    cmd.env("P2P_PASSWORD", "password-bob");
    let mut bob = Proc::spawn("bob", cmd);
    bob.expect(STATUS_WAIT, presence_is("carol", "offline"));
    let carol = s.contacts_json("carol", "password-carol");
    assert_eq!(
        entry(&carol, "bob")["presence"],
        "online",
        "control: {carol:?}"
    );
    let alice = s.contacts_json("alice", "password-alice");
    assert_eq!(entry(&alice, "bob")["presence"], "offline", "{alice:?}");

    // Bob logs in elsewhere (another session): the status command is not disturbed. Carol
    // going out to lunch afterwards still reaches it: the server pushes in order, so its
    // session outlived the other login (a lunch state is new here, unlike online).
    assert_success(&s.run_as("bob", "password-bob", &["contacts", "list"]));
    let mut cmd = s.command(&["status", "lunch", "--json", "--user", "carol"]);
    cmd.env("P2P_PASSWORD", "password-carol");
    let mut carol_status = Proc::spawn("carol", cmd);
    bob.expect(STATUS_WAIT, presence_is("carol", "lunch"));
    assert!(bob.running(), "status ended");
    let carol = s.contacts_json("carol", "password-carol");
    assert_eq!(entry(&carol, "bob")["presence"], "online", "{carol:?}");
    let status = bob.finish(STATUS_WAIT);
    let err = bob.logs();
    assert_eq!(status.code(), Some(0), "{err}");
    let status = carol_status.finish(STATUS_WAIT);
    let err = carol_status.logs();
    assert_eq!(status.code(), Some(0), "{err}");

    let out = s.run_as("alice", "password-alice", &["status", "offline"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a usage error: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("invisible"), "{}", stderr(&out));
}

#[test]
fn password_from_file_or_environment_and_a_clear_error_without_one() {
    let s = Server::start();
    s.register("alice", "from env");
    // First line only, newline stripped (CRLF too).
    let file = TempFile::with("pw", "from env\r\nsecond line\n");
    let out = s
        .command(&[
            "contacts",
            "list",
            "--user",
            "alice",
            "--password-file",
            file.path(),
        ])
        .output()
        .unwrap();
    assert_success(&out);
    // The file wins over the environment.
    let out = s
        .command(&[
            "contacts",
            "list",
            "--user",
            "alice",
            "--password-file",
            file.path(),
        ])
        .env("P2P_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_success(&out);
    // P2P_USER names the user.
    let out = s
        .command(&["contacts", "list"])
        .env("P2P_USER", "alice")
        .env("P2P_PASSWORD", "from env")
        .output()
        .unwrap();
    assert_success(&out);
    // Stdin is not a terminal here: no prompt, a clear error instead.
    let out = s
        .command(&["contacts", "list", "--user", "alice"])
        .output()
        .unwrap();
    assert_error(
        &out,
        "no password: use --password-file FILE or set P2P_PASSWORD",
    );
    let out = s.command(&["contacts", "list"]).output().unwrap();
    assert_error(&out, "no user: use --user NAME or set P2P_USER");
    let empty = TempFile::with("pw-empty", "\nsecret\n");
    let out = s
        .command(&[
            "contacts",
            "list",
            "--user",
            "alice",
            "--password-file",
            empty.path(),
        ])
        .output()
        .unwrap();
    assert_error(&out, "the first line is empty");
}

#[test]
fn passwd_then_the_new_password_works_and_the_old_one_fails() {
    let s = Server::start();
    s.register("alice", "old password");
    let new = TempFile::with("new-pw", "new password\n");
    let out = s.run_as(
        "alice",
        "old password",
        &["passwd", "--kdf", KDF, "--new-password-file", new.path()],
    );
    assert_success(&out);
    assert_eq!(stdout(&out).trim(), "changed the password of alice");
    s.contacts_json("alice", "new password");
    assert_error(
        &s.run_as("alice", "old password", &["contacts", "list"]),
        "authentication failed (911)",
    );
    // From the environment, back again.
    let out = s
        .command(&["passwd", "--user", "alice", "--kdf", KDF])
        .env("P2P_PASSWORD", "new password")
        .env("P2P_NEW_PASSWORD", "third password")
        .output()
        .unwrap();
    assert_success(&out);
    s.contacts_json("alice", "third password");
    // Without a new password and without a terminal: a clear error, nothing changed.
    let out = s.run_as("alice", "third password", &["passwd"]);
    assert_error(&out, "--new-password-file FILE or set P2P_NEW_PASSWORD");
    s.contacts_json("alice", "third password");
}

#[test]
fn an_unreachable_server_is_a_one_line_error() {
    let home = temp_path("home-unreachable");
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("127.0.0.1:{port}");
    let out = client::command(&server, &home, &["contacts", "list", "--user", "alice"])
        .env("P2P_PASSWORD", "x")
        .output()
        .unwrap();
    assert_error(
        &out,
        &format!("cannot connect to 127.0.0.1:{port}: connection refused"),
    );
    let server = "no-such-host.invalid:1863";
    let out = client::command(server, &home, &["contacts", "list", "--user", "alice"])
        .env("P2P_PASSWORD", "x")
        .output()
        .unwrap();
    assert_error(&out, "cannot resolve \"no-such-host.invalid:1863\"");
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn help_says_how_status_ends_and_where_passwords_come_from() {
    let out = Command::new(client::BIN)
        .args(["status", "--help"])
        .output()
        .unwrap();
    let help = stdout(&out);
    for needle in [
        "end of file",
        "Ctrl-C",
        "logs out",
        "invisible",
        "P2P_PASSWORD",
    ] {
        assert!(
            help.contains(needle),
            "{needle:?} not in status --help:\n{help}"
        );
    }
    let out = Command::new(client::BIN)
        .args(["passwd", "--help"])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("P2P_NEW_PASSWORD"));
}
