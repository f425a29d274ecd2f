//! Gradient files in NumPy's .npy format, read through a memory map.
//!
//! A file is never loaded whole: workers read their coordinates slice by slice
//! from the map, so an input larger than memory still aggregates. Native
//! little-endian float32 rows in C order are handed to the backends without a
//! copy; float64, big-endian and Fortran-order data are converted per slice.

use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use ndarray_npy::npy::header::{Header, Layout, ReadHeaderError};

use crate::{Error, GradientSource, Result};

/// Element type of a float .npy file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatType {
    /// float32.
    F32,
    /// float64, converted to float32 when read.
    F64,
}

impl FloatType {
    fn size(self) -> usize {
        match self {
            FloatType::F32 => 4,
            FloatType::F64 => 8,
        }
    }
}

/// One memory-mapped float .npy file with its parsed header.
pub struct NpyFile {
    path: PathBuf,
    map: Mmap,
    data_offset: usize,
    float_type: FloatType,
    big_endian: bool,
    fortran: bool,
    shape: Vec<usize>,
}

fn bad_file(path: &Path, message: impl Into<String>) -> Error {
    Error::BadFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Maps a dtype descriptor such as `<f4` to its float type and byte order.
fn parse_descriptor(path: &Path, descriptor: &str) -> Result<(FloatType, bool)> {
    let (order, kind) = match descriptor.chars().next() {
        Some(c @ ('<' | '>' | '=' | '|')) => (c, &descriptor[1..]),
        _ => ('=', descriptor),
    };
    let big_endian = match order {
        '>' => true,
        '<' | '|' => false,
        _ => cfg!(target_endian = "big"),
    };
    let float_type = match kind {
        "f4" => FloatType::F32,
        "f8" => FloatType::F64,
        other => {
            let name = match other.chars().next() {
                Some('i') | Some('u') => "an integer",
                Some('b') => "a boolean",
                Some('c') => "a complex",
                Some('f') => "an unsupported float",
                _ => "a non-float",
            };
            return Err(bad_file(
                path,
                format!(
                    "has {name} dtype {descriptor:?}; byzagg reads float32 or float64 arrays, \
                     convert with numpy's x.astype(np.float32)"
                ),
            ));
        }
    };
    Ok((float_type, big_endian))
}

fn header_error(path: &Path, error: ReadHeaderError) -> Error {
    match error {
        ReadHeaderError::Io(source) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            bad_file(
                path,
                "is truncated inside the .npy header; write it again with numpy.save",
            )
        }
        other => bad_file(
            path,
            format!("is not a valid .npy file ({other}); write gradients with numpy.save"),
        ),
    }
}

/// Rejects a preamble whose HEADER_LEN runs past the end of the file, before
/// ndarray-npy allocates a buffer of that length (up to 4 GiB in versions 2.0
/// and 3.0). Anything else is left to [`Header::from_reader`] to report.
fn check_header_length(path: &Path, bytes: &[u8]) -> Result<()> {
    // 6 magic bytes, 2 version bytes, then HEADER_LEN in little-endian: 2
    // bytes in version 1.0, 4 bytes in versions 2.0 and 3.0.
    let length_bytes = match bytes.get(6) {
        Some(1) => 2,
        Some(2 | 3) => 4,
        _ => return Ok(()),
    };
    let Some(field) = bytes.get(8..8 + length_bytes) else {
        return Ok(());
    };
    let header_len = field
        .iter()
        .rev()
        .fold(0u64, |acc, &byte| acc << 8 | u64::from(byte));
    let needed = 8 + length_bytes as u64 + header_len;
    if bytes.starts_with(b"\x93NUMPY") && needed > bytes.len() as u64 {
        return Err(bad_file(
            path,
            format!(
                "is truncated inside the .npy header: it declares a header of {header_len} bytes \
                 but the file has {} bytes in all; write it again with numpy.save",
                bytes.len()
            ),
        ));
    }
    Ok(())
}

