//! `p2p-client contacts fingerprint NAME` and `contacts verify NAME`: safety numbers and the
//! verified mark of a contact's pinned identity key.

use std::process::ExitCode;

use anyhow::{Context, bail};
use p2p_client::home::{Home, Pin};
use p2p_client::stdout;
use serde_json::json;
use shared::identity::{Fingerprint, safety_number};
use shared::rendezvous::UserName;

use crate::account_cmd::{AccountArgs, login};

/// `contacts fingerprint NAME`: the safety number first, then both keys and the mark.
pub async fn fingerprint(
    account: &AccountArgs,
    home: &Home,
    user: &UserName,
    name: &UserName,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if name == user {
        bail!("{name} is you: give the name of a contact");
    }
    let me = home.user(user)?;
    let identity = me.identity()?;
    let pin = match me.pins()?.get(name) {
        Some(pin) => pin,
        None => first_sight(account, home, user, name).await?,
    };
    let number = safety_number(
        (user.as_str(), &identity.public()),
        (name.as_str(), &pin.key),
    );
    let theirs = Fingerprint::of_identity_key(&pin.key);
    if json {
        let value = json!({
            "peer": name.as_str(),
            "safety_number": number,
            "my_fingerprint": identity.fingerprint().to_string(),
            "peer_fingerprint": theirs.to_string(),
            "verified": pin.verified,
        });
        stdout::line(value)?;
        return Ok(ExitCode::SUCCESS);
    }
    let width = user.as_str().len().max(name.as_str().len()) + 1;
    let mark = if pin.verified {
        format!("{name} is verified")
    } else {
        format!(
            "{name} is not verified: compare the number above with the one {name} sees \
             (p2p-client contacts fingerprint {user}), then run p2p-client contacts verify {name}"
        )
    };
    stdout::lines([
        number,
        format!(
            "{:width$} {} (you)",
            format!("{user}:"),
            identity.fingerprint()
        ),
        format!("{:width$} {theirs}", format!("{name}:")),
        mark,
    ])?;
    Ok(ExitCode::SUCCESS)
}

/// Nothing pinned for `name`: asks the server for its device keys (`KEY`) and pins the most
/// recent one, unverified.
async fn first_sight(
    account: &AccountArgs,
    home: &Home,
    user: &UserName,
    name: &UserName,
) -> anyhow::Result<Pin> {
    let password = account.password(false)?;
    let client = login(account, home, user, &password).await?;
    let keys = client.device_keys(name).await;
    client.logout().await;
    let keys = keys.with_context(|| {
        format!("cannot get {name}'s identity key (it must be a mutual contact)")
    })?;
    let Some(&key) = keys.first() else {
        bail!("{name} has no identity key yet: {name} must log in once first");
    };
    let me = home.user(user)?;
    // Another process may have pinned a key meanwhile: that one stays.
    let pin = me.update_pins(|pins| {
        if pins.get(name).is_none() {
            pins.pin(name, key);
        }
        pins.get(name)
    })?;
    let pin = pin.context("the pin was not stored")?;
    if pin.key == key {
        stdout::note(format_args!(
            "p2p-client: pinned {name}'s identity key {} (first sight)",
            Fingerprint::of_identity_key(&key)
        ));
    }
    Ok(pin)
}

/// `contacts verify NAME`.
pub fn verify(home: &Home, user: &UserName, name: &UserName) -> anyhow::Result<ExitCode> {
    let me = home.user(user)?;
    let pin = me.update_pins(|pins| pins.verify(name).then(|| pins.get(name)).flatten())?;
    let Some(pin) = pin else {
        bail!(
            "no identity key is pinned for {name}: run p2p-client contacts fingerprint {name} \
             first"
        );
    };
    stdout::line(format_args!(
        "marked {name}'s identity key {} as verified",
        Fingerprint::of_identity_key(&pin.key)
    ))?;
    Ok(ExitCode::SUCCESS)
}
