//! `[label]` and `[printer]`: the label template, its size and density,
//! and where labels are printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::label::template::TEXT_FIELDS;
use crate::label::{LabelSize, LabelTemplate, Labeler, REFERENCE_TEMPLATE};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLabel {
    template: Option<String>,
    width_mm: f64,
    height_mm: f64,
    density_dpmm: u32,
    product: String,
    scan_back: bool,
    fields: BTreeMap<String, String>,
}

impl Default for RawLabel {
    fn default() -> Self {
        RawLabel {
            template: None,
            width_mm: 60.0,
            height_mm: 30.0,
            density_dpmm: 8,
            product: "Provisioned board".into(),
            scan_back: false,
            fields: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPrinter {
    backend: String,
    address: Option<String>,
    spool_dir: Option<String>,
    queue: Option<String>,
    timeout_ms: u64,
    retry_max_seconds: u64,
}

impl Default for RawPrinter {
    fn default() -> Self {
        RawPrinter {
            backend: "spool".into(),
            address: None,
            spool_dir: None,
            queue: None,
            timeout_ms: 3000,
            retry_max_seconds: 30,
        }
    }
}

/// `[label]`, validated: the checked template and what goes with it.
#[derive(Debug, Clone)]
pub struct LabelConfig {
    pub labeler: Labeler,
    /// Where the template came from (`built-in reference` or a path).
    pub template_origin: String,
    /// The operator scans each printed label back at the slot.
    pub scan_back: bool,
}

/// Where labels go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrinterBackend {
    /// Raw TCP (port 9100), Zebra host status before each label.
    Tcp { address: String },
    /// A `.zpl` file per label in a folder.
    Spool { dir: PathBuf },
    /// A CUPS queue, through `lp`.
    Cups { queue: String },
}

#[derive(Debug, Clone)]
pub struct PrinterConfig {
    pub backend: PrinterBackend,
    pub timeout: Duration,
    pub retry_max: Duration,
}

type Invalid = (String, String);

fn invalid(key: &str, reason: impl Into<String>) -> Invalid {
    (key.to_string(), reason.into())
}

pub(super) fn label_config(raw: &RawLabel, base: &Path) -> Result<LabelConfig, Invalid> {
    if !(5.0..=220.0).contains(&raw.width_mm) {
        return Err(invalid(
            "label.width_mm",
            format!("{} must be between 5 and 220 millimetres", raw.width_mm),
        ));
    }
    if !(5.0..=1000.0).contains(&raw.height_mm) {
        return Err(invalid(
            "label.height_mm",
            format!("{} must be between 5 and 1000 millimetres", raw.height_mm),
        ));
    }
    if ![6, 8, 12, 24].contains(&raw.density_dpmm) {
        return Err(invalid(
            "label.density_dpmm",
            format!(
                "{} is not a print density: use 6, 8, 12 or 24 dots per millimetre (152, 203, 300 or 600 dpi)",
                raw.density_dpmm
            ),
        ));
    }
    for name in raw.fields.keys() {
        let reserved = TEXT_FIELDS.contains(&name.as_str())
            || ["width", "height", "mm"].contains(&name.as_str());
        if reserved
            || name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid(
                &format!("label.fields.{name}"),
                "an extra field needs a name of lower-case letters, digits and '_' that is not a built-in field",
            ));
        }
    }
    let size = LabelSize {
        width_mm: raw.width_mm,
        height_mm: raw.height_mm,
        dpmm: raw.density_dpmm,
    };
    let (text, origin) = match &raw.template {
        None => (
            REFERENCE_TEMPLATE.to_string(),
            "built-in reference".to_string(),
        ),
        Some(t) => {
            let path = base.join(t);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                invalid(
                    "label.template",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            (text, path.display().to_string())
        }
    };
    let template = LabelTemplate::parse(&text, &origin, size, raw.fields.clone())
        .map_err(|e| invalid("label.template", e.to_string()))?;
    Ok(LabelConfig {
        labeler: Labeler {
            template,
            product: raw.product.clone(),
        },
        template_origin: origin,
        scan_back: raw.scan_back,
    })
}

pub(super) fn printer_config(
    raw: &RawPrinter,
    base: &Path,
    data_dir: &Path,
) -> Result<PrinterConfig, Invalid> {
    let unused = |key: &str, value: bool| {
        if value {
            Err(invalid(
                &format!("printer.{key}"),
                format!("is not used by backend {:?}: remove it", raw.backend),
            ))
        } else {
            Ok(())
        }
    };
    let backend = match raw.backend.as_str() {
        "tcp" => {
            unused("spool_dir", raw.spool_dir.is_some())?;
            unused("queue", raw.queue.is_some())?;
            let address = raw.address.clone().unwrap_or_default();
            let ok = address.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return Err(invalid(
                    "printer.address",
                    format!(
                        "{address:?}: the tcp backend needs the printer's host:port, like \"10.0.0.7:9100\""
                    ),
                ));
            }
            PrinterBackend::Tcp { address }
        }
        "spool" => {
            unused("address", raw.address.is_some())?;
            unused("queue", raw.queue.is_some())?;
            let dir = match &raw.spool_dir {
                Some(d) if d.trim().is_empty() => {
                    return Err(invalid("printer.spool_dir", "must not be empty"));
                }
                Some(d) => base.join(d),
                None => data_dir.join("labels"),
            };
            PrinterBackend::Spool { dir }
        }
        "cups" => {
            unused("address", raw.address.is_some())?;
            unused("spool_dir", raw.spool_dir.is_some())?;
            let queue = raw.queue.clone().unwrap_or_default();
            if queue.is_empty()
                || !queue
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
            {
                return Err(invalid(
                    "printer.queue",
                    format!(
                        "{queue:?}: the cups backend needs a queue name (letters, digits, '.', '_', '-', '@'), as `lpstat -p` lists them"
                    ),
                ));
            }
            PrinterBackend::Cups { queue }
        }
        other => {
            return Err(invalid(
                "printer.backend",
                format!("{other:?} is not \"tcp\", \"spool\" or \"cups\""),
            ));
        }
    };
    if !(100..=60_000).contains(&raw.timeout_ms) {
        return Err(invalid(
            "printer.timeout_ms",
            format!("{} must be between 100 and 60000", raw.timeout_ms),
        ));
    }
    if !(1..=3600).contains(&raw.retry_max_seconds) {
        return Err(invalid(
            "printer.retry_max_seconds",
            format!("{} must be between 1 and 3600", raw.retry_max_seconds),
        ));
    }
    Ok(PrinterConfig {
        backend,
        timeout: Duration::from_millis(raw.timeout_ms),
        retry_max: Duration::from_secs(raw.retry_max_seconds),
    })
}

impl LabelConfig {
    pub(super) fn public_view(&self) -> serde_json::Value {
        let size = self.labeler.template.size();
        serde_json::json!({
            "template": self.template_origin,
            "width_mm": size.width_mm,
            "height_mm": size.height_mm,
            "density_dpmm": size.dpmm,
            "product": self.labeler.product,
            "scan_back": self.scan_back,
        })
    }
}

impl PrinterConfig {
    pub(super) fn public_view(&self) -> serde_json::Value {
        let mut v = match &self.backend {
            PrinterBackend::Tcp { address } => {
                serde_json::json!({ "backend": "tcp", "address": address })
            }
            PrinterBackend::Spool { dir } => {
                serde_json::json!({ "backend": "spool", "spool_dir": dir.display().to_string() })
            }
            PrinterBackend::Cups { queue } => {
                serde_json::json!({ "backend": "cups", "queue": queue })
            }
        };
        v["timeout_ms"] = (self.timeout.as_millis() as u64).into();
        v["retry_max_seconds"] = self.retry_max.as_secs().into();
        v
    }
}
