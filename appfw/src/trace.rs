//! `appfw trace`: one line per new outbound socket, live, with the program
//! that opened it; in the format of the old audit parser, or JSON.
//!
//! ```text
//! ebpf | exe=/usr/bin/curl, command=curl example.org, ppid=2817, pid=4490, uid=0, proto=tcp, family=02, address=212.227.247.84, port=80, sport=43400
//! ```
//!
//! The kernel hooks emit an event per new flow into a ring buffer. A
//! connected UDP socket is reported at connect(), before it has a local
//! port: its port is looked up by socket cookie through sock_diag, or taken
//! from the flow the kernel records when the socket closes.

use std::{
    collections::HashMap,
    io::{self, Write},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use appfw_common::{flow::PROTO_UDP, owner::hook, FlowKey, Owner, SocketEvent};
use serde::Serialize;
use tokio::io::{unix::AsyncFd, Interest};

use crate::{
    attribution::{sock_diag::SockDiag, Attributor, Mode, Process, Source},
    bpf,
    cli::TraceArgs,
    escape::escape,
    names::Watcher,
    report::proto_name,
    system,
};

/// One traced socket.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Line {
    pub exe: String,
    pub command: String,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub proto: &'static str,
    /// "02" (IPv4) or "0A" (IPv6), as audit printed the family.
    pub family: String,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    pub netns: u64,
    pub source: &'static str,
    /// The destination's name from a DNS answer (null: none known).
    pub host: Option<String>,
}

impl Line {
    pub fn new(key: &FlowKey, p: &Process, source: Source) -> Line {
        let (l, r) = key.endpoints();
        Line {
            exe: escape(p.exe.as_deref().unwrap_or("?")),
            command: escape(&p.command_line()),
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            proto: proto_name(key.proto),
            family: format!("{:02X}", key.family),
            saddr: l.ip().to_string(),
            sport: l.port(),
            daddr: r.ip().to_string(),
            dport: r.port(),
            netns: key.netns,
            source: source.name(),
            host: None,
        }
    }

    pub fn text(&self) -> String {
        let mut text = format!(
            "{} | exe={}, command={}, ppid={}, pid={}, uid={}, proto={}, family={}, address={}, port={}, sport={}",
            self.source, self.exe, self.command, self.ppid, self.pid, self.uid, self.proto, self.family, self.daddr, self.dport, self.sport
        );
        // The audit format's fields stay as they were; the name follows.
        if let Some(h) = &self.host {
            text.push_str(", host=");
            text.push_str(h);
        }
        text
    }
}

/// A connected UDP socket whose local port is not known yet.
struct Pending {
    event: SocketEvent,
    since: Instant,
}

/// How long to look for a connected UDP socket's port.
const PENDING_FOR: Duration = Duration::from_millis(500);

