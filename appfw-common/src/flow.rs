//! The key of a packet flow as both sides see it.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `AF_INET`, as the kernel numbers it.
pub const AF_INET: u8 = 2;
/// `AF_INET6`, as the kernel numbers it.
pub const AF_INET6: u8 = 10;
/// `IPPROTO_TCP`.
pub const PROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const PROTO_UDP: u8 = 17;

/// One direction of a flow inside one network namespace, as the sender sees
/// it: `s*` is the local end, `d*` the remote end.
///
/// Byte order: addresses are in network order as they appear on the wire;
/// an IPv4 address fills bytes 0..4 and bytes 4..16 stay zero. Ports are in
/// host order. Build keys with [`FlowKey::v4`] / [`FlowKey::v6`] so that
/// padding is zeroed and IPv4-mapped IPv6 addresses are folded to IPv4 (a
/// dual-stack socket talking to `::ffff:a.b.c.d` sends IPv4 packets).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Network namespace cookie (`SO_NETNS_COOKIE`, `bpf_get_netns_cookie`).
    pub netns: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    pub _pad: [u8; 2],
}

impl FlowKey {
    /// A key for an IPv4 flow; addresses in network byte order.
    #[inline(always)]
    pub fn v4(
        netns: u64,
        proto: u8,
        saddr: [u8; 4],
        sport: u16,
        daddr: [u8; 4],
        dport: u16,
    ) -> Self {
        let mut key = FlowKey {
            netns,
            sport,
            dport,
            family: AF_INET,
            proto,
            ..FlowKey::default()
        };
        key.saddr[..4].copy_from_slice(&saddr);
        key.daddr[..4].copy_from_slice(&daddr);
        key
    }

    /// A key for an IPv6 flow; folds IPv4-mapped addresses to IPv4.
    #[inline(always)]
    pub fn v6(
        netns: u64,
        proto: u8,
        saddr: [u8; 16],
        sport: u16,
        daddr: [u8; 16],
        dport: u16,
    ) -> Self {
        // A v4-mapped destination means the packets are IPv4. The source of
        // such a socket is mapped too, or unspecified before routing.
        if is_v4_mapped(&daddr) {
            let s = if is_v4_mapped(&saddr) {
                [saddr[12], saddr[13], saddr[14], saddr[15]]
            } else {
                [0; 4]
            };
            return Self::v4(
                netns,
                proto,
                s,
                sport,
                [daddr[12], daddr[13], daddr[14], daddr[15]],
                dport,
            );
        }
        FlowKey {
            netns,
            saddr,
            daddr,
            sport,
            dport,
            family: AF_INET6,
            proto,
            _pad: [0; 2],
        }
    }

    /// The same flow with the source address unspecified: how an
    /// unconnected UDP send is recorded when the socket is bound to the
    /// wildcard address (the kernel has not routed the packet yet).
    #[inline(always)]
    pub fn without_saddr(&self) -> Self {
        FlowKey {
            saddr: [0; 16],
            ..*self
        }
    }

    /// True when this key carries an unspecified source address.
    #[inline(always)]
    pub fn saddr_is_unspecified(&self) -> bool {
        self.saddr == [0; 16]
    }
}

impl FlowKey {
    /// A key from socket addresses (`local` is the sender's end); mixed
    /// families are IPv6 with the IPv4 side mapped, then folded as in
    /// [`FlowKey::v6`].
    pub fn from_endpoints(netns: u64, proto: u8, local: SocketAddr, remote: SocketAddr) -> Self {
        match (local.ip(), remote.ip()) {
            (IpAddr::V4(l), IpAddr::V4(r)) => Self::v4(
                netns,
                proto,
                l.octets(),
                local.port(),
                r.octets(),
                remote.port(),
            ),
            (l, r) => Self::v6(
                netns,
                proto,
                v6_octets(l),
                local.port(),
                v6_octets(r),
                remote.port(),
            ),
        }
    }

