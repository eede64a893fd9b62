//! Turning verdicts into the lines users read, and writing them.
//!
//! The queue thread sends one [`Event`] per verdict through a bounded
//! channel (no allocation, no blocking: when full, the report is counted
//! as lost, the verdict never is). The reporter thread formats lines and
//! writes them to stdout, the trace file (-t) and syslog (-l).

use std::{
    collections::HashSet,
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    sync::{mpsc, Arc},
    thread,
};

use appfw_common::{
    flow::{PROTO_TCP, PROTO_UDP},
    FlowKey,
};
use thiserror::Error;

use crate::{
    attribution::{Process, Source},
    escape::escape,
    policy::{Decision, Reason, Verdict},
};

/// One verdict, as the queue thread saw it.
#[derive(Clone, Debug)]
pub struct Event {
    pub key: FlowKey,
    pub source: Source,
    pub process: Option<Arc<Process>>,
    pub decision: Decision,
    pub latency_ns: u64,
    /// Why the packet could not be read (it was judged as from an unknown
    /// owner; `key` holds what was readable).
    pub unparsed: Option<&'static str>,
    /// The kernel decided this flow with its process's verdict; the queue
    /// never saw it.
    pub in_kernel: bool,
    /// How the `[[rule]]` that matched is named (its `name`, or "#N").
    pub rule: Option<Arc<str>>,
    /// The destination's name, from a DNS answer.
    pub host: Option<Arc<str>>,
}

#[derive(Debug, Error)]
pub enum ReportError {
    #[error("opening trace file {path} failed: {source}")]
    TraceFile {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "connecting to syslog failed: {0}. Is a syslog daemon or journald listening on /dev/log?"
    )]
    Syslog(String),
}

pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        crate::packet::PROTO_ICMP => "icmp",
        crate::packet::PROTO_ICMPV6 => "icmp6",
        _ => "ip",
    }
}

/// `('tcp', '198.51.100.1', 43400, '198.51.100.2', 631)`, as the old tool
/// printed Python tuples; IPv6 in its normal text form.
pub fn tuple(key: &FlowKey) -> String {
    let (l, r) = key.endpoints();
    format!(
        "('{}', '{}', {}, '{}', {})",
        proto_name(key.proto),
        l.ip(),
        l.port(),
        r.ip(),
        r.port()
    )
}

/// Words of the command line shown after "or".
const COMMAND_WORDS: usize = 2;

/// `'/bin/nc.openbsd' (or 'nc 192.168.58.1')`.
pub fn who(p: &Process) -> String {
    let exe = p.exe.as_deref().unwrap_or("?");
    format!(
        "'{}' (or '{}')",
        escape(exe),
        escape(&p.command(COMMAND_WORDS))
    )
}

fn action_text(v: Verdict) -> String {
    match v {
        Verdict::Accept => "ACCEPT".into(),
        Verdict::Block(a) => a.to_string(),
    }
}

/// The report line for a verdict, if it is one users are shown: every
/// block, every unknown owner, and (monitor mode) every accept; the caller
/// deduplicates monitor lines.
pub fn line(ev: &Event) -> Option<String> {
    // The seed's line stays as it was; the name follows it.
    let mut line = seed_line(ev)?;
    if let Some(h) = &ev.host {
        line.push_str(" host=");
        line.push_str(&escape(h));
    }
    Some(line)
}

