//! `appfw status`: the daemon answers on a unix socket, the command prints.
//!
//! The socket is abstract, named after the queue number: abstract names
//! belong to a network namespace, as appfw's rules do, so two instances
//! (two queues, or two namespaces) each have their own, and `appfw status`
//! finds the daemon of the namespace it runs in. Abstract sockets have no
//! file mode, so the daemon checks the peer's credentials: root only.
//!
//! The daemon writes one JSON document and closes; it reads only the
//! counters the queue thread published.

use std::{
    io::{self, Read},
    os::{
        linux::net::SocketAddrExt,
        unix::net::{SocketAddr, UnixListener, UnixStream},
    },
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{
    attribution::Source,
    kernel_queue::KernelQueue,
    stats::Counters,
    talkers::{Flows, Top},
};

/// What `appfw status` prints.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub mode: String,
    pub queue: u16,
    /// The configuration file, or `None` for the built-in defaults.
    pub config: Option<String>,
    /// Local time the configuration in force was loaded.
    pub config_loaded_at: String,
    pub started_at: String,
    pub uptime_secs: u64,
    pub fail: String,
    pub rules: RulesStatus,
    /// The queue thread's counters (JSON: all but attribution and verdicts).
    pub counters: Counters,
    /// Packets per attribution source.
    pub attribution: Vec<(String, u64)>,
    /// The kernel's view, from /proc/net/netfilter/nfnetlink_queue.
    pub kernel_queue: Option<KernelQueueStatus>,
    /// Where new flows were decided.
    pub decided: DecidedStatus,
    /// Executables by flows judged, most first (at most
    /// [`crate::talkers::TOP`]).
    pub top_talkers: Vec<TalkerStatus>,
    /// Flows of every other executable.
    pub other_flows: Flows,
    /// Flows whose executable is not known.
    pub unknown_flows: Flows,
}

/// Where flows were decided: the kernel's counters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DecidedStatus {
    /// Verdicts per process are kept in the kernel (`kernel-verdicts`).
    pub kernel_verdicts: bool,
    /// New sockets that got their process's verdict in the kernel: flows
    /// that never went through the queue.
    pub in_kernel: u64,
    /// Packets sent to the queue.
    pub queued: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TalkerStatus {
    pub exe: String,
    pub flows: u64,
    pub accepted: u64,
    pub blocked: u64,
}

/// [`Status`]'s talker fields from what the queue thread published.
pub fn talkers_of(top: &Top) -> (Vec<TalkerStatus>, Flows, Flows) {
    let named = top
        .top
        .iter()
        .map(|t| TalkerStatus {
            exe: t.exe.to_string(),
            flows: t.flows.total(),
            accepted: t.flows.accepted,
            blocked: t.flows.blocked,
        })
        .collect();
    (named, top.other, top.unknown)
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RulesStatus {
    /// appfw installed its chain (false with --no-rules).
    pub v4: bool,
    pub v6: bool,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KernelQueueStatus {
    /// Packets numbered for delivery since appfw bound the queue.
    pub total: u64,
    pub waiting: u64,
    /// Dropped because the queue was full.
    pub dropped: u64,
    /// Dropped because appfw's receive buffer was full.
    pub user_dropped: u64,
}

impl From<KernelQueue> for KernelQueueStatus {
    fn from(k: KernelQueue) -> Self {
        KernelQueueStatus {
            total: k.id_sequence,
            waiting: k.waiting,
            dropped: k.queue_dropped,
            user_dropped: k.user_dropped,
        }
    }
}

pub fn attribution_of(c: &Counters) -> Vec<(String, u64)> {
    Source::ALL
        .iter()
        .map(|s| (s.name().to_string(), c.attribution.get(*s)))
        .collect()
}

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("another appfw already answers `appfw status` for queue {0} in this network namespace; choose another --queue-num")]
    InUse(u16),
    #[error("opening the status socket for queue {queue} failed: {source}")]
    Bind {
        queue: u16,
        #[source]
        source: io::Error,
    },
    #[error("no appfw daemon runs for queue {0} in this network namespace (start it, or pass the --queue-num it runs with)")]
    NotRunning(u16),
    #[error("talking to the appfw daemon of queue {queue} failed: {source}")]
    Talk {
        queue: u16,
        #[source]
        source: io::Error,
    },
    #[error("the appfw daemon of queue {0} refused: `appfw status` needs root")]
    Refused(u16),
    #[error("the appfw daemon of queue {queue} answered something unreadable ({source}); is it another version?")]
    Garbled {
        queue: u16,
        #[source]
        source: serde_json::Error,
    },
}

fn address(queue: u16) -> io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(format!("appfw-status-{queue}"))
}

