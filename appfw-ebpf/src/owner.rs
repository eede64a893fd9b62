//! Building an `Owner` from the current task.

use appfw_common::Owner;
use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_ktime_get_boot_ns},
    },
    EbpfContext,
};

use crate::maps;

/// (netns cookie, socket cookie) of the socket a cgroup or sock_ops program
/// runs for; `None` when its namespace is not this instance's business.
#[inline(always)]
pub fn socket_of<C: EbpfContext>(ctx: &C) -> Option<(u64, u64)> {
    // SAFETY: both helpers take the program's own context, and exist for
    // sock_ops, cgroup sock_addr and cgroup sock programs.
    let (netns, cookie) = unsafe {
        (
            bpf_get_netns_cookie(ctx.as_ptr()),
            bpf_get_socket_cookie(ctx.as_ptr()),
        )
    };
    (!maps::netns_ignored(netns)).then_some((netns, cookie))
}

/// `CLOCK_BOOTTIME` in ns: comparable with /proc/PID/stat's start time.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments, allowed in every program type.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// The owner of a socket that the current task is acting on.
#[inline(always)]
pub fn current(cookie: u64, hook: u8) -> Owner {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let pid = (pid_tgid >> 32) as u32;
    Owner {
        cookie,
        ktime_ns: now(),
        start_ns: maps::process_start(pid),
        pid,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        hook,
        _pad: [0; 7],
    }
}
