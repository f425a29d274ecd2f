//! The Byzantine SGD simulation: attacks against their definitions, the
//! MNIST IDX loader, short training runs through the library and the CLI,
//! and invalid combinations rejected before training.

use std::path::{Path, PathBuf};
use std::process::Command;

use byzagg::train::{
    alie_z, curves_csv, inverse_normal_cdf, Attack, Dataset, Experiment, ModelKind, RunResult,
    TrainConfig, CSV_HEADER, DEFAULT_IPM_EPSILON,
};
use byzagg::{Engine, Error};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Two honest gradients with coordinate-wise mean [2, 4] and population
/// standard deviation [1, 2].
fn honest() -> Vec<Vec<f32>> {
    vec![vec![1.0, 2.0], vec![3.0, 6.0]]
}

fn craft(attack: Attack, f: usize) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(5);
    attack
        .craft(&honest(), f, &mut rng)
        .expect("a gradient attack crafts vectors")
}

fn assert_all_equal(crafted: &[Vec<f32>], expected: &[f32], f: usize, attack: &str) {
    assert_eq!(crafted.len(), f, "{attack}: number of Byzantine vectors");
    for (b, vector) in crafted.iter().enumerate() {
        assert_eq!(vector.len(), expected.len(), "{attack}: worker {b} length");
        for (c, (&got, &want)) in vector.iter().zip(expected).enumerate() {
            assert!(
                (got - want).abs() <= 1e-6,
                "{attack}: worker {b}, coordinate {c}: got {got}, expected {want}, tolerance 1e-6"
            );
        }
    }
}

#[test]
fn omniscient_is_scaled_negated_mean() {
    assert_all_equal(
        &craft(Attack::Omniscient { factor: 100.0 }, 3),
        &[-200.0, -400.0],
        3,
        "omniscient",
    );
}

#[test]
fn sign_flip_is_negated_mean() {
    assert_all_equal(&craft(Attack::SignFlip, 2), &[-2.0, -4.0], 2, "sign-flip");
}

#[test]
fn ipm_is_epsilon_negated_mean() {
    let attack = Attack::from_name("ipm", 10, 2, None).expect("ipm");
    assert_eq!(
        attack,
        Attack::Ipm {
            epsilon: DEFAULT_IPM_EPSILON
        }
    );
    assert_all_equal(&craft(attack, 2), &[-0.2, -0.4], 2, "ipm");
}

#[test]
fn alie_is_mean_minus_z_std() {
    assert_all_equal(&craft(Attack::Alie { z: 1.5 }, 2), &[0.5, 1.0], 2, "alie");
}

#[test]
fn alie_z_follows_baruch() {
    // n = 20, f = 6: s = ⌊20/2 + 1⌋ − 6 = 5 and z = Φ⁻¹(15/20).
    let z = alie_z(20, 6).expect("z for n = 20, f = 6");
    assert!((z - 0.674_489_750_196_081_7).abs() < 1e-8, "z = {z}");
    let attack = Attack::from_name("alie", 20, 6, None).expect("alie");
    assert_eq!(attack, Attack::Alie { z });
    let overridden = Attack::from_name("alie", 20, 6, Some(2.0)).expect("alie with a scale");
    assert_eq!(overridden, Attack::Alie { z: 2.0 });
}

#[test]
fn alie_rejects_infinite_z() {
    // f = 11 of n = 20: s = 0, so z = Φ⁻¹(1) is infinite.
    let error = Attack::from_name("alie", 20, 11, None).expect_err("infinite z");
    assert!(matches!(error, Error::InvalidConfig { .. }), "{error}");
}

#[test]
fn inverse_normal_cdf_known_values() {
    for (p, expected) in [
        (0.5, 0.0),
        (0.975, 1.959_963_984_540_054),
        (0.01, -2.326_347_874_040_841),
        (0.841_344_746_068_542_9, 1.0),
    ] {
        let got = inverse_normal_cdf(p);
        assert!(
            (got - expected).abs() < 1e-8,
            "Φ⁻¹({p}) = {got}, expected {expected}"
        );
    }
}

#[test]
fn mimic_copies_honest_worker_zero() {
    assert_all_equal(&craft(Attack::Mimic, 3), &[1.0, 2.0], 3, "mimic");
}

#[test]
fn nan_attack_sends_nan() {
    let crafted = craft(Attack::Nan, 2);
    assert_eq!(crafted.len(), 2);
    assert!(crafted.iter().flatten().all(|v| v.is_nan()));
    assert_eq!(crafted[0].len(), 2);
}

