//! Verdicts per socket, applied by appfw's netfilter chain, and the record
//! that lets the daemon judge the socket a queued packet came from.
//!
//! These are socket filters, run by `iptables -m bpf --object-pinned` for
//! every outbound packet appfw's chain sees. They read the packet's socket
//! cookie, never the current task: netfilter may run in another process's
//! softirq (PLATFORM.md).

use appfw_common::{
    maps::counter,
    verdict::{KernelVerdictEvent, PacketKey, EVENT_HEAD_LEN, IPV6_HEADER_LEN},
    Owner, SocketVerdict,
};
use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_skb_load_bytes},
    programs::SkBuffContext,
    EbpfContext,
};

use crate::maps;

/// 1 (the rule matches) when the packet's socket holds a current verdict
/// of `wanted` (`appfw_common::verdict::action`). A socket without one
/// gets its process's verdict, if the daemon made one: the first rule that
/// looks gives it to the socket.
#[inline(always)]
pub fn socket_has(ctx: &SkBuffContext, wanted: u8) -> i64 {
    // SAFETY: socket filters may call this helper with their context; a
    // packet without a socket gives 0.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if cookie == 0 {
        return 0;
    }
    let Some(generation) = maps::generation() else {
        return 0;
    };
    let action = match maps::socket_verdict(cookie, generation) {
        Some(v) if v.action == wanted => {
            maps::count(counter::SOCKET_VERDICT);
            return 1;
        }
        Some(v) => v.action,
        None => match maps::process_verdict(cookie, generation) {
            Some((v, owner)) => {
                if v.report != 0 {
                    report(ctx, &owner, v);
                }
                v.action
            }
            None => return 0,
        },
    };
    i64::from(action == wanted)
}

/// Tells the daemon that `owner`'s socket got its process's verdict, with
/// the packet's first bytes for the report.
#[inline(always)]
fn report(ctx: &SkBuffContext, owner: &Owner, verdict: SocketVerdict) {
    let Some(mut entry) = maps::APPFW_KERNEL_VERDICT_EVENTS.reserve::<KernelVerdictEvent>(0) else {
        maps::count(counter::VERDICT_EVENTS_LOST);
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points at the reserved entry, ours until submitted;
    // every field is written before it is.
    unsafe {
        (*e).owner = *owner;
        (*e).verdict = verdict;
        (*e)._pad = 0;
        (*e).head = [0; EVENT_HEAD_LEN];
        let len = ctx.len() as usize;
        let n = if len > EVENT_HEAD_LEN {
            EVENT_HEAD_LEN
        } else {
            len
        };
        (*e).head_len = 0;
        if n > 0 && bpf_skb_load_bytes(ctx.as_ptr(), 0, (&raw mut (*e).head).cast(), n as u32) == 0
        {
            (*e).head_len = n as u32;
        }
    }
    entry.submit(0);
}

/// 1 for a packet the kernel sends of its own accord: no socket, or one
/// that is no program's socket appfw knows sending what only the kernel's
/// control sockets send (TCP segments without payload: resets, TIME_WAIT
/// acks; ICMP other than echo requests: errors, neighbour discovery). A
/// socket older than appfw with a payload, and a closed program socket
/// still sending, are not: they are judged.
#[inline(always)]
pub fn kernel_sent(ctx: &SkBuffContext) -> i64 {
    // SAFETY: as in `socket_has`.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if cookie == 0 {
        return 1;
    }
    i64::from(!maps::user_socket(cookie) && control_packet(ctx).unwrap_or(false))
}

const PROTO_TCP: u8 = 6;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
const ICMP_ECHO: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;

/// A TCP segment without payload, or ICMP other than an echo request,
/// right after the fixed IP header (control sockets add no options).
#[inline(always)]
fn control_packet(ctx: &SkBuffContext) -> Option<bool> {
    let first: u8 = ctx.load(0).ok()?;
    let (proto, l4, total) = match first >> 4 {
        4 => {
            let h: [u8; 20] = ctx.load(0).ok()?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            (h[9], ihl, usize::from(u16::from_be_bytes([h[2], h[3]])))
        }
        6 => {
            let h: [u8; 8] = ctx.load(0).ok()?;
            let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
            (h[6], IPV6_HEADER_LEN, IPV6_HEADER_LEN + payload)
        }
        _ => return None,
    };
    match proto {
        PROTO_TCP => {
            let offset: u8 = ctx.load(l4 + 12).ok()?;
            Some(total == l4 + usize::from(offset >> 4) * 4)
        }
        PROTO_ICMP => Some(ctx.load::<u8>(l4).ok()? != ICMP_ECHO),
        PROTO_ICMPV6 => Some(ctx.load::<u8>(l4).ok()? != ICMPV6_ECHO_REQUEST),
        _ => Some(false),
    }
}

/// The rule in front of NFQUEUE: records which socket sent this packet
/// under the packet's [`PacketKey`], then matches.
#[inline(always)]
pub fn queued(ctx: &SkBuffContext) -> i64 {
    // SAFETY: as in `socket_has`.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if let Some(key) = packet_key(ctx) {
        maps::packet_queued(&key, cookie);
    }
    maps::count(counter::QUEUED);
    1
}

/// The same key the daemon computes with `PacketKey::from_packet`. In
/// netfilter's OUTPUT hook the packet starts at its IP header.
#[inline(always)]
fn packet_key(ctx: &SkBuffContext) -> Option<PacketKey> {
    let first: u8 = ctx.load(0).ok()?;
    match first >> 4 {
        4 => {
            let h: [u8; 20] = ctx.load(0).ok()?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            // Shorter than that: zero, as the daemon reads it.
            let l4: [u8; 4] = ctx.load(ihl).unwrap_or([0; 4]);
            Some(PacketKey::v4(
                h[9],
                [h[12], h[13], h[14], h[15]],
                [h[16], h[17], h[18], h[19]],
                l4,
            ))
        }
        6 => {
            let h: [u8; IPV6_HEADER_LEN] = ctx.load(0).ok()?;
            let l4: [u8; 4] = ctx.load(IPV6_HEADER_LEN).unwrap_or([0; 4]);
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&h[8..24]);
            d.copy_from_slice(&h[24..40]);
            Some(PacketKey::v6(h[6], s, d, l4))
        }
        _ => None,
    }
}
