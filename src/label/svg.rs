//! Draws a [`Layout`] as SVG, one SVG unit per printer dot, so the preview
//! shows the label at its real size and the DataMatrix with the same data.

use std::fmt::Write;

use datamatrix::{DataMatrix, SymbolList};

use super::zpl::{Element, Layout};

/// The SVG of a label `width` by `height` dots printed at `dpmm`.
pub fn render(layout: &Layout, width: u32, height: u32, dpmm: u32) -> String {
    let width = layout.width.unwrap_or(width).max(1);
    let height = layout.height.unwrap_or(height).max(1);
    let mm = |dots: u32| f64::from(dots) / f64::from(dpmm.max(1));
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}mm" height="{}mm" viewBox="0 0 {width} {height}" role="img">"#,
        mm(width),
        mm(height)
    );
    let _ = write!(
        s,
        r##"<rect width="{width}" height="{height}" fill="#fff"/>"##
    );
    for e in &layout.elements {
        element(&mut s, e);
    }
    s.push_str("</svg>\n");
    s
}

fn element(s: &mut String, e: &Element) {
    match e {
        Element::Text {
            x,
            y,
            height,
            width,
            text,
        } => {
            // Zebra's font 0 is a condensed sans serif: its cell is about as
            // wide as `width` says; the baseline sits near the cell bottom.
            let _ = write!(
                s,
                r#"<text xml:space="preserve" x="{x}" y="{}" font-family="Arial Narrow, Liberation Sans Narrow, sans-serif" font-weight="bold" font-size="{height}" data-char-width="{width}">{}</text>"#,
                y + height * 9 / 10,
                crate::xml::escape(text)
            );
        }
        Element::DataMatrix { x, y, module, data } => {
            match DataMatrix::encode(data.as_bytes(), SymbolList::default().enforce_square()) {
                Ok(code) => {
                    let bitmap = code.bitmap();
                    let _ = write!(
                        s,
                        r##"<path shape-rendering="crispEdges" fill="#000" data-content="{}" d=""##,
                        crate::xml::escape(data)
                    );
                    for (px, py) in bitmap.pixels() {
                        let _ = write!(
                            s,
                            "M{} {}h{module}v{module}h-{module}z",
                            x + px as u32 * module,
                            y + py as u32 * module
                        );
                    }
                    s.push_str(r#""/>"#);
                }
                Err(_) => marked_box(s, *x, *y, "DataMatrix: data too long"),
            }
        }
        Element::Box {
            x,
            y,
            width,
            height,
            thickness,
        } => {
            let t = *thickness;
            let _ = write!(
                s,
                r##"<path fill="#000" fill-rule="evenodd" d="M{x} {y}h{width}v{height}h-{width}z M{} {}h{}v{}h-{}z"/>"##,
                x + t,
                y + t,
                width.saturating_sub(2 * t),
                height.saturating_sub(2 * t),
                width.saturating_sub(2 * t),
            );
        }
        Element::Unsupported { x, y, command } => {
            marked_box(s, *x, *y, &format!("{command}: not shown in the preview"));
        }
    }
}

fn marked_box(s: &mut String, x: u32, y: u32, text: &str) {
    let _ = write!(
        s,
        r##"<rect x="{x}" y="{y}" width="120" height="40" fill="none" stroke="#c00" stroke-dasharray="4 2"/><text x="{}" y="{}" font-size="12" fill="#c00">{}</text>"##,
        x + 2,
        y + 24,
        crate::xml::escape(text)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_sized() {
        let layout = Layout {
            width: None,
            height: None,
            elements: vec![Element::Text {
                x: 1,
                y: 10,
                height: 20,
                width: 10,
                text: "<a & \"b\">".into(),
            }],
        };
        let svg = render(&layout, 400, 240, 8);
        assert!(svg.contains(r#"width="50mm" height="30mm" viewBox="0 0 400 240""#));
        assert!(
            svg.contains("&lt;a &amp; &quot;b&quot;&gt;</text>"),
            "{svg}"
        );
        assert!(svg.contains(r#"y="28""#));
    }
}
