//! Krum, Multi-Krum and mean on small cases worked by hand, on the reference
//! and the fast CPU backend.

use byzagg::{Engine, Error, Rule};

/// Returns every backend that needs no GPU.
fn cpu_engines() -> Vec<(&'static str, Engine)> {
    vec![("reference", Engine::reference()), ("cpu", Engine::cpu())]
}

fn column(values: &[f32]) -> Vec<Vec<f32>> {
    values.iter().map(|&v| vec![v]).collect()
}

/// Krum by the common mistakes, for d = 1: `extra` neighbours beyond
/// n − f − 2 and distances raised to `power` instead of 2.
fn mistaken_krum(values: &[f32], f: usize, extra: isize, power: i32) -> usize {
    let n = values.len();
    let k = (n as isize - f as isize - 2 + extra) as usize;
    let scores: Vec<f64> = (0..n)
        .map(|i| {
            let mut row: Vec<f64> = (0..n)
                .filter(|&j| j != i)
                .map(|j| ((values[i] - values[j]) as f64).abs().powi(power))
                .collect();
            row.sort_by(f64::total_cmp);
            row.iter().take(k).sum()
        })
        .collect();
    byzagg::cpu::select_lowest(&scores, 1)[0]
}

// n = 6, f = 1, so each score sums the n − f − 2 = 3 smallest squared
// distances. For worker 4 (x = 20) the squared distances are 289, 196, 64, 9
// and 49, so s(4) = 9 + 49 + 64 = 122; for worker 2 (x = 12) they are 81, 36,
// 25, 64, 225 and s(2) = 25 + 36 + 64 = 125. All scores:
// [286, 166, 125, 134, 122, 374].
const HAND: [f32; 6] = [3.0, 6.0, 12.0, 17.0, 20.0, 27.0];
const HAND_SCORES: [f64; 6] = [286.0, 166.0, 125.0, 134.0, 122.0, 374.0];

#[test]
fn krum_hand_case_scores() {
    for (name, engine) in cpu_engines() {
        let out = engine
            .aggregate(&Rule::Krum { f: 1 }, &column(&HAND))
            .unwrap();
        let scores = out.scores.expect("Krum reports scores");
        assert_eq!(scores, HAND_SCORES.to_vec(), "backend {name}");
        assert_eq!(out.selected, vec![4], "backend {name}");
        assert_eq!(out.vector, vec![20.0], "backend {name}");
    }
}

#[test]
fn krum_hand_case_beats_mistakes() {
    // Each mistake picks another worker on this input, so the test above
    // would catch it.
    assert_eq!(mistaken_krum(&HAND, 1, 1, 2), 2, "n − f − 1 neighbours");
    assert_eq!(mistaken_krum(&HAND, 1, 0, 1), 3, "unsquared distances");
    assert_eq!(mistaken_krum(&HAND, 1, 0, 4), 2, "distances squared twice");
    assert_eq!(
        mistaken_krum(&HAND, 1, -1, 2),
        3,
        "self kept among the neighbours"
    );
    assert_eq!(mistaken_krum(&HAND, 1, 0, 2), 4, "the definition itself");
}

#[test]
fn krum_tie_goes_to_lowest_index() {
    // n = 5, f = 1, 2 neighbours: workers 1 and 3 (both at 1) score 0 + 16,
    // worker 0 scores 16 + 16.
    let values = [5.0, 1.0, 9.0, 1.0, 100.0];
    for (name, engine) in cpu_engines() {
        let out = engine
            .aggregate(&Rule::Krum { f: 1 }, &column(&values))
            .unwrap();
        assert_eq!(out.selected, vec![1], "backend {name}");
        let scores = out.scores.unwrap();
        assert_eq!(scores[1], scores[3], "backend {name}");
    }
}

#[test]
fn multi_krum_orders_by_score_then_index() {
    for (name, engine) in cpu_engines() {
        let rule = Rule::MultiKrum { f: 1, m: 3 };
        let out = engine.aggregate(&rule, &column(&HAND)).unwrap();
        assert_eq!(out.selected, vec![4, 2, 3], "backend {name}");
        let expected = (20.0 + 12.0 + 17.0) / 3.0;
        assert!(
            (out.vector[0] - expected).abs() < 1e-5,
            "backend {name}: {:?}",
            out.vector
        );
    }
}

