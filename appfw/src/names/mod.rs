//! Which names the addresses a program connects to were looked up by,
//! learned from the DNS answers the kernel copies ([`crate::bpf`]'s
//! ingress hook, `appfw-ebpf/src/dns.rs`).
//!
//! [`answer`] parses a message (with hickory-proto, never by hand) into
//! (address, name, TTL) triples; [`Names`] keeps them: several names per
//! address, each until its TTL runs out, bounded in memory, and a lookup
//! prefers the name the same process asked for. [`Watcher`] is the queue
//! thread's side: it drains the ring buffer before each packet is judged,
//! so an answer that arrived before a connection's first packet names it.
//!
//! A program that asks a server of its own choosing can be told anything:
//! only answers from the system's resolvers (the `nameserver`s of
//! /etc/resolv.conf when appfw started, and port 53 on loopback, which only
//! root can bind) count as the program's own, the ones `host` rules use.
//! Other answers still name addresses in reports.

pub mod answer;
#[cfg(test)]
mod measure;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use appfw_common::dns::DnsAnswer;
use aya::maps::{MapData, RingBuf};

/// Names kept at most (all addresses together), by default.
pub const CAPACITY: usize = 100_000;
/// Names kept per address: CDNs give one address many names.
pub const PER_ADDRESS: usize = 4;
/// A name is kept at least this long, whatever its TTL: a TTL of 0 still
/// names the connection its program opens at once.
pub const MIN_TTL: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
struct Learned {
    name: Arc<str>,
    expires: Instant,
    /// The process whose socket received the answer (0: unknown).
    pid: u32,
}

/// What the name table did, for `--debug` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameCounts {
    /// DNS messages read from the kernel.
    pub messages: u64,
    /// Messages that were not a DNS response appfw could read (cut,
    /// malformed, or a TCP segment in the middle of a message).
    pub unreadable: u64,
    /// (address, name) pairs learned.
    pub learned: u64,
    /// Messages from servers that are not the system's resolvers (their
    /// names are shown, never used by rules).
    pub untrusted: u64,
    /// Pairs dropped before their TTL ran out because the table was full.
    pub evicted: u64,
}

/// address -> names, bounded.
pub struct Names {
    by_addr: HashMap<IpAddr, Vec<Learned>>,
    len: usize,
    capacity: usize,
    pub counts: NameCounts,
}

impl Default for Names {
    fn default() -> Self {
        Names::with_capacity(CAPACITY)
    }
}

impl Names {
    pub fn with_capacity(capacity: usize) -> Names {
        Names {
            by_addr: HashMap::new(),
            len: 0,
            capacity: capacity.max(PER_ADDRESS),
            counts: NameCounts::default(),
        }
    }

    /// Names held (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Records that `addr` is `name` for `ttl` seconds, as answered to
    /// process `pid`.
    pub fn learn(&mut self, addr: IpAddr, name: &str, ttl: u32, pid: u32, now: Instant) {
        let expires = now + Duration::from_secs(ttl.into()).max(MIN_TTL);
        let addr = canonical(addr);
        // Evicting an eighth at a time keeps this amortised.
        if self.len >= self.capacity {
            self.make_room(now);
        }
        // Most addresses have one name: room for one, grown one by one
        // (a Vec's default growth would reserve four).
        let names = self
            .by_addr
            .entry(addr)
            .or_insert_with(|| Vec::with_capacity(1));
        self.counts.learned += 1;
        // An answer renews only the entry of the process it was given to:
        // another process's answer (or an untrusted one, pid 0) never
        // takes a name away from the process that was answered.
        if let Some(i) = names.iter().position(|l| &*l.name == name && l.pid == pid) {
            let mut l = names.remove(i);
            l.expires = expires;
            // The newest answer goes last: lookups prefer it.
            names.push(l);
            return;
        }
        if names.len() >= PER_ADDRESS {
            // An untrusted name makes way first, then the one that would
            // expire first; an untrusted answer never pushes out a
            // process's own name.
            let victim = (0..names.len())
                .filter(|i| names[*i].pid == 0)
                .min_by_key(|i| names[*i].expires)
                .or_else(|| {
                    (pid != 0)
                        .then(|| (0..names.len()).min_by_key(|i| names[*i].expires))
                        .flatten()
                });
            match victim {
                Some(i) => {
                    names.remove(i);
                    self.len -= 1;
                    self.counts.evicted += 1;
                }
                None => return,
            }
        }
        names.reserve_exact(1);
        names.push(Learned {
            name: name.into(),
            expires,
            pid,
        });
        self.len += 1;
    }

