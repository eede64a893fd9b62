//! The maps, written only through the verbs below.
//!
//! Map and global names must match `appfw_common::maps`, which the daemon
//! uses to find them.
#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "keys and values go to the map helpers by reference: a ProcRecord passed by value would be copied onto the 512-byte BPF stack"
)]

use appfw_common::{
    maps::{self as names, counter, SocketEvent},
    owner::exe_source,
    verdict::report,
    verdict::{ReportedKey, SETTING_GENERATION},
    FlowKey, KernelOffsets, Owner, PacketKey, ProcKey, ProcRecord, ProcVerdict, QueuedPacket,
    SocketVerdict,
};
use aya_ebpf::{
    bindings::BPF_ANY,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    Global,
};

#[map]
static APPFW_FLOWS: LruHashMap<FlowKey, Owner> =
    LruHashMap::with_max_entries(names::FLOWS_CAPACITY, 0);

#[map]
static APPFW_SOCKETS: LruHashMap<u64, Owner> =
    LruHashMap::with_max_entries(names::SOCKETS_CAPACITY, 0);

#[map]
static APPFW_CLOSED_SOCKETS: LruHashMap<u64, Owner> =
    LruHashMap::with_max_entries(names::CLOSED_SOCKETS_CAPACITY, 0);

#[map]
static APPFW_VERDICTS: LruHashMap<u64, SocketVerdict> =
    LruHashMap::with_max_entries(names::VERDICTS_CAPACITY, 0);

#[map]
static APPFW_PROC_VERDICTS: LruHashMap<ProcKey, ProcVerdict> =
    LruHashMap::with_max_entries(names::PROC_VERDICTS_CAPACITY, 0);

#[map]
static APPFW_REPORTED: LruHashMap<ReportedKey, u8> =
    LruHashMap::with_max_entries(names::REPORTED_CAPACITY, 0);

#[map]
pub static APPFW_KERNEL_VERDICT_EVENTS: RingBuf =
    RingBuf::with_byte_size(names::KERNEL_VERDICT_EVENTS_BYTES, 0);

#[map]
static APPFW_QUEUED: LruHashMap<PacketKey, QueuedPacket> =
    LruHashMap::with_max_entries(names::QUEUED_CAPACITY, 0);

#[map]
static APPFW_SETTINGS: Array<u32> = Array::with_max_entries(names::SETTINGS_COUNT, 0);

// Live processes only: plain hashes, so that nothing evicts a live entry.
#[map]
static APPFW_PROC_START: HashMap<u32, u64> =
    HashMap::with_max_entries(names::PROC_START_CAPACITY, 0);

#[map]
static APPFW_PROCS: HashMap<ProcKey, ProcRecord> =
    HashMap::with_max_entries(names::PROCS_CAPACITY, 0);

#[map]
static APPFW_EXITED: LruHashMap<ProcKey, ProcRecord> =
    LruHashMap::with_max_entries(names::EXITED_CAPACITY, 0);

#[map]
static APPFW_EVENTS: RingBuf = RingBuf::with_byte_size(names::EVENTS_BYTES, 0);

#[map]
static APPFW_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Scratch space: a `ProcRecord` is larger than the 512-byte BPF stack, so
/// it is built here and then copied; one slot per CPU and per [`Scratch`]
/// user.
#[map]
static APPFW_SCRATCH_PROC: PerCpuArray<ProcRecord> =
    PerCpuArray::with_max_entries(Scratch::COUNT, 0);

/// Set by the loader (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
static APPFW_FILTER_NETNS: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
static APPFW_EMIT_EVENTS: Global<u8> = Global::new(0);
#[unsafe(no_mangle)]
static APPFW_KERNEL_OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets {
    task_mm: 0,
    mm_exe_file: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    file_f_inode: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    sb_s_dev: 0,
    bprm_interp: 0,
    exit_group_dead: 0,
});

/// The kernel struct offsets the loader found in BTF.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    APPFW_KERNEL_OFFSETS.load()
}