impl NpyFile {
    /// Opens and maps `path`, checking its header, dtype and size.
    pub fn open(path: &Path) -> Result<Self> {
        let io_error = |cause| Error::Io {
            path: path.to_path_buf(),
            cause,
        };
        let file = File::open(path).map_err(io_error)?;
        let length = file.metadata().map_err(io_error)?.len();
        if length == 0 {
            return Err(bad_file(
                path,
                "is empty, not an .npy file; write gradients with numpy.save",
            ));
        }
        // SAFETY: the map is read-only. If another process truncates the file
        // while it is mapped, reads may fault: gradient files are expected to
        // stay unchanged while byzagg runs.
        let map = unsafe { Mmap::map(&file) }.map_err(io_error)?;
        check_header_length(path, &map)?;
        let mut cursor = Cursor::new(&map[..]);
        let header = Header::from_reader(&mut cursor).map_err(|e| header_error(path, e))?;
        let data_offset = cursor.position() as usize;
        // The descriptor is a Python literal: a quoted string such as '<f4'
        // for plain dtypes, a list for structured ones.
        let literal = header.type_descriptor.to_string();
        let descriptor = match literal.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
            Some(descriptor) => descriptor.to_string(),
            None => {
                return Err(bad_file(
                    path,
                    format!("has a structured dtype {literal}; byzagg reads plain float32 or float64 arrays"),
                ))
            }
        };
        let (float_type, big_endian) = parse_descriptor(path, &descriptor)?;
        let count = header
            .shape
            .iter()
            .try_fold(1usize, |acc, &len| acc.checked_mul(len))
            .and_then(|count| count.checked_mul(float_type.size()))
            .ok_or_else(|| {
                bad_file(
                    path,
                    format!("declares a shape {:?} too large to address", header.shape),
                )
            })?;
        let available = map.len() - data_offset;
        if available < count {
            return Err(bad_file(
                path,
                format!(
                    "is truncated: its header declares shape {:?} ({count} bytes of data) but only \
                     {available} bytes follow; write it again with numpy.save",
                    header.shape
                ),
            ));
        }
        if available > count {
            return Err(bad_file(
                path,
                format!(
                    "has {} bytes after the data its header declares (shape {:?}); \
                     the file is damaged or not written by numpy.save",
                    available - count,
                    header.shape
                ),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            map,
            data_offset,
            float_type,
            big_endian,
            fortran: header.layout == Layout::Fortran,
            shape: header.shape,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The array's shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element type on disk.
    pub fn float_type(&self) -> FloatType {
        self.float_type
    }

    fn data(&self) -> &[u8] {
        &self.map[self.data_offset..]
    }

    /// Reads the element with flat index `index` (in the file's own order).
    fn element(&self, index: usize) -> f32 {
        let size = self.float_type.size();
        let bytes = &self.data()[index * size..(index + 1) * size];
        match (self.float_type, self.big_endian) {
            (FloatType::F32, false) => f32::from_le_bytes(bytes.try_into().expect("4 bytes")),
            (FloatType::F32, true) => f32::from_be_bytes(bytes.try_into().expect("4 bytes")),
            (FloatType::F64, false) => {
                f64::from_le_bytes(bytes.try_into().expect("8 bytes")) as f32
            }
            (FloatType::F64, true) => f64::from_be_bytes(bytes.try_into().expect("8 bytes")) as f32,
        }
    }

    /// The native float32 data as one slice, when the file stores exactly that.
    fn native_f32(&self) -> Option<&[f32]> {
        let native =
            self.float_type == FloatType::F32 && self.big_endian == cfg!(target_endian = "big");
        if !native {
            return None;
        }
        bytemuck::try_cast_slice(self.data()).ok()
    }
}

/// Gradients stored in .npy files: one (n, d) matrix, or one 1-D file per
/// worker.
pub enum NpyGradients {
    /// One 2-D file of shape (n, d).
    Matrix(NpyFile),
    /// One 1-D file per worker, in the given order.
    Workers(Vec<NpyFile>),
}

impl NpyGradients {
    /// Opens the gradients in `inputs`: a single 2-D .npy file, or 1-D .npy
    /// files and directories of them (each directory's `*.npy` files sorted by
    /// name).
    pub fn open(inputs: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        for input in inputs {
            if input.is_dir() {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(input)
                    .map_err(|cause| Error::Io {
                        path: input.clone(),
                        cause,
                    })?
                    .filter_map(|entry| entry.ok().map(|e| e.path()))
                    .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "npy"))
                    .collect();
                if entries.is_empty() {
                    return Err(bad_file(
                        input,
                        "is a directory with no .npy files; pass a directory of per-worker .npy files",
                    ));
                }
                entries.sort();
                files.extend(entries);
            } else {
                files.push(input.clone());
            }
        }
        if files.is_empty() {
            return Err(Error::NoWorkers);
        }
        let opened = files
            .iter()
            .map(|path| NpyFile::open(path))
            .collect::<Result<Vec<_>>>()?;
        Self::from_files(opened)
    }

    fn from_files(mut files: Vec<NpyFile>) -> Result<Self> {
        for file in &files {
            let ndim = file.shape.len();
            if ndim == 2 && files.len() > 1 {
                return Err(bad_file(
                    &file.path,
                    format!(
                        "is a 2-D array of shape {:?}, but several inputs were given; \
                         pass one (n, d) file, or one 1-D file per worker",
                        file.shape
                    ),
                ));
            }
            if ndim == 0 || ndim > 2 {
                return Err(bad_file(
                    &file.path,
                    format!(
                        "has {ndim} dimensions (shape {:?}); pass a 2-D (n, d) array with one \
                         worker per row, or one 1-D array per worker",
                        file.shape
                    ),
                ));
            }
        }
        if files.len() == 1 && files[0].shape.len() == 2 {
            let matrix = files.remove(0);
            if matrix.shape[0] == 0 {
                return Err(bad_file(
                    &matrix.path,
                    "has shape (0, d): zero workers; pass at least one row",
                ));
            }
            if matrix.shape[1] == 0 {
                return Err(bad_file(
                    &matrix.path,
                    "has shape (n, 0): the gradients have no coordinates",
                ));
            }
            return Ok(NpyGradients::Matrix(matrix));
        }
        let expected = files[0].shape[0];
        for file in &files {
            if file.shape[0] != expected {
                return Err(bad_file(
                    &file.path,
                    format!(
                        "holds {} coordinates but {} holds {expected}; every worker's gradient must \
                         have the same length",
                        file.shape[0],
                        files[0].path.display()
                    ),
                ));
            }
        }
        if expected == 0 {
            return Err(bad_file(
                &files[0].path,
                "has shape (0,): the gradients have no coordinates",
            ));
        }
        Ok(NpyGradients::Workers(files))
    }

    /// The files read, one per worker, or the single matrix file.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            NpyGradients::Matrix(file) => vec![file.path()],
            NpyGradients::Workers(files) => files.iter().map(|f| f.path()).collect(),
        }
    }

    /// Number of coordinates d.
    pub fn dim(&self) -> usize {
        match self {
            NpyGradients::Matrix(file) => file.shape[1],
            NpyGradients::Workers(files) => files[0].shape[0],
        }
    }
}

