//! Loading, attaching and detaching the kernel programs.
//!
//! [`load`] returns two halves: [`Maps`], the map handles the packet path
//! reads (moved to the queue thread), and [`Programs`], which owns the
//! programs and their links; dropping it detaches every hook.

use std::path::PathBuf;

use appfw_common::{
    maps::{self as names, counter, filters},
    owner::exe_source,
    FlowKey, Owner, PacketKey, ProcKey, ProcRecord, ProcVerdict, QueuedPacket, SocketVerdict,
};
use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr, ProgramError,
        RawTracePoint, SockOps, SocketFilter, TracePoint,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use thiserror::Error;

use crate::{
    btf::{self, Btf, BtfError},
    identity,
    system::{self, SystemError},
};

/// `BPF_NOEXIST`: an update that never replaces an element.
const BPF_NOEXIST: u64 = 1;

/// The object built from `appfw-ebpf`, embedded at build time.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/appfw-ebpf.o"));

#[derive(Debug, Error)]
pub enum BpfError {
    #[error(
        "this appfw binary was built without its eBPF object; build it with `cargo xtask build`"
    )]
    NoObject,
    #[error(transparent)]
    System(#[from] SystemError),
    #[error("finding kernel struct offsets for the exec hook: {0}")]
    Btf(#[from] BtfError),
    #[error("loading the eBPF object failed: {0}. appfw needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN) and a kernel with BPF and BTF")]
    Load(#[source] EbpfError),
    #[error("the eBPF object has no program {0}; it does not match this appfw build (rebuild with `cargo xtask build`)")]
    ProgramMissing(&'static str),
    #[error("the kernel refused program {name}: {reason}. {hint}")]
    LoadProgram {
        name: &'static str,
        hint: &'static str,
        reason: String,
    },
    #[error("attaching {name} to {target} failed: {reason}. {hint}")]
    Attach {
        name: &'static str,
        target: String,
        hint: &'static str,
        reason: String,
    },
    #[error("the eBPF object has no map {0}; rebuild with `cargo xtask build`")]
    MapMissing(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("pinning {name} at {path} for appfw's netfilter rules failed: {reason}. Is {dir} a bpf filesystem appfw may write?")]
    Pin {
        name: &'static str,
        path: String,
        dir: String,
        reason: String,
    },
}

/// What to load.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Record only sockets of this network namespace (0: every namespace).
    pub netns: u64,
    /// Emit a ring-buffer event per new socket (for `appfw trace`).
    pub events: bool,
    /// Log the hooks' per-socket debug messages (otherwise only warnings).
    pub kernel_debug: bool,
    /// Pin the socket filters of appfw's netfilter rules (the daemon;
    /// `appfw trace` and tests of attribution alone need none).
    pub filters: bool,
}

/// The kernel programs' log (aya-log), read into the `log` crate.
pub type KernelLog = aya_log::EbpfLogger<&'static dyn log::Log>;

/// The loaded programs and their links. Drop to detach.
pub struct Programs {
    _ebpf: Ebpf,
    pub cgroup: PathBuf,
    /// Where the socket filters are pinned, when they are; removed on drop.
    pub filters: Option<Filters>,
    counters: PerCpuArray<MapData, u64>,
    // Must live as long as the programs: dropping it closes the log map
    // the programs write to.
    log: Option<KernelLog>,
}

/// Map handles for lookups; each lookup is one bpf() syscall, with no
/// allocation and no lock in userspace.
pub struct Maps {
    pub flows: HashMap<MapData, FlowKey, Owner>,
    pub sockets: HashMap<MapData, u64, Owner>,
    pub closed_sockets: HashMap<MapData, u64, Owner>,
    pub verdicts: HashMap<MapData, u64, SocketVerdict>,
    pub proc_verdicts: HashMap<MapData, ProcKey, ProcVerdict>,
    /// Process verdicts the kernel gave and reported; read without system
    /// calls (mapped memory).
    pub verdict_events: RingBuf<MapData>,
    pub queued: HashMap<MapData, PacketKey, QueuedPacket>,
    pub settings: Array<MapData, u32>,
    pub proc_start: HashMap<MapData, u32, u64>,
    pub procs: HashMap<MapData, ProcKey, ProcRecord>,
    pub exited: HashMap<MapData, ProcKey, ProcRecord>,
    /// DNS answers received by this namespace's sockets (see
    /// [`crate::names`]); the queue thread takes it.
    pub dns: Option<RingBuf<MapData>>,
}

/// Loads the programs, attaches every hook, and returns the maps, the
/// program handles, and (with `events`) the event ring buffer.
pub fn load(opts: Options) -> Result<(Maps, Programs, Option<RingBuf<MapData>>), BpfError> {
    if OBJECT.is_empty() {
        return Err(BpfError::NoObject);
    }
    system::require_root()?;
    system::ensure_tracefs()?;
    let cgroup = system::cgroup2_root()?;
    let offsets = kernel_offsets()?;

    let emit: u8 = opts.events.into();
    let level: u8 = if opts.kernel_debug {
        aya_log::Level::Debug
    } else {
        aya_log::Level::Warn
    }
    .into();
    // No CO-RE relocations in appfw's programs: leaving the kernel's BTF
    // unparsed saves megabytes of peak memory at start.
    let mut ebpf = EbpfLoader::new()
        .btf(None)
        .override_global(names::FILTER_NETNS, &opts.netns, true)
        .override_global(names::EMIT_EVENTS, &emit, true)
        .override_global(names::KERNEL_OFFSETS, &offsets, true)
        .override_global(aya_log::LEVEL, &level, true)
        .load(OBJECT)
        .map_err(BpfError::Load)?;
    let log = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            log::warn!("kernel-side log unavailable: {e}");
            None
        }
    };

    // Process records first, so that sockets opened from now on find the
    // incarnation of their process.
    for (name, category, event) in [
        ("appfw_task_newtask", "task", "task_newtask"),
        ("appfw_process_exit", "sched", "sched_process_exit"),
    ] {
        let prog: &mut TracePoint = program(&mut ebpf, name)?;
        prog.load().map_err(|source| BpfError::LoadProgram {
            name,
            hint: "tracepoint programs need CONFIG_FTRACE_SYSCALLS and tracefs",
            reason: brief(&source),
        })?;
        prog.attach(category, event)
            .map_err(|source| BpfError::Attach {
                name,
                target: format!("tracepoint {category}/{event}"),
                hint: "is tracefs mounted and does the kernel have this tracepoint?",
                reason: brief(&source),
            })?;
    }

    {
        let name = "appfw_process_exec";
        let prog: &mut RawTracePoint = program(&mut ebpf, name)?;
        prog.load().map_err(|source| BpfError::LoadProgram {
            name,
            hint: "raw tracepoint programs need Linux 4.17",
            reason: brief(&source),
        })?;
        prog.attach("sched_process_exec")
            .map_err(|source| BpfError::Attach {
                name,
                target: "raw tracepoint sched_process_exec".into(),
                hint: "does the kernel have this tracepoint?",
                reason: brief(&source),
            })?;
    }

    for (name, hint) in [
        ("appfw_connect4", SOCK_ADDR_HINT),
        ("appfw_connect6", SOCK_ADDR_HINT),
        ("appfw_udp_sendmsg4", SOCK_ADDR_HINT),
        ("appfw_udp_sendmsg6", SOCK_ADDR_HINT),
    ] {
        attach_to_cgroup::<CgroupSockAddr>(&mut ebpf, name, hint, &cgroup)?;
    }
    attach_to_cgroup::<CgroupSock>(
        &mut ebpf,
        "appfw_sock_create",
        "the cgroup sock_create hook needs cgroup v2 and Linux 5.7",
        &cgroup,
    )?;
    attach_to_cgroup::<CgroupSock>(
        &mut ebpf,
        "appfw_sock_release",
        "the cgroup sock_release hook needs Linux 5.9",
        &cgroup,
    )?;
    attach_to_cgroup::<SockOps>(
        &mut ebpf,
        "appfw_tcp_connect",
        "sock_ops with netns cookies needs Linux 5.15",
        &cgroup,
    )?;

    attach_to_cgroup::<CgroupSkb>(
        &mut ebpf,
        "appfw_dns_answer",
        "cgroup_skb programs with a ring buffer need Linux 5.8 and cgroup v2",
        &cgroup,
    )?;

    let filters = if opts.filters {
        Some(pin_filters(&mut ebpf, opts.netns)?)
    } else {
        None
    };

    let mut maps = Maps {
        flows: take_map(&mut ebpf, names::FLOWS)?,
        sockets: take_map(&mut ebpf, names::SOCKETS)?,
        closed_sockets: take_map(&mut ebpf, names::CLOSED_SOCKETS)?,
        verdicts: take_map(&mut ebpf, names::VERDICTS)?,
        proc_verdicts: take_map(&mut ebpf, names::PROC_VERDICTS)?,
        verdict_events: take_map(&mut ebpf, names::KERNEL_VERDICT_EVENTS)?,
        queued: take_map(&mut ebpf, names::QUEUED)?,
        settings: take_map(&mut ebpf, names::SETTINGS)?,
        proc_start: take_map(&mut ebpf, names::PROC_START)?,
        procs: take_map(&mut ebpf, names::PROCS)?,
        exited: take_map(&mut ebpf, names::EXITED)?,
        dns: Some(take_map(&mut ebpf, appfw_common::dns::DNS)?),
    };
    seed_processes(&mut maps);
    let counters = take_map(&mut ebpf, names::COUNTERS)?;
    let events = if opts.events {
        Some(take_map(&mut ebpf, names::EVENTS)?)
    } else {
        None
    };
    Ok((
        maps,
        Programs {
            _ebpf: ebpf,
            cgroup: cgroup.path,
            filters,
            counters,
            log,
        },
        events,
    ))
}

