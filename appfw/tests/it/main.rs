//! appfw's integration tests: real eBPF programs, real network namespaces,
//! the real binary. They need root and fail (never skip) without it.
//!
//! One file per user-visible feature; `testbed` builds the network.

mod attribution;
mod cli;
mod enforcement;
mod identity;
mod journal;
mod kernel_verdicts;
mod logging;
mod metrics;
mod mounts;
mod names;
mod netns;
mod packets;
mod rules;
mod service;
mod status;
mod testbed;
mod trace;
mod verdicts;
