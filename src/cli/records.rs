//! Supervisor actions on the station's records: `station board override`,
//! `station outbox list/retry` and `station audit verify/export`.

use anyhow::Context;

use super::{ConfigArgs, cli_actor};
use crate::ids::Guid;
use crate::store::Store;

pub async fn board_override(
    guid: &str,
    reason: &str,
    by: &str,
    args: &ConfigArgs,
) -> anyhow::Result<()> {
    let guid: Guid = guid.parse()?;
    if reason.trim().is_empty() || by.trim().is_empty() {
        anyhow::bail!("--reason and --by must say why and who");
    }
    let cfg = args.load()?;
    let store = Store::open(&cfg.database_path())?;
    // Whoever can run this on the station PC can write its database: the
    // command line counts as an admin (a revoked device needs one).
    store.grant_override(&guid, by, reason, true, time::OffsetDateTime::now_utc())?;
    println!("board {guid} may receive one more certificate; the next provisioning uses this up");
    Ok(())
}

pub fn outbox_list(state: Option<&str>, limit: u32, args: &ConfigArgs) -> anyhow::Result<()> {
    if let Some(s) = state
        && !["pending", "enrolled", "parked"].contains(&s)
    {
        anyhow::bail!("--state {s:?}: choose pending, enrolled or parked");
    }
    let cfg = args.load()?;
    let store = Store::open(&cfg.database_path())?;
    let c = store.outbox_counts()?;
    println!(
        "pending {}  enrolled {}  parked {}{}",
        c.pending,
        c.enrolled,
        c.parked,
        c.oldest_pending
            .map(|t| format!("  (oldest pending since {t})"))
            .unwrap_or_default()
    );
    let mut jobs = Vec::new();
    match state {
        Some(s) => jobs.extend(store.outbox_jobs(Some(s), limit)?),
        None => {
            jobs.extend(store.outbox_jobs(Some("parked"), limit)?);
            jobs.extend(store.outbox_jobs(Some("pending"), limit)?);
        }
    }
    for j in jobs {
        println!(
            "{:<8} {}  attempts {}  queued {}{}",
            j.state,
            j.guid,
            j.attempts,
            j.created_at,
            j.last_error
                .map(|e| format!("\n         {e}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub fn outbox_retry(guid: Option<&str>, args: &ConfigArgs) -> anyhow::Result<()> {
    let guid = guid
        .map(str::parse::<Guid>)
        .transpose()?
        .map(|g| g.to_string());
    let cfg = args.load()?;
    let store = Store::open(&cfg.database_path())?;
    let n = store.retry_parked(
        guid.as_deref(),
        &cli_actor(),
        time::OffsetDateTime::now_utc(),
    )?;
    println!(
        "{n} parked job(s) queued again; a running station resumes uploading within a few seconds"
    );
    Ok(())
}
/// `station audit verify`: true if the chain holds.
pub fn audit_verify(args: &ConfigArgs) -> anyhow::Result<bool> {
    let cfg = args.load()?;
    let store = Store::open(&cfg.database_path())?;
    Ok(match store.verify_audit()? {
        crate::store::AuditCheck::Intact { rows } => {
            println!("audit trail intact: {rows} rows");
            true
        }
        crate::store::AuditCheck::Broken { row, reason } => {
            println!("audit trail BROKEN at row {row}: {reason}");
            false
        }
    })
}

pub fn audit_export(out: Option<&std::path::Path>, args: &ConfigArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let cfg = args.load()?;
    let store = Store::open(&cfg.database_path())?;
    let mut text = String::new();
    for row in store.audit_rows()? {
        text.push_str(&serde_json::to_string(&row)?);
        text.push('\n');
    }
    match out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(())
}
