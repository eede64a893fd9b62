//! Naming processes: pid -> executable, command line, parent.
//!
//! A pid is reused once its process exits, so everything is keyed by
//! process *incarnation*: (pid, start), where start is the `CLOCK_BOOTTIME`
//! of the fork or exec that began it, as the eBPF tracepoints recorded it
//! (0 for processes older than appfw). /proc/PID is read once per
//! incarnation, and only trusted when that pid still is the incarnation that
//! owned the socket; otherwise the kernel's exec record names it.

use std::{collections::HashMap, fs, path::Path, sync::Arc};

use appfw_common::{Owner, ProcKey, ProcRecord};

use super::OwnerStore;
use crate::system;

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

/// Bounded: when full it is emptied, and live processes are read again.
const CACHE_CAPACITY: usize = 8192;

pub struct ProcessCache {
    map: HashMap<(u32, u64), Arc<Process>>,
    ticks_ns: u64,
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
            Some((p, _)) => Arc::new(p),
            None => Arc::new(Process::unnamed(pid, uid, String::new())),
        }
    }

    fn insert(&mut self, key: (u32, u64), p: Arc<Process>) {
        if self.map.len() >= CACHE_CAPACITY {
            self.map.clear();
        }
        self.map.insert(key, p);
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
            if let Some((mut live, start_ns)) = read_proc(owner.pid, owner.uid) {
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
                if let Some((parent, _)) = read_proc(rec.ppid, owner.uid) {
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
    let exe = if filename.starts_with('/') {
        fs::canonicalize(&filename)
            .ok()
            .and_then(|p| p.to_str().map(str::to_owned))
            .unwrap_or(filename)
    } else {
        filename
    };
    let argc = (rec.argc as usize).min(rec.args.len());
    Process {
        pid: owner.pid,
        ppid: rec.ppid,
        uid: owner.uid,
        exe: Some(exe),
        args: rec.args[..argc].iter().map(|a| c_str(a)).collect(),
        comm: comm(owner),
        origin: ProcessOrigin::ExecRecord,
    }
}

/// Reads /proc/PID: the description and the start time in clock ticks.
/// `None` when the process is gone, or a zombie: an exited process that
/// is not reaped yet still has /proc/PID, but no executable or argv.
fn read_proc(pid: u32, uid: u32) -> Option<(Process, u64)> {
    let proc = procfs::process::Process::new(pid as i32).ok()?;
    let stat = proc.stat().ok()?;
    let exe = Some(exe_text(&proc.exe().ok()?));
    let args = proc.cmdline().unwrap_or_default();
    Some((
        Process {
            pid,
            ppid: u32::try_from(stat.ppid).unwrap_or(0),
            uid,
            exe,
            args,
            comm: stat.comm,
            origin: ProcessOrigin::Proc,
        },
        stat.starttime,
    ))
}

/// /proc/PID/exe of a replaced or deleted binary ends in " (deleted)"; the
/// path is still the one a policy names.
fn exe_text(p: &Path) -> String {
    let s = p.to_string_lossy();
    s.strip_suffix(" (deleted)").unwrap_or(&s).to_owned()
}
