//! The spool backend: each label becomes a `.zpl` file in a folder, for the
//! demo, or for a print server that watches the folder.

use std::path::PathBuf;

use super::{PrintError, PrintJob, Printer};

pub struct SpoolPrinter {
    pub dir: PathBuf,
}

impl SpoolPrinter {
    fn error(&self, reason: impl std::fmt::Display) -> PrintError {
        PrintError::Spool {
            dir: self.dir.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// The file a job is written to: its id first, so files sort in the
    /// order they were queued, and a reprint never overwrites a label.
    pub fn file_name(job: &PrintJob) -> String {
        let name: String = job
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{:08}-{name}.zpl", job.id)
    }
}

#[async_trait::async_trait]
impl Printer for SpoolPrinter {
    fn describe(&self) -> String {
        format!("spool {}", self.dir.display())
    }

    /// Ready if the folder exists, or could be made by the first label
    /// (its nearest existing ancestor is a folder). Makes nothing.
    async fn check(&self) -> Result<(), PrintError> {
        let mut at = self.dir.as_path();
        loop {
            match tokio::fs::metadata(at).await {
                Ok(meta) if meta.is_dir() => return Ok(()),
                Ok(_) => return Err(self.error(format!("{} is not a folder", at.display()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => match at.parent() {
                    Some(p) => at = p,
                    None => return Err(self.error(e)),
                },
                Err(e) => return Err(self.error(e)),
            }
        }
    }

    /// Writes the file under a temporary name and renames it, so a reader
    /// of the folder never sees half a label.
    async fn print(&self, job: &PrintJob) -> Result<(), PrintError> {
        let dir = self.dir.clone();
        let name = Self::file_name(job);
        let zpl = job.zpl.clone();
        let done = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            crate::files::write_replacing(&dir.join(&name), |f| f.write_all(zpl.as_bytes()))
        })
        .await
        .map_err(|e| self.error(e))?;
        done.map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_whole_files_and_names_a_missing_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let p = SpoolPrinter {
            dir: tmp.path().join("spool"),
        };
        let job = PrintJob {
            id: 7,
            name: "ab/../c".into(),
            zpl: "^XA^XZ".into(),
        };
        p.check().await.unwrap();
        assert!(!tmp.path().join("spool").exists(), "a check makes nothing");
        p.print(&job).await.unwrap();
        let written =
            std::fs::read_to_string(tmp.path().join("spool/00000007-ab____c.zpl")).unwrap();
        assert_eq!(written, "^XA^XZ");
        p.check().await.unwrap();
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        let bad = SpoolPrinter {
            dir: file.join("labels"),
        };
        let e = bad.print(&job).await.unwrap_err();
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        assert_eq!(bad.check().await.unwrap_err().code(), "spool_failed");
    }
}
