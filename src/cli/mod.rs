//! Argument structures and printing for each subcommand.

pub mod aggregate;
pub mod bench;
pub mod common;
pub mod devices;
pub mod selftest;
pub mod train;
