//! appfw: a per-application outbound firewall.
//!
//! A packet's way through the daemon, module by module:
//!
//! ```text
//! kernel hook (appfw-ebpf) -> BPF map ........ bpf.rs loads and attaches
//! netfilter: socket verdict? ................... netfilter.rs (chain), verdicts.rs
//! NFQUEUE -> FlowKey, socket cookie ............ queue.rs, packet.rs
//! socket / FlowKey -> owner (pid, exe, cmdline)  attribution/
//! owner -> executed file (device, inode) ....... identity.rs (btf.rs: offsets)
//! DNS answers (ring buffer) -> destination name  names/ (hickory-proto parses)
//! owner, flow -> decision ...................... policy.rs, rules.rs ([[rule]])
//! decision -> socket verdict, packet verdict ... queue.rs, verdicts.rs
//! verdict -> report line ....................... report.rs (log, trace file, syslog)
//! verdict -> counters, flows per executable .... stats.rs, talkers.rs
//! ```
//!
//! `daemon.rs` wires these together; `netfilter.rs` owns the rules that
//! apply socket verdicts and send the rest to the queue; `trace.rs` is
//! `appfw trace`, which uses the same attribution without a queue.

pub mod attribution;
pub mod bpf;
pub mod btf;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod escape;
pub mod identity;
pub mod kernel_queue;
pub mod names;
pub mod netfilter;
pub mod packet;
pub mod policy;
pub mod queue;
pub mod report;
pub mod rules;
pub mod service;
pub mod stats;
pub mod system;
pub mod talkers;
pub mod trace;
pub mod verdicts;
