//! The hot path, on its own thread: NFQUEUE -> (socket, FlowKey) -> owner
//! -> policy -> socket and process verdicts -> packet verdict -> report
//! event.
//!
//! A packet that came through appfw's own chain is judged for the socket
//! that sent it: the verdict is stored for that socket (the kernel applies
//! it to the socket's later packets) and for the socket's process
//! incarnation (the kernel gives it to that process's new sockets, see
//! [`crate::verdicts`]); the packet goes back through the chain
//! ("repeat"), where its own socket's verdict decides it. Packets without
//! a known socket get the verdict directly.
//!
//! Flows the kernel decided by a process verdict reach this thread only as
//! events, when they are to be reported; they are read between packets.
//!
//! Per packet, in the common case (owner in the eBPF map, process seen
//! before): a few map syscalls, a hash lookup, the policy, the verdict, a
//! channel send. No allocation, no /proc read, no lock.
//!
//! The thread waits in poll() on the queue and the kernel's event ring;
//! [`QueueHandle::stop`] and new commands interrupt it with a signal.

use std::{
    io,
    os::unix::thread::JoinHandleExt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use appfw_common::{
    verdict::{report, EVENT_HEAD_LEN},
    ProcKey, ProcVerdict,
};
use nfq::Verdict as NfVerdict;
use rustix::event::{PollFd, PollFlags, Timespec};
use thiserror::Error;

use crate::{
    attribution::{Attributor, OwnerStore, Sender, Source},
    config::Action,
    netfilter::REJECT_MARK,
    packet,
    policy::{Policy, Reason, Scope, Verdict},
    report::Event,
    rules::Flow,
    stats::{Counters, QueueStats},
    talkers::Top,
    verdicts::{self, SocketVerdicts},
};
use appfw_common::{flow::PROTO_TCP, PacketKey};

/// Bytes of each packet copied to userspace: all of it (the kernel caps
/// this at 0xffff minus an attribute header). Extension headers can be
/// kilobytes long and must be whole to be walked; the unfragmentable part
/// of an outbound packet is at most the MTU, and nfq's receive buffer is a
/// page plus this.
const COPY_RANGE: u16 = u16::MAX;
/// Packets the kernel holds for appfw; beyond that it drops new ones.
const QUEUE_MAX_LEN: u32 = 4096;
/// The netlink socket's receive buffer: a burst of queued packets waits
/// here. Packets that do not fit are dropped by the kernel (counted as
/// "user dropped" in /proc/net/netfilter/nfnetlink_queue).
const RECV_BUFFER: libc::c_int = 16 << 20;
/// An idle queue thread still wakes this often (its poll times out) and
/// counts the wakeup as progress: a thread that stops counting is stuck,
/// which the systemd watchdog acts on.
const IDLE_WAKEUP: Duration = Duration::from_millis(500);
/// How often the thread publishes its counters for `appfw status`.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum QueueError {
    #[error("opening the netfilter queue socket failed: {0}. appfw needs CAP_NET_ADMIN and nfnetlink_queue (modprobe nfnetlink_queue)")]
    Open(#[source] io::Error),
    #[error("binding NFQUEUE {queue} failed: {source}. {hint}")]
    Bind {
        queue: u16,
        hint: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("configuring NFQUEUE {queue} failed: {source}")]
    Configure {
        queue: u16,
        #[source]
        source: io::Error,
    },
    #[error("setting the NFQUEUE socket's receive buffer to {bytes} bytes failed: {source}. appfw needs CAP_NET_ADMIN (run it as root)")]
    RecvBuffer {
        bytes: libc::c_int,
        #[source]
        source: io::Error,
    },
}

/// A bound queue, not yet read.
pub struct BoundQueue {
    queue: nfq::Queue,
    num: u16,
}

/// Binds queue `num`. While appfw listens, a full queue drops: the
/// configuration's `fail` only decides what happens while nobody listens
/// (the rules' --queue-bypass), never what a flood gets.
pub fn bind(num: u16) -> Result<BoundQueue, QueueError> {
    let mut queue = nfq::Queue::open().map_err(QueueError::Open)?;
    queue.bind(num).map_err(|source| {
        let hint = match source.raw_os_error() {
            Some(libc::EBUSY) | Some(libc::EEXIST) => "another program (another appfw?) listens on this queue; choose another with --queue-num",
            Some(libc::EPERM) => "appfw needs CAP_NET_ADMIN (run it as root)",
            _ => "is nfnetlink_queue available (modprobe nfnetlink_queue)?",
        };
        QueueError::Bind { queue: num, hint, source }
    })?;
    let configure = |source| QueueError::Configure { queue: num, source };
    queue.set_copy_range(num, COPY_RANGE).map_err(configure)?;
    queue.set_fail_open(num, false).map_err(configure)?;
    queue
        .set_queue_max_len(num, QUEUE_MAX_LEN)
        .map_err(configure)?;
    // Overruns of the receive buffer show up as ENOBUFS, which is counted.
    queue.set_recv_enobufs(true).map_err(configure)?;
    set_recv_buffer(&queue, RECV_BUFFER)?;
    Ok(BoundQueue { queue, num })
}

fn set_recv_buffer(queue: &nfq::Queue, bytes: libc::c_int) -> Result<(), QueueError> {
    rustix::net::sockopt::set_socket_recv_buffer_size_force(queue, bytes as usize).map_err(|e| {
        QueueError::RecvBuffer {
            bytes,
            source: e.into(),
        }
    })
}

/// Commands to the queue thread (checked between packets).
pub enum Command {
    SetPolicy {
        policy: Arc<Policy>,
        /// Whether process verdicts are kept in the kernel from now on.
        kernel_verdicts: bool,
    },
}

pub struct QueueHandle {
    commands: mpsc::Sender<Command>,
    stop: Arc<AtomicBool>,
    /// Commands sent and not yet taken by the thread.
    pending: Arc<AtomicU64>,
    progress: Arc<AtomicU64>,
    published: Arc<Mutex<Counters>>,
    top: Arc<Mutex<Top>>,
    thread: thread::JoinHandle<QueueStats>,
}

/// What the queue thread works with.
pub struct Setup<S> {
    pub netns: u64,
    pub attributor: Attributor<S>,
    /// Names learned from DNS answers (`None`: no names).
    pub names: Option<crate::names::Watcher>,
    pub policy: Arc<Policy>,
    pub reports: mpsc::SyncSender<Event>,
    /// Print a statistics summary on stderr this often (--debug).
    pub stats_every: Option<Duration>,
    /// Send every verdict to the reporter (per-packet --debug lines).
    pub debug: bool,
    /// appfw's own chain is installed: it records each queued packet's
    /// socket and applies socket verdicts (not with --no-rules).
    pub socket_verdicts: bool,
    /// Keep verdicts per process incarnation in the kernel
    /// (`kernel-verdicts`; needs `socket_verdicts`).
    pub kernel_verdicts: bool,
}

pub fn spawn<S: OwnerStore + SocketVerdicts + Send + 'static>(
    queue: BoundQueue,
    setup: Setup<S>,
) -> io::Result<QueueHandle> {
    install_wakeup_handler()?;
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let pending = Arc::new(AtomicU64::new(0));
    let pending2 = pending.clone();
    let progress = Arc::new(AtomicU64::new(0));
    let published = Arc::new(Mutex::new(Counters::default()));
    let top = Arc::new(Mutex::new(Top::default()));
    let shared = Shared {
        progress: progress.clone(),
        published: published.clone(),
        top: top.clone(),
    };
    let thread = thread::Builder::new()
        .name("appfw-queue".into())
        .spawn(move || run(queue, setup, rx, &stop2, &pending2, &shared))?;
    Ok(QueueHandle {
        commands: tx,
        stop,
        pending,
        progress,
        published,
        top,
        thread,
    })
}

