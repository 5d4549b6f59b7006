//! `stun-server user add|list`: the operator's account management, straight on the database
//! (safe while the server runs: SQLite WAL or PostgreSQL transactions, and the server polls for
//! new users).

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use anyhow::{Context, bail};
use p2p_servers::rendezvous::{Store, StoreLocation};
use rand::RngCore;
use shared::rendezvous::scram::derive_credentials;
use zeroize::Zeroizing;

use crate::cli::UserCommand;

/// The environment variable `user add` reads the password from.
const PASSWORD_ENV: &str = "P2P_PASSWORD";

/// Runs one `user` subcommand against the database at `db`.
pub fn run(command: &UserCommand, db: &StoreLocation) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            password_file,
            kdf,
        } => {
            let kdf = kdf.unwrap_or_default();
            // Open first: a bad --db should not cost the operator a password prompt.
            let mut store = Store::open_location(db)?;
            if store.has_user(name)? {
                bail!("user {name} already exists in {}", db);
            }
            let password = password(password_file.as_deref())?;
            let mut salt = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut salt);
            let credentials = derive_credentials(&password, &salt, kdf)
                .with_context(|| format!("cannot derive the verifier with {kdf}"))?;
            store.add_user(name, &credentials)?;
            println!(
                "added user {name} ({kdf}) to {}; a running server picks it up within 2 s",
                db
            );
            Ok(())
        }
        UserCommand::List => {
            let store = Store::open_location(db)?;
            let users = store.list_users()?;
            for user in &users {
                println!(
                    "{:<32} {:<28} {}",
                    user.name.as_str(),
                    user.kdf.to_string(),
                    utc(user.created)
                );
            }
            eprintln!("{} users in {}", users.len(), db);
            Ok(())
        }
    }
}

/// The password from the file, the environment or the terminal, in that order.
/// Every copy is wiped when dropped.
fn password(file: Option<&Path>) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let password = if let Some(path) = file {
        let bytes = Zeroizing::new(
            std::fs::read(path)
                .with_context(|| format!("cannot read password file {}", path.display()))?,
        );
        let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
        Zeroizing::new(first.strip_suffix(b"\r").unwrap_or(first).to_vec())
    } else if let Some(value) = std::env::var_os(PASSWORD_ENV) {
        Zeroizing::new(value.into_vec())
    } else if std::io::stdin().is_terminal() {
        let first = prompt_hidden("Password: ")?;
        let again = prompt_hidden("Repeat password: ")?;
        if *first != *again {
            bail!("the passwords differ");
        }
        Zeroizing::new(first.as_bytes().to_vec())
    } else {
        bail!("no password: give --password-file FILE, set {PASSWORD_ENV}, or run on a terminal");
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

/// Reads a line from the terminal on stdin with echo turned off.
fn prompt_hidden(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    let mut stderr = std::io::stderr();
    write!(stderr, "{prompt}")?;
    stderr.flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; all-zero is a valid value to be overwritten by tcgetattr.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes only the struct we pass.
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot read terminal settings");
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    // SAFETY: tcsetattr reads only the struct we pass.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot turn terminal echo off");
    }
    let mut line = Zeroizing::new(String::new());
    let read = std::io::stdin().lock().read_line(&mut line);
    // SAFETY: as above; restores what tcgetattr gave us.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    read.context("cannot read the password")?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the Unix epoch.
fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::rendezvous::Kdf;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn the_default_kdf_is_owasps() {
        assert_eq!(Kdf::default().to_string(), "argon2id:m=19456:t=2:p=1");
    }
}
