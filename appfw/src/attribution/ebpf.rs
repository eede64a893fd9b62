//! [`OwnerStore`] over the BPF maps: each call is one map lookup syscall.

use appfw_common::{FlowKey, Owner, ProcKey, ProcRecord};

use super::OwnerStore;
use crate::bpf::Maps;

impl OwnerStore for Maps {
    fn flow(&self, key: &FlowKey) -> Option<Owner> {
        self.flows.get(key, 0).ok()
    }

    fn socket(&self, cookie: u64) -> Option<Owner> {
        self.sockets.get(&cookie, 0).ok()
    }

    fn closed_socket(&self, cookie: u64) -> Option<Owner> {
        self.closed_sockets.get(&cookie, 0).ok()
    }

    fn process_start(&self, pid: u32) -> Option<u64> {
        self.proc_start.get(&pid, 0).ok()
    }

    fn process(&self, key: &ProcKey) -> Option<ProcRecord> {
        // Live first; a process that exited has its record moved.
        self.procs
            .get(key, 0)
            .or_else(|_| self.exited.get(key, 0))
            .ok()
    }
}
