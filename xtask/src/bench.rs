//! `cargo xtask bench` (see BENCHMARKS.md).

use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    bail!("not yet")
}
