//! Writing a file whole: into a temporary file beside it
//! (`.NAME.partial`), synced, then renamed over it. A reader sees the old
//! file or the new one, never half of one; the temporary file is removed
//! if anything fails. Used for label spool files, report exports and the
//! CA's chain.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary name `write_replacing` uses for `path`.
pub fn partial_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    path.with_file_name(format!(".{name}.partial"))
}

/// Writes `path` whole with `write`. Its folder must exist.
pub fn write_replacing<E: From<std::io::Error>>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = partial_name(path);
    let result = (|| {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        write(&mut f)?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_partial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.pem");
        write_replacing::<std::io::Error>(&path, |w| w.write_all(b"old")).unwrap();
        let failed = write_replacing::<std::io::Error>(&path, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk gone"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(!partial_name(&path).exists());
        write_replacing::<std::io::Error>(&path, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
}
