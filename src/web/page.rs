//! The line view: every slot at a glance, pushed to the browser as it
//! changes (server-sent events), with the operator's actions (sign in at a
//! slot, retry or start, abort) and the shift's work order. Also the
//! stylesheet and script, compiled into the binary.

use std::convert::Infallible;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::auth::Caller;
use super::strip::{self, ShiftFigures, StripItem};
use super::{ApiError, AppState, query};
use crate::ids::SlotId;
use crate::store::{BoardRow, Role, SlotTally};
use crate::workflow::{LabelScan, SlotCommand, SlotView};

/// The steps, in order, for the progress bar.
const STEPS: [&str; 10] = [
    "hello", "identify", "review", "keygen", "issue", "store", "readback", "prove", "settings",
    "finish",
];

/// A slot as the tile shows it.
pub struct Tile {
    slot: u16,
    simulated: bool,
    /// The state by colour and border: `idle` (waiting), `busy` (working),
    /// `pass`, `fail`, or `attn` (needs attention).
    class: &'static str,
    mark: &'static str,
    /// The state in one word, large.
    word: &'static str,
    label: String,
    progress: Option<(usize, usize, &'static str)>,
    guid: Option<String>,
    error: Option<String>,
    link_error: Option<String>,
    operator: Option<String>,
    can_retry: bool,
    retry_label: &'static str,
    can_abort: bool,
    /// A provisioned board: its label preview and a reprint button.
    has_label: bool,
    /// The scan-back field is shown for a provisioned board not yet
    /// checked (or checked wrong).
    ask_scan: bool,
    label_scan: Option<LabelScan>,
    /// The shift's passes and failures in this slot.
    passed: u64,
    failed: u64,
    /// Its latest results, oldest first: true passed.
    recent: Vec<bool>,
    /// Most of its latest results failed: the tile says so.
    keeps_failing: bool,
    /// The slot's jig line is noisy: what its figures say.
    noisy_line: Option<String>,
    /// The last board's result, while the slot waits for the next one.
    last: Option<LastLine>,
    /// A board is being worked on and nobody is signed in at the slot.
    ask_operator: bool,
}

/// The last board's result on a waiting tile.
struct LastLine {
    class: &'static str,
    mark: &'static str,
    word: &'static str,
    error: Option<String>,
    guid: Option<String>,
}

impl Tile {
    fn of(v: &SlotView, scan_back: bool, tally: Option<&SlotTally>) -> Tile {
        let (class, mark, word, label) = match v.state {
            "empty" => ("idle", "○", "WAITING", "for a board"),
            "testing" => ("busy", "…", "WORKING", "functional test running"),
            "provisioning" => ("busy", "⟳", "WORKING", "provisioning"),
            "provisioned" => ("pass", "✔", "PASS", "provisioned, remove the board"),
            "failed" => ("fail", "✖", "FAIL", "set the board aside"),
            "provisioned_untold" => (
                "attn",
                "⚠",
                "CHECK",
                "provisioned, but the jig was not told: press Retry",
            ),
            _ => (
                "attn",
                "⚠",
                "CHECK",
                "finished before the station started: remove the board",
            ),
        };
        // The last result stays until the next board; a jig that does not
        // answer needs attention first.
        let (class, mark, word, label) = if v.link == "disconnected" {
            ("attn", "⚠", "JIG DOWN", "the jig does not answer")
        } else {
            (class, mark, word, label)
        };
        let progress = v.step.and_then(|s| {
            STEPS
                .iter()
                .position(|x| *x == s)
                .map(|i| (i + 1, STEPS.len(), s))
        });
        let recent = tally.map(|t| t.recent.clone()).unwrap_or_default();
        let recent_failed = recent.iter().filter(|p| !**p).count();
        Tile {
            slot: v.slot,
            simulated: v.simulated,
            class,
            mark,
            word,
            label: label.to_string(),
            progress,
            guid: v.guid.clone(),
            error: v.error.as_deref().map(sentence),
            link_error: v.link_error.clone(),
            operator: v.operator.clone(),
            can_retry: matches!(v.state, "failed" | "done" | "provisioned_untold"),
            retry_label: match v.state {
                "failed" | "provisioned_untold" => "Retry",
                _ => "Start",
            },
            can_abort: v.state == "provisioning",
            has_label: v.state == "provisioned" && v.guid.is_some(),
            ask_scan: scan_back
                && v.state == "provisioned"
                && v.guid.is_some()
                && !v.label_scan.as_ref().is_some_and(|l| l.matched),
            label_scan: v.label_scan.clone(),
            passed: tally.map_or(0, |t| t.passed),
            failed: tally.map_or(0, |t| t.failed),
            keeps_failing: recent_failed >= 3 && recent_failed * 2 >= recent.len(),
            recent,
            last: v
                .last
                .as_ref()
                .filter(|_| v.state == "empty")
                .map(|l| {
                    let (class, mark, word) = if l.result == "failed" {
                        ("fail", "✖", "FAIL")
                    } else {
                        ("pass", "✔", "PASS")
                    };
                    LastLine {
                        class,
                        mark,
                        word,
                        error: l.error.as_deref().map(sentence),
                        guid: l.guid.clone(),
                    }
                }),
            ask_operator: v.operator.is_none() && matches!(v.state, "testing" | "provisioning"),
            noisy_line: v.line.noisy.then(|| {
                format!(
                    "Noisy jig line: {} damaged frames in the last hour, {:.1} resends per board. Check or replace the cable.",
                    v.line.damaged_last_hour,
                    v.line.resends_per_board()
                )
            }),
        }
    }
}

/// The message as a sentence: capital first letter.
pub(super) fn sentence(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Columns for `n` tiles on a landscape screen: tiles about 1.6 times as
/// wide as the screen's share makes them tall, so that 16 fit a 1024x600
/// panel and 64 a 1920x1080 one. The stylesheet knows `cols-1` to
/// `cols-12`; narrow screens use their own.
fn columns(n: usize) -> usize {
    let mut c = 1;
    while c * c * 10 < n * 16 {
        c += 1;
    }
    c.min(12).min(n.max(1))
}

#[derive(Template)]
#[template(path = "slots.html")]
pub struct Slots {
    pub tiles: Vec<Tile>,
    pub csrf: String,
    /// The status strip: what needs attention, in words.
    pub strip: Vec<StripItem>,
    pub shift: ShiftFigures,
    pub cols: usize,
    /// The recent boards, for the line view's drawer (the page copies
    /// them there as they come).
    pub boards: Vec<BoardRow>,
}

#[derive(Template)]
#[template(path = "line.html")]
pub struct Line {
    pub user: String,
    pub role: &'static str,
    pub csrf: String,
    pub station: String,
    pub line: String,
    pub work_order: String,
    pub slots_html: String,
    pub boards: Vec<BoardRow>,
    /// `[ui] sound_alerts`: the script sounds a FAIL or a slot that needs
    /// attention.
    pub sound: bool,
}

fn render(t: &impl Template) -> Result<String, ApiError> {
    t.render()
        .map_err(|e| ApiError::Internal(format!("a page could not be drawn: {e}")))
}

async fn slots_html(s: &AppState, csrf: &str) -> Result<String, ApiError> {
    let now = time::OffsetDateTime::now_utc();
    let shift = crate::report::range::shift_so_far(&s.reports.shifts, s.reports.utc_offset, now);
    let from = shift.from;
    let (pending, outbox, tally, boards) = query(&s.store, move |st| {
        Ok((
            st.pending_label_count()?,
            st.outbox_counts()?,
            st.line_tally(from, now)?,
            st.boards(RECENT)?,
        ))
    })
    .await?;
    let unavailable = |what: &str| ApiError::Internal(format!("the {what} state is unavailable"));
    let mut strip = vec![
        s.labels
            .printer
            .lock()
            .map(|p| strip::printer(p.state, p.message.as_deref(), pending))
            .map_err(|_| unavailable("printer"))?,
    ];
    let views = s.slots.all();
    let o = s.outbox.lock().map_err(|_| unavailable("outbox"))?.clone();
    strip.extend(strip::dps(&o, &outbox, now));
    strip.extend(strip::ca(s.ca_not_after, now));
    strip.extend(strip::jigs(&views));
    strip.extend(super::plant::snapshot(s).map(|p| strip::plant(&p)));
    // What needs attention first: if the strip runs out of room, what is
    // fine is what gives way.
    strip.sort_by_key(|i| i.ok);
    render(&Slots {
        cols: columns(views.len()),
        tiles: views
            .iter()
            .map(|v| Tile::of(v, s.labels.scan_back, tally.slots.get(&v.slot)))
            .collect(),
        csrf: csrf.to_string(),
        strip,
        shift: ShiftFigures::of(&tally, shift.title, from, now),
        boards,
    })
}

/// Board records in the line view's recent boards.
const RECENT: u32 = 50;

pub async fn stylesheet() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/station.css"),
    )
}

