//! The client's home directory: the device identity keys, the contacts' pinned keys and the
//! servers' pinned certificate keys.
//!
//! ```text
//! <home>/known_servers                  HOST:PORT SHA256:...        (one line per server)
//! <home>/users/<name>/identity.key      base64 of the X25519 secret (mode 0600)
//! <home>/users/<name>/contacts.pins     NAME <b64 key> verified|unverified
//! ```
//!
//! The home is `--home DIR` if given, else `$P2P_HOME`, else `$XDG_DATA_HOME/p2p-toolkit`,
//! else `~/.local/share/p2p-toolkit` ([`Home::resolve`]). Directories are made with mode 0700.
//! Files that change are rewritten whole, to a temporary file that is then renamed over the
//! old one, while holding an advisory lock (`flock`) on a `.lock` file next to it: two
//! processes sharing a home (alice and bob on one machine, or two commands of one user) never
//! see half a file nor lose each other's changes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use rand::rngs::OsRng;
use shared::chat::StaticKeypair;
use shared::identity::Fingerprint;
use shared::rendezvous::UserName;
use zeroize::Zeroizing;

use crate::rendezvous::io_text;

/// The environment variable that names the home.
pub const HOME_ENV: &str = "P2P_HOME";
/// The home's directory name under `$XDG_DATA_HOME` or `~/.local/share`.
pub const APP_DIR: &str = "p2p-toolkit";
/// The file of pinned server keys, in the home.
pub const KNOWN_SERVERS: &str = "known_servers";
/// The device identity key file, in a user's directory.
pub const IDENTITY_KEY: &str = "identity.key";
/// The contacts' pinned keys, in a user's directory.
pub const CONTACT_PINS: &str = "contacts.pins";

/// Why the home could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HomeError {
    /// Neither `--home`, `P2P_HOME`, `XDG_DATA_HOME` nor `HOME` names a directory.
    #[error("no home directory: use --home DIR or set P2P_HOME (or HOME)")]
    NoHome,
    /// A file or directory could not be read or written.
    #[error("cannot {what} {}: {}", path.display(), io_text(source))]
    Io {
        /// What was being done ("read", "create", ...).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A file does not hold what it should.
    #[error("{}:{line}: {problem}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The line (1-based; 0 for the whole file).
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> HomeError {
    let path = path.to_owned();
    move |source| HomeError::Io { what, path, source }
}

/// The client's home directory. See the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The home at `dir` (nothing is created yet).
    pub fn at(dir: impl Into<PathBuf>) -> Home {
        Home { root: dir.into() }
    }

    /// `flag` (the `--home` option) if given, else from the environment: `$P2P_HOME`, else
    /// `$XDG_DATA_HOME/p2p-toolkit`, else `$HOME/.local/share/p2p-toolkit`.
    pub fn resolve(flag: Option<&Path>) -> Result<Home, HomeError> {
        let var = |name: &str| std::env::var_os(name);
        Home::pick(flag, var(HOME_ENV), var("XDG_DATA_HOME"), var("HOME"))
            .map(Home::at)
            .ok_or(HomeError::NoHome)
    }

    /// The resolution rule of [`resolve`](Self::resolve) over explicit values. Empty
    /// variables count as unset; `XDG_DATA_HOME` must be absolute (the XDG spec says to
    /// ignore a relative one).
    pub fn pick(
        flag: Option<&Path>,
        p2p_home: Option<OsString>,
        xdg_data_home: Option<OsString>,
        home: Option<OsString>,
    ) -> Option<PathBuf> {
        if let Some(dir) = flag {
            return Some(dir.to_owned());
        }
        let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(dir) = set(p2p_home) {
            return Some(dir);
        }
        if let Some(dir) = set(xdg_data_home).filter(|d| d.is_absolute()) {
            return Some(dir.join(APP_DIR));
        }
        set(home).map(|h| h.join(".local").join("share").join(APP_DIR))
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<home>/known_servers`.
    pub fn known_servers_path(&self) -> PathBuf {
        self.root.join(KNOWN_SERVERS)
    }

    /// Creates the home (mode 0700) if it does not exist.
    pub fn create(&self) -> Result<(), HomeError> {
        make_private_dir(&self.root)
    }

    /// The directory of `user` (`<home>/users/<name>`), created with mode 0700 if missing.
    pub fn user(&self, user: &UserName) -> Result<UserHome, HomeError> {
        let dir = self.root.join("users").join(user.as_str());
        make_private_dir(&dir)?;
        Ok(UserHome {
            dir,
            user: user.clone(),
        })
    }

    /// The pinned key of the server `label` (`HOST:PORT` as the user gave it), if any.
    pub fn known_server(&self, label: &str) -> Result<Option<Fingerprint>, HomeError> {
        let path = self.known_servers_path();
        let text = read_optional(&path)?.unwrap_or_default();
        find_known_server(&path, &text, label)
    }

    /// Pins `key` for the server `label` unless a key is pinned for it already; returns the
    /// key pinned in the end (the one given, or the one another process pinned first).
    pub fn pin_server(&self, label: &str, key: Fingerprint) -> Result<Fingerprint, HomeError> {
        self.create()?;
        let path = self.known_servers_path();
        rewrite_locked(&path, |old| {
            let text = old.unwrap_or_default();
            if let Some(pinned) = find_known_server(&path, &text, label)? {
                return Ok((None, pinned));
            }
            let mut text = text;
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&format!("{label} {key}\n"));
            Ok((Some(text), key))
        })
    }
}

/// Finds `label` in the text of a `known_servers` file. Blank lines and `#` comments are
/// skipped; a malformed line is an error (better than silently trusting anything).
fn find_known_server(
    path: &Path,
    text: &str,
    label: &str,
) -> Result<Option<Fingerprint>, HomeError> {
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let corrupt = |problem: &str| HomeError::Corrupt {
            path: path.to_owned(),
            line: i + 1,
            problem: problem.to_owned(),
        };
        let mut fields = line.split_whitespace();
        let (Some(server), Some(key), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(corrupt("expected HOST:PORT SHA256:..."));
        };
        if server.eq_ignore_ascii_case(label) {
            let key = key
                .parse()
                .map_err(|_| corrupt("the key is not SHA256:<base64>"))?;
            return Ok(Some(key));
        }
    }
    Ok(None)
}

/// One user's directory in the home: its identity key and its contacts' pinned keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserHome {
    dir: PathBuf,
    user: UserName,
}

