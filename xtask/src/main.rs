//! `cargo xtask`: building, running and testing appfw, including the parts
//! cargo alone cannot do (the eBPF toolchain, root, system tools).

mod bench;
mod ebpf;
mod fuzz;
mod install;
mod system;

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "appfw's build, run and test tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the eBPF programs (installs rust-src and bpf-linker if missing).
    BuildEbpf,
    /// Build the eBPF programs and the release `appfw` binary embedding them.
    Build,
    /// Build, then run `appfw ARGS` as root.
    Run {
        /// Arguments for appfw, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The whole test suite: unit tests and the root integration tests that
    /// load eBPF programs and use network namespaces.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure appfw against no firewall and a bare queue listener (root).
    Bench(bench::Args),
    /// fmt and clippy for every crate, the eBPF one included.
    Lint,
    /// Install the binary, configuration, systemd unit, man page and
    /// completions (into --destdir, below --prefix).
    Install(install::Args),
    /// Remove what `install` put there (with the same --destdir, --prefix).
    Uninstall(install::Args),
    /// Build the Debian package (cargo-deb) into target/debian/.
    Deb(install::DebArgs),
    /// Fuzz the packet and configuration parsers (nightly, cargo-fuzz).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    // The bench's helpers, run inside its namespaces.
    #[command(hide = true)]
    BenchServe {
        #[arg(long)]
        tcp: std::net::SocketAddr,
        #[arg(long)]
        udp: std::net::SocketAddr,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
    #[command(hide = true)]
    BenchLoad {
        proto: bench::load::Proto,
        target: std::net::SocketAddr,
        #[arg(long)]
        concurrency: usize,
        #[arg(long)]
        duration: u64,
    },
    #[command(hide = true)]
    BenchCount {
        proto: bench::load::Proto,
        target: std::net::SocketAddr,
        #[arg(long)]
        concurrency: usize,
        #[arg(long)]
        flows: u64,
    },
    #[command(hide = true)]
    BenchBurst {
        target: std::net::SocketAddr,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        threads: usize,
        /// Index of the first source port (see `soak_port`).
        #[arg(long)]
        offset: u64,
    },
    #[command(hide = true)]
    BenchFloor {
        #[arg(long)]
        queue_num: u16,
    },
    #[command(hide = true)]
    BenchOnce {
        proto: bench::load::Proto,
        target: std::net::SocketAddr,
    },
    #[command(hide = true)]
    BenchSpawn {
        #[arg(long)]
        count: usize,
        proto: bench::load::Proto,
        target: std::net::SocketAddr,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::BuildEbpf => ebpf::build(),
        Task::Build => build_release().map(|_| ()),
        Task::Run { args } => run(args),
        Task::Test { args } => test(args),
        Task::Bench(args) => bench::run(args),
        Task::Lint => lint(),
        Task::Install(args) => install::install(args),
        Task::Uninstall(args) => install::uninstall(args),
        Task::Deb(args) => install::deb(args),
        Task::Fuzz { seconds } => fuzz::run(seconds),
        Task::BenchServe { tcp, udp, threads } => bench::load::serve(tcp, udp, threads),
        Task::BenchLoad {
            proto,
            target,
            concurrency,
            duration,
        } => bench::load::load(
            proto,
            target,
            concurrency,
            std::time::Duration::from_secs(duration),
        ),
        Task::BenchCount {
            proto,
            target,
            concurrency,
            flows,
        } => bench::load::count(proto, target, concurrency, flows),
        Task::BenchBurst {
            target,
            count,
            threads,
            offset,
        } => bench::soak::burst(target, count, threads, offset),
        Task::BenchFloor { queue_num } => bench::floor::run(queue_num),
        Task::BenchOnce { proto, target } => bench::load::once(proto, target),
        Task::BenchSpawn {
            count,
            proto,
            target,
        } => bench::load::spawn(count, proto, target),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Runs a command, failing with its name when it fails.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Runs `cargo test`, passing its output through, and sums its "test
/// result" lines.
fn run_counting(cmd: &mut Command) -> Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let (mut passed, mut failed) = (0, 0);
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |key: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(key))
                    .and_then(|n| n.trim().rsplit(' ').next().and_then(|n| n.parse().ok()))
                    .unwrap_or(0)
            };
            passed += num(" passed");
            failed += num(" failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{cmd:?} failed ({status}): {passed} passed, {failed} failed");
    }
    Ok((passed, failed))
}

