//! Verdicts per socket, and the rendezvous between a queued packet and the
//! socket that sent it.
//!
//! appfw's netfilter chain matches every outbound packet against socket
//! filters (`iptables -m bpf --object-pinned`) that look the packet's socket
//! cookie up in [`crate::maps::VERDICTS`]: a socket that appfw has judged
//! has its packets accepted, dropped or rejected in the kernel, whatever its
//! conntrack state. A packet of a socket without a verdict goes to the
//! queue, and the filter in front of the queue records its [`PacketKey`] ->
//! socket cookie in [`crate::maps::QUEUED`], so the daemon judges the
//! socket that sent the packet, not whichever socket recorded its tuple.
//!
//! A verdict the daemon made for a process is also kept per process
//! incarnation ([`crate::maps::PROC_VERDICTS`]): the filters give it to
//! that process's later sockets at their first packet, so a program appfw
//! has judged once does not pay a trip through the queue for each new
//! connection. The daemon remains the only one that decides; the kernel
//! only copies what it decided, and tells it ([`KernelVerdictEvent`]) when
//! a report is wanted.

/// [`SocketVerdict::action`] values.
pub mod action {
    pub const ACCEPT: u8 = 1;
    pub const DROP: u8 = 2;
    pub const REJECT: u8 = 3;
}

/// [`SocketVerdict::reason`] values: why the daemon decided, for the
/// reports of verdicts the kernel applies.
pub mod reason {
    pub const MONITOR: u8 = 1;
    pub const IN_WHITELIST: u8 = 2;
    pub const NOT_IN_WHITELIST: u8 = 3;
    pub const IN_BLACKLIST: u8 = 4;
    pub const NOT_IN_BLACKLIST: u8 = 5;
    pub const UNKNOWN: u8 = 6;
    /// A `[[rule]]` (socket verdicts only).
    pub const RULE: u8 = 7;
}

/// [`SocketVerdict::report`] values.
pub mod report {
    /// Not reported (an accept by the lists).
    pub const NONE: u8 = 0;
    /// Every flow (blocks, unknown owners, `--debug`).
    pub const EVERY_FLOW: u8 = 1;
    /// A process's first flow to each destination (`--monitor`): the
    /// kernel remembers which it reported ([`ReportedKey`]).
    pub const NEW_DESTINATION: u8 = 2;
}

/// A destination a process incarnation's flow was reported for
/// ([`crate::maps::REPORTED`]); addresses and port in network order, an
/// IPv4 address in bytes 0..4.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReportedKey {
    pub start_ns: u64,
    pub pid: u32,
    /// The IP protocol field of the packet's fixed header.
    pub proto: u8,
    pub _pad: u8,
    pub dport: [u8; 2],
    pub daddr: [u8; 16],
}

/// What the daemon decided for a socket, valid while
/// [`SocketVerdict::generation`] equals the policy generation in
/// [`crate::maps::SETTINGS`] (a reload bumps it, so every socket is judged
/// again under the new policy).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SocketVerdict {
    pub generation: u32,
    /// One of [`action`].
    pub action: u8,
    /// One of [`reason`].
    pub reason: u8,
    /// One of [`report`]: when the kernel gives this verdict to a new
    /// socket, whether it sends a [`KernelVerdictEvent`] (the daemon would
    /// have reported the flow).
    pub report: u8,
    /// 1: the verdict holds only for the destination it was made for (a
    /// rule on destinations applied): a new connect of the socket voids it.
    pub flow_scoped: u8,
}

/// A process incarnation's verdict ([`crate::maps::PROC_VERDICTS`], keyed
/// by [`crate::ProcKey`]), given by the kernel to each new socket of that
/// process whose owner has `uid` (a process that changed user is judged
/// again).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcVerdict {
    pub verdict: SocketVerdict,
    pub uid: u32,
    pub _pad: u32,
    /// Sockets the kernel gave this verdict to (written by the kernel).
    pub applied: u64,
}

/// Bytes of a packet carried in a [`KernelVerdictEvent`]: enough for the
/// fixed headers and the ports in the common case.
pub const EVENT_HEAD_LEN: usize = 128;

/// The kernel gave a process's verdict to a new socket at its first
/// packet (see [`SocketVerdict::report`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KernelVerdictEvent {
    /// The socket's owner, as the hooks recorded it.
    pub owner: crate::Owner,
    pub verdict: SocketVerdict,
    /// Bytes of `head` that hold the packet.
    pub head_len: u32,
    pub _pad: u32,
    /// The packet from its IP header on, as netfilter saw it.
    pub head: [u8; EVENT_HEAD_LEN],
}

/// What the filter in front of the queue recorded for a packet: its socket
/// and, when the kernel hooks know it, the socket's owner at that moment
/// (one lookup gives the daemon both).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct QueuedPacket {
    /// 0: the packet has no socket.
    pub cookie: u64,
    /// Valid when `owner_known` is 1.
    pub owner: crate::Owner,
    pub owner_known: u32,
    pub _pad: u32,
}

/// Index of the policy generation (u32) in [`crate::maps::SETTINGS`].
pub const SETTING_GENERATION: u32 = 0;

