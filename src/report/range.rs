//! Report time ranges as people give them: dates, date-times, or a shift
//! (named in `station.toml`) on a date, in the plant's local time.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, Duration, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// A shift as `station.toml` defines it; one ending at or before its start
/// ends the next day (a night shift).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shift {
    pub name: String,
    pub start: Time,
    pub end: Time,
}

/// A resolved range: start (inclusive), end (exclusive), and its title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub title: String,
}

/// `HH:MM` in a shift definition.
pub fn parse_clock(s: &str) -> Result<Time, String> {
    Time::parse(s, format_description!("[hour]:[minute]"))
        .map_err(|_| format!("{s:?} is not a time like 06:00"))
}

pub fn parse_date(s: &str) -> Result<Date, String> {
    Date::parse(s, format_description!("[year]-[month]-[day]"))
        .map_err(|_| format!("{s:?} is not a date like 2026-11-23"))
}

/// A point in time: RFC 3339 (`2026-11-23T06:00:00Z`), a local date-time
/// (`2026-11-23T06:00` or `2026-11-23 06:00[:SS]`), or a date (midnight;
/// with `end`, the midnight after it, so that `--to 2026-11-23` takes in
/// the whole day).
pub fn parse_point(s: &str, offset: UtcOffset, end: bool) -> Result<OffsetDateTime, String> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let local = s.replacen(' ', "T", 1);
    for f in [
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        format_description!("[year]-[month]-[day]T[hour]:[minute]"),
    ] {
        if let Ok(t) = PrimitiveDateTime::parse(&local, f) {
            return Ok(t.assume_offset(offset));
        }
    }
    match parse_date(s) {
        Ok(d) => {
            let day = PrimitiveDateTime::new(d, Time::MIDNIGHT).assume_offset(offset);
            Ok(if end { day + Duration::days(1) } else { day })
        }
        Err(_) => Err(format!(
            "{s:?} is not a date (2026-11-23), a date-time (2026-11-23T06:00, local time) or an RFC 3339 time"
        )),
    }
}

/// What the command line or the page asked for.
#[derive(Debug, Clone, Default)]
pub struct Asked<'a> {
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub shift: Option<&'a str>,
    pub date: Option<&'a str>,
}

/// Turns what was asked into a range. A shift needs a date (default:
/// today, local); `--from`/`--to` alone default to the start of today and
/// now.
pub fn resolve(
    asked: &Asked<'_>,
    shifts: &[Shift],
    offset: UtcOffset,
    now: OffsetDateTime,
) -> Result<Range, String> {
    let today = now.to_offset(offset).date();
    if let Some(name) = asked.shift {
        if asked.from.is_some() || asked.to.is_some() {
            return Err("give either a shift (with a date) or a from/to range, not both".into());
        }
        let shift = shifts.iter().find(|s| s.name == name).ok_or_else(|| {
            let known: Vec<&str> = shifts.iter().map(|s| s.name.as_str()).collect();
            if known.is_empty() {
                format!("no shift {name:?}: station.toml defines no [[shift]]")
            } else {
                format!(
                    "no shift {name:?}: station.toml defines {}",
                    known.join(", ")
                )
            }
        })?;
        let date = match asked.date {
            Some(d) => parse_date(d)?,
            None => today,
        };
        let from = PrimitiveDateTime::new(date, shift.start).assume_offset(offset);
        let mut to = PrimitiveDateTime::new(date, shift.end).assume_offset(offset);
        if to <= from {
            to += Duration::days(1);
        }
        return Ok(Range {
            from,
            to,
            title: format!("shift {} on {date}", shift.name),
        });
    }
    if let Some(d) = asked.date {
        if asked.from.is_some() || asked.to.is_some() {
            return Err("give either a date or a from/to range, not both".into());
        }
        // A whole day: a date-time here would be an empty range.
        let day =
            PrimitiveDateTime::new(parse_date(d.trim())?, Time::MIDNIGHT).assume_offset(offset);
        let (from, to) = (day, day + Duration::days(1));
        return Ok(Range {
            from,
            to,
            title: d.trim().to_string(),
        });
    }
    let from = match asked.from {
        Some(f) => parse_point(f, offset, false)?,
        None => PrimitiveDateTime::new(today, Time::MIDNIGHT).assume_offset(offset),
    };
    let to = match asked.to {
        Some(t) => parse_point(t, offset, true)?,
        None => now,
    };
    if to <= from {
        return Err(format!("the range ends ({to}) before it starts ({from})"));
    }
    let title = match (asked.from, asked.to) {
        (Some(f), Some(t)) => format!("{} to {}", f.trim(), t.trim()),
        (Some(f), None) => format!("from {}", f.trim()),
        (None, Some(t)) => format!("today to {}", t.trim()),
        (None, None) => "today".into(),
    };
    Ok(Range { from, to, title })
}