pub async fn script() -> impl IntoResponse {
    javascript(include_str!("../../static/line.js"))
}

/// A script of the station's own, as served.
fn javascript(body: &'static str) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        body,
    )
}

/// The sign-in page's script: a badge scanner's Enter moves to the PIN,
/// and the PIN pad types into it.
pub async fn login_script() -> impl IntoResponse {
    javascript(include_str!("../../static/login.js"))
}

/// The device page's script: asks before a revoke or retirement.
pub async fn device_script() -> impl IntoResponse {
    javascript(include_str!("../../static/device.js"))
}

/// The QA report page's stylesheet.
pub async fn report_stylesheet() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8")],
        crate::report::render::REPORT_CSS,
    )
}

/// The line view for people signed in; others are sent to sign in.
pub async fn index(
    State(s): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let Ok(caller) = caller else {
        return Ok(super::auth::to_login(&headers).into_response());
    };
    // The machine builder's staff work on devices, not on the line.
    if caller.role == Role::Activator {
        return Ok(Redirect::to("/devices").into_response());
    }
    caller.require(Role::Operator)?;
    let boards = query(&s.store, |st| st.boards(RECENT)).await?;
    let csrf = caller.csrf.clone().unwrap_or_default();
    let page = Line {
        user: caller.name.clone(),
        role: caller.role.as_str(),
        slots_html: slots_html(&s, &csrf).await?,
        csrf,
        station: s.station_id.to_string(),
        line: s.line.to_string(),
        work_order: s
            .work_order
            .read()
            .ok()
            .and_then(|w| w.clone())
            .unwrap_or_default(),
        boards,
        sound: s.sound_alerts,
    };
    Ok(Html(render(&page)?).into_response())
}