/// Which program a scratch slot belongs to: one slot each, so that two
/// programs never share one.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Scratch {
    /// sched_process_exec.
    Exec = 0,
    /// task_newtask.
    Fork = 1,
}

impl Scratch {
    const COUNT: u32 = 2;
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(c) = APPFW_COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *c += 1 };
    }
}

/// True when sockets of `netns` are not this instance's business.
#[inline(always)]
pub fn netns_ignored(netns: u64) -> bool {
    let wanted = APPFW_FILTER_NETNS.load();
    wanted != 0 && wanted != netns
}

#[inline(always)]
fn emit_events() -> bool {
    APPFW_EMIT_EVENTS.load() != 0
}

/// A socket sending again on a flow already recorded for it and for this
/// process: only the record's time is refreshed, because the daemon trusts
/// a UDP record only while it is fresh. False when the flow is not
/// recorded for this socket and process (nothing is written then).
#[inline(always)]
pub fn flow_refreshed(key: &FlowKey, pid: u32, cookie: u64, now: u64) -> bool {
    let Some(old) = APPFW_FLOWS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: pointer into the map's value, valid during this program; a
    // racing writer can at worst leave one of two fresh timestamps.
    let old = unsafe { &mut *old };
    if old.pid != pid || old.cookie != cookie {
        return false;
    }
    old.ktime_ns = now;
    true
}

/// Records `owner` for the flow `key` (and reports it to `appfw trace` when
/// `report_it`); false when the map update failed.
#[inline(always)]
pub fn flow_opened(key: &FlowKey, owner: &Owner, report_it: bool) -> bool {
    if APPFW_FLOWS.insert(key, owner, BPF_ANY as u64).is_err() {
        count(counter::MAP_UPDATE_FAILED);
        return false;
    }
    if report_it {
        report(key, owner);
    }
    true
}

/// Tells `appfw trace` (if it is the loader) about a new socket.
#[inline(always)]
pub fn report(key: &FlowKey, owner: &Owner) {
    if emit_events() {
        let event = SocketEvent {
            key: *key,
            owner: *owner,
        };
        if APPFW_EVENTS.output::<SocketEvent>(&event, 0).is_err() {
            count(counter::EVENTS_LOST);
        }
    }
}

/// Records who connected the socket `owner.cookie`.
#[inline(always)]
pub fn socket_connected(owner: &Owner) {
    if APPFW_SOCKETS
        .insert(&owner.cookie, owner, BPF_ANY as u64)
        .is_err()
    {
        count(counter::MAP_UPDATE_FAILED);
    }
}

/// Who connected socket `cookie`, if a connect hook saw it.
#[inline(always)]
pub fn socket_owner(cookie: u64) -> Option<Owner> {
    // SAFETY: copied out at once; a concurrent update can at worst give a
    // mix of two records of the same socket.
    unsafe { APPFW_SOCKETS.get(&cookie).copied() }
}

/// Socket `cookie` closed: its owner moves to the closed sockets (a
/// datagram it sent may still wait in the queue). Its verdict stays: the
/// kernel may go on sending for it (a TCP socket's unsent data, its FIN),
/// and a blocked socket stays blocked; the map's LRU ages it out.
#[inline(always)]
pub fn socket_closed(cookie: u64) {
    if let Some(owner) = APPFW_SOCKETS.get_ptr(&cookie) {
        // SAFETY: the value pointer is valid during this program; the
        // kernel copies it into the new element.
        if APPFW_CLOSED_SOCKETS
            .insert(&cookie, unsafe { &*owner }, BPF_ANY as u64)
            .is_err()
        {
            count(counter::MAP_UPDATE_FAILED);
        }
        let _ = APPFW_SOCKETS.remove(&cookie);
    }
}

/// Whether appfw knows socket `cookie` as a program's socket: created or
/// connected under its eyes (open or closed), or judged.
#[inline(always)]
pub fn user_socket(cookie: u64) -> bool {
    // SAFETY: lookups only; nothing is read through the pointers.
    unsafe {
        APPFW_SOCKETS.get(&cookie).is_some()
            || APPFW_CLOSED_SOCKETS.get(&cookie).is_some()
            || APPFW_VERDICTS.get(&cookie).is_some()
    }
}

