//! Label content: the ZPL template filled in for a board, and the SVG
//! preview drawn from that same ZPL. Knows nothing of printers (see
//! [`crate::printer`]) or of where the facts come from.

pub mod svg;
pub mod template;
pub mod zpl;

pub use template::{LabelFacts, LabelSize, LabelTemplate, TemplateError};

/// The reference template, used when `station.toml` names none.
pub const REFERENCE_TEMPLATE: &str = include_str!("../../templates/label.zpl");

/// The GUID a test label carries (the store keeps its print jobs under it).
pub const TEST_LABEL_GUID: &str = "00000000-0000-0000-0000-000000000000";

/// Makes labels: the checked template and what it needs besides a board.
#[derive(Debug, Clone)]
pub struct Labeler {
    pub template: LabelTemplate,
    /// The product name printed on each label.
    pub product: String,
}

impl Labeler {
    /// The ZPL for one board; `product` is filled in here.
    pub fn zpl(&self, facts: &LabelFacts) -> String {
        let mut facts = facts.clone();
        if facts.product.is_empty() {
            facts.product = self.product.clone();
        }
        self.template.render(&facts)
    }

    /// The preview: the same ZPL, read back and drawn.
    pub fn svg(&self, facts: &LabelFacts) -> String {
        let size = self.template.size();
        svg::render(
            &zpl::parse(&self.zpl(facts)),
            size.width_dots(),
            size.height_dots(),
            size.dpmm,
        )
    }

    /// The facts of the test label a supervisor prints: the layout with
    /// sample values that say what they are.
    pub fn test_facts(station: &str, now: time::OffsetDateTime) -> LabelFacts {
        LabelFacts {
            guid: TEST_LABEL_GUID.into(),
            product: "TEST LABEL".into(),
            hw_revision: "test".into(),
            fw_version: "test".into(),
            mac: "00:00:00:00:00:00".into(),
            lot: "TEST".into(),
            date: now.date().to_string(),
            serial: "00".into(),
            station: station.into(),
            slot: "-".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn reference(dpmm: u32) -> Labeler {
        let size = LabelSize {
            width_mm: 60.0,
            height_mm: 30.0,
            dpmm,
        };
        Labeler {
            template: LabelTemplate::parse(
                REFERENCE_TEMPLATE,
                "reference",
                size,
                Default::default(),
            )
            .unwrap(),
            product: "Widget".into(),
        }
    }

    fn sample() -> LabelFacts {
        LabelFacts {
            guid: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
            product: String::new(),
            hw_revision: "B2".into(),
            fw_version: "1.4.2".into(),
            mac: "02:00:5e:10:00:01".into(),
            lot: "WO-2026_11 Müller^1".into(),
            date: "2026-11-22".into(),
            serial: "7f3a".into(),
            station: "station-01".into(),
            slot: "3".into(),
        }
    }

    #[test]
    fn reference_label_zpl_snapshot() {
        insta::assert_snapshot!("reference_label_8dpmm", reference(8).zpl(&sample()));
        insta::assert_snapshot!("reference_label_12dpmm", reference(12).zpl(&sample()));
    }

    #[test]
    fn the_preview_draws_what_the_zpl_says() {
        let svg = reference(8).svg(&sample());
        assert!(svg.contains(r#"viewBox="0 0 480 240""#), "{svg}");
        assert!(
            svg.contains(">Lot WO-2026_11 Müller^1  2026-11-22</text>"),
            "{svg}"
        );
        assert!(svg.contains(">Widget</text>"), "{svg}");
        assert!(svg.contains(r#"data-content="0f8fad5b-d9cb-469f-a165-70867728950e""#));
        // Without a work order: no lot, and the date on its own.
        let none = reference(8).svg(&LabelFacts {
            lot: String::new(),
            ..sample()
        });
        assert!(!none.contains("Lot"), "{none}");
        assert!(none.contains(">2026-11-22</text>"), "{none}");
    }

    #[test]
    fn the_reference_template_is_valid_at_every_density() {
        for dpmm in [6, 8, 12, 24] {
            let l = reference(dpmm);
            let zpl = l.zpl(&LabelFacts {
                guid: "0f8fad5b-d9cb-469f-a165-70867728950e".into(),
                ..Default::default()
            });
            assert!(zpl.contains(&format!("^PW{}", 60 * dpmm)), "{zpl}");
            let layout = zpl::parse(&zpl);
            assert!(layout.elements.iter().any(|e| matches!(e,
                zpl::Element::DataMatrix { data, .. } if data == "0f8fad5b-d9cb-469f-a165-70867728950e")));
        }
    }
}
