//! Tests of the renderings: snapshots of the page and the CSV, the CSV and
//! JSON read back, the SVG parsed, and hostile data escaped.

use super::*;
use crate::report::charts::{clip, continuous_hours, nice_axis};
use crate::report::{Hour, ReportQuery};

const LOT: &str = r#"Lot "7", Müller-Ω"#;

fn query(lot: Option<&str>) -> ReportQuery {
    ReportQuery {
        from: "2026-11-23T06:00:00.000Z".into(),
        to: "2026-11-23T14:00:00.000Z".into(),
        lot: lot.map(str::to_string),
        slot: None,
        title: "shift early on 2026-11-23".into(),
    }
}

/// A board record: `times` is `start-finish` (no finish while in
/// progress), `outcome` is `status/step[/error code]`; the GUID number
/// also makes the serial and fingerprint of a passed record.
fn unit(id: i64, guid: Option<u32>, slot: u16, times: &str, outcome: &str) -> Unit {
    let (started, finished) = times.split_once('-').unwrap();
    let mut outcome = outcome.split('/');
    let (status, step) = (outcome.next().unwrap(), outcome.next().unwrap());
    let code = outcome.next();
    let passed = status == "provisioned";
    Unit {
        board_id: id,
        station: "station-01".into(),
        slot,
        operator: Some(
            if slot.is_multiple_of(2) {
                "ana"
            } else {
                "bo, \"b\""
            }
            .into(),
        ),
        lot: Some(LOT.into()),
        guid: guid.map(|g| format!("0a1b2c3d-0000-4000-8000-{g:012x}")),
        started_at: format!("2026-11-23T{started}Z"),
        finished_at: (!finished.is_empty()).then(|| format!("2026-11-23T{finished}Z")),
        status: status.into(),
        step: step.into(),
        error_code: code.map(str::to_string),
        error: code.map(|c| format!("the board said {c}")),
        serial: guid.filter(|_| passed).map(|g| format!("5E{g:06X}")),
        fingerprint: guid
            .filter(|_| passed)
            .map(|g| format!("{g:02x}").repeat(32)),
        enrollment: None,
        label: None,
        location: None,
        notes: 0,
        settings: None,
        settings_note: None,
    }
}

