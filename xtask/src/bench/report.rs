//! The bench's results and their Markdown report.

use anyhow::{bail, Context, Result};

use super::{load::LoadResult, Args, Mode};

/// What one appfw run reported and what the bench read from /proc.
#[derive(Debug, Default)]
pub struct AppfwRun {
    pub packets: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// appfw's own part (receive to decision), p50 and p99.
    pub decision_p50_us: f64,
    pub decision_p99_us: f64,
    /// ebpf, ebpf-wildcard, cookie-join, procfs, unknown.
    pub attribution: [u64; 6],
    pub cpu_secs: f64,
    /// Peak RSS while under load (high-water mark reset after start).
    pub peak_rss_kib: u64,
    /// Peak RSS during start-up.
    pub startup_peak_kib: u64,
    pub rss_kib: u64,
    pub map_bytes: u64,
    /// Packets sent to the queue, from the kernel's counters.
    pub queued: u64,
    /// New sockets decided in the kernel by their process's verdict.
    pub in_kernel: u64,
}

const SOURCES: [&str; 6] = [
    "socket",
    "ebpf",
    "ebpf-wildcard",
    "cookie-join",
    "procfs",
    "unknown",
];

impl AppfwRun {
    /// Parses appfw's exit statistics:
    /// "verdict latency over N packets: p50 X us, p90 X us, p99 X us, p99.9 X us, max X us"
    /// "... attribution: socket N ebpf N ebpf-wildcard N cookie-join N procfs N unknown N"
    pub fn parse(stderr: &str) -> Result<AppfwRun> {
        let mut run = Self::parse_latency(stderr)?;
        let decision = stderr
            .lines()
            .find_map(|l| l.split("decision time").nth(1))
            .context("appfw printed no decision time")?;
        run.decision_p50_us = number_after(decision, "p50 ")?;
        run.decision_p99_us = number_after(decision, "p99 ")?;
        let attr = stderr
            .lines()
            .find_map(|l| l.split("attribution:").nth(1))
            .context("appfw printed no attribution counts")?;
        let words: Vec<&str> = attr.split_whitespace().collect();
        for (i, s) in SOURCES.iter().enumerate() {
            if let Some(pos) = words.iter().position(|w| w == s) {
                run.attribution[i] = words.get(pos + 1).and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
        // "kernel hooks: name N, name N, ..."
        let hooks = stderr
            .lines()
            .find_map(|l| l.split("kernel hooks: ").nth(1))
            .context("appfw printed no kernel hook counters")?;
        let hook = |name: &str| {
            hooks
                .split(", ")
                .find_map(|h| h.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(0)
        };
        run.queued = hook("queued");
        run.in_kernel = hook("process_verdict");
        Ok(run)
    }

    /// The latency part: "... latency over N packets: p50 X us, ..., p99 X
    /// us, ..., max X us" (appfw's and the floor's).
    pub fn parse_latency(text: &str) -> Result<AppfwRun> {
        let lat = text
            .lines()
            .find_map(|l| l.split("latency over ").nth(1))
            .context("no latency summary")?;
        Ok(AppfwRun {
            packets: lat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            p50_us: number_after(lat, "p50 ")?,
            p99_us: number_after(lat, "p99 ")?,
            max_us: number_after(lat, "max ")?,
            ..AppfwRun::default()
        })
    }
}

/// The number after `key` in `text` ("p50 6.1 us," -> 6.1).
fn number_after(text: &str, key: &str) -> Result<f64> {
    text.split(key)
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.trim_end_matches(',').parse().ok())
        .with_context(|| format!("no {key:?} in {text:?}"))
}

pub struct RunResult {
    pub tcp: LoadResult,
    pub udp: LoadResult,
    pub appfw: Option<AppfwRun>,
}

pub struct ShortLived {
    pub total: usize,
    pub ebpf_right: usize,
    pub procfs_right: usize,
    /// Short-lived processes per second under --blacklist (median of 3).
    pub per_sec_kernel_verdicts: f64,
    pub per_sec_queued: f64,
}

pub struct Report {
    duration: u64,
    rounds: usize,
    concurrency: usize,
    runs: Vec<(Mode, RunResult)>,
    pub short_lived: Option<ShortLived>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `x` per 10,000 flows.
fn per_10k(x: f64, flows: u64) -> f64 {
    if flows > 0 {
        x / flows as f64 * 10_000.0
    } else {
        0.0
    }
}

fn rate(l: &LoadResult) -> f64 {
    if l.secs > 0.0 {
        l.flows as f64 / l.secs
    } else {
        0.0
    }
}

fn command(out: &str, args: &[&str]) -> String {
    std::process::Command::new(out)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

impl Report {
    pub fn new(args: &Args) -> Report {
        Report {
            duration: args.duration,
            rounds: args.rounds,
            concurrency: args.concurrency,
            runs: Vec::new(),
            short_lived: None,
        }
    }

    pub fn add(&mut self, mode: Mode, r: RunResult) {
        self.runs.push((mode, r));
    }

    fn of(&self, mode: Mode) -> impl Iterator<Item = &RunResult> {
        self.runs
            .iter()
            .filter(move |(m, _)| *m == mode)
            .map(|(_, r)| r)
    }

    fn median_rate(&self, mode: Mode, tcp: bool) -> f64 {
        median(
            self.of(mode)
                .map(|r| rate(if tcp { &r.tcp } else { &r.udp }))
                .collect(),
        )
    }

    /// Flows the load generator completed in `mode`, all runs.
    fn flows(&self, mode: Mode) -> u64 {
        self.of(mode).map(|r| r.tcp.flows + r.udp.flows).sum()
    }

    fn appfw_runs(&self, mode: Mode) -> Vec<&AppfwRun> {
        self.of(mode).filter_map(|r| r.appfw.as_ref()).collect()
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let kernel = command("uname", &["-r"]);
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        s += "# appfw benchmark\n\n";
        s += &format!(
            "{} on Linux {kernel}, {cpus} CPUs; {} round(s), {} s of load per mode and protocol, {} concurrent flows; \
             client, server and appfw share the machine.\n\n",
            command("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            self.rounds,
            self.duration,
            self.concurrency
        );
        s += "## New flows per second (median over rounds)\n\n";
        s += "| mode | TCP conn/s | vs none | vs floor | UDP flows/s | vs none | vs floor | errors |\n";
        s += "|---|---:|---:|---:|---:|---:|---:|---:|\n";
        let (none_t, none_u) = (
            self.median_rate(Mode::None, true),
            self.median_rate(Mode::None, false),
        );
        let (floor_t, floor_u) = (
            self.median_rate(Mode::Floor, true),
            self.median_rate(Mode::Floor, false),
        );
        let pct = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.0}%", 100.0 * a / b)
            } else {
                "-".into()
            }
        };
        for mode in Mode::ALL {
            let (t, u) = (self.median_rate(mode, true), self.median_rate(mode, false));
            let errors: u64 = self.of(mode).map(|r| r.tcp.errors + r.udp.errors).sum();
            s += &format!(
                "| {} | {:.0} | {} | {} | {:.0} | {} | {} | {errors} |\n",
                mode.label(),
                t,
                pct(t, none_t),
                pct(t, floor_t),
                u,
                pct(u, none_u),
                pct(u, floor_u)
            );
        }
        s += "\n## Receive-to-verdict latency (median of runs, max of maxima)\n\n";
        s += "Receive to verdict: from recv() returning the packet to the verdict syscall returning. On accept that syscall carries the packet on through the stack (veth, the server's receive path), so the floor's figure is NFQUEUE's own cost and appfw's adds attribution and policy; the decision columns are appfw's part alone (receive to verdict decided).\n\n";
        s += "| mode | packets | p50 µs | p99 µs | max µs | decision p50 µs | decision p99 µs |\n|---|---:|---:|---:|---:|---:|---:|\n";
        for mode in [
            Mode::Floor,
            Mode::Monitor,
            Mode::Blacklist,
            Mode::BlacklistQueued,
            Mode::Rules,
        ] {
            let runs = self.appfw_runs(mode);
            let decision = if mode == Mode::Floor {
                "- | -".to_owned()
            } else {
                format!(
                    "{:.1} | {:.1}",
                    median(runs.iter().map(|r| r.decision_p50_us).collect()),
                    median(runs.iter().map(|r| r.decision_p99_us).collect())
                )
            };
            s += &format!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {decision} |\n",
                mode.label(),
                runs.iter().map(|r| r.packets).sum::<u64>(),
                median(runs.iter().map(|r| r.p50_us).collect()),
                median(runs.iter().map(|r| r.p99_us).collect()),
                runs.iter().map(|r| r.max_us).fold(0.0, f64::max)
            );
        }
        s += "\n## Where flows were decided (all runs)\n\nQueued packets are what the filter in front of NFQUEUE counted; flows decided in the kernel are new sockets that got their process's verdict there (`process_verdict`).\n\n";
        s += "| mode | flows | queued packets | queued per 10,000 flows | decided in the kernel |\n|---|---:|---:|---:|---:|\n";
        for mode in Mode::APPFW {
            let flows = self.flows(mode);
            let runs = self.appfw_runs(mode);
            let queued: u64 = runs.iter().map(|r| r.queued).sum();
            s += &format!(
                "| {} | {flows} | {queued} | {:.1} | {} |\n",
                mode.label(),
                per_10k(queued as f64, flows),
                runs.iter().map(|r| r.in_kernel).sum::<u64>()
            );
        }
        s += "\n## How queued flows were attributed (all runs)\n\n| mode | ";
        s += &SOURCES.join(" | ");
        s += " |\n|---|---:|---:|---:|---:|---:|---:|\n";
        for mode in Mode::APPFW {
            let mut sum = [0u64; 6];
            for r in self.appfw_runs(mode) {
                for (a, b) in sum.iter_mut().zip(r.attribution) {
                    *a += b;
                }
            }
            s += &format!(
                "| {} | {} |\n",
                mode.label(),
                sum.map(|v| v.to_string()).join(" | ")
            );
        }
        if let Some(sl) = &self.short_lived {
            s += &format!(
                "\n## Short-lived processes\n\n{} processes, each sending one UDP datagram from a new socket and exiting at once \
                 (its packet is often judged after it exited). Right = the flow was attributed to that process's pid and executable.\n\n\
                 | attribution | right |\n|---|---:|\n| eBPF (with /proc as fallback) | {} / {} |\n| /proc fallback alone | {} / {} |\n\n\
                 Under --blacklist (1,000 entries), processes started and judged per second (wall time of the whole run, median of 3 alternating runs): \
                 kernel verdicts on {:.0}/s, off {:.0}/s ({:.0}%).\n",
                sl.total, sl.ebpf_right, sl.total, sl.procfs_right, sl.total,
                sl.per_sec_kernel_verdicts, sl.per_sec_queued,
                100.0 * sl.per_sec_kernel_verdicts / sl.per_sec_queued.max(f64::MIN_POSITIVE)
            );
        }
        s += "\n## appfw's resources\n\nPeak RSS under load is the high-water mark from the end of start-up to the end of the load; start-up peak is the mark before that (aya parses the kernel's BTF, /sys/kernel/btf/vmlinux, while loading). CPU is the daemon's user+system time during the load.\n\n";
        s += "| mode | peak RSS under load MiB | start-up peak MiB | RSS first run MiB | RSS last run MiB | CPU s per 10,000 flows | BPF map memory MiB |\n|---|---:|---:|---:|---:|---:|---:|\n";
        for mode in Mode::APPFW {
            let runs = self.appfw_runs(mode);
            let mib = |k: u64| k as f64 / 1024.0;
            let flows = self.flows(mode);
            let cpu: f64 = runs.iter().map(|r| r.cpu_secs).sum();
            s += &format!(
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.3} | {:.1} |\n",
                mode.label(),
                mib(runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0)),
                mib(runs.iter().map(|r| r.startup_peak_kib).max().unwrap_or(0)),
                mib(runs.first().map(|r| r.rss_kib).unwrap_or(0)),
                mib(runs.last().map(|r| r.rss_kib).unwrap_or(0)),
                per_10k(cpu, flows),
                runs.first().map(|r| r.map_bytes).unwrap_or(0) as f64 / (1024.0 * 1024.0)
            );
        }
        s += &self.targets();
        s
    }

    fn targets(&self) -> String {
        let mut s = String::from("\n## Targets\n\n");
        let mark = |ok: bool| if ok { "met" } else { "MISSED" };
        for tcp in [true, false] {
            let ct = self.median_rate(Mode::Conntrack, tcp);
            let bl = self.median_rate(Mode::Blacklist, tcp);
            let ratio = if ct > 0.0 { bl / ct } else { 0.0 };
            s += &format!(
                "- appfw --blacklist at >= 95% of conntrack only ({}): {:.0}% - {}\n",
                if tcp { "TCP" } else { "UDP" },
                ratio * 100.0,
                mark(ratio >= 0.95)
            );
        }
        let queued: u64 = self
            .appfw_runs(Mode::Blacklist)
            .iter()
            .map(|r| r.queued)
            .sum();
        let per = per_10k(queued as f64, self.flows(Mode::Blacklist));
        s += &format!(
            "- at most 10 queued packets per 10,000 flows (--blacklist): {per:.1} - {}\n",
            mark(per <= 10.0)
        );
        let cpu = |mode| {
            let c: f64 = self.appfw_runs(mode).iter().map(|r| r.cpu_secs).sum();
            per_10k(c, self.flows(mode))
        };
        let (on, off) = (cpu(Mode::Blacklist), cpu(Mode::BlacklistQueued));
        s += &format!(
            "- daemon CPU per 10,000 flows at most a tenth of kernel verdicts off: {on:.4} s vs {off:.4} s ({:.1}%) - {}\n",
            100.0 * on / off.max(f64::MIN_POSITIVE),
            mark(on <= off / 10.0)
        );
        if let Some(sl) = &self.short_lived {
            let ratio = sl.per_sec_kernel_verdicts / sl.per_sec_queued.max(f64::MIN_POSITIVE);
            s += &format!(
                "- short-lived processes within 5% of kernel verdicts off: {:.0}% - {}\n",
                100.0 * ratio,
                mark(ratio >= 0.95)
            );
        }
        let rules = self.appfw_runs(Mode::Rules);
        let queued = self.appfw_runs(Mode::BlacklistQueued);
        let med = |runs: &[&AppfwRun], f: fn(&AppfwRun) -> f64| {
            median(runs.iter().map(|r| f(r)).collect())
        };
        s += &format!(
            "- decision time with 1,000 rules on destinations (every flow queued): p50 {:.1} µs, p99 {:.1} µs (lists only, kernel verdicts off: p50 {:.1} µs, p99 {:.1} µs)\n",
            med(&rules, |r| r.decision_p50_us),
            med(&rules, |r| r.decision_p99_us),
            med(&queued, |r| r.decision_p50_us),
            med(&queued, |r| r.decision_p99_us),
        );
        let bl = self.appfw_runs(Mode::BlacklistQueued);
        let p99 = median(bl.iter().map(|r| r.p99_us).collect());
        let floor_p99 = median(
            self.appfw_runs(Mode::Floor)
                .iter()
                .map(|r| r.p99_us)
                .collect(),
        );
        let decision_p99 = median(bl.iter().map(|r| r.decision_p99_us).collect());
        s += &format!(
            "- verdict latency p99 <= 50 µs (blacklist runs, median): {p99:.1} µs - {} (the floor's p99: {floor_p99:.1} µs; appfw's decision p99: {decision_p99:.1} µs)\n",
            mark(p99 <= 50.0)
        );
        if let Some(sl) = &self.short_lived {
            s += &format!(
                "- every short-lived process attributed through eBPF: {} / {} - {}\n",
                sl.ebpf_right,
                sl.total,
                mark(sl.ebpf_right == sl.total)
            );
        }
        let runs = self.appfw_runs(Mode::Blacklist);
        let peak = runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0;
        let startup = runs.iter().map(|r| r.startup_peak_kib).max().unwrap_or(0) as f64 / 1024.0;
        s += &format!(
            "- peak RSS <= 20 MiB under load: {peak:.1} MiB - {} (start-up peak {startup:.1} MiB - {})\n",
            mark(peak <= 20.0),
            mark(startup <= 20.0)
        );
        if let (Some(first), Some(last)) = (runs.first(), runs.last()) {
            let growth = last.rss_kib as f64 - first.rss_kib as f64;
            s += &format!(
                "- no RSS growth between the first and last run: {:+.0} KiB - {}\n",
                growth,
                mark(growth <= 256.0 || runs.len() < 2)
            );
        }
        s
    }

    /// The smoke run's checks: traffic in every mode, a report.
    pub fn check_smoke(&self, short_lived: usize) -> Result<()> {
        for mode in Mode::ALL {
            for r in self.of(mode) {
                if r.tcp.flows == 0 || r.udp.flows == 0 {
                    bail!(
                        "{}: no traffic (tcp {} udp {} flows)",
                        mode.label(),
                        r.tcp.flows,
                        r.udp.flows
                    );
                }
            }
            if self.of(mode).count() == 0 {
                bail!("{} did not run", mode.label());
            }
        }
        for mode in Mode::APPFW {
            for r in self.appfw_runs(mode) {
                if r.packets == 0 {
                    bail!("{}: appfw judged no packet", mode.label());
                }
            }
        }
        match &self.short_lived {
            Some(sl) if sl.total == short_lived => Ok(()),
            _ => bail!("the short-lived run did not happen"),
        }
    }
}