/// The slot tiles, the shift's figures, the status strip and the recent
/// boards, drawn, each time a slot changes or, looked at every second,
/// what they show changed (the uploader's, the plant's and the shift's
/// figures come from no slot); a beat when nothing did, so that the page
/// knows within seconds when the station is gone. A line view left open is
/// watched: its stream renews the session every 30 s, so a watching line
/// view is never signed out for idleness; the stream ends when the session
/// does (sign-out, a disabled user), and the page goes to sign-in.
pub async fn events(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let session = super::auth::cookie(&headers, super::auth::SESSION_COOKIE)
        .map(str::to_string)
        .ok_or(ApiError::Unauthorized)?;
    let (idle, c) = (s.session_idle, session.clone());
    let now = time::OffsetDateTime::now_utc();
    let found = query(&s.store, move |st| st.session_peek(&c, idle, now)).await?;
    let found = found.ok_or(ApiError::Unauthorized)?;
    // The slot tiles are the line's; an activator works on devices only.
    if found.user.role < Role::Operator {
        return Err(ApiError::Forbidden(
            "the line view is for operators and above".into(),
        ));
    }
    let csrf = found.csrf;
    let changes = s.slots.subscribe();
    let live = Live {
        changes,
        s,
        csrf,
        session,
        last: None,
        touched: std::time::Instant::now(),
    };
    let stream = futures_util::stream::unfold(live, |mut l| async move {
        if l.last.is_some() {
            if let Ok(Err(_)) = tokio::time::timeout(BEAT, l.changes.changed()).await {
                return None; // the station is stopping
            }
            // A line view left open is watched: it keeps its session, but
            // only while the session is still there.
            let touch = l.touched.elapsed() >= TOUCH_EVERY;
            let (idle, c) = (l.s.session_idle, l.session.clone());
            let now = time::OffsetDateTime::now_utc();
            let found = query(&l.s.store, move |st| {
                if touch {
                    st.session(&c, idle, now)
                } else {
                    st.session_peek(&c, idle, now)
                }
            })
            .await;
            if !matches!(found, Ok(Some(_))) {
                return None;
            }
            if touch {
                l.touched = std::time::Instant::now();
            }
        }
        let html = slots_html(&l.s, &l.csrf).await.unwrap_or_default();
        let event = if l.last.as_deref() == Some(html.as_str()) {
            // Nothing new: a beat, so the page knows the station is there.
            Event::default().event("beat").data("")
        } else {
            let e = Event::default().data(&html);
            l.last = Some(html);
            e
        };
        Some((Ok::<Event, Infallible>(event), l))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// How often the line view hears from the station at least: it shows
/// "connection lost" when it has heard nothing for 2.5 s.
const BEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// How often a watching line view's stream renews its session.
const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// One line view's live stream.
struct Live {
    changes: tokio::sync::watch::Receiver<u64>,
    s: AppState,
    csrf: String,
    session: String,
    last: Option<String>,
    touched: std::time::Instant,
}

#[derive(Deserialize)]
pub struct ActionForm {
    csrf: String,
    action: String,
    /// `yes` once the person confirmed an abort.
    confirm: Option<String>,
}

#[derive(Template)]
#[template(path = "confirm.html")]
struct Confirm {
    station: String,
    slot: u16,
    csrf: String,
}

/// Sign in at a slot, retry (or start), abort.
pub async fn slot_action(
    State(s): State<AppState>,
    caller: Caller,
    Path(slot): Path<u16>,
    Form(f): Form<ActionForm>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    caller.check_csrf(Some(&f.csrf))?;
    let sender = s
        .slot_commands
        .get(&slot)
        .ok_or_else(|| ApiError::NotFound(format!("there is no slot {slot}")))?;
    match f.action.as_str() {
        "claim" => {
            // On record first, then in effect.
            let (by, now) = (caller.name.clone(), time::OffsetDateTime::now_utc());
            query(&s.store, move |st| {
                st.audit(
                    &by,
                    "slot_signed_in",
                    Some(&slot.to_string()),
                    &serde_json::json!({}),
                    now,
                )
            })
            .await?;
            let name = caller.name.clone();
            s.slots.update(SlotId(slot), |v| v.operator = Some(name));
        }
        "abort" if caller.csrf.is_some() && f.confirm.as_deref() != Some("yes") => {
            // A person is asked again, on a page of its own, before a
            // board is stopped (a program with a token is not).
            let page = Confirm {
                station: s.station_id.to_string(),
                slot,
                csrf: f.csrf.clone(),
            };
            return Ok(Html(render(&page)?).into_response());
        }
        "retry" | "abort" => {
            let cmd = if f.action == "retry" {
                SlotCommand::Retry
            } else {
                SlotCommand::Abort
            };
            sender.try_send(cmd).map_err(|_| {
                ApiError::BadRequest(
                    "the slot is busy with earlier requests; try again in a moment".into(),
                )
            })?;
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "{other:?} is not claim, retry or abort"
            )));
        }
    }
    Ok(Redirect::to("/").into_response())
}