#[test]
fn multi_krum_m_equal_n_is_mean() {
    for (name, engine) in cpu_engines() {
        let out = engine
            .aggregate(&Rule::MultiKrum { f: 1, m: 6 }, &column(&HAND))
            .unwrap();
        let mean = HAND.iter().sum::<f32>() / 6.0;
        assert!((out.vector[0] - mean).abs() < 1e-5, "backend {name}");
        let plain = engine
            .aggregate(&Rule::Mean { f: 0 }, &column(&HAND))
            .unwrap();
        assert!((plain.vector[0] - mean).abs() < 1e-5, "backend {name}");
    }
}

#[test]
fn nan_and_inf_rows_within_f_are_never_selected() {
    let grads = vec![
        vec![0.0, f32::NAN],
        vec![0.1, 0.0],
        vec![f32::INFINITY, 0.0],
        vec![0.2, 0.1],
        vec![0.0, 0.1],
        vec![0.15, 0.05],
        vec![f32::NEG_INFINITY, 1.0],
        vec![0.05, 0.05],
        vec![0.3, 0.2],
    ];
    for (name, engine) in cpu_engines() {
        let out = engine.aggregate(&Rule::Krum { f: 3 }, &grads).unwrap();
        assert_eq!(out.non_finite, vec![0, 2, 6], "backend {name}");
        let scores = out.scores.unwrap();
        for i in [0, 2, 6] {
            assert_eq!(scores[i], f64::INFINITY, "backend {name}: worker {i}");
        }
        assert!(![0, 2, 6].contains(&out.selected[0]), "backend {name}");
        assert!(out.vector.iter().all(|v| v.is_finite()), "backend {name}");

        let multi = engine
            .aggregate(&Rule::MultiKrum { f: 3, m: 6 }, &grads)
            .unwrap();
        assert!(multi.vector.iter().all(|v| v.is_finite()), "backend {name}");
        assert!(
            multi.selected.iter().all(|i| ![0, 2, 6].contains(i)),
            "backend {name}"
        );
    }
}

#[test]
fn more_than_f_non_finite_names_workers() {
    let grads = column(&[f32::NAN, 1.0, 2.0, f32::INFINITY, 3.0, 4.0]);
    for (name, engine) in cpu_engines() {
        let error = engine.aggregate(&Rule::Krum { f: 1 }, &grads).unwrap_err();
        match &error {
            Error::TooManyNonFinite { workers, f } => {
                assert_eq!(workers, &vec![0, 3], "backend {name}");
                assert_eq!(*f, 1, "backend {name}");
            }
            other => panic!("backend {name}: expected TooManyNonFinite, got {other:?}"),
        }
        assert!(
            error.to_string().contains("[0, 3]"),
            "backend {name}: {error}"
        );
    }
}

#[test]
fn multi_krum_m_above_finite_count_is_rejected() {
    let grads = column(&[f32::NAN, 1.0, 2.0, 3.0, 4.0, 5.0]);
    for (name, engine) in cpu_engines() {
        let error = engine
            .aggregate(&Rule::MultiKrum { f: 1, m: 6 }, &grads)
            .unwrap_err();
        assert!(
            matches!(error, Error::InvalidParameter { name: "m", .. }),
            "backend {name}: {error:?}"
        );
    }
}

#[test]
fn krum_requires_n_above_2f_plus_2() {
    let grads = column(&[1.0, 2.0, 3.0, 4.0]);
    for (name, engine) in cpu_engines() {
        let error = engine.aggregate(&Rule::Krum { f: 1 }, &grads).unwrap_err();
        match error {
            Error::TooFewWorkers { n, f, min_n, .. } => {
                assert_eq!((n, f, min_n), (4, 1, 5), "backend {name}");
            }
            other => panic!("backend {name}: expected TooFewWorkers, got {other:?}"),
        }
    }
}

#[test]
fn smallest_legal_krum() {
    // f = 0, n = 3: one neighbour each. Worker 1 is 1 away from worker 0.
    let grads = column(&[0.0, 1.0, 3.0]);
    for (name, engine) in cpu_engines() {
        let out = engine.aggregate(&Rule::Krum { f: 0 }, &grads).unwrap();
        assert_eq!(out.scores.unwrap(), vec![1.0, 1.0, 4.0], "backend {name}");
        assert_eq!(out.selected, vec![0], "backend {name}");
    }
}

