//! Which program sent this packet?
//!
//! For a flow in appfw's own network namespace, [`Attributor::attribute`]
//! tries, in order:
//!
//! 1. the eBPF flow map, exact key (TCP connects, UDP sends);
//! 2. the same with the source address unspecified (UDP sent from a socket
//!    bound to the wildcard address);
//! 3. for UDP, sock_diag: tuple -> socket cookie -> the connect-time owner
//!    (connected UDP sockets, e.g. glibc's DNS resolver), and the flow map
//!    again in case the socket closed meanwhile (its flow is recorded at
//!    close);
//! 4. /proc: tuple -> socket inode -> pid (the fallback, slow and racy);
//!
//! and then names the owner's process through a cache keyed by process
//! incarnation (see [`process`]). Each path is counted.

mod ebpf;
pub mod process;
pub mod procfs;
pub mod sock_diag;

use std::sync::Arc;

use appfw_common::{flow::PROTO_UDP, FlowKey, Owner, ProcKey, ProcRecord};

pub use process::{Process, ProcessCache, ProcessOrigin};

/// Read access to what the kernel hooks recorded. The daemon reads BPF
/// maps; unit tests use in-memory maps.
pub trait OwnerStore {
    fn flow(&self, key: &FlowKey) -> Option<Owner>;
    fn socket(&self, cookie: u64) -> Option<Owner>;
    fn process_start(&self, pid: u32) -> Option<u64>;
    fn process(&self, key: &ProcKey) -> Option<ProcRecord>;
    /// `CLOCK_BOOTTIME` now, the clock of [`Owner::ktime_ns`].
    fn now_ns(&self) -> u64 {
        crate::system::boottime_ns()
    }
}

/// A UDP record older than this is not trusted for a new packet: a
/// datagram waits in the queue for milliseconds, and its socket's record
/// was refreshed when it was sent.
pub const UDP_RECORD_TTL_NS: u64 = 2_000_000_000;

/// How a flow was attributed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Exact hit in the eBPF flow map.
    Ebpf,
    /// eBPF hit with the source address unspecified.
    EbpfWildcard,
    /// Connected UDP socket: sock_diag gave the cookie, eBPF the owner.
    CookieJoin,
    /// The /proc fallback.
    Procfs,
    /// Nobody found.
    Unknown,
}

