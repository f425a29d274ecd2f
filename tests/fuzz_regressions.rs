//! Inputs that once broke or fooled the engine, kept as plain tests.
//!
//! The first part contains hand-made damaged .npy files: each must fail with a
//! clean [`Error::BadFile`] whose message names the problem. The rest replays
//! what `cargo fuzz` found (fuzz/, scripts/fuzz.sh). The raw fuzzer inputs are
//! kept under tests/fuzz_regressions/TARGET/, where
//! `cargo fuzz run TARGET FILE` (in fuzz/) replays them, and the tests below
//! decode them inline.

use std::path::{Path, PathBuf};

use byzagg::io::{NpyFile, NpyGradients};
use byzagg::{Engine, Error, GradientSource};
use tempfile::TempDir;

/// Builds an .npy file of format `version` (1, 2 or 3) with the header
/// dictionary `dict`, followed by `data`. The header is padded with spaces and
/// a newline so that the data starts at a multiple of 64 bytes, as numpy
/// writes it.
fn npy_bytes(version: u8, dict: &str, data: &[u8]) -> Vec<u8> {
    let length_bytes = if version == 1 { 2 } else { 4 };
    let mut header = dict.as_bytes().to_vec();
    while !(8 + length_bytes + header.len() + 1).is_multiple_of(64) {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut bytes = b"\x93NUMPY".to_vec();
    bytes.extend_from_slice(&[version, 0]);
    if version == 1 {
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(data);
    bytes
}

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Opens `bytes` as an .npy file and returns the BadFile message, failing on
/// success or any other error.
fn bad_file_message(bytes: &[u8]) -> String {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "grads.npy", bytes);
    match NpyFile::open(&path) {
        Err(Error::BadFile {
            path: named,
            message,
        }) => {
            assert_eq!(named, path, "the error names the file");
            message
        }
        Err(other) => panic!("expected Error::BadFile, got {other:?}"),
        Ok(file) => panic!(
            "expected Error::BadFile, the file opened with shape {:?}",
            file.shape()
        ),
    }
}

fn assert_mentions(message: &str, words: &[&str]) {
    for word in words {
        assert!(
            message.to_lowercase().contains(&word.to_lowercase()),
            "message {message:?} does not mention {word:?}"
        );
    }
}

fn f32_data(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

const PLAIN_DICT: &str = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";

#[test]
fn npy_header_length_past_the_end() {
    let mut bytes = npy_bytes(1, PLAIN_DICT, &[]);
    // HEADER_LEN claims 1000 bytes; the file ends after about 64.
    bytes[8..10].copy_from_slice(&1000u16.to_le_bytes());
    let message = bad_file_message(&bytes);
    assert_mentions(&message, &["truncated", "header"]);
}

#[test]
fn npy_header_length_near_4_gib() {
    // A 4-byte HEADER_LEN of 0xFFFF_FFF0 in a 76-byte file: the reader must
    // notice that the header cannot fit before it allocates a buffer for it.
    // The allocation itself is invisible here (the zeroed pages are never
    // touched); the fuzzer's malloc limit caught it. The message names the
    // declared length only when the length is checked first.
    let mut bytes = npy_bytes(2, PLAIN_DICT, &[]);
    bytes[8..12].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let message = bad_file_message(&bytes);
    assert_mentions(&message, &["truncated", "header of 4294967280 bytes"]);
}

#[test]
fn npy_fuzz_header_of_2_gib() {
    // The npy_reader fuzz target's first find (mode byte 0, then the file):
    // 15 bytes whose version 2.0 HEADER_LEN is 0x9300_0074, about 2.3 GiB.
    let input = include_bytes!("fuzz_regressions/npy_reader/oom-version-2-header-length-2-gib");
    let message = bad_file_message(&input[1..]);
    assert_mentions(&message, &["truncated", "header of 2466250868 bytes"]);
}

#[test]
fn npy_file_shorter_than_the_preamble() {
    for bytes in [&b"\x93NUM"[..], b"\x93NUMPY\x01", b"\x93NUMPY\x02\x00\x10"] {
        let message = bad_file_message(bytes);
        assert_mentions(&message, &["truncated"]);
    }
}

#[test]
fn npy_shape_product_overflowing_usize() {
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }";
    let message = bad_file_message(&npy_bytes(1, dict, &[]));
    assert_mentions(&message, &["shape", "too large"]);
}

#[test]
fn npy_shape_bytes_overflowing_usize() {
    // The element count fits in usize, the count times 8 bytes does not.
    let dict = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': ({}, ), }}",
        usize::MAX / 4
    );
    let message = bad_file_message(&npy_bytes(1, &dict, &[]));
    assert_mentions(&message, &["shape", "too large"]);
}

