//! Helpers shared by the integration tests.

// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use byzagg::gpu::{AdapterFilter, GpuOptions};
use byzagg::Engine;

/// Returns whether the environment requires a GPU adapter (`REQUIRE_GPU=1`).
pub fn gpu_required() -> bool {
    std::env::var("REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// Builds the GPU engine on the adapter that `filter` picks, or `None` with a skip
/// message when there is none. With `REQUIRE_GPU=1` a missing adapter fails
/// the test instead.
pub fn gpu_engine(filter: &AdapterFilter, what: &str) -> Option<Engine> {
    match Engine::gpu_with(filter, GpuOptions::default()) {
        Ok(engine) => Some(engine),
        Err(error) if !gpu_required() => {
            eprintln!("skipping {what}: {error} (set REQUIRE_GPU=1 to fail instead)");
            None
        }
        Err(error) => panic!("REQUIRE_GPU=1 but no GPU engine for {what}: {error}"),
    }
}
