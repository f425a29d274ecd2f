//! Readers and writers of gradient files.

pub mod npy;

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

pub use npy::{NpyFile, NpyGradients};

/// Writes a file atomically: `write` fills a temporary file in the same
/// directory, which replaces `path` only when complete, so a failure never
/// leaves a partial file.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let io_error = |cause| Error::Io {
        path: path.to_path_buf(),
        cause,
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::BadFile {
            path: path.to_path_buf(),
            message: format!(
                "the folder {} does not exist; create it or write somewhere else",
                dir.display()
            ),
        });
    }
    // tempfile appends the temporary file's random name to its errors,
    // which means nothing to the caller, so only the error's kind is kept.
    let mut temp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|error| io_error(std::io::Error::from(error.kind())))?;
    write(temp.as_file_mut()).map_err(io_error)?;
    temp.as_file_mut().flush().map_err(io_error)?;
    temp.persist(path).map_err(|e| io_error(e.error))?;
    Ok(())
}