impl GradientSource for NpyGradients {
    fn workers(&self) -> usize {
        match self {
            NpyGradients::Matrix(file) => file.shape[0],
            NpyGradients::Workers(files) => files.len(),
        }
    }

    fn len_of(&self, worker: usize) -> usize {
        match self {
            NpyGradients::Matrix(file) => file.shape[1],
            NpyGradients::Workers(files) => files[worker].shape[0],
        }
    }

    fn row(&self, worker: usize) -> Option<&[f32]> {
        match self {
            NpyGradients::Matrix(file) if !file.fortran => {
                let d = file.shape[1];
                file.native_f32()
                    .map(|data| &data[worker * d..(worker + 1) * d])
            }
            NpyGradients::Matrix(_) => None,
            NpyGradients::Workers(files) => files[worker].native_f32(),
        }
    }

    fn read_into(&self, worker: usize, start: usize, out: &mut [f32]) -> Result<()> {
        if let Some(row) = self.row(worker) {
            out.copy_from_slice(&row[start..start + out.len()]);
            return Ok(());
        }
        match self {
            NpyGradients::Matrix(file) => {
                let (n, d) = (file.shape[0], file.shape[1]);
                for (offset, value) in out.iter_mut().enumerate() {
                    let c = start + offset;
                    let index = if file.fortran {
                        c * n + worker
                    } else {
                        worker * d + c
                    };
                    *value = file.element(index);
                }
            }
            NpyGradients::Workers(files) => {
                for (offset, value) in out.iter_mut().enumerate() {
                    *value = files[worker].element(start + offset);
                }
            }
        }
        Ok(())
    }
}

/// Writes `array` as an .npy file at `path` through a temporary file in the
/// same directory, renamed over `path` only once complete.
pub fn write_npy_atomic<A: ndarray_npy::WritableElement>(
    path: &Path,
    array: &ndarray::ArrayViewD<'_, A>,
) -> Result<()> {
    crate::io::write_atomic(path, |file| {
        use ndarray_npy::WriteNpyExt;
        array
            .write_npy(std::io::BufWriter::new(file))
            .map_err(|e| std::io::Error::other(e.to_string()))
    })
}
