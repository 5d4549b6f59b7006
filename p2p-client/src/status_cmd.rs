//! `p2p-client status STATE`: go online in a state and watch the contacts' presence until the
//! input ends or Ctrl-C, then log out.
//!
//! A lost connection to the server (a restart, a network change) is not the end: `status`
//! says `p2p-client: server: reconnecting (why)` on stderr, logs in again with back-off
//! ([`p2p_client::rendezvous::Relogin`]), restores the state, says `p2p-client: server:
//! connected` and goes on printing changes.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use anyhow::{Context, bail};
use p2p_client::home::Home;
use p2p_client::rendezvous::{Backoff, CloseReason, Event, OutReason, Relogin, RendezvousClient};
use serde_json::json;
use shared::rendezvous::{Presence, UserName};
use tokio::sync::oneshot;

use crate::account_cmd::{AccountArgs, login};

/// Arguments of `status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub account: AccountArgs,
    /// The state to show: online, busy, idle, brb, away, lunch, phone, or invisible (online
    /// but shown offline to everyone).
    #[arg(value_name = "STATE", value_parser = parse_state)]
    pub state: Presence,
    /// Print one JSON object per line, {"name", "presence", "initial"}, instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_state(word: &str) -> Result<Presence, String> {
    match Presence::from_word(word) {
        Some(Presence::Offline) => Err(
            "offline is not a state to set: end the command to go offline, or use invisible".into(),
        ),
        Some(state) => Ok(state),
        None => Err(format!(
            "unknown state {word:?}: use online, busy, idle, brb, away, lunch, phone or \
             invisible"
        )),
    }
}

/// Runs the command.
pub async fn run(args: StatusArgs, home: &Home) -> anyhow::Result<ExitCode> {
    let user = args.account.user()?;
    let password = args.account.password(false)?;
    // End of input is watched on a plain thread: it blocks in read(2), and a detached thread
    // does not keep the process alive after main returns.
    let (eof_tx, eof) = oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 1024];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = eof_tx.send(());
    });
    let stop = async {
        tokio::select! {
            _ = eof => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };

    let client = login(&args.account, home, &user, &password).await?;
    let relogin = Relogin::new(
        &args.account.server,
        args.account.trust(home)?,
        args.account.client_config(),
        user.clone(),
        password.as_bytes(),
        home.user(&user)?.identity()?.public(),
        Some(args.state),
    );
    let mut client = client;
    let result = watch(&mut client, &args, &relogin, stop).await;
    client.logout().await;
    result.map(|()| ExitCode::SUCCESS)
}

/// Sets the state, prints the contacts and then every change until `stop` completes.
async fn watch(
    client: &mut RendezvousClient,
    args: &StatusArgs,
    relogin: &Relogin,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let user = relogin.user();
    tokio::pin!(stop);
    client
        .set_status(args.state)
        .await
        .with_context(|| format!("cannot set the status of {user}"))?;
    if std::io::stderr().is_terminal() {
        eprintln!(
            "{user} is {}; watching contacts until end of input (Ctrl-D) or Ctrl-C",
            args.state.word()
        );
    }
    // What has been printed per contact: only changes are printed after the first list.
    let mut shown: HashMap<UserName, Presence> = HashMap::new();
    let list = client.contacts().await.context("cannot list contacts")?;
    for entry in list.into_iter().filter(|e| e.contact) {
        print_presence(&entry.name, entry.presence, true, args.json);
        shown.insert(entry.name, entry.presence);
    }
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            event = client.next_event() => match event {
                Some(Event::Presence { name, presence, initial }) => {
                    if shown.insert(name.clone(), presence) != Some(presence) {
                        print_presence(&name, presence, initial, args.json);
                    }
                }
                // Another login with this process's session: nothing to reconnect for.
                Some(Event::LoggedOut(OutReason::OtherLogin)) => {
                    bail!("the server logged {user} out: {}", OutReason::OtherLogin);
                }
                Some(Event::Ring { from, .. }) => {
                    eprintln!("p2p-client: {from} invites you to a session (not answered here)");
                }
                Some(_) => {}
                None => {
                    let reason = client.close_reason().unwrap_or(CloseReason::ClosedByServer);
                    if let CloseReason::LoggedOut(OutReason::OtherLogin) = reason {
                        bail!("the server logged {user} out: {}", OutReason::OtherLogin);
                    }
                    eprintln!("p2p-client: server: reconnecting ({reason})");
                    let mut backoff = Backoff::default();
                    let again = tokio::select! {
                        () = &mut stop => return Ok(()),
                        again = relogin.reconnect_after(Some(&reason), &mut backoff) => again,
                    };
                    let (fresh, _) = again.with_context(|| format!("cannot log in again as {user}"))?;
                    *client = fresh;
                    eprintln!("p2p-client: server: connected");
                    let list = client.contacts().await.context("cannot list contacts")?;
                    // A new login: the whole list again, as initial presence.
                    for entry in list.into_iter().filter(|e| e.contact) {
                        print_presence(&entry.name, entry.presence, true, args.json);
                        shown.insert(entry.name, entry.presence);
                    }
                }
            },
        }
    }
}

fn print_presence(name: &UserName, presence: Presence, initial: bool, as_json: bool) {
    if as_json {
        let line = json!({"name": name.as_str(), "presence": presence.word(), "initial": initial});
        println!("{line}");
    } else {
        println!("{name}: {}", presence.word());
    }
}
