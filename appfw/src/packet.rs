//! A queued packet's bytes -> the [`FlowKey`] the eBPF hooks recorded.
//!
//! NFQUEUE hands over the packet from the IP header on; the queue copies
//! whole packets (see `queue::COPY_RANGE`), so every header is there.
//! Parsing borrows the buffer: nothing is allocated.
//!
//! Every protocol yields a key: TCP and UDP their ports, ICMP echo its
//! identifier as the source port (what a ping socket is bound to), anything
//! else ports 0. A packet that cannot be read to its transport header is
//! [`Unparsed`]: the caller judges it as from an unknown owner, never
//! accepts it by default.
//!
//! Source routing moves the socket's destination out of the IP header: the
//! kernel sends to the first hop and writes the destination the program
//! asked for into the routing header's last slot. The hooks recorded that
//! destination, so the key uses it; otherwise a program could hide behind
//! a routing header whose first hop is where it wants to go.

use appfw_common::{
    flow::{PROTO_TCP, PROTO_UDP},
    FlowKey,
};
use etherparse::{IpNumber, LaxIpPayloadSlice, LaxNetSlice, LaxSlicedPacket, TransportSlice};

/// `IPPROTO_ICMP`.
pub const PROTO_ICMP: u8 = 1;
/// `IPPROTO_ICMPV6`.
pub const PROTO_ICMPV6: u8 = 58;

/// A packet appfw could not read to its transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unparsed {
    /// What is known: addresses and protocol when the IP header was read,
    /// zeros otherwise; ports are 0.
    pub key: FlowKey,
    /// What was wrong, for the report line.
    pub why: &'static str,
}

/// The flow of an outbound packet in namespace `netns`.
pub fn flow_key(packet: &[u8], netns: u64) -> Result<FlowKey, Unparsed> {
    let unknown = |why| Unparsed {
        key: FlowKey {
            netns,
            ..FlowKey::default()
        },
        why,
    };
    let sliced = LaxSlicedPacket::from_ip(packet).map_err(|_| unknown("no IP header"))?;
    let Some(net) = &sliced.net else {
        return Err(unknown("no IP header"));
    };
    let (mut key, payload) = match net {
        LaxNetSlice::Ipv4(ip) => {
            let h = ip.header();
            let daddr = ipv4_final_destination(h.options()).unwrap_or(h.destination());
            // After an authentication header, if any: what carries the ports.
            let proto = ip.payload().ip_number.0;
            (
                FlowKey::v4(netns, proto, h.source(), 0, daddr, 0),
                ip.payload(),
            )
        }
        LaxNetSlice::Ipv6(ip) => {
            let h = ip.header();
            let exts = ip.extensions();
            let daddr = exts
                .first_header()
                .and_then(|first| routing_header(first, exts.slice()))
                .and_then(ipv6_final_destination)
                .unwrap_or(h.destination());
            let proto = ip.payload().ip_number.0;
            (
                FlowKey::v6(netns, proto, h.source(), 0, daddr, 0),
                ip.payload(),
            )
        }
        LaxNetSlice::Arp(_) => return Err(unknown("not IP")),
    };
    let fail = |key: FlowKey, why| Err(Unparsed { key, why });
    if sliced.stop_err.is_some() && sliced.transport.is_none() {
        // Covers truncated or malformed extension headers: the payload
        // protocol etherparse reports then is the header it stopped at.
        return fail(key, "malformed or truncated headers");
    }
    if payload.fragmented {
        return fail(key, "an IP fragment");
    }
    match (&sliced.transport, payload.ip_number.0) {
        (Some(TransportSlice::Tcp(t)), _) => {
            (key.sport, key.dport) = (t.source_port(), t.destination_port());
        }
        (Some(TransportSlice::Udp(u)), _) => {
            (key.sport, key.dport) = (u.source_port(), u.destination_port());
        }
        (Some(TransportSlice::Icmpv4(i)), _) => {
            // Echo request (8) and reply (0): the identifier.
            if matches!(i.type_u8(), 0 | 8) {
                key.sport = echo_identifier(i.bytes5to8());
            }
        }
        (Some(TransportSlice::Icmpv6(i)), _) => {
            if matches!(i.type_u8(), 128 | 129) {
                key.sport = echo_identifier(i.bytes5to8());
            }
        }
        (None, PROTO_TCP | PROTO_UDP | PROTO_ICMP | PROTO_ICMPV6) => {
            return fail(key, "truncated transport header");
        }
        (None, _) if is_ipv6_extension(payload) => {
            // etherparse stops at extension headers it does not know
            // (mobility, HIP, shim6, experimental): what follows is unread.
            return fail(key, "an IPv6 extension header appfw cannot read");
        }
        // Another protocol: addresses only.
        (Some(TransportSlice::Igmp(_)) | None, _) => {}
    }
    Ok(key)
}

