//! Fuzzing with cargo-fuzz (libFuzzer, nightly): the packet parse and the
//! configuration parse, each for a bounded time. The targets live in
//! `appfw/fuzz`, outside the workspace; cargo-fuzz is installed with
//! `cargo install cargo-fuzz` when missing.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{clean_env, root, run_cmd};

/// The targets, each with its seed inputs in `appfw/fuzz/seeds/TARGET`.
pub const TARGETS: [&str; 2] = ["packet", "config"];

fn cargo_nightly() -> Command {
    let mut cmd = Command::new("cargo");
    clean_env(&mut cmd);
    cmd.arg("+nightly");
    cmd
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = cargo_nightly()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz (cargo install cargo-fuzz; a few minutes, once)");
    let mut cmd = Command::new("cargo");
    clean_env(&mut cmd);
    run_cmd(cmd.args(["install", "cargo-fuzz"]))
        .context("installing cargo-fuzz failed; it needs crates.io (or install it yourself)")
}

/// Runs every target for `seconds`; a crash fails with the input's path.
pub fn run(seconds: u64) -> Result<()> {
    ensure_cargo_fuzz()?;
    let dir = root().join("appfw/fuzz");
    for target in TARGETS {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let status = cargo_nightly()
            .current_dir(&dir)
            .args(["fuzz", "run", target])
            .arg(&corpus)
            .arg(dir.join("seeds").join(target))
            .args(["--", &format!("-max_total_time={seconds}"), "-timeout=10"])
            .status()
            .context("running cargo fuzz")?;
        if !status.success() {
            bail!(
                "fuzz target {target} failed ({status}): the crashing input is in {}/artifacts/{target}/; \
                 reproduce with `cd appfw/fuzz && cargo +nightly fuzz run {target} <input>`",
                dir.display()
            );
        }
    }
    Ok(())
}
