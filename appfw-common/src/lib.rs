//! Types shared by appfw's kernel programs and its daemon.
//!
//! Everything here crosses the kernel/user boundary through BPF maps, so
//! every type is `#[repr(C)]`, has its padding written out as named fields
//! (the kernel hashes keys bytewise: stray padding bytes would make equal
//! keys differ), uses no `bool`, and documents its byte order.
//!
//! The `user` feature adds the `aya::Pod` impls the daemon needs; the eBPF
//! crate builds this crate without it.
#![no_std]

pub mod dns;
pub mod flow;
pub mod maps;
pub mod owner;
pub mod verdict;

pub use flow::FlowKey;
pub use maps::SocketEvent;
pub use owner::{KernelOffsets, Owner, ProcKey, ProcRecord};
pub use verdict::{KernelVerdictEvent, PacketKey, ProcVerdict, QueuedPacket, SocketVerdict};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is `#[repr(C)]`, `Copy`, has no implicit padding
    // (asserted in the modules' tests) and is valid for any bit pattern.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Owner {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PacketKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SocketVerdict {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::QueuedPacket {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcVerdict {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelVerdictEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::dns::DnsAnswer {}
}