pub fn run(args: TraceArgs) -> Result<()> {
    system::require_root()?;
    let netns = system::netns_cookie()?;
    let (mut maps, _programs, events) = bpf::load(bpf::Options {
        netns,
        events: true,
        kernel_debug: false,
        filters: false,
    })?;
    let events = events.context("the event ring buffer was not created")?;
    let mut names = maps
        .dns
        .take()
        .map(|ring| Watcher::new(ring, crate::names::system_resolvers()));
    let mut attributor = Attributor::new(maps, Mode::Ebpf);
    let mut diag = SockDiag::open().context("opening NETLINK_SOCK_DIAG")?;
    let mut out = io::stdout().lock();
    let mut printed: u64 = 0;
    let limit = args.count.unwrap_or(u64::MAX);
    let mut pending: HashMap<u64, Pending> = HashMap::new();

    let mut emit = |key: &FlowKey,
                    owner: &Owner,
                    source: Source,
                    attributor: &mut Attributor<bpf::Maps>|
     -> io::Result<bool> {
        let p = attributor.resolve_owner(owner);
        let mut line = Line::new(key, &p, source);
        // Answers that came before the socket opened are in the ring now.
        if let Some(n) = &mut names {
            n.drain();
            line.host = n
                .names
                .lookup(key.endpoints().1.ip(), owner.pid, Instant::now())
                .map(|h| escape(h));
        }
        if args.json {
            serde_json::to_writer(&mut out, &line)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", line.text())?;
        }
        out.flush()?;
        printed += 1;
        Ok(printed >= limit)
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        // SAFETY: the ring buffer owns its map fd for as long as the
        // AsyncFd owns the ring buffer, and always returns that fd.
        let mut fd = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("polling the event ring buffer")?;
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let stop = tokio::signal::ctrl_c();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                guard = fd.readable_mut() => {
                    let mut guard = guard.context("polling the event ring buffer")?;
                    let ring = guard.get_inner_mut();
                    while let Some(item) = ring.next() {
                        if item.len() < std::mem::size_of::<SocketEvent>() {
                            continue;
                        }
                        // SAFETY: the kernel wrote a SocketEvent; the ring
                        // buffer gives no alignment guarantee, hence unaligned.
                        let ev: SocketEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                        drop(item);
                        let udp_connect = ev.key.proto == PROTO_UDP && ev.owner.hook == hook::CONNECT;
                        if udp_connect {
                            pending.insert(ev.owner.cookie, Pending { event: ev, since: Instant::now() });
                        } else if ev.owner.hook == hook::UDP_RELEASE {
                            // Closed before its port was found: the kernel
                            // recorded the whole flow at close.
                            if let Some(p) = pending.remove(&ev.owner.cookie) {
                                if emit(&ev.key, &p.event.owner, Source::Ebpf, &mut attributor)? {
                                    return Ok(());
                                }
                            }
                        } else if emit(&ev.key, &ev.owner, Source::Ebpf, &mut attributor)? {
                            return Ok(());
                        }
                    }
                    guard.clear_ready();
                }
                _ = tick.tick(), if !pending.is_empty() => {
                    let cookies: Vec<u64> = pending.keys().copied().collect();
                    for cookie in cookies {
                        let Some(p) = pending.get(&cookie) else { continue };
                        let key = p.event.key;
                        match diag.udp_by_cookie(key.family, cookie) {
                            Ok(Some((local, remote))) if local.port() != 0 => {
                                let p = pending.remove(&cookie).expect("present");
                                let full = FlowKey::from_endpoints(key.netns, key.proto, local, remote);
                                if emit(&full, &p.event.owner, Source::CookieJoin, &mut attributor)? {
                                    return Ok(());
                                }
                            }
                            _ if p.since.elapsed() > PENDING_FOR => {
                                // Never bound and never closed: report what
                                // is known (local port 0).
                                let p = pending.remove(&cookie).expect("present");
                                if emit(&key, &p.event.owner, Source::Ebpf, &mut attributor)? {
                                    return Ok(());
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use appfw_common::flow::PROTO_TCP;

    fn curl() -> Process {
        Process::example("/usr/bin/curl", &["curl", "example.org"])
    }

    #[test]
    fn text_line_is_the_audit_parser_format() {
        let key = FlowKey::v4(
            7,
            PROTO_TCP,
            [198, 51, 100, 1],
            43400,
            [212, 227, 247, 84],
            80,
        );
        assert_eq!(
            Line::new(&key, &curl(), Source::Ebpf).text(),
            "ebpf | exe=/usr/bin/curl, command=curl example.org, ppid=2817, pid=4490, uid=0, proto=tcp, family=02, address=212.227.247.84, port=80, sport=43400"
        );
    }

    #[test]
    fn json_line_has_the_documented_keys() {
        let key = FlowKey::from_endpoints(
            7,
            PROTO_UDP,
            "[2001:db8::1]:5000".parse().unwrap(),
            "[2001:db8::2]:53".parse().unwrap(),
        );
        let v: serde_json::Value =
            serde_json::to_value(Line::new(&key, &curl(), Source::CookieJoin)).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
            "exe", "command", "pid", "ppid", "uid", "proto", "family", "saddr", "sport", "daddr",
            "dport", "netns", "source", "host",
        ] {
            assert!(keys.contains(&k), "missing {k} in {v}");
        }
        assert_eq!(v["family"], "0A");
        assert_eq!(v["daddr"], "2001:db8::2");
        assert_eq!(v["source"], "cookie-join");
        assert_eq!(v["host"], serde_json::Value::Null);
        let mut named = Line::new(&key, &curl(), Source::Ebpf);
        named.host = Some("test.example".into());
        assert_eq!(
            serde_json::to_value(&named).unwrap()["host"],
            "test.example"
        );
        assert!(
            named.text().ends_with(", sport=5000, host=test.example"),
            "{}",
            named.text()
        );
    }

    #[test]
    fn crafted_command_line_stays_on_one_line() {
        let mut p = curl();
        p.args = vec!["curl".into(), "x\nebpf | exe=/usr/bin/ok".into()];
        let key = FlowKey::v4(7, PROTO_TCP, [198, 51, 100, 1], 1, [198, 51, 100, 2], 80);
        let t = Line::new(&key, &p, Source::Ebpf).text();
        assert!(!t.contains('\n'), "{t}");
    }
}
