//! What the line view shows above the tiles: the status strip (printer,
//! DPS uploads, the factory CA's expiry, jigs, the plant database), each
//! item in words with a link to where it is fixed, and the shift's
//! figures. Built from what the handlers gathered; no I/O here.

use time::OffsetDateTime;

use crate::dps::OutboxStatus;
use crate::store::{LineTally, OutboxCounts};
use crate::workflow::SlotView;

/// The CA's expiry is a problem this many days ahead.
const CA_WARN_DAYS: i64 = 30;

/// One item of the status strip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripItem {
    /// False: it needs attention (drawn with ⚠, in red, dashed).
    pub ok: bool,
    pub text: String,
    /// Where it is seen in full or fixed.
    pub href: String,
}

impl StripItem {
    pub(super) fn new(ok: bool, text: String, href: &str) -> StripItem {
        StripItem {
            ok,
            text,
            href: href.to_string(),
        }
    }
}

/// The printer's item.
pub fn printer(state: &str, message: Option<&str>, pending: i64) -> StripItem {
    let waiting = match pending {
        0 => "no labels waiting".to_string(),
        1 => "1 label waiting: it prints once the printer is ready; keep the boards together"
            .to_string(),
        n => format!(
            "{n} labels waiting: they print once the printer is ready; keep the boards together"
        ),
    };
    if state == "problem" {
        StripItem::new(
            false,
            format!("Printer problem: {} · {waiting}", message.unwrap_or("")),
            "/supervisor#labels",
        )
    } else {
        // Labels waiting on a printer that is not in trouble print soon.
        StripItem::new(
            true,
            format!("Printer {state} · {waiting}"),
            "/supervisor#labels",
        )
    }
}

/// DPS uploads: any connectivity the uploader reports is shown, with its
/// last error, the queue and its oldest job; `None` without `[dps]`.
pub fn dps(o: &OutboxStatus, counts: &OutboxCounts, now: OffsetDateTime) -> Option<StripItem> {
    if !o.configured {
        return None;
    }
    let mut queue = match counts.pending {
        0 => "nothing queued".to_string(),
        n => format!("{n} queued"),
    };
    if let Some(t) = &counts.oldest_pending {
        queue.push_str(&format!(", oldest from {}", clock(t, now)));
    }
    if counts.parked > 0 {
        queue.push_str(&format!(", {} parked for a supervisor", counts.parked));
    }
    let (ok, head) = if let Some(p) = &o.paused {
        (
            false,
            format!("DPS uploads paused since {}: {p}", clock(&o.since, now)),
        )
    } else {
        match (o.connectivity, &o.last_error) {
            ("online", _) => (counts.parked == 0, "DPS online".to_string()),
            ("unknown", None) => (true, "DPS not called yet".to_string()),
            (state, Some(e)) => (
                false,
                format!(
                    "DPS {} since {}: {e}",
                    state.replace('_', " "),
                    clock(&o.since, now)
                ),
            ),
            (state, None) => (
                false,
                format!(
                    "DPS {} since {}",
                    state.replace('_', " "),
                    clock(&o.since, now)
                ),
            ),
        }
    };
    let next = match (&o.next_try, ok) {
        (Some(t), false) => format!(" · next try {}", clock(t, now)),
        _ => String::new(),
    };
    Some(StripItem::new(
        ok,
        format!("{head} · {queue}{next}"),
        "/supervisor#dps",
    ))
}

/// A store time as people read it on the strip: "10:34:30 UTC", with the
/// date only when it is not `now`'s.
fn clock(t: &str, now: OffsetDateTime) -> String {
    use time::format_description::well_known::Rfc3339;
    let Ok(at) = OffsetDateTime::parse(t, &Rfc3339) else {
        return t.to_string();
    };
    let (h, m, s) = at.time().as_hms();
    if at.date() == now.date() {
        format!("{h:02}:{m:02}:{s:02} UTC")
    } else {
        format!("{} {h:02}:{m:02}:{s:02} UTC", at.date())
    }
}

/// The factory CA: when it stops issuing.
pub fn ca(not_after: Option<OffsetDateTime>, now: OffsetDateTime) -> Option<StripItem> {
    let end = not_after?;
    let days = (end - now).whole_days();
    let date = end.date();
    Some(if days < 0 {
        StripItem::new(
            false,
            format!("Factory CA expired on {date}: no board can be provisioned; install a new CA"),
            "/supervisor#ca",
        )
    } else if days < CA_WARN_DAYS {
        StripItem::new(
            false,
            format!("Factory CA expires on {date}, in {days} days: ask for its renewal now"),
            "/supervisor#ca",
        )
    } else {
        StripItem::new(true, format!("CA valid until {date}"), "/supervisor#ca")
    })
}

/// One item per jig that is not connected.
pub fn jigs(slots: &[SlotView]) -> Vec<StripItem> {
    slots
        .iter()
        .filter(|v| v.link == "disconnected")
        .map(|v| {
            StripItem::new(
                false,
                format!(
                    "Jig of slot {} disconnected: {}",
                    v.slot,
                    v.link_error.as_deref().unwrap_or("no answer")
                ),
                &format!("#slot-{}", v.slot),
            )
        })
        .collect()
}

