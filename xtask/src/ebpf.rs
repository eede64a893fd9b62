//! Building appfw-ebpf: nightly Rust with rust-src (for `-Z build-std`),
//! and a bpf-linker whose LLVM matches nightly's.
//!
//! bpf-linker is built into target/tools against the libLLVM that the
//! nightly toolchain itself ships (Debian's LLVM is older), and rebuilt when
//! nightly's LLVM major version changes.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::{clean_env, root, run_cmd};

const TOOLCHAIN: &str = "nightly";
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn build() -> Result<()> {
    run_ebpf_cargo("build")
}

/// clippy on the eBPF crate, for its real target.
pub fn clippy() -> Result<()> {
    run_ebpf_cargo("clippy")
}

fn run_ebpf_cargo(subcommand: &str) -> Result<()> {
    ensure_rust_src()?;
    let linker = ensure_bpf_linker()?;
    let mut cmd = Command::new("rustup");
    clean_env(&mut cmd)
        .current_dir(root())
        .args([
            "run",
            TOOLCHAIN,
            "cargo",
            subcommand,
            "--package",
            "appfw-ebpf",
            "--release",
        ])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", &linker)
        // BTF lets the kernel's verifier show source lines in its log.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Cdebuginfo=2\x1f-Clink-arg=--btf",
        );
    if subcommand == "clippy" {
        cmd.args(["--", "-D", "warnings"]);
    }
    run_cmd(&mut cmd).with_context(|| format!("cargo {subcommand} for appfw-ebpf"))?;
    let object = root().join("target/bpfel-unknown-none/release/appfw-ebpf");
    if !object.exists() {
        bail!(
            "the eBPF build finished but {} is missing",
            object.display()
        );
    }
    Ok(())
}

fn rustup(args: &[&str]) -> Result<String> {
    let out = Command::new("rustup").args(args).output().context(
        "running rustup (appfw's eBPF build needs rustup to manage the nightly toolchain)",
    )?;
    if !out.status.success() {
        bail!(
            "rustup {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ensure_rust_src() -> Result<()> {
    let toolchains = rustup(&["toolchain", "list"])?;
    if !toolchains.lines().any(|l| l.starts_with(TOOLCHAIN)) {
        eprintln!("xtask: installing the {TOOLCHAIN} toolchain (for the eBPF programs)");
        rustup(&["toolchain", "install", TOOLCHAIN, "--profile", "minimal"])?;
    }
    let installed = rustup(&["component", "list", "--toolchain", TOOLCHAIN, "--installed"])?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: installing rust-src for {TOOLCHAIN} (needed by -Z build-std)");
        rustup(&["component", "add", "rust-src", "--toolchain", TOOLCHAIN])?;
    }
    Ok(())
}

/// Nightly rustc's LLVM major version and its sysroot.
fn nightly_llvm() -> Result<(u32, PathBuf)> {
    let run = |args: &[&str]| -> Result<String> {
        let out = Command::new("rustup")
            .args(["run", TOOLCHAIN, "rustc"])
            .args(args)
            .output()
            .context("running nightly rustc")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let verbose = run(&["--version", "--verbose"])?;
    let major = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
        .context("nightly rustc did not report its LLVM version")?;
    let sysroot = PathBuf::from(run(&["--print", "sysroot"])?.trim());
    Ok((major, sysroot))
}

fn ensure_bpf_linker() -> Result<PathBuf> {
    let tools = root().join("target/tools");
    let linker = tools.join("bin/bpf-linker");
    let stamp = tools.join("bpf-linker.llvm");
    let (major, sysroot) = nightly_llvm()?;
    let built_for: Option<u32> = fs::read_to_string(&stamp)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let works = Command::new(&linker)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if works && built_for == Some(major) {
        return Ok(linker);
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {major} into {} (about two minutes, once)",
        tools.display()
    );
    let prefix = tools.join(format!("llvm-{major}"));
    link_llvm(&sysroot, major, &prefix.join("lib"))?;
    let feature = format!("llvm-{major}");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "stable",
        "cargo",
        "install",
        "bpf-linker",
        "--locked",
        "--force",
    ])
    .args([
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
        &feature,
    ])
    .arg("--root")
    .arg(&tools)
    .env("LLVM_PREFIX", &prefix);
    clean_env(&mut cmd).env_remove("CARGO_TARGET_DIR");
    run_cmd(&mut cmd).with_context(|| {
        format!("installing bpf-linker (if `{feature}` is not a feature of bpf-linker {BPF_LINKER_VERSION}, nightly's LLVM is newer than it supports)")
    })?;
    fs::write(&stamp, major.to_string())?;
    Ok(linker)
}

/// bpf-linker's build looks for `PREFIX/lib/libLLVM.so`; the binary then
/// loads the library by its soname. Both names point at nightly's own copy,
/// and the binary keeps PREFIX/lib as its runpath, so PREFIX must stay.
fn link_llvm(sysroot: &Path, major: u32, lib: &Path) -> Result<()> {
    let dir = sysroot.join("lib");
    let wanted = format!("libLLVM.so.{major}");
    let so = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&wanted))
        })
        .with_context(|| format!("nightly's sysroot {} has no {wanted}*", dir.display()))?;
    fs::create_dir_all(lib)?;
    let name = so.file_name().expect("a file name").to_owned();
    for link in [lib.join("libLLVM.so"), lib.join(&name)] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&so, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    Ok(())
}
