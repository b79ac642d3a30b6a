//! The CUPS backend: a raw print queue, through the `lp` command (from
//! `cups-client`). `lpstat -p` tells whether the queue takes jobs.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{PrintError, PrintJob, Printer};

pub struct CupsPrinter {
    pub queue: String,
    /// The `lp` and `lpstat` programs (found on `PATH` by default).
    pub lp: PathBuf,
    pub lpstat: PathBuf,
    /// For each command; a command still running then is stopped.
    pub timeout: std::time::Duration,
}

impl CupsPrinter {
    pub fn new(queue: &str, timeout: std::time::Duration) -> CupsPrinter {
        CupsPrinter {
            queue: queue.to_string(),
            lp: "lp".into(),
            lpstat: "lpstat".into(),
            timeout,
        }
    }

    fn too_slow(&self, program: &std::path::Path) -> PrintError {
        self.error(format!(
            "{} did not finish within {} ms: is the CUPS service running?",
            program.display(),
            self.timeout.as_millis()
        ))
    }

    fn error(&self, reason: impl std::fmt::Display) -> PrintError {
        PrintError::Cups {
            queue: self.queue.clone(),
            reason: reason.to_string(),
        }
    }

    fn spawn_error(&self, program: &std::path::Path, e: std::io::Error) -> PrintError {
        if e.kind() == std::io::ErrorKind::NotFound {
            self.error(format!(
                "{} is not installed: install the cups-client package",
                program.display()
            ))
        } else {
            self.error(format!("cannot run {}: {e}", program.display()))
        }
    }
}

fn said(out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let text = if text.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout)
    } else {
        text
    };
    text.trim().chars().take(300).collect()
}

#[async_trait::async_trait]
impl Printer for CupsPrinter {
    fn describe(&self) -> String {
        format!("cups {}", self.queue)
    }

    async fn check(&self) -> Result<(), PrintError> {
        let run = Command::new(&self.lpstat)
            .arg("-p")
            .arg(&self.queue)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| self.too_slow(&self.lpstat))?
            .map_err(|e| self.spawn_error(&self.lpstat, e))?;
        if !out.status.success() {
            return Err(self.error(format!("the queue is not known to CUPS: {}", said(&out))));
        }
        if String::from_utf8_lossy(&out.stdout).contains("disabled") {
            return Err(self.error(format!(
                "the queue is disabled: enable it with `cupsenable {}`",
                self.queue
            )));
        }
        Ok(())
    }

    async fn print(&self, job: &PrintJob) -> Result<(), PrintError> {
        let mut child = Command::new(&self.lp)
            .args(["-d", &self.queue, "-o", "raw", "-t"])
            .arg(format!("label {}", job.name))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.spawn_error(&self.lp, e))?;
        let stdin = child.stdin.take();
        let run = async {
            if let Some(mut stdin) = stdin {
                stdin
                    .write_all(job.zpl.as_bytes())
                    .await
                    .map_err(|e| self.error(format!("lp did not take the label: {e}")))?;
            }
            child.wait_with_output().await.map_err(|e| self.error(e))
        };
        let out = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| self.too_slow(&self.lp))??;
        if out.status.success() {
            Ok(())
        } else {
            Err(self.error(said(&out)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[tokio::test]
    async fn sends_raw_zpl_to_the_queue_through_lp() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let lp = script(
            tmp.path(),
            "lp",
            &format!("echo \"$@\" > {0}.args; cat > {0}", out.display()),
        );
        let lpstat = script(
            tmp.path(),
            "lpstat",
            "echo \"printer $2 is idle.  enabled since now\"",
        );
        let p = CupsPrinter {
            lp,
            lpstat,
            ..CupsPrinter::new("zebra1", std::time::Duration::from_secs(5))
        };
        p.check().await.unwrap();
        let job = PrintJob {
            id: 1,
            name: "g".into(),
            zpl: "^XA^FDx^FS^XZ".into(),
        };
        p.print(&job).await.unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "^XA^FDx^FS^XZ");
        let args = std::fs::read_to_string(tmp.path().join("out.args")).unwrap();
        assert_eq!(args.trim(), "-d zebra1 -o raw -t label g");
    }

    #[tokio::test]
    async fn failures_say_what_cups_said() {
        let tmp = tempfile::tempdir().unwrap();
        let p = CupsPrinter {
            timeout: std::time::Duration::from_secs(5),
            queue: "zebra1".into(),
            lp: script(
                tmp.path(),
                "lp",
                "cat >/dev/null; echo 'lp: The printer or class does not exist.' >&2; exit 1",
            ),
            lpstat: script(
                tmp.path(),
                "lpstat",
                "echo 'printer zebra1 disabled since now -'",
            ),
        };
        let job = PrintJob {
            id: 1,
            name: "g".into(),
            zpl: "^XA^XZ".into(),
        };
        let e = p.print(&job).await.unwrap_err().to_string();
        assert!(e.contains("zebra1") && e.contains("does not exist"), "{e}");
        let e = p.check().await.unwrap_err().to_string();
        assert!(e.contains("cupsenable zebra1"), "{e}");
        let missing = CupsPrinter {
            lp: tmp.path().join("nope"),
            lpstat: tmp.path().join("nope"),
            ..CupsPrinter::new("q", std::time::Duration::from_secs(5))
        };
        let e = missing.print(&job).await.unwrap_err().to_string();
        assert!(e.contains("install the cups-client package"), "{e}");
        let hung = CupsPrinter {
            lp: script(tmp.path(), "lp-hung", "sleep 30"),
            lpstat: script(tmp.path(), "lpstat-hung", "sleep 30"),
            ..CupsPrinter::new("q", std::time::Duration::from_millis(200))
        };
        let e = hung.print(&job).await.unwrap_err().to_string();
        assert!(e.contains("did not finish within 200 ms"), "{e}");
        let e = hung.check().await.unwrap_err().to_string();
        assert!(e.contains("is the CUPS service running"), "{e}");
    }
}