/// The daemon's side: listens for `appfw status` on queue `queue`'s socket.
pub fn bind(queue: u16) -> Result<UnixListener, ControlError> {
    let bind = || -> io::Result<UnixListener> {
        let l = UnixListener::bind_addr(&address(queue)?)?;
        l.set_nonblocking(true)?;
        Ok(l)
    };
    bind().map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => ControlError::InUse(queue),
        _ => ControlError::Bind { queue, source },
    })
}

/// What the daemon writes to a peer that is not root.
const REFUSED: &[u8] = b"refused: root only\n";

/// The answer for a peer with user id `uid`.
pub fn answer(uid: Option<u32>, status: impl FnOnce() -> Status) -> Vec<u8> {
    if uid != Some(0) {
        return REFUSED.to_vec();
    }
    let mut out = serde_json::to_vec(&status()).expect("a status serializes");
    out.push(b'\n');
    out
}

/// `appfw status`'s side: asks the daemon of queue `queue`.
pub fn query(queue: u16) -> Result<Status, ControlError> {
    let talk = |source| ControlError::Talk { queue, source };
    let mut stream = match UnixStream::connect_addr(&address(queue).map_err(talk)?) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ControlError::NotRunning(queue))
        }
        Err(e) => return Err(talk(e)),
    };
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .map_err(talk)?;
    let mut text = Vec::new();
    stream.read_to_end(&mut text).map_err(talk)?;
    if text == REFUSED {
        return Err(ControlError::Refused(queue));
    }
    serde_json::from_slice(&text).map_err(|source| ControlError::Garbled { queue, source })
}

/// `appfw status [--json] [--queue-num N] [-c CONFIG]`.
pub fn run(args: crate::cli::StatusArgs) -> anyhow::Result<()> {
    let queue = match args.queue_num {
        Some(q) => q,
        None => crate::config::load(args.config.as_deref())?.queue_num,
    };
    let status = query(queue)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The text `appfw status` prints.
pub fn render(s: &Status) -> String {
    let yes = |b: bool| if b { "installed" } else { "not installed" };
    let c = &s.counters;
    let mut out = format!(
        "appfw {} (pid {}): running, mode {}, queue {}\n\
         config:   {} (loaded {})\n\
         started:  {} (up {})\n\
         rules:    IPv4 {}, IPv6 {}; fail {}\n\
         packets:  {} (accepted {}, blocked {}, not understood {}, socket record overrun {})\n\
         errors:   receive buffer overruns {}, recv {}, verdict {}, reports dropped {}, internal {}\n\
         attribution:",
        s.version,
        s.pid,
        s.mode,
        s.queue,
        s.config.as_deref().unwrap_or("built-in defaults"),
        s.config_loaded_at,
        s.started_at,
        duration(s.uptime_secs),
        yes(s.rules.v4),
        yes(s.rules.v6),
        s.fail,
        c.packets,
        c.accepted,
        c.blocked,
        c.unparsed,
        c.sender_lost,
        c.overruns,
        c.recv_errors,
        c.verdict_errors,
        c.reports_dropped,
        c.internal_errors,
    );
    for (name, n) in &s.attribution {
        out += &format!(" {name} {n}");
    }
    out.push('\n');
    match &s.kernel_queue {
        Some(k) => {
            out += &format!(
                "kernel queue: total {}, waiting {}, dropped {} (queue full), user dropped {} (receive buffer full)\n",
                k.total, k.waiting, k.dropped, k.user_dropped
            )
        }
        None => out += "kernel queue: not readable from /proc/net/netfilter/nfnetlink_queue\n",
    }
    let d = &s.decided;
    out += &format!(
        "decided:  {} flows in the kernel by their process's verdict, {} packets through the queue (kernel verdicts {})\n",
        d.in_kernel,
        d.queued,
        if d.kernel_verdicts { "on" } else { "off" }
    );
    out += "top talkers:\n     flows accepted  blocked  executable\n";
    let rest = [("(other)", s.other_flows), ("(unknown)", s.unknown_flows)];
    let named = s.top_talkers.iter().map(|t| {
        (
            t.exe.as_str(),
            Flows {
                accepted: t.accepted,
                blocked: t.blocked,
            },
        )
    });
    let mut any = false;
    for (exe, f) in named.chain(rest.into_iter().filter(|(_, f)| f.total() > 0)) {
        any = true;
        out += &format!(
            "  {:>8} {:>8} {:>8}  {}\n",
            f.total(),
            f.accepted,
            f.blocked,
            crate::escape::escape(exe)
        );
    }
    if !any {
        out += "  none yet\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_gets_an_answer() {
        let status = || panic!("not asked for a refused peer");
        assert_eq!(answer(Some(1000), status), REFUSED);
        assert_eq!(answer(None, status), REFUSED);
    }

    #[test]
    fn uptime_reads_like_a_person_would_say_it() {
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(3 * 60 + 5), "3m 5s");
        assert_eq!(duration(2 * 3600 + 60), "2h 1m");
        assert_eq!(duration(3 * 86400 + 7200), "3d 2h");
    }
}
