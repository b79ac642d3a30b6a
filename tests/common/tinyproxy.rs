//! A real HTTP CONNECT proxy for tests: Debian's tinyproxy, run in the
//! foreground (`-d`) on a free loopback port with a configuration and a
//! log in a temporary folder. The log shows each CONNECT it was asked for.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Tinyproxy {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Tinyproxy {
    /// Starts tinyproxy with `extra` configuration lines (`BasicAuth`,
    /// `ConnectPort`); without `ConnectPort` lines it CONNECTs to any port.
    pub fn start(extra: &str) -> Tinyproxy {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Info\nMaxClients 20\nAllow 127.0.0.1\n{extra}\n",
                dir.path().join("log").display()
            ),
        )
        .unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy (apt-get install tinyproxy; scripts/test.sh installs it)");
        let proxy = Tinyproxy {
            port,
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        proxy
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// How many CONNECTs to 127.0.0.1:`port` the proxy was asked for.
    pub fn connects_to(&self, port: u16) -> usize {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let needle = format!("CONNECT 127.0.0.1:{port} ");
        log.lines().filter(|l| l.contains(&needle)).count()
    }

    /// Stops the proxy: its port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        self.stop();
    }
}