impl UserHome {
    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whose it is.
    pub fn user(&self) -> &UserName {
        &self.user
    }

    /// The device identity key, made (from the operating system's CSPRNG) and stored with
    /// mode 0600 on first use.
    pub fn identity(&self) -> Result<Identity, HomeError> {
        let path = self.dir.join(IDENTITY_KEY);
        // The file's text is the secret key in base64: wiped once parsed.
        if let Some(text) = read_optional(&path)?.map(Zeroizing::new) {
            tighten(&path, 0o600)?;
            return Identity::parse(&path, &text);
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(secret.as_mut());
        let text = Zeroizing::new(format!("{}\n", STANDARD.encode(secret.as_ref())));
        let tmp = temp_name(&path);
        write_new(&tmp, text.as_bytes(), 0o600)?;
        // A hard link creates the name only if it does not exist: of two processes making
        // the key at once, one wins and the other reads the winner's key.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Identity::from_secret(&path, *secret),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let text = Zeroizing::new(read_optional(&path)?.unwrap_or_default());
                Identity::parse(&path, &text)
            }
            Err(e) => Err(io_error("create", &path)(e)),
        }
    }

    /// `<dir>/contacts.pins`.
    pub fn pins_path(&self) -> PathBuf {
        self.dir.join(CONTACT_PINS)
    }

    /// The contacts' pinned keys (empty if none yet).
    pub fn pins(&self) -> Result<ContactPins, HomeError> {
        let path = self.pins_path();
        let text = read_optional(&path)?.unwrap_or_default();
        ContactPins::parse(&path, &text)
    }

    /// Reads the pins, lets `change` edit them, and writes them back if they changed, all
    /// under the pins' lock.
    pub fn update_pins<T>(
        &self,
        change: impl FnOnce(&mut ContactPins) -> T,
    ) -> Result<T, HomeError> {
        let path = self.pins_path();
        rewrite_locked(&path, |old| {
            let mut pins = ContactPins::parse(&path, old.as_deref().unwrap_or(""))?;
            let before = pins.clone();
            let result = change(&mut pins);
            let text = (pins != before).then(|| pins.to_text());
            Ok((text, result))
        })
    }
}

