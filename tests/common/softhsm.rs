//! A fresh SoftHSM token for a test. SoftHSM reads where its tokens are
//! from `SOFTHSM2_CONF` only, and a test may not change its own
//! environment, so the test runs itself again as a child process with a
//! new token folder in that variable.

use std::path::Path;
use std::process::Command;

use super::root::text;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// Set in the child: the test body runs there.
const CHILD: &str = "STATION_TEST_IN_SOFTHSM";

/// Runs the test `name` again in a child of this test binary, with a
/// fresh SoftHSM token `token` (user PIN `pin`); true if this process is
/// that child.
pub fn in_softhsm(name: &str, token: &str, pin: &str) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    assert!(
        Path::new(MODULE).exists(),
        "SoftHSM is not installed ({MODULE}): apt-get install softhsm2 (scripts/test.sh does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let out = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            token,
            "--so-pin",
            "1234",
            "--pin",
            pin,
        ])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .expect("softhsm2-util is installed (apt-get install softhsm2)");
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", &conf)
        .env(CHILD, "1")
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "the test in SoftHSM failed:\n{said}");
    assert!(said.contains("1 passed"), "the test did not run:\n{said}");
    false
}