    /// The name of `addr` for a packet of process `pid`: one that process
    /// was answered, else the newest. Allocates nothing.
    pub fn lookup(&self, addr: IpAddr, pid: u32, now: Instant) -> Option<&Arc<str>> {
        let names = self.by_addr.get(&canonical(addr))?;
        let live = || names.iter().rev().filter(|l| l.expires > now);
        live()
            .find(|l| pid != 0 && l.pid == pid)
            .or_else(|| live().next())
            .map(|l| &l.name)
    }

    /// The name process `pid` itself was answered for `addr`, if any: what
    /// `host` rules match, so that a program cannot borrow a name another
    /// program looked up (or that the same address has under another
    /// name). Allocates nothing.
    pub fn lookup_own(&self, addr: IpAddr, pid: u32, now: Instant) -> Option<&Arc<str>> {
        if pid == 0 {
            return None;
        }
        self.by_addr
            .get(&canonical(addr))?
            .iter()
            .rev()
            .find(|l| l.expires > now && l.pid == pid)
            .map(|l| &l.name)
    }

    /// Every name `addr` has now, newest first.
    pub fn all(&self, addr: IpAddr, now: Instant) -> impl Iterator<Item = &str> {
        self.by_addr
            .get(&canonical(addr))
            .into_iter()
            .flat_map(move |names| names.iter().rev().filter(move |l| l.expires > now))
            .map(|l| &*l.name)
    }

    /// Drops expired names; when that frees too little, the eighth of the
    /// names closest to expiring.
    fn make_room(&mut self, now: Instant) {
        self.retain(|l| l.expires > now);
        if self.len * 8 < self.capacity * 7 {
            return;
        }
        let mut expiries: Vec<Instant> = self
            .by_addr
            .values()
            .flat_map(|v| v.iter().map(|l| l.expires))
            .collect();
        let cut = expiries.len() / 8;
        let (_, threshold, _) = expiries.select_nth_unstable(cut);
        let threshold = *threshold;
        let before = self.len;
        self.retain(|l| l.expires > threshold);
        self.counts.evicted += (before - self.len) as u64;
    }

    fn retain(&mut self, mut keep: impl FnMut(&Learned) -> bool) {
        let mut len = 0;
        self.by_addr.retain(|_, names| {
            names.retain(&mut keep);
            len += names.len();
            !names.is_empty()
        });
        self.len = len;
    }

    /// Learns what one message from the kernel says; `trusted` tells
    /// whether it came from a resolver of the system (else no process
    /// owns its names).
    pub fn learn_answer(&mut self, a: &DnsAnswer, trusted: bool, now: Instant) {
        self.counts.messages += 1;
        if !trusted {
            self.counts.untrusted += 1;
        }
        let pid = if trusted { a.pid } else { 0 };
        let len = usize::from(a.len).min(a.data.len());
        let learned = if usize::try_from(a.wire_len).is_ok_and(|w| w > len) {
            // Cut by the kernel: half a message is not parsed.
            None
        } else {
            answer::addresses(a.proto, &a.data[..len])
        };
        match learned {
            Some(found) => {
                for (addr, name, ttl) in found {
                    self.learn(addr, &name, ttl, pid, now);
                }
            }
            None => self.counts.unreadable += 1,
        }
    }
}

/// An IPv4-mapped IPv6 address is its IPv4 address.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

/// The resolvers /etc/resolv.conf names (`nameserver ADDRESS` lines; a
/// zone index such as `%eth0` is dropped).
pub fn system_resolvers() -> Vec<IpAddr> {
    resolvers_in(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
}

fn resolvers_in(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|a| a.split('%').next()?.parse().ok())
        .map(canonical)
        .collect()
}

/// Whether an answer from `src` comes from a resolver of the system.
fn trusted_source(src: IpAddr, resolvers: &[IpAddr]) -> bool {
    let src = canonical(src);
    src.is_loopback() || resolvers.contains(&src)
}

fn source_of(a: &DnsAnswer) -> IpAddr {
    if a.ip_version == 4 {
        IpAddr::from([a.saddr[0], a.saddr[1], a.saddr[2], a.saddr[3]])
    } else {
        IpAddr::from(a.saddr)
    }
}

