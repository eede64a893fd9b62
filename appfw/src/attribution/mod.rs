//! Which program sent this packet?
//!
//! A packet that came through appfw's own rules carries the cookie of the
//! socket that sent it (recorded in front of the queue); that socket's
//! owner, recorded by the kernel hooks when it was created, connected or
//! sent from by another process, is the answer (`socket`). Without one (a
//! socket older than appfw, or rules of the administrator's own), for a
//! flow in appfw's own network namespace [`Attributor::attribute`] tries,
//! in order, using a record only if it is that socket's when the socket is
//! known:
//!
//! 1. the eBPF flow map, exact key (TCP connects, UDP sends);
//! 2. the same with the source address unspecified (UDP sent from a socket
//!    bound to the wildcard address);
//! 3. for UDP, sock_diag: tuple -> socket cookie -> the connect-time owner
//!    (connected UDP sockets, e.g. glibc's DNS resolver); when no socket
//!    has the tuple any more, the newest record of it (a socket that closed
//!    or exited records its flow at close);
//! 4. /proc: tuple -> socket inode -> pid (the fallback, slow and racy);
//!
//! and then names the owner's process through a cache keyed by process
//! incarnation (see [`process`]). Each path is counted.

pub mod deadline;
mod ebpf;
pub mod process;
pub mod procfs;
pub mod sock_diag;

use std::{io, sync::Arc};

use appfw_common::{flow::PROTO_UDP, FlowKey, Owner, ProcKey, ProcRecord};

pub use process::{CacheCounts, Process, ProcessCache, ProcessOrigin};

/// Read access to what the kernel hooks recorded. The daemon reads BPF
/// maps; unit tests use in-memory maps.
pub trait OwnerStore {
    fn flow(&self, key: &FlowKey) -> Option<Owner>;
    fn socket(&self, cookie: u64) -> Option<Owner>;
    /// A socket that has closed (a datagram of it may still be queued).
    fn closed_socket(&self, cookie: u64) -> Option<Owner>;
    fn process_start(&self, pid: u32) -> Option<u64>;
    fn process(&self, key: &ProcKey) -> Option<ProcRecord>;
    /// `CLOCK_BOOTTIME` now, the clock of [`Owner::ktime_ns`].
    fn now_ns(&self) -> u64 {
        crate::system::boottime_ns()
    }
}

/// The kernel's socket tables, asked when the hooks' records are not
/// enough. The daemon asks the kernel ([`SystemTables`]); unit tests
/// answer from memory, so they never read the host's sockets.
pub trait SocketTables {
    /// The cookie of the live UDP socket that sends `key`'s datagrams;
    /// `Ok(None)` when no socket has that tuple (any more).
    fn udp_cookie(&mut self, key: &FlowKey) -> io::Result<Option<u64>>;
    /// The /proc fallback: the process holding the socket of `key`.
    fn find_owner(&mut self, key: &FlowKey) -> Option<procfs::Found>;
}

/// sock_diag (opened on first use) and /proc.
#[derive(Default)]
pub struct SystemTables {
    diag: Option<sock_diag::SockDiag>,
}

impl SocketTables for SystemTables {
    fn udp_cookie(&mut self, key: &FlowKey) -> io::Result<Option<u64>> {
        let diag = match &mut self.diag {
            Some(d) => d,
            None => self.diag.insert(sock_diag::SockDiag::open()?),
        };
        diag.udp_cookie(key)
    }

    fn find_owner(&mut self, key: &FlowKey) -> Option<procfs::Found> {
        procfs::find_owner(key)
    }
}

/// A UDP record younger than this is trusted at once: its socket's record
/// is refreshed by every send, so a datagram finds its own record fresh.
/// An older one is checked against the live sockets first.
pub const UDP_RECORD_TTL_NS: u64 = 2_000_000_000;

/// With no live socket on a tuple, its newest record names the datagram's
/// sender only if it is younger than this: the longest a datagram is
/// assumed to wait in a busy queue.
pub const UDP_QUEUE_WAIT_NS: u64 = 30_000_000_000;

/// The socket a queued packet came from, as the filter in front of the
/// queue recorded it: its cookie and, if the hooks knew it then, its owner.
#[derive(Clone, Copy, Debug)]
pub struct Sender {
    pub cookie: u64,
    pub owner: Option<Owner>,
}