#[test]
fn gaussian_has_zero_mean_and_sigma() {
    let d = 20_000;
    let honest = vec![vec![1.0f32; d]; 3];
    let mut rng = StdRng::seed_from_u64(9);
    let crafted = Attack::Gaussian { sigma: 200.0 }
        .craft(&honest, 2, &mut rng)
        .expect("gaussian crafts vectors");
    assert_eq!(crafted.len(), 2);
    for (b, vector) in crafted.iter().enumerate() {
        assert_eq!(vector.len(), d);
        let mean = vector.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let std = (vector
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / d as f64)
            .sqrt();
        // Standard errors: 200 / √d ≈ 1.4 for the mean, 200 / √(2d) ≈ 1 for σ.
        assert!(mean.abs() < 7.0, "seed 9, worker {b}: mean {mean}");
        assert!((std - 200.0).abs() < 5.0, "seed 9, worker {b}: std {std}");
    }
    assert_ne!(
        crafted[0], crafted[1],
        "Byzantine workers draw independent noise"
    );
}

#[test]
fn gaussian_default_sigma_and_override() {
    assert_eq!(
        Attack::from_name("gaussian", 20, 6, None).expect("gaussian"),
        Attack::Gaussian { sigma: 200.0 }
    );
    assert_eq!(
        Attack::from_name("gaussian", 20, 6, Some(3.0)).expect("gaussian"),
        Attack::Gaussian { sigma: 3.0 }
    );
    assert_eq!(
        Attack::from_name("omniscient", 20, 6, None).expect("omniscient"),
        Attack::Omniscient { factor: 100.0 }
    );
}

#[test]
fn data_attacks_map_labels() {
    let mut rng = StdRng::seed_from_u64(1);
    assert_eq!(Attack::LabelFlip.craft(&honest(), 2, &mut rng), None);
    assert_eq!(Attack::None.craft(&honest(), 2, &mut rng), None);
    for label in 0..10 {
        assert_eq!(Attack::LabelFlip.label_map(label, 10), Some(9 - label));
        assert_eq!(Attack::None.label_map(label, 10), Some(label));
    }
    assert_eq!(Attack::SignFlip.label_map(3, 10), None);
}

#[test]
fn unknown_attack_is_rejected() {
    let error = Attack::from_name("sneaky", 20, 6, None).expect_err("unknown attack");
    let message = error.to_string();
    assert!(message.contains("sneaky"), "{message}");
    assert!(message.contains("label-flip"), "{message}");
}

fn shared_mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist")
}

#[test]
fn mnist_loads_gzipped_test_set() {
    let mnist = Dataset::mnist(&shared_mnist()).expect("the shared MNIST test set");
    assert_eq!(mnist.features.dim(), (10_000, 784));
    assert_eq!(mnist.labels.len(), 10_000);
    // The first two test images are a 7 and a 2.
    assert_eq!(&mnist.labels[..2], &[7, 2]);
    assert!(mnist.features.iter().all(|&v| (0.0..=1.0).contains(&v)));
    assert_eq!(mnist.features.iter().cloned().fold(0.0, f32::max), 1.0);
    let mut counts = [0usize; 10];
    for &label in &mnist.labels {
        counts[label] += 1;
    }
    assert!(counts.iter().all(|&c| c > 800), "class counts {counts:?}");
}

fn idx_bytes(magic: u32, dims: &[u32], values: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for dim in dims {
        bytes.extend(dim.to_be_bytes());
    }
    bytes.extend(values);
    bytes
}

/// Writes three 2×2 images and `labels`, uncompressed, into `dir`.
fn write_tiny_mnist(dir: &Path, labels: &[u8]) {
    let pixels: Vec<u8> = (0..12).map(|i| (i * 20) as u8).collect();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx_bytes(2051, &[3, 2, 2], &pixels),
    )
    .expect("write images");
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        idx_bytes(2049, &[labels.len() as u32], labels),
    )
    .expect("write labels");
}

#[test]
fn idx_reads_uncompressed_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_tiny_mnist(dir.path(), &[4, 0, 9]);
    let data = Dataset::mnist(dir.path()).expect("tiny IDX files");
    assert_eq!(data.features.dim(), (3, 4));
    assert_eq!(data.labels, vec![4, 0, 9]);
    for (i, &v) in data.features.iter().enumerate() {
        let expected = (i * 20) as f32 / 255.0;
        assert!((v - expected).abs() < 1e-7, "pixel {i}: {v} vs {expected}");
    }
}

