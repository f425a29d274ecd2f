//! The conformance suite on the CPU backends, on every GPU backend that the
//! test command installs (Vulkan through lavapipe, OpenGL ES through
//! llvmpipe), and through `byzagg selftest`.

mod common;

use std::process::Command;

use byzagg::gpu::AdapterFilter;
use byzagg::selftest::{self, Outcome};
use byzagg::Engine;

fn assert_all_pass(engine: &Engine, label: &str) {
    for result in selftest::run(engine) {
        assert_eq!(
            result.outcome,
            Outcome::Pass,
            "{label}: check {}",
            result.name
        );
    }
}

#[test]
fn cpu_passes_every_check() {
    assert_all_pass(&Engine::cpu(), "cpu");
}

#[test]
fn reference_passes_against_itself() {
    for result in selftest::run(&Engine::reference()) {
        assert_eq!(result.outcome, Outcome::Pass, "check {}", result.name);
        assert_eq!(result.worst_relative_error, 0.0, "check {}", result.name);
    }
}

fn backend_filter(backend: &str) -> AdapterFilter {
    AdapterFilter {
        name: Some(backend.to_string()),
        allow_software: true,
        index: None,
    }
}

#[test]
fn vulkan_passes_every_check() {
    if let Some(engine) =
        common::gpu_engine(&backend_filter("vulkan"), "the Vulkan conformance suite")
    {
        assert_all_pass(&engine, "vulkan");
    }
}

#[test]
fn gl_passes_every_check() {
    if let Some(engine) = common::gpu_engine(&backend_filter("gl"), "the OpenGL conformance suite")
    {
        assert_all_pass(&engine, "gl");
    }
}

#[test]
fn selftest_command_prints_table() {
    let filter = backend_filter("vulkan");
    if common::gpu_engine(&filter, "the selftest command").is_none() {
        return;
    }
    let output = Command::new(env!("CARGO_BIN_EXE_byzagg"))
        .args(["selftest", "--adapter", "vulkan", "--cpu"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "selftest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (name, _) in selftest::checks() {
        let line = stdout.lines().find(|l| l.starts_with(name));
        let line = line.unwrap_or_else(|| panic!("no row for {name} in:\n{stdout}"));
        assert_eq!(line.matches("pass").count(), 2, "row {line:?}");
    }
}

#[test]
fn selftest_command_fails_on_unknown_adapter() {
    let output = Command::new(env!("CARGO_BIN_EXE_byzagg"))
        .args(["selftest", "--adapter", "no-such-adapter-xyz"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("unsupported: no GPU adapter found"),
        "{stdout}"
    );
}
