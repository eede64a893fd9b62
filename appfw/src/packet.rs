//! A queued packet's bytes -> the [`FlowKey`] the eBPF hooks recorded.
//!
//! NFQUEUE hands over the packet from the IP header on. Parsing borrows the
//! buffer: nothing is allocated.

use appfw_common::{
    flow::{PROTO_TCP, PROTO_UDP},
    FlowKey,
};
use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};

/// The flow of an outbound TCP or UDP packet in namespace `netns`; `None`
/// for other protocols, fragments without ports, and malformed packets.
/// Lax parsing, because the queue copies only the first bytes of a packet:
/// the headers are whole, the payload is cut.
pub fn flow_key(packet: &[u8], netns: u64) -> Option<FlowKey> {
    let sliced = LaxSlicedPacket::from_ip(packet).ok()?;
    let (proto, sport, dport) = match sliced.transport? {
        TransportSlice::Tcp(t) => (PROTO_TCP, t.source_port(), t.destination_port()),
        TransportSlice::Udp(u) => (PROTO_UDP, u.source_port(), u.destination_port()),
        _ => return None,
    };
    match sliced.net? {
        LaxNetSlice::Ipv4(ip) => {
            let h = ip.header();
            Some(FlowKey::v4(
                netns,
                proto,
                h.source(),
                sport,
                h.destination(),
                dport,
            ))
        }
        LaxNetSlice::Ipv6(ip) => {
            let h = ip.header();
            Some(FlowKey::v6(
                netns,
                proto,
                h.source(),
                sport,
                h.destination(),
                dport,
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    #[test]
    fn tcp_v4_syn_gives_its_tuple() {
        let b = PacketBuilder::ipv4([198, 51, 100, 1], [198, 51, 100, 2], 64)
            .tcp(40000, 80, 1, 1024)
            .syn();
        let mut buf = Vec::new();
        b.write(&mut buf, &[]).unwrap();
        let k = flow_key(&buf, 5).unwrap();
        assert_eq!(
            k,
            FlowKey::v4(
                5,
                PROTO_TCP,
                [198, 51, 100, 1],
                40000,
                [198, 51, 100, 2],
                80
            )
        );
    }

    #[test]
    fn udp_v6_gives_its_tuple() {
        let s: [u8; 16] = "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let d: [u8; 16] = "2001:db8::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let b = PacketBuilder::ipv6(s, d, 64).udp(5353, 53);
        let mut buf = Vec::new();
        b.write(&mut buf, b"q").unwrap();
        let k = flow_key(&buf, 1).unwrap();
        assert_eq!(k, FlowKey::v6(1, PROTO_UDP, s, 5353, d, 53));
    }

    #[test]
    fn garbage_and_other_protocols_give_none() {
        assert_eq!(flow_key(&[], 1), None);
        assert_eq!(flow_key(&[0x45, 0, 0], 1), None);
        let b =
            PacketBuilder::ipv4([198, 51, 100, 1], [198, 51, 100, 2], 64).icmpv4_echo_request(1, 1);
        let mut buf = Vec::new();
        b.write(&mut buf, &[]).unwrap();
        assert_eq!(flow_key(&buf, 1), None);
    }

    #[test]
    fn truncated_copy_range_still_parses_headers() {
        // The queue copies only the first bytes of each packet.
        let b = PacketBuilder::ipv4([198, 51, 100, 1], [198, 51, 100, 2], 64).udp(1, 2);
        let mut buf = Vec::new();
        b.write(&mut buf, &[0u8; 1000]).unwrap();
        // etherparse checks lengths against the IP header; a copy-range cut
        // makes the slice shorter than the header says.
        let cut = &buf[..128];
        assert!(
            flow_key(cut, 1).is_some(),
            "a 128-byte copy must still yield the tuple"
        );
    }
}