/// A socket that another process incarnation now sends from is judged
/// again: its verdict was made for the previous owner.
#[inline(always)]
pub fn socket_changed_hands(owner: &Owner) {
    socket_connected(owner);
    forget_verdict(owner.cookie);
}

/// The policy generation in force.
#[inline(always)]
pub fn generation() -> Option<u32> {
    APPFW_SETTINGS.get(SETTING_GENERATION).copied()
}

/// The verdict of socket `cookie`, if it was made under `generation`.
#[inline(always)]
pub fn socket_verdict(cookie: u64, generation: u32) -> Option<SocketVerdict> {
    // SAFETY: copied out at once.
    let v = unsafe { APPFW_VERDICTS.get(&cookie).copied() }?;
    (v.generation == generation).then_some(v)
}

/// Live socket `cookie` has no verdict of its own: the verdict the daemon
/// made under `generation` for its owner's process incarnation (and user),
/// if there is one, becomes the socket's, and is returned with the owner.
#[inline(always)]
pub fn process_verdict(cookie: u64, generation: u32) -> Option<(SocketVerdict, Owner)> {
    // SAFETY: copied out at once.
    let owner = unsafe { APPFW_SOCKETS.get(&cookie).copied() }?;
    // Only while the owner is still its pid's current incarnation: a
    // socket carried across exec is judged again (the daemon may store a
    // verdict for the old incarnation after exec deleted it).
    if process_start(owner.pid) != owner.start_ns {
        return None;
    }
    let verdict = give_process_verdict(&owner, generation, true)?;
    Some((verdict, owner))
}

/// A socket was just created by `owner`: when its process has a verdict
/// whose flows are not reported, the socket gets it now, so that the hooks
/// that follow need record nothing for it (see [`judged`]). A reported
/// verdict waits for the first packet, which the report needs.
#[inline(always)]
pub fn socket_created(owner: &Owner) {
    if let Some(generation) = generation() {
        let _ = give_process_verdict(owner, generation, false);
    }
}

/// The verdict of `owner`'s process incarnation under `generation`, given
/// to its socket `owner.cookie`; `reported`: also one whose flows are
/// reported.
#[inline(always)]
fn give_process_verdict(owner: &Owner, generation: u32, reported: bool) -> Option<SocketVerdict> {
    let key = ProcKey::new(owner.pid, owner.start_ns);
    let pv = APPFW_PROC_VERDICTS.get_ptr_mut(&key)?;
    // SAFETY: the map's value, valid during this program. `applied` is a
    // statistic: two CPUs giving the verdict at once may count one (the
    // BPF target has no atomics in Rust).
    let verdict = unsafe {
        let v = (*pv).verdict;
        if v.generation != generation
            || (*pv).uid != owner.uid
            || (v.report != report::NONE && !reported)
        {
            return None;
        }
        (*pv).applied += 1;
        v
    };
    if APPFW_VERDICTS
        .insert(&owner.cookie, &verdict, BPF_ANY as u64)
        .is_err()
    {
        count(counter::MAP_UPDATE_FAILED);
        return None;
    }
    count(counter::PROCESS_VERDICT);
    Some(verdict)
}

/// Socket `cookie` has a verdict under the policy in force: the kernel
/// decides its packets, and the daemon needs no flow record of it (one of
/// its packets reaches the queue only after a reload, with its owner in
/// the queue record).
#[inline(always)]
pub fn judged(cookie: u64) -> bool {
    generation().is_some_and(|g| socket_verdict(cookie, g).is_some())
}

/// Socket `cookie` connects (again): a verdict made for the destination
/// it had is void; one made for its process stays.
#[inline(always)]
pub fn socket_connects(cookie: u64) {
    // SAFETY: a byte copied out.
    if unsafe { APPFW_VERDICTS.get(&cookie) }.is_some_and(|v| v.flow_scoped != 0) {
        forget_verdict(cookie);
    }
}

