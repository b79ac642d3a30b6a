//! The label template: a ZPL file with `{{name}}` placeholders, checked once
//! when the station starts and filled in for each board.
//!
//! Text placeholders (`{{guid}}`, `{{lot}}`, ...) may stand only in field
//! data (`^FD`) of a field that has `^FH`, so that the station can write any
//! value safely: `^`, `~`, `_`, control characters and non-ASCII bytes are
//! written as `_XX` hex escapes, and nothing a value holds can become a ZPL
//! command. Number placeholders (`{{width}}`, `{{height}}`, `{{mm N}}`) may
//! stand anywhere.

use std::collections::BTreeMap;

/// The label's text fields, from a board's record and the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelFacts {
    pub guid: String,
    pub product: String,
    pub hw_revision: String,
    pub fw_version: String,
    pub mac: String,
    /// The work order (lot) the board was made in; empty without one.
    pub lot: String,
    /// The day the board was provisioned, `YYYY-MM-DD`.
    pub date: String,
    /// The certificate serial, hex.
    pub serial: String,
    pub station: String,
    pub slot: String,
}

/// The text fields a template may name, besides the configured extra ones.
pub const TEXT_FIELDS: [&str; 11] = [
    "guid",
    "product",
    "hw_revision",
    "fw_version",
    "mac",
    "lot",
    "lot_date",
    "date",
    "serial",
    "station",
    "slot",
];

impl LabelFacts {
    fn get(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        if name == "lot_date" {
            // "Lot WO-1  2026-11-22", or the date alone without a work
            // order: never a date where the lot belongs.
            return Some(if self.lot.is_empty() {
                self.date.as_str().into()
            } else {
                format!("Lot {}  {}", self.lot, self.date).into()
            });
        }
        Some(std::borrow::Cow::Borrowed(match name {
            "guid" => &self.guid,
            "product" => &self.product,
            "hw_revision" => &self.hw_revision,
            "fw_version" => &self.fw_version,
            "mac" => &self.mac,
            "lot" => &self.lot,
            "date" => &self.date,
            "serial" => &self.serial,
            "station" => &self.station,
            "slot" => &self.slot,
            _ => return None,
        }))
    }
}

/// Size and print density of the label stock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelSize {
    pub width_mm: f64,
    pub height_mm: f64,
    /// Dots per millimetre: 6, 8, 12 or 24 (152, 203, 300 or 600 dpi).
    pub dpmm: u32,
}

