//! `cargo xtask bench`: appfw side by side with no firewall and with a bare
//! NFQUEUE listener, in one run, interleaved (none, floor, monitor,
//! blacklist, none, ...) so that machine noise hits every mode alike.
//! See BENCHMARKS.md for what each mode means.

pub mod floor;
pub mod load;
mod report;
pub mod soak;

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{cargo, ebpf, root, run_cmd, system};
use load::{LoadResult, Proto};
use report::{AppfwRun, Report, RunResult, ShortLived};

#[path = "../../../appfw/tests/it/netns.rs"]
#[allow(dead_code, reason = "shared with the tests, which use more of it")]
mod netns;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds of load per mode and protocol in each round.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Rounds (each runs every mode once).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Short-lived processes in the attribution run.
    #[arg(long, default_value_t = 200)]
    pub short_lived: usize,
    /// A few seconds of the same code path, checking only that every mode
    /// produced traffic and the report was written (part of `xtask test`).
    #[arg(long)]
    pub smoke: bool,
    /// Instead of the comparison: a soak of many UDP flows through appfw,
    /// then a check that the kernel's queue counters and appfw's agree.
    #[arg(long)]
    pub soak: bool,
    /// Flows in the soak (90% closed loop, 10% an overflowing burst).
    #[arg(long, default_value_t = 1_000_000)]
    pub soak_flows: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    None,
    Conntrack,
    Floor,
    Monitor,
    Blacklist,
    /// `--blacklist` with every new flow through the queue.
    BlacklistQueued,
    /// `--blacklist` and 1,000 rules on destinations: every flow judged
    /// in the queue (a verdict that depends on the destination is not
    /// kept for the process).
    Rules,
}

impl Mode {
    pub const ALL: [Mode; 7] = [
        Mode::None,
        Mode::Conntrack,
        Mode::Floor,
        Mode::Monitor,
        Mode::Blacklist,
        Mode::BlacklistQueued,
        Mode::Rules,
    ];
    /// The modes that run appfw.
    pub const APPFW: [Mode; 4] = [
        Mode::Monitor,
        Mode::Blacklist,
        Mode::BlacklistQueued,
        Mode::Rules,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Mode::None => "none (no queue rule)",
            Mode::Conntrack => "conntrack only (ct NEW -> ACCEPT)",
            Mode::Floor => "floor (ct NEW -> bare nfq accept-all)",
            Mode::Monitor => "appfw --monitor",
            Mode::Blacklist => "appfw --blacklist (1,000 entries)",
            Mode::BlacklistQueued => "appfw --blacklist, kernel verdicts off",
            Mode::Rules => "appfw --blacklist and 1,000 [[rule]]s (addr, port)",
        }
    }
}

const QUEUE: &str = "0";
const TCP_TARGET: &str = "198.51.100.2:8080";
const UDP_TARGET: &str = "198.51.100.2:5353";

struct Bench {
    pair: netns::Pair,
    dir: PathBuf,
    appfw: PathBuf,
    xtask: PathBuf,
    blacklist: PathBuf,
    rules_cfg: PathBuf,
    monitor_cfg: PathBuf,
    args: Args,
}

pub fn run(mut args: Args) -> Result<()> {
    if !system::is_root() {
        bail!("the bench creates network namespaces and loads eBPF programs: run it as root (sudo -E cargo xtask bench)");
    }
    if args.smoke {
        args.duration = 1;
        args.rounds = 1;
        args.short_lived = 20;
        args.concurrency = 4;
    }
    system::ensure_iptables(false)?;
    ebpf::build()?;
    run_cmd(cargo().args([
        "build",
        "--release",
        "--package",
        "appfw",
        "--package",
        "xtask",
    ]))?;
    let dir = root().join("target/bench");
    fs::create_dir_all(&dir)?;
    let blacklist = dir.join("blacklist.toml");
    let entries: Vec<String> = (0..1000)
        .map(|i| format!("    \"/opt/appfw-bench/not-this-program-{i}\","))
        .collect();
    write_config(
        &blacklist,
        &format!("[global]\nblacklist = [\n{}\n]\n", entries.join("\n")),
    )?;
    // Rules on destinations the load never goes to: each is checked, none
    // matches, and the lists decide.
    let rules_cfg = dir.join("rules.toml");
    let mut rules = format!("[global]\nblacklist = [\n{}\n]\n", entries.join("\n"));
    for i in 0..1000 {
        rules += &format!(
            "\n[[rule]]\naddr = \"10.{}.{}.0/24\"\nport = {}\naction = \"drop\"\n",
            i / 256,
            i % 256,
            1000 + i
        );
    }
    write_config(&rules_cfg, &rules)?;
    let monitor_cfg = dir.join("monitor.toml");
    write_config(&monitor_cfg, "[global]\n")?;

    let pair = netns::Pair::new("bench");
    let bench = Bench {
        pair,
        dir,
        appfw: root().join("target/release/appfw"),
        xtask: root().join("target/release/xtask"),
        blacklist,
        rules_cfg,
        monitor_cfg,
        args,
    };
    bench.tune()?;
    let mut server = bench.start_server()?;
    if bench.args.soak {
        let result = bench.soak(bench.args.soak_flows);
        let _ = server.kill();
        let _ = server.wait();
        return result;
    }
    let result = bench.measure();
    let _ = server.kill();
    let _ = server.wait();
    let report = result?;
    let text = report.markdown();
    let path = bench.dir.join("report.md");
    fs::write(&path, &text)?;
    println!("{text}");
    eprintln!("xtask: report written to {}", path.display());
    if bench.args.smoke {
        report.check_smoke(bench.args.short_lived)?;
        eprintln!("xtask: bench smoke run: every mode produced traffic");
    }
    Ok(())
}