fn seed_line(ev: &Event) -> Option<String> {
    let verdict = action_text(ev.decision.verdict);
    let t = tuple(&ev.key);
    let rule = ev.rule.as_deref().unwrap_or("?");
    if ev.decision.reason == Reason::Rule {
        if ev.decision.verdict == Verdict::Accept {
            return None;
        }
        let who = match ev.process.as_deref() {
            Some(p) if p.exe_id.is_some() => who(p),
            Some(p) => format!(
                "unknown program '{}' pid={} uid={}",
                escape(&p.command(COMMAND_WORDS)),
                p.pid,
                p.uid
            ),
            None => "unknown program (no owner found)".into(),
        };
        return Some(format!("{who} matches rule {rule} -> {verdict}. {t}"));
    }
    if let Some(why) = ev.unparsed {
        return Some(format!(
            "unknown program (packet not understood: {why}) -> {verdict}. {t}"
        ));
    }
    let Some(p) = ev.process.as_deref() else {
        let would = match ev.decision.rule {
            Some(hit) => format!(" matches rule {rule}, would {}", action_text(hit.verdict)),
            None => String::new(),
        };
        return Some(format!(
            "unknown program (no owner found){would} -> {verdict}. {t}"
        ));
    };
    let who = who(p);
    match ev.decision.reason {
        Reason::InBlacklist => Some(format!("{who} is in blacklist -> {verdict}. {t}")),
        Reason::NotInWhitelist => Some(format!("{who} is not in whitelist -> {verdict}. {t}")),
        Reason::Monitor => Some(match ev.decision.rule {
            // What enforcing would do: a dry run of the rules.
            Some(hit) => format!(
                "{who} pid={} ppid={} uid={} matches rule {rule}, would {} -> {verdict}. {t}",
                p.pid,
                p.ppid,
                p.uid,
                action_text(hit.verdict)
            ),
            None => format!(
                "{who} pid={} ppid={} uid={} -> {verdict}. {t}",
                p.pid, p.ppid, p.uid
            ),
        }),
        // A process whose executable could not be established: named by
        // what little is known, and judged as unknown.
        Reason::Unknown => Some(format!(
            "unknown program '{}' pid={} uid={} (executable not identified) -> {verdict}. {t}",
            escape(&p.command(COMMAND_WORDS)),
            p.pid,
            p.uid
        )),
        Reason::InWhitelist | Reason::NotInBlacklist | Reason::Rule => None,
    }
}

/// Per-packet detail for --debug.
pub fn debug_line(ev: &Event) -> String {
    let (exe, pid, cmd) = match ev.process.as_deref() {
        Some(p) => (
            p.exe.clone().unwrap_or_else(|| "?".into()),
            p.pid,
            p.command_line(),
        ),
        None => ("?".into(), 0, String::new()),
    };
    format!(
        "{} {}{}{} source={} pid={} exe='{}' command='{}' reason={:?}{} verdict={} latency={:.1}us",
        if ev.in_kernel {
            "kernel verdict"
        } else {
            "packet"
        },
        tuple(&ev.key),
        ev.host
            .as_deref()
            .map(|h| format!(" host={}", escape(h)))
            .unwrap_or_default(),
        ev.unparsed
            .map(|why| format!(" not understood ({why})"))
            .unwrap_or_default(),
        ev.source.name(),
        pid,
        escape(&exe),
        escape(&cmd),
        ev.decision.reason,
        ev.rule
            .as_deref()
            .map(|r| format!(" rule={r}"))
            .unwrap_or_default(),
        action_text(ev.decision.verdict),
        ev.latency_ns as f64 / 1000.0
    )
}

/// Where report lines go.
pub struct Sinks {
    pub stdout: bool,
    pub file: Option<File>,
    pub syslog: Option<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>,
    /// Under systemd: the journal, with fields (see `service::journal`).
    pub journal: Option<systemd_journal_logger::JournalLog>,
    pub debug: bool,
}

impl Sinks {
    pub fn open(
        stdout: bool,
        trace_file: Option<&Path>,
        use_syslog: bool,
        debug: bool,
    ) -> Result<Sinks, ReportError> {
        let file = match trace_file {
            Some(path) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .open(path)
                    .map_err(|source| ReportError::TraceFile {
                        path: path.display().to_string(),
                        source,
                    })?,
            ),
            None => None,
        };
        let syslog = if use_syslog {
            Some(open_syslog()?)
        } else {
            None
        };
        Ok(Sinks {
            stdout,
            file,
            syslog,
            journal: None,
            debug,
        })
    }

    pub fn write(&mut self, line: &str, blocked: bool) {
        if self.stdout {
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "{} - {line}", timestamp());
        }
        if let Some(s) = &mut self.syslog {
            let _ = if blocked {
                s.warning(line)
            } else {
                s.info(line)
            };
        }
    }
}