/// Socket `cookie`'s verdict was made for another owner: it is judged
/// again at its next packet.
#[inline(always)]
pub fn forget_verdict(cookie: u64) {
    let _ = APPFW_VERDICTS.remove(&cookie);
}

/// UDP socket `cookie` closed with a verdict: no datagram of it can be
/// waiting for the daemon (each passed appfw's chain in its send call), so
/// its owner is only forgotten.
#[inline(always)]
pub fn judged_socket_closed(cookie: u64) {
    let _ = APPFW_SOCKETS.remove(&cookie);
}

/// A packet of socket `cookie` goes to the queue under `key`, with the
/// socket's owner as the hooks know it now.
#[inline(always)]
pub fn packet_queued(key: &PacketKey, cookie: u64) {
    // SAFETY: copied out at once.
    let owner = unsafe {
        APPFW_SOCKETS
            .get(&cookie)
            .or_else(|| APPFW_CLOSED_SOCKETS.get(&cookie))
            .copied()
    };
    let record = match owner {
        Some(owner) => QueuedPacket {
            cookie,
            owner,
            owner_known: 1,
            _pad: 0,
        },
        None => QueuedPacket {
            cookie,
            // SAFETY: Owner is plain integers and arrays; all zero is valid.
            owner: unsafe { core::mem::zeroed() },
            owner_known: 0,
            _pad: 0,
        },
    };
    if APPFW_QUEUED.insert(key, &record, BPF_ANY as u64).is_err() {
        count(counter::MAP_UPDATE_FAILED);
    }
}

/// Start of the current incarnation of `pid`, 0 when appfw never saw it
/// fork or exec.
#[inline(always)]
pub fn process_start(pid: u32) -> u64 {
    // SAFETY: a u64 copied out.
    unsafe { APPFW_PROC_START.get(&pid).copied().unwrap_or(0) }
}

/// Records that `pid` began a new incarnation at `start_ns`.
#[inline(always)]
fn process_started(pid: u32, start_ns: u64) {
    if APPFW_PROC_START
        .insert(&pid, &start_ns, BPF_ANY as u64)
        .is_err()
    {
        count(counter::MAP_UPDATE_FAILED);
    }
}

/// A new process `child` was forked from `parent` at `now`: it inherits the
/// parent's record (same executable until it execs). A parent appfw never
/// saw exec gets a record with `exe` (the parent's executable, read from
/// the kernel) and no argv.
#[inline(always)]
pub fn process_forked(parent: u32, child: u32, now: u64, exe: Option<(u32, u64)>) {
    let child_key = ProcKey::new(child, now);
    let parent_key = ProcKey::new(parent, process_start(parent));
    // A parent recorded at appfw's load has no identity to pass on.
    let parent_rec = APPFW_PROCS
        .get_ptr(&parent_key)
        // SAFETY: a byte read through the map's value pointer.
        .filter(|rec| unsafe { (**rec).exe_source } != exe_source::SEEDED);
    let inserted = match parent_rec {
        // SAFETY: the value pointer is valid for this program's run; the
        // kernel copies it into the new element.
        Some(rec) => APPFW_PROCS.insert(&child_key, unsafe { &*rec }, BPF_ANY as u64),
        None => {
            // SAFETY: task_newtask's own slot, one reference per run.
            let Some(rec) = (unsafe { scratch_proc(Scratch::Fork) }) else {
                return;
            };
            rec.filename[0] = 0;
            rec.args_len = 0;
            rec.args_truncated = 0;
            rec._pad = [0; 2];
            match exe {
                Some((dev, ino)) => {
                    rec.dev = dev;
                    rec.ino = ino;
                    rec.exe_source = exe_source::FORK;
                }
                None => {
                    rec.dev = 0;
                    rec.ino = 0;
                    rec.exe_source = exe_source::NONE;
                }
            }
            APPFW_PROCS.insert(&child_key, rec, BPF_ANY as u64)
        }
    };
    if inserted.is_err() {
        count(counter::MAP_UPDATE_FAILED);
        return;
    }
    if let Some(rec) = APPFW_PROCS.get_ptr_mut(&child_key) {
        // SAFETY: the element just inserted; only this program writes it now.
        unsafe {
            (*rec).ppid = parent;
            (*rec).start_ns = now;
        }
    }
    process_started(child, now);
}

