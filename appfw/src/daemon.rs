//! The daemon: wiring, signals, reload, shutdown.
//!
//! Start: configuration -> (detach) -> eBPF programs -> queue -> rules ->
//! queue and reporter threads. Stop (SIGINT/SIGTERM): rules out first, so
//! no packet waits on a listener that is going away, then the threads, then
//! the programs. SIGHUP reloads the configuration; a bad one is reported and
//! the running one kept.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};

use crate::{
    attribution::{self, Attributor},
    bpf,
    cli::{AttributionArg, RunArgs},
    config::{self, Config, Fail},
    policy::{Mode, Policy},
    queue::{self, Command},
    report::{self, Sinks},
    rules::Rules,
    system,
};

pub fn mode_of(args: &RunArgs) -> Mode {
    if args.whitelist {
        Mode::Whitelist
    } else if args.blacklist {
        Mode::Blacklist
    } else {
        Mode::Monitor
    }
}

/// Loads the configuration. On reload, `running` is the configuration in
/// force: if it came from a file, that file must still be there (a vanished
/// file is an error, never an empty policy).
fn load_config(args: &RunArgs, running: Option<&Config>) -> Result<Config> {
    let config = match (
        args.config.as_deref(),
        running.and_then(|c| c.path.as_deref()),
    ) {
        (Some(p), _) | (None, Some(p)) => config::load_file(p, true)?,
        (None, None) => config::load(None)?,
    };
    if let Some(path) = &config.path {
        config::check_permissions(path)?;
    }
    Ok(config)
}

pub fn run(args: RunArgs) -> Result<()> {
    if args.remove_rules {
        system::require_root()?;
        crate::rules::check_tools()?;
        let existed = crate::rules::remove_leftovers()?;
        eprintln!(
            "appfw: {}",
            if existed {
                "removed appfw's rules from this network namespace"
            } else {
                "no appfw rules in this network namespace"
            }
        );
        return Ok(());
    }
    let mode = mode_of(&args);
    let config = load_config(&args, None)?;
    system::require_root()?;
    if !args.no_rules {
        crate::rules::check_tools()?;
    }
    let queue_num = args.queue_num.unwrap_or(config.queue_num);
    // A daemon without -l or -t would report into the void, so it uses
    // syslog if there is one.
    let implicit_syslog = args.daemon && !args.syslog && args.trace_file.is_none();
    let sinks = match Sinks::open(
        !args.daemon,
        args.trace_file.as_deref(),
        args.syslog || implicit_syslog,
        args.debug && !args.daemon,
    ) {
        Err(e @ report::ReportError::Syslog(_)) if implicit_syslog => {
            eprintln!(
                "appfw: warning: {e}; as a daemon without -t FILE, appfw will report nothing"
            );
            Sinks::open(false, None, false, false)?
        }
        other => other?,
    };

    let ready = if args.daemon {
        Some(detach::detach(&args.pid_file)?)
    } else {
        None
    };
    init_logging(&args);
    for w in &config.warnings {
        log::warn!("{w}");
    }
    let result = serve(&args, mode, config, queue_num, sinks, ready.as_ref());
    if let Some(ready) = ready {
        match &result {
            Ok(()) => {}
            Err(e) => ready.failed(&format!("{e:#}")),
        }
        let _ = std::fs::remove_file(&args.pid_file);
    }
    result
}