fn write_config(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

impl Bench {
    fn in_client(&self, program: &Path) -> Command {
        netns::Pair::exec(&self.pair.client, program.to_str().expect("utf-8 path"))
    }

    /// Short conntrack timeouts and a wide port range in the client
    /// namespace, and no TIME_WAIT sockets on the server (it closes first),
    /// so that minutes of short connections do not fill tables or run out
    /// of ports, which would make later runs slower than earlier ones.
    fn tune(&self) -> Result<()> {
        let _ = netns::Pair::exec(&self.pair.server, "sysctl")
            .args(["-q", "-w", "net.ipv4.tcp_max_tw_buckets=0"])
            .status();
        for (key, value) in [
            ("net.ipv4.ip_local_port_range", "1024 65535"),
            ("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "1"),
            ("net.netfilter.nf_conntrack_tcp_timeout_close_wait", "1"),
            ("net.netfilter.nf_conntrack_tcp_timeout_fin_wait", "1"),
            ("net.netfilter.nf_conntrack_tcp_timeout_last_ack", "1"),
            ("net.netfilter.nf_conntrack_udp_timeout", "1"),
            ("net.netfilter.nf_conntrack_udp_timeout_stream", "1"),
        ] {
            let _ = netns::Pair::exec(&self.pair.client, "sysctl")
                .args(["-q", "-w", &format!("{key}={value}")])
                .stderr(Stdio::null())
                .status();
        }
        Ok(())
    }

    fn start_server(&self) -> Result<Child> {
        let mut child = netns::Pair::exec(&self.pair.server, self.xtask.to_str().expect("utf-8"))
            .args([
                "bench-serve",
                "--tcp",
                "[::]:8080",
                "--udp",
                "0.0.0.0:5353",
                "--threads",
                "2",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the bench server")?;
        wait_ready(&mut child, "the bench server")?;
        Ok(child)
    }

    fn measure(&self) -> Result<Report> {
        let mut report = Report::new(&self.args);
        for round in 0..self.args.rounds {
            for mode in Mode::ALL {
                eprintln!(
                    "xtask: round {}/{}: {}",
                    round + 1,
                    self.args.rounds,
                    mode.label()
                );
                let r = self.run_mode(mode)?;
                report.add(mode, r);
            }
        }
        report.short_lived = Some(self.short_lived()?);
        Ok(report)
    }

    fn load(&self, proto: Proto) -> Result<LoadResult> {
        let (name, target) = match proto {
            Proto::Tcp => ("tcp", TCP_TARGET),
            Proto::Udp => ("udp", UDP_TARGET),
        };
        let out = self
            .in_client(&self.xtask)
            .args(["bench-load", name, target])
            .args(["--concurrency", &self.args.concurrency.to_string()])
            .args(["--duration", &self.args.duration.to_string()])
            .output()
            .context("running the load generator")?;
        if !out.status.success() {
            bail!(
                "load generator failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).context("reading the load generator's result")
    }

    fn run_mode(&self, mode: Mode) -> Result<RunResult> {
        match mode {
            Mode::None => {
                self.remove_rules()?;
                Ok(RunResult {
                    tcp: self.load(Proto::Tcp)?,
                    udp: self.load(Proto::Udp)?,
                    appfw: None,
                })
            }
            Mode::Conntrack => {
                self.classic_rules("ACCEPT")?;
                let tcp = self.load(Proto::Tcp);
                let udp = self.load(Proto::Udp);
                self.remove_rules()?;
                Ok(RunResult {
                    tcp: tcp?,
                    udp: udp?,
                    appfw: None,
                })
            }
            Mode::Floor => {
                // What NFQUEUE costs when only each flow's first packet is
                // queued (the rules appfw had before it judged by socket),
                // with a listener that only accepts.
                self.classic_rules(&format!("NFQUEUE --queue-num {QUEUE} --queue-bypass"))?;
                let mut floor = self
                    .in_client(&self.xtask)
                    .args(["bench-floor", "--queue-num", QUEUE])
                    .stdout(Stdio::piped())
                    .spawn()
                    .context("starting the floor listener")?;
                wait_ready(&mut floor, "the floor listener")?;
                let tcp = self.load(Proto::Tcp);
                let udp = self.load(Proto::Udp);
                let _ = floor.kill();
                let mut summary = String::new();
                if let Some(mut out) = floor.stdout.take() {
                    let _ = std::io::Read::read_to_string(&mut out, &mut summary);
                }
                let _ = floor.wait();
                self.remove_rules()?;
                let floor_latency = summary
                    .lines()
                    .last()
                    .and_then(|l| AppfwRun::parse_latency(l).ok());
                Ok(RunResult {
                    tcp: tcp?,
                    udp: udp?,
                    appfw: floor_latency,
                })
            }
            Mode::Monitor | Mode::Blacklist | Mode::BlacklistQueued | Mode::Rules => {
                let (args, cfg): (&[&str], _) = match mode {
                    Mode::Monitor => (&["-m"], &self.monitor_cfg),
                    Mode::Blacklist => (&["-b"], &self.blacklist),
                    Mode::Rules => (&["-b"], &self.rules_cfg),
                    _ => (&["-b", "--no-kernel-verdicts"], &self.blacklist),
                };
                let d = self.start_appfw(args, cfg)?;
                // The start-up peak (aya parses the kernel's BTF while
                // loading) is recorded, then the high-water mark is reset so
                // that the peak under load is measured on its own.
                let (startup_peak, _) = d.memory_kib();
                d.reset_peak();
                let cpu0 = d.cpu_ticks();
                let tcp = self.load(Proto::Tcp);
                let udp = self.load(Proto::Udp);
                let cpu1 = d.cpu_ticks();
                let (hwm, rss) = d.memory_kib();
                let maps = d.map_memlock();
                let stderr = d.stop()?;
                let mut run = AppfwRun::parse(&stderr)?;
                run.cpu_secs = (cpu1.saturating_sub(cpu0)) as f64 / clock_ticks();
                run.peak_rss_kib = hwm;
                run.startup_peak_kib = startup_peak;
                run.rss_kib = rss;
                run.map_bytes = maps;
                Ok(RunResult {
                    tcp: tcp?,
                    udp: udp?,
                    appfw: Some(run),
                })
            }
        }
    }

    fn short_lived(&self) -> Result<ShortLived> {
        let n = self.args.short_lived;
        let mut right = [0usize; 2];
        // Port 9 (discard): no reply, and a port the throughput runs did not
        // use, so no conntrack entry of theirs can hide a datagram.
        for (i, extra) in [&[][..], &["--attribution", "procfs"][..]]
            .into_iter()
            .enumerate()
        {
            let mut args = vec!["-m", "--debug"];
            args.extend_from_slice(extra);
            let d = self.start_appfw(&args, &self.monitor_cfg)?;
            let out = self.spawn_senders(n)?;
            let pids: Vec<u32> =
                serde_json::from_slice(&out.stdout).context("reading the senders' pids")?;
            thread::sleep(Duration::from_millis(500));
            let stderr = d.stop()?;
            let exe = self.xtask.to_string_lossy().into_owned();
            right[i] = pids
                .iter()
                .filter(|pid| {
                    let needle = format!(" pid={pid} exe='{exe}'");
                    stderr
                        .lines()
                        .any(|l| l.contains("source=") && l.contains(&needle))
                })
                .count();
        }
        // The same processes under --blacklist, with kernel verdicts on
        // and off, alternating: each process makes one flow, so both send
        // every flow through the queue, and the rates should match.
        let mut secs = [Vec::new(), Vec::new()];
        for _ in 0..3 {
            for (i, extra) in [&[][..], &["--no-kernel-verdicts"][..]]
                .into_iter()
                .enumerate()
            {
                let mut args = vec!["-b"];
                args.extend_from_slice(extra);
                let d = self.start_appfw(&args, &self.blacklist)?;
                let start = Instant::now();
                let out = self.spawn_senders(n)?;
                secs[i].push(start.elapsed().as_secs_f64());
                if !out.status.success() {
                    bail!(
                        "short-lived senders failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                d.stop()?;
            }
        }
        let rate = |v: &[f64]| {
            let mut r: Vec<f64> = v.iter().map(|s| n as f64 / s).collect();
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        };
        Ok(ShortLived {
            total: n,
            ebpf_right: right[0],
            procfs_right: right[1],
            per_sec_kernel_verdicts: rate(&secs[0]),
            per_sec_queued: rate(&secs[1]),
        })
    }

    /// `n` short-lived processes, each sending one UDP datagram (to the
    /// discard port: no reply, and a port the throughput runs did not use,
    /// so no conntrack entry of theirs can hide a datagram).
    fn spawn_senders(&self, n: usize) -> Result<std::process::Output> {
        self.in_client(&self.xtask)
            .args([
                "bench-spawn",
                "--count",
                &n.to_string(),
                "udp",
                "198.51.100.2:9",
            ])
            .output()
            .context("running the short-lived senders")
    }

    fn start_appfw(&self, args: &[&str], config: &Path) -> Result<Daemon> {
        let stderr_path = self.dir.join("appfw.err");
        let child = self
            .in_client(&self.appfw)
            .args(args)
            .arg("-c")
            .arg(config)
            .args(["--queue-num", QUEUE, "-t"])
            .arg(self.dir.join("appfw.trace"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr_path)?)
            .spawn()
            .context("starting appfw")?;
        let mut d = Daemon {
            child: Some(child),
            stderr: stderr_path,
        };
        let start = Instant::now();
        while !d.stderr_text().contains("running: mode") {
            if let Some(status) = d.child.as_mut().expect("running").try_wait()? {
                bail!("appfw exited during start ({status}): {}", d.stderr_text());
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!("appfw did not start: {}", d.stderr_text());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    /// `! -o lo`, conntrack NEW TCP and UDP -> `target`, in a chain named
    /// like appfw's (so `appfw --remove-rules` removes it).
    fn classic_rules(&self, target: &str) -> Result<()> {
        self.remove_rules()?;
        let mut text = String::from("*filter\n:APPFW - [0:0]\n");
        for proto in ["tcp", "udp"] {
            text += &format!("-A APPFW -p {proto} -m conntrack --ctstate NEW -j {target}\n");
        }
        text += "-I OUTPUT 1 ! -o lo -j APPFW\nCOMMIT\n";
        let mut child = netns::Pair::exec(&self.pair.client, "iptables-restore")
            .args(["-w", "--noflush"])
            .stdin(Stdio::piped())
            .spawn()
            .context("running iptables-restore")?;
        std::io::Write::write_all(child.stdin.as_mut().expect("piped"), text.as_bytes())?;
        drop(child.stdin.take());
        if !child.wait()?.success() {
            bail!("installing the bench's conntrack rules failed:\n{text}");
        }
        Ok(())
    }

    fn remove_rules(&self) -> Result<()> {
        let out = self.in_client(&self.appfw).arg("--remove-rules").output()?;
        if !out.status.success() {
            bail!(
                "appfw --remove-rules failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

struct Daemon {
    child: Option<Child>,
    stderr: PathBuf,
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// utime + stime in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        // After the comm: state is field 3, utime 14, stime 15 (1-based).
        let get = |i: usize| {
            fields
                .get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        get(14) + get(15)
    }

    /// (VmHWM, VmRSS) in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let get = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (get("VmHWM:"), get("VmRSS:"))
    }

    /// Resets VmHWM to the current RSS (proc(5), clear_refs "5").
    fn reset_peak(&self) {
        let _ = fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }

    /// Kernel memory of the BPF maps the daemon holds (fdinfo "memlock").
    fn map_memlock(&self) -> u64 {
        let dir = format!("/proc/{}/fdinfo", self.pid());
        let Ok(entries) = fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter_map(|e| fs::read_to_string(e.path()).ok())
            .filter(|t| t.contains("map_type:"))
            .filter_map(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("memlock:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .sum()
    }

    fn stop(mut self) -> Result<String> {
        let mut c = self.child.take().expect("running");
        // SAFETY: our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = c.try_wait()? {
                if !status.success() {
                    bail!("appfw exited with {status}: {}", self.stderr_text());
                }
                return Ok(self.stderr_text());
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = c.kill();
                bail!("appfw did not stop on SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_ready(child: &mut Child, what: &str) -> Result<()> {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("piped")).read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("{what} did not start");
    }
    Ok(())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}
