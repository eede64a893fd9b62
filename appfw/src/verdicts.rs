//! Verdicts per socket, written by the queue thread and applied by the
//! kernel: once a socket is judged, netfilter accepts, drops or rejects its
//! packets itself (appfw's chain matches them with the socket filters of
//! `appfw-ebpf/src/verdict.rs`), whatever their conntrack state; a packet
//! of a socket without a verdict comes to the queue. A reload bumps the
//! policy generation, which voids every verdict at once.

use appfw_common::{
    verdict::{action, SETTING_GENERATION},
    PacketKey, QueuedPacket, SocketVerdict,
};

use crate::{config::Action, policy::Verdict};

/// Where socket verdicts live: the BPF maps in the daemon, memory in tests.
pub trait SocketVerdicts {
    /// The socket that sent the queued packet with this key (and its
    /// owner), as the filter in front of the queue recorded it.
    fn queued_packet(&self, key: &PacketKey) -> Option<QueuedPacket>;
    /// Records `verdict` for socket `cookie` under policy `generation`.
    fn set(&mut self, cookie: u64, verdict: SocketVerdict) -> bool;
    /// Makes `generation` the one in force.
    fn set_generation(&mut self, generation: u32) -> bool;
}

/// The kernel's encoding of a verdict.
pub fn encode(verdict: Verdict, generation: u32) -> SocketVerdict {
    SocketVerdict {
        generation,
        action: match verdict {
            Verdict::Accept => action::ACCEPT,
            Verdict::Block(Action::Drop) => action::DROP,
            Verdict::Block(Action::Reject) => action::REJECT,
        },
        _pad: [0; 3],
    }
}

impl SocketVerdicts for crate::bpf::Maps {
    fn queued_packet(&self, key: &PacketKey) -> Option<QueuedPacket> {
        self.queued.get(key, 0).ok()
    }

    fn set(&mut self, cookie: u64, verdict: SocketVerdict) -> bool {
        self.verdicts.insert(cookie, verdict, 0).is_ok()
    }

    fn set_generation(&mut self, generation: u32) -> bool {
        self.settings.set(SETTING_GENERATION, generation, 0).is_ok()
    }
}