/// Gives every process older than appfw an incarnation: its start from
/// /proc (clock ticks since boot, the fork's `CLOCK_BOOTTIME`), and a
/// record without identity ([`exe_source::SEEDED`]; it is named through
/// /proc, as before). Then its sockets' owners tell it from a later
/// process with its pid, and its verdict can be kept in the kernel (see
/// `crate::verdicts`); its exit retires both like any other's. Runs after
/// the fork, exec and exit hooks are attached: a process they recorded
/// meanwhile keeps their record (inserts here never replace one).
fn seed_processes(maps: &mut Maps) {
    let ticks_ns = 1_000_000_000 / system::clock_ticks().max(1);
    let Ok(all) = procfs::process::all_processes() else {
        return;
    };
    let mut seeded = 0u32;
    for stat in all.flatten().filter_map(|p| p.stat().ok()) {
        let (Ok(pid), Ok(ppid)) = (u32::try_from(stat.pid), u32::try_from(stat.ppid)) else {
            continue;
        };
        // 0 means "never seen" to the hooks.
        let start_ns = (stat.starttime * ticks_ns).max(1);
        if maps.proc_start.insert(pid, start_ns, BPF_NOEXIST).is_err() {
            continue;
        }
        // SAFETY: ProcRecord is plain integers and arrays; all zero is a
        // valid value (no identity, empty path and argv).
        let mut rec: ProcRecord = unsafe { std::mem::zeroed() };
        rec.start_ns = start_ns;
        rec.ppid = ppid;
        rec.exe_source = exe_source::SEEDED;
        if maps
            .procs
            .insert(ProcKey::new(pid, start_ns), rec, BPF_NOEXIST)
            .is_ok()
        {
            seeded += 1;
        }
    }
    log::debug!("{seeded} processes older than appfw recorded");
}

