//! Naming processes: pid -> executable, command line, parent.
//!
//! A pid is reused once its process exits, so everything is keyed by
//! process *incarnation*: (pid, start), where start is the `CLOCK_BOOTTIME`
//! of the fork or exec that began it, as the eBPF tracepoints recorded it
//! (0 for processes older than appfw). /proc/PID is read once per
//! incarnation, and only trusted when that pid still is the incarnation that
//! owned the socket; otherwise the kernel's exec record names it.

use std::{
    cell::RefCell, collections::HashMap, fs, io::Read, path::Path, sync::Arc, time::Duration,
};

use appfw_common::{
    owner::{ARGS_LEN, ARG_WORDS},
    Owner, ProcKey, ProcRecord,
};

use super::{deadline, OwnerStore};
use crate::{
    identity::{self, FileId, Strength},
    system,
};

/// How long the queue thread waits for a /proc read or a path resolution
/// (normally tens of microseconds); later, the answer is unknown. A user
/// can stall both: its /proc/PID/cmdline by holding its mmap lock, a path
/// through a FUSE mount it owns.
const PROC_DEADLINE: Duration = Duration::from_millis(50);

thread_local! {
    // Reads run on these workers, off the queue thread: a stuck one stalls
    // no later packet (see `deadline`).
    static PROC: RefCell<deadline::Pool> =
        const { RefCell::new(deadline::Pool::new("reading /proc/PID", 4)) };
    static PATHS: RefCell<deadline::Pool> =
        const { RefCell::new(deadline::Pool::new("resolving an executable's path", 4)) };
}

/// Where a [`Process`]'s description came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessOrigin {
    /// /proc/PID, read while the process lived (it started before appfw,
    /// or the kernel has no record of it).
    Proc,
    /// The kernel's fork/exec record, alive or exited: what was executed,
    /// and argv as it was at exec.
    ExecRecord,
    /// Only the thread name the socket hook saw.
    Comm,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// The executable's path, for display (see [`identity::display_path`]).
    pub exe: Option<String>,
    /// The executed file; `None`: unknown, never matches a list entry.
    pub exe_id: Option<FileId>,
    pub strength: Strength,
    /// argv (at most [`ARG_WORDS`] words of [`ARGS_LEN`] bytes in all).
    pub args: Vec<String>,
    /// The kernel's `comm` (at most 15 bytes); shown, never matched.
    pub comm: String,
    pub origin: ProcessOrigin,
}

impl Process {
    /// A process known only by pid (and thread name, if any).
    fn unnamed(pid: u32, uid: u32, comm: String) -> Process {
        Process {
            pid,
            ppid: 0,
            uid,
            exe: None,
            exe_id: None,
            strength: Strength::None,
            args: Vec::new(),
            comm,
            origin: ProcessOrigin::Comm,
        }
    }

    /// The first `n` words of the command line, space separated (`comm`
    /// when argv is unknown).
    pub fn command(&self, n: usize) -> String {
        if self.args.is_empty() {
            return self.comm.clone();
        }
        self.args
            .iter()
            .take(n)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The whole command line.
    pub fn command_line(&self) -> String {
        self.command(usize::MAX)
    }
}

#[cfg(test)]
impl Process {
    /// A live process for unit tests: pid 4490, parent 2817, uid 0, comm
    /// from the executable's name, identity [`identity::test_id`] of `exe`.
    pub(crate) fn example(exe: &str, args: &[&str]) -> Process {
        Process {
            pid: 4490,
            ppid: 2817,
            uid: 0,
            exe: Some(exe.into()),
            exe_id: Some(identity::test_id(exe)),
            strength: Strength::Kernel,
            args: args.iter().map(|a| a.to_string()).collect(),
            comm: exe
                .rsplit('/')
                .next()
                .unwrap_or(exe)
                .chars()
                .take(15)
                .collect(),
            origin: ProcessOrigin::ExecRecord,
        }
    }
}

/// Bounded in entries and bytes: when full it is emptied, and processes
/// are named again.
const CACHE_CAPACITY: usize = 8192;
const CACHE_BYTES: usize = 4 << 20;

/// Roughly what a cached process costs in memory.
fn cost(p: &Process) -> usize {
    std::mem::size_of::<Process>()
        + 64
        + p.exe.as_ref().map_or(0, String::capacity)
        + p.comm.capacity()
        + p.args
            .iter()
            .map(|a| a.capacity() + std::mem::size_of::<String>())
            .sum::<usize>()
}

pub struct ProcessCache {
    map: HashMap<(u32, u64), Arc<Process>>,
    bytes: usize,
    ticks_ns: u64,
    /// Owners of an incarnation appfw saw start whose record was gone
    /// (evicted from the exited map, or never stored: map full).
    records_missing: u64,
    counts: CacheCounts,
}

/// How the cache did: lookups answered from it, lookups that named the
/// process anew, and the entries it holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounts {
    pub hits: u64,
    pub misses: u64,
    pub entries: u64,
}