/// A device identity key pair (X25519, the Noise static key of every chat).
pub struct Identity {
    keys: StaticKeypair,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Identity {
    fn parse(path: &Path, text: &str) -> Result<Identity, HomeError> {
        let secret = STANDARD
            .decode(text.trim())
            .ok()
            .map(Zeroizing::new)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).ok())
            .map(Zeroizing::new)
            .ok_or_else(|| HomeError::Corrupt {
                path: path.to_owned(),
                line: 1,
                problem: "not the base64 of a 32-byte key".into(),
            })?;
        Identity::from_secret(path, *secret)
    }

    fn from_secret(path: &Path, secret: [u8; 32]) -> Result<Identity, HomeError> {
        let keys = StaticKeypair::from_random_bytes(secret).map_err(|e| HomeError::Corrupt {
            path: path.to_owned(),
            line: 0,
            problem: e.to_string(),
        })?;
        Ok(Identity { keys })
    }

    /// The public key (what `DEV` registers and offers carry).
    pub fn public(&self) -> [u8; 32] {
        self.keys.public.0
    }

    /// The public key's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_identity_key(&self.keys.public.0)
    }

    /// The key pair for a Noise session.
    pub fn keypair(&self) -> StaticKeypair {
        self.keys.clone()
    }
}

/// A contact's pinned identity key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The X25519 public key.
    pub key: [u8; 32],
    /// Whether the user compared safety numbers and said so (`contacts verify`).
    pub verified: bool,
}

/// What a key is, compared to the pinned one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyCheck {
    /// Nothing is pinned for the contact.
    New,
    /// The pinned key.
    Same,
    /// Another key than the pinned one.
    Changed {
        /// The pinned key.
        old: [u8; 32],
        /// Whether the pinned key was verified.
        was_verified: bool,
    },
}

/// The contacts' pinned keys of one user (`contacts.pins`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactPins {
    pins: BTreeMap<UserName, Pin>,
}

impl ContactPins {
    /// Parses the file's text: `NAME <b64 key> verified|unverified` per line.
    pub fn parse(path: &Path, text: &str) -> Result<ContactPins, HomeError> {
        let mut pins = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let corrupt = || HomeError::Corrupt {
                path: path.to_owned(),
                line: i + 1,
                problem: "expected NAME <base64 key> verified|unverified".into(),
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, key, state] = fields[..] else {
                return Err(corrupt());
            };
            let name = UserName::parse(name).map_err(|_| corrupt())?;
            let key = STANDARD
                .decode(key)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or_else(corrupt)?;
            let verified = match state {
                "verified" => true,
                "unverified" => false,
                _ => return Err(corrupt()),
            };
            pins.insert(name, Pin { key, verified });
        }
        Ok(ContactPins { pins })
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        self.pins
            .iter()
            .map(|(name, pin)| {
                let state = if pin.verified {
                    "verified"
                } else {
                    "unverified"
                };
                format!("{name} {} {state}\n", STANDARD.encode(pin.key))
            })
            .collect()
    }

    /// The pin of `name`.
    pub fn get(&self, name: &UserName) -> Option<Pin> {
        self.pins.get(name).copied()
    }

    /// How `key` compares with the pin of `name`.
    pub fn check(&self, name: &UserName, key: &[u8; 32]) -> KeyCheck {
        match self.pins.get(name) {
            None => KeyCheck::New,
            Some(pin) if pin.key == *key => KeyCheck::Same,
            Some(pin) => KeyCheck::Changed {
                old: pin.key,
                was_verified: pin.verified,
            },
        }
    }

    /// Pins `key` for `name`: a new or different key is pinned unverified; the pinned key
    /// keeps its mark. Returns what `key` was before.
    pub fn pin(&mut self, name: &UserName, key: [u8; 32]) -> KeyCheck {
        let check = self.check(name, &key);
        if check != KeyCheck::Same {
            self.pins.insert(
                name.clone(),
                Pin {
                    key,
                    verified: false,
                },
            );
        }
        check
    }

    /// Marks the pinned key of `name` verified; `false` if nothing is pinned for it.
    pub fn verify(&mut self, name: &UserName) -> bool {
        match self.pins.get_mut(name) {
            Some(pin) => {
                pin.verified = true;
                true
            }
            None => false,
        }
    }

    /// Every pin, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&UserName, &Pin)> {
        self.pins.iter()
    }
}