impl Source {
    pub const ALL: [Source; 5] = [
        Source::Ebpf,
        Source::EbpfWildcard,
        Source::CookieJoin,
        Source::Procfs,
        Source::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Source::Ebpf => "ebpf",
            Source::EbpfWildcard => "ebpf-wildcard",
            Source::CookieJoin => "cookie-join",
            Source::Procfs => "procfs",
            Source::Unknown => "unknown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The answer for one flow.
#[derive(Clone, Debug)]
pub struct Attribution {
    pub source: Source,
    pub process: Option<Arc<Process>>,
}

/// Which paths may be used; `ProcfsOnly` exists to measure the fallback
/// against the eBPF path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Ebpf,
    ProcfsOnly,
}

/// Per-path counts.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts(pub [u64; 5]);

impl Counts {
    pub fn get(&self, s: Source) -> u64 {
        self.0[s.index()]
    }
}

pub struct Attributor<S> {
    store: S,
    mode: Mode,
    diag: Option<sock_diag::SockDiag>,
    processes: ProcessCache,
    counts: Counts,
}

impl<S: OwnerStore> Attributor<S> {
    pub fn new(store: S, mode: Mode) -> Self {
        Attributor {
            store,
            mode,
            diag: None,
            processes: ProcessCache::new(),
            counts: Counts::default(),
        }
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Attributes a flow of this network namespace. `key.netns` must be
    /// this namespace's cookie (the eBPF records carry it).
    pub fn attribute(&mut self, key: &FlowKey) -> Attribution {
        let (source, process) = match self.mode {
            Mode::Ebpf => match self.kernel_owner(key) {
                Some((source, owner)) => {
                    (source, Some(self.processes.resolve(&owner, &self.store)))
                }
                None => self.fallback(key),
            },
            Mode::ProcfsOnly => self.fallback(key),
        };
        self.counts.0[source.index()] += 1;
        Attribution { source, process }
    }

    /// The owner of a socket found by cookie (used by `appfw trace`).
    pub fn resolve_owner(&mut self, owner: &Owner) -> Arc<Process> {
        self.processes.resolve(owner, &self.store)
    }

    fn kernel_owner(&mut self, key: &FlowKey) -> Option<(Source, Owner)> {
        if key.proto != PROTO_UDP {
            // A TCP record is rewritten by every connect with its tuple.
            return self.store.flow(key).map(|o| (Source::Ebpf, o));
        }
        // UDP records are never deleted, and one for an unbound socket
        // (source unspecified) may shadow a later socket that reuses the
        // port; but each send refreshes its record, so a datagram always
        // finds its own record fresh. Unbound senders are the common case:
        // their key is tried first.
        let now = self.store.now_ns();
        let fresh = |o: &Owner| now.saturating_sub(o.ktime_ns) < UDP_RECORD_TTL_NS;
        let wildcard = key.without_saddr();
        let recorded = |store: &S| -> Option<(Source, Owner)> {
            let w = (!key.saddr_is_unspecified())
                .then(|| store.flow(&wildcard))
                .flatten()
                .filter(fresh)
                .map(|o| (Source::EbpfWildcard, o));
            w.or_else(|| store.flow(key).filter(fresh).map(|o| (Source::Ebpf, o)))
        };
        if let Some(hit) = recorded(&self.store) {
            return Some(hit);
        }
        let diag = match &mut self.diag {
            Some(d) => d,
            None => match sock_diag::SockDiag::open() {
                Ok(d) => self.diag.insert(d),
                Err(e) => {
                    log::warn!(
                        "sock_diag unavailable, connected UDP sockets fall back to /proc: {e}"
                    );
                    return None;
                }
            },
        };
        match diag.udp_cookie(key) {
            Ok(Some(cookie)) => self.store.socket(cookie).map(|o| (Source::CookieJoin, o)),
            // Gone from the socket table: sock_release recorded its flow
            // before unhashing it (IPv6 with the source unspecified), so
            // the map has it now.
            Ok(None) => recorded(&self.store),
            Err(e) => {
                log::debug!("sock_diag lookup failed: {e}");
                None
            }
        }
    }

    fn fallback(&mut self, key: &FlowKey) -> (Source, Option<Arc<Process>>) {
        match procfs::find_owner(key) {
            Some(found) => (
                Source::Procfs,
                Some(self.processes.resolve_live(found.pid, found.uid)),
            ),
            None => (Source::Unknown, None),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::{cell::RefCell, collections::HashMap};

    /// In-memory stand-in for the BPF maps.
    #[derive(Default)]
    pub struct MemStore {
        pub flows: HashMap<FlowKey, Owner>,
        pub sockets: HashMap<u64, Owner>,
        pub starts: HashMap<u32, u64>,
        pub procs: RefCell<HashMap<ProcKey, ProcRecord>>,
        pub now: u64,
    }

    impl OwnerStore for MemStore {
        fn flow(&self, key: &FlowKey) -> Option<Owner> {
            self.flows.get(key).copied()
        }
        fn socket(&self, cookie: u64) -> Option<Owner> {
            self.sockets.get(&cookie).copied()
        }
        fn process_start(&self, pid: u32) -> Option<u64> {
            self.starts.get(&pid).copied()
        }
        fn process(&self, key: &ProcKey) -> Option<ProcRecord> {
            self.procs.borrow().get(key).copied()
        }
        fn now_ns(&self) -> u64 {
            self.now
        }
    }

    pub fn owner(pid: u32, start_ns: u64, ktime_ns: u64) -> Owner {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"test");
        Owner {
            cookie: 1,
            ktime_ns,
            start_ns,
            pid,
            tid: pid,
            uid: 0,
            gid: 0,
            comm,
            hook: 1,
            _pad: [0; 7],
        }
    }

    pub fn record(start_ns: u64, ppid: u32, filename: &str, args: &[&str]) -> ProcRecord {
        use appfw_common::owner::{ARG_LEN, ARG_SLOTS, FILENAME_LEN};
        let mut rec = ProcRecord {
            start_ns,
            ppid,
            argc: args.len().min(ARG_SLOTS) as u32,
            args_truncated: 0,
            _pad: [0; 7],
            filename: [0; FILENAME_LEN],
            args: [[0; ARG_LEN]; ARG_SLOTS],
        };
        rec.filename[..filename.len()].copy_from_slice(filename.as_bytes());
        for (slot, a) in rec.args.iter_mut().zip(args) {
            slot[..a.len()].copy_from_slice(a.as_bytes());
        }
        rec
    }

    fn key(proto: u8, saddr: [u8; 4]) -> FlowKey {
        FlowKey::v4(9, proto, saddr, 40000, [198, 51, 100, 2], 53)
    }

    // A pid far above pid_max, so /proc never has it: the tests exercise
    // the kernel records, not this machine's processes.
    const GONE: u32 = 9_999_999;

    #[test]
    fn exact_hit_names_the_recorded_exec() {
        let mut store = MemStore::default();
        let k = key(6, [198, 51, 100, 1]);
        store.flows.insert(k, owner(GONE, 100, 200));
        store.starts.insert(GONE, 100);
        store.procs.borrow_mut().insert(
            ProcKey::new(GONE, 100),
            record(100, 1, "/nonexistent/nc", &["nc", "198.51.100.2"]),
        );
        let mut a = Attributor::new(store, Mode::Ebpf);
        let got = a.attribute(&k);
        assert_eq!(got.source, Source::Ebpf);
        let p = got.process.unwrap();
        assert_eq!(p.exe.as_deref(), Some("/nonexistent/nc"));
        assert_eq!(p.args, vec!["nc", "198.51.100.2"]);
        assert_eq!(p.ppid, 1);
        assert_eq!(p.origin, ProcessOrigin::ExecRecord);
        assert_eq!(a.counts().get(Source::Ebpf), 1);
    }

    #[test]
    fn udp_from_wildcard_bound_socket_matches_without_source_address() {
        let mut store = MemStore::default();
        let k = key(PROTO_UDP, [198, 51, 100, 1]);
        store.flows.insert(k.without_saddr(), owner(GONE, 0, 1));
        let mut a = Attributor::new(store, Mode::Ebpf);
        let got = a.attribute(&k);
        assert_eq!(got.source, Source::EbpfWildcard);
        assert_eq!(got.process.unwrap().pid, GONE);
    }

    #[test]
    fn stale_udp_record_of_a_reused_port_is_not_trusted() {
        // An unbound socket sent from this port long ago; now a connected
        // socket (no send-time record) uses it. The old owner must not win.
        let mut store = MemStore::default();
        let k = key(PROTO_UDP, [198, 51, 100, 1]);
        store.now = 100 * UDP_RECORD_TTL_NS;
        store.flows.insert(k.without_saddr(), owner(GONE, 0, 1));
        let mut a = Attributor::new(store, Mode::Ebpf);
        let got = a.attribute(&k);
        assert!(
            !matches!(got.source, Source::Ebpf | Source::EbpfWildcard),
            "a stale record was used: {got:?}"
        );
    }

    #[test]
    fn newer_exact_udp_record_wins_over_stale_wildcard() {
        let mut store = MemStore::default();
        let k = key(PROTO_UDP, [198, 51, 100, 1]);
        store.now = 10 * UDP_RECORD_TTL_NS;
        store.flows.insert(k.without_saddr(), owner(GONE, 0, 1));
        store.flows.insert(k, owner(GONE - 1, 0, store.now - 1000));
        let mut a = Attributor::new(store, Mode::Ebpf);
        let got = a.attribute(&k);
        assert_eq!(got.source, Source::Ebpf);
        assert_eq!(got.process.unwrap().pid, GONE - 1);
    }

    #[test]
    fn tcp_never_uses_the_wildcard_entry() {
        let mut store = MemStore::default();
        let k = key(6, [198, 51, 100, 1]);
        store.flows.insert(k.without_saddr(), owner(GONE, 0, 1));
        let mut a = Attributor::new(store, Mode::Ebpf);
        assert_ne!(a.attribute(&k).source, Source::EbpfWildcard);
    }

    #[test]
    fn recycled_pid_is_not_reported_as_the_new_program() {
        // The socket's process began at 100; the pid now belongs to an
        // incarnation that began at 500. The old record must be used.
        let mut store = MemStore::default();
        let k = key(6, [198, 51, 100, 1]);
        store.flows.insert(k, owner(GONE, 100, 150));
        store.starts.insert(GONE, 500);
        store.procs.borrow_mut().insert(
            ProcKey::new(GONE, 100),
            record(100, 1, "/nonexistent/old", &["old"]),
        );
        store.procs.borrow_mut().insert(
            ProcKey::new(GONE, 500),
            record(500, 1, "/nonexistent/new", &["new"]),
        );
        let mut a = Attributor::new(store, Mode::Ebpf);
        let p = a.attribute(&k).process.unwrap();
        assert_eq!(p.exe.as_deref(), Some("/nonexistent/old"));
    }

    #[test]
    fn owner_without_any_record_is_named_by_comm() {
        let mut store = MemStore::default();
        let k = key(6, [198, 51, 100, 1]);
        store.flows.insert(k, owner(GONE, 0, 1));
        let mut a = Attributor::new(store, Mode::Ebpf);
        let p = a.attribute(&k).process.unwrap();
        assert_eq!(p.exe, None);
        assert_eq!(p.comm, "test");
        assert_eq!(p.origin, ProcessOrigin::Comm);
    }

    #[test]
    fn process_lookups_are_cached_per_incarnation() {
        let mut store = MemStore::default();
        let k1 = key(6, [198, 51, 100, 1]);
        let mut k2 = k1;
        k2.sport += 1;
        store.flows.insert(k1, owner(GONE, 100, 150));
        store.flows.insert(k2, owner(GONE, 100, 160));
        store.starts.insert(GONE, 100);
        store.procs.borrow_mut().insert(
            ProcKey::new(GONE, 100),
            record(100, 1, "/nonexistent/a", &["a"]),
        );
        let mut a = Attributor::new(store, Mode::Ebpf);
        let p1 = a.attribute(&k1).process.unwrap();
        // Remove the record: a second lookup must come from the cache.
        a.store().procs.borrow_mut().clear();
        let p2 = a.attribute(&k2).process.unwrap();
        assert!(Arc::ptr_eq(&p1, &p2));
    }
}
