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
    kernel_queue::KernelQueue,
    netfilter::Rules,
    policy::{Mode, Policy},
    queue::{self, Command},
    report::{self, Sinks},
    service::{control, map_fill::MapFill, metrics, notify},
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
        crate::netfilter::check_tools()?;
        let existed = crate::netfilter::remove_leftovers()?;
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
        crate::netfilter::check_tools()?;
    }
    let queue_num = args.queue_num.unwrap_or(config.queue_num);
    // A daemon without -l or -t would report into the void, so it uses
    // syslog if there is one.
    let implicit_syslog = args.daemon && !args.syslog && args.trace_file.is_none();
    // Under systemd, stderr is the journal: reports go there with their
    // fields instead of as plain stdout lines.
    let journal = !args.daemon && crate::service::journal::under_journal();
    let sinks = match Sinks::open(
        !args.daemon && !journal,
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
    let mut sinks = sinks;
    if journal {
        sinks.journal = Some(
            crate::service::journal::open()
                .context("connecting to the journal (/run/systemd/journal/socket)")?,
        );
    }

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
    let (mut maps, mut programs, _) = bpf::load(bpf::Options {
        netns,
        events: false,
        kernel_debug: args.debug,
        filters: !args.no_rules,
    })?;
    let kernel_log = programs.take_log();
    let fail_open = config.fail == Fail::Open;
    let bound = queue::bind(queue_num)?;
    let control = control::bind(queue_num)?;
    let metrics_listener = match args.metrics.or(config.metrics) {
        None => None,
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .with_context(|| {
                    format!("serving metrics on {addr}: is another program on that port? Choose another address with --metrics or metrics in [global]")
                })?,
        ),
    };
    let started = std::time::Instant::now();
    let started_at = report::timestamp();
    let rules = if args.no_rules {
        None
    } else {
        let filters = programs
            .filters
            .as_ref()
            .context("the socket filters for appfw's rules were not loaded")?;
        Some(Rules::install(queue_num, fail_open, filters)?)
    };
    let (reports, reporter) = report::spawn(sinks).context("starting the reporter thread")?;
    let attribution_mode = match args.attribution {
        AttributionArg::Ebpf => attribution::Mode::Ebpf,
        AttributionArg::Procfs => attribution::Mode::ProcfsOnly,
    };
    let policy = Arc::new(Policy::new(mode, &config));
    // Counted at scrape time through handles of its own: the queue thread
    // owns `maps`.
    let map_fill = match metrics_listener.as_ref().map(|_| MapFill::of(&maps)) {
        Some(Ok(f)) => Some(Arc::new(std::sync::Mutex::new(f))),
        Some(Err(e)) => {
            log::warn!(
                "/metrics will not show how full the BPF maps are: opening them again failed: {e}"
            );
            None
        }
        None => None,
    };
    let handle = queue::spawn(
        bound,
        queue::Setup {
            netns,
            names: maps
                .dns
                .take()
                .map(|ring| crate::names::Watcher::new(ring, crate::names::system_resolvers())),
            attributor: Attributor::new(maps, attribution_mode),
            policy,
            reports,
            stats_every: args.debug.then_some(Duration::from_secs(10)),
            debug: args.debug && !args.daemon,
            socket_verdicts: rules.is_some(),
            kernel_verdicts: rules.is_some() && kernel_verdicts(args, &config),
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
    let (rules_v4, rules_v6) = rules.as_ref().map_or((false, false), Rules::families);
    let status = |running: &Config, loaded_at: &str| {
        let (top_talkers, other_flows, unknown_flows) = control::talkers_of(&handle.talkers());
        control::Status {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            mode: mode.name().into(),
            queue: queue_num,
            config: running.path.as_ref().map(|p| p.display().to_string()),
            config_loaded_at: loaded_at.into(),
            started_at: started_at.clone(),
            uptime_secs: started.elapsed().as_secs(),
            fail: if fail_open { "open" } else { "closed" }.into(),
            rules: control::RulesStatus {
                v4: rules_v4,
                v6: rules_v6,
            },
            counters: handle.counters(),
            attribution: control::attribution_of(&handle.counters()),
            kernel_queue: KernelQueue::read(queue_num).ok().flatten().map(Into::into),
            top_talkers,
            other_flows,
            unknown_flows,
            decided: {
                let hooks = programs.counters();
                let count = |name: &str| hooks.iter().find(|(n, _)| *n == name).map_or(0, |h| h.1);
                control::DecidedStatus {
                    kernel_verdicts: rules.is_some() && kernel_verdicts(args, running),
                    in_kernel: count("process_verdict"),
                    queued: count("queued"),
                }
            },
        }
    };
    notify::ready(&format!("mode {}, queue {queue_num}", mode.name()));
    let mut systemd_watchdog = notify::Watchdog::from_env();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal runtime")?;
    let (kernel_log, queue_died, mut drops) = runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        // Entries are files: one replaced (a package upgrade) is a new
        // file, which the running policy would not know until a reload.
        let mut recheck = tokio::time::interval(RECHECK_ENTRIES);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut running = config.clone();
        let mut loaded_at = started_at.clone();
        let control = tokio::net::UnixListener::from_std(control)?;
        let metrics_listener = metrics_listener
            .map(tokio::net::TcpListener::from_std)
            .transpose()?;
        // SAFETY: the logger owns its ring buffer fd for as long as the
        // AsyncFd owns the logger.
        let mut kernel_log = match kernel_log {
            Some(l) => Some(unsafe { AsyncFd::register_with_interest(l, Interest::READABLE) }.map_err(|e| e.into_parts().1)?),
            None => None,
        };
        // Nothing judges packets without the queue thread: if it ends on
        // its own, the daemon must not look alive.
        let mut watchdog = tokio::time::interval(Duration::from_millis(500));
        let mut queue_died = false;
        // The kernel counts what it drops when appfw falls behind; read
        // off the packet path, reported at most once a second.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut drops = DropReporter::new(queue_num);
        let mut feed = tokio::time::interval(
            systemd_watchdog
                .as_ref()
                .map_or(Duration::from_secs(3600), |w| w.every),
        );
        loop {
            tokio::select! {
                _ = feed.tick(), if systemd_watchdog.is_some() => {
                    if let Some(w) = systemd_watchdog.as_mut() {
                        w.check(handle.progress());
                    }
                }
                _ = tick.tick() => drops.check(),
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = watchdog.tick() => if handle.is_finished() {
                    queue_died = true;
                    break;
                },
                _ = hup.recv() => {
                    notify::reloading();
                    if let Some(new) = reload(args, mode, queue_num, &config, &running, &handle) {
                        running = new;
                        loaded_at = report::timestamp();
                    }
                    notify::reloaded();
                }
                conn = async { metrics_listener.as_ref().expect("guarded").accept().await }, if metrics_listener.is_some() => {
                    if let Ok((stream, _)) = conn {
                        let hooks = programs.counters();
                        let counters = handle.counters();
                        let talkers = handle.talkers();
                        let kernel_queue = KernelQueue::read(queue_num).ok().flatten();
                        let fill = map_fill.clone();
                        tokio::spawn(async move {
                            // Walking the maps blocks: on a worker of its own.
                            let maps = match fill {
                                Some(f) => tokio::task::spawn_blocking(move || {
                                    f.lock().unwrap_or_else(|e| e.into_inner()).levels()
                                })
                                .await
                                .unwrap_or_default(),
                                None => Vec::new(),
                            };
                            let body = metrics::render(&metrics::Snapshot {
                                counters,
                                kernel_queue,
                                hooks: &hooks,
                                talkers: &talkers,
                                maps: &maps,
                            });
                            metrics::answer(stream, body).await;
                        });
                    }
                }
                conn = control.accept() => if let Ok((stream, _)) = conn {
                    let uid = stream.peer_cred().ok().map(|c| c.uid());
                    let body = control::answer(uid, || status(&running, &loaded_at));
                    // A few kilobytes into an empty socket buffer: the
                    // write does not wait; the timeout bounds a stuck peer.
                    if let Ok(mut s) = stream.into_std() {
                        use std::io::Write;
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                        let _ = s.write_all(&body);
                    }
                },
                _ = recheck.tick() => {
                    let mut next = running.clone();
                    if next.refresh(&config::SystemFiles) {
                        for w in &next.warnings {
                            log::warn!("{w}");
                        }
                        let command = Command::SetPolicy {
                            policy: Arc::new(Policy::new(mode, &next)),
                            kernel_verdicts: kernel_verdicts(args, &next),
                        };
                        if handle.send(command) {
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
        Ok::<_, std::io::Error>((kernel_log, queue_died, drops))
    })
    .context("waiting for signals")?;
    notify::stopping();

    // Rules first: afterwards nothing new is queued. Unless the queue
    // thread died and the administrator chose to fail closed: then the
    // chain stays, and traffic waits for the next appfw.
    match rules {
        Some(rules) if queue_died && !fail_open => {
            log::error!("the queue thread died; appfw's rules stay (fail = \"closed\"): new flows are blocked until appfw runs again, or run appfw --remove-rules");
            std::mem::forget(rules);
        }
        Some(rules) => rules.remove()?,
        None => {}
    }
    drops.check();
    let kernel_queue = KernelQueue::read(queue_num);
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
    match kernel_queue {
        Ok(Some(k)) => log::info!("{k}"),
        Ok(None) => {
            log::warn!("NFQUEUE {queue_num} is missing from /proc/net/netfilter/nfnetlink_queue")
        }
        Err(e) => log::warn!("reading /proc/net/netfilter/nfnetlink_queue failed: {e}"),
    }
    log::info!("kernel hooks: {}", kernel_counts.join(", "));
    if queue_died {
        anyhow::bail!(
            "the queue thread stopped unexpectedly, so nothing judged packets any more. See the messages above and restart appfw"
        );
    }
    Ok(())
}

/// Reports packets the kernel dropped because appfw's queue or receive
/// buffer was full (never accepted: the queue is not fail-open).
struct DropReporter {
    queue_num: u16,
    reported: u64,
    warned_unreadable: bool,
}

impl DropReporter {
    fn new(queue_num: u16) -> Self {
        DropReporter {
            queue_num,
            reported: 0,
            warned_unreadable: false,
        }
    }

    fn check(&mut self) {
        match KernelQueue::read(self.queue_num) {
            Ok(Some(k)) if k.dropped() > self.reported => {
                log::warn!(
                    "{} packets dropped: queue full ({} in all since start: {} over the queue length, {} over the receive buffer). Programs are sending new flows faster than appfw judges them.",
                    k.dropped() - self.reported,
                    k.dropped(),
                    k.queue_dropped,
                    k.user_dropped
                );
                self.reported = k.dropped();
            }
            Ok(_) => {}
            Err(e) if !self.warned_unreadable => {
                self.warned_unreadable = true;
                log::warn!("reading /proc/net/netfilter/nfnetlink_queue failed: {e}; dropped packets cannot be reported");
            }
            Err(_) => {}
        }
    }
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
    queue: &queue::QueueHandle,
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
            let command = Command::SetPolicy {
                policy: Arc::new(Policy::new(mode, &new)),
                kernel_verdicts: kernel_verdicts(args, &new),
            };
            if queue.send(command) {
                log::info!(
                    "configuration reloaded: {} whitelist and {} blacklist entries, {} rules",
                    new.whitelist.len(),
                    new.blacklist.len(),
                    new.rules.len()
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
    if !args.daemon && crate::service::journal::under_journal() {
        if let Ok(j) = crate::service::journal::open() {
            if j.install().is_ok() {
                log::set_max_level(level);
                return;
            }
        }
    }
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
        os::unix::fs::OpenOptionsExt,
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
        let (rd, wr) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("creating a pipe")?;
        let (mut rd, wr) = (File::from(rd), File::from(wr));
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
        rustix::process::setsid().context("setsid")?;
        // SAFETY: still single-threaded; the parent only exits.
        match unsafe { libc::fork() } {
            -1 => bail!("fork failed: {}", std::io::Error::last_os_error()),
            0 => {}
            // SAFETY: _exit skips the atexit handlers, which belong to the child.
            _ => unsafe { libc::_exit(0) },
        }
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        std::env::set_current_dir("/").context("chdir /")?;
        let null = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .context("opening /dev/null")?;
        rustix::stdio::dup2_stdin(&null).context("stdin to /dev/null")?;
        rustix::stdio::dup2_stdout(&null).context("stdout to /dev/null")?;
        rustix::stdio::dup2_stderr(&null).context("stderr to /dev/null")?;
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

/// Whether process verdicts are kept in the kernel: on unless the
/// configuration or the command line turns them off.
fn kernel_verdicts(args: &RunArgs, config: &Config) -> bool {
    config.kernel_verdicts && !args.no_kernel_verdicts
}