/// Makes `dir` (and missing parents) with mode 0700, and tightens it to 0700 if it existed.
fn make_private_dir(dir: &Path) -> Result<(), HomeError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error("create the directory", dir))?;
    tighten(dir, 0o700)
}

/// Removes group and other permissions from `path` if it has any.
fn tighten(path: &Path, mode: u32) -> Result<(), HomeError> {
    let meta = fs::metadata(path).map_err(io_error("read", path))?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(io_error("change the permissions of", path))?;
    }
    Ok(())
}

/// The file's text, `None` if it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, HomeError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", path)(e)),
    }
}

/// A name for a temporary file next to `path`, unique to this process and call.
fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(
        ".tmp.{}.{:016x}",
        std::process::id(),
        OsRng.next_u64()
    ));
    PathBuf::from(name)
}

/// Creates `path` (which must not exist) with `mode`, writes `data` and syncs it.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), HomeError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_error("create", path))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(io_error("write", path))
}

/// Holds an exclusive `flock` on `<path>.lock` while `change` turns the file's text (`None`:
/// no file) into new text (`None`: leave it as it is); new text goes to a temporary file
/// (mode 0600) renamed over `path`.
fn rewrite_locked<T>(
    path: &Path,
    change: impl FnOnce(Option<String>) -> Result<(Option<String>, T), HomeError>,
) -> Result<T, HomeError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_error("create", &lock_path))?;
    let _held = Flock::exclusive(&lock).map_err(io_error("lock", &lock_path))?;
    let (text, result) = change(read_optional(path)?)?;
    if let Some(text) = text {
        let tmp = temp_name(path);
        let written = write_new(&tmp, text.as_bytes(), 0o600)
            .and_then(|()| fs::rename(&tmp, path).map_err(io_error("replace", path)));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
    }
    Ok(result)
}

/// An exclusive advisory lock, released on drop.
struct Flock<'a>(&'a File);