/// A `cargo` command for the stable toolchain, with variables the outer
/// `cargo xtask` set removed so they do not leak into the inner build.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    clean_env(&mut cmd);
    cmd
}

/// Removes what the outer `cargo xtask` set for itself (compiler, wrapper,
/// toolchain, flags), so that an inner cargo picks its own.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for key in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "CARGO_ENCODED_RUSTFLAGS",
    ] {
        cmd.env_remove(key);
    }
    cmd
}

pub fn build_release() -> Result<PathBuf> {
    ebpf::build()?;
    run_cmd(cargo().args(["build", "--release", "--package", "appfw"]))?;
    Ok(root().join("target/release/appfw"))
}

fn run(args: Vec<String>) -> Result<()> {
    system::ensure_iptables(args.iter().any(|a| a == "--no-rules"))?;
    let bin = build_release()?;
    let mut cmd = if system::is_root() {
        Command::new(&bin)
    } else {
        eprintln!("xtask: appfw needs root; running it through sudo -E");
        let mut c = Command::new("sudo");
        c.arg("-E").arg(&bin);
        c
    };
    cmd.args(&args);
    // Replace this process, so that Ctrl-C and kill reach appfw itself and
    // it removes its rules before exiting.
    use std::os::unix::process::CommandExt;
    let err = cmd.exec();
    Err(err).with_context(|| format!("running {}", bin.display()))
}

fn lint() -> Result<()> {
    run_cmd(cargo().args(["fmt", "--all", "--", "--check"]))
        .context("cargo fmt: run `cargo fmt --all`")?;
    run_cmd(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    ebpf::clippy()
}

/// Integration test modules run a second time with kernel verdicts off.
const KERNEL_VERDICTS_OFF_SUITES: &[&str] =
    &["verdicts::", "enforcement::", "packets::", "identity::"];

fn test(args: Vec<String>) -> Result<()> {
    if !system::is_root() {
        bail!(
            "the test suite loads eBPF programs and creates network namespaces, so it needs root; \
             run it as root (sudo -E cargo xtask test). Unit tests alone: cargo test --lib"
        );
    }
    system::ensure_iptables(false)?;
    system::ensure_test_tools()?;
    ebpf::build()?;
    if args.is_empty() {
        lint()?;
    }
    let mut cmd = cargo();
    // The default members: appfw-ebpf only builds for the BPF target.
    cmd.arg("test");
    if !args.is_empty() {
        cmd.arg("--").args(&args);
    }
    let (mut passed, mut failed) = run_counting(&mut cmd)?;
    if args.is_empty() {
        // The verdict and enforcement tests once more, with every flow
        // through the queue: kernel verdicts are an optimisation, and the
        // same attacks must fail without them.
        let mut off = cargo();
        off.env("APPFW_TEST_KERNEL_VERDICTS", "off")
            .args(["test", "-p", "appfw", "--test", "it", "--"])
            .args(KERNEL_VERDICTS_OFF_SUITES)
            .args(["--skip", "kernel_verdicts::"]);
        let (p, f) = run_counting(&mut off)?;
        passed += p;
        failed += f;
        fuzz::run(20)?;
        bench::run(bench::Args {
            duration: 1,
            rounds: 1,
            concurrency: 4,
            short_lived: 20,
            smoke: true,
            soak: false,
            soak_flows: 0,
        })?;
    }
    // One closing line for the whole suite (cargo's last "test result" is
    // that of a crate without doc tests).
    println!("tests: {passed} passed, {failed} failed");
    Ok(())
}
