//! The IDX format of the MNIST files, plain or gzipped.
//!
//! An IDX file starts with a big-endian u32 magic number, 0x0000_08_NN where
//! 0x08 means unsigned bytes and NN is the number of dimensions, then one
//! big-endian u32 per dimension, then the values in row-major order. MNIST
//! images use magic 2051 (three dimensions: count, rows, columns) and labels
//! magic 2049 (one dimension: count).

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use ndarray::Array2;

use crate::{Error, Result};

/// Magic number of an IDX file of unsigned bytes with three dimensions.
pub const IMAGES_MAGIC: u32 = 2051;
/// Magic number of an IDX file of unsigned bytes with one dimension.
pub const LABELS_MAGIC: u32 = 2049;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Returns the path of `base` in `dir`, else of `base.gz`, if either exists.
pub fn find(dir: &Path, base: &str) -> Option<PathBuf> {
    [base.to_string(), format!("{base}.gz")]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

/// Reads the bytes of `path`, decompressed when the file is gzipped (detected by
/// its first two bytes, not by its name).
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let io_error = |cause| Error::Io {
        path: path.to_path_buf(),
        cause,
    };
    let raw = std::fs::read(path).map_err(io_error)?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut bytes = Vec::new();
    GzDecoder::new(raw.as_slice())
        .read_to_end(&mut bytes)
        .map_err(|error| Error::BadFile {
            path: path.to_path_buf(),
            message: format!("invalid gzip data ({error}); download the file again"),
        })?;
    Ok(bytes)
}

fn bad(path: &Path, message: String) -> Error {
    Error::BadFile {
        path: path.to_path_buf(),
        message,
    }
}

/// Parses the header of an IDX file of unsigned bytes whose magic must be
/// `magic`; returns the dimensions and the values that follow.
fn parse<'a>(path: &Path, bytes: &'a [u8], magic: u32) -> Result<(Vec<usize>, &'a [u8])> {
    let word = |i: usize| -> Option<u32> {
        let b = bytes.get(4 * i..4 * i + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let kind = if magic == IMAGES_MAGIC {
        "images"
    } else {
        "labels"
    };
    let found = word(0).ok_or_else(|| {
        bad(
            path,
            format!(
                "file of {} bytes is too short for an IDX header; expected an MNIST {kind} file",
                bytes.len()
            ),
        )
    })?;
    if found != magic {
        return Err(bad(
            path,
            format!("magic number {found} is not {magic}; expected an MNIST {kind} IDX file (idx3-ubyte for images, idx1-ubyte for labels)"),
        ));
    }

    let rank = (magic & 0xff) as usize;
    let mut dims = Vec::with_capacity(rank);
    for i in 1..=rank {
        let dim = word(i).ok_or_else(|| {
            bad(
                path,
                "the IDX header is truncated; download the file again".to_string(),
            )
        })?;
        dims.push(dim as usize);
    }
    let header = 4 * (rank + 1);
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let body = &bytes[header..];
    if expected != Some(body.len()) {
        return Err(bad(
            path,
            format!(
                "the header announces dimensions {dims:?} but {} value bytes follow; download the file again",
                body.len()
            ),
        ));
    }
    Ok((dims, body))
}

/// Reads an MNIST images file: one row per image, pixels scaled from
/// 0..=255 to [0, 1].
pub fn read_images(path: &Path) -> Result<Array2<f32>> {
    let bytes = read_bytes(path)?;
    let (dims, body) = parse(path, &bytes, IMAGES_MAGIC)?;
    let pixels = dims[1] * dims[2];
    let values = body.iter().map(|&b| b as f32 / 255.0).collect();
    Array2::from_shape_vec((dims[0], pixels), values)
        .map_err(|error| bad(path, format!("cannot shape the images ({error})")))
}

/// Reads an MNIST labels file; every label must be a digit 0–9.
pub fn read_labels(path: &Path) -> Result<Vec<usize>> {
    let bytes = read_bytes(path)?;
    let (_, body) = parse(path, &bytes, LABELS_MAGIC)?;
    if let Some(i) = body.iter().position(|&b| b > 9) {
        return Err(bad(
            path,
            format!(
                "label {} at index {i} is not a digit 0–9; expected an MNIST labels file",
                body[i]
            ),
        ));
    }
    Ok(body.iter().map(|&b| b as usize).collect())
}

/// Reads the images file `images` and labels file `labels` (base names,
/// with or without `.gz`) from `dir` and checks that their counts match.
pub fn read_pair(dir: &Path, images: &str, labels: &str) -> Result<(Array2<f32>, Vec<usize>)> {
    let locate = |base: &str| {
        find(dir, base).ok_or_else(|| Error::DataNotFound {
            path: dir.join(format!("{base}.gz")),
            fix: format!(
                "put the MNIST IDX file {base} (gzipped or not) in {} or pass --data-dir the folder that holds it",
                dir.display()
            ),
        })
    };
    let images_path = locate(images)?;
    let labels_path = locate(labels)?;
    let features = read_images(&images_path)?;
    let targets = read_labels(&labels_path)?;
    if features.nrows() != targets.len() {
        return Err(bad(
            &labels_path,
            format!(
                "holds {} labels but {} holds {} images; use the labels file that belongs to those images",
                targets.len(),
                images_path.display(),
                features.nrows()
            ),
        ));
    }
    Ok((features, targets))
}
