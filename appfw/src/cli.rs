//! What the user asked for on the command line.
//!
//! The flat flags are those of the tool appfw replaces; subcommands are
//! additions (`appfw trace`).

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

pub const DEFAULT_CONFIG: &str = "/etc/appfw/appfw.toml";
pub const DEFAULT_PID_FILE: &str = "/run/appfw.pid";

#[derive(Debug, Parser)]
#[command(
    name = "appfw",
    version,
    about = "Per-application outbound firewall: decides which programs may open network connections",
    long_about = "Per-application outbound firewall. Outgoing TCP and UDP connections are sent \
                  through NFQUEUE; eBPF programs record which program opened each socket, and \
                  appfw accepts or blocks the connection by that program's executable.\n\n\
                  With none of -w, -b, -m, appfw monitors (accepts everything and reports).",
    disable_version_flag = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
    /// Print the version and exit.
    #[arg(short = 'v', long = "version", action = ArgAction::Version)]
    version: Option<bool>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print one line per new outbound socket, live, with its program.
    Trace(TraceArgs),
    /// Show the running daemon's mode, configuration, rules, counters and
    /// kernel queue statistics (root; the daemon of this network namespace).
    Status(StatusArgs),
    /// Print the shell completion script for SHELL (bash, zsh or fish).
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the man page, appfw(8), in roff (what `cargo xtask install` installs).
    #[command(hide = true)]
    Man,
}

/// The shells whose completion scripts are installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl From<CompletionShell> for clap_complete::Shell {
    fn from(s: CompletionShell) -> Self {
        match s {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        }
    }
}

/// Writes the completion script for `shell`, generated from this definition.
pub fn write_completions(
    shell: CompletionShell,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    // Into memory first: clap_complete panics on a failed write (a closed
    // pipe), the caller gets an error instead.
    let mut script = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::from(shell),
        &mut cmd,
        "appfw",
        &mut script,
    );
    out.write_all(&script)
}

/// Writes appfw(8), generated from this definition so it cannot drift from
/// `--help`.
pub fn write_man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let cmd = <Cli as clap::CommandFactory>::command();
    clap_mangen::Man::new(cmd).section("8").render(out)
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Accept packets of programs in the whitelist, drop the rest.
    #[arg(short = 'w', long, group = "mode")]
    pub whitelist: bool,
    /// Drop packets of programs in the blacklist, accept the rest.
    #[arg(short = 'b', long, group = "mode")]
    pub blacklist: bool,
    /// Accept all packets and report each program's new connections (default).
    #[arg(short = 'm', long, group = "mode")]
    pub monitor: bool,
    /// Log filtered packets to syslog (facility daemon).
    #[arg(short = 'l', long = "log")]
    pub syslog: bool,
    /// Log filtered packets to FILENAME (appended, created with mode 0640).
    #[arg(short = 't', long = "trace", value_name = "FILENAME")]
    pub trace_file: Option<PathBuf>,
    /// Run as a daemon: detach, write a pid file, log to syslog and/or file.
    #[arg(short = 'd', long)]
    pub daemon: bool,
    /// Print per-packet detail and periodic statistics on stderr.
    #[arg(long)]
    pub debug: bool,
    /// Configuration file [default: /etc/appfw/appfw.toml; when that file
    /// does not exist, built-in defaults: queue 0, empty lists].
    #[arg(short = 'c', long, value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    /// NFQUEUE number (overrides queue-num in the configuration).
    #[arg(long, value_name = "N")]
    pub queue_num: Option<u16>,
    /// Do not install netfilter rules; the administrator sends packets to
    /// the queue (see README: "Rules").
    #[arg(long)]
    pub no_rules: bool,
    /// Remove appfw's netfilter rules from this network namespace (left by
    /// a crashed or killed appfw) and exit.
    #[arg(long, conflicts_with_all = ["whitelist", "blacklist", "monitor", "daemon", "no_rules"])]
    pub remove_rules: bool,
    /// Send every new flow through the queue: keep no verdicts per process
    /// in the kernel (overrides kernel-verdicts in the configuration).
    #[arg(long)]
    pub no_kernel_verdicts: bool,
    /// Serve Prometheus metrics on ADDR (address:port) at /metrics
    /// (overrides metrics in the configuration).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Pid file written with --daemon.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_PID_FILE)]
    pub pid_file: PathBuf,
    /// How owners are found: the eBPF records (with /proc as fallback), or
    /// /proc alone (only to measure the fallback).
    #[arg(long, value_enum, default_value_t = AttributionArg::Ebpf, hide = true)]
    pub attribution: AttributionArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AttributionArg {
    Ebpf,
    Procfs,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many lines (default: run until interrupted).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// One JSON object instead of text, for scripts.
    #[arg(long)]
    pub json: bool,
    /// The queue of the daemon to ask [default: queue-num from the
    /// configuration, else 0].
    #[arg(long, value_name = "N")]
    pub queue_num: Option<u16>,
    /// The configuration whose queue-num to use.
    #[arg(short = 'c', long, value_name = "CONFIG")]
    pub config: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn modes_are_mutually_exclusive() {
        assert!(Cli::try_parse_from(["appfw", "-w", "-b"]).is_err());
        assert!(Cli::try_parse_from(["appfw", "-m", "-w"]).is_err());
        let cli = Cli::try_parse_from(["appfw", "-b", "-l", "-t", "/tmp/x"]).unwrap();
        assert!(cli.run.blacklist && cli.run.syslog);
        assert_eq!(
            cli.run.trace_file.as_deref(),
            Some(std::path::Path::new("/tmp/x"))
        );
    }

    #[test]
    fn old_flags_parse() {
        let cli =
            Cli::try_parse_from(["appfw", "--whitelist", "--debug", "-d", "--queue-num", "3"])
                .unwrap();
        assert!(cli.run.whitelist && cli.run.debug && cli.run.daemon);
        assert_eq!(cli.run.queue_num, Some(3));
        assert!(cli.command.is_none());
    }

    #[test]
    fn trace_subcommand_parses() {
        let cli = Cli::try_parse_from(["appfw", "trace", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Trace(TraceArgs { json: true, .. }))
        ));
    }

    #[test]
    fn short_v_is_version() {
        let err = Cli::try_parse_from(["appfw", "-v"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
    }

    #[test]
    fn man_page_is_section_8_and_lists_the_flags() {
        let mut out = Vec::new();
        write_man(&mut out).unwrap();
        let man = String::from_utf8(out).unwrap();
        assert!(
            man.contains(".TH appfw 8"),
            "{}",
            &man[..200.min(man.len())]
        );
        assert!(
            man.contains("whitelist") && man.contains("queue\\-num"),
            "{man}"
        );
    }
}