#[test]
fn idx_rejects_bad_magic() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_tiny_mnist(dir.path(), &[4, 0, 9]);
    let images = dir.path().join("t10k-images-idx3-ubyte");
    std::fs::write(&images, idx_bytes(2049, &[3], &[1, 2, 3])).expect("overwrite images");
    let error = Dataset::mnist(dir.path()).expect_err("labels magic in the images file");
    assert!(
        matches!(error, Error::BadFile { ref path, .. } if *path == images),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("magic number 2049 is not 2051"),
        "{message}"
    );
}

#[test]
fn idx_rejects_truncated_body() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_tiny_mnist(dir.path(), &[4, 0, 9]);
    let images = dir.path().join("t10k-images-idx3-ubyte");
    std::fs::write(&images, idx_bytes(2051, &[3, 2, 2], &[0; 10])).expect("overwrite images");
    let error = Dataset::mnist(dir.path()).expect_err("10 of 12 pixels");
    assert!(matches!(error, Error::BadFile { .. }), "{error}");
}

#[test]
fn idx_rejects_count_mismatch() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_tiny_mnist(dir.path(), &[4, 0]);
    let error = Dataset::mnist(dir.path()).expect_err("3 images, 2 labels");
    let message = error.to_string();
    assert!(message.contains("2 labels"), "{message}");
}

#[test]
fn mnist_missing_files_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let error = Dataset::mnist(dir.path()).expect_err("empty folder");
    assert!(matches!(error, Error::DataNotFound { .. }), "{error}");
    assert!(
        error.to_string().contains("t10k-images-idx3-ubyte"),
        "{error}"
    );

    let missing = dir.path().join("absent");
    let error = Dataset::mnist(&missing).expect_err("missing folder");
    assert!(
        matches!(error, Error::DataNotFound { ref path, .. } if *path == missing),
        "{error}"
    );
}

/// Returns the settings of a short digits run: n = 10, f = 3, logistic
/// regression.
fn short_config(rules: &[&str], attacks: &[&str], steps: usize) -> TrainConfig {
    TrainConfig {
        model: ModelKind::LogReg,
        workers: 10,
        byzantine: 3,
        rules: rules.iter().map(|s| s.to_string()).collect(),
        attacks: attacks.iter().map(|s| s.to_string()).collect(),
        steps,
        eval_every: 20,
        seed: 3,
        ..TrainConfig::default()
    }
}

fn run_all(experiment: &Experiment) -> Vec<RunResult> {
    let engine = Engine::cpu();
    (0..experiment.runs().len())
        .map(|i| experiment.run(&engine, i, &mut |_| {}).expect("run"))
        .collect()
}

#[test]
fn library_run_krum_beats_average_under_gaussian() {
    let experiment = Experiment::new(
        short_config(&["average", "krum"], &["gaussian"], 100),
        &Dataset::digits(),
    )
    .expect("valid experiment");
    let results = run_all(&experiment);
    assert_eq!(results.len(), 2);
    let (average, krum) = (&results[0], &results[1]);
    assert_eq!(
        (average.rule.as_str(), average.attack.as_str()),
        ("average", "gaussian")
    );
    assert_eq!(
        (krum.rule.as_str(), krum.attack.as_str()),
        ("krum", "gaussian")
    );
    assert!(
        krum.final_accuracy() > average.final_accuracy() + 0.3,
        "seed 3: krum {} vs average {}",
        krum.final_accuracy(),
        average.final_accuracy()
    );
    assert!(
        krum.final_accuracy() > 0.8,
        "seed 3: krum {}",
        krum.final_accuracy()
    );

    let csv = curves_csv(&results);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], CSV_HEADER);
    assert_eq!(CSV_HEADER, "step,rule,attack,test_accuracy,train_loss");
    // Steps 0, 20, …, 100 for each of the two runs.
    assert_eq!(lines.len(), 1 + 2 * 6);
    assert!(lines[1].starts_with("0,average,gaussian,"), "{}", lines[1]);
    assert!(lines[12].starts_with("100,krum,gaussian,"), "{}", lines[12]);
}

#[test]
fn library_run_is_deterministic() {
    let config = short_config(&["multi-krum"], &["alie", "label-flip"], 20);
    let first = run_all(&Experiment::new(config.clone(), &Dataset::digits()).expect("valid"));
    let second = run_all(&Experiment::new(config, &Dataset::digits()).expect("valid"));
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.curve, b.curve, "seed 3: {} / {}", a.rule, a.attack);
    }
}

