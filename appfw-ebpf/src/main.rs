//! appfw's kernel programs: the index of hooks.
//!
//! Each hook is a thin wrapper; what it records lives in a module named
//! after the traffic it sees. All hooks run in the context of the process
//! that owns the socket, before its first packet reaches netfilter, which is
//! what makes the daemon's later lookup race-free.
//!
//! Kernel versions are the minimum for each program type and the helpers it
//! uses; appfw is tested on 6.18.
#![no_std]
#![no_main]

mod dns;
mod exec;
mod maps;
mod owner;
mod socket;
mod tcp;
mod udp;
mod verdict;

use appfw_common::verdict::action;
use aya_ebpf::{
    macros::{
        cgroup_skb, cgroup_sock, cgroup_sock_addr, raw_tracepoint, sock_ops, socket_filter,
        tracepoint,
    },
    programs::{
        RawTracePointContext, SkBuffContext, SockAddrContext, SockContext, SockOpsContext,
        TracePointContext,
    },
};

/// Any new socket of a process: socket cookie -> its creator. Linux 5.7.
#[cgroup_sock(sock_create)]
pub fn appfw_sock_create(ctx: SockContext) -> i32 {
    socket::created(&ctx)
}

/// Any connect(): socket cookie -> owner. Linux 5.7 (netns cookie).
#[cgroup_sock_addr(connect4)]
pub fn appfw_connect4(ctx: SockAddrContext) -> i32 {
    udp::connected(&ctx, appfw_common::flow::AF_INET)
}

/// As `appfw_connect4`, for IPv6 sockets. Linux 5.7.
#[cgroup_sock_addr(connect6)]
pub fn appfw_connect6(ctx: SockAddrContext) -> i32 {
    udp::connected(&ctx, appfw_common::flow::AF_INET6)
}

/// UDP sent with an address: full tuple with the local port. Linux 5.7.
#[cgroup_sock_addr(sendmsg4)]
pub fn appfw_udp_sendmsg4(ctx: SockAddrContext) -> i32 {
    udp::sendmsg(&ctx, appfw_common::flow::AF_INET)
}

/// As `appfw_udp_sendmsg4`, for IPv6 sockets. Linux 5.7.
#[cgroup_sock_addr(sendmsg6)]
pub fn appfw_udp_sendmsg6(ctx: SockAddrContext) -> i32 {
    udp::sendmsg(&ctx, appfw_common::flow::AF_INET6)
}

/// Socket closed: a connected UDP socket's flow is recorded now, while its
/// local port is still known. Linux 5.9 (sock_release attach type).
#[cgroup_sock(sock_release)]
pub fn appfw_sock_release(ctx: SockContext) -> i32 {
    udp::released(&ctx)
}

/// A packet received: DNS answers (UDP and TCP from port 53) are copied
/// for the daemon. Linux 5.8 (ring buffer).
#[cgroup_skb(ingress)]
pub fn appfw_dns_answer(ctx: SkBuffContext) -> i32 {
    dns::answer_in(&ctx)
}

/// TCP connect: the full tuple, local port included, before the SYN is
/// queued. Linux 5.15 (netns cookie in sock_ops).
#[sock_ops]
pub fn appfw_tcp_connect(ctx: SockOpsContext) -> u32 {
    tcp::sock_ops(&ctx)
}

/// New process (not a thread): start of an incarnation, parent link.
#[tracepoint]
pub fn appfw_task_newtask(ctx: TracePointContext) -> u32 {
    exec::newtask(&ctx)
}

/// Successful exec: the executed file (device, inode), its path and argv,
/// new incarnation. A raw tracepoint, for `bprm` (the plain tracepoint's
/// record has only the path given to execve, a script's path for a script).
/// Linux 4.17 (raw tracepoints).
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn appfw_process_exec(ctx: RawTracePointContext) -> i32 {
    exec::process_exec(&ctx) as i32
}

/// A task exited: the last one of a process retires its record.
#[tracepoint]
pub fn appfw_process_exit(ctx: TracePointContext) -> u32 {
    exec::process_exit(&ctx)
}

// The socket filters appfw's netfilter chain runs (`-m bpf
// --object-pinned`, Linux 4.10); their names are `appfw_common::maps::filters`.

/// Matches packets of sockets the daemon accepted.
#[socket_filter]
pub fn appfw_sk_accept(ctx: SkBuffContext) -> i64 {
    verdict::socket_has(&ctx, action::ACCEPT)
}

/// Matches packets of sockets the daemon dropped.
#[socket_filter]
pub fn appfw_sk_drop(ctx: SkBuffContext) -> i64 {
    verdict::socket_has(&ctx, action::DROP)
}

/// Matches packets of sockets the daemon rejected.
#[socket_filter]
pub fn appfw_sk_reject(ctx: SkBuffContext) -> i64 {
    verdict::socket_has(&ctx, action::REJECT)
}

/// Matches packets the kernel sends of its own accord (see the rules).
#[socket_filter]
pub fn appfw_sk_kernel(ctx: SkBuffContext) -> i64 {
    verdict::kernel_sent(&ctx)
}

/// In front of NFQUEUE: records the packet's socket, always matches.
#[socket_filter]
pub fn appfw_sk_queue(ctx: SkBuffContext) -> i64 {
    verdict::queued(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