impl From<appfw_common::QueuedPacket> for Sender {
    fn from(q: appfw_common::QueuedPacket) -> Self {
        Sender {
            cookie: q.cookie,
            owner: (q.owner_known == 1).then_some(q.owner),
        }
    }
}

/// How a flow was attributed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The packet's own socket, recorded by the kernel hooks.
    Socket,
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
    pub const ALL: [Source; 6] = [
        Source::Socket,
        Source::Ebpf,
        Source::EbpfWildcard,
        Source::CookieJoin,
        Source::Procfs,
        Source::Unknown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Source::Socket => "socket",
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

/// Per-path counts, and owners whose kernel process record was missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts(pub [u64; 6], pub u64, pub CacheCounts);

impl Counts {
    pub fn get(&self, s: Source) -> u64 {
        self.0[s.index()]
    }
}

pub struct Attributor<S, T = SystemTables> {
    store: S,
    mode: Mode,
    tables: T,
    processes: ProcessCache,
    counts: Counts,
}

impl<S: OwnerStore> Attributor<S> {
    pub fn new(store: S, mode: Mode) -> Self {
        Self::with_tables(store, mode, SystemTables::default())
    }
}

impl<S: OwnerStore, T: SocketTables> Attributor<S, T> {
    pub fn with_tables(store: S, mode: Mode, tables: T) -> Self {
        Attributor {
            store,
            mode,
            tables,
            processes: ProcessCache::new(),
            counts: Counts::default(),
        }
    }

    pub fn counts(&self) -> Counts {
        Counts(
            self.counts.0,
            self.processes.records_missing(),
            self.processes.counts(),
        )
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Attributes a flow of this network namespace, sent by `sender` when
    /// the filter in front of the queue recorded it. `key.netns` must be
    /// this namespace's cookie (the eBPF records carry it).
    pub fn attribute(&mut self, key: &FlowKey, sender: Option<&Sender>) -> Attribution {
        let socket = sender.map(|s| s.cookie);
        let recorded = sender.and_then(|s| {
            s.owner
                .or_else(|| self.store.socket(s.cookie))
                .or_else(|| self.store.closed_socket(s.cookie))
                .map(|o| (Source::Socket, o))
        });
        let (source, process) = match self.mode {
            Mode::Ebpf => match recorded.or_else(|| self.kernel_owner(key, socket)) {
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

    fn kernel_owner(&mut self, key: &FlowKey, socket: Option<u64>) -> Option<(Source, Owner)> {
        // A record of the tuple made by another socket says nothing about
        // this packet's sender.
        let ours = |o: &Owner| socket.is_none_or(|c| o.cookie == c);
        if key.proto != PROTO_UDP {
            // A TCP record is rewritten by every connect with its tuple.
            return self.store.flow(key).filter(ours).map(|o| (Source::Ebpf, o));
        }
        // UDP records are never deleted, and one for an unbound socket
        // (source unspecified) may shadow a later socket that reuses the
        // port. Each send refreshes its socket's record, so a fresh record
        // is the sender's; an older one must be checked against the live
        // sockets.
        let now = self.store.now_ns();
        let age = |o: &Owner| now.saturating_sub(o.ktime_ns);
        // Unbound senders are the common case: their key is tried first.
        // Exact records before wildcard ones.
        let exact = exact_record(&self.store, key).filter(|(_, o)| ours(o));
        if let Some(hit) = exact.filter(|(_, o)| age(o) < UDP_RECORD_TTL_NS) {
            return Some(hit);
        }
        let wildcard = wildcard_record(&self.store, key).filter(|(_, o)| ours(o));
        if let Some(hit) = wildcard.filter(|(_, o)| age(o) < UDP_RECORD_TTL_NS) {
            return Some(hit);
        }
        let newest = newer(wildcard, exact);
        match self.tables.udp_cookie(key) {
            // The recorded socket itself, quiet for a while.
            Ok(Some(cookie)) if socket.is_some_and(|c| c != cookie) => None,
            Ok(Some(cookie)) if newest.is_some_and(|(_, o)| o.cookie == cookie) => newest,
            Ok(Some(cookie)) => self.store.socket(cookie).map(|o| (Source::CookieJoin, o)),
            // No socket has the tuple: it closed or exited after sending,
            // and its last record (written at close for a connected
            // socket) names it. Read again: it may have closed just now.
            Ok(None) => newer(
                wildcard_record(&self.store, key),
                exact_record(&self.store, key),
            )
            .filter(|(_, o)| ours(o) && age(o) < UDP_QUEUE_WAIT_NS),
            Err(e) => {
                log::debug!("sock_diag lookup failed: {e}");
                None
            }
        }
    }

    fn fallback(&mut self, key: &FlowKey) -> (Source, Option<Arc<Process>>) {
        match self.tables.find_owner(key) {
            Some(found) => (
                Source::Procfs,
                Some(self.processes.resolve_live(found.pid, found.uid)),
            ),
            None => (Source::Unknown, None),
        }
    }
}

/// A UDP flow's record with the source address unspecified: an unbound
/// sender's, or an IPv6 socket's recorded at close.
fn wildcard_record(store: &impl OwnerStore, key: &FlowKey) -> Option<(Source, Owner)> {
    (!key.saddr_is_unspecified())
        .then(|| store.flow(&key.without_saddr()))
        .flatten()
        .map(|o| (Source::EbpfWildcard, o))
}

fn exact_record(store: &impl OwnerStore, key: &FlowKey) -> Option<(Source, Owner)> {
    store.flow(key).map(|o| (Source::Ebpf, o))
}

/// The more recently written of two records.
fn newer(a: Option<(Source, Owner)>, b: Option<(Source, Owner)>) -> Option<(Source, Owner)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.1.ktime_ns > b.1.ktime_ns { a } else { b }),
        (a, b) => a.or(b),
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
        pub closed: HashMap<u64, Owner>,
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
        fn closed_socket(&self, cookie: u64) -> Option<Owner> {
            self.closed.get(&cookie).copied()
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

    /// Socket tables answered from memory; counts what was asked.
    #[derive(Default)]
    pub struct MemTables {
        /// The live UDP socket of every tuple that has one.
        pub udp: HashMap<FlowKey, u64>,
        pub udp_asked: u32,
        pub procfs_asked: u32,
    }

    impl SocketTables for MemTables {
        fn udp_cookie(&mut self, key: &FlowKey) -> io::Result<Option<u64>> {
            self.udp_asked += 1;
            Ok(self.udp.get(key).copied())
        }
        fn find_owner(&mut self, _key: &FlowKey) -> Option<procfs::Found> {
            self.procfs_asked += 1;
            None
        }
    }

    fn attributor(store: MemStore) -> Attributor<MemStore, MemTables> {
        Attributor::with_tables(store, Mode::Ebpf, MemTables::default())
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

    /// The kernel device of [`record`]s: 0:7 in `stat`'s terms.
    pub const RECORD_DEV: u32 = 7;

    /// An exec record of `filename`, whose inode is the
    /// [`crate::identity::test_id`] one of `filename`.
    pub fn record(start_ns: u64, ppid: u32, filename: &str, args: &[&str]) -> ProcRecord {
        use appfw_common::owner::{exe_source, ARGS_LEN, FILENAME_LEN};
        let mut rec = ProcRecord {
            start_ns,
            ino: crate::identity::test_id(filename).ino,
            ppid,
            dev: RECORD_DEV,
            args_len: 0,
            args_truncated: 0,
            exe_source: exe_source::EXEC,
            _pad: [0; 2],
            filename: [0; FILENAME_LEN],
            args: [0; ARGS_LEN],
        };
        rec.filename[..filename.len()].copy_from_slice(filename.as_bytes());
        let joined: Vec<u8> = args.iter().flat_map(|a| a.bytes().chain([0])).collect();
        rec.args[..joined.len()].copy_from_slice(&joined);
        rec.args_len = joined.len() as u32;
        rec
    }

    /// What the daemon makes of [`record`]'s identity.
    pub fn record_id(filename: &str) -> crate::identity::FileId {
        crate::identity::FileId::from_kernel(RECORD_DEV, crate::identity::test_id(filename).ino)
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
        let mut a = attributor(store);
        let got = a.attribute(&k, None);
        assert_eq!(got.source, Source::Ebpf);
        let p = got.process.unwrap();
        assert_eq!(p.exe_id, Some(record_id("/nonexistent/nc")));
        assert_eq!(p.strength, crate::identity::Strength::Kernel);
        // The path is not that file here: shown with the identity.
        assert_eq!(
            p.exe.as_deref(),
            Some(format!("/nonexistent/nc ({})", record_id("/nonexistent/nc")).as_str())
        );
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
        let mut a = attributor(store);
        let got = a.attribute(&k, None);
        assert_eq!(got.source, Source::EbpfWildcard);
        assert_eq!(got.process.unwrap().pid, GONE);
    }

    #[test]
    fn stale_udp_record_of_a_reused_port_is_not_trusted() {
        // An unbound socket sent from this port long ago; now a connected
        // socket (no send-time record) uses it. The live socket's owner
        // wins, and without one anywhere the flow is unknown.
        let mut store = MemStore::default();
        let k = key(PROTO_UDP, [198, 51, 100, 1]);
        store.now = 100 * UDP_QUEUE_WAIT_NS;
        store.flows.insert(k.without_saddr(), owner(GONE, 0, 1));
        let mut connected = owner(GONE - 7, 0, store.now - UDP_QUEUE_WAIT_NS);
        connected.cookie = 77;
        store.sockets.insert(77, connected);

        let mut alone = Attributor::with_tables(
            MemStore {
                flows: store.flows.clone(),
                now: store.now,
                ..MemStore::default()
            },
            Mode::Ebpf,
            MemTables::default(),
        );
        let got = alone.attribute(&k, None);
        assert_eq!(got.source, Source::Unknown);
        assert!(got.process.is_none(), "{got:?}");
        assert_eq!(alone.tables.udp_asked, 1, "the live sockets were not asked");

        let mut tables = MemTables::default();
        tables.udp.insert(k, 77);
        let mut a = Attributor::with_tables(store, Mode::Ebpf, tables);
        let got = a.attribute(&k, None);
        assert_eq!(got.source, Source::CookieJoin);
        assert_eq!(got.process.unwrap().pid, GONE - 7);
    }

    #[test]
    fn udp_record_of_a_socket_gone_while_its_datagram_waited_names_it() {
        // A connected socket sent, closed (recorded then) and the datagram
        // waited longer than the fast-path TTL in a busy queue.
        let mut store = MemStore::default();
        let k = key(PROTO_UDP, [198, 51, 100, 1]);
        store.now = 10 * UDP_QUEUE_WAIT_NS;
        store
            .flows
            .insert(k, owner(GONE, 0, store.now - 3 * UDP_RECORD_TTL_NS));
        let mut a = attributor(store);
        let got = a.attribute(&k, None);
        assert_eq!(got.source, Source::Ebpf);
        assert_eq!(got.process.unwrap().pid, GONE);
    }

    #[test]
    fn quiet_udp_socket_still_alive_keeps_its_record() {
        let mut store = MemStore::default();
        let k = key(PROTO_UDP, [198, 51, 100, 1]);
        store.now = 10 * UDP_QUEUE_WAIT_NS;
        let mut o = owner(GONE, 0, 1);
        o.cookie = 5;
        store.flows.insert(k.without_saddr(), o);
        let mut tables = MemTables::default();
        tables.udp.insert(k, 5);
        let mut a = Attributor::with_tables(store, Mode::Ebpf, tables);
        let got = a.attribute(&k, None);
        assert_eq!(got.source, Source::EbpfWildcard);
        assert_eq!(got.process.unwrap().pid, GONE);
    }

    #[test]
    fn newer_exact_udp_record_wins_over_stale_wildcard() {
        let mut store = MemStore::default();
        let k = key(PROTO_UDP, [198, 51, 100, 1]);
        store.now = 10 * UDP_RECORD_TTL_NS;
        store.flows.insert(k.without_saddr(), owner(GONE, 0, 1));
        store.flows.insert(k, owner(GONE - 1, 0, store.now - 1000));
        let mut a = attributor(store);
        let got = a.attribute(&k, None);
        assert_eq!(got.source, Source::Ebpf);
        assert_eq!(got.process.unwrap().pid, GONE - 1);
    }

    #[test]
    fn tcp_never_uses_the_wildcard_entry() {
        let mut store = MemStore::default();
        let k = key(6, [198, 51, 100, 1]);
        store.flows.insert(k.without_saddr(), owner(GONE, 0, 1));
        let mut a = attributor(store);
        let got = a.attribute(&k, None);
        assert_eq!(got.source, Source::Unknown);
        assert!(got.process.is_none(), "{got:?}");
        // TCP goes from its exact record straight to the /proc fallback.
        assert_eq!((a.tables.udp_asked, a.tables.procfs_asked), (0, 1));
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
        let mut a = attributor(store);
        let p = a.attribute(&k, None).process.unwrap();
        assert_eq!(p.exe_id, Some(record_id("/nonexistent/old")));
    }

    #[test]
    fn owner_without_any_record_is_named_by_comm() {
        let mut store = MemStore::default();
        let k = key(6, [198, 51, 100, 1]);
        store.flows.insert(k, owner(GONE, 0, 1));
        let mut a = attributor(store);
        let p = a.attribute(&k, None).process.unwrap();
        assert_eq!(p.exe, None);
        assert_eq!(p.exe_id, None, "a thread name is no identity");
        assert_eq!(p.strength, crate::identity::Strength::None);
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
        let mut a = attributor(store);
        let p1 = a.attribute(&k1, None).process.unwrap();
        // Remove the record: a second lookup must come from the cache.
        a.store().procs.borrow_mut().clear();
        let p2 = a.attribute(&k2, None).process.unwrap();
        assert!(Arc::ptr_eq(&p1, &p2));
    }

    #[test]
    fn exited_process_is_named_as_it_was_alive_and_missing_records_are_counted() {
        // The pid's start entry is gone (deleted at exit); the record is
        // still found by incarnation, and names a script by its
        // interpreter with the script in the command.
        let mut store = MemStore::default();
        let k = key(PROTO_UDP, [198, 51, 100, 1]);
        store.flows.insert(k, owner(GONE, 100, 150));
        store.now = 200;
        store.procs.borrow_mut().insert(
            ProcKey::new(GONE, 100),
            record(
                100,
                1,
                "/usr/bin/python3",
                &["/usr/bin/python3", "./send.py"],
            ),
        );
        let mut k2 = k;
        k2.sport += 1;
        store.flows.insert(k2, owner(GONE - 3, 300, 350));
        let mut a = attributor(store);
        let p = a.attribute(&k, None).process.unwrap();
        assert_eq!(p.exe_id, Some(record_id("/usr/bin/python3")));
        assert_eq!(p.command(2), "/usr/bin/python3 ./send.py");
        assert_eq!(a.counts().1, 0);
        // An incarnation appfw saw start whose record is gone: unknown,
        // and counted.
        let p = a.attribute(&k2, None).process.unwrap();
        assert_eq!(p.exe_id, None);
        assert_eq!(a.counts().1, 1);
    }

    #[test]
    fn owner_of_unknown_start_is_not_named_by_a_newer_incarnation() {
        // The socket's process predates appfw (start 0); the pid now
        // belongs to a process appfw saw start. Neither its record nor
        // /proc may name the old owner.
        let mut store = MemStore::default();
        let k = key(6, [198, 51, 100, 1]);
        store.flows.insert(k, owner(GONE, 0, 150));
        store.starts.insert(GONE, 500);
        store.procs.borrow_mut().insert(
            ProcKey::new(GONE, 500),
            record(500, 1, "/nonexistent/new", &["new"]),
        );
        let mut a = attributor(store);
        let p = a.attribute(&k, None).process.unwrap();
        assert_eq!(p.exe_id, None, "{p:?}");
        assert_eq!(p.origin, ProcessOrigin::Comm);
    }

    #[test]
    fn record_without_identity_is_not_an_identity() {
        // A fork record of a parent whose executable could not be read,
        // and the pid no longer that process: unknown.
        let mut store = MemStore::default();
        let k = key(6, [198, 51, 100, 1]);
        store.flows.insert(k, owner(GONE, 100, 150));
        let mut rec = record(100, 1, "", &[]);
        rec.exe_source = appfw_common::owner::exe_source::NONE;
        store
            .procs
            .borrow_mut()
            .insert(ProcKey::new(GONE, 100), rec);
        let mut a = attributor(store);
        let p = a.attribute(&k, None).process.unwrap();
        assert_eq!(p.exe_id, None);
    }
}
