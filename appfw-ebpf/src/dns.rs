//! DNS answers in: a cgroup_skb ingress program copies the DNS message of
//! every UDP datagram and TCP segment from port 53 into a ring buffer for
//! the daemon, which parses it. The kernel only finds where the message
//! starts; it never reads the message itself.
//!
//! Runs for every packet a socket on the machine receives (the program is
//! attached to the cgroup v2 root): only sockets appfw recorded, which are
//! those of its own network namespace, count. The copy is submitted before
//! the receiving program can read the answer, so the daemon, which drains
//! the ring buffer before judging each queued packet, knows the name
//! before the connection it names is judged.

use appfw_common::{
    dns::{DnsAnswer, DNS_BYTES, DNS_CAPTURE, PROTO_TCP, PROTO_UDP},
    maps::counter,
};
use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_skb_load_bytes},
    macros::map,
    maps::RingBuf,
    programs::SkBuffContext,
    EbpfContext,
};

use crate::maps;

#[map]
static APPFW_DNS: RingBuf = RingBuf::with_byte_size(DNS_BYTES, 0);

const DNS_PORT: u16 = 53;
const IPV6_HEADER_LEN: usize = 40;
/// A DNS header is 12 bytes: anything shorter is no answer.
const DNS_HEADER_LEN: usize = 12;

/// Always 1: 0 would drop the packet (for every program on the machine).
#[inline(always)]
pub fn answer_in(ctx: &SkBuffContext) -> i32 {
    let _ = copy_answer(ctx);
    1
}

#[inline(always)]
fn copy_answer(ctx: &SkBuffContext) -> Option<()> {
    let (proto, offset, ip_version, saddr) = dns_payload(ctx)?;
    let total = ctx.len() as usize;
    if total < offset + DNS_HEADER_LEN {
        return None;
    }
    let wire_len = total - offset;
    // SAFETY: cgroup_skb programs may call this helper with their context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // Only sockets the hooks recorded: this instance's namespace.
    let owner = maps::socket_owner(cookie)?;
    let Some(mut entry) = APPFW_DNS.reserve::<DnsAnswer>(0) else {
        maps::count(counter::EVENTS_LOST);
        return None;
    };
    let ev = entry.as_mut_ptr();
    // The verifier wants the length within 1..=DNS_CAPTURE. A check for
    // n >= 1 gets folded away by LLVM (wire_len >= 12 is known here), so
    // the bound is made by construction: black_box keeps LLVM from
    // merging the +1 back into the min.
    let below = core::hint::black_box((wire_len - 1).min(DNS_CAPTURE - 1));
    let n = below + 1;
    // SAFETY: `ev` points at a reserved entry of size_of::<DnsAnswer>();
    // fields are written through raw pointers (it is uninitialised), and
    // the load writes at most DNS_CAPTURE bytes into `data`.
    let loaded = unsafe {
        (*ev).cookie = cookie;
        (*ev).pid = owner.pid;
        (*ev).len = n as u16;
        (*ev).proto = proto;
        (*ev).ip_version = ip_version;
        (*ev).saddr = saddr;
        (*ev).wire_len = wire_len as u32;
        (*ev)._pad2 = 0;
        bpf_skb_load_bytes(
            ctx.as_ptr() as *const _,
            offset as u32,
            core::ptr::addr_of_mut!((*ev).data).cast(),
            n as u32,
        )
    };
    if loaded != 0 {
        entry.discard(0);
        return None;
    }
    entry.submit(0);
    Some(())
}

/// The transport protocol, the offset of the DNS message (UDP) or
/// segment payload (TCP), the IP version and the source address of a
/// packet from port 53; `None` for any other packet. The packet starts at
/// its IP header here.
#[inline(always)]
fn dns_payload(ctx: &SkBuffContext) -> Option<(u8, usize, u8, [u8; 16])> {
    let first: u8 = ctx.load(0).ok()?;
    let mut saddr = [0u8; 16];
    let (proto, l4, version) = match first >> 4 {
        4 => {
            let h: [u8; 20] = ctx.load(0).ok()?;
            // A later fragment has no transport header.
            if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
                return None;
            }
            saddr[..4].copy_from_slice(&h[12..16]);
            (h[9], usize::from(h[0] & 0x0f) * 4, 4)
        }
        // Extension headers are not walked: answers do not carry them.
        6 => {
            saddr = ctx.load(8).ok()?;
            (ctx.load::<u8>(6).ok()?, IPV6_HEADER_LEN, 6)
        }
        _ => return None,
    };
    let ports: [u8; 2] = ctx.load(l4).ok()?;
    if u16::from_be_bytes(ports) != DNS_PORT {
        return None;
    }
    match proto {
        PROTO_UDP => Some((PROTO_UDP, l4 + 8, version, saddr)),
        PROTO_TCP => {
            let offset: u8 = ctx.load(l4 + 12).ok()?;
            Some((PROTO_TCP, l4 + usize::from(offset >> 4) * 4, version, saddr))
        }
        _ => None,
    }
}
