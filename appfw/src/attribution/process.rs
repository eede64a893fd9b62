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
    owner::{ARG_LEN, ARG_SLOTS},
    Owner, ProcKey, ProcRecord,
};

use super::{deadline, OwnerStore};
use crate::system;

/// How long the queue thread waits for a /proc read (normally tens of
/// microseconds); later, the process is named from the kernel's records.
const PROC_DEADLINE: Duration = Duration::from_millis(50);

thread_local! {
    // /proc/PID/stat and exe, and path resolution, apart from cmdline: a
    // process that stalls its cmdline still gets its executable named.
    static META: RefCell<deadline::Pool> =
        const { RefCell::new(deadline::Pool::new("reading /proc/PID/stat and exe", 4)) };
    static CMDLINE: RefCell<deadline::Pool> =
        const { RefCell::new(deadline::Pool::new("reading /proc/PID/cmdline", 4)) };
}

/// What is kept of a command line, as the kernel's exec record keeps it:
/// the first words, each cut to this many bytes.
pub const MAX_ARGS: usize = ARG_SLOTS;
pub const MAX_ARG_BYTES: usize = ARG_LEN - 1;
/// Bytes of /proc/PID/cmdline read at most.
const CMDLINE_READ: u64 = 16 * 1024;

/// Where a [`Process`]'s description came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessOrigin {
    /// /proc/PID, read while the process lived.
    Proc,
    /// The kernel's fork/exec record (the process had exited or its pid
    /// had been reused). argv is truncated to a few words.
    ExecRecord,
    /// Only the thread name the socket hook saw.
    Comm,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// Absolute path of the executable, symlinks resolved when known.
    pub exe: Option<String>,
    /// argv.
    pub args: Vec<String>,
    /// The kernel's `comm` (at most 15 bytes).
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
    /// from the executable's name.
    pub(crate) fn example(exe: &str, args: &[&str]) -> Process {
        Process {
            pid: 4490,
            ppid: 2817,
            uid: 0,
            exe: Some(exe.into()),
            args: args.iter().map(|a| a.to_string()).collect(),
            comm: exe
                .rsplit('/')
                .next()
                .unwrap_or(exe)
                .chars()
                .take(15)
                .collect(),
            origin: ProcessOrigin::Proc,
        }
    }
}

/// Bounded in entries and bytes: when full it is emptied, and live
/// processes are read again.
const CACHE_CAPACITY: usize = 8192;
const CACHE_BYTES: usize = 4 << 20;

