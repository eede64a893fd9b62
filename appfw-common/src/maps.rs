//! Map names and capacities, shared so that both sides agree.

/// Flow (tuple + netns) -> [`crate::Owner`]: TCP connects, UDP sends, and
/// connected UDP sockets at close.
pub const FLOWS: &str = "APPFW_FLOWS";
pub const FLOWS_CAPACITY: u32 = 16_384;

/// Socket cookie -> [`crate::Owner`] of every live socket: who created it
/// (`sock_create`), replaced by who connected it (`connect4/6`) or sent
/// from it as another process (`sendmsg4/6`).
pub const SOCKETS: &str = "APPFW_SOCKETS";
pub const SOCKETS_CAPACITY: u32 = 65_536;

/// Socket cookie -> [`crate::Owner`] of sockets that closed (moved there
/// from [`SOCKETS`] at close): a datagram may still wait in the queue.
pub const CLOSED_SOCKETS: &str = "APPFW_CLOSED_SOCKETS";
pub const CLOSED_SOCKETS_CAPACITY: u32 = 65_536;

/// Socket cookie -> [`crate::SocketVerdict`]: what netfilter applies to the
/// socket's packets without asking the daemon.
pub const VERDICTS: &str = "APPFW_VERDICTS";
pub const VERDICTS_CAPACITY: u32 = 65_536;

/// [`crate::ProcKey`] -> [`crate::ProcVerdict`]: the verdict the daemon
/// made for a process incarnation, given by the socket filters to its new
/// sockets. Deleted at exec and exit; LRU, so an entry of a process that
/// exited unseen (or a flood of processes) costs only a trip through the
/// queue.
pub const PROC_VERDICTS: &str = "APPFW_PROC_VERDICTS";
pub const PROC_VERDICTS_CAPACITY: u32 = 16_384;

/// Ring buffer of [`crate::KernelVerdictEvent`]s: process verdicts the
/// kernel gave to new sockets, when the daemon asked for a report.
pub const KERNEL_VERDICT_EVENTS: &str = "APPFW_KERNEL_VERDICT_EVENTS";
pub const KERNEL_VERDICT_EVENTS_BYTES: u32 = 1024 * 1024;

/// [`crate::PacketKey`] -> [`crate::QueuedPacket`] of the packets sent to
/// the queue.
/// Holds more than the queue does, so a packet's entry outlives its wait.
pub const QUEUED: &str = "APPFW_QUEUED";
pub const QUEUED_CAPACITY: u32 = 32_768;

/// Settings the daemon changes while running (an array of u32, indexed by
/// `crate::verdict::SETTING_*`).
pub const SETTINGS: &str = "APPFW_SETTINGS";
pub const SETTINGS_COUNT: u32 = 1;

/// The socket filters appfw's netfilter chain matches with (`-m bpf
/// --object-pinned`), pinned under the instance's bpffs directory by these
/// names.
pub mod filters {
    pub const ACCEPT: &str = "appfw_sk_accept";
    pub const DROP: &str = "appfw_sk_drop";
    pub const REJECT: &str = "appfw_sk_reject";
    pub const QUEUE: &str = "appfw_sk_queue";
    pub const KERNEL: &str = "appfw_sk_kernel";
}

/// tgid -> start of its current incarnation ([`crate::ProcKey::start_ns`]),
/// live processes only (deleted at exit).
pub const PROC_START: &str = "APPFW_PROC_START";
pub const PROC_START_CAPACITY: u32 = 32_768;

/// [`crate::ProcKey`] -> [`crate::ProcRecord`] of live processes: a plain
/// hash (no eviction), each record deleted when its process exits, so a
/// flood of short-lived processes cannot push out a live one. When full, a
/// new process gets no record (counted as `map_update_failed`) and is
/// named through /proc.
pub const PROCS: &str = "APPFW_PROCS";
pub const PROCS_CAPACITY: u32 = 16_384;

/// [`crate::ProcKey`] -> [`crate::ProcRecord`] of exited processes, moved
/// here at exit so that a datagram still queued is named. LRU: the oldest
/// go first; a packet whose record was evicted is counted by the daemon.
pub const EXITED: &str = "APPFW_EXITED";
pub const EXITED_CAPACITY: u32 = 4_096;

/// Ring buffer of [`SocketEvent`]s, written only when [`EMIT_EVENTS`] is
/// set (by `appfw trace`).
pub const EVENTS: &str = "APPFW_EVENTS";
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// Per-CPU counters, indexed by [`counter`].
pub const COUNTERS: &str = "APPFW_COUNTERS";

/// Global set at load: the netns cookie whose sockets are recorded
/// (0 records every namespace).
pub const FILTER_NETNS: &str = "APPFW_FILTER_NETNS";
/// Global set at load: non-zero makes the hooks emit [`SocketEvent`]s.
pub const EMIT_EVENTS: &str = "APPFW_EMIT_EVENTS";
/// Global set at load: [`crate::KernelOffsets`] from the kernel's BTF.
pub const KERNEL_OFFSETS: &str = "APPFW_KERNEL_OFFSETS";

/// Indexes into [`COUNTERS`].
pub mod counter {
    pub const TCP_CONNECT: u32 = 0;
    pub const UDP_SENDMSG: u32 = 1;
    pub const CONNECT: u32 = 2;
    pub const UDP_RELEASE: u32 = 3;
    pub const EXEC: u32 = 4;
    pub const FORK: u32 = 5;
    /// A map update failed (the map was full of locked entries, or memory).
    pub const MAP_UPDATE_FAILED: u32 = 6;
    /// sock_ops found no connect-time owner and used the current task.
    pub const TCP_WITHOUT_CONNECT: u32 = 7;
    /// Events lost because the ring buffer was full.
    pub const EVENTS_LOST: u32 = 8;
    /// Process records moved to the exited map at exit.
    pub const EXIT: u32 = 9;
    /// An exec whose executed file (device, inode) could not be read: that
    /// process has no kernel identity.
    pub const IDENTITY_UNREAD: u32 = 10;
    /// An exec whose argv could not be read from the new program's memory.
    pub const ARGS_UNREAD: u32 = 11;
    /// Sockets created (`sock_create`).
    pub const SOCKET_CREATED: u32 = 12;
    /// Packets sent to the queue (the filter in front of it).
    pub const QUEUED: u32 = 13;
    /// Packets decided in the kernel by a socket's verdict.
    pub const SOCKET_VERDICT: u32 = 14;
    /// New sockets decided in the kernel by their process's verdict: flows
    /// that never went through the queue.
    pub const PROCESS_VERDICT: u32 = 15;
    /// Kernel verdict events lost because their ring buffer was full (the
    /// verdict held; only its report is missing).
    pub const VERDICT_EVENTS_LOST: u32 = 16;
    pub const COUNT: u32 = 17;

    /// Names, for reports.
    pub const NAMES: [&str; COUNT as usize] = [
        "tcp_connect",
        "udp_sendmsg",
        "connect",
        "udp_release",
        "exec",
        "fork",
        "map_update_failed",
        "tcp_without_connect",
        "events_lost",
        "exit",
        "identity_unread",
        "args_unread",
        "socket_created",
        "queued",
        "socket_verdict",
        "process_verdict",
        "verdict_events_lost",
    ];
}

/// What the kernel tells `appfw trace` about a new socket.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketEvent {
    pub key: crate::FlowKey,
    pub owner: crate::Owner,
}