fn echo_identifier(b: [u8; 4]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// An extension header etherparse does not walk (mobility, HIP, shim6,
/// experimental). ESP is not one: nothing after it is readable anyway.
fn is_ipv6_extension(p: &LaxIpPayloadSlice) -> bool {
    p.ip_number.is_ipv6_ext_header_value()
        && p.ip_number != IpNumber::ENCAPSULATING_SECURITY_PAYLOAD
}

/// The routing header among the extension headers etherparse read (`exts`,
/// starting with header type `first`). Walked here with bounds checks:
/// etherparse 0.21's own iterator reads past the end of a chain that lax
/// parsing cut short (found by fuzzing).
fn routing_header(first: IpNumber, mut exts: &[u8]) -> Option<&[u8]> {
    let mut kind = first;
    loop {
        let len = match kind {
            IpNumber::IPV6_HEADER_HOP_BY_HOP
            | IpNumber::IPV6_ROUTE_HEADER
            | IpNumber::IPV6_DESTINATION_OPTIONS => (usize::from(*exts.get(1)?) + 1) * 8,
            IpNumber::IPV6_FRAGMENTATION_HEADER => 8,
            IpNumber::AUTHENTICATION_HEADER => (usize::from(*exts.get(1)?) + 2) * 4,
            _ => return None,
        };
        let header = exts.get(..len)?;
        if kind == IpNumber::IPV6_ROUTE_HEADER {
            return Some(header);
        }
        kind = IpNumber(header[0]);
        exts = &exts[len..];
    }
}

/// The destination the sending socket used, from a routing header the
/// kernel built (`ipv6_push_rthdr0/4`): types 0 and 2 keep it in the last
/// address, type 4 (segment routing) in segment 0.
fn ipv6_final_destination(rh: &[u8]) -> Option<[u8; 16]> {
    let addr = |at: usize| -> Option<[u8; 16]> { rh.get(at..at + 16)?.try_into().ok() };
    match *rh.get(2)? {
        0 | 2 => {
            let n = rh.len().checked_sub(8)? / 16;
            (n > 0).then(|| addr(8 + (n - 1) * 16)).flatten()
        }
        4 => addr(8),
        _ => None,
    }
}

/// The same for IPv4 source routing (loose 131, strict 137): the kernel
/// (`ip_options_build`) writes the socket's destination into the last slot.
fn ipv4_final_destination(mut opts: &[u8]) -> Option<[u8; 4]> {
    while let Some(&kind) = opts.first() {
        match kind {
            0 => return None,
            1 => opts = &opts[1..],
            _ => {
                let len = usize::from(*opts.get(1)?);
                if len < 2 || len > opts.len() {
                    return None;
                }
                if matches!(kind, 131 | 137) && len >= 7 {
                    // type, length, pointer, then addresses of 4 bytes
                    let n = (len - 3) / 4;
                    let at = 3 + (n - 1) * 4;
                    return opts[at..at + 4].try_into().ok();
                }
                opts = &opts[len..];
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<std::net::Ipv6Addr>().unwrap().octets()
    }

    const S4: [u8; 4] = [198, 51, 100, 1];
    const D4: [u8; 4] = [198, 51, 100, 2];

    #[test]
    fn tcp_v4_syn_gives_its_tuple() {
        let b = PacketBuilder::ipv4(S4, D4, 64)
            .tcp(40000, 80, 1, 1024)
            .syn();
        let mut buf = Vec::new();
        b.write(&mut buf, &[]).unwrap();
        let k = flow_key(&buf, 5).unwrap();
        assert_eq!(k, FlowKey::v4(5, PROTO_TCP, S4, 40000, D4, 80));
    }

    #[test]
    fn udp_v6_gives_its_tuple() {
        let (s, d) = (v6("2001:db8::1"), v6("2001:db8::2"));
        let b = PacketBuilder::ipv6(s, d, 64).udp(5353, 53);
        let mut buf = Vec::new();
        b.write(&mut buf, b"q").unwrap();
        let k = flow_key(&buf, 1).unwrap();
        assert_eq!(k, FlowKey::v6(1, PROTO_UDP, s, 5353, d, 53));
    }

    #[test]
    fn icmp_echo_gives_its_identifier_as_the_port() {
        let b = PacketBuilder::ipv4(S4, D4, 64).icmpv4_echo_request(0x1234, 1);
        let mut buf = Vec::new();
        b.write(&mut buf, b"ping").unwrap();
        assert_eq!(
            flow_key(&buf, 1).unwrap(),
            FlowKey::v4(1, PROTO_ICMP, S4, 0x1234, D4, 0)
        );
        let (s, d) = (v6("2001:db8::1"), v6("2001:db8::2"));
        let b = PacketBuilder::ipv6(s, d, 64).icmpv6_echo_request(7, 1);
        let mut buf = Vec::new();
        b.write(&mut buf, b"ping").unwrap();
        assert_eq!(
            flow_key(&buf, 1).unwrap(),
            FlowKey::v6(1, PROTO_ICMPV6, s, 7, d, 0)
        );
    }

    #[test]
    fn other_protocols_give_addresses_only() {
        // GRE (47) with a few payload bytes.
        let mut buf = ipv4_header(47, 4, &[]);
        buf.extend_from_slice(&[0, 0, 8, 0]);
        assert_eq!(flow_key(&buf, 1).unwrap(), FlowKey::v4(1, 47, S4, 0, D4, 0));
    }

    #[test]
    fn garbage_is_unparsed() {
        for bytes in [
            &[][..],
            &[0x45, 0, 0],
            &[0x60; 39],
            &[0xff; 64],
            &[0x00; 20],
        ] {
            let e = flow_key(bytes, 1).unwrap_err();
            assert_eq!(e.key.netns, 1);
            assert_eq!(e.key.sport, 0);
        }
    }

    #[test]
    fn truncated_transport_header_is_unparsed() {
        let b = PacketBuilder::ipv4(S4, D4, 64).tcp(1, 2, 3, 4);
        let mut buf = Vec::new();
        b.write(&mut buf, &[]).unwrap();
        let e = flow_key(&buf[..30], 1).unwrap_err();
        assert_eq!(e.key.proto, PROTO_TCP);
        assert_eq!(e.key.daddr[..4], D4);
    }

    #[test]
    fn copy_range_cut_payload_still_parses_headers() {
        let b = PacketBuilder::ipv4(S4, D4, 64).udp(1, 2);
        let mut buf = Vec::new();
        b.write(&mut buf, &[0u8; 1000]).unwrap();
        assert!(flow_key(&buf[..128], 1).is_ok());
    }

    /// An IPv6 packet: header, then `exts` (each: next header already
    /// filled in by the caller), then a UDP or TCP header.
    fn ipv6_packet(first: u8, exts: &[u8], proto: u8, d: [u8; 16]) -> Vec<u8> {
        let transport: Vec<u8> = if proto == PROTO_UDP {
            let mut u = vec![0x9c, 0x40, 0x23, 0x28, 0, 12, 0, 0];
            u.extend_from_slice(b"mark");
            u
        } else {
            // sport 40000, dport 9000, data offset 5, SYN
            let mut t = vec![0x9c, 0x40, 0x23, 0x28, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02];
            t.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
            t
        };
        let len = (exts.len() + transport.len()) as u16;
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[first, 64]);
        p.extend_from_slice(&v6("2001:db8::1"));
        p.extend_from_slice(&d);
        p.extend_from_slice(exts);
        p.extend_from_slice(&transport);
        p
    }

    /// A segment routing header (type 4) as the kernel sends it: segment 0
    /// is the socket's destination, `n` segments in all, `pad` bytes of
    /// PadN TLV after them.
    fn srh(next: u8, n: usize, dest: [u8; 16], pad: usize) -> Vec<u8> {
        let body = n * 16 + pad;
        assert!((8 + body).is_multiple_of(8));
        let mut h = vec![next, (body / 8) as u8, 4, 0, (n - 1) as u8, 0, 0, 0];
        h.extend_from_slice(&dest);
        for i in 1..n {
            let mut a = v6("2001:db8::2");
            a[15] = 0x10 + i as u8;
            h.extend_from_slice(&a);
        }
        if pad > 0 {
            h.extend_from_slice(&[4, (pad - 2) as u8]);
            h.resize(8 + body, 0);
        }
        h
    }

    #[test]
    fn long_segment_routing_header_is_walked_for_udp_and_tcp() {
        let sink = v6("2001:db8::2");
        let asked = v6("2001:db8::77");
        for proto in [PROTO_UDP, PROTO_TCP] {
            // 40 segments: 648 bytes of routing header, far past 128.
            let p = ipv6_packet(43, &srh(proto, 40, asked, 0), proto, sink);
            assert!(p.len() > 600);
            let k = flow_key(&p, 3).unwrap();
            assert_eq!(
                k,
                FlowKey::v6(3, proto, v6("2001:db8::1"), 40000, asked, 9000),
                "the key carries the destination the socket asked for"
            );
        }
    }

    #[test]
    fn routing_header_types_0_and_2_give_the_last_address() {
        let sink = v6("2001:db8::2");
        let last = v6("2001:db8::99");
        for ty in [0u8, 2] {
            let mut h = vec![PROTO_UDP, 4, ty, 1, 0, 0, 0, 0];
            h.extend_from_slice(&sink);
            h.extend_from_slice(&last);
            let k = flow_key(&ipv6_packet(43, &h, PROTO_UDP, sink), 1).unwrap();
            assert_eq!(k.daddr, last, "type {ty}");
        }
        // An unknown routing type keeps the IP header's destination.
        let mut h = vec![PROTO_UDP, 2, 3, 0, 0, 0, 0, 0];
        h.extend_from_slice(&last);
        let k = flow_key(&ipv6_packet(43, &h, PROTO_UDP, sink), 1).unwrap();
        assert_eq!(k.daddr, sink);
    }

    #[test]
    fn hop_by_hop_and_destination_options_are_walked() {
        let sink = v6("2001:db8::2");
        // hop-by-hop (0) -> destination options (60) -> routing (43) ->
        // destination options (60) -> UDP, each with PadN.
        let opts = |next: u8, units: u8| {
            let len = 8 * (units as usize + 1);
            let mut h = vec![next, units, 1, (len - 4) as u8];
            h.resize(len, 0);
            h
        };
        let mut exts = opts(60, 255);
        exts.extend(opts(43, 30));
        exts.extend(srh(60, 3, sink, 0));
        exts.extend(opts(PROTO_UDP, 0));
        let k = flow_key(&ipv6_packet(0, &exts, PROTO_UDP, sink), 1).unwrap();
        assert_eq!((k.proto, k.sport, k.dport), (PROTO_UDP, 40000, 9000));
    }

    #[test]
    fn truncated_extension_headers_are_unparsed() {
        let sink = v6("2001:db8::2");
        let p = ipv6_packet(43, &srh(PROTO_UDP, 40, sink, 0), PROTO_UDP, sink);
        for cut in [41, 48, 128, 300, p.len() - 13] {
            let e = flow_key(&p[..cut], 1).unwrap_err();
            assert_eq!(e.key.family, appfw_common::flow::AF_INET6, "cut {cut}");
            assert_eq!(e.key.sport, 0, "cut {cut}");
        }
        // A routing header claiming more bytes than the packet has.
        let mut h = srh(PROTO_UDP, 2, sink, 0);
        h[1] = 200;
        assert!(flow_key(&ipv6_packet(43, &h, PROTO_UDP, sink), 1).is_err());
        // Mobility header (135): appfw cannot read past it.
        let h = vec![PROTO_UDP, 0, 0, 0, 0, 0, 0, 0];
        assert!(flow_key(&ipv6_packet(135, &h, PROTO_UDP, sink), 1).is_err());
    }

    #[test]
    fn ipv4_authentication_header_is_walked() {
        // Found by fuzzing: IPv4, AH (51), then UDP; the key is UDP's.
        let ah = [
            PROTO_UDP, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let mut p = ipv4_header(51, ah.len() + 8, &[]);
        p.extend_from_slice(&ah);
        p.extend_from_slice(&[0x9c, 0x40, 0x23, 0x28, 0, 8, 0, 0]);
        assert_eq!(
            flow_key(&p, 1).unwrap(),
            FlowKey::v4(1, PROTO_UDP, S4, 40000, D4, 9000)
        );
    }

    #[test]
    fn extension_chain_cut_short_is_unparsed_without_reading_past_it() {
        // Found by fuzzing: destination options, then a second destination
        // options header of which only 4 bytes are there. etherparse's
        // iterator read past the end of such a chain.
        let mut p = vec![0x60, 0, 0, 0, 0, 0x24, 60, 64];
        p.extend_from_slice(&v6("2001:db8::1"));
        p.extend_from_slice(&v6("2001:db8::2"));
        p.extend_from_slice(&[60, 1, 1, 12]);
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(b"mark");
        assert!(flow_key(&p, 1).is_err());
        assert_eq!(routing_header(IpNumber(60), &p[40..]), None);
        assert_eq!(routing_header(IpNumber(43), &[17]), None);
    }

    /// An IPv4 header with `opts` (padded to 4 bytes) and protocol `proto`.
    fn ipv4_header(proto: u8, payload_len: usize, opts: &[u8]) -> Vec<u8> {
        let mut o = opts.to_vec();
        while !o.len().is_multiple_of(4) {
            o.push(0);
        }
        let hl = 20 + o.len();
        let total = (hl + payload_len) as u16;
        let mut h = vec![0x40 | (hl / 4) as u8, 0];
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
        h.extend_from_slice(&S4);
        h.extend_from_slice(&D4);
        h.extend_from_slice(&o);
        h
    }

    #[test]
    fn ipv4_source_route_gives_the_last_address() {
        let asked = [198, 51, 100, 77];
        // NOP, LSRR: len 11, pointer 4, first hop, then the socket's destination.
        let mut opts = vec![1, 131, 11, 4];
        opts.extend_from_slice(&D4);
        opts.extend_from_slice(&asked);
        let mut p = ipv4_header(PROTO_UDP, 8, &opts);
        p.extend_from_slice(&[0x9c, 0x40, 0x23, 0x28, 0, 8, 0, 0]);
        let k = flow_key(&p, 1).unwrap();
        assert_eq!(k, FlowKey::v4(1, PROTO_UDP, S4, 40000, asked, 9000));
        // Malformed options: the header's destination.
        assert_eq!(ipv4_final_destination(&[131, 40, 4]), None);
        assert_eq!(ipv4_final_destination(&[7, 1]), None);
    }
}
