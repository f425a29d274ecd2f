//! Argument structures and printing for each subcommand.

pub mod aggregate;
pub mod common;
pub mod train;
pub mod devices;
