//! What appfw needs from the machine before it can load anything: root,
//! tracefs, a cgroup v2 hierarchy, the current network namespace's cookie.
//!
//! `ip netns exec NS appfw` gives appfw a private mount namespace with a
//! fresh /sys in which neither tracefs nor cgroup2 is mounted, so appfw
//! mounts what is missing itself; inside that private namespace the mounts
//! vanish with the process.

use std::{
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SystemError {
    #[error("appfw must run as root (it loads eBPF programs and manages netfilter rules); try: sudo appfw ...")]
    NotRoot,
    #[error("tracefs is not mounted and mounting it at {path} failed: {source}. Mount it by hand: mount -t tracefs tracefs {path}")]
    MountTracefs { path: String, source: io::Error },
    #[error("reading /proc/self/mountinfo failed: {0}")]
    MountInfo(#[source] procfs::ProcError),
    #[error("no cgroup v2 hierarchy is mounted and mounting one at {path} failed: {source}. This kernel may lack cgroup v2 (CONFIG_CGROUP_BPF); mount it by hand: mount -t cgroup2 none {path}")]
    MountCgroup2 { path: String, source: io::Error },
    #[error("no bpf filesystem is mounted and mounting one at {path} failed: {source}. Mount it by hand: mount -t bpf bpf {path}")]
    MountBpffs { path: String, source: io::Error },
    #[error("opening the cgroup v2 root {path} failed: {source}")]
    OpenCgroup { path: String, source: io::Error },
    #[error("reading this network namespace's cookie (SO_NETNS_COOKIE) failed: {0}. appfw needs Linux 5.7 or newer")]
    NetnsCookie(#[source] io::Error),
}

pub fn require_root() -> Result<(), SystemError> {
    if !rustix::process::geteuid().is_root() {
        return Err(SystemError::NotRoot);
    }
    Ok(())
}

/// Where tracefs is mounted, mounting it if needed. aya looks in these two
/// places and caches the answer on first use, so this must run before any
/// tracepoint is attached.
pub fn ensure_tracefs() -> Result<(), SystemError> {
    let mounted = || {
        ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .iter()
            .any(|dir| dir_has_entries(Path::new(dir)))
    };
    let path = "/sys/kernel/tracing";
    mount_once("tracefs", Path::new(path), "tracefs", mounted).map_err(|source| {
        SystemError::MountTracefs {
            path: path.into(),
            source,
        }
    })
}

/// Mounts `fstype` on `target` unless `mounted()` already holds. Another
/// appfw (or a test) starting at the same moment may win the race: the
/// kernel then answers EBUSY ("this filesystem is already mounted here"),
/// and whatever the error, a mount that exists afterwards is used.
fn mount_once(
    source: &str,
    target: &Path,
    fstype: &str,
    mounted: impl Fn() -> bool,
) -> io::Result<()> {
    if mounted() {
        return Ok(());
    }
    let err = match mount(source, target, fstype) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    // The winner's mount may become visible a moment after its mount(2)
    // returned to it; EBUSY is only ever that race, so it is waited out.
    let attempts = if err.raw_os_error() == Some(libc::EBUSY) {
        50
    } else {
        1
    };
    for _ in 0..attempts {
        if mounted() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(err)
}

/// A cgroup v2 root: the mount point and an open directory handle.
pub struct Cgroup2 {
    pub path: PathBuf,
    pub dir: std::fs::File,
}

/// Where a bpf filesystem is mounted (the first in /proc/self/mountinfo),
/// mounting one at /sys/fs/bpf if there is none: appfw pins the socket
/// filters its netfilter rules use there.
pub fn bpffs() -> Result<PathBuf, SystemError> {
    let find = || -> Result<Option<PathBuf>, SystemError> {
        let me = procfs::process::Process::myself().map_err(SystemError::MountInfo)?;
        let infos = me.mountinfo().map_err(SystemError::MountInfo)?;
        Ok(infos
            .into_iter()
            .find(|m| m.fs_type == "bpf")
            .map(|m| m.mount_point))
    };
    if let Some(p) = find()? {
        return Ok(p);
    }
    let path = PathBuf::from("/sys/fs/bpf");
    let err = |source| SystemError::MountBpffs {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&path).map_err(err)?;
    mount_once("bpf", &path, "bpf", || matches!(find(), Ok(Some(_)))).map_err(err)?;
    Ok(find()?.unwrap_or(path))
}

/// Removes the pin directories (`appfw-<netns>-<pid>`) of appfw instances
/// that no longer run (killed with SIGKILL), which would otherwise keep
/// their programs and maps in the kernel.
pub fn remove_stale_pins(bpffs: &Path) {
    let Ok(dir) = std::fs::read_dir(bpffs) else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("appfw-"))
            .and_then(|rest| rest.rsplit('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Where appfw mounts cgroup v2 when none is mounted.
const CGROUP2_MOUNT: &str = "/run/appfw/cgroup2";

/// Finds the cgroup v2 hierarchy in /proc/self/mountinfo (it is at
/// /sys/fs/cgroup on unified systems, /sys/fs/cgroup/unified on hybrid
/// ones), or mounts one under /run/appfw.
pub fn cgroup2_root() -> Result<Cgroup2, SystemError> {
    let path = match find_cgroup2()? {
        Some(p) => p,
        None => {
            let path = PathBuf::from(CGROUP2_MOUNT);
            let err = |source| SystemError::MountCgroup2 {
                path: path.display().to_string(),
                source,
            };
            std::fs::create_dir_all(&path).map_err(err)?;
            let mounted = || matches!(find_cgroup2(), Ok(Some(_)));
            mount_once("cgroup2", &path, "cgroup2", mounted).map_err(err)?;
            find_cgroup2()?.unwrap_or(path)
        }
    };
    let dir = std::fs::File::open(&path).map_err(|source| SystemError::OpenCgroup {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Cgroup2 { path, dir })
}

fn find_cgroup2() -> Result<Option<PathBuf>, SystemError> {
    let me = procfs::process::Process::myself().map_err(SystemError::MountInfo)?;
    let infos = me.mountinfo().map_err(SystemError::MountInfo)?;
    // A cgroup namespace or a bind mount shows a root other than "/": such a
    // mount is not the root of the hierarchy, so programs attached there
    // would miss processes outside it.
    Ok(infos
        .into_iter()
        .find(|m| m.fs_type == "cgroup2" && m.root == "/")
        .map(|m| m.mount_point))
}

fn dir_has_entries(path: &Path) -> bool {
    std::fs::read_dir(path)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

fn mount(source: &str, target: &Path, fstype: &str) -> io::Result<()> {
    rustix::mount::mount(
        source,
        target,
        fstype,
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(io::Error::from)
}

/// `SO_NETNS_COOKIE` (Linux 5.14 for getsockopt); not in every libc.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the network namespace this thread is in: the value the
/// eBPF hooks put into every flow key.
pub fn netns_cookie() -> Result<u64, SystemError> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")
        .or_else(|_| std::net::UdpSocket::bind("[::]:0"))
        .map_err(SystemError::NetnsCookie)?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid fd and an out-buffer of the size passed.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(SystemError::NetnsCookie(io::Error::last_os_error()));
    }
    Ok(cookie)
}

/// Clock ticks per second, for /proc/PID/stat times.
pub fn clock_ticks() -> u64 {
    rustix::param::clock_ticks_per_second()
}

/// `CLOCK_BOOTTIME` now, in ns: the clock of the eBPF records.
pub fn boottime_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