#[test]
fn ragged_and_empty_inputs_are_rejected() {
    let ragged = vec![vec![1.0f32, 2.0], vec![1.0], vec![0.0, 0.0]];
    let empty: Vec<Vec<f32>> = Vec::new();
    let zero_length = vec![Vec::<f32>::new(), Vec::new(), Vec::new()];
    for (name, engine) in cpu_engines() {
        let error = engine.aggregate(&Rule::Krum { f: 0 }, &ragged).unwrap_err();
        assert!(
            matches!(
                error,
                Error::ShapeMismatch {
                    worker: 1,
                    expected: 2,
                    got: 1
                }
            ),
            "backend {name}: {error:?}"
        );
        let error = engine.aggregate(&Rule::Krum { f: 0 }, &empty).unwrap_err();
        assert!(
            matches!(error, Error::NoWorkers),
            "backend {name}: {error:?}"
        );
        let error = engine
            .aggregate(&Rule::Krum { f: 0 }, &zero_length)
            .unwrap_err();
        assert!(
            matches!(error, Error::EmptyGradient),
            "backend {name}: {error:?}"
        );
    }
}

/// Squared distances by the Gram form |x|² + |y|² − 2⟨x, y⟩ in f32.
fn gram_form_sq_distances(grads: &[Vec<f32>]) -> Vec<Vec<f64>> {
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f32>();
    grads
        .iter()
        .map(|x| {
            grads
                .iter()
                .map(|y| (dot(x, x) + dot(y, y) - 2.0 * dot(x, y)) as f64)
                .collect()
        })
        .collect()
}

/// A deterministic generator, so the case needs no random-number crate.
fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
}

#[test]
fn large_common_offset_selects_like_reference() {
    // Every coordinate is near 1000 and workers differ by about 1e-3, with
    // worker 5 spread three times wider. The Gram form in f32 loses all of
    // those differences to rounding and picks another worker.
    let (n, d, f) = (9, 256, 2);
    let mut seed = 7u64;
    let grads: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            let spread = if i == 5 { 3e-3 } else { 1e-3 };
            (0..d).map(|_| 1000.0 + spread * lcg(&mut seed)).collect()
        })
        .collect();
    let reference = Engine::reference()
        .aggregate(&Rule::Krum { f }, &grads)
        .unwrap();

    let gram = gram_form_sq_distances(&grads);
    let gram_matrix =
        ndarray::Array2::from_shape_fn((n, n), |(i, j)| if i == j { 0.0 } else { gram[i][j] });
    let gram_choice =
        byzagg::cpu::select_lowest(&byzagg::cpu::krum_scores(&gram_matrix, n - f - 2), 1)[0];
    assert_ne!(
        gram_choice, reference.selected[0],
        "the Gram form should fail on this case"
    );

    let fast = Engine::cpu().aggregate(&Rule::Krum { f }, &grads).unwrap();
    assert_eq!(fast.selected, reference.selected);
    let exact = Engine::reference().pairwise_sq_distances(&grads).unwrap();
    let computed = Engine::cpu().pairwise_sq_distances(&grads).unwrap();
    for i in 0..n {
        for j in 0..n {
            let tolerance = 1e-4 * exact[[i, j]].abs() + 1e-12;
            let diff = (computed[[i, j]] - exact[[i, j]]).abs();
            assert!(
                diff <= tolerance,
                "D[{i}][{j}]: cpu {} reference {} tolerance {tolerance}",
                computed[[i, j]],
                exact[[i, j]]
            );
        }
    }
}

#[test]
fn ndarray_views_in_both_orders() {
    let values: Vec<f32> = (0..24).map(|v| (v as f32 * 0.37).sin()).collect();
    let c_order = ndarray::Array2::from_shape_vec((6, 4), values).unwrap();
    let f_order = c_order.t().as_standard_layout().t().to_owned();
    let rows: Vec<Vec<f32>> = c_order.rows().into_iter().map(|r| r.to_vec()).collect();
    let expected = Engine::reference()
        .aggregate(&Rule::Krum { f: 1 }, &rows)
        .unwrap();
    for (name, engine) in cpu_engines() {
        let from_c = engine
            .aggregate(&Rule::Krum { f: 1 }, &c_order.view())
            .unwrap();
        let from_f = engine
            .aggregate(&Rule::Krum { f: 1 }, &f_order.view())
            .unwrap();
        assert_eq!(from_c.selected, expected.selected, "backend {name}");
        assert_eq!(from_f.selected, expected.selected, "backend {name}");
        assert_eq!(from_f.vector, expected.vector, "backend {name}");
    }
}

#[test]
fn centered_clipping_without_tau_is_rejected() {
    let params = byzagg::RuleParams::default();
    let error = Rule::from_name("centered-clipping", 1, 5, &params).unwrap_err();
    assert!(
        matches!(error, Error::MissingParameter { name: "tau", .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("--tau"), "{error}");
}