#[test]
fn npy_negative_shape() {
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 3), }";
    let message = bad_file_message(&npy_bytes(1, dict, &[]));
    assert_mentions(&message, &["not a valid .npy", "shape"]);
}

#[test]
fn npy_non_ascii_header_in_version_1() {
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'é': 1}";
    let message = bad_file_message(&npy_bytes(1, dict, &f32_data(&[0.0; 6])));
    assert_mentions(&message, &["not a valid .npy", "non-ascii"]);
}

#[test]
fn npy_non_ascii_descr_in_version_3() {
    // Version 3.0 allows UTF-8 in the header; the dtype is still not a float.
    let dict = "{'descr': '<é4', 'fortran_order': False, 'shape': (2, 3), }";
    let message = bad_file_message(&npy_bytes(3, dict, &f32_data(&[0.0; 6])));
    assert_mentions(&message, &["dtype", "float32"]);
}

#[test]
fn npy_invalid_utf8_header_in_version_3() {
    let mut bytes = npy_bytes(3, PLAIN_DICT, &f32_data(&[0.0; 6]));
    bytes[13] = 0xFF;
    let message = bad_file_message(&bytes);
    assert_mentions(&message, &["not a valid .npy", "utf-8"]);
}

#[test]
fn npy_unknown_version() {
    let bytes = npy_bytes(4, PLAIN_DICT, &f32_data(&[0.0; 6]));
    let message = bad_file_message(&bytes);
    assert_mentions(&message, &["not a valid .npy", "version"]);
}

#[test]
fn npy_fortran_order_missing() {
    let dict = "{'descr': '<f4', 'shape': (2, 3), }";
    let message = bad_file_message(&npy_bytes(1, dict, &f32_data(&[0.0; 6])));
    assert_mentions(&message, &["not a valid .npy", "fortran_order"]);
}

#[test]
fn npy_fortran_order_not_a_boolean() {
    let dict = "{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3), }";
    let message = bad_file_message(&npy_bytes(1, dict, &f32_data(&[0.0; 6])));
    assert_mentions(&message, &["not a valid .npy", "fortran_order"]);
}

#[test]
fn npy_header_without_newline() {
    let mut bytes = npy_bytes(1, PLAIN_DICT, &[]);
    let end = bytes.len() - 1;
    bytes[end] = b' ';
    bytes.extend_from_slice(&f32_data(&[0.0; 6]));
    let message = bad_file_message(&bytes);
    assert_mentions(&message, &["not a valid .npy", "newline"]);
}

/// Versions 2.0 and 3.0 differ from 1.0 only by a 4-byte HEADER_LEN (and
/// UTF-8 for 3.0): both are read like 1.0.
#[test]
fn npy_versions_2_and_3_read_like_version_1() {
    let values = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    for version in [1, 2, 3] {
        let dir = TempDir::new().unwrap();
        let path = write(
            &dir,
            "grads.npy",
            &npy_bytes(version, PLAIN_DICT, &f32_data(&values)),
        );
        let grads = NpyGradients::open(&[path]).unwrap();
        assert_eq!(grads.workers(), 2, "version {version}");
        let mut row = vec![0f32; 3];
        grads.read_into(1, 0, &mut row).unwrap();
        assert_eq!(row, vec![4.0, 5.0, 6.0], "version {version}");
    }
}