/// In start order, as the store hands them over.
fn units() -> Vec<Unit> {
    let pass = "provisioned/finish";
    let mut a = unit(1, Some(1), 1, "06:00:00.000-06:00:42.500", pass);
    a.enrollment = Some("enrolled".into());
    a.label = Some("printed".into());
    a.location = Some(crate::registry::Location {
        site: Some("Plant 2".into()),
        building: None,
        room: Some(r#"R, "114""#.into()),
        text: Some("rack 4\nshelf 2".into()),
    });
    a.notes = 2;
    let b = unit(
        2,
        Some(2),
        2,
        "06:01:00.000-06:01:20.000",
        "failed/issue/ca_timeout",
    );
    // The same board again: a retry that passes.
    let mut c = unit(3, Some(2), 2, "06:05:00.000-06:05:51.250", pass);
    c.enrollment = Some("pending".into());
    c.label = Some("pending".into());
    let d = unit(
        4,
        Some(3),
        3,
        "07:10:00.000-07:10:33.000",
        "failed/readback/nv_mismatch",
    );
    let e = unit(
        5,
        Some(4),
        1,
        "07:20:00.000-07:20:09.000",
        "failed/issue/ca_timeout",
    );
    let mut f = unit(
        6,
        None,
        3,
        "09:02:00.000-09:02:05.000",
        "failed/hello/no_answer",
    );
    f.operator = None;
    let mut h = unit(8, Some(6), 1, "09:30:00.000-09:31:05.000", pass);
    h.enrollment = Some("parked".into());
    h.label = Some("cancelled".into());
    let mut g = unit(7, Some(5), 4, "09:40:00.000-", "in_progress/keygen");
    g.lot = None;
    vec![a, b, c, d, e, f, h, g]
}

/// Each unit's steps up to the one it reached, interleaved between
/// boards (step by step) as a store might hand them over.
fn steps(units: &[Unit]) -> Vec<StepRecord> {
    let mut out = Vec::new();
    for (i, name) in crate::report::STEPS.iter().enumerate() {
        for u in units {
            let reached = crate::report::STEPS
                .iter()
                .position(|s| *s == u.step)
                .unwrap();
            if i > reached {
                continue;
            }
            let last = i == reached;
            let (outcome, code) = match u.status.as_str() {
                "failed" if last => (Some("failed"), u.error_code.clone()),
                "in_progress" if last => (None, None),
                _ => (Some("ok"), None),
            };
            let ms = 100 * (i as i64 + 1) + u.board_id;
            out.push(StepRecord {
                board_id: u.board_id,
                step: name.to_string(),
                started_at: format!("{}+{i}", u.started_at),
                ended_at: outcome.map(|_| format!("{}+{i}e", u.started_at)),
                duration_ms: outcome.map(|_| ms),
                outcome: outcome.map(str::to_string),
                error_code: code,
                resends: Some(i64::from(u.slot == 2) * 3),
                damaged: Some(i64::from(u.slot == 2) * 5),
            });
        }
    }
    out
}

fn report_of(units: Vec<Unit>, lot: Option<&str>) -> Report {
    let steps = steps(&units);
    Report::build(
        "station-01",
        query(lot),
        "2026-11-23T14:00:05.000Z".into(),
        units,
        &steps,
    )
}

fn report() -> Report {
    report_of(units(), Some(LOT))
}

/// The `<svg …>…</svg>` fragments of a page.
fn svgs(page: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = page;
    while let Some(start) = rest.find("<svg") {
        let len = rest[start..].find("</svg>").unwrap() + "</svg>".len();
        out.push(&rest[start..start + len]);
        rest = &rest[start + len..];
    }
    out
}

#[test]
fn html_snapshot() {
    insta::assert_snapshot!("report_html", html(&report(), Styles::Embedded).unwrap());
}

#[test]
fn csv_snapshot() {
    insta::assert_snapshot!("devices_csv", csv(&units()));
}

#[test]
fn csv_reads_back_field_for_field() {
    let mut units = units();
    units[0].settings = Some(crate::core::settings::ProvisioningSettings {
        endpoint: "global.azure-devices-provisioning.net".into(),
        id_scope: "0ne00A1B2C3".into(),
        registration_id: units[0].guid.clone().unwrap(),
        attestation: "x509".into(),
    });
    units[1].settings_note = Some("no settings: old firmware".into());
    let text = csv(&units);
    assert!(text.ends_with("\r\n"));
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(reader.headers().unwrap(), CSV_COLUMNS.as_slice());
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), units.len());
    assert_eq!(&rows[0][16], "0ne00A1B2C3", "the settings are exported");
    assert_eq!(&rows[1][18], "no settings: old firmware");
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    for (row, u) in rows.iter().zip(&units) {
        let loc = |f: fn(&crate::registry::Location) -> &Option<String>| {
            u.location.as_ref().map(|l| opt(f(l))).unwrap_or_default()
        };
        let expected = [
            opt(&u.guid),
            opt(&u.serial),
            opt(&u.fingerprint),
            opt(&u.operator),
            u.slot.to_string(),
            opt(&u.lot),
            u.started_at.clone(),
            opt(&u.finished_at),
            u.status.clone(),
            u.step.clone(),
            opt(&u.error_code),
            loc(|l| &l.site),
            loc(|l| &l.building),
            loc(|l| &l.room),
            loc(|l| &l.text),
            u.notes.to_string(),
            opt(&u.settings.as_ref().map(|s| s.id_scope.clone())),
            opt(&u.settings.as_ref().map(|s| s.registration_id.clone())),
            opt(&u.settings_note),
        ];
        assert_eq!(row.iter().collect::<Vec<_>>(), expected);
    }
    assert_eq!(&rows[0][5], LOT);
    assert_eq!(&rows[0][13], r#"R, "114""#);
    assert_eq!(&rows[0][15], "2");
    assert_eq!(&rows[1][15], "0");
    assert_eq!(&rows[0][3], r#"bo, "b""#);
}

#[test]
fn jsonl_lines_carry_their_own_steps() {
    let units = units();
    let steps = steps(&units);
    let text = units_jsonl(&units, &steps);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), units.len());
    for (line, u) in lines.iter().zip(&units) {
        assert_eq!(line["station"], "station-01");
        assert_eq!(line["slot"], u.slot);
        assert_eq!(line["lot"].as_str(), u.lot.as_deref());
        assert_eq!(line["guid"].as_str(), u.guid.as_deref());
        assert_eq!(line["certificate_serial"].as_str(), u.serial.as_deref());
        assert_eq!(line["outcome"], u.status.as_str());
        assert_eq!(line["error_code"].as_str(), u.error_code.as_deref());
        assert_eq!(line["enrollment"].as_str(), u.enrollment.as_deref());
        let got: Vec<&str> = line["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["step"].as_str().unwrap())
            .collect();
        let reached = crate::report::STEPS
            .iter()
            .position(|s| *s == u.step)
            .unwrap();
        assert_eq!(got, crate::report::STEPS[..=reached]);
        for s in line["steps"].as_array().unwrap() {
            let started = s["started_at"].as_str().unwrap();
            assert!(
                started.starts_with(&u.started_at),
                "{started} is not {}'s",
                u.started_at
            );
        }
    }
    // The device's location as an object, its notes as a count.
    assert_eq!(
        lines[0]["location"],
        serde_json::json!({"site": "Plant 2", "building": null, "room": "R, \"114\"", "text": "rack 4\nshelf 2"})
    );
    assert_eq!(lines[0]["notes"], 2);
    assert!(lines[1]["location"].is_null());
    assert_eq!(lines[1]["notes"], 0);
    // The failed step carries the code; a running step has no outcome.
    let failed = &lines[1]["steps"][4];
    assert_eq!(failed["outcome"], "failed");
    assert_eq!(failed["error_code"], "ca_timeout");
    assert!(lines[7]["steps"][3]["outcome"].is_null());
    assert!(lines[0]["error"].is_null());
    assert_eq!(lines[1]["steps"][0]["duration_ms"], 102);
}