impl Default for ProcessCache {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessCache {
    pub fn new() -> Self {
        ProcessCache {
            map: HashMap::with_capacity(CACHE_CAPACITY),
            bytes: 0,
            ticks_ns: 1_000_000_000 / system::clock_ticks(),
            records_missing: 0,
            counts: CacheCounts::default(),
        }
    }

    /// Names the process that owned a socket. On a cache hit: a hash
    /// lookup and a reference count, nothing else.
    pub fn resolve(&mut self, owner: &Owner, store: &impl OwnerStore) -> Arc<Process> {
        let key = (owner.pid, owner.start_ns);
        if let Some(p) = self.map.get(&key) {
            self.counts.hits += 1;
            return p.clone();
        }
        self.counts.misses += 1;
        let p = Arc::new(self.describe(owner, store));
        self.insert(key, p.clone());
        p
    }

    /// Names a process found through /proc (the fallback): whatever lives
    /// at that pid now.
    pub fn resolve_live(&mut self, pid: u32, uid: u32) -> Arc<Process> {
        match read_proc(pid, uid) {
            Some((p, _)) => Arc::new(p),
            None => Arc::new(Process::unnamed(pid, uid, String::new())),
        }
    }

    fn insert(&mut self, key: (u32, u64), p: Arc<Process>) {
        let cost = cost(&p);
        if self.map.len() >= CACHE_CAPACITY || self.bytes + cost > CACHE_BYTES {
            self.map.clear();
            self.bytes = 0;
        }
        self.bytes += cost;
        if let Some(old) = self.map.insert(key, p) {
            self.bytes = self.bytes.saturating_sub(self::cost(&old));
        }
    }

    pub fn records_missing(&self) -> u64 {
        self.records_missing
    }

    pub fn counts(&self) -> CacheCounts {
        CacheCounts {
            entries: self.map.len() as u64,
            ..self.counts
        }
    }

    fn describe(&mut self, owner: &Owner, store: &impl OwnerStore) -> Process {
        let current = store.process_start(owner.pid);
        // Does this pid still belong to the incarnation that owned the
        // socket? Known exactly for processes appfw saw start; for older
        // ones (start 0) there must be no newer incarnation on record.
        let same = match current {
            Some(c) => c == owner.start_ns,
            None => owner.start_ns == 0,
        };
        // A record is keyed by its incarnation, so it is never another
        // process's; one with start 0 does not exist.
        let record = (owner.start_ns != 0)
            .then(|| store.process(&ProcKey::new(owner.pid, owner.start_ns)))
            .flatten();
        match &record {
            Some(rec) => {
                if let Some(id) = FileId::of_record(rec) {
                    return from_record(owner, rec, id, same);
                }
            }
            None if owner.start_ns != 0 => self.records_missing += 1,
            None => {}
        }
        // No kernel identity: /proc, only while the pid is that process.
        if same {
            if let Some((mut live, start_ticks)) = read_proc(owner.pid, owner.uid) {
                // Re-check after reading: the process may have exited and
                // its pid been reused meanwhile. /proc's start time has
                // clock-tick resolution, rounded down, so a process that
                // began after the socket was recorded cannot pass.
                let reused = store.process_start(owner.pid) != current
                    || start_ticks.saturating_mul(self.ticks_ns) > owner.ktime_ns;
                if !reused {
                    if let Some(rec) = &record {
                        live.ppid = rec.ppid;
                    }
                    live.comm = comm(owner);
                    return live;
                }
            }
        }
        Process::unnamed(owner.pid, owner.uid, comm(owner))
    }
}

fn comm(owner: &Owner) -> String {
    c_str(&owner.comm)
}

fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A process named by its kernel record. `alive`: the pid still is this
/// incarnation (then /proc/PID/exe may name a record made at fork, which
/// has no path).
fn from_record(owner: &Owner, rec: &ProcRecord, id: FileId, alive: bool) -> Process {
    let mut path = c_str(&rec.filename);
    if path.is_empty() && alive {
        let pid = owner.pid;
        path = deadline::run(&PROC, PROC_DEADLINE, move || {
            fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| exe_text(&p))
                .unwrap_or_default()
        })
        .unwrap_or_default();
    }
    let len = (rec.args_len as usize).min(rec.args.len());
    Process {
        pid: owner.pid,
        ppid: rec.ppid,
        uid: owner.uid,
        exe: Some(display_path(path, id)),
        exe_id: Some(id),
        strength: Strength::Kernel,
        args: identity::split_args(&rec.args[..len], ARG_WORDS),
        comm: comm(owner),
        origin: ProcessOrigin::ExecRecord,
    }
}

