//! Looking for a secret where it must not be: every spelling of a 32-byte
//! key (raw, hex in either case, base64 standard and URL-safe) in every
//! file under a folder, and a check that the search finds a planted one.

use std::path::{Path, PathBuf};

use base64::Engine;

/// Every way the key could be written down.
pub fn spellings(key: &[u8; 32]) -> Vec<(String, Vec<u8>)> {
    let std = base64::engine::general_purpose::STANDARD.encode(key);
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
    vec![
        ("raw".into(), key.to_vec()),
        ("hex".into(), hex::encode(key).into_bytes()),
        ("HEX".into(), hex::encode_upper(key).into_bytes()),
        (
            "base64".into(),
            std.trim_end_matches('=').as_bytes().to_vec(),
        ),
        ("base64url".into(), url.into_bytes()),
    ]
}

/// Every file under `dir`.
pub fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Which files hold the key, and in which spelling.
pub fn holders(paths: &[PathBuf], key: &[u8; 32]) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for path in paths {
        let bytes = std::fs::read(path).unwrap();
        for (how, needle) in spellings(key) {
            if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                found.push((how, path.clone()));
            }
        }
    }
    found
}

/// The search can find what it looks for: a folder with the key written
/// in each spelling is found by the same search, each file by its own
/// spelling. (Two spellings can be the same text: base64 without '+' or
/// '/' is also base64url, a quarter of random keys; so count the files
/// found, not the matches.)
pub fn assert_search_finds_a_planted(key: &[u8; 32]) {
    let probe = tempfile::tempdir().unwrap();
    for (how, needle) in spellings(key) {
        let mut bytes = b"x".to_vec();
        bytes.extend(&needle);
        bytes.extend(b"y");
        std::fs::write(probe.path().join(how), bytes).unwrap();
    }
    let mut probes = Vec::new();
    files(probe.path(), &mut probes);
    let found = holders(&probes, key);
    for (how, _) in spellings(key) {
        assert!(
            found.iter().any(|(h, p)| *h == how && p.ends_with(&how)),
            "{how} not found: {found:?}"
        );
    }
}
