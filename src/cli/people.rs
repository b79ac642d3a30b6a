//! `station user` and `station token`: the people and the bearer tokens
//! that may use the station. Secrets come from standard input, never the
//! command line, and are never printed (a new token once, on creation).

use anyhow::Context;

use super::{ConfigArgs, TokenCommand, UserCommand, cli_actor};
use crate::store::Store;

/// Reads one secret line from standard input (prompting on the terminal).
fn read_secret(what: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    if std::io::stdin().is_terminal() {
        eprint!("{what}: ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']).to_string();
    if line.is_empty() {
        anyhow::bail!("no {what} on standard input");
    }
    Ok(line)
}

fn store_of(args: &ConfigArgs) -> anyhow::Result<Store> {
    let cfg = args.load()?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    Ok(Store::open(&cfg.database_path())?)
}

pub fn user_command(cmd: &UserCommand) -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc();
    match cmd {
        UserCommand::Add {
            name,
            role,
            badge,
            pin,
            password,
            config,
        } => {
            let role: crate::store::Role = role.parse().map_err(anyhow::Error::msg)?;
            let pin = pin.then(|| read_secret("PIN")).transpose()?;
            let password = password.then(|| read_secret("password")).transpose()?;
            let new = crate::store::NewUser {
                name,
                role,
                badge: badge.as_deref(),
                pin: pin.as_deref(),
                password: password.as_deref(),
            };
            let u = store_of(config)?.add_user(&new, &cli_actor(), now)?;
            println!("added {} ({})", u.name, u.role.as_str());
        }
        UserCommand::List { config } => {
            for u in store_of(config)?.users()? {
                println!(
                    "{:<20} {:<10} badge {:<5} pin {:<5} password {:<5} {}",
                    u.name,
                    u.role.as_str(),
                    if u.badge.is_some() { "yes" } else { "no" },
                    if u.has_pin { "yes" } else { "no" },
                    if u.has_password { "yes" } else { "no" },
                    u.disabled_at
                        .map(|t| format!("disabled {t}"))
                        .unwrap_or_else(|| "enabled".into())
                );
            }
        }
        UserCommand::Disable { name, config } => {
            if !store_of(config)?.disable_user(name, &cli_actor(), now)? {
                anyhow::bail!("no enabled user named {name:?}");
            }
            println!("{name} can no longer sign in");
        }
        UserCommand::SetPin { name, config } => {
            let pin = read_secret("new PIN")?;
            if !store_of(config)?.set_pin(name, &pin, &cli_actor(), now)? {
                anyhow::bail!("no user named {name:?}");
            }
            println!("PIN changed for {name}");
        }
    }
    Ok(())
}

pub fn token_command(cmd: &TokenCommand) -> anyhow::Result<()> {
    let (role, name, config) = match cmd {
        TokenCommand::List { config } => {
            for t in store_of(config)?.tokens()? {
                let state = t
                    .revoked_at
                    .map(|r| format!("revoked {r}"))
                    .unwrap_or_else(|| "live".into());
                println!(
                    "{:<24} {:<10} created {}  {state}",
                    t.name,
                    t.role.as_str(),
                    t.created_at
                );
            }
            return Ok(());
        }
        TokenCommand::Revoke { name, config } => {
            let n = store_of(config)?.revoke_token(
                name,
                &cli_actor(),
                time::OffsetDateTime::now_utc(),
            )?;
            if n == 0 {
                anyhow::bail!("no live token named {name:?}");
            }
            println!("revoked {n} token(s) named {name}");
            return Ok(());
        }
        TokenCommand::Create { role, name, config } => (role, name, config),
    };
    let role: crate::store::Role = role.parse().map_err(anyhow::Error::msg)?;
    let token = store_of(config)?.create_token(
        name,
        role,
        &cli_actor(),
        time::OffsetDateTime::now_utc(),
    )?;
    eprintln!(
        "token {name:?} ({}): shown this once; the station keeps only its hash",
        role.as_str()
    );
    println!("{token}");
    Ok(())
}