/// Reads /proc/PID: the description and the start time in clock ticks.
/// `None` when the process is gone, or a zombie: an exited process that
/// is not reaped yet still has /proc/PID, but no executable. The
/// executable is `stat("/proc/PID/exe")`: the magic link leads to the file
/// itself, whatever the process's mount namespace makes its path say.
fn read_proc(pid: u32, uid: u32) -> Option<(Process, u64)> {
    deadline::run(&PROC, PROC_DEADLINE, move || read_proc_now(pid, uid)).flatten()
}

/// The display path of `id` (resolving `path` walks directories a user may
/// control), with a deadline.
fn display_path(path: String, id: FileId) -> String {
    let shown = path.clone();
    deadline::run(&PATHS, PROC_DEADLINE, move || {
        identity::display_path(&path, id)
    })
    .unwrap_or_else(|| format!("{} ({id})", if shown.is_empty() { "?" } else { &shown }))
}

fn read_proc_now(pid: u32, uid: u32) -> Option<(Process, u64)> {
    let proc = procfs::process::Process::new(pid as i32).ok()?;
    let stat = proc.stat().ok()?;
    let exe_link = format!("/proc/{pid}/exe");
    let id = FileId::of_path(Path::new(&exe_link)).ok()?;
    let path = fs::read_link(&exe_link)
        .map(|p| exe_text(&p))
        .unwrap_or_default();
    // As much as the kernel record keeps, and no more.
    let mut cmdline = Vec::new();
    if let Ok(f) = fs::File::open(format!("/proc/{pid}/cmdline")) {
        let _ = f.take(ARGS_LEN as u64).read_to_end(&mut cmdline);
    }
    // The same process throughout? Its start time would differ otherwise.
    if proc.stat().ok()?.starttime != stat.starttime {
        return None;
    }
    Some((
        Process {
            pid,
            ppid: u32::try_from(stat.ppid).unwrap_or(0),
            uid,
            exe: Some(identity::display_path(&path, id)),
            exe_id: Some(id),
            strength: Strength::Proc,
            args: identity::split_args(&cmdline, ARG_WORDS),
            comm: stat.comm,
            origin: ProcessOrigin::Proc,
        },
        stat.starttime,
    ))
}

/// /proc/PID/exe of a replaced or deleted binary ends in " (deleted)".
fn exe_text(p: &Path) -> String {
    let s = p.to_string_lossy();
    s.strip_suffix(" (deleted)").unwrap_or(&s).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_read_with_a_capped_command_line() {
        let (p, _) = read_proc(std::process::id(), 0).expect("this process");
        assert!(p.exe.as_deref().is_some_and(|e| e.starts_with('/')));
        assert_eq!(p.strength, Strength::Proc);
        assert!(p.exe_id.is_some());
        assert!(!p.args.is_empty() && p.args.len() <= ARG_WORDS);
        assert!(p.args.iter().map(String::len).sum::<usize>() <= ARGS_LEN);
    }

    #[test]
    fn a_stalled_proc_read_is_unknown_at_once() {
        // Every /proc worker of this thread stuck in a fake slow read (each
        // test runs on its own thread, with its own pools).
        for _ in 0..4 {
            let late = deadline::run(&PROC, Duration::from_millis(10), || {
                std::thread::sleep(Duration::from_secs(3));
                None::<(Process, u64)>
            });
            assert!(late.is_none());
        }
        let start = std::time::Instant::now();
        assert!(read_proc(std::process::id(), 0).is_none());
        assert!(
            start.elapsed() < PROC_DEADLINE,
            "a stuck pool must answer at once"
        );
    }

    #[test]
    fn lookups_are_counted_as_hits_and_misses() {
        let store = super::super::tests::MemStore::default();
        let mut cache = ProcessCache::new();
        // Started after appfw, without a record: named without /proc.
        let owner = super::super::tests::owner(4242, 1, 1);
        for _ in 0..3 {
            cache.resolve(&owner, &store);
        }
        let other = Owner { pid: 4243, ..owner };
        cache.resolve(&other, &store);
        assert_eq!(
            cache.counts(),
            CacheCounts {
                hits: 2,
                misses: 2,
                entries: 2
            }
        );
    }

    #[test]
    fn cache_is_bounded_by_bytes() {
        let mut cache = ProcessCache::new();
        let big = |pid: u32| {
            let mut p = Process::example("/usr/bin/x", &[]);
            p.pid = pid;
            p.exe = Some("/".repeat(4000));
            Arc::new(p)
        };
        for pid in 0..5000 {
            cache.insert((pid, 0), big(pid));
            assert!(cache.bytes <= CACHE_BYTES);
        }
        assert!(
            cache.map.len() < 5000,
            "entries were evicted for their size"
        );
        assert!(!cache.map.is_empty());
    }
}
