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
/// Bytes of the executed path kept per exec.
pub const FILENAME_LEN: usize = 256;
/// Bytes of argv kept per exec (the words, each NUL-terminated, as
/// /proc/PID/cmdline shows them).
pub const ARGS_LEN: usize = 384;
/// argv words the daemon keeps per process (from a record or from /proc).
pub const ARG_WORDS: usize = 16;

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

/// Where a [`ProcRecord`]'s executable identity came from.
pub mod exe_source {
    /// Not read (offsets unknown, or the read failed).
    pub const NONE: u8 = 0;
    /// The exec itself: the file the kernel executed (`mm->exe_file`).
    pub const EXEC: u8 = 1;
    /// A fork from a process appfw never saw exec: the parent's
    /// `mm->exe_file`, which the child shares until it execs.
    pub const FORK: u8 = 2;
    /// A process older than appfw, recorded by the daemon at load so that
    /// its incarnation has a start: no executable identity here (it is
    /// named through /proc), and a child it forks reads its own.
    pub const SEEDED: u8 = 3;
}

/// What the kernel saw when a process was forked or exec'd: the file it
/// executes, and enough to name it after it has exited and /proc/PID is
/// gone. Integers in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcRecord {
    pub start_ns: u64,
    /// Inode number of the executed file (`mm->exe_file->f_inode->i_ino`);
    /// meaningful when `exe_source` is not [`exe_source::NONE`].
    pub ino: u64,
    /// Parent's tgid at fork; carried over an exec.
    pub ppid: u32,
    /// Device of the executed file's filesystem, in the kernel's encoding
    /// (`sb->s_dev`: major << 20 | minor), not the userspace `st_dev` one.
    pub dev: u32,
    /// Bytes of `args` filled.
    pub args_len: u32,
    /// Non-zero when argv was longer than [`ARGS_LEN`] bytes.
    pub args_truncated: u8,
    /// One of [`exe_source`].
    pub exe_source: u8,
    pub _pad: [u8; 2],
    /// The path the kernel executed, NUL-terminated: for a `#!` script the
    /// interpreter's path (`bprm->interp`); empty after a fork. For display
    /// only: it is a path in the process's mount namespace.
    pub filename: [u8; FILENAME_LEN],
    /// argv as the new program's memory holds it at exec
    /// (`mm->arg_start..arg_end`): NUL-separated words, for a script
    /// `[interpreter, script, args...]`.
    pub args: [u8; ARGS_LEN],
}

/// Byte offsets of the kernel struct members the exec hook follows, read
/// from the kernel's BTF by the daemon and set as a global at load (they
/// change with every kernel build). All zero: not set, nothing is read.
/// Host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_mm: u32,
    pub mm_exe_file: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub file_f_inode: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
    pub bprm_interp: u32,
    /// Offset of `group_dead` in the sched_process_exit tracepoint record;
    /// 0 when this kernel's record has none (then the leader's exit counts).
    pub exit_group_dead: u32,
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
            8 + 8 + 4 + 4 + 4 + 1 + 1 + 2 + FILENAME_LEN + ARGS_LEN
        );
        assert_eq!(size_of::<ProcRecord>() % 8, 0);
        assert_eq!(size_of::<KernelOffsets>(), 10 * 4);
    }
}