/// Offsets of the kernel struct members the exec hook reads, from this
/// kernel's BTF, and of `group_dead` in the exit tracepoint's record.
/// Needs tracefs mounted.
fn kernel_offsets() -> Result<appfw_common::KernelOffsets, BpfError> {
    let btf = Btf::from_file(std::path::Path::new(btf::VMLINUX))?;
    let mut offsets = identity::kernel_offsets(&btf)?;
    let format = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|dir| {
            std::fs::read_to_string(format!("{dir}/events/sched/sched_process_exit/format")).ok()
        });
    offsets.exit_group_dead = format
        .and_then(|f| identity::tracepoint_field_offset(&f, "group_dead"))
        .unwrap_or(0);
    log::debug!(
        "kernel offsets: {:?}, sched_process_exit.group_dead {}",
        identity::offset_values(&offsets),
        offsets.exit_group_dead
    );
    Ok(offsets)
}

impl Programs {
    /// The kernel log reader, for a caller that polls it (the daemon with
    /// --debug). The reader stays valid while `self` lives.
    pub fn take_log(&mut self) -> Option<KernelLog> {
        self.log.take()
    }

    /// The kernel-side counters, summed over CPUs, with their names.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        counter::NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let sum = self
                    .counters
                    .get(&(i as u32), 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (*name, sum)
            })
            .collect()
    }
}

/// The pinned socket filters of appfw's netfilter rules: a directory of
/// this instance's on a bpf filesystem, removed (with the pins) on drop.
pub struct Filters {
    pub dir: PathBuf,
}