/// A key both sides compute from a packet's first bytes without parsing
/// it: the IP version's protocol field, the addresses, and the four bytes
/// at the start of what follows the fixed IP header (the ports for TCP and
/// UDP). It is a rendezvous, not a description: an IPv6 packet with
/// extension headers or an ICMP packet still gets a key, and a collision
/// only sends a packet through the queue once more (see the module doc).
///
/// Layout: addresses in network order, an IPv4 address in bytes 0..4 with
/// 4..16 zero; `l4` as on the wire. Every byte is set: build it with
/// [`PacketKey::from_packet`] (userspace) or [`PacketKey::v4`] /
/// [`PacketKey::v6`] (kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PacketKey {
    /// 4 or 6.
    pub version: u8,
    /// IPv4 protocol / IPv6 next header of the fixed header.
    pub proto: u8,
    pub _pad: [u8; 2],
    pub l4: [u8; 4],
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;

impl PacketKey {
    #[inline(always)]
    pub fn v4(proto: u8, saddr: [u8; 4], daddr: [u8; 4], l4: [u8; 4]) -> Self {
        let mut k = PacketKey {
            version: 4,
            proto,
            l4,
            ..PacketKey::default()
        };
        k.saddr[..4].copy_from_slice(&saddr);
        k.daddr[..4].copy_from_slice(&daddr);
        k
    }

    #[inline(always)]
    pub fn v6(proto: u8, saddr: [u8; 16], daddr: [u8; 16], l4: [u8; 4]) -> Self {
        PacketKey {
            version: 6,
            proto,
            _pad: [0; 2],
            l4,
            saddr,
            daddr,
        }
    }

    /// The key of a packet given from its IP header on. `l4` is zero when
    /// the packet ends before those four bytes (the kernel side reads the
    /// whole packet, the queue a copy of at least its first 128 bytes).
    pub fn from_packet(p: &[u8]) -> Option<Self> {
        let l4_at = |off: usize| -> [u8; 4] {
            match p.get(off..off + 4) {
                Some(b) => [b[0], b[1], b[2], b[3]],
                None => [0; 4],
            }
        };
        match p.first()? >> 4 {
            4 if p.len() >= 20 => {
                let ihl = usize::from(p[0] & 0x0f) * 4;
                let mut s = [0; 4];
                let mut d = [0; 4];
                s.copy_from_slice(&p[12..16]);
                d.copy_from_slice(&p[16..20]);
                Some(Self::v4(p[9], s, d, l4_at(ihl)))
            }
            6 if p.len() >= IPV6_HEADER_LEN => {
                let mut s = [0; 16];
                let mut d = [0; 16];
                s.copy_from_slice(&p[8..24]);
                d.copy_from_slice(&p[24..40]);
                Some(Self::v6(p[6], s, d, l4_at(IPV6_HEADER_LEN)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<SocketVerdict>(), 4 + 1 + 1 + 1 + 1);
        assert_eq!(size_of::<ProcVerdict>(), 8 + 4 + 4 + 8);
        assert_eq!(size_of::<ReportedKey>(), 8 + 4 + 1 + 1 + 2 + 16);
        assert_eq!(
            size_of::<KernelVerdictEvent>(),
            size_of::<crate::Owner>() + 8 + 4 + 4 + EVENT_HEAD_LEN
        );
        assert_eq!(size_of::<PacketKey>(), 1 + 1 + 2 + 4 + 16 + 16);
        assert_eq!(
            size_of::<QueuedPacket>(),
            8 + size_of::<crate::Owner>() + 4 + 4
        );
    }

    #[test]
    fn ipv4_key_reads_the_ports_after_the_options() {
        // IHL 6: a 24-byte header with one option word.
        let mut p = [0u8; 28];
        p[0] = 0x46;
        p[9] = 17;
        p[12..16].copy_from_slice(&[198, 51, 100, 1]);
        p[16..20].copy_from_slice(&[198, 51, 100, 2]);
        p[24..28].copy_from_slice(&[0x9c, 0x40, 0x23, 0x28]);
        let k = PacketKey::from_packet(&p).unwrap();
        assert_eq!(
            k,
            PacketKey::v4(
                17,
                [198, 51, 100, 1],
                [198, 51, 100, 2],
                [0x9c, 0x40, 0x23, 0x28]
            )
        );
        // Cut before the ports: the key still exists, with l4 zero.
        assert_eq!(PacketKey::from_packet(&p[..26]).unwrap().l4, [0; 4]);
    }

    #[test]
    fn ipv6_key_takes_the_bytes_after_the_fixed_header() {
        let mut p = [0u8; 48];
        p[0] = 0x60;
        p[6] = 43; // a routing header follows: its first bytes are the l4 part
        p[8] = 0x20;
        p[24] = 0x20;
        p[40..44].copy_from_slice(&[17, 4, 4, 2]);
        let k = PacketKey::from_packet(&p).unwrap();
        assert_eq!((k.version, k.proto, k.l4), (6, 43, [17, 4, 4, 2]));
        assert_eq!(k.saddr[0], 0x20);
    }

    #[test]
    fn garbage_has_no_key() {
        assert_eq!(PacketKey::from_packet(&[]), None);
        assert_eq!(PacketKey::from_packet(&[0x45; 10]), None);
        assert_eq!(PacketKey::from_packet(&[0x60; 39]), None);
        assert_eq!(PacketKey::from_packet(&[0x10; 60]), None);
    }
}