impl<'a> Flock<'a> {
    fn exclusive(file: &'a File) -> io::Result<Flock<'a>> {
        loop {
            // SAFETY: flock takes a file descriptor that `file` keeps open for the call.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Flock(file));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        // SAFETY: as above; closing the file would release the lock too.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    static NEXT: AtomicU32 = AtomicU32::new(0);

    /// A fresh directory under the temp dir, removed on drop.
    struct TempHome(PathBuf);

    impl TempHome {
        fn new() -> TempHome {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "p2p-home-test-{}-{n}-{:x}",
                std::process::id(),
                OsRng.next_u32()
            ));
            TempHome(dir)
        }

        fn home(&self) -> Home {
            Home::at(&self.0)
        }
    }

    impl Drop for TempHome {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn name(n: &str) -> UserName {
        UserName::parse(n).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_home_comes_from_the_flag_then_p2p_home_then_xdg_then_home() {
        let os = |s: &str| Some(OsString::from(s));
        let flag = Path::new("/flag");
        assert_eq!(
            Home::pick(Some(flag), os("/p2p"), os("/xdg"), os("/home/u")),
            Some(PathBuf::from("/flag"))
        );
        assert_eq!(
            Home::pick(None, os("/p2p"), os("/xdg"), os("/home/u")),
            Some(PathBuf::from("/p2p"))
        );
        assert_eq!(
            Home::pick(None, os(""), os("/xdg"), os("/home/u")),
            Some(PathBuf::from("/xdg/p2p-toolkit"))
        );
        assert_eq!(
            Home::pick(None, None, os("relative"), os("/home/u")),
            Some(PathBuf::from("/home/u/.local/share/p2p-toolkit"))
        );
        assert_eq!(Home::pick(None, None, None, None), None);
    }

    #[test]
    fn the_identity_is_made_once_with_private_permissions() {
        let t = TempHome::new();
        let alice = t.home().user(&name("alice")).unwrap();
        assert_eq!(mode(alice.dir()), 0o700);
        let first = alice.identity().unwrap();
        let path = alice.dir().join(IDENTITY_KEY);
        assert_eq!(mode(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        let again = alice.identity().unwrap();
        assert_eq!(first.public(), again.public());
        assert_eq!(
            first.keypair().public.0,
            first.public(),
            "the key pair matches"
        );
        // Another user has another key; no temporary files are left behind.
        let bob = t.home().user(&name("bob")).unwrap().identity().unwrap();
        assert_ne!(bob.public(), first.public());
        let names: Vec<_> = fs::read_dir(alice.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [OsString::from(IDENTITY_KEY)]);
        // A damaged key file is an error, not a new identity.
        fs::write(&path, "not base64\n").unwrap();
        assert!(matches!(alice.identity(), Err(HomeError::Corrupt { .. })));
    }

    #[test]
    fn pins_round_trip_and_a_changed_key_loses_its_verified_mark() {
        let t = TempHome::new();
        let alice = t.home().user(&name("alice")).unwrap();
        let bob = name("bob");
        assert_eq!(alice.pins().unwrap(), ContactPins::default());
        assert_eq!(
            alice.update_pins(|p| p.pin(&bob, [1; 32])).unwrap(),
            KeyCheck::New
        );
        assert_eq!(mode(&alice.pins_path()), 0o600);
        assert!(alice.update_pins(|p| p.verify(&bob)).unwrap());
        assert!(!alice.update_pins(|p| p.verify(&name("carol"))).unwrap());
        let pins = alice.pins().unwrap();
        assert_eq!(
            pins.get(&bob),
            Some(Pin {
                key: [1; 32],
                verified: true
            })
        );
        assert_eq!(pins.check(&bob, &[1; 32]), KeyCheck::Same);
        let text = fs::read_to_string(alice.pins_path()).unwrap();
        assert_eq!(
            text,
            format!("bob {} verified\n", STANDARD.encode([1u8; 32]))
        );
        // The same key keeps the mark; another one is pinned unverified.
        assert_eq!(
            alice.update_pins(|p| p.pin(&bob, [1; 32])).unwrap(),
            KeyCheck::Same
        );
        assert!(alice.pins().unwrap().get(&bob).unwrap().verified);
        assert_eq!(
            alice.update_pins(|p| p.pin(&bob, [2; 32])).unwrap(),
            KeyCheck::Changed {
                old: [1; 32],
                was_verified: true
            }
        );
        assert_eq!(
            alice.pins().unwrap().get(&bob),
            Some(Pin {
                key: [2; 32],
                verified: false
            })
        );
        for bad in ["bob", "bob AAAA verified", "B@b x verified", "bob {} maybe"] {
            let line = bad.replace("{}", &STANDARD.encode([1u8; 32]));
            assert!(ContactPins::parse(Path::new("p"), &line).is_err(), "{line}");
        }
    }

    #[test]
    fn concurrent_pin_updates_are_not_lost() {
        let t = TempHome::new();
        let alice = t.home().user(&name("alice")).unwrap();
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let alice = alice.clone();
                std::thread::spawn(move || {
                    let who = name(&format!("peer{i}"));
                    alice.update_pins(|p| p.pin(&who, [i; 32])).unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(alice.pins().unwrap().iter().count(), 8);
    }

    #[test]
    fn known_servers_pin_once_and_keep_other_lines() {
        let t = TempHome::new();
        let home = t.home();
        let (k1, k2) = (Fingerprint([1; 32]), Fingerprint([2; 32]));
        assert_eq!(home.known_server("127.0.0.1:1863").unwrap(), None);
        assert_eq!(home.pin_server("127.0.0.1:1863", k1).unwrap(), k1);
        assert_eq!(mode(home.root()), 0o700);
        assert_eq!(mode(&home.known_servers_path()), 0o600);
        // A second pin for the same server keeps the first.
        assert_eq!(home.pin_server("127.0.0.1:1863", k2).unwrap(), k1);
        assert_eq!(home.pin_server("example.org:1863", k2).unwrap(), k2);
        assert_eq!(home.known_server("127.0.0.1:1863").unwrap(), Some(k1));
        assert_eq!(home.known_server("EXAMPLE.org:1863").unwrap(), Some(k2));
        assert_eq!(home.known_server("127.0.0.1:1864").unwrap(), None);
        let text = fs::read_to_string(home.known_servers_path()).unwrap();
        assert_eq!(
            text,
            format!("127.0.0.1:1863 {k1}\nexample.org:1863 {k2}\n")
        );
        fs::write(home.known_servers_path(), "# comment\n\nbroken\n").unwrap();
        assert!(matches!(
            home.known_server("x:1"),
            Err(HomeError::Corrupt { line: 3, .. })
        ));
    }
}