impl Filters {
    /// The pin of filter `name` (one of `appfw_common::maps::filters`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Filters {
    fn drop(&mut self) {
        // The rules keep their own references to the programs.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Loads the socket filters and pins them where iptables (run by this
/// process, so in its mount namespace) finds them.
fn pin_filters(ebpf: &mut Ebpf, netns: u64) -> Result<Filters, BpfError> {
    let bpffs = system::bpffs()?;
    system::remove_stale_pins(&bpffs);
    let dir = bpffs.join(format!("appfw-{netns}-{}", std::process::id()));
    let dir_err = |e: std::io::Error| BpfError::Pin {
        name: "(directory)",
        path: dir.display().to_string(),
        dir: bpffs.display().to_string(),
        reason: e.to_string(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).map_err(dir_err)?;
    let filters = Filters { dir };
    for name in [
        filters::ACCEPT,
        filters::DROP,
        filters::REJECT,
        filters::KERNEL,
        filters::QUEUE,
    ] {
        let prog: &mut SocketFilter = program(ebpf, name)?;
        prog.load().map_err(|source| BpfError::LoadProgram {
            name,
            hint: "socket filters need CONFIG_BPF_SYSCALL",
            reason: brief(&source),
        })?;
        let path = filters.path(name);
        prog.pin(&path).map_err(|e| BpfError::Pin {
            name,
            path: path.display().to_string(),
            dir: bpffs.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(filters)
}

const SOCK_ADDR_HINT: &str = "cgroup sock_addr hooks need Linux 5.7 and cgroup v2";

/// The cgroup program types appfw attaches, behind one interface.
trait CgroupHook {
    fn load_hook(&mut self) -> Result<(), ProgramError>;
    fn attach_hook(&mut self, cgroup: &std::fs::File) -> Result<(), ProgramError>;
}

macro_rules! cgroup_hook {
    ($($t:ty),*) => {$(
        impl CgroupHook for $t {
            fn load_hook(&mut self) -> Result<(), ProgramError> {
                self.load()
            }
            fn attach_hook(&mut self, cgroup: &std::fs::File) -> Result<(), ProgramError> {
                // Single mode goes through bpf_link here: links from several
                // appfw instances coexist, and each goes away with its owner.
                self.attach(cgroup, CgroupAttachMode::Single).map(|_| ())
            }
        }
    )*};
}

cgroup_hook!(CgroupSockAddr, CgroupSock, SockOps);

impl CgroupHook for CgroupSkb {
    fn load_hook(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
    fn attach_hook(&mut self, cgroup: &std::fs::File) -> Result<(), ProgramError> {
        // Only ingress: the program watches answers coming in.
        self.attach(
            cgroup,
            CgroupSkbAttachType::Ingress,
            CgroupAttachMode::Single,
        )
        .map(|_| ())
    }
}

/// Loads program `name` and attaches it to the root cgroup v2.
fn attach_to_cgroup<T: CgroupHook>(
    ebpf: &mut Ebpf,
    name: &'static str,
    hint: &'static str,
    cgroup: &system::Cgroup2,
) -> Result<(), BpfError>
where
    for<'a> &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog: &mut T = program(ebpf, name)?;
    prog.load_hook().map_err(|source| BpfError::LoadProgram {
        name,
        hint,
        reason: brief(&source),
    })?;
    prog.attach_hook(&cgroup.dir)
        .map_err(|source| BpfError::Attach {
            name,
            target: cgroup.path.display().to_string(),
            hint,
            reason: brief(&source),
        })
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, BpfError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or(BpfError::ProgramMissing(name))?;
    prog.try_into().map_err(|source| BpfError::LoadProgram {
        name,
        hint: "the object's program has an unexpected type; rebuild with `cargo xtask build`",
        reason: brief(&source),
    })
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, BpfError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(BpfError::MapMissing(name))?;
    T::try_from(map).map_err(|source| BpfError::Map { name, source })
}

/// A verifier log runs to thousands of lines; the first line and the last
/// few (where the verifier says what it rejected) are what a person needs.
fn brief(e: &ProgramError) -> String {
    // The errno is in the source chain (E2BIG from a tracepoint means it
    // already has the kernel's maximum of 64 programs attached).
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= 12 {
        return text;
    }
    let mut out = lines[0].to_owned();
    out.push_str("\n  ...\n");
    out.push_str(&lines[lines.len() - 8..].join("\n"));
    out
}
