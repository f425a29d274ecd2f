//! The conformance suite itself, on the CPU backends.

use byzagg::selftest::{self, Outcome};
use byzagg::Engine;

#[test]
fn cpu_passes_every_check() {
    for result in selftest::run(&Engine::cpu()) {
        assert_eq!(result.outcome, Outcome::Pass, "check {}", result.name);
    }
}

#[test]
fn reference_passes_against_itself() {
    for result in selftest::run(&Engine::reference()) {
        assert_eq!(result.outcome, Outcome::Pass, "check {}", result.name);
        assert_eq!(result.worst_relative_error, 0.0, "check {}", result.name);
    }
}