pub struct ProcessCache {
    map: HashMap<(u32, u64), Arc<Process>>,
    bytes: usize,
    ticks_ns: u64,
}

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
        }
    }

    /// Names the process that owned a socket. On a cache hit: a hash
    /// lookup and a reference count, nothing else.
    pub fn resolve(&mut self, owner: &Owner, store: &impl OwnerStore) -> Arc<Process> {
        let key = (owner.pid, owner.start_ns);
        if let Some(p) = self.map.get(&key) {
            return p.clone();
        }
        let p = Arc::new(self.describe(owner, store));
        self.insert(key, p.clone());
        p
    }

    /// Names a process found through /proc (the fallback): whatever lives
    /// at that pid now.
    pub fn resolve_live(&mut self, pid: u32, uid: u32) -> Arc<Process> {
        match read_proc(pid, uid) {
            Some((p, _, _)) => Arc::new(p),
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

    fn describe(&self, owner: &Owner, store: &impl OwnerStore) -> Process {
        let current = store.process_start(owner.pid);
        // Does this pid still belong to the incarnation that owned the
        // socket? Known exactly for processes appfw saw start; for older
        // ones (start 0) there must be no newer incarnation on record.
        let same = match current {
            Some(c) => c == owner.start_ns,
            None => owner.start_ns == 0,
        };
        let record = || store.process(&ProcKey::new(owner.pid, owner.start_ns));
        if same {
            if let Some((mut live, start_ns, args_read)) = read_proc(owner.pid, owner.uid) {
                // Re-check after reading: the process may have exited and
                // its pid been reused meanwhile. /proc's start time has
                // clock-tick resolution, rounded down, so a process that
                // began after the socket was recorded cannot pass.
                let reused = store.process_start(owner.pid) != current
                    || start_ns.saturating_mul(self.ticks_ns) > owner.ktime_ns;
                if !reused {
                    if live.ppid == 0 {
                        live.ppid = record().map(|r| r.ppid).unwrap_or(0);
                    }
                    if !args_read {
                        live.args = record().map(|r| record_args(&r)).unwrap_or_default();
                    }
                    live.comm = comm(owner);
                    return live;
                }
            }
        }
        if owner.start_ns != 0 {
            if let Some(rec) = record() {
                if rec.filename[0] != 0 {
                    return from_record(owner, &rec);
                }
                // Forked but never exec'd under appfw's eyes: the parent's
                // executable, if the parent still runs.
                if let Some((parent, _, _)) = read_proc(rec.ppid, owner.uid) {
                    return Process {
                        pid: owner.pid,
                        ppid: rec.ppid,
                        uid: owner.uid,
                        exe: parent.exe,
                        args: Vec::new(),
                        comm: comm(owner),
                        origin: ProcessOrigin::ExecRecord,
                    };
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

fn from_record(owner: &Owner, rec: &ProcRecord) -> Process {
    let filename = c_str(&rec.filename);
    // execve got the path as the caller wrote it; /proc/PID/exe would show
    // it with symlinks resolved, so resolve it the same way.
    // Resolving walks a path a user chose (a FUSE mount could stall it).
    let exe = if filename.starts_with('/') {
        let path = filename.clone();
        deadline::run(&META, PROC_DEADLINE, move || fs::canonicalize(path))
            .and_then(Result::ok)
            .and_then(|p| p.to_str().map(str::to_owned))
            .unwrap_or(filename)
    } else {
        filename
    };
    Process {
        pid: owner.pid,
        ppid: rec.ppid,
        uid: owner.uid,
        exe: Some(exe),
        args: record_args(rec),
        comm: comm(owner),
        origin: ProcessOrigin::ExecRecord,
    }
}

fn record_args(rec: &ProcRecord) -> Vec<String> {
    let argc = (rec.argc as usize).min(rec.args.len());
    rec.args[..argc].iter().map(|a| c_str(a)).collect()
}

/// Reads /proc/PID: the description, the start time in clock ticks, and
/// whether a command line was read. Each read runs with a deadline off
/// this thread. `None` when the process is gone, a zombie (an exited
/// process not reaped yet has /proc/PID but no executable), or too slow.
fn read_proc(pid: u32, uid: u32) -> Option<(Process, u64, bool)> {
    let (exe, ppid, comm, start) = deadline::run(&META, PROC_DEADLINE, move || {
        let proc = procfs::process::Process::new(pid as i32).ok()?;
        let stat = proc.stat().ok()?;
        let exe = exe_text(&proc.exe().ok()?);
        Some((exe, stat.ppid, stat.comm, stat.starttime))
    })??;
    // Empty when the process exited after its executable was read (a
    // sender that quits at once) or blanked its argv: the exec record has
    // what it was started with.
    let args =
        deadline::run(&CMDLINE, PROC_DEADLINE, move || read_cmdline(pid)).filter(|a| !a.is_empty());
    let args_read = args.is_some();
    Some((
        Process {
            pid,
            ppid: u32::try_from(ppid).unwrap_or(0),
            uid,
            exe: Some(exe),
            args: args.unwrap_or_default(),
            comm,
            origin: ProcessOrigin::Proc,
        },
        start,
        args_read,
    ))
}

/// The first [`MAX_ARGS`] words of /proc/PID/cmdline, each cut to
/// [`MAX_ARG_BYTES`]; an unreadable file is an empty command line.
fn read_cmdline(pid: u32) -> Vec<String> {
    let mut bytes = Vec::new();
    let read = fs::File::open(format!("/proc/{pid}/cmdline"))
        .and_then(|f| f.take(CMDLINE_READ).read_to_end(&mut bytes));
    match read {
        Ok(_) => split_cmdline(&bytes),
        Err(_) => Vec::new(),
    }
}

/// NUL-separated words -> at most [`MAX_ARGS`] words of at most
/// [`MAX_ARG_BYTES`] bytes (cut on a character boundary).
pub fn split_cmdline(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .take(MAX_ARGS)
        .map(|w| {
            let mut s = String::from_utf8_lossy(&w[..w.len().min(MAX_ARG_BYTES + 3)]).into_owned();
            let mut end = s.len().min(MAX_ARG_BYTES);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.shrink_to_fit();
            s
        })
        .collect()
}

/// /proc/PID/exe of a replaced or deleted binary ends in " (deleted)"; the
/// path is still the one a policy names.
fn exe_text(p: &Path) -> String {
    let s = p.to_string_lossy();
    s.strip_suffix(" (deleted)").unwrap_or(&s).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_are_capped_in_words_and_bytes() {
        assert_eq!(
            split_cmdline(b"curl\0-sS\0http://x/\0"),
            ["curl", "-sS", "http://x/"]
        );
        assert!(split_cmdline(b"").is_empty());
        let mut long = Vec::new();
        for _ in 0..1000 {
            long.extend_from_slice(&[b'a'; 5000]);
            long.push(0);
        }
        let args = split_cmdline(&long);
        assert_eq!(args.len(), MAX_ARGS);
        assert!(args.iter().all(|a| a.len() == MAX_ARG_BYTES));
        // Cut on a character boundary: 62 'x' then a 2-byte character.
        let mut w = vec![b'x'; 62];
        w.extend_from_slice("é".as_bytes());
        assert_eq!(split_cmdline(&w), ["x".repeat(62)]);
        // Invalid UTF-8 is replaced, still within the cap.
        assert!(split_cmdline(&[0xff; 200])[0].len() <= MAX_ARG_BYTES);
    }

    #[test]
    fn own_process_is_read_with_a_capped_command_line() {
        let (p, _, args_read) = read_proc(std::process::id(), 0).expect("this process");
        assert!(args_read);
        assert!(p.exe.as_deref().is_some_and(|e| e.starts_with('/')));
        assert!(!p.args.is_empty() && p.args.len() <= MAX_ARGS);
        assert!(p.args.iter().all(|a| a.len() <= MAX_ARG_BYTES));
    }

    #[test]
    fn a_stalled_command_line_is_named_from_the_exec_record() {
        use crate::attribution::tests::{owner, record, MemStore};
        // Every cmdline worker of this thread stuck in a fake slow read
        // (each test runs on its own thread, with its own pools).
        for _ in 0..4 {
            let late = deadline::run(&CMDLINE, Duration::from_millis(10), || {
                std::thread::sleep(Duration::from_secs(3))
            });
            assert!(late.is_none());
        }
        let start = std::time::Instant::now();
        let (p, _, args_read) = read_proc(std::process::id(), 0).expect("this process");
        assert!(
            start.elapsed() < PROC_DEADLINE,
            "a stuck pool must answer at once"
        );
        assert!(!args_read && p.args.is_empty());
        assert!(p.exe.is_some(), "the executable is still read");

        let pid = std::process::id();
        let mut store = MemStore::default();
        store.starts.insert(pid, 100);
        store.procs.borrow_mut().insert(
            ProcKey::new(pid, 100),
            record(100, 1, "/nonexistent/recorded", &["recorded", "argv"]),
        );
        let o = owner(pid, 100, u64::MAX / 2);
        let p = ProcessCache::new().resolve(&o, &store);
        assert_eq!(p.origin, ProcessOrigin::Proc);
        assert_ne!(p.exe.as_deref(), Some("/nonexistent/recorded"));
        assert_eq!(
            p.args,
            ["recorded", "argv"],
            "argv from the kernel's exec record"
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
