//! The `byzagg aggregate` and `byzagg distances` commands on real .npy files:
//! every input layout, the report, and every bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use byzagg::{Engine, Rule};
use ndarray::{Array1, Array2};
use ndarray_npy::{read_npy, write_npy};
use tempfile::TempDir;

fn byzagg(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_byzagg"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("byzagg binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Nine workers of dimension 5 with one outlier (worker 6).
fn sample() -> Array2<f32> {
    Array2::from_shape_fn((9, 5), |(i, c)| {
        let base = ((i * 7 + c * 3) % 11) as f32 * 0.01;
        if i == 6 {
            base + 40.0
        } else {
            base
        }
    })
}

fn expected_krum(f: usize) -> byzagg::Aggregation {
    let rows: Vec<Vec<f32>> = sample().rows().into_iter().map(|r| r.to_vec()).collect();
    Engine::reference()
        .aggregate(&Rule::Krum { f }, &rows)
        .unwrap()
}

/// Writes an .npy file byte by byte, for dtypes and damage numpy would not
/// produce on request.
fn write_raw_npy(path: &Path, descr: &str, fortran: bool, shape: &str, data: &[u8]) {
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
        if fortran { "True" } else { "False" }
    );
    let mut header = dict.into_bytes();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

fn run_ok(dir: &Path, args: &[&str]) -> Output {
    let output = byzagg(args, dir);
    assert!(
        output.status.success(),
        "byzagg {args:?} failed: {}",
        stderr(&output)
    );
    output
}

fn assert_output_is_krum(dir: &Path, out: &str) {
    let expected = expected_krum(2);
    let vector: Array1<f32> = read_npy(dir.join(out)).unwrap();
    assert_eq!(vector.to_vec(), expected.vector);
}

#[test]
fn matrix_f32_c_order() {
    let dir = TempDir::new().unwrap();
    write_npy(dir.path().join("g.npy"), &sample()).unwrap();
    run_ok(
        dir.path(),
        &[
            "aggregate",
            "--rule",
            "krum",
            "--f",
            "2",
            "--input",
            "g.npy",
            "--output",
            "out.npy",
            "--backend",
            "cpu",
        ],
    );
    assert_output_is_krum(dir.path(), "out.npy");
}

#[test]
fn matrix_f64_and_fortran_order() {
    let dir = TempDir::new().unwrap();
    write_npy(dir.path().join("g64.npy"), &sample().mapv(|v| v as f64)).unwrap();
    let fortran = sample().t().as_standard_layout().t().to_owned();
    assert!(!fortran.is_standard_layout());
    write_npy(dir.path().join("gf.npy"), &fortran).unwrap();
    for input in ["g64.npy", "gf.npy"] {
        run_ok(
            dir.path(),
            &[
                "aggregate",
                "--f",
                "2",
                "--input",
                input,
                "--output",
                "out.npy",
                "--backend",
                "cpu",
            ],
        );
        assert_output_is_krum(dir.path(), "out.npy");
    }
}

#[test]
fn big_endian_floats_are_read() {
    let dir = TempDir::new().unwrap();
    let data: Vec<u8> = sample().iter().flat_map(|v| v.to_be_bytes()).collect();
    write_raw_npy(&dir.path().join("be.npy"), ">f4", false, "(9, 5)", &data);
    run_ok(
        dir.path(),
        &[
            "aggregate",
            "--f",
            "2",
            "--input",
            "be.npy",
            "--output",
            "out.npy",
            "--backend",
            "cpu",
        ],
    );
    assert_output_is_krum(dir.path(), "out.npy");
}

fn write_worker_files(dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(dir.join("workers")).unwrap();
    sample()
        .rows()
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let name = format!("workers/w{i:02}.npy");
            write_npy(dir.join(&name), &row.to_owned()).unwrap();
            name
        })
        .collect()
}