/// Where the line's running figures start at `now`: the start of the
/// shift under way, with words for what they cover. Between shifts, the
/// end of the last one; with no `[[shift]]`, local midnight.
pub fn shift_so_far(shifts: &[Shift], offset: UtcOffset, now: OffsetDateTime) -> Range {
    let local = now.to_offset(offset);
    let today = local.date();
    let mut last_end: Option<(OffsetDateTime, &str)> = None;
    // A night shift that began yesterday may still be under way.
    for date in [today.previous_day().unwrap_or(today), today] {
        for s in shifts {
            let from = PrimitiveDateTime::new(date, s.start).assume_offset(offset);
            let mut to = PrimitiveDateTime::new(date, s.end).assume_offset(offset);
            if to <= from {
                to += Duration::days(1);
            }
            if from <= now && now < to {
                return Range {
                    from,
                    to: now,
                    title: format!("shift {} since {}", s.name, clock(s.start)),
                };
            }
            if to <= now && last_end.is_none_or(|(e, _)| to > e) {
                last_end = Some((to, &s.name));
            }
        }
    }
    match last_end {
        Some((from, name)) => Range {
            from,
            to: now,
            title: format!(
                "between shifts: since shift {name} ended at {}",
                clock(from.to_offset(offset).time())
            ),
        },
        None => Range {
            from: PrimitiveDateTime::new(today, Time::MIDNIGHT).assume_offset(offset),
            to: now,
            title: "since midnight (no shifts configured)".into(),
        },
    }
}

fn clock(t: Time) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{datetime, offset, time};

    fn shifts() -> Vec<Shift> {
        vec![
            Shift {
                name: "early".into(),
                start: time!(06:00),
                end: time!(14:00),
            },
            Shift {
                name: "night".into(),
                start: time!(22:00),
                end: time!(06:00),
            },
        ]
    }

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

    #[test]
    fn the_shift_under_way_or_midnight() {
        let o = offset!(+1);
        // 12:00 UTC is 13:00 local: the early shift.
        let r = shift_so_far(&shifts(), o, NOW);
        assert_eq!(r.from, datetime!(2026-11-23 06:00 +1));
        assert_eq!(r.title, "shift early since 06:00");
        // 02:00 local: the night shift that began yesterday.
        let r = shift_so_far(&shifts(), o, datetime!(2026-11-23 01:00 UTC));
        assert_eq!(r.from, datetime!(2026-11-22 22:00 +1));
        // 16:00 local: between shifts, since the early shift ended.
        let r = shift_so_far(&shifts(), o, datetime!(2026-11-23 15:00 UTC));
        assert_eq!(r.from, datetime!(2026-11-23 14:00 +1));
        assert!(r.title.starts_with("between shifts"), "{}", r.title);
        let r = shift_so_far(&[], o, NOW);
        assert_eq!(r.from, datetime!(2026-11-23 00:00 +1));
        assert_eq!(r.title, "since midnight (no shifts configured)");
    }

    #[test]
    fn dates_date_times_and_shifts() {
        let o = offset!(+1);
        let asked = |from, to| Asked {
            from,
            to,
            ..Default::default()
        };
        let r = resolve(&asked(Some("2026-11-23"), Some("2026-11-23")), &[], o, NOW).unwrap();
        assert_eq!(
            (r.from, r.to),
            (
                datetime!(2026-11-23 00:00 +1),
                datetime!(2026-11-24 00:00 +1)
            )
        );
        let r = resolve(
            &asked(Some("2026-11-23 06:30"), Some("2026-11-23T08:00:00Z")),
            &[],
            o,
            NOW,
        )
        .unwrap();
        assert_eq!(
            (r.from, r.to),
            (
                datetime!(2026-11-23 06:30 +1),
                datetime!(2026-11-23 08:00 UTC)
            )
        );
        let shift = |name, date| Asked {
            shift: Some(name),
            date,
            ..Default::default()
        };
        let r = resolve(&shift("early", Some("2026-11-23")), &shifts(), o, NOW).unwrap();
        assert_eq!(
            (r.from, r.to, r.title.as_str()),
            (
                datetime!(2026-11-23 06:00 +1),
                datetime!(2026-11-23 14:00 +1),
                "shift early on 2026-11-23"
            )
        );
        let r = resolve(&shift("night", Some("2026-11-23")), &shifts(), o, NOW).unwrap();
        assert_eq!(
            r.to,
            datetime!(2026-11-24 06:00 +1),
            "a night shift ends the next day"
        );
        let r = resolve(&shift("early", None), &shifts(), o, NOW).unwrap();
        assert_eq!(r.from, datetime!(2026-11-23 06:00 +1), "today by default");
        let r = resolve(
            &Asked {
                date: Some("2026-11-22"),
                ..Default::default()
            },
            &[],
            o,
            NOW,
        )
        .unwrap();
        assert_eq!(r.to - r.from, Duration::days(1));
    }

    #[test]
    fn mistakes_are_named() {
        let o = offset!(UTC);
        let cases = [
            (
                Asked {
                    from: Some("yesterday"),
                    ..Default::default()
                },
                "is not a date",
            ),
            (
                Asked {
                    shift: Some("late"),
                    ..Default::default()
                },
                "defines early, night",
            ),
            (
                Asked {
                    shift: Some("early"),
                    date: Some("23.11.2026"),
                    ..Default::default()
                },
                "not a date like",
            ),
            (
                Asked {
                    shift: Some("early"),
                    from: Some("2026-11-23"),
                    ..Default::default()
                },
                "not both",
            ),
            (
                Asked {
                    date: Some("2026-11-23T06:00"),
                    ..Default::default()
                },
                "not a date like",
            ),
            (
                Asked {
                    from: Some("2026-11-24"),
                    to: Some("2026-11-23T00:00:00Z"),
                    ..Default::default()
                },
                "ends",
            ),
        ];
        for (asked, want) in cases {
            let e = resolve(&asked, &shifts(), o, NOW).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        assert!(
            resolve(
                &Asked {
                    shift: Some("x"),
                    ..Default::default()
                },
                &[],
                o,
                NOW
            )
            .unwrap_err()
            .contains("defines no [[shift]]")
        );
    }
}