fn serve(
    args: &RunArgs,
    mode: Mode,
    config: Config,
    queue_num: u16,
    sinks: Sinks,
    ready: Option<&detach::Ready>,
) -> Result<()> {
    let netns = system::netns_cookie()?;
    let (maps, mut programs, _) = bpf::load(bpf::Options {
        netns,
        events: false,
        kernel_debug: args.debug,
    })?;
    let kernel_log = programs.take_log();
    let fail_open = config.fail == Fail::Open;
    let bound = queue::bind(queue_num, fail_open)?;
    let rules = if args.no_rules {
        None
    } else {
        Some(Rules::install(queue_num, fail_open)?)
    };
    let (reports, reporter) = report::spawn(sinks).context("starting the reporter thread")?;
    let attribution_mode = match args.attribution {
        AttributionArg::Ebpf => attribution::Mode::Ebpf,
        AttributionArg::Procfs => attribution::Mode::ProcfsOnly,
    };
    let policy = Arc::new(Policy::new(mode, &config));
    let handle = queue::spawn(
        bound,
        queue::Setup {
            netns,
            attributor: Attributor::new(maps, attribution_mode),
            policy,
            reports,
            stats_every: args.debug.then_some(Duration::from_secs(10)),
            debug: args.debug && !args.daemon,
        },
    )
    .context("starting the queue thread")?;

    log::info!(
        "appfw {} running: mode {}, queue {}, {} (cgroup {}), config {} ({} whitelist, {} blacklist entries)",
        env!("CARGO_PKG_VERSION"),
        mode.name(),
        queue_num,
        match (&rules, fail_open) {
            (None, _) => "rules left to the administrator (--no-rules)",
            (Some(_), true) => "rules installed, fail open",
            (Some(_), false) => "rules installed, fail closed",
        },
        programs.cgroup.display(),
        config
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in defaults".into()),
        config.whitelist.len(),
        config.blacklist.len(),
    );
    if let Some(ready) = ready {
        ready.ok();
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal runtime")?;
    let kernel_log = runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        // Entries are files: one replaced (a package upgrade) is a new
        // file, which the running policy would not know until a reload.
        let mut recheck = tokio::time::interval(RECHECK_ENTRIES);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut running = config.clone();
        // SAFETY: the logger owns its ring buffer fd for as long as the
        // AsyncFd owns the logger.
        let mut kernel_log = match kernel_log {
            Some(l) => Some(unsafe { AsyncFd::register_with_interest(l, Interest::READABLE) }.map_err(|e| e.into_parts().1)?),
            None => None,
        };
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    if let Some(new) = reload(args, mode, queue_num, &config, &running, &handle.commands) {
                        running = new;
                    }
                }
                _ = recheck.tick() => {
                    let mut next = running.clone();
                    if next.refresh(&config::SystemFiles) {
                        for w in &next.warnings {
                            log::warn!("{w}");
                        }
                        let policy = Arc::new(Policy::new(mode, &next));
                        if handle.commands.send(Command::SetPolicy(policy)).is_ok() {
                            log::info!("a listed file changed (a package upgrade?): policy updated");
                            running = next;
                        }
                    }
                }
                guard = async { kernel_log.as_mut().expect("guarded").readable_mut().await }, if kernel_log.is_some() => {
                    let mut guard = guard?;
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
            }
        }
        Ok::<_, std::io::Error>(kernel_log)
    })
    .context("waiting for signals")?;

    // Rules first: afterwards nothing new is queued.
    if let Some(rules) = rules {
        rules.remove()?;
    }
    let stats = handle.stop();
    let kernel_counts: Vec<String> = programs
        .counters()
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    drop(kernel_log);
    drop(programs);
    // The queue thread held the last report sender; the reporter drains
    // and ends.
    let _ = reporter.join();
    for line in stats.to_string().lines() {
        log::info!("{line}");
    }
    log::info!("kernel hooks: {}", kernel_counts.join(", "));
    Ok(())
}

/// How often the files that entries name are checked for replacement.
const RECHECK_ENTRIES: Duration = Duration::from_secs(10);