#[test]
fn nan_attack_is_tolerated_by_krum() {
    let experiment = Experiment::new(
        short_config(&["krum", "average"], &["nan"], 20),
        &Dataset::digits(),
    )
    .expect("valid");
    let results = run_all(&experiment);
    for result in &results {
        assert_eq!(result.diverged_at, None, "{}", result.rule);
        assert!(
            result.final_accuracy() > 0.5,
            "{}: {}",
            result.rule,
            result.final_accuracy()
        );
    }
}

#[test]
fn library_rejects_invalid_combinations() {
    let digits = Dataset::digits();
    let error = Experiment::new(
        TrainConfig {
            byzantine: 4,
            ..short_config(&["krum"], &["none"], 10)
        },
        &digits,
    )
    .err()
    .expect("krum needs n > 2f + 2 = 10");
    assert!(matches!(error, Error::TooFewWorkers { .. }), "{error}");

    let error = Experiment::new(short_config(&["krumm"], &["none"], 10), &digits)
        .err()
        .expect("unknown rule");
    assert!(error.to_string().contains("krumm"), "{error}");

    let error = Experiment::new(short_config(&["krum"], &["nope"], 10), &digits)
        .err()
        .expect("unknown attack");
    assert!(error.to_string().contains("nope"), "{error}");

    let error = Experiment::new(
        TrainConfig {
            byzantine: 10,
            ..short_config(&["mean"], &["none"], 10)
        },
        &digits,
    )
    .err()
    .expect("f = n");
    assert!(
        matches!(
            error,
            Error::InvalidConfig {
                name: "byzantine",
                ..
            }
        ),
        "{error}"
    );

    let error = Experiment::new(short_config(&["centered-clipping"], &["none"], 10), &digits)
        .err()
        .expect("centered clipping without tau");
    assert!(error.to_string().contains("--tau"), "{error}");
}

fn byzagg(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_byzagg"))
        .args(args)
        .output()
        .expect("the byzagg binary runs")
}

#[test]
fn cli_writes_curves_and_summary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("run");
    let output = byzagg(&[
        "train",
        "--backend",
        "cpu",
        "--steps",
        "40",
        "--eval-every",
        "20",
        "--rules",
        "average,krum",
        "--attacks",
        "none,gaussian",
        "--out",
        out.to_str().expect("UTF-8 temp path"),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("final acc"), "{stdout}");
    assert_eq!(stdout.lines().count(), 5, "header and four runs: {stdout}");

    let csv = std::fs::read_to_string(out.join("curves.csv")).expect("curves.csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "step,rule,attack,test_accuracy,train_loss");
    assert_eq!(lines.len(), 1 + 4 * 3, "{csv}");
    for line in &lines[1..] {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 5, "{line}");
        let accuracy: f64 = fields[3].parse().expect("accuracy is a number");
        assert!((0.0..=1.0).contains(&accuracy), "{line}");
    }

    let svg = std::fs::read_to_string(out.join("curves.svg")).expect("curves.svg");
    assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
    assert!(svg.contains("attack: gaussian"));
    assert!(svg.contains("test accuracy"));
    assert_eq!(svg.matches("<polyline").count(), 4);
}

/// Runs `byzagg train` with `args` into a fresh folder and checks that it
/// fails with a message containing `expected` and writes nothing.
fn assert_cli_rejects(args: &[&str], expected: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("run");
    let mut all = vec![
        "train",
        "--backend",
        "cpu",
        "--out",
        out.to_str().expect("UTF-8 temp path"),
    ];
    all.extend(args);
    let output = byzagg(&all);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} succeeded");
    assert!(
        stderr.contains(expected),
        "{args:?}: stderr {stderr:?} lacks {expected:?}"
    );
    assert!(
        !out.join("curves.csv").exists(),
        "{args:?} wrote curves.csv"
    );
}

#[test]
fn cli_rejects_invalid_combinations() {
    assert_cli_rejects(&["--rules", "bulyan"], "bulyan requires n ≥ 4f + 3");
    assert_cli_rejects(&["--byzantine", "9"], "krum requires n > 2f + 2");
    assert_cli_rejects(&["--rules", "krum,fancy"], "fancy");
    assert_cli_rejects(&["--attacks", "gaussian,evil"], "evil");
    assert_cli_rejects(&["--byzantine", "20", "--rules", "mean"], "byzantine");
    assert_cli_rejects(&["--dataset", "mnist"], "--data-dir");
    assert_cli_rejects(
        &["--dataset", "mnist", "--data-dir", "/nonexistent/mnist"],
        "/nonexistent/mnist: not found",
    );
    assert_cli_rejects(&["--rules", "centered-clipping"], "--tau");
    assert_cli_rejects(&["--batch-size", "0"], "batch-size");
}