#[test]
fn one_file_per_worker_and_directory() {
    let dir = TempDir::new().unwrap();
    let names = write_worker_files(dir.path());
    let mut args = vec![
        "aggregate",
        "--f",
        "2",
        "--output",
        "out.npy",
        "--backend",
        "cpu",
        "--input",
    ];
    args.extend(names.iter().map(String::as_str));
    run_ok(dir.path(), &args);
    assert_output_is_krum(dir.path(), "out.npy");

    run_ok(
        dir.path(),
        &[
            "aggregate",
            "--f",
            "2",
            "--input",
            "workers",
            "--output",
            "out2.npy",
            "--backend",
            "cpu",
        ],
    );
    assert_output_is_krum(dir.path(), "out2.npy");
}

#[test]
fn report_has_the_evidence() {
    let dir = TempDir::new().unwrap();
    let mut matrix = sample();
    matrix.row_mut(3).fill(f32::NAN);
    write_npy(dir.path().join("g.npy"), &matrix).unwrap();
    run_ok(
        dir.path(),
        &[
            "aggregate",
            "--rule",
            "multi-krum",
            "--f",
            "2",
            "--m",
            "4",
            "--input",
            "g.npy",
            "--output",
            "out.npy",
            "--report",
            "report.json",
            "--backend",
            "cpu",
        ],
    );
    let text = std::fs::read_to_string(dir.path().join("report.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["rule"], "multi-krum");
    assert_eq!(report["n"], 9);
    assert_eq!(report["d"], 5);
    assert_eq!(report["f"], 2);
    assert_eq!(report["m"], 4);
    assert_eq!(report["backend"], "cpu");
    assert!(report["adapter"].is_null());
    assert_eq!(report["selected"].as_array().unwrap().len(), 4);
    let scores = report["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 9);
    assert!(
        scores[3].is_null(),
        "the NaN worker's score is null: {text}"
    );
    assert!(scores[0].is_number());
    assert_eq!(report["non_finite"], serde_json::json!([3]));
    for stage in ["load", "compute", "write"] {
        assert!(
            report["seconds"][stage].is_number(),
            "seconds.{stage} in {text}"
        );
    }
}

#[test]
fn distances_writes_float64_matrix() {
    let dir = TempDir::new().unwrap();
    write_npy(dir.path().join("g.npy"), &sample()).unwrap();
    run_ok(
        dir.path(),
        &[
            "distances",
            "--input",
            "g.npy",
            "--output",
            "d.npy",
            "--backend",
            "cpu",
        ],
    );
    let matrix: Array2<f64> = read_npy(dir.path().join("d.npy")).unwrap();
    let rows: Vec<Vec<f32>> = sample().rows().into_iter().map(|r| r.to_vec()).collect();
    let expected = Engine::reference().pairwise_sq_distances(&rows).unwrap();
    assert_eq!(matrix.dim(), (9, 9));
    for ((i, j), value) in matrix.indexed_iter() {
        let diff = (value - expected[[i, j]]).abs();
        assert!(
            diff <= 1e-4 * expected[[i, j]] + 1e-9,
            "D[{i}][{j}] = {value}, reference {}",
            expected[[i, j]]
        );
    }
}

/// A bad input: the arguments, what setup writes, and a phrase the message
/// must contain.
struct BadCase {
    name: &'static str,
    args: Vec<&'static str>,
    setup: fn(&Path),
    message: &'static str,
}

fn write_sample(dir: &Path) {
    write_npy(dir.join("g.npy"), &sample()).unwrap();
}

fn bad_cases() -> Vec<BadCase> {
    let common = |input: &'static str| {
        vec![
            "aggregate",
            "--f",
            "2",
            "--backend",
            "cpu",
            "--output",
            "out.npy",
            "--report",
            "report.json",
            "--input",
            input,
        ]
    };
    vec![
        BadCase {
            name: "n too small for f",
            args: vec![
                "aggregate",
                "--f",
                "4",
                "--backend",
                "cpu",
                "--output",
                "out.npy",
                "--input",
                "g.npy",
            ],
            setup: write_sample,
            message: "n > 2f + 2",
        },
        BadCase {
            name: "m zero",
            args: vec![
                "aggregate",
                "--rule",
                "multi-krum",
                "--m",
                "0",
                "--backend",
                "cpu",
                "--output",
                "out.npy",
                "--input",
                "g.npy",
            ],
            setup: write_sample,
            message: "choose m in 1..=9",
        },
        BadCase {
            name: "m above n",
            args: vec![
                "aggregate",
                "--rule",
                "multi-krum",
                "--m",
                "10",
                "--backend",
                "cpu",
                "--output",
                "out.npy",
                "--input",
                "g.npy",
            ],
            setup: write_sample,
            message: "choose m in 1..=9",
        },
        BadCase {
            name: "missing file",
            args: common("missing.npy"),
            setup: |_| {},
            message: "missing.npy",
        },
        BadCase {
            name: "empty directory",
            args: common("empty"),
            setup: |d| std::fs::create_dir(d.join("empty")).unwrap(),
            message: "no .npy files",
        },
        BadCase {
            name: "not an npy",
            args: common("text.npy"),
            setup: |d| std::fs::write(d.join("text.npy"), "hello, world\n").unwrap(),
            message: "not a valid .npy file",
        },
        BadCase {
            name: "empty file",
            args: common("empty.npy"),
            setup: |d| std::fs::write(d.join("empty.npy"), "").unwrap(),
            message: "is empty",
        },
        BadCase {
            name: "truncated data",
            args: common("short.npy"),
            setup: |d| write_raw_npy(&d.join("short.npy"), "<f4", false, "(9, 5)", &[0u8; 100]),
            message: "truncated",
        },
        BadCase {
            name: "truncated header",
            args: common("head.npy"),
            setup: |d| {
                std::fs::write(d.join("head.npy"), b"\x93NUMPY\x01\x00\x76\x00{'descr'").unwrap()
            },
            message: "truncated",
        },
        BadCase {
            name: "integer dtype",
            args: common("int.npy"),
            setup: |d| write_raw_npy(&d.join("int.npy"), "<i8", false, "(9, 5)", &[0u8; 360]),
            message: "integer dtype",
        },
        BadCase {
            name: "bool dtype",
            args: common("bool.npy"),
            setup: |d| write_raw_npy(&d.join("bool.npy"), "|b1", false, "(9, 5)", &[0u8; 45]),
            message: "boolean dtype",
        },
        BadCase {
            name: "complex dtype",
            args: common("c.npy"),
            setup: |d| write_raw_npy(&d.join("c.npy"), "<c8", false, "(9, 5)", &[0u8; 360]),
            message: "complex dtype",
        },
        BadCase {
            name: "3-D array",
            args: common("cube.npy"),
            setup: |d| write_raw_npy(&d.join("cube.npy"), "<f4", false, "(3, 3, 5)", &[0u8; 180]),
            message: "3 dimensions",
        },
        BadCase {
            name: "0-D array",
            args: common("scalar.npy"),
            setup: |d| write_raw_npy(&d.join("scalar.npy"), "<f4", false, "()", &[0u8; 4]),
            message: "0 dimensions",
        },
        BadCase {
            name: "zero workers",
            args: common("none.npy"),
            setup: |d| write_raw_npy(&d.join("none.npy"), "<f4", false, "(0, 5)", &[]),
            message: "zero workers",
        },
        BadCase {
            name: "zero coordinates",
            args: common("flat.npy"),
            setup: |d| write_raw_npy(&d.join("flat.npy"), "<f4", false, "(9, 0)", &[]),
            message: "no coordinates",
        },
        BadCase {
            name: "ragged workers",
            args: common("ragged"),
            setup: |d| {
                write_worker_files(d);
                std::fs::rename(d.join("workers"), d.join("ragged")).unwrap();
                write_npy(d.join("ragged/w04.npy"), &Array1::<f32>::zeros(4)).unwrap();
            },
            message: "w04.npy: holds 4 coordinates",
        },
        BadCase {
            name: "too many non-finite",
            args: common("nan.npy"),
            setup: |d| {
                let mut matrix = sample();
                for i in [1, 4, 7] {
                    matrix[[i, 2]] = f32::NAN;
                }
                write_npy(d.join("nan.npy"), &matrix).unwrap();
            },
            message: "workers [1, 4, 7] sent non-finite values",
        },
        BadCase {
            name: "negative f",
            args: vec![
                "aggregate",
                "--f",
                "-1",
                "--output",
                "out.npy",
                "--input",
                "g.npy",
            ],
            setup: write_sample,
            message: "--f",
        },
        BadCase {
            name: "f not a number",
            args: vec![
                "aggregate",
                "--f",
                "two",
                "--output",
                "out.npy",
                "--input",
                "g.npy",
            ],
            setup: write_sample,
            message: "--f",
        },
        BadCase {
            name: "unwritable output",
            args: vec![
                "aggregate",
                "--backend",
                "cpu",
                "--output",
                "no/such/dir/out.npy",
                "--input",
                "g.npy",
            ],
            setup: write_sample,
            message: "no/such/dir",
        },
        BadCase {
            name: "output is input",
            args: vec![
                "aggregate",
                "--backend",
                "cpu",
                "--output",
                "g.npy",
                "--input",
                "g.npy",
            ],
            setup: write_sample,
            message: "also an input",
        },
    ]
}

#[test]
fn bad_inputs_fail_cleanly() {
    for case in bad_cases() {
        let dir = TempDir::new().unwrap();
        (case.setup)(dir.path());
        // A stale result from an earlier run must not survive a failure.
        std::fs::write(dir.path().join("out.npy"), "stale").unwrap();
        let output = byzagg(&case.args, dir.path());
        let message = stderr(&output);
        assert!(
            !output.status.success(),
            "{}: exit status {:?}",
            case.name,
            output.status
        );
        assert!(
            message.contains(case.message),
            "{}: message {message:?} lacks {:?}",
            case.name,
            case.message
        );
        assert!(!message.contains("panicked"), "{}: {message}", case.name);
        // Argument errors stop before the output path is known, an output
        // that is also an input must survive, and the unwritable case writes
        // elsewhere.
        let keeps_output = [
            "output is input",
            "negative f",
            "f not a number",
            "unwritable output",
        ]
        .contains(&case.name);
        if !keeps_output {
            assert!(
                !dir.path().join("out.npy").exists(),
                "{}: out.npy left behind",
                case.name
            );
        }
        assert!(
            !dir.path().join("report.json").exists(),
            "{}: report left behind",
            case.name
        );
        let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{}: temporary files left: {leftovers:?}",
            case.name
        );
    }
}

#[test]
fn gpu_backend_without_adapter_names_the_fix() {
    let dir = TempDir::new().unwrap();
    write_sample(dir.path());
    let output = Command::new(env!("CARGO_BIN_EXE_byzagg"))
        .args([
            "aggregate",
            "--backend",
            "gpu",
            "--adapter",
            "no-such-adapter-xyz",
            "--output",
            "out.npy",
            "--input",
            "g.npy",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("no GPU adapter found"), "{message}");
    assert!(message.contains("no-such-adapter-xyz"), "{message}");
    // With adapters present the fix is to name one of them, otherwise to
    // install a driver.
    let fix_named = message.contains("byzagg devices") || message.contains("mesa-vulkan-drivers");
    assert!(fix_named, "{message}");
    assert!(!dir.path().join("out.npy").exists());
}

/// Nine workers of 250,000 coordinates (9 MB of float32), with worker 2 an
/// outlier.
fn large_sample() -> Array2<f32> {
    Array2::from_shape_fn((9, 250_000), |(i, c)| {
        let value = ((i * 31 + c * 17) % 101) as f32 * 1e-3;
        if i == 2 {
            value + 5.0
        } else {
            value
        }
    })
}

#[test]
fn input_larger_than_memory_cap_aggregates() {
    let dir = TempDir::new().unwrap();
    let matrix = large_sample();
    write_npy(dir.path().join("big.npy"), &matrix).unwrap();
    let rows: Vec<Vec<f32>> = matrix.rows().into_iter().map(|r| r.to_vec()).collect();
    let expected = Engine::reference()
        .aggregate(&Rule::MultiKrum { f: 2, m: 5 }, &rows)
        .unwrap();

    let mut backends = vec!["cpu"];
    if common::gpu_engine(
        &byzagg::gpu::AdapterFilter::from_env(),
        "the GPU memory cap",
    )
    .is_some()
    {
        backends.push("gpu");
    }
    for backend in backends {
        let args = [
            "aggregate",
            "--rule",
            "multi-krum",
            "--f",
            "2",
            "--m",
            "5",
            "--max-memory",
            "1M",
            "--backend",
            backend,
            "--input",
            "big.npy",
            "--output",
            "out.npy",
            "--report",
            "report.json",
        ];
        run_ok(dir.path(), &args);
        let vector: Array1<f32> = read_npy(dir.path().join("out.npy")).unwrap();
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
                .unwrap();
        let selected: Vec<usize> = serde_json::from_value(report["selected"].clone()).unwrap();
        assert_eq!(selected, expected.selected, "backend {backend}");
        for (c, (got, want)) in vector.iter().zip(&expected.vector).enumerate() {
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "backend {backend}: coordinate {c}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn reference_over_memory_cap_is_rejected() {
    let dir = TempDir::new().unwrap();
    write_npy(dir.path().join("big.npy"), &large_sample()).unwrap();
    let output = byzagg(
        &[
            "aggregate",
            "--f",
            "2",
            "--max-memory",
            "1M",
            "--backend",
            "reference",
            "--input",
            "big.npy",
            "--output",
            "out.npy",
        ],
        dir.path(),
    );
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("memory budget of 1048576 bytes"),
        "{message}"
    );
    assert!(message.contains("raise --max-memory"), "{message}");
    assert!(!dir.path().join("out.npy").exists());
}

#[test]
fn max_memory_rejects_bad_sizes() {
    let dir = TempDir::new().unwrap();
    write_sample(dir.path());
    for size in ["0", "-5", "12Q", "lots"] {
        let output = byzagg(
            &[
                "aggregate",
                "--max-memory",
                size,
                "--input",
                "g.npy",
                "--output",
                "out.npy",
            ],
            dir.path(),
        );
        assert!(!output.status.success(), "size {size}");
        assert!(
            stderr(&output).contains("invalid size"),
            "size {size}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn devices_quiet_without_runtime_dir() {
    let dir = tempfile::tempdir().unwrap();
    for runtime_dir in [None, Some("relative/dir")] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_byzagg"));
        command.arg("devices").current_dir(dir.path());
        match runtime_dir {
            None => command.env_remove("XDG_RUNTIME_DIR"),
            Some(value) => command.env("XDG_RUNTIME_DIR", value),
        };
        let output = command.output().expect("running byzagg devices");
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(
            !stderr(&output).contains("XDG_RUNTIME_DIR"),
            "XDG_RUNTIME_DIR = {runtime_dir:?}: {}",
            stderr(&output)
        );
    }
}

/// Runs Krum with f = 2 from `input` to `output` in `dir`.
fn krum_from_to(dir: &Path, input: &str, output: &str) -> Output {
    let args = ["aggregate", "--rule", "krum", "--f", "2"];
    byzagg(
        &[&args[..], &["--input", input, "--output", output]].concat(),
        dir,
    )
}

#[test]
fn missing_output_folder_is_named() {
    let dir = TempDir::new().unwrap();
    write_sample(dir.path());
    let output = krum_from_to(dir.path(), "g.npy", "no-dir/out.npy");
    let message = stderr(&output);
    assert!(!output.status.success());
    assert!(
        message.contains("the folder no-dir does not exist"),
        "{message}"
    );
    // The temporary file's random name means nothing to the user.
    assert!(!message.contains(".tmp"), "{message}");
}

#[test]
fn missing_input_cause_printed_once() {
    let dir = TempDir::new().unwrap();
    let output = krum_from_to(dir.path(), "missing.npy", "o.npy");
    let message = stderr(&output);
    assert!(!output.status.success());
    assert!(message.contains("missing.npy"), "{message}");
    assert_eq!(message.matches("os error").count(), 1, "{message}");
}
