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

/// tgid -> start of its current incarnation ([`crate::ProcKey::start_ns`]).
pub const PROC_START: &str = "APPFW_PROC_START";
pub const PROC_START_CAPACITY: u32 = 32_768;

/// [`crate::ProcKey`] -> [`crate::ProcRecord`].
pub const PROCS: &str = "APPFW_PROCS";
pub const PROCS_CAPACITY: u32 = 8_192;

/// tid -> [`crate::owner::ExecArgs`] between execve entry and success.
pub const PENDING_EXEC: &str = "APPFW_PENDING_EXEC";
pub const PENDING_EXEC_CAPACITY: u32 = 1_024;

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
    /// Sockets created (`sock_create`).
    pub const SOCKET_CREATED: u32 = 9;
    /// Packets sent to the queue (the filter in front of it).
    pub const QUEUED: u32 = 10;
    /// Packets decided in the kernel by a socket's verdict.
    pub const SOCKET_VERDICT: u32 = 11;
    pub const COUNT: u32 = 12;

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
        "socket_created",
        "queued",
        "socket_verdict",
    ];
}

/// What the kernel tells `appfw trace` about a new socket.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketEvent {
    pub key: crate::FlowKey,
    pub owner: crate::Owner,
}