impl QueueHandle {
    /// Hands `command` to the thread and wakes it: a new policy must take
    /// effect now, not at the next queued packet (with socket verdicts in
    /// the kernel, there may be none for a long time).
    pub fn send(&self, command: Command) -> bool {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.commands.send(command).is_err() {
            return false;
        }
        // A signal that lands while the thread is busy, not in recv(), is
        // lost: repeat until the thread has taken the command.
        let start = Instant::now();
        while self.pending.load(Ordering::SeqCst) > 0
            && !self.thread.is_finished()
            && start.elapsed() < Duration::from_secs(1)
        {
            // SAFETY: the thread has not been joined (`self` owns its
            // handle), so its pthread_t is valid; the handler does nothing.
            unsafe { libc::pthread_kill(self.thread.as_pthread_t(), WAKEUP_SIGNAL) };
            thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// How many times the thread went round its loop (a packet, or an idle
    /// wakeup at least every [`IDLE_WAKEUP`]): standing still means stuck.
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// The counters as the thread last published them (at most
    /// [`PUBLISH_EVERY`] old).
    pub fn counters(&self) -> Counters {
        // A panic while holding the lock left plain numbers: still good.
        *self.published.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The top executables by flows, as last published.
    pub fn talkers(&self) -> Top {
        self.top.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// True when the thread has ended (it only ends on its own if it died).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Stops the thread and returns its statistics.
    pub fn stop(self) -> QueueStats {
        self.stop.store(true, Ordering::SeqCst);
        let pthread = self.thread.as_pthread_t();
        // The signal may land just before the thread enters recv(); repeat
        // until it has noticed.
        while !self.thread.is_finished() {
            // SAFETY: the thread has not been joined, so its pthread_t is valid.
            unsafe { libc::pthread_kill(pthread, WAKEUP_SIGNAL) };
            thread::sleep(Duration::from_millis(20));
        }
        self.thread.join().unwrap_or_default()
    }
}

const WAKEUP_SIGNAL: libc::c_int = libc::SIGUSR1;

extern "C" fn wakeup(_: libc::c_int) {}

/// A handler without SA_RESTART, so that a blocked recv() returns EINTR.
fn install_wakeup_handler() -> io::Result<()> {
    // SAFETY: a zeroed sigaction with a valid handler and empty mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = wakeup as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = 0;
        if libc::sigaction(WAKEUP_SIGNAL, &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What the queue thread shares with the service side, which only reads.
struct Shared {
    progress: Arc<AtomicU64>,
    published: Arc<Mutex<Counters>>,
    top: Arc<Mutex<Top>>,
}

impl Shared {
    /// Copies the counters out, never waiting: when a reader holds the
    /// lock, this round is skipped and the next one publishes.
    fn publish<S: OwnerStore>(&self, stats: &mut QueueStats, attributor: &Attributor<S>) {
        if let Ok(mut c) = self.published.try_lock() {
            stats.counts.attribution = attributor.counts();
            *c = stats.counters();
        }
        if let Ok(mut t) = self.top.try_lock() {
            stats.talkers.publish(&mut t);
        }
    }
}

fn run<S: OwnerStore + SocketVerdicts>(
    bound: BoundQueue,
    mut setup: Setup<S>,
    commands: mpsc::Receiver<Command>,
    stop: &AtomicBool,
    pending: &AtomicU64,
    shared: &Shared,
) -> QueueStats {
    let BoundQueue { mut queue, num } = bound;
    // Waiting happens in poll(), on the queue and the event ring at once.
    queue.set_nonblocking(true);
    let mut stats = QueueStats::default();
    let mut reported = Reported::new();
    let mut last_stats = Instant::now();
    let mut last_publish = Instant::now();
    let mut generation: u32 = 0;
    let mut kernel_flows = KernelFlows::default();
    loop {
        shared.progress.fetch_add(1, Ordering::Relaxed);
        if last_publish.elapsed() >= PUBLISH_EVERY {
            kernel_flows.count(setup.attributor.store(), &mut stats.talkers);
            shared.publish(&mut stats, &setup.attributor);
            last_publish = Instant::now();
        }
        kernel_events(&mut setup, &mut stats, &mut reported);
        let mut msg = match queue.recv() {
            Ok(m) => m,
            // Nothing waiting, or a wakeup signal.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                apply_commands(&commands, &mut setup, &mut generation, pending);
                // Keeps the ring buffer from filling while no packet comes.
                if let Some(n) = &mut setup.names {
                    n.drain();
                }
                if e.kind() == io::ErrorKind::WouldBlock {
                    wait(&queue, setup.attributor.store());
                }
                continue;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                // The receive buffer overflowed: the kernel dropped what did
                // not fit (never accepted: the queue is not fail-open) and
                // counts it; the daemon reports those counters.
                stats.counts.overruns += 1;
                continue;
            }
            // The kernel's answer to a verdict for a packet it no longer
            // holds: that packet is gone, nothing is wrong with the socket.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                stats.counts.verdict_errors += 1;
                if stats.counts.verdict_errors.is_power_of_two() {
                    log::warn!(
                        "NFQUEUE {num} refused a verdict for a packet it no longer holds ({} times so far)",
                        stats.counts.verdict_errors
                    );
                }
                continue;
            }
            Err(e) => {
                stats.counts.recv_errors += 1;
                if stats.counts.recv_errors.is_power_of_two() {
                    log::warn!(
                        "reading NFQUEUE {num} failed ({} times so far): {e}",
                        stats.counts.recv_errors
                    );
                }
                // Not a burst but a broken socket: do not spin.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let start = Instant::now();
        apply_commands(&commands, &mut setup, &mut generation, pending);
        stats.counts.packets += 1;
        // Every answer that arrived before this packet was sent is in the
        // ring buffer by now: learn them first. Parsing allocates, only
        // when answers came; with none, this is two reads of shared memory.
        if let Some(n) = &mut setup.names {
            n.drain();
        }

        let payload = msg.get_payload();
        // Every packet gets the policy's verdict; one appfw cannot read is
        // judged as from an unknown owner.
        let (key, unparsed) = match packet::flow_key(payload, setup.netns) {
            Ok(key) => (key, None),
            Err(u) => {
                stats.counts.unparsed += 1;
                (u.key, Some(u.why))
            }
        };
        // Through appfw's own chain, the filter in front of the queue
        // recorded the packet's socket (0: none). A record that is gone
        // means more packets passed that filter while this one waited than
        // the map holds: the queue overflows, and the packet is treated as
        // one the full queue dropped.
        // A TCP key (ports right after the fixed header) names one socket:
        // the kernel gives no two sockets one 4-tuple.
        let mut unique_key = false;
        let (socket, lost) = match setup
            .socket_verdicts
            .then(|| PacketKey::from_packet(payload))
        {
            Some(Some(k)) => {
                unique_key = k.proto == PROTO_TCP;
                match setup.attributor.store().queued_packet(&k) {
                    Some(q) => ((q.cookie != 0).then(|| Sender::from(q)), false),
                    None => (None, true),
                }
            }
            _ => (None, false),
        };
        if lost {
            stats.counts.sender_lost += 1;
        }
        // Whatever goes wrong while judging, the packet still gets a
        // verdict: the one for an unknown owner.
        let judged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if lost {
                return (Source::Unknown, None, setup.policy.overloaded(), None);
            }
            // The socket names the sender even when the packet cannot be
            // read; without one, such a packet's owner is unknown.
            if unparsed.is_some() && socket.as_ref().is_none_or(|s| s.owner.is_none()) {
                let flow = Flow::of(&key, None, None);
                return (
                    Source::Unknown,
                    None,
                    setup.policy.decide(None, &flow),
                    None,
                );
            }
            let a = setup.attributor.attribute(&key, socket.as_ref());
            let p = a.process.as_deref();
            // Rules see only a name this process was answered; reports
            // show the address's name even when another program asked.
            let (daddr, pid) = (key.endpoints().1.ip(), p.map_or(0, |p| p.pid));
            let names = setup.names.as_ref().map(|n| &n.names);
            let own = names.and_then(|n| n.lookup_own(daddr, pid, start));
            let host = own.or_else(|| names.and_then(|n| n.lookup(daddr, pid, start)));
            let flow = Flow::of(&key, p.map(|p| p.uid), own.map(|h| &**h));
            let decision = setup.policy.decide(p, &flow);
            (a.source, a.process, decision, host.cloned())
        }));
        let (source, process, decision, host) = judged.unwrap_or_else(|_| {
            stats.counts.internal_errors += 1;
            let flow = Flow::of(&key, None, None);
            (
                Source::Unknown,
                None,
                setup.policy.decide(None, &flow),
                None,
            )
        });
        let rule = decision
            .rule
            .and_then(|h| setup.policy.rule_label(h.index).cloned());
        let judged_unread = unparsed.is_some() && process.is_none();
        let event = Event {
            key,
            source,
            process,
            decision,
            latency_ns: 0,
            unparsed: unparsed.filter(|_| judged_unread),
            in_kernel: false,
            rule,
            host,
        };
        let verdict = event.decision.verdict;
        stats.count_decision(&event.decision);
        stats.talkers.count(event.process.as_deref(), verdict);
        stats.record_decision(start.elapsed().as_nanos() as u64);
        // The socket's later packets are decided in the kernel from now
        // on. Where two sockets may share a key (UDP, ICMP), this packet
        // goes back through the chain to meet its own socket's verdict: if
        // the record was another socket's, it comes back to be judged.
        let report = match event.decision.reason {
            _ if setup.debug => report::EVERY_FLOW,
            Reason::Monitor => report::NEW_DESTINATION,
            r if reported_reason(r) => report::EVERY_FLOW,
            _ => report::NONE,
        };
        // A verdict that may differ by destination is kept only for a
        // socket whose packets all go to one destination.
        let encoded = verdicts::encode(event.decision, generation, report);
        let stored = !judged_unread
            && !lost
            && (event.decision.scope == Scope::Process || unique_key)
            && socket
                .as_ref()
                .is_some_and(|s| setup.attributor.store_mut().set(s.cookie, encoded));
        // The process's later sockets get the verdict in the kernel: only
        // a verdict made for the process the socket's record names (not
        // for an unknown owner, whose next flow may be identified), and
        // only for an incarnation the kernel saw begin: start 0 (a process
        // older than appfw, or one whose start could not be recorded)
        // does not tell a pid's processes apart.
        if let Some(owner) = socket.as_ref().and_then(|s| s.owner).filter(|o| {
            stored
                && setup.kernel_verdicts
                && source == Source::Socket
                && event.decision.reason != Reason::Unknown
                // Only a verdict that holds for every destination, and not
                // a rule's: the kernel's encoding keeps no rule to name.
                && event.decision.scope == Scope::Process
                && event.decision.rule.is_none()
                && o.start_ns != 0
        }) {
            let v = ProcVerdict {
                verdict: encoded,
                uid: owner.uid,
                _pad: 0,
                applied: 0,
            };
            let key = ProcKey::new(owner.pid, owner.start_ns);
            if setup.attributor.store_mut().set_process(key, v) {
                stats.counts.process_verdicts += 1;
                if let Some(p) = &event.process {
                    kernel_flows.track(key, p.clone(), verdict);
                }
            }
        }
        match verdict {
            _ if stored && !unique_key => {
                match verdict {
                    Verdict::Accept => stats.counts.accepted += 1,
                    Verdict::Block(_) => stats.counts.blocked += 1,
                }
                msg.set_verdict(NfVerdict::Repeat);
            }
            Verdict::Accept => {
                stats.counts.accepted += 1;
                msg.set_verdict(NfVerdict::Accept);
            }
            Verdict::Block(Action::Drop) => {
                stats.counts.blocked += 1;
                msg.set_verdict(NfVerdict::Drop);
            }
            Verdict::Block(Action::Reject) => {
                // Back through OUTPUT, where appfw's mark rule rejects it.
                stats.counts.blocked += 1;
                msg.set_nfmark(REJECT_MARK);
                msg.set_verdict(NfVerdict::Repeat);
            }
        }
        if let Err(e) = queue.verdict(msg) {
            stats.counts.verdict_errors += 1;
            if stats.counts.verdict_errors.is_power_of_two() {
                log::warn!(
                    "sending a verdict to NFQUEUE {num} failed ({} times so far): {e}",
                    stats.counts.verdict_errors
                );
            }
        }
        let elapsed = start.elapsed().as_nanos() as u64;
        stats.record_latency(elapsed);

        // Waking the reporter costs a context switch: only for lines it
        // will print.
        let mut ev = event;
        if setup.debug || reported.wanted(&ev) {
            ev.latency_ns = elapsed;
            if setup.reports.try_send(ev).is_err() {
                stats.counts.reports_dropped += 1;
            }
        }
        if let Some(every) = setup.stats_every {
            if last_stats.elapsed() >= every {
                stats.counts.attribution = setup.attributor.counts();
                eprintln!("appfw: {stats}");
                if let Some(n) = &setup.names {
                    let c = n.names.counts;
                    eprintln!(
                        "appfw: names: {} held, {} DNS messages read ({} unreadable, {} not from the system's resolvers), {} learned, {} evicted",
                        n.names.len(),
                        c.messages,
                        c.unreadable,
                        c.untrusted,
                        c.learned,
                        c.evicted
                    );
                }
                last_stats = Instant::now();
            }
        }
    }
    shared.publish(&mut stats, &setup.attributor);
    stats
}

/// Sleeps until a packet is queued, the kernel reports a verdict it gave,
/// a signal arrives, or [`IDLE_WAKEUP`] passes.
fn wait<S: SocketVerdicts>(queue: &nfq::Queue, store: &S) {
    let timeout = Timespec::try_from(IDLE_WAKEUP).unwrap_or(Timespec {
        tv_sec: 0,
        tv_nsec: 500_000_000,
    });
    let result = rustix::event::poll(
        &mut [
            PollFd::new(queue, PollFlags::IN),
            PollFd::from_borrowed_fd(store.kernel_event_fd(), PollFlags::IN),
        ],
        Some(&timeout),
    );
    // EINTR is a wakeup; any other failure must not make the loop spin.
    if let Err(e) = result {
        if e != rustix::io::Errno::INTR {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Reports the flows the kernel decided by a process verdict since the
/// last look (it sends events only for verdicts that are reported). The
/// decision is the one this thread made for the process; only the flow is
/// new.
fn kernel_events<S: OwnerStore + SocketVerdicts>(
    setup: &mut Setup<S>,
    stats: &mut QueueStats,
    reported: &mut Reported,
) {
    while let Some(ev) = setup.attributor.store_mut().kernel_event() {
        stats.counts.kernel_events += 1;
        let Some(decision) = verdicts::decode(ev.verdict) else {
            continue;
        };
        let head = &ev.head[..(ev.head_len as usize).min(EVENT_HEAD_LEN)];
        let key = match packet::flow_key(head, setup.netns) {
            Ok(key) => key,
            Err(u) => u.key,
        };
        // The answer that named the destination came before this flow.
        let host = setup.names.as_mut().and_then(|n| {
            n.drain();
            let daddr = key.endpoints().1.ip();
            n.names
                .lookup(daddr, ev.owner.pid, std::time::Instant::now())
                .cloned()
        });
        let event = Event {
            key,
            source: Source::Socket,
            process: Some(setup.attributor.resolve_owner(&ev.owner)),
            decision,
            latency_ns: 0,
            unparsed: None,
            in_kernel: true,
            rule: None,
            host,
        };
        if (setup.debug || reported.wanted(&event)) && setup.reports.try_send(event).is_err() {
            stats.counts.reports_dropped += 1;
        }
    }
}

/// The flows the kernel decided by process verdicts, for the flows per
/// executable: the most recent process verdicts this thread stored, whose
/// `applied` counts it reads once a [`PUBLISH_EVERY`] (a map lookup each,
/// at most [`KernelFlows::TRACKED`]). Flows of verdicts pushed out of this
/// list are not counted.
#[derive(Default)]
struct KernelFlows {
    tracked: std::collections::VecDeque<TrackedVerdict>,
}

struct TrackedVerdict {
    key: ProcKey,
    process: Arc<crate::attribution::Process>,
    verdict: Verdict,
    counted: u64,
}

impl KernelFlows {
    const TRACKED: usize = 256;

    fn track(&mut self, key: ProcKey, process: Arc<crate::attribution::Process>, verdict: Verdict) {
        self.tracked.retain(|t| t.key != key);
        if self.tracked.len() >= Self::TRACKED {
            self.tracked.pop_front();
        }
        self.tracked.push_back(TrackedVerdict {
            key,
            process,
            verdict,
            counted: 0,
        });
    }

    /// Adds what the kernel decided since the last call; verdicts the
    /// kernel no longer holds (exec, exit, eviction) are dropped.
    fn count<S: SocketVerdicts>(&mut self, store: &S, talkers: &mut crate::talkers::Talkers) {
        self.tracked
            .retain_mut(|t| match store.process_applied(&t.key) {
                Some(applied) => {
                    talkers.add(
                        t.process.exe.as_deref(),
                        t.verdict,
                        applied.saturating_sub(t.counted),
                    );
                    t.counted = applied;
                    true
                }
                None => false,
            });
    }
}

/// Whether decisions for this reason are reported (monitor ones once per
/// program and destination).
fn reported_reason(reason: Reason) -> bool {
    match reason {
        Reason::InWhitelist | Reason::NotInBlacklist => false,
        Reason::Monitor
        | Reason::NotInWhitelist
        | Reason::InBlacklist
        | Reason::Unknown
        | Reason::Rule => true,
    }
}

/// Takes the commands waiting; between packets, so that a packet is judged
/// wholly under one policy.
fn apply_commands<S: OwnerStore + SocketVerdicts>(
    commands: &mpsc::Receiver<Command>,
    setup: &mut Setup<S>,
    generation: &mut u32,
    pending: &AtomicU64,
) {
    while let Ok(Command::SetPolicy {
        policy,
        kernel_verdicts,
    }) = commands.try_recv()
    {
        pending.fetch_sub(1, Ordering::SeqCst);
        setup.policy = policy;
        setup.kernel_verdicts = kernel_verdicts && setup.socket_verdicts;
        // Every socket's and process's verdict was made under the old
        // policy.
        *generation = generation.wrapping_add(1);
        if !setup.attributor.store_mut().set_generation(*generation) {
            log::error!(
                "voiding the socket verdicts after a reload failed: sockets keep their old verdicts until they close"
            );
        }
    }
}

/// Which verdicts the reporter needs: blocks, unknown owners, and in
/// monitor mode a program's first flow to a destination. Monitor accepts are
/// remembered in a fixed table of hashes (no allocation): a repeat is not
/// sent; a collision only costs one extra send, which the reporter, keeping
/// the exact set, drops.
struct Reported {
    seen: Box<[u64; Self::SLOTS]>,
}

impl Reported {
    const SLOTS: usize = 4096;

    fn new() -> Self {
        Reported {
            seen: Box::new([0; Self::SLOTS]),
        }
    }

    fn wanted(&mut self, ev: &Event) -> bool {
        use std::hash::{Hash, Hasher};
        match ev.decision.reason {
            r if !reported_reason(r) => false,
            Reason::Monitor => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                let pid = ev.process.as_deref().map(|p| p.pid).unwrap_or_default();
                (pid, ev.key.proto, ev.key.daddr, ev.key.dport).hash(&mut h);
                let hash = h.finish() | 1;
                let slot = &mut self.seen[(hash as usize) % Self::SLOTS];
                let new = *slot != hash;
                *slot = hash;
                new
            }
            Reason::Rule => matches!(ev.decision.verdict, Verdict::Block(_)),
            _ => true,
        }
    }
}
