//! A TPM 2.0 simulator for tests: one `swtpm` child process per test, on
//! its own loopback ports, with its state in a temporary folder. Kept as
//! a child (no `--daemon`) so a test can stop it mid-provision and no
//! zombie outlives the test.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long swtpm may take to listen (it usually takes ~30 ms).
const READY_WITHIN: Duration = Duration::from_secs(5);

pub struct Swtpm {
    /// The TPM command port (what the TCTI connects to).
    pub port: u16,
    /// The control port (swtpm_ioctl; libtss2's TCTI expects `port + 1`).
    pub ctrl_port: u16,
    /// The running simulator; `None` once stopped.
    child: Option<Child>,
    /// The TPM's state (`tpm2-00.permall`) and swtpm's log.
    dir: tempfile::TempDir,
}

impl Swtpm {
    /// Starts a fresh simulator. Panics if swtpm is not installed or does
    /// not come up: TPM tests never skip silently.
    pub fn start() -> Swtpm {
        let mut tpm = Swtpm {
            port: 0,
            ctrl_port: 0,
            child: None,
            dir: tempfile::tempdir().expect("a temporary folder for the TPM state"),
        };
        // A port picked by the OS may be taken by someone else before
        // swtpm binds it: try a few pairs.
        for _ in 0..5 {
            (tpm.port, tpm.ctrl_port) = free_ports();
            if tpm.spawn() {
                return tpm;
            }
        }
        panic!("swtpm would not start: {}", tpm.log());
    }

    /// The TCTI string for this simulator.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The folder holding the TPM's state.
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the simulator and reaps it: the TPM vanishes mid-provision.
    /// Its state stays on disk for [`Swtpm::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the simulator again on the same ports with the same state
    /// (a board put back, a TPM power-cycled).
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "swtpm did not come back on port {}: {}",
            self.port,
            self.log()
        );
    }

    /// What swtpm wrote to its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("swtpm.log")).unwrap_or_default()
    }

    /// Runs swtpm and waits until it accepts connections; false if it
    /// exited first (a port taken).
    fn spawn(&mut self) -> bool {
        let dir = self.dir.path();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2"])
            .arg("--server")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.port))
            .arg("--ctrl")
            .arg(format!(
                "type=tcp,port={},bindaddr=127.0.0.1",
                self.ctrl_port
            ))
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.display()))
            .arg("--log")
            .arg(format!("file={}", dir.join("swtpm.log").display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "swtpm is not installed: install it (apt-get install swtpm swtpm-tools tpm2-tools) to run the TPM tests"
            ),
            Err(e) => panic!("cannot run swtpm: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if Instant::now() > deadline {
                self.stop();
                panic!(
                    "swtpm did not listen on port {} within {READY_WITHIN:?}: {}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port whose successor is free too: libtss2's swtpm
/// TCTI reaches the control channel at the command port + 1.
fn free_ports() -> (u16, u16) {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let port = first.local_addr().expect("a bound address").port();
        let Some(ctrl) = port.checked_add(1) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", ctrl)).is_ok() {
            return (port, ctrl);
        }
    }
    panic!("no two consecutive free loopback ports");
}
