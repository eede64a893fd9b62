//! Processes: when each incarnation began, its parent, the file it
//! executes (device, inode, as the kernel saw it), its path and argv, so
//! that a process is named by what it runs, also after it exited.
//!
//! Kernel struct members are reached with `bpf_probe_read_kernel` at
//! offsets the daemon read from the kernel's BTF ([`maps::offsets`]);
//! tracepoint record offsets are those of the format files
//! (/sys/kernel/tracing/events/...), which are stable kernel ABI.

use appfw_common::{
    maps::counter,
    owner::{exe_source, ARGS_LEN},
    KernelOffsets,
};
use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes, generated::bpf_probe_read_user,
    },
    programs::{RawTracePointContext, TracePointContext},
};

use crate::{
    maps::{self, Scratch},
    owner,
};

/// task/task_newtask: `pid_t pid` at 8, `u64 clone_flags` at 32.
const NEWTASK_PID: usize = 8;
const NEWTASK_CLONE_FLAGS: usize = 32;
const CLONE_THREAD: u64 = 0x0001_0000;
/// Raw sched_process_exec: `(struct task_struct *p, pid_t old_pid, struct
/// linux_binprm *bprm)`.
const EXEC_ARG_BPRM: usize = 2;

/// A kernel value at `base + off`.
///
/// # Safety
///
/// None beyond the helper's: it checks the address and fails on a bad one.
#[inline(always)]
unsafe fn read<T>(base: *const u8, off: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel copies with fault handling.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize) as *const T).ok() }
}

/// A non-null kernel pointer at `base + off`.
#[inline(always)]
fn read_ptr(base: *const u8, off: u32) -> Option<*const u8> {
    // SAFETY: see `read`.
    let p: *const u8 = unsafe { read(base, off)? };
    (!p.is_null()).then_some(p)
}

/// The current task's `mm`, when the offsets are known.
#[inline(always)]
fn current_mm(o: &KernelOffsets) -> Option<*const u8> {
    if o.task_mm == 0 {
        return None;
    }
    // SAFETY: a helper without arguments, allowed in tracepoints.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    read_ptr(task, o.task_mm)
}

/// (`s_dev`, `i_ino`) of `mm->exe_file`: the file the process executes
/// (for a script, its interpreter), whatever path or mount led to it.
#[inline(always)]
fn exe_of(mm: *const u8, o: &KernelOffsets) -> Option<(u32, u64)> {
    let file = read_ptr(mm, o.mm_exe_file)?;
    let inode = read_ptr(file, o.file_f_inode)?;
    // SAFETY: see `read`.
    let ino: u64 = unsafe { read(inode, o.inode_i_ino)? };
    let sb = read_ptr(inode, o.inode_i_sb)?;
    // SAFETY: see `read`.
    let dev: u32 = unsafe { read(sb, o.sb_s_dev)? };
    (ino != 0).then_some((dev, ino))
}

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
    // The parent runs this hook: its executable is the child's.
    let o = maps::offsets();
    let exe = current_mm(&o).and_then(|mm| exe_of(mm, &o));
    maps::process_forked(parent, child as u32, owner::now(), exe);
    maps::count(counter::FORK);
    0
}

/// A successful exec, seen after the new program's memory is set up: the
/// executed file, the path the kernel used (`bprm->interp`: for a `#!`
/// script, the interpreter), and argv as the new program holds it.
pub fn process_exec(ctx: &RawTracePointContext) -> u32 {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let bprm: *const u8 = ctx.arg(EXEC_ARG_BPRM);
    let o = maps::offsets();
    // SAFETY: sched_process_exec's own slot, taken once in this run.
    let Some(rec) = (unsafe { maps::scratch_proc(Scratch::Exec) }) else {
        return 0;
    };
    rec.start_ns = owner::now();
    rec.ppid = maps::recorded_ppid(pid);
    rec.args_len = 0;
    rec.args_truncated = 0;
    rec._pad = [0; 2];
    rec.filename[0] = 0;
    if o.bprm_interp != 0 && !bprm.is_null() {
        if let Some(interp) = read_ptr(bprm, o.bprm_interp) {
            // SAFETY: the helper bounds and NUL-terminates the copy.
            if unsafe { bpf_probe_read_kernel_str_bytes(interp, &mut rec.filename) }.is_err() {
                rec.filename[0] = 0;
            }
        }
    }
    let mm = current_mm(&o);
    match mm.and_then(|mm| exe_of(mm, &o)) {
        Some((dev, ino)) => {
            rec.dev = dev;
            rec.ino = ino;
            rec.exe_source = exe_source::EXEC;
        }
        None => {
            rec.dev = 0;
            rec.ino = 0;
            rec.exe_source = exe_source::NONE;
            maps::count(counter::IDENTITY_UNREAD);
        }
    }
    if let Some(mm) = mm {
        read_args(mm, &o, rec);
    }
    maps::process_exec(pid, rec);
    maps::count(counter::EXEC);
    0
}

/// Copies `mm->arg_start..arg_end` (what /proc/PID/cmdline shows), at most
/// [`ARGS_LEN`] bytes.
#[inline(always)]
fn read_args(mm: *const u8, o: &KernelOffsets, rec: &mut appfw_common::ProcRecord) {
    // SAFETY: see `read`.
    let (start, end) = unsafe {
        match (
            read::<u64>(mm, o.mm_arg_start),
            read::<u64>(mm, o.mm_arg_end),
        ) {
            (Some(s), Some(e)) => (s, e),
            _ => {
                maps::count(counter::ARGS_UNREAD);
                return;
            }
        }
    };
    if end <= start {
        return;
    }
    let len = end - start;
    let (n, truncated) = if len > ARGS_LEN as u64 {
        (ARGS_LEN as u32, 1)
    } else {
        (len as u32, 0)
    };
    // SAFETY: at most ARGS_LEN bytes into the record's args; the helper
    // checks the user address.
    let ret = unsafe {
        bpf_probe_read_user(
            rec.args.as_mut_ptr() as *mut c_void,
            n,
            start as *const c_void,
        )
    };
    if ret == 0 {
        rec.args_len = n;
        rec.args_truncated = truncated;
    } else {
        maps::count(counter::ARGS_UNREAD);
    }
}

/// A task exited: when it was the last of its process, the process record
/// moves to the exited map (its datagrams may still wait in the queue) and
/// the live maps forget it.
pub fn process_exit(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let o = maps::offsets();
    let last = if o.exit_group_dead != 0 {
        // SAFETY: offset from this kernel's tracepoint format, found by
        // the loader.
        unsafe { ctx.read_at::<u8>(o.exit_group_dead as usize) }.is_ok_and(|b| b != 0)
    } else {
        // Without group_dead, the leader's exit stands for the process.
        tgid == pid_tgid as u32
    };
    if last {
        maps::process_exited(tgid);
    }
    0
}