/// The plant database's item: whether records reach it, and how far
/// behind it is.
pub fn plant(p: &crate::plant::PlantStatus) -> StripItem {
    let ok = p.connected && !p.lag_warning;
    let text = if p.connected {
        let mut t = "Plant database: connected".to_string();
        if p.lag_records > 0 {
            t.push_str(&format!(
                " · {} change{} to send, oldest {:.0} s",
                p.lag_records,
                if p.lag_records == 1 { "" } else { "s" },
                p.lag_seconds
            ));
        }
        t
    } else {
        format!(
            "Plant database not reached since {}: the line goes on and records are sent when it is back ({} change{} waiting). {}",
            p.since,
            p.lag_records,
            if p.lag_records == 1 { "" } else { "s" },
            p.last_error.as_deref().unwrap_or("")
        )
    };
    StripItem::new(ok, text, "/supervisor#plant")
}

/// The shift's figures as the line view shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShiftFigures {
    /// What the figures cover ("shift early since 06:00").
    pub title: String,
    pub passed: u64,
    pub failed: u64,
    /// First-pass yield, "97 %", or "–" before the first board.
    pub yield_text: String,
    /// Passes per hour over the shift so far.
    pub per_hour: u64,
    pub last_hour: u64,
}

impl ShiftFigures {
    pub fn of(t: &LineTally, title: String, from: OffsetDateTime, now: OffsetDateTime) -> Self {
        // At least a minute, so the first board is not thousands an hour.
        let hours = ((now - from).whole_seconds().max(60) as f64) / 3600.0;
        ShiftFigures {
            title,
            passed: t.passed,
            failed: t.failed,
            yield_text: (t.first_pass * 100)
                .checked_div(t.units)
                .map_or_else(|| "–".into(), |y| format!("{y} %")),
            per_hour: (t.passed as f64 / hours).round() as u64,
            last_hour: t.last_hour,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-04 10:00 UTC);

    fn outbox(connectivity: &'static str, error: Option<&str>) -> OutboxStatus {
        let mut o = OutboxStatus::new(Some("https://dps.example".into()))
            .lock()
            .unwrap()
            .clone();
        o.connectivity = connectivity;
        o.since = "2026-12-04T09:58:00.000Z".into();
        o.last_error = error.map(str::to_string);
        o
    }

    #[test]
    fn dps_says_any_state_with_its_reason_and_queue() {
        let counts = OutboxCounts {
            pending: 3,
            enrolled: 7,
            parked: 0,
            oldest_pending: Some("2026-12-04T09:57:00.000Z".into()),
        };
        let off = dps(&outbox("offline", Some("connection refused")), &counts, NOW).unwrap();
        assert!(!off.ok);
        assert_eq!(
            off.text,
            "DPS offline since 09:58:00 UTC: connection refused · 3 queued, oldest from 09:57:00 UTC"
        );
        let tomorrow = NOW + time::Duration::days(1);
        let off = dps(&outbox("offline", Some("x")), &counts, tomorrow).unwrap();
        assert!(
            off.text
                .starts_with("DPS offline since 2026-12-04 09:58:00 UTC"),
            "{}",
            off.text
        );
        assert_eq!(off.href, "/supervisor#dps");
        // A state this view has never heard of is still said.
        let tls = dps(
            &outbox("tls_error", Some("certificate expired")),
            &counts,
            NOW,
        )
        .unwrap();
        assert!(tls.text.starts_with("DPS tls error since"), "{}", tls.text);
        assert!(tls.text.contains("certificate expired"));
        let mut paused = outbox("online", None);
        paused.paused = Some("DPS refused the credentials: fix them, then retry".into());
        assert!(
            dps(&paused, &counts, NOW)
                .unwrap()
                .text
                .starts_with("DPS uploads paused since")
        );
        assert!(dps(&outbox("online", None), &counts, NOW).unwrap().ok);
        let mut none = outbox("online", None);
        none.configured = false;
        assert_eq!(dps(&none, &counts, NOW), None);
    }

    #[test]
    fn a_disconnected_jig_is_named_with_its_slot() {
        let mut down = crate::web::page::tests::view(7, "empty");
        down.link = "disconnected";
        down.link_error = Some("no such device".into());
        let items = jigs(&[crate::web::page::tests::view(1, "empty"), down]);
        assert_eq!(
            items,
            vec![StripItem {
                ok: false,
                text: "Jig of slot 7 disconnected: no such device".into(),
                href: "#slot-7".into(),
            }]
        );
    }

    #[test]
    fn the_ca_warns_a_month_ahead() {
        assert!(ca(Some(NOW + time::Duration::days(90)), NOW).unwrap().ok);
        let soon = ca(Some(NOW + time::Duration::days(10)), NOW).unwrap();
        assert!(
            !soon.ok && soon.text.contains("in 10 days"),
            "{}",
            soon.text
        );
        assert!(
            ca(Some(NOW - time::Duration::days(1)), NOW)
                .unwrap()
                .text
                .contains("expired")
        );
    }

    #[test]
    fn figures_per_hour_and_yield() {
        let t = LineTally {
            passed: 30,
            failed: 3,
            first_pass: 29,
            units: 31,
            last_hour: 12,
            slots: Default::default(),
        };
        let f = ShiftFigures::of(&t, "x".into(), NOW - time::Duration::hours(2), NOW);
        assert_eq!((f.per_hour, f.last_hour), (15, 12));
        assert_eq!(f.yield_text, "93 %");
        let none = ShiftFigures::of(&LineTally::default(), "x".into(), NOW, NOW);
        assert_eq!((none.yield_text.as_str(), none.per_hour), ("–", 0));
    }
}