impl LabelSize {
    pub fn dots(&self, mm: f64) -> u32 {
        (mm * f64::from(self.dpmm)).round().max(0.0) as u32
    }
    pub fn width_dots(&self) -> u32 {
        self.dots(self.width_mm)
    }
    pub fn height_dots(&self) -> u32 {
        self.dots(self.height_mm)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(String),
    /// A text field, hex-escaped.
    Text(String),
    /// A configured extra field, hex-escaped.
    Extra(String),
    Width,
    Height,
    Millimetres(f64),
}

/// A checked template, ready to fill in.
#[derive(Debug, Clone)]
pub struct LabelTemplate {
    /// Where the template came from, for messages.
    pub origin: String,
    pieces: Vec<Piece>,
    size: LabelSize,
    extra: BTreeMap<String, String>,
}

/// A template that cannot be used, with where and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("label template {origin} line {line}: {reason}")]
pub struct TemplateError {
    pub origin: String,
    pub line: usize,
    pub reason: String,
}

/// Where the scanner is in the ZPL while checking placeholders.
#[derive(Default)]
struct ZplContext {
    in_field_data: bool,
    field_has_fh: bool,
    field_is_datamatrix: bool,
    guid_in_datamatrix: bool,
    started: bool,
    ended: bool,
}

impl ZplContext {
    fn command(&mut self, name: &str) {
        self.in_field_data = name == "FD";
        match name {
            "FH" => self.field_has_fh = true,
            "BX" => self.field_is_datamatrix = true,
            "FS" => {
                self.field_has_fh = false;
                self.field_is_datamatrix = false;
            }
            "XA" => self.started = true,
            "XZ" => self.ended = true,
            _ => {}
        }
    }
}

impl LabelTemplate {
    /// Checks `text` (from `origin`, for messages). `extra` are the
    /// configured extra fields, usable as `{{name}}`.
    pub fn parse(
        text: &str,
        origin: &str,
        size: LabelSize,
        extra: BTreeMap<String, String>,
    ) -> Result<LabelTemplate, TemplateError> {
        let err = |at: usize, reason: String| TemplateError {
            origin: origin.to_string(),
            line: text[..at].matches('\n').count() + 1,
            reason,
        };
        let mut pieces = Vec::new();
        let mut ctx = ZplContext::default();
        let mut literal = String::new();
        let mut i = 0;
        let bytes = text.as_bytes();
        while i < text.len() {
            let c = bytes[i];
            if c == b'^' || c == b'~' {
                let name: String = text[i + 1..]
                    .chars()
                    .take(2)
                    .collect::<String>()
                    .to_ascii_uppercase();
                ctx.command(&name);
                literal.push(c as char);
                i += 1;
                continue;
            }
            if text[i..].starts_with("{{") {
                let Some(len) = text[i + 2..].find("}}") else {
                    return Err(err(i, "a `{{` is never closed with `}}`".into()));
                };
                let name = text[i + 2..i + 2 + len].trim();
                let piece = placeholder(name, &extra).map_err(|r| err(i, r))?;
                let is_text = matches!(piece, Piece::Text(_) | Piece::Extra(_));
                if is_text && !ctx.in_field_data {
                    return Err(err(
                        i,
                        format!(
                            "{{{{{name}}}}} is text: it may only stand in field data (after ^FD)"
                        ),
                    ));
                }
                if is_text && !ctx.field_has_fh {
                    return Err(err(
                        i,
                        format!(
                            "the field holding {{{{{name}}}}} needs ^FH before ^FD, so that the station can escape ^ and ~ in its value"
                        ),
                    ));
                }
                if piece == Piece::Text("guid".into()) && ctx.field_is_datamatrix {
                    ctx.guid_in_datamatrix = true;
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(piece);
                i += 2 + len + 2;
                continue;
            }
            let ch = text[i..].chars().next().unwrap_or('\u{fffd}');
            literal.push(ch);
            i += ch.len_utf8();
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        let end = text.len();
        if !ctx.started || !ctx.ended {
            return Err(err(
                end,
                "a label format starts with ^XA and ends with ^XZ".into(),
            ));
        }
        if !ctx.guid_in_datamatrix {
            return Err(err(
                end,
                "no DataMatrix carries the GUID: the label needs a field like ^FO..^BXN,..,200^FH^FD{{guid}}^FS".into(),
            ));
        }
        Ok(LabelTemplate {
            origin: origin.to_string(),
            pieces,
            size,
            extra,
        })
    }

    pub fn size(&self) -> LabelSize {
        self.size
    }

    /// The ZPL for one board.
    pub fn render(&self, facts: &LabelFacts) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Text(name) => escape_into(&mut out, &facts.get(name).unwrap_or_default()),
                Piece::Extra(name) => escape_into(
                    &mut out,
                    self.extra.get(name).map(String::as_str).unwrap_or(""),
                ),
                Piece::Width => out.push_str(&self.size.width_dots().to_string()),
                Piece::Height => out.push_str(&self.size.height_dots().to_string()),
                Piece::Millimetres(mm) => out.push_str(&self.size.dots(*mm).to_string()),
            }
        }
        out
    }
}