/// Replays every fuzzer input saved under tests/fuzz_regressions/npy_reader/
/// through the same calls as the `npy_reader` fuzz target: each must open
/// cleanly or fail with a typed error, never panic.
#[test]
fn saved_npy_reader_inputs_do_not_panic() {
    let saved = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions/npy_reader");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&saved)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no saved inputs in {}", saved.display());
    for input in inputs {
        let bytes = std::fs::read(&input).unwrap();
        let Some((&mode, rest)) = bytes.split_first() else {
            continue;
        };
        let dir = TempDir::new().unwrap();
        let paths = if mode % 2 == 0 {
            vec![write(&dir, "matrix.npy", rest)]
        } else {
            let cut = rest.first().map_or(0, |&b| b as usize).min(rest.len());
            let (a, b) = rest.split_at(cut);
            vec![write(&dir, "w0.npy", a), write(&dir, "w1.npy", b)]
        };
        let Ok(grads) = NpyGradients::open(&paths) else {
            continue;
        };
        let (n, d) = (grads.workers(), grads.dim());
        let mut buffer = vec![0f32; d];
        for worker in 0..n {
            grads.read_into(worker, 0, &mut buffer).unwrap();
        }
        let _ = Engine::cpu().aggregate(&byzagg::Rule::Mean { f: n - 1 }, &grads);
    }
}

/// The rows the `aggregate_api` fuzz target builds: n × d values taken in
/// turn from `bits`, read as f32 bit patterns.
fn rows_from_bits(n: usize, d: usize, bits: &[u32]) -> Vec<Vec<f32>> {
    (0..n)
        .map(|i| {
            (0..d)
                .map(|c| f32::from_bits(bits[(i * d + c) % bits.len()]))
                .collect()
        })
        .collect()
}

#[test]
fn fuzz_multi_krum_distances_overflowing_f32() {
    // Found by the aggregate_api fuzz target (input in
    // tests/fuzz_regressions/aggregate_api/multi-krum-f32-overflow). The
    // values -6.96e36, -4.65e-15 and 195.7 repeat over ten workers of
    // dimension 8, so the squared distances (about 5e73) overflow f32 but not
    // f64. The reference scores fall in three groups: 1.31e75 for workers 0,
    // 3, 6 and 9, 1.45e75 for 2, 5 and 8, 1.60e75 for 1, 4 and 7. Multi-Krum
    // with m = 6 must take the first group and the two lowest indices of the
    // second.
    let rows = rows_from_bits(10, 8, &[4238845863, 2812782591, 1128513056]);
    let rule = byzagg::Rule::MultiKrum { f: 0, m: 6 };
    let want = Engine::reference().aggregate(&rule, &rows).unwrap();
    assert_eq!(want.selected, vec![0, 3, 6, 9, 2, 5], "reference");
    let got = Engine::cpu().aggregate(&rule, &rows).unwrap();
    assert_eq!(got.selected, want.selected, "cpu against the reference");
}

#[test]
fn fuzz_krum_distances_underflowing_f32() {
    // Found by the aggregate_api fuzz target (input in
    // tests/fuzz_regressions/aggregate_api/krum-f32-underflow). The values
    // 3.01e-26, 4.37e-36 and 0 repeat over nine workers of dimension 5, so the
    // squared distances (about 1e-51) underflow to 0 in f32. The reference
    // scores are 1.089e-50 for workers 2, 5 and 8 and 1.18e-50 for the others,
    // 8% apart, so Krum with f = 1 must select worker 2.
    let rows = rows_from_bits(9, 5, &[353709554, 79281317, 0]);
    let rule = byzagg::Rule::Krum { f: 1 };
    let want = Engine::reference().aggregate(&rule, &rows).unwrap();
    assert_eq!(want.selected, vec![2], "reference");
    let got = Engine::cpu().aggregate(&rule, &rows).unwrap();
    assert_eq!(got.selected, want.selected, "cpu against the reference");
}

#[test]
fn mean_with_non_finite_worker_at_n_equal_f_plus_1() {
    // Found by tests/properties.rs, when the reference averaged the three
    // finite workers and the fast pipeline rejected them. Both now apply the
    // rule's requirement n > f to the finite workers, and name the dropped one.
    let rows = vec![vec![1.0f32], vec![f32::NAN], vec![2.0], vec![3.0]];
    let rule = byzagg::Rule::Mean { f: 3 };
    for (name, engine) in [("reference", Engine::reference()), ("cpu", Engine::cpu())] {
        let error = engine.aggregate(&rule, &rows).unwrap_err();
        match error {
            byzagg::Error::TooFewFiniteWorkers {
                finite, non_finite, ..
            } => {
                assert_eq!(finite, 3, "{name}");
                assert_eq!(non_finite, vec![1], "{name}");
            }
            other => panic!("{name}: expected TooFewFiniteWorkers, got {other:?}"),
        }
    }
}
