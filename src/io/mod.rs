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
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io_error)?;
    write(temp.as_file_mut()).map_err(io_error)?;
    temp.as_file_mut().flush().map_err(io_error)?;
    temp.persist(path).map_err(|e| io_error(e.error))?;
    Ok(())
}