    /// The (local, remote) socket addresses of this flow.
    pub fn endpoints(&self) -> (SocketAddr, SocketAddr) {
        let ip = |a: &[u8; 16]| -> IpAddr {
            if self.family == AF_INET {
                IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
            } else {
                IpAddr::V6(Ipv6Addr::from(*a))
            }
        };
        (
            SocketAddr::new(ip(&self.saddr), self.sport),
            SocketAddr::new(ip(&self.daddr), self.dport),
        )
    }
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// `::ffff:a.b.c.d`.
#[inline(always)]
pub fn is_v4_mapped(a: &[u8; 16]) -> bool {
    a[..10] == [0; 10] && a[10] == 0xff && a[11] == 0xff
}

/// Turns four 32-bit words as the kernel's BPF contexts hold them
/// (`local_ip6`, `user_ip6`: network byte order inside each word) into bytes.
#[inline(always)]
pub fn ip6_from_words(words: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        // The words hold network-order bytes, so their in-memory (native)
        // byte layout already is the wire layout.
        let b = words[i].to_ne_bytes();
        out[i * 4] = b[0];
        out[i * 4 + 1] = b[1];
        out[i * 4 + 2] = b[2];
        out[i * 4 + 3] = b[3];
        i += 1;
    }
    out
}

/// Turns a 32-bit IPv4 word in network byte order (as BPF contexts hold
/// `remote_ip4`, `user_ip4`) into bytes.
#[inline(always)]
pub fn ip4_from_word(word: u32) -> [u8; 4] {
    word.to_ne_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layout_has_no_implicit_padding() {
        assert_eq!(size_of::<FlowKey>(), 8 + 16 + 16 + 2 + 2 + 1 + 1 + 2);
        assert_eq!(size_of::<FlowKey>() % 8, 0);
    }

    #[test]
    fn v4_key_zeroes_the_unused_address_bytes() {
        let k = FlowKey::v4(
            7,
            PROTO_TCP,
            [198, 51, 100, 1],
            40000,
            [198, 51, 100, 2],
            80,
        );
        assert_eq!(&k.saddr[..4], &[198, 51, 100, 1]);
        assert_eq!(&k.saddr[4..], &[0; 12]);
        assert_eq!(k.family, AF_INET);
    }

    #[test]
    fn v4_mapped_v6_flow_is_folded_to_v4() {
        let mut s = [0u8; 16];
        s[10] = 0xff;
        s[11] = 0xff;
        s[12..].copy_from_slice(&[198, 51, 100, 1]);
        let mut d = s;
        d[15] = 2;
        let k = FlowKey::v6(1, PROTO_UDP, s, 5000, d, 53);
        assert_eq!(
            k,
            FlowKey::v4(1, PROTO_UDP, [198, 51, 100, 1], 5000, [198, 51, 100, 2], 53)
        );
    }

    #[test]
    fn v4_mapped_destination_with_unspecified_source_folds_to_wildcard() {
        let mut d = [0u8; 16];
        d[10] = 0xff;
        d[11] = 0xff;
        d[12..].copy_from_slice(&[198, 51, 100, 2]);
        let k = FlowKey::v6(1, PROTO_UDP, [0; 16], 5000, d, 53);
        assert_eq!(k.family, AF_INET);
        assert!(k.saddr_is_unspecified());
    }

    #[test]
    fn word_conversion_keeps_wire_order() {
        let word = u32::from_ne_bytes([198, 51, 100, 7]);
        assert_eq!(ip4_from_word(word), [198, 51, 100, 7]);
        let words = [
            u32::from_ne_bytes([0x20, 0x01, 0x0d, 0xb8]),
            0,
            0,
            u32::from_ne_bytes([0, 0, 0, 1]),
        ];
        let b = ip6_from_words(words);
        assert_eq!(&b[..4], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(b[15], 1);
    }

    #[test]
    fn endpoints_round_trip_and_fold_mapped_addresses() {
        let l: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        let r: SocketAddr = "[2001:db8::2]:53".parse().unwrap();
        let k = FlowKey::from_endpoints(1, PROTO_UDP, l, r);
        assert_eq!(k.endpoints(), (l, r));
        let l4: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        let r4: SocketAddr = "198.51.100.2:53".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:198.51.100.2]:53".parse().unwrap();
        let k = FlowKey::from_endpoints(1, PROTO_UDP, l4, mapped);
        assert_eq!(k.family, AF_INET);
        assert_eq!(k.endpoints(), (l4, r4));
    }

    #[test]
    fn without_saddr_only_clears_the_source() {
        let k = FlowKey::v4(3, PROTO_UDP, [198, 51, 100, 1], 1, [198, 51, 100, 2], 2);
        let w = k.without_saddr();
        assert!(w.saddr_is_unspecified());
        assert_eq!(
            (w.daddr, w.sport, w.dport, w.netns),
            (k.daddr, k.sport, k.dport, k.netns)
        );
    }
}