/// Loads the configuration again; `started` is the one appfw started with
/// (queue and fail mode stay), `running` the one in force. Returns the new
/// one when it is in force.
fn reload(
    args: &RunArgs,
    mode: Mode,
    queue_num: u16,
    started: &Config,
    running: &Config,
    commands: &std::sync::mpsc::Sender<Command>,
) -> Option<Config> {
    match load_config(args, Some(started)) {
        Ok(mut new) => {
            new.inherit(running);
            for w in &new.warnings {
                log::warn!("{w}");
            }
            if args.queue_num.is_none() && new.queue_num != queue_num {
                log::warn!(
                    "queue-num changed to {}: that takes a restart; still using queue {queue_num}",
                    new.queue_num
                );
            }
            if new.fail != started.fail {
                log::warn!("fail mode changed: that takes a restart");
            }
            let policy = Arc::new(Policy::new(mode, &new));
            if commands.send(Command::SetPolicy(policy)).is_ok() {
                log::info!(
                    "configuration reloaded: {} whitelist and {} blacklist entries",
                    new.whitelist.len(),
                    new.blacklist.len()
                );
                return Some(new);
            }
            None
        }
        Err(e) => {
            log::error!("reloading the configuration failed, keeping the running one: {e:#}");
            None
        }
    }
}

fn init_logging(args: &RunArgs) {
    let level = if args.debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    if args.daemon {
        if let Ok(logger) = report::open_syslog() {
            if log::set_boxed_logger(Box::new(syslog::BasicLogger::new(logger))).is_ok() {
                log::set_max_level(level);
            }
        }
        return;
    }
    // --debug is about appfw; aya's own debug output (relocations) is not.
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .filter_module("appfw", level)
        .format_timestamp(None)
        .format_target(false)
        .try_init();
}

/// Detaching from the terminal: fork, setsid, fork, chdir /, stdio to
/// /dev/null, pid file. The first parent waits on a pipe until the daemon
/// reports that it runs (or why it could not start) and exits accordingly,
/// so `appfw -d` fails visibly, as an init system expects. Written out here
/// because no maintained daemonizing crate offers that readiness handshake.
mod detach {
    use std::{
        fs::{File, OpenOptions},
        io::{Read, Write},
        os::{fd::FromRawFd, unix::fs::OpenOptionsExt},
        path::Path,
    };

    use anyhow::{bail, Context, Result};

    pub struct Ready {
        pipe: std::cell::RefCell<Option<File>>,
    }

    impl Ready {
        pub fn ok(&self) {
            if let Some(mut f) = self.pipe.borrow_mut().take() {
                let _ = f.write_all(b"\0");
            }
        }

        pub fn failed(&self, why: &str) {
            if let Some(mut f) = self.pipe.borrow_mut().take() {
                let _ = f.write_all(why.as_bytes());
            }
        }
    }

    pub fn detach(pid_file: &Path) -> Result<Ready> {
        let mut fds = [0; 2];
        // SAFETY: valid array for pipe2.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            bail!(
                "creating a pipe failed: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: fds are fresh and owned by us from here on.
        let (mut rd, wr) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        // SAFETY: single-threaded at this point (no runtime, no threads yet).
        match unsafe { libc::fork() } {
            -1 => bail!("fork failed: {}", std::io::Error::last_os_error()),
            0 => {}
            _ => {
                drop(wr);
                let mut msg = Vec::new();
                let _ = rd.read_to_end(&mut msg);
                match msg.as_slice() {
                    [0] => std::process::exit(0),
                    [] => {
                        eprintln!("appfw: the daemon exited before it was ready");
                        std::process::exit(1)
                    }
                    why => {
                        eprintln!("appfw: {}", String::from_utf8_lossy(why));
                        std::process::exit(1)
                    }
                }
            }
        }
        drop(rd);
        // SAFETY: plain syscalls in the child.
        unsafe {
            if libc::setsid() < 0 {
                bail!("setsid failed: {}", std::io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => bail!("fork failed: {}", std::io::Error::last_os_error()),
                0 => {}
                _ => libc::_exit(0),
            }
            libc::umask(0o022);
        }
        std::env::set_current_dir("/").context("chdir /")?;
        let null = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .context("opening /dev/null")?;
        for fd in 0..3 {
            use std::os::fd::AsRawFd;
            // SAFETY: both descriptors are valid.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o644)
            .open(pid_file)
            .with_context(|| format!("writing pid file {}", pid_file.display()))?;
        writeln!(f, "{}", std::process::id())?;
        Ok(Ready {
            pipe: std::cell::RefCell::new(Some(wr)),
        })
    }
}
