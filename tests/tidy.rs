//! Architecture invariants checked on the sources (after rust-analyzer's
//! tidy tests): see ARCHITECTURE.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn src_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(files.len() > 20);
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&root).unwrap().display().to_string();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn only_the_store_touches_sql() {
    for (path, text) in src_files() {
        // The store (SQLite), the plant tier (PostgreSQL), and tests that
        // list forbidden names.
        if path.starts_with("store/") || path.starts_with("plant/") || path.ends_with("tests.rs") {
            continue;
        }
        for word in [
            "rusqlite::",
            "SELECT ",
            "INSERT INTO",
            "UPDATE ",
            "DELETE FROM",
        ] {
            assert!(
                !text.contains(word),
                "src/{path} contains {word:?}: SQL belongs in src/store (SQLite) or src/plant (PostgreSQL)"
            );
        }
    }
}

#[test]
fn only_the_plant_tier_touches_postgresql() {
    for (path, text) in src_files() {
        // The plant tier; `[plant]` parses the URL with tokio-postgres's
        // own parser, and connects to nothing.
        if path.starts_with("plant/") || path == "config/plant.rs" {
            continue;
        }
        for word in ["tokio_postgres", "deadpool_postgres"] {
            assert!(
                !text.contains(word),
                "src/{path} uses {word}: PostgreSQL belongs in src/plant"
            );
        }
    }
}

#[test]
fn the_line_never_waits_for_the_plant() {
    // Nothing on a slot's path reaches the plant tier: it is fed from the
    // store by its own task.
    for (path, text) in src_files() {
        if path.starts_with("core/") || path.starts_with("workflow/") || path.starts_with("jig/") {
            assert!(
                !text.contains("plant::") && !text.contains("crate::plant"),
                "src/{path} reaches the plant tier: the line must never wait for it"
            );
        }
    }
}

#[test]
fn every_module_says_what_it_owns() {
    for (path, text) in src_files() {
        if path.ends_with("tests.rs") {
            continue;
        }
        assert!(
            text.starts_with("//!"),
            "src/{path} does not open with a //! comment saying what it owns"
        );
    }
}

#[test]
fn web_handlers_do_not_reach_past_the_store() {
    for (path, text) in src_files() {
        if path.starts_with("web/") {
            for word in [
                "crate::jig",
                "crate::ca::FactoryCa",
                "crate::core::step",
                // Handlers queue label jobs; only the label worker prints.
                "dyn Printer",
                "printer::from_config",
                "TcpPrinter",
                "SpoolPrinter",
                "CupsPrinter",
            ] {
                assert!(
                    !text.contains(word),
                    "src/{path} uses {word}: handlers stay thin"
                );
            }
        }
    }
}
