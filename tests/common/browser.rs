//! A headless Chromium driven over WebDriver for the browser tests
//! (Debian's chromium and chromium-driver; `scripts/test.sh` installs
//! them): start-up with a fresh profile whose NSS database may trust a
//! test plant CA, screenshots kept under target/tmp/screenshots/, and
//! axe-core's accessibility check.

use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use super::Child;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A home folder whose NSS database trusts `ca` (PEM) for TLS servers:
/// Chromium on Linux reads `$HOME/.pki/nssdb`.
pub fn home_trusting(home: &std::path::Path, ca: &std::path::Path) {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let db = format!("sql:{}", db.display());
    let run = |args: &[&str]| {
        let out = Command::new("certutil").args(args).output().expect(
            "this test needs certutil: `apt-get install libnss3-tools` (scripts/test.sh does it)",
        );
        assert!(
            out.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["-N", "-d", &db, "--empty-password"]);
    run(&[
        "-A",
        "-d",
        &db,
        "-t",
        "C,,",
        "-n",
        "test plant CA",
        "-i",
        ca.to_str().unwrap(),
    ]);
}

/// Chromium with its window `width` by `height` and a profile in
/// `profile` (its HOME too).
pub async fn browser(profile: &std::path::Path, (width, height): (u32, u32)) -> (Child, Client) {
    assert!(
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists(),
        "this test needs Debian's chromium and chromium-driver: `apt-get install chromium chromium-driver` (scripts/test.sh does it)"
    );
    let port = super::free_port();
    // Chromium inherits chromedriver's HOME: the profile's, whose NSS
    // database the test filled.
    let driver = Child(
        Command::new(CHROMEDRIVER)
            .env("HOME", profile)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", format!("--window-size={width},{height}"),
                format!("--user-data-dir={}", profile.join("chromium").display()),
            ]
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut last = None;
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return (driver, c),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start: {last:?}");
}

/// Keeps a screenshot as target/tmp/screenshots/NAME.png.
pub async fn shot(c: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.png")),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
}

/// Makes the page's viewport `width` by `height` CSS px (the window's
/// frame, if any, added).
pub async fn viewport(c: &Client, width: u32, height: u32) {
    for _ in 0..3 {
        let inner = c
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await
            .unwrap();
        let (w, h) = (inner[0].as_u64().unwrap(), inner[1].as_u64().unwrap());
        if (w, h) == (u64::from(width), u64::from(height)) {
            return;
        }
        let (ow, oh) = c.get_window_size().await.unwrap();
        c.set_window_size(
            (ow as i64 + i64::from(width) - w as i64) as u32,
            (oh as i64 + i64::from(height) - h as i64) as u32,
        )
        .await
        .unwrap();
    }
    panic!("the viewport did not become {width}x{height}");
}

/// Where scripts/test.sh installs axe-core.
fn axe_source() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/axe/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: this test needs axe-core: `npm install --prefix target/axe axe-core@4.10.3` (scripts/test.sh does it)",
            path.display()
        )
    })
}

/// Runs axe-core on the page shown and returns its serious and critical
/// violations, one line each. Its source goes in through WebDriver's
/// execute, which the page's Content-Security-Policy does not bind.
pub async fn axe_violations(c: &Client) -> Vec<String> {
    let loaded = c
        .execute(
            &format!("{}\nreturn typeof window.axe;", axe_source()),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(loaded, "object", "axe-core is loaded into the page");
    let found = c
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            axe.run(document, { resultTypes: ["violations"] })
              .then((r) => done(r.violations
                .filter((v) => v.impact === "serious" || v.impact === "critical")
                .map((v) => `${v.impact} ${v.id}: ${v.help}: ${v.nodes.slice(0, 5).map((n) => n.target.join(" ")).join(", ")}`)))
              .catch((e) => done([`axe failed: ${e}`]));"#,
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(found).unwrap()
}

/// Waits up to `secs` for `ok` to hold; the page source if it does not.
pub async fn until<F, Fut>(c: &Client, secs: u64, what: &str, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !ok().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {secs} s: {}",
            c.source().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Signs in with a badge and PIN as a scanner and a person type them (the
/// badge, Tab, the PIN, Enter) and waits for the line view.
pub async fn sign_in(c: &Client, base: &str, badge: &str, pin: &str) {
    type_in(c, base, ("badge", badge), ("pin", pin)).await;
}

/// Signs in with a user name and password (the name, then the password
/// and Enter) and waits for the line view.
pub async fn sign_in_password(c: &Client, base: &str, name: &str, password: &str) {
    type_in(c, base, ("name", name), ("password", password)).await;
}

/// Opens the sign-in page, types `first` and `second` into their fields,
/// Enter after the second, and waits for the line view. Into the fields
/// themselves: on a loaded machine the page's focus may not be settled
/// when the keys arrive (tests/browser.rs checks the autofocus itself).
async fn type_in(c: &Client, base: &str, first: (&str, &str), second: (&str, &str)) {
    c.goto(&format!("{base}/login")).await.unwrap();
    let field = |name: &str| {
        let css = format!("input[name={name}]");
        async move { c.wait().for_element(Locator::Css(&css)).await.unwrap() }
    };
    field(first.0).await.send_keys(first.1).await.unwrap();
    field(second.0)
        .await
        .send_keys(&format!("{}\u{E007}", second.1))
        .await
        .unwrap();
    line_view_opens(c).await;
}

/// Waits up to 90 s for the line view after signing in, saying what the
/// page shows if it does not open.
pub async fn line_view_opens(c: &Client) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while c.find(Locator::Id("slots")).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the line view did not open after signing in: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
