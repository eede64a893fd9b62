//! Verdicts kept in the kernel, written by the queue thread and applied by
//! appfw's netfilter chain (the socket filters of
//! `appfw-ebpf/src/verdict.rs`), whatever the packets' conntrack state:
//!
//! - per socket: once a socket is judged, netfilter accepts, drops or
//!   rejects its packets itself;
//! - per process incarnation (`kernel-verdicts`, on by default): a new
//!   socket of a process the daemon has judged gets that verdict at its
//!   first packet, so a long-lived program's later connections never go
//!   through the queue. When the daemon would report such a flow, the
//!   kernel sends an event instead ([`KernelVerdictEvent`]).
//!
//! The daemon makes every verdict; the kernel only copies them. A reload
//! bumps the policy generation, which voids all of them at once; exec and
//! exit delete a process's verdict in the kernel.

use std::os::fd::{AsFd, BorrowedFd};

use appfw_common::{
    verdict::{action, reason, SETTING_GENERATION},
    KernelVerdictEvent, PacketKey, ProcKey, ProcVerdict, QueuedPacket, SocketVerdict,
};

use crate::{
    config::Action,
    policy::{Decision, Reason, Scope, Verdict},
};

/// Where verdicts live: the BPF maps in the daemon.
pub trait SocketVerdicts {
    /// The socket that sent the queued packet with this key (and its
    /// owner), as the filter in front of the queue recorded it.
    fn queued_packet(&self, key: &PacketKey) -> Option<QueuedPacket>;
    /// Records `verdict` for socket `cookie`.
    fn set(&mut self, cookie: u64, verdict: SocketVerdict) -> bool;
    /// Records `verdict` for the process incarnation `process`.
    fn set_process(&mut self, process: ProcKey, verdict: ProcVerdict) -> bool;
    /// How many sockets the kernel gave the verdict of `process` so far.
    fn process_applied(&self, process: &ProcKey) -> Option<u64>;
    /// Makes `generation` the one in force.
    fn set_generation(&mut self, generation: u32) -> bool;
    /// The next process verdict the kernel gave to a new socket and
    /// reported; reading it takes no system call.
    fn kernel_event(&mut self) -> Option<KernelVerdictEvent>;
    /// What to poll for those events.
    fn kernel_event_fd(&self) -> BorrowedFd<'_>;
}

/// The kernel's encoding of a decision; `report` (one of
/// `appfw_common::verdict::report`) says when the kernel sends an event as
/// it gives this verdict to a new socket.
pub fn encode(decision: Decision, generation: u32, report: u8) -> SocketVerdict {
    SocketVerdict {
        generation,
        action: match decision.verdict {
            Verdict::Accept => action::ACCEPT,
            Verdict::Block(Action::Drop) => action::DROP,
            Verdict::Block(Action::Reject) => action::REJECT,
        },
        reason: match decision.reason {
            Reason::Monitor => reason::MONITOR,
            Reason::InWhitelist => reason::IN_WHITELIST,
            Reason::NotInWhitelist => reason::NOT_IN_WHITELIST,
            Reason::InBlacklist => reason::IN_BLACKLIST,
            Reason::NotInBlacklist => reason::NOT_IN_BLACKLIST,
            Reason::Unknown => reason::UNKNOWN,
            Reason::Rule => reason::RULE,
        },
        report,
        flow_scoped: u8::from(decision.scope == Scope::Flow),
    }
}

/// The decision a kernel verdict stands for; `None` for values the daemon
/// never writes.
pub fn decode(v: SocketVerdict) -> Option<Decision> {
    let verdict = match v.action {
        action::ACCEPT => Verdict::Accept,
        action::DROP => Verdict::Block(Action::Drop),
        action::REJECT => Verdict::Block(Action::Reject),
        _ => return None,
    };
    let reason = match v.reason {
        reason::MONITOR => Reason::Monitor,
        reason::IN_WHITELIST => Reason::InWhitelist,
        reason::NOT_IN_WHITELIST => Reason::NotInWhitelist,
        reason::IN_BLACKLIST => Reason::InBlacklist,
        reason::NOT_IN_BLACKLIST => Reason::NotInBlacklist,
        reason::UNKNOWN => Reason::Unknown,
        reason::RULE => Reason::Rule,
        _ => return None,
    };
    // Process verdicts are kept only for decisions that hold for every
    // destination and came from no rule (see the queue).
    Some(Decision {
        verdict,
        reason,
        scope: if v.flow_scoped != 0 {
            Scope::Flow
        } else {
            Scope::Process
        },
        rule: None,
    })
}

impl SocketVerdicts for crate::bpf::Maps {
    fn queued_packet(&self, key: &PacketKey) -> Option<QueuedPacket> {
        self.queued.get(key, 0).ok()
    }

    fn set(&mut self, cookie: u64, verdict: SocketVerdict) -> bool {
        self.verdicts.insert(cookie, verdict, 0).is_ok()
    }

    fn set_process(&mut self, process: ProcKey, verdict: ProcVerdict) -> bool {
        self.proc_verdicts.insert(process, verdict, 0).is_ok()
    }

    fn process_applied(&self, process: &ProcKey) -> Option<u64> {
        self.proc_verdicts.get(process, 0).ok().map(|v| v.applied)
    }

    fn set_generation(&mut self, generation: u32) -> bool {
        self.settings.set(SETTING_GENERATION, generation, 0).is_ok()
    }

    fn kernel_event_fd(&self) -> BorrowedFd<'_> {
        self.verdict_events.as_fd()
    }

    fn kernel_event(&mut self) -> Option<KernelVerdictEvent> {
        let item = self.verdict_events.next()?;
        (item.len() >= std::mem::size_of::<KernelVerdictEvent>()).then(|| {
            // SAFETY: the kernel wrote a whole KernelVerdictEvent (length
            // checked), a plain-data type valid for any bytes; the ring
            // buffer gives no alignment guarantee beyond 8, so read
            // unaligned.
            unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<KernelVerdictEvent>()) }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appfw_common::verdict::report;

    #[test]
    fn every_decision_survives_the_kernel_encoding() {
        let verdicts = [
            Verdict::Accept,
            Verdict::Block(Action::Drop),
            Verdict::Block(Action::Reject),
        ];
        let reasons = [
            Reason::Monitor,
            Reason::InWhitelist,
            Reason::NotInWhitelist,
            Reason::InBlacklist,
            Reason::NotInBlacklist,
            Reason::Unknown,
            Reason::Rule,
        ];
        for verdict in verdicts {
            for reason in reasons {
                let d = Decision {
                    verdict,
                    reason,
                    scope: Scope::Process,
                    rule: None,
                };
                let v = encode(d, 7, report::EVERY_FLOW);
                assert_eq!((v.generation, v.report), (7, report::EVERY_FLOW));
                assert_eq!(decode(v), Some(d));
            }
        }
        let garbage = SocketVerdict {
            action: 9,
            ..encode(
                Decision {
                    verdict: Verdict::Accept,
                    reason: Reason::Monitor,
                    scope: Scope::Process,
                    rule: None,
                },
                0,
                report::NONE,
            )
        };
        assert_eq!(decode(garbage), None);
    }
}
