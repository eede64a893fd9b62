//! Who owns a socket, and what a process was when it started.

/// Which kernel hook recorded an [`Owner`].
pub mod hook {
    /// `sock_ops` at `BPF_SOCK_OPS_TCP_CONNECT_CB`: a TCP connect.
    pub const TCP_CONNECT: u8 = 1;
    /// `cgroup/sendmsg4|6`: a UDP datagram sent with an address.
    pub const UDP_SENDMSG: u8 = 2;
    /// `cgroup/connect4|6`: any connect (records socket cookie -> owner).
    pub const CONNECT: u8 = 3;
    /// `cgroup/sock_release`: a connected UDP socket closed; its flow is
    /// recorded then, so a datagram still queued can be attributed.
    pub const UDP_RELEASE: u8 = 4;
    /// `cgroup/sock_create`: the socket's creator (any protocol).
    pub const CREATE: u8 = 5;
}

/// Length of `comm` in the kernel (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;
/// Bytes of the executable path kept per exec.
pub const FILENAME_LEN: usize = 256;
/// How many argv words an exec record keeps...
pub const ARG_SLOTS: usize = 6;
/// ...and how many bytes of each (NUL included).
pub const ARG_LEN: usize = 64;

/// The owner of a socket, recorded in process context by a kernel hook.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Socket cookie (`bpf_get_socket_cookie`, `ss -e` "sk:").
    pub cookie: u64,
    /// `CLOCK_BOOTTIME` in nanoseconds when the hook ran.
    pub ktime_ns: u64,
    /// Start of the owning process incarnation ([`ProcKey::start_ns`]), or
    /// 0 when the process started before appfw was loaded.
    pub start_ns: u64,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// `comm` of the thread, NUL-padded.
    pub comm: [u8; COMM_LEN],
    /// One of [`hook`].
    pub hook: u8,
    pub _pad: [u8; 7],
}

/// Identifies one incarnation of a process: a pid is reused, the pair is not.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ProcKey {
    pub pid: u32,
    pub _pad: u32,
    /// `CLOCK_BOOTTIME` ns of the fork or exec that began this incarnation.
    pub start_ns: u64,
}

impl ProcKey {
    #[inline(always)]
    pub fn new(pid: u32, start_ns: u64) -> Self {
        ProcKey {
            pid,
            _pad: 0,
            start_ns,
        }
    }
}

/// What the kernel saw when a process was forked or exec'd: enough to name
/// it after it has exited and /proc/PID is gone.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcRecord {
    pub start_ns: u64,
    /// Parent's tgid at fork; carried over an exec.
    pub ppid: u32,
    /// argv words recorded in `args` (at most [`ARG_SLOTS`]).
    pub argc: u32,
    /// Non-zero when argv had more words than [`ARG_SLOTS`].
    pub args_truncated: u8,
    pub _pad: [u8; 7],
    /// The path given to execve, NUL-terminated; empty when the process
    /// was forked from one appfw never saw exec.
    pub filename: [u8; FILENAME_LEN],
    /// argv words, each NUL-terminated.
    pub args: [[u8; ARG_LEN]; ARG_SLOTS],
}

/// argv of an execve in progress, keyed by thread id until the exec
/// succeeds (then it moves into a [`ProcRecord`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecArgs {
    pub argc: u32,
    pub truncated: u32,
    pub args: [[u8; ARG_LEN]; ARG_SLOTS],
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<Owner>(), 8 * 3 + 4 * 4 + COMM_LEN + 8);
        assert_eq!(size_of::<ProcKey>(), 16);
        assert_eq!(
            size_of::<ProcRecord>(),
            8 + 4 + 4 + 8 + FILENAME_LEN + ARG_SLOTS * ARG_LEN
        );
        assert_eq!(size_of::<ExecArgs>(), 8 + ARG_SLOTS * ARG_LEN);
    }
}
