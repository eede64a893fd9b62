//! Turns `run()`'s result into an exit code; nothing else.

use std::process::ExitCode;

use clap::Parser;

use appfw::{
    cli::{self, Cli, Command},
    daemon, service, trace,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Trace(args)) => trace::run(args),
        Some(Command::Status(args)) => service::control::run(args),
        Some(Command::Completions { shell }) => {
            cli::write_completions(shell, &mut std::io::stdout()).map_err(Into::into)
        }
        Some(Command::Man) => cli::write_man(&mut std::io::stdout()).map_err(Into::into),
        None => daemon::run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("appfw: {e:#}");
            ExitCode::FAILURE
        }
    }
}