/// This CPU's scratch `ProcRecord` of `slot`, to fill before
/// [`process_exec`] or an insert.
///
/// # Safety
///
/// Only the program `slot` names may call this, at most once per run, and
/// must drop the reference before it returns. Then the reference is
/// exclusive: the kernel never runs one program twice at once on a CPU (a
/// nested run is skipped, `prog->active`), runs are pinned to their CPU,
/// and no other program uses this slot. Nothing is assumed about the
/// slot's previous contents: callers write every field they rely on.
#[inline(always)]
pub unsafe fn scratch_proc(slot: Scratch) -> Option<&'static mut ProcRecord> {
    APPFW_SCRATCH_PROC
        .get_ptr_mut(slot as u32)
        // SAFETY: the map's value, valid for the program's run; exclusive
        // by the caller's contract.
        .map(|p| unsafe { &mut *p })
}

/// Parent recorded for the current incarnation of `pid`, 0 if unknown.
#[inline(always)]
pub fn recorded_ppid(pid: u32) -> u32 {
    let key = ProcKey::new(pid, process_start(pid));
    // SAFETY: a u32 copied out.
    unsafe { APPFW_PROCS.get(&key).map(|r| r.ppid).unwrap_or(0) }
}

/// `pid` exec'd at `rec.start_ns`; `rec` describes the new program. The
/// record of the incarnation it replaces is kept as an exited one: a
/// datagram it sent may still wait in the queue.
#[inline(always)]
pub fn process_exec(pid: u32, rec: &ProcRecord) {
    retire(pid);
    let key = ProcKey::new(pid, rec.start_ns);
    if APPFW_PROCS.insert(&key, rec, BPF_ANY as u64).is_err() {
        count(counter::MAP_UPDATE_FAILED);
        // The old start must not stay: it would name the new program by the
        // retired record. Without one the daemon asks /proc, which shows
        // the current executable.
        let _ = APPFW_PROC_START.remove(&pid);
        return;
    }
    process_started(pid, rec.start_ns);
}

/// Process `pid` exited: its record moves to the exited map.
#[inline(always)]
pub fn process_exited(pid: u32) {
    retire(pid);
    let _ = APPFW_PROC_START.remove(&pid);
}

/// Moves the record of `pid`'s current incarnation to the exited map.
#[inline(always)]
fn retire(pid: u32) {
    let start = process_start(pid);
    // Its verdict was made for this incarnation (start 0: a process older
    // than appfw), and must not reach a later one.
    let _ = APPFW_PROC_VERDICTS.remove(&ProcKey::new(pid, start));
    if start == 0 {
        return;
    }
    let key = ProcKey::new(pid, start);
    let Some(rec) = APPFW_PROCS.get_ptr(&key) else {
        return;
    };
    // SAFETY: the value pointer is valid for this program's run; the kernel
    // copies it into the new element before the old one is deleted.
    if APPFW_EXITED
        .insert(&key, unsafe { &*rec }, BPF_ANY as u64)
        .is_err()
    {
        count(counter::MAP_UPDATE_FAILED);
    }
    let _ = APPFW_PROCS.remove(&key);
    count(counter::EXIT);
}

/// True the first time a flow of this process to this destination is
/// asked about (and remembered from then on).
#[inline(always)]
pub fn first_report(key: &ReportedKey) -> bool {
    // SAFETY: a lookup; nothing is read through the pointer.
    if unsafe { APPFW_REPORTED.get(key) }.is_some() {
        return false;
    }
    if APPFW_REPORTED.insert(key, &1, BPF_ANY as u64).is_err() {
        count(counter::MAP_UPDATE_FAILED);
    }
    true
}
