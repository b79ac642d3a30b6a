//! The TPM of a simulated board: a swtpm (TPM 2.0 simulator) process on
//! loopback, made fresh for every board the simulator inserts, as a new
//! board brings a new TPM. For the demo and tests; needs the `swtpm`
//! package.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct SimTpm {
    pub port: u16,
    ctrl: u16,
    state: PathBuf,
    child: Mutex<Option<Child>>,
}

/// A free loopback port P whose P+1 is free too: libtss2's swtpm TCTI
/// takes the control port to be the command port + 1.
fn free_pair() -> Result<u16, String> {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = first.local_addr().map_err(|e| e.to_string())?.port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    Err("no two free loopback ports in a row for swtpm".into())
}

impl SimTpm {
    /// A swtpm on new loopback ports, its state under `state`.
    pub fn start(state: PathBuf) -> Result<SimTpm, String> {
        let port = free_pair()?;
        let ctrl = port + 1;
        let t = SimTpm {
            port,
            ctrl,
            state,
            child: Mutex::new(None),
        };
        t.fresh()?;
        Ok(t)
    }

    /// The TCTI the station opens.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// Replaces the TPM with a new, empty one on the same port.
    pub fn fresh(&self) -> Result<(), String> {
        let mut child = self.child.lock().map_err(|_| "a lock was poisoned")?;
        if let Some(mut c) = child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.state);
        std::fs::create_dir_all(&self.state)
            .map_err(|e| format!("cannot make {}: {e}", self.state.display()))?;
        let spawned = Command::new("swtpm")
            .args(["socket", "--tpm2", "--server"])
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.port))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", self.ctrl))
            .arg("--tpmstate")
            .arg(format!("dir={}", self.state.display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let c = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err("swtpm is not installed: install the swtpm package, or use keygen = \"board\" for simulated boards".into());
            }
            Err(e) => return Err(format!("cannot start swtpm: {e}")),
        };
        *child = Some(c);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "swtpm did not start listening on port {}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for SimTpm {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock()
            && let Some(mut c) = child.take()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}
