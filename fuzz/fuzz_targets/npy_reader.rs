//! Arbitrary bytes as an .npy file: opening and reading it must return a
//! value or a typed error, never panic.
//!
//! The first byte chooses the layout: even writes the rest as one file, odd
//! splits it at the second byte into two per-worker files.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use byzagg::io::NpyGradients;
use byzagg::{Engine, GradientSource, Rule};
use libfuzzer_sys::fuzz_target;

/// One directory for the whole run; each input overwrites the same files.
fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir().path().join(name);
    std::fs::write(&path, bytes).expect("the temporary file is writable");
    path
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let paths = if mode % 2 == 0 {
        vec![write("matrix.npy", rest)]
    } else {
        let cut = rest.first().map_or(0, |&b| b as usize).min(rest.len());
        let (a, b) = rest.split_at(cut);
        vec![write("w0.npy", a), write("w1.npy", b)]
    };
    let Ok(grads) = NpyGradients::open(&paths) else {
        return;
    };
    let n = grads.workers();
    let d = grads.dim();
    let mut buffer = vec![0f32; d];
    for worker in 0..n {
        assert_eq!(grads.len_of(worker), d);
        if let Some(row) = grads.row(worker) {
            assert_eq!(row.len(), d);
        }
        grads
            .read_into(worker, 0, &mut buffer)
            .expect("reading a file that opened cleanly");
    }
    let _ = Engine::cpu().aggregate(&Rule::Mean { f: n - 1 }, &grads);
});