/// DNS messages learned per [`Watcher::drain`].
const DRAIN_MAX: usize = 64;

/// The queue thread's name table and the ring buffer it is fed from.
pub struct Watcher {
    ring: RingBuf<MapData>,
    resolvers: Vec<IpAddr>,
    pub names: Names,
}

impl Watcher {
    /// A watcher trusting `resolvers` (see [`system_resolvers`]).
    pub fn new(ring: RingBuf<MapData>, resolvers: Vec<IpAddr>) -> Watcher {
        Watcher {
            ring,
            resolvers,
            names: Names::default(),
        }
    }

    /// Learns the answers waiting, at most [`DRAIN_MAX`] (a flood of
    /// answers must not hold up verdicts; the rest wait for the next
    /// call). With none waiting, this reads two positions from shared
    /// memory: no system call.
    pub fn drain(&mut self) {
        let mut now = None;
        for _ in 0..DRAIN_MAX {
            let Some(item) = self.ring.next() else {
                break;
            };
            let now = *now.get_or_insert_with(Instant::now);
            if item.len() < std::mem::size_of::<DnsAnswer>() {
                self.names.counts.unreadable += 1;
                continue;
            }
            // SAFETY: the kernel wrote a whole DnsAnswer (size checked),
            // which is valid for any bytes; read unaligned from the ring.
            let a: DnsAnswer = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            drop(item);
            let trusted = trusted_source(source_of(&a), &self.resolvers);
            // Bytes from the network: whatever goes wrong in the parser
            // costs this answer, never the verdict thread.
            let names = &mut self.names;
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                names.learn_answer(&a, trusted, now)
            }))
            .is_err()
            {
                self.names.counts.unreadable += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn several_names_per_address_newest_and_own_first() {
        let mut n = Names::default();
        let t = Instant::now();
        n.learn(ip("198.51.100.2"), "a.example", 60, 10, t);
        n.learn(ip("198.51.100.2"), "b.example", 60, 20, t);
        assert_eq!(
            n.lookup(ip("198.51.100.2"), 10, t).map(|s| &**s),
            Some("a.example")
        );
        assert_eq!(
            n.lookup(ip("198.51.100.2"), 20, t).map(|s| &**s),
            Some("b.example")
        );
        assert_eq!(
            n.lookup(ip("198.51.100.2"), 30, t).map(|s| &**s),
            Some("b.example")
        );
        assert_eq!(
            n.all(ip("198.51.100.2"), t).collect::<Vec<_>>(),
            ["b.example", "a.example"]
        );
        assert_eq!(n.lookup(ip("198.51.100.3"), 10, t), None);
        assert_eq!(
            n.lookup_own(ip("198.51.100.2"), 10, t).map(|s| &**s),
            Some("a.example")
        );
        assert_eq!(
            n.lookup_own(ip("198.51.100.2"), 30, t),
            None,
            "30 asked for nothing"
        );
        // A mapped address is the IPv4 one.
        assert!(n.lookup(ip("::ffff:198.51.100.2"), 10, t).is_some());
        // The same name answered to another process is that process's
        // too; the first keeps its own.
        n.learn(ip("198.51.100.2"), "a.example", 60, 30, t);
        assert_eq!(n.len(), 3);
        assert_eq!(
            n.lookup(ip("198.51.100.2"), 99, t).map(|s| &**s),
            Some("a.example")
        );
        assert_eq!(
            n.lookup_own(ip("198.51.100.2"), 30, t).map(|s| &**s),
            Some("a.example")
        );
        // Learning it again for the same process refreshes it.
        n.learn(ip("198.51.100.2"), "a.example", 60, 30, t);
        assert_eq!(n.len(), 3);
    }

    #[test]
    fn untrusted_answers_never_take_a_name_from_its_process() {
        let mut n = Names::default();
        let t = Instant::now();
        let addr = ip("198.51.100.2");
        n.learn(addr, "deb.example", 300, 10, t);
        // An attacker's own server repeats the name with a short TTL, and
        // fills the address with names of its own.
        n.learn(addr, "deb.example", 0, 0, t);
        for i in 0..8 {
            n.learn(addr, &format!("x{i}.attacker.example"), 86_400, 0, t);
        }
        let later = t + Duration::from_secs(10);
        assert_eq!(
            n.lookup_own(addr, 10, later).map(|s| &**s),
            Some("deb.example"),
            "untrusted answers took the process's name"
        );
    }

    #[test]
    fn only_the_systems_resolvers_give_a_process_its_names() {
        let conf = "# comment\nsearch example\nnameserver 198.51.100.2\nnameserver fe80::1%eth0\nnameserver ::ffff:198.51.100.3\n";
        let r = resolvers_in(conf);
        assert_eq!(r, [ip("198.51.100.2"), ip("fe80::1"), ip("198.51.100.3")]);
        assert!(trusted_source(ip("198.51.100.2"), &r));
        assert!(trusted_source(ip("::ffff:198.51.100.3"), &r));
        assert!(trusted_source(ip("127.0.0.53"), &r), "a local stub");
        assert!(trusted_source(ip("::1"), &r));
        assert!(!trusted_source(ip("198.51.100.66"), &r));
        // An answer from elsewhere names the address, for nobody.
        let mut n = Names::default();
        let t = Instant::now();
        let wire = crate::names::answer::tests::response_for("evil.example.", [198, 51, 100, 9]);
        let mut a = DnsAnswer {
            cookie: 1,
            pid: 42,
            len: wire.len() as u16,
            proto: appfw_common::dns::PROTO_UDP,
            ip_version: 4,
            wire_len: wire.len() as u32,
            _pad2: 0,
            saddr: [0; 16],
            data: [0; appfw_common::dns::DNS_CAPTURE],
        };
        a.data[..wire.len()].copy_from_slice(&wire);
        n.learn_answer(&a, false, t);
        assert_eq!(n.lookup_own(ip("198.51.100.9"), 42, t), None);
        assert_eq!(
            n.lookup(ip("198.51.100.9"), 42, t).map(|s| &**s),
            Some("evil.example")
        );
        assert_eq!(n.counts.untrusted, 1);
        n.learn_answer(&a, true, t);
        assert_eq!(
            n.lookup_own(ip("198.51.100.9"), 42, t).map(|s| &**s),
            Some("evil.example")
        );
        // Cut by the kernel: not parsed.
        a.wire_len += 1;
        n.learn_answer(&a, true, t);
        assert_eq!(n.counts.unreadable, 1);
    }

    #[test]
    fn names_expire_with_their_ttl() {
        let mut n = Names::default();
        let t = Instant::now();
        n.learn(ip("2001:db8::2"), "short.example", 5, 1, t);
        n.learn(ip("2001:db8::2"), "long.example", 60, 1, t);
        assert_eq!(
            n.lookup(ip("2001:db8::2"), 1, t + Duration::from_secs(4))
                .map(|s| &**s),
            Some("long.example")
        );
        let later = t + Duration::from_secs(6);
        assert_eq!(
            n.all(ip("2001:db8::2"), later).collect::<Vec<_>>(),
            ["long.example"]
        );
        assert_eq!(
            n.lookup(ip("2001:db8::2"), 1, t + Duration::from_secs(61)),
            None
        );
        // TTL 0 still names the connection that follows at once.
        n.learn(ip("198.51.100.9"), "zero.example", 0, 1, t);
        assert!(n
            .lookup(ip("198.51.100.9"), 1, t + Duration::from_secs(1))
            .is_some());
        assert!(n.lookup(ip("198.51.100.9"), 1, t + MIN_TTL).is_none());
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut n = Names::with_capacity(1000);
        let t = Instant::now();
        for i in 0..10_000u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            n.learn(addr, &format!("h{i}.example"), 60 + i, 1, t);
        }
        assert!(n.len() <= 1000, "{}", n.len());
        assert!(n.counts.evicted >= 9000);
        // The newest (longest-lived) names are the ones kept.
        assert!(n
            .lookup(
                IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + 9999)),
                1,
                t
            )
            .is_some());
        assert!(n
            .lookup(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000)), 1, t)
            .is_none());
        // Per address, too.
        for i in 0..10 {
            n.learn(ip("198.51.100.2"), &format!("n{i}.example"), 60, 1, t);
        }
        assert_eq!(n.all(ip("198.51.100.2"), t).count(), PER_ADDRESS);
        // New names for addresses already held count against the bound.
        let mut n = Names::with_capacity(1000);
        for i in 0..4000u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i % 1000));
            n.learn(addr, &format!("h{i}.example"), 60 + i, 1, t);
        }
        assert!(n.len() <= 1000, "{}", n.len());
    }
}