#[test]
fn json_is_the_whole_report() {
    let r = report();
    let v: serde_json::Value = serde_json::from_str(&json(&r)).unwrap();
    assert_eq!(v["attempted"], 8);
    assert_eq!(v["units"].as_array().unwrap().len(), 8);
    assert_eq!(v["query"]["lot"], LOT);
}

#[test]
fn charts_are_well_formed_svg() {
    let page = html(&report(), Styles::Embedded).unwrap();
    let charts = svgs(&page);
    assert_eq!(charts.len(), 3);
    assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
    for svg in charts {
        assert!(svg.contains("viewBox=") && svg.contains("<title"), "{svg}");
        resvg::usvg::roxmltree::Document::parse(svg).unwrap();
    }
}

#[test]
fn empty_range_says_so_instead_of_drawing() {
    let page = html(&report_of(Vec::new(), None), Styles::Embedded).unwrap();
    assert!(!page.contains("<svg"));
    for message in [
        "No failures in this range.",
        "No passed boards in this range.",
        "No boards finished in this range.",
        "No board records in this range.",
        "all lots",
    ] {
        assert!(page.contains(message), "{message}");
    }
    assert_eq!(csv(&[]), CSV_COLUMNS.join(",") + "\r\n");
    assert_eq!(units_jsonl(&[], &[]), "");
}

#[test]
fn data_is_escaped_in_page_and_charts() {
    let evil = r#"<script>alert("x")</script>"#;
    let mut units = units();
    units[1].lot = Some(evil.into());
    units[1].error_code = Some("<b>&'".into());
    let page = html(&report_of(units, Some(evil)), Styles::Linked).unwrap();
    assert!(!page.contains("<script"));
    assert!(!page.contains("<b>"));
    assert!(page.contains("&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62;"));
    // In the Pareto chart, drawn in `charts` rather than by the template.
    assert!(page.contains("issue: &lt;b&gt;&amp;&#39;"));
    for svg in svgs(&page) {
        resvg::usvg::roxmltree::Document::parse(svg).unwrap();
    }
}

#[test]
fn gaps_between_hours_are_drawn_as_empty_hours() {
    let hour = |h: &str, passed| Hour {
        hour: h.into(),
        passed,
        failed: 0,
    };
    let filled = continuous_hours(&[hour("2026-11-23T22", 1), hour("2026-11-24T01", 2)]);
    let names: Vec<&str> = filled.iter().map(|h| h.hour.as_str()).collect();
    assert_eq!(
        names,
        [
            "2026-11-23T22",
            "2026-11-23T23",
            "2026-11-24T00",
            "2026-11-24T01"
        ]
    );
    assert_eq!(filled.iter().map(|h| h.passed).sum::<u64>(), 3);
    let odd = [hour("late", 1)];
    assert_eq!(continuous_hours(&odd), odd);
}

#[test]
fn numbers_read_the_same_everywhere() {
    assert_eq!(seconds(42_500), "42.500");
    assert_eq!(seconds(7), "0.007");
    assert_eq!(seconds(-1_250), "-1.250");
    assert_eq!(percent(62.5), "62.5 %");
    assert_eq!(nice_axis(0), (1, 1));
    assert_eq!(nice_axis(7), (2, 8));
    assert_eq!(nice_axis(230), (50, 250));
    assert_eq!(clip("abcdef", 4), "abc…");
}

#[test]
fn a_served_report_links_its_styles_and_a_saved_one_embeds_them() {
    let served = html(&report(), Styles::Linked).unwrap();
    assert!(!served.contains("<style"), "no inline style under the CSP");
    assert!(served.contains(r#"<link rel="stylesheet" href="/static/report.css">"#));
    let saved = html(&report(), Styles::Embedded).unwrap();
    assert!(saved.contains("<style>") && saved.contains("@page { size: A4"));
    assert!(!saved.contains("<link rel=\"stylesheet\""));
}
