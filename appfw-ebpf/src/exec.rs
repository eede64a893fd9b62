//! Processes: when each incarnation began, its parent, executable and argv,
//! so that a process which exits before the daemon reads /proc is named.
//!
//! Offsets are those of the tracepoints' format files
//! (/sys/kernel/tracing/events/...), which are stable kernel ABI.

use appfw_common::{maps::counter, owner::ARG_SLOTS};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes,
    },
    programs::TracePointContext,
    EbpfContext,
};

use crate::{maps, owner};

/// task/task_newtask: `pid_t pid` at 8, `u64 clone_flags` at 32.
const NEWTASK_PID: usize = 8;
const NEWTASK_CLONE_FLAGS: usize = 32;
const CLONE_THREAD: u64 = 0x0001_0000;
/// syscalls/sys_enter_execve: `const char *const *argv` at 24.
pub const EXECVE_ARGV_OFFSET: usize = 24;
/// syscalls/sys_enter_execveat: `argv` at 32.
pub const EXECVEAT_ARGV_OFFSET: usize = 32;
/// sched/sched_process_exec: `__data_loc char[] filename` at 8,
/// `pid_t old_pid` at 16.
const EXEC_FILENAME_LOC: usize = 8;
const EXEC_OLD_PID: usize = 16;

pub fn newtask(ctx: &TracePointContext) -> u32 {
    // SAFETY: offsets from the tracepoint's format.
    let (flags, child) = unsafe {
        match (
            ctx.read_at::<u64>(NEWTASK_CLONE_FLAGS),
            ctx.read_at::<i32>(NEWTASK_PID),
        ) {
            (Ok(f), Ok(c)) => (f, c),
            _ => return 0,
        }
    };
    // A thread shares its process's identity; only processes are tracked.
    if flags & CLONE_THREAD != 0 {
        return 0;
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    maps::process_forked(parent, child as u32, owner::now());
    maps::count(counter::FORK);
    0
}

/// argv is read at syscall entry: by the time the exec succeeds the old
/// address space holding it is gone.
pub fn execve_enter(ctx: &TracePointContext, argv_offset: usize) -> u32 {
    // SAFETY: offset from the tracepoint's format.
    let argv = match unsafe { ctx.read_at::<*const *const u8>(argv_offset) } {
        Ok(p) if !p.is_null() => p,
        _ => return 0,
    };
    let Some(args) = maps::scratch_args() else {
        return 0;
    };
    args.argc = 0;
    args.truncated = 0;
    let mut i = 0;
    while i < ARG_SLOTS {
        // SAFETY: user memory is read through the checked helper.
        let word = unsafe { bpf_probe_read_user(argv.add(i)) }.unwrap_or(core::ptr::null());
        if word.is_null() {
            break;
        }
        // SAFETY: as above; the helper NUL-terminates within the slot.
        if unsafe { bpf_probe_read_user_str_bytes(word, &mut args.args[i]) }.is_err() {
            args.args[i][0] = 0;
        }
        args.argc = i as u32 + 1;
        i += 1;
    }
    if i == ARG_SLOTS {
        // SAFETY: as above.
        let more = unsafe { bpf_probe_read_user(argv.add(ARG_SLOTS)) }.unwrap_or(core::ptr::null());
        args.truncated = u32::from(!more.is_null());
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    maps::exec_started(tid, args);
    0
}

pub fn process_exec(ctx: &TracePointContext) -> u32 {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: offsets from the tracepoint's format.
    let (loc, old_pid) = unsafe {
        match (
            ctx.read_at::<u32>(EXEC_FILENAME_LOC),
            ctx.read_at::<i32>(EXEC_OLD_PID),
        ) {
            (Ok(l), Ok(o)) => (l, o as u32),
            _ => return 0,
        }
    };
    let Some(rec) = maps::scratch_proc() else {
        return 0;
    };
    rec.start_ns = owner::now();
    rec.ppid = maps::recorded_ppid(pid);
    rec.argc = 0;
    rec.args_truncated = 0;
    rec._pad = [0; 7];
    // The low 16 bits of a __data_loc are the string's offset in the record.
    // SAFETY: the string lies inside the tracepoint record; the helper
    // bounds and NUL-terminates the copy.
    let src = unsafe { (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize) };
    if unsafe { bpf_probe_read_kernel_str_bytes(src, &mut rec.filename) }.is_err() {
        rec.filename[0] = 0;
    }
    // A thread other than the leader that execs takes the leader's pid; its
    // argv was stored under its old thread id.
    if let Some(args) = maps::pending_args(old_pid) {
        // SAFETY: map value pointer, valid during this program.
        unsafe {
            rec.argc = (*args).argc;
            rec.args_truncated = (*args).truncated as u8;
            rec.args = (*args).args;
        }
        maps::forget_pending_args(old_pid);
    }
    maps::process_exec(pid, rec);
    maps::count(counter::EXEC);
    0
}