fn placeholder(name: &str, extra: &BTreeMap<String, String>) -> Result<Piece, String> {
    if let Some(mm) = name.strip_prefix("mm ") {
        return match mm.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && (0.0..=1000.0).contains(&v) => Ok(Piece::Millimetres(v)),
            _ => Err(format!(
                "{{{{{name}}}}}: `mm` takes a length in millimetres between 0 and 1000"
            )),
        };
    }
    match name {
        "width" => Ok(Piece::Width),
        "height" => Ok(Piece::Height),
        n if TEXT_FIELDS.contains(&n) => Ok(Piece::Text(n.to_string())),
        n if extra.contains_key(n) => Ok(Piece::Extra(n.to_string())),
        n => Err(format!(
            "{{{{{n}}}}} is not a label field (fields: {}, width, height, mm N{}{})",
            TEXT_FIELDS.join(", "),
            if extra.is_empty() {
                ""
            } else {
                ", and from [label.fields]: "
            },
            extra.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Writes `value` for a `^FH` field: `_XX` for the hex-escape indicator
/// itself, the ZPL command prefixes, control characters and every byte of a
/// non-ASCII character (UTF-8, for a template with `^CI28`).
fn escape_into(out: &mut String, value: &str) {
    for ch in value.chars() {
        if ch.is_ascii() && !ch.is_ascii_control() && !matches!(ch, '_' | '^' | '~' | '\\') {
            out.push(ch);
        } else {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("_{b:02X}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size() -> LabelSize {
        LabelSize {
            width_mm: 50.0,
            height_mm: 30.0,
            dpmm: 8,
        }
    }

    fn parse(text: &str) -> Result<LabelTemplate, TemplateError> {
        LabelTemplate::parse(text, "t.zpl", size(), BTreeMap::new())
    }

    const MINIMAL: &str = "^XA^PW{{width}}^FO{{mm 2}},0^BXN,4,200^FH^FD{{guid}}^FS\n^FO0,0^A0N,20,20^FH^FDLot {{lot}}^FS^XZ";

    #[test]
    fn fills_in_numbers_and_escapes_text() {
        let t = parse(MINIMAL).unwrap();
        let facts = LabelFacts {
            guid: "g".into(),
            lot: "A_1^XZ~JR ü".into(),
            ..Default::default()
        };
        assert_eq!(
            t.render(&facts),
            "^XA^PW400^FO16,0^BXN,4,200^FH^FDg^FS\n^FO0,0^A0N,20,20^FH^FDLot A_5F1_5EXZ_7EJR _C3_BC^FS^XZ"
        );
    }

    #[test]
    fn refuses_what_it_cannot_fill_safely() {
        let cases = [
            (
                "^XA^FO0,0^BXN,4,200^FH^FD{{guid}}^FS^FO0,0^FD{{lot}}^FS^XZ",
                "needs ^FH before ^FD",
            ),
            (
                "^XA^FO{{lot}},0^BXN,4,200^FH^FD{{guid}}^FS^XZ",
                "may only stand in field data",
            ),
            (
                "^XA^FO0,0^BXN,4,200^FH^FD{{guid}}^FS\n\n^FO0,0^FH^FD{{lott}}^FS^XZ",
                "line 3: {{lott}} is not a label field",
            ),
            (
                "^XA^FO0,0^FH^FD{{guid}}^FS^XZ",
                "no DataMatrix carries the GUID",
            ),
            ("^XA^FO0,0^BXN,4,200^FH^FD{{guid}}^FS", "ends with ^XZ"),
            ("^XA^FO0,0^BXN,4,200^FH^FD{{guid}^FS^XZ", "never closed"),
            (
                "^XA^FO{{mm x}},0^BXN,4,200^FH^FD{{guid}}^FS^XZ",
                "millimetres",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(e.starts_with("label template t.zpl line"), "{e}");
        }
    }

    #[test]
    fn extra_fields_are_named_and_escaped() {
        let extra = BTreeMap::from([("site".to_string(), "Plant^2".to_string())]);
        let t = LabelTemplate::parse(
            "^XA^FO0,0^BXN,4,200^FH^FD{{guid}}^FS^FO0,0^FH^FD{{site}}^FS^XZ",
            "t.zpl",
            size(),
            extra,
        )
        .unwrap();
        assert!(t.render(&LabelFacts::default()).contains("^FDPlant_5E2^FS"));
    }
}
