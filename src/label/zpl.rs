//! Reads back the subset of ZPL that labels use, to draw the preview from
//! the very ZPL the printer gets: `^XA ^XZ ^PW ^LL ^LH ^FO ^FT ^A ^CF ^FH
//! ^FD ^FS ^BX ^GB ^CI`. Other commands are skipped; a barcode the preview
//! cannot draw is kept as a marked box so that nobody mistakes the preview
//! for the whole label.

/// One thing drawn on the label, in dots from the top-left corner.
#[derive(Debug, Clone, PartialEq)]
pub enum Element {
    Text {
        x: u32,
        y: u32,
        /// Character height and width in dots.
        height: u32,
        width: u32,
        text: String,
    },
    DataMatrix {
        x: u32,
        y: u32,
        /// Size of one module in dots.
        module: u32,
        data: String,
    },
    Box {
        x: u32,
        y: u32,
        width: u32,
        height: u32,
        thickness: u32,
    },
    /// A field the preview does not draw (another barcode symbology).
    Unsupported { x: u32, y: u32, command: String },
}

/// A label format read back from ZPL.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Layout {
    /// From `^PW` and `^LL`, if present.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub elements: Vec<Element>,
}

/// What the field being built has so far.
#[derive(Default)]
struct Field {
    x: u32,
    y: u32,
    /// `^FT` places the baseline, not the top.
    baseline: bool,
    hex: Option<u8>,
    font: Option<(u32, u32)>,
    datamatrix: Option<u32>,
    graphic_box: Option<(u32, u32, u32)>,
    other: Option<String>,
    data: Option<String>,
}

fn num(params: &[&str], i: usize, default: u32) -> u32 {
    params
        .get(i)
        .and_then(|p| p.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v.round() as u32)
        .unwrap_or(default)
}

/// Undoes `^FH` escapes (`_XX` with the given indicator) and reads the bytes
/// as UTF-8.
pub fn unhex(data: &str, indicator: u8) -> String {
    let b = data.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == indicator
            && let (Some(hi), Some(lo)) = (hex_digit(b.get(i + 1)), hex_digit(b.get(i + 2)))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: Option<&u8>) -> Option<u8> {
    (*b? as char).to_digit(16).map(|d| d as u8)
}

/// Reads the first label format (`^XA` to `^XZ`) in `zpl`.
pub fn parse(zpl: &str) -> Layout {
    let mut layout = Layout::default();
    let mut home = (0u32, 0u32);
    let mut default_font = (30u32, 30u32);
    let mut field = Field::default();
    let mut started = false;
    for (prefix, cmd) in commands(zpl) {
        let name = cmd.get(..2).unwrap_or("").to_ascii_uppercase();
        let rest = cmd.get(2..).unwrap_or("");
        let params: Vec<&str> = rest.split(',').collect();
        if !started {
            started = prefix == '^' && name == "XA";
            continue;
        }
        match name.as_str() {
            "XZ" => break,
            "PW" => layout.width = Some(num(&params, 0, 0)),
            "LL" => layout.height = Some(num(&params, 0, 0)),
            "LH" => home = (num(&params, 0, 0), num(&params, 1, 0)),
            "FO" | "FT" => {
                field.x = home.0 + num(&params, 0, 0);
                field.y = home.1 + num(&params, 1, 0);
                field.baseline = name == "FT";
            }
            "CF" => {
                let h = num(&params, 1, default_font.0);
                default_font = (h, num(&params, 2, h));
            }
            "FH" => field.hex = Some(rest.bytes().next().unwrap_or(b'_')),
            "BX" => field.datamatrix = Some(num(&params, 1, 1).max(1)),
            "GB" => {
                let t = num(&params, 2, 1).max(1);
                field.graphic_box = Some((num(&params, 0, t), num(&params, 1, t), t));
            }
            "FD" => field.data = Some(rest.to_string()),
            "FS" => {
                let f = std::mem::take(&mut field);
                if let Some(e) = element(f, default_font) {
                    layout.elements.push(e);
                }
            }
            n if n.starts_with('A') && prefix == '^' => {
                // ^Afo,h,w: the font letter and orientation are in `n`.
                let h = num(&params, 1, default_font.0);
                field.font = Some((h, num(&params, 2, h)));
            }
            n if n.starts_with('B') && prefix == '^' && n != "BY" => {
                field.other = Some(format!("^{n}"));
            }
            _ => {}
        }
    }
    layout
}

fn element(f: Field, default_font: (u32, u32)) -> Option<Element> {
    if let Some((width, height, thickness)) = f.graphic_box {
        return Some(Element::Box {
            x: f.x,
            y: f.y,
            width,
            height,
            thickness,
        });
    }
    let data = f.data?;
    let data = match f.hex {
        Some(indicator) => unhex(&data, indicator),
        None => data,
    };
    if let Some(module) = f.datamatrix {
        return Some(Element::DataMatrix {
            x: f.x,
            y: f.y,
            module,
            data,
        });
    }
    if let Some(command) = f.other {
        return Some(Element::Unsupported {
            x: f.x,
            y: f.y,
            command,
        });
    }
    let (height, width) = f.font.unwrap_or(default_font);
    Some(Element::Text {
        x: f.x,
        y: if f.baseline {
            f.y.saturating_sub(height)
        } else {
            f.y
        },
        height,
        width,
        text: data,
    })
}

/// Splits ZPL into commands: the prefix (`^` or `~`) and the text up to the
/// next prefix, with line breaks dropped.
fn commands(zpl: &str) -> impl Iterator<Item = (char, String)> + '_ {
    let mut out = Vec::new();
    let mut current: Option<(char, String)> = None;
    for ch in zpl.chars() {
        if ch == '^' || ch == '~' {
            if let Some(c) = current.take() {
                out.push(c);
            }
            current = Some((ch, String::new()));
        } else if ch != '\n'
            && ch != '\r'
            && let Some((_, text)) = current.as_mut()
        {
            text.push(ch);
        }
    }
    out.extend(current);
    out.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_back() {
        let l = parse(
            "junk^XA^PW400^LL240^LH5,5\n^FO10,20^BXN,4,200^FH^FDab_5Ecd^FS\n^CF0,30\n^FO1,2^A0N,20,18^FH^FDx_C3_BCy^FS\n^FT0,50^FDbase^FS^FO0,0^GB10,20,2^FS^FO3,3^BCN,50^FD123^FS^XZ^XA^FO0,0^FDnext^FS^XZ",
        );
        assert_eq!(l.width, Some(400));
        assert_eq!(l.height, Some(240));
        assert_eq!(
            l.elements,
            vec![
                Element::DataMatrix {
                    x: 15,
                    y: 25,
                    module: 4,
                    data: "ab^cd".into()
                },
                Element::Text {
                    x: 6,
                    y: 7,
                    height: 20,
                    width: 18,
                    text: "xüy".into()
                },
                Element::Text {
                    x: 5,
                    y: 25,
                    height: 30,
                    width: 30,
                    text: "base".into()
                },
                Element::Box {
                    x: 5,
                    y: 5,
                    width: 10,
                    height: 20,
                    thickness: 2
                },
                Element::Unsupported {
                    x: 8,
                    y: 8,
                    command: "^BC".into()
                },
            ]
        );
    }

    #[test]
    fn unhex_leaves_broken_escapes_alone() {
        assert_eq!(unhex("a_4", b'_'), "a_4");
        assert_eq!(unhex("a_zz_41", b'_'), "a_zzA");
    }
}