pub fn open_syslog(
) -> Result<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>, ReportError> {
    let formatter = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_DAEMON,
        hostname: None,
        process: "appfw".into(),
        pid: std::process::id(),
    };
    syslog::unix(formatter).map_err(|e| ReportError::Syslog(e.to_string()))
}

/// `YYYY-MM-DD HH:MM:SS`, local time (the system's time zone, or `TZ`).
pub fn timestamp() -> String {
    jiff::ZonedDateTime::now()
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Capacity of the queue -> reporter channel.
pub const CHANNEL_CAPACITY: usize = 4096;
/// Monitor lines are shown once per (program, destination); the set is
/// bounded and starts over when full.
const SEEN_CAPACITY: usize = 65_536;
/// A blocked connection's retransmissions are judged again (each is a new
/// packet) but reported once: the same flow and pid within this window.
const REPEAT_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);
const RECENT_BLOCKS: usize = 1024;

/// Starts the reporter thread. It ends when every sender is dropped.
pub fn spawn(mut sinks: Sinks) -> io::Result<(mpsc::SyncSender<Event>, thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::sync_channel::<Event>(CHANNEL_CAPACITY);
    let handle = thread::Builder::new()
        .name("appfw-report".into())
        .spawn(move || {
            let mut seen: HashSet<(String, u8, [u8; 16], u16)> = HashSet::new();
            let mut recent: std::collections::VecDeque<(FlowKey, u32, std::time::Instant)> =
                Default::default();
            for ev in rx {
                if sinks.debug {
                    eprintln!("{}", debug_line(&ev));
                }
                if let Verdict::Block(_) = ev.decision.verdict {
                    let pid = ev.process.as_deref().map(|p| p.pid).unwrap_or(0);
                    let now = std::time::Instant::now();
                    while recent
                        .front()
                        .is_some_and(|(_, _, t)| now.duration_since(*t) > REPEAT_WINDOW)
                    {
                        recent.pop_front();
                    }
                    if recent.iter().any(|(k, p, _)| *k == ev.key && *p == pid) {
                        continue;
                    }
                    if recent.len() >= RECENT_BLOCKS {
                        recent.pop_front();
                    }
                    recent.push_back((ev.key, pid, now));
                }
                if ev.decision.reason == Reason::Monitor {
                    let p = ev.process.as_deref();
                    let name = p
                        .map(|p| p.exe.clone().unwrap_or_else(|| p.comm.clone()))
                        .unwrap_or_default();
                    if seen.len() >= SEEN_CAPACITY {
                        seen.clear();
                    }
                    if !seen.insert((name, ev.key.proto, ev.key.daddr, ev.key.dport)) {
                        continue;
                    }
                }
                if let Some(line) = line(&ev) {
                    sinks.write(&line, matches!(ev.decision.verdict, Verdict::Block(_)));
                    if let Some(j) = &sinks.journal {
                        let _ = crate::service::journal::send(j, &line, &ev);
                    }
                }
            }
        })?;
    Ok((tx, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Action;

    fn nc() -> Arc<Process> {
        Arc::new(Process::example(
            "/bin/nc.openbsd",
            &["nc", "192.168.58.1", "631"],
        ))
    }

    fn event(
        process: Option<Arc<Process>>,
        verdict: Verdict,
        reason: Reason,
        key: FlowKey,
    ) -> Event {
        Event {
            key,
            source: Source::Ebpf,
            process,
            decision: Decision {
                verdict,
                reason,
                scope: crate::policy::Scope::Process,
                rule: None,
            },
            in_kernel: false,
            latency_ns: 1000,
            unparsed: None,
            rule: None,
            host: None,
        }
    }

    #[test]
    fn whitelist_drop_line_is_the_old_format() {
        let key = FlowKey::v4(
            1,
            PROTO_TCP,
            [192, 168, 1, 12],
            43400,
            [192, 168, 58, 1],
            631,
        );
        let ev = event(
            Some(nc()),
            Verdict::Block(Action::Drop),
            Reason::NotInWhitelist,
            key,
        );
        assert_eq!(
            line(&ev).unwrap(),
            "'/bin/nc.openbsd' (or 'nc 192.168.58.1') is not in whitelist -> DROP. ('tcp', '192.168.1.12', 43400, '192.168.58.1', 631)"
        );
    }

    #[test]
    fn blacklist_reject_line() {
        let key = FlowKey::v4(1, PROTO_UDP, [198, 51, 100, 1], 5000, [198, 51, 100, 2], 53);
        let ev = event(
            Some(nc()),
            Verdict::Block(Action::Reject),
            Reason::InBlacklist,
            key,
        );
        assert_eq!(
            line(&ev).unwrap(),
            "'/bin/nc.openbsd' (or 'nc 192.168.58.1') is in blacklist -> REJECT. ('udp', '198.51.100.1', 5000, '198.51.100.2', 53)"
        );
    }

    #[test]
    fn ipv6_addresses_in_normal_form() {
        let key = FlowKey::from_endpoints(
            1,
            PROTO_TCP,
            "[2001:db8::1]:40000".parse().unwrap(),
            "[2001:db8::2]:80".parse().unwrap(),
        );
        assert_eq!(
            tuple(&key),
            "('tcp', '2001:db8::1', 40000, '2001:db8::2', 80)"
        );
    }

    #[test]
    fn monitor_line_names_pid_and_ppid() {
        let key = FlowKey::v4(1, PROTO_TCP, [198, 51, 100, 1], 1, [198, 51, 100, 2], 80);
        let l = line(&event(Some(nc()), Verdict::Accept, Reason::Monitor, key)).unwrap();
        assert!(l.contains("pid=4490 ppid=2817"), "{l}");
        assert!(
            l.ends_with("-> ACCEPT. ('tcp', '198.51.100.1', 1, '198.51.100.2', 80)"),
            "{l}"
        );
    }

    #[test]
    fn unknown_owner_is_always_reported() {
        let key = FlowKey::v4(1, PROTO_TCP, [198, 51, 100, 1], 1, [198, 51, 100, 2], 80);
        let l = line(&event(None, Verdict::Accept, Reason::Unknown, key)).unwrap();
        assert!(l.starts_with("unknown program"), "{l}");
        let mut ev = event(None, Verdict::Block(Action::Drop), Reason::Unknown, key);
        ev.unparsed = Some("an IP fragment");
        assert_eq!(
            line(&ev).unwrap(),
            "unknown program (packet not understood: an IP fragment) -> DROP. ('tcp', '198.51.100.1', 1, '198.51.100.2', 80)"
        );
    }

    #[test]
    fn process_without_executable_is_reported_as_unknown() {
        let key = FlowKey::v4(1, PROTO_TCP, [198, 51, 100, 1], 1, [198, 51, 100, 2], 80);
        let mut p = Process::example("/usr/bin/curl", &[]);
        p.exe = None;
        p.exe_id = None;
        p.comm = "cu'rl".into();
        let l = line(&event(
            Some(Arc::new(p)),
            Verdict::Block(Action::Drop),
            Reason::Unknown,
            key,
        ))
        .unwrap();
        assert_eq!(
            l,
            "unknown program 'cu\\'rl' pid=4490 uid=0 (executable not identified) -> DROP. ('tcp', '198.51.100.1', 1, '198.51.100.2', 80)"
        );
    }

    #[test]
    fn accepted_listed_programs_are_not_reported() {
        let key = FlowKey::v4(1, PROTO_TCP, [198, 51, 100, 1], 1, [198, 51, 100, 2], 80);
        assert!(line(&event(
            Some(nc()),
            Verdict::Accept,
            Reason::InWhitelist,
            key
        ))
        .is_none());
        assert!(line(&event(
            Some(nc()),
            Verdict::Accept,
            Reason::NotInBlacklist,
            key
        ))
        .is_none());
    }

    #[test]
    fn crafted_names_cannot_forge_lines() {
        let mut p = (*nc()).clone();
        p.exe = Some("/tmp/x' -> ACCEPT.\n'/usr/bin/ok".into());
        p.args = vec!["evil\n2026-01-01 00:00:00 - '/usr/bin/ok'".into()];
        let key = FlowKey::v4(1, PROTO_TCP, [198, 51, 100, 1], 1, [198, 51, 100, 2], 80);
        let l = line(&event(
            Some(Arc::new(p)),
            Verdict::Block(Action::Drop),
            Reason::InBlacklist,
            key,
        ))
        .unwrap();
        assert!(!l.contains('\n'));
        assert!(
            l.starts_with("'/tmp/x\\' -> ACCEPT.\\n\\'/usr/bin/ok' (or 'evil\\n2026"),
            "{l}"
        );
    }

    #[test]
    fn timestamp_has_the_documented_shape() {
        // The local time as date(1) prints it, in the seed's format; read
        // before and after, since a second may turn in between.
        let date = || {
            let out = std::process::Command::new("date")
                .arg("+%Y-%m-%d %H:%M:%S")
                .output()
                .expect("running date");
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        let before = date();
        let t = timestamp();
        let after = date();
        assert!(
            t == before || t == after,
            "{t:?} is neither {before:?} nor {after:?}"
        );
        let shape: String = t
            .chars()
            .map(|c| if c.is_ascii_digit() { 'N' } else { c })
            .collect();
        assert_eq!(shape, "NNNN-NN-NN NN:NN:NN", "{t:?}");
    }

    #[test]
    fn rule_lines_name_the_rule() {
        use crate::policy::RuleHit;
        let key = FlowKey::v4(1, PROTO_TCP, [198, 51, 100, 1], 1, [198, 51, 100, 2], 80);
        let mut ev = event(Some(nc()), Verdict::Block(Action::Drop), Reason::Rule, key);
        ev.rule = Some("#2".into());
        ev.decision.rule = Some(RuleHit {
            index: 1,
            verdict: Verdict::Block(Action::Drop),
        });
        assert_eq!(
            line(&ev).unwrap(),
            "'/bin/nc.openbsd' (or 'nc 192.168.58.1') matches rule #2 -> DROP. ('tcp', '198.51.100.1', 1, '198.51.100.2', 80)"
        );
        // A rule's accepts are as quiet as the whitelist's.
        ev.decision.verdict = Verdict::Accept;
        assert_eq!(line(&ev), None);
        // Monitor: accepted, and what the rule would have done.
        let mut m = event(Some(nc()), Verdict::Accept, Reason::Monitor, key);
        m.rule = Some("web".into());
        m.decision.rule = Some(RuleHit {
            index: 0,
            verdict: Verdict::Block(Action::Reject),
        });
        assert_eq!(
            line(&m).unwrap(),
            "'/bin/nc.openbsd' (or 'nc 192.168.58.1') pid=4490 ppid=2817 uid=0 matches rule web, would REJECT -> ACCEPT. ('tcp', '198.51.100.1', 1, '198.51.100.2', 80)"
        );
        m.process = None;
        assert_eq!(
            line(&m).unwrap(),
            "unknown program (no owner found) matches rule web, would REJECT -> ACCEPT. ('tcp', '198.51.100.1', 1, '198.51.100.2', 80)"
        );
    }

    #[test]
    fn the_name_follows_the_seed_line() {
        let key = FlowKey::v4(
            1,
            PROTO_TCP,
            [198, 51, 100, 1],
            43400,
            [198, 51, 100, 2],
            80,
        );
        let mut ev = event(
            Some(nc()),
            Verdict::Block(Action::Drop),
            Reason::InBlacklist,
            key,
        );
        ev.host = Some("test.example".into());
        assert_eq!(
            line(&ev).unwrap(),
            "'/bin/nc.openbsd' (or 'nc 192.168.58.1') is in blacklist -> DROP. ('tcp', '198.51.100.1', 43400, '198.51.100.2', 80) host=test.example"
        );
        // A name from the network cannot start a line of its own.
        ev.host = Some("x\n2026-01-01 forged".into());
        let l = line(&ev).unwrap();
        assert!(
            !l.contains('\n') && l.ends_with("host=x\\n2026-01-01 forged"),
            "{l}"
        );
        assert!(
            debug_line(&ev).contains("80) host=x\\n2026"),
            "{}",
            debug_line(&ev)
        );
    }
}