#[derive(Deserialize)]
pub struct WorkOrderForm {
    csrf: String,
    work_order: String,
}

/// The lot or work order scanned or typed at the start of a shift; stamped
/// on every board from now on, and kept across restarts.
pub async fn set_work_order(
    State(s): State<AppState>,
    caller: Caller,
    Form(f): Form<WorkOrderForm>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    caller.check_csrf(Some(&f.csrf))?;
    let wo = f.work_order.trim().to_string();
    if wo.chars().count() > 64 || wo.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "a work order is up to 64 printable characters".into(),
        ));
    }
    // Saved first ("" records a deliberate clearing, so that a restart does
    // not bring back the configured one), then in effect.
    let (by, now, saved) = (
        caller.name.clone(),
        time::OffsetDateTime::now_utc(),
        wo.clone(),
    );
    query(&s.store, move |st| {
        st.set_setting("work_order", Some(&saved), &by, now)
    })
    .await?;
    if let Ok(mut w) = s.work_order.write() {
        *w = (!wo.is_empty()).then_some(wo);
    }
    Ok(Redirect::to("/").into_response())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A connected slot in `state`, for tests.
    pub(in crate::web) fn view(slot: u16, state: &'static str) -> SlotView {
        SlotView {
            slot,
            device: format!("/dev/ttyUSB{slot}"),
            simulated: false,
            link: "connected",
            link_error: None,
            state,
            step: None,
            guid: None,
            certificate_serial: None,
            error_code: None,
            error: None,
            operator: None,
            label_scan: None,
            since: "2026-11-22T10:00:00.000Z".into(),
            line: Default::default(),
            last: None,
        }
    }

    /// Every state a tile can show, drawn with fixed data.
    fn tiles() -> Vec<Tile> {
        let mut busy = view(3, "provisioning");
        busy.step = Some("keygen");
        busy.guid = Some("0a1b2c3d-0000-4000-8000-0000000000aa".into());
        busy.operator = Some("ana".into());
        let mut pass = view(4, "provisioned");
        pass.guid = Some("0a1b2c3d-0000-4000-8000-0000000000bb".into());
        let mut fail = view(5, "failed");
        fail.guid = Some("0a1b2c3d-0000-4000-8000-0000000000cc".into());
        fail.error =
            Some("the board refused STORE: flash_write_failed (sector did not erase)".into());
        let mut wrong_label = view(8, "provisioned");
        wrong_label.guid = Some("0a1b2c3d-0000-4000-8000-0000000000dd".into());
        wrong_label.label_scan = Some(LabelScan {
            matched: false,
            scanned: "0a1b2c3d-0000-4000-8000-0000000000bb".into(),
        });
        let mut checked = view(9, "provisioned");
        checked.guid = Some("0a1b2c3d-0000-4000-8000-0000000000ee".into());
        checked.label_scan = Some(LabelScan {
            matched: true,
            scanned: "0a1b2c3d-0000-4000-8000-0000000000ee".into(),
        });
        let mut down = view(6, "empty");
        down.link = "disconnected";
        down.link_error = Some("the serial device /dev/ttyUSB6 failed: no such device".into());
        [
            view(1, "empty"),
            view(2, "testing"),
            busy,
            pass,
            fail,
            view(7, "done"),
            down,
            wrong_label,
            checked,
        ]
        .iter()
        .map(|v| {
            // Slot 5 keeps failing; slot 4 mostly passes.
            let tally = match v.slot {
                5 => Some(SlotTally {
                    passed: 2,
                    failed: 4,
                    recent: vec![true, false, true, false, false, false],
                }),
                4 => Some(SlotTally {
                    passed: 9,
                    failed: 1,
                    recent: vec![true, true, false, true],
                }),
                _ => None,
            };
            Tile::of(v, true, tally.as_ref())
        })
        .collect()
    }

    fn strip_items() -> Vec<StripItem> {
        vec![
            strip::printer(
                "problem",
                Some("printer 127.0.0.1:9100 is out of labels: load a new roll and close the head"),
                3,
            ),
            StripItem {
                ok: false,
                text: "DPS offline since 2026-12-04T06:00:00.000Z: connection refused · 4 queued".into(),
                href: "/supervisor".into(),
            },
            StripItem {
                ok: false,
                text: "Plant database not reached since 2026-12-04T06:00:00.000Z: the line goes on and records are sent when it is back (42 changes waiting).".into(),
                href: "/supervisor#plant".into(),
            },
        ]
    }

    fn figures() -> ShiftFigures {
        ShiftFigures {
            title: "shift early since 06:00".into(),
            passed: 120,
            failed: 4,
            yield_text: "97 %".into(),
            per_hour: 30,
            last_hour: 28,
        }
    }

    #[test]
    fn slot_tiles_snapshot() {
        let html = Slots {
            tiles: tiles(),
            csrf: "CSRF".into(),
            strip: strip_items(),
            shift: figures(),
            cols: columns(9),
            boards: Vec::new(),
        }
        .render()
        .unwrap();
        insta::assert_snapshot!("slot_tiles", html);
    }

    #[test]
    fn line_view_snapshot() {
        let slots_html = Slots {
            tiles: tiles().into_iter().take(2).collect(),
            csrf: "CSRF".into(),
            strip: vec![strip::printer("ready", None, 0)],
            shift: figures(),
            cols: columns(2),
            boards: Vec::new(),
        }
        .render()
        .unwrap();
        let page = Line {
            user: "ana".into(),
            role: "operator",
            csrf: "CSRF".into(),
            station: "station-01".into(),
            line: "line-1".into(),
            work_order: "WO-7".into(),
            slots_html,
            boards: vec![],
            sound: false,
        };
        insta::assert_snapshot!("line_view", page.render().unwrap());
    }

    #[test]
    fn the_page_tells_the_script_whether_to_sound() {
        let page = |sound| Line {
            user: "ana".into(),
            role: "operator",
            csrf: "CSRF".into(),
            station: "station-01".into(),
            line: "line-1".into(),
            work_order: String::new(),
            slots_html: String::new(),
            boards: vec![],
            sound,
        };
        assert!(page(true).render().unwrap().contains(r#"data-sound="on""#));
        assert!(
            page(false)
                .render()
                .unwrap()
                .contains(r#"data-sound="off""#)
        );
    }

    #[test]
    fn columns_fit_16_on_a_small_panel_and_64_on_a_large_one() {
        // 1024x600: 6 by 3; 1920x1080: 11 by 6 (tiles wider than tall).
        assert_eq!(columns(16), 6);
        assert_eq!(columns(64), 11);
        assert_eq!((columns(0), columns(1), columns(2)), (1, 1, 2));
        assert_eq!(columns(500), 12);
    }

    #[test]
    fn failures_read_as_sentences() {
        assert_eq!(sentence("the board refused"), "The board refused");
        assert_eq!(sentence(""), "");
    }
}
