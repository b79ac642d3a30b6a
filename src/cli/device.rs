//! `station device activate|disable|enable|revoke|retire|show`: the device
//! lifecycle from the command line, with the same rules as the web
//! ([`crate::lifecycle`]). Who asks is an API token, whose role decides;
//! the running station's uploader carries the action out in DPS.

use anyhow::Context;

use super::{ConfigArgs, DeviceCommand, TokenArg};
use crate::ids::Guid;
use crate::lifecycle::Request;
use crate::store::{Role, Store};

fn open(
    config: &ConfigArgs,
    token: &TokenArg,
) -> anyhow::Result<(crate::config::Config, Store, String, Role)> {
    let cfg = config.load()?;
    let store = Store::open(&cfg.database_path())?;
    let Some((name, role)) = store.token_role(token.token.trim())? else {
        anyhow::bail!(
            "the token is not valid (unknown or revoked): make one with `station token create`"
        );
    };
    Ok((cfg, store, name, role))
}

/// Runs a `station device` command.
pub fn device(command: DeviceCommand) -> anyhow::Result<()> {
    let (guid, req, token, config) = match command {
        DeviceCommand::Show {
            guid,
            json,
            token,
            config,
        } => return show(&guid, json, &token, &config),
        DeviceCommand::Activate {
            guid,
            hub,
            tags,
            desired,
            reason,
            token,
            config,
        } => {
            let tags =
                crate::dps::lifecycle::parse_twin("tags", &tags).map_err(anyhow::Error::msg)?;
            let desired = crate::dps::lifecycle::parse_twin("desired properties", &desired)
                .map_err(anyhow::Error::msg)?;
            (
                guid,
                Request {
                    action: "activate".into(),
                    reason,
                    hub: Some(hub),
                    tags,
                    desired,
                    confirmed: false,
                },
                token,
                config,
            )
        }
        DeviceCommand::Disable {
            guid,
            reason,
            token,
            config,
        } => (guid, simple("disable", reason, false), token, config),
        DeviceCommand::Enable {
            guid,
            reason,
            token,
            config,
        } => (guid, simple("enable", reason, false), token, config),
        DeviceCommand::Revoke {
            guid,
            reason,
            yes,
            token,
            config,
        } => (guid, simple("revoke", reason, yes), token, config),
        DeviceCommand::Retire {
            guid,
            reason,
            yes,
            token,
            config,
        } => (guid, simple("retire", reason, yes), token, config),
    };
    let guid: Guid = guid.trim().parse()?;
    let (cfg, store, name, role) = open(&config, &token)?;
    let id = crate::lifecycle::request(
        &store,
        &cfg.dps.activation_hubs,
        &guid,
        &req,
        &name,
        role,
        time::OffsetDateTime::now_utc(),
    )?;
    println!(
        "queued: {} {guid} (action {id}); the station carries it out in DPS as soon as DPS can be reached: `station device show {guid}` tells",
        req.action
    );
    Ok(())
}

fn simple(action: &str, reason: String, confirmed: bool) -> Request {
    Request {
        action: action.into(),
        reason: Some(reason),
        confirmed,
        ..Request::default()
    }
}

fn show(guid: &str, json: bool, token: &TokenArg, config: &ConfigArgs) -> anyhow::Result<()> {
    let guid: Guid = guid.trim().parse()?;
    let (_, store, _, _) = open(config, token)?;
    let r = store.device_record(&guid)?;
    if !r.is_known() {
        anyhow::bail!("the station has no record of device {guid}: check the GUID on the label");
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&r).context("writing the record")?
        );
        return Ok(());
    }
    println!("device {guid}");
    if let Some(v) = &r.revocation {
        println!(
            "REVOKED     {} by {}: {} (certificate {})",
            v.revoked_at, v.revoked_by, v.reason, v.serial
        );
    }
    if let Some(v) = &r.retirement {
        println!(
            "RETIRED     {} by {}: {} (board record {})",
            v.retired_at, v.retired_by, v.reason, v.board_id
        );
    }
    match &r.location {
        Some(l) => println!("location    {}", l.summary().replace('\n', " ")),
        None => println!("location    not recorded"),
    }
    match &r.dps {
        Some(d) => println!(
            "DPS         {} (as seen {})",
            d.provisioning_status.as_deref().unwrap_or("unknown"),
            d.seen_at
        ),
        None => println!("DPS         not read since it was enrolled"),
    }
    for c in &r.certificates {
        println!(
            "certificate {} issued {} ({}), valid until {}",
            c.serial, c.issued_at, c.state, c.not_after
        );
    }
    for (b, _) in &r.boards {
        println!(
            "provisioned record {}: {} at slot {} of {}, {}{}",
            b.id,
            b.status,
            b.slot,
            b.station,
            b.started_at,
            b.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    for u in &r.uploads {
        println!(
            "upload      {} ({} tries), {}",
            u.state, u.attempts, u.updated_at
        );
    }
    for l in &r.labels {
        println!("label       {} by {}: {}", l.kind, l.requested_by, l.state);
    }
    for a in &r.actions {
        println!(
            "action      {} {} by {}{}: {}{}",
            a.created_at,
            a.action,
            a.actor,
            a.reason
                .as_deref()
                .map(|x| format!(" ({x})"))
                .unwrap_or_default(),
            a.state,
            a.last_error
                .as_deref()
                .map(|e| format!(", {e}"))
                .unwrap_or_default()
        );
    }
    for n in &r.notes {
        println!(
            "note        {} by {}: {}",
            n.at,
            n.author,
            n.text.replace('\n', " ")
        );
    }
    for a in &r.audit {
        println!("audit       {} {} {} {}", a.at, a.actor, a.action, a.detail);
    }
    Ok(())
}
