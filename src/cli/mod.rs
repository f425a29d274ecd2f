//! Argument structures and printing for each subcommand.

pub mod aggregate;
pub mod bench;
