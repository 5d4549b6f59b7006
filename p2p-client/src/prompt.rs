//! Password input: a file's first line, an environment variable, or a prompt on the terminal
//! with echo turned off. The one function that touches the terminal is
//! [`read_hidden_line`]; swap it for `rpassword::prompt_password` if that dependency is ever
//! preferred.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, bail};
use zeroize::Zeroizing;

/// Where a secret comes from, in order: `--*-password-file`, then the environment variable,
/// then a prompt when stdin is a terminal.
pub struct SecretSource<'a> {
    /// The `--password-file`-style flag, if given.
    pub file: Option<&'a Path>,
    /// The flag's name, for messages.
    pub flag: &'a str,
    /// The environment variable.
    pub env: &'a str,
    /// The prompt (without trailing space).
    pub prompt: &'a str,
    /// Prompt twice and require the same answer (new passwords).
    pub confirm: bool,
}

impl SecretSource<'_> {
    /// Reads the secret, or says how to provide one.
    pub fn read(&self) -> anyhow::Result<Zeroizing<String>> {
        if let Some(path) = self.file {
            let text = Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            );
            let first = text.lines().next().unwrap_or("");
            if first.is_empty() {
                bail!("{}: the first line is empty", path.display());
            }
            return Ok(Zeroizing::new(first.to_owned()));
        }
        match std::env::var(self.env) {
            Ok(value) if !value.is_empty() => return Ok(Zeroizing::new(value)),
            Ok(_) | Err(std::env::VarError::NotPresent) => {}
            Err(std::env::VarError::NotUnicode(_)) => bail!("{} is not valid UTF-8", self.env),
        }
        if !std::io::stdin().is_terminal() {
            bail!(
                "no password: use {} FILE or set {} (stdin is not a terminal, so there is no \
                 prompt)",
                self.flag,
                self.env
            );
        }
        let first = read_hidden_line(&format!("{}: ", self.prompt))?;
        if first.is_empty() {
            bail!("empty password");
        }
        if self.confirm && *read_hidden_line(&format!("{} again: ", self.prompt))? != *first {
            bail!("the passwords do not match");
        }
        Ok(first)
    }
}

/// The fewest characters a new password may have (checked by `register` and `passwd` before
/// anything is sent; the server only ever sees a verifier, so it cannot check).
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Refuses a new password shorter than [`MIN_PASSWORD_CHARS`] characters.
pub fn check_new_password(password: &str) -> anyhow::Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        bail!(
            "the password is too short: a new password needs at least {MIN_PASSWORD_CHARS} characters"
        );
    }
    Ok(())
}

/// Prints `prompt` on stderr and reads one line from the terminal on stdin without echoing it.
/// If echo cannot be turned off (not a terminal), the line is read anyway.
pub fn read_hidden_line(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    let mut stderr = std::io::stderr();
    write!(stderr, "{prompt}")?;
    stderr.flush()?;
    let echo = EchoOff::new();
    let mut line = Zeroizing::new(String::new());
    let read = std::io::stdin().lock().read_line(&mut line);
    drop(echo);
    read.context("cannot read the password")?;
    if line.is_empty() {
        bail!("no password: end of input at the prompt");
    }
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

/// Turns terminal echo off on stdin while alive (the newline is still echoed).
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        let mut term = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: STDIN_FILENO is a valid descriptor number; `term` is a valid out-pointer that
        // tcgetattr fills completely when it returns 0.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, term.as_mut_ptr()) } != 0 {
            return EchoOff(None);
        }
        // SAFETY: initialised by the successful tcgetattr above.
        let original = unsafe { term.assume_init() };
        let mut quiet = original;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: valid descriptor and a valid termios.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) } != 0 {
            return EchoOff(None);
        }
        EchoOff(Some(original))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(original) = &self.0 {
            // SAFETY: valid descriptor and the termios tcgetattr gave us.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, original);
            }
        }
    }
}
