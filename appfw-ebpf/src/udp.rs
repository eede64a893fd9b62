//! UDP, and the connect hook that serves both protocols.
//!
//! A datagram sent with an address is recorded with its full tuple by
//! `sendmsg4/6`. A connected UDP socket has no hook here that sees its local
//! port in process context, so `connect4/6` records cookie -> owner, the
//! daemon joins the cookie through sock_diag, and `sock_release` records the
//! flow when the socket closes (a datagram may still wait in the queue).

use appfw_common::{
    flow::{ip4_from_word, ip6_from_words, AF_INET, AF_INET6, PROTO_TCP, PROTO_UDP},
    maps::counter,
    owner::hook,
    FlowKey,
};
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel_buf,
        generated::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    },
    programs::{SockAddrContext, SockContext},
    EbpfContext,
};

use aya_log_ebpf::{debug, warn};

use crate::{maps, owner};

/// connect4/6: whoever connects a TCP or UDP socket owns it. `family` is
/// the hook's: connect4 may not read the IPv6 fields and vice versa.
pub fn connected(ctx: &SockAddrContext, family: u8) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel passes a valid bpf_sock_addr context.
    let proto = unsafe { (*sa).protocol } as u8;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return 1;
    }
    let Some((netns, cookie)) = owner::socket_of(ctx) else {
        return 1;
    };
    let owner = owner::current(cookie, hook::CONNECT);
    // A socket created by one process incarnation and connected by another
    // (across fork or exec) is judged for the one that connects.
    if maps::socket_owner(cookie)
        .is_some_and(|o| o.pid != owner.pid || o.start_ns != owner.start_ns)
    {
        maps::forget_verdict(cookie);
    }
    maps::socket_connects(cookie);
    maps::socket_connected(&owner);
    if proto == PROTO_UDP {
        // Reported now with the local port unknown (0); `appfw trace` looks
        // it up. The daemon never reads these keys: nothing is stored.
        // SAFETY: as above; user_* fields are readable in connect hooks.
        let key = unsafe {
            let dport = u16::from_be((*sa).user_port as u16);
            if family == AF_INET {
                FlowKey::v4(
                    netns,
                    proto,
                    [0; 4],
                    0,
                    ip4_from_word((*sa).user_ip4),
                    dport,
                )
            } else {
                FlowKey::v6(
                    netns,
                    proto,
                    [0; 16],
                    0,
                    ip6_from_words((*sa).user_ip6),
                    dport,
                )
            }
        };
        maps::report(&key, &owner);
    }
    maps::count(counter::CONNECT);
    1
}

/// sendmsg4/6: a datagram sent with an explicit address. The socket is
/// already bound here (inet_send_prepare autobinds first), so the source
/// port is known; the source address may still be unspecified.
pub fn sendmsg(ctx: &SockAddrContext, family: u8) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel passes a valid bpf_sock_addr context; `sk` is a
    // non-NULL PTR_TO_SOCKET in sock_addr programs.
    unsafe {
        if (*sa).protocol as u8 != PROTO_UDP {
            return 1;
        }
        let Some((netns, cookie)) = owner::socket_of(ctx) else {
            return 1;
        };
        let sk = (*sa).__bindgen_anon_1.sk;
        let sport = (*sk).src_port as u16;
        let dport = u16::from_be((*sa).user_port as u16);
        let key = if family == AF_INET {
            // An address given with IP_PKTINFO wins over the bound one.
            let mut src = (*sa).msg_src_ip4;
            if src == 0 {
                src = (*sk).src_ip4;
            }
            FlowKey::v4(
                netns,
                PROTO_UDP,
                ip4_from_word(src),
                sport,
                ip4_from_word((*sa).user_ip4),
                dport,
            )
        } else {
            let mut src = (*sa).msg_src_ip6;
            if src == [0; 4] {
                src = (*sk).src_ip6;
            }
            FlowKey::v6(
                netns,
                PROTO_UDP,
                ip6_from_words(src),
                sport,
                ip6_from_words((*sa).user_ip6),
                dport,
            )
        };
        // Most datagrams come from a socket whose flow is recorded already:
        // refresh it without building a new owner.
        let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        // A socket inherited across fork or exec sends for someone new.
        if let Some(o) = maps::socket_owner(cookie) {
            if o.pid != pid || o.start_ns != maps::process_start(pid) {
                maps::socket_changed_hands(&owner::current(cookie, hook::UDP_SENDMSG));
            }
        }
        if maps::judged(cookie) {
            // Decided in the kernel: the daemon needs no record.
        } else if !maps::flow_refreshed(&key, pid, cookie, owner::now()) {
            let owner = owner::current(cookie, hook::UDP_SENDMSG);
            if maps::flow_opened(&key, &owner, true) {
                debug!(
                    ctx,
                    "appfw: udp send pid {} sport {} dport {}", owner.pid, sport, dport
                );
            } else {
                warn!(ctx, "appfw: flow map update failed (udp pid {})", owner.pid);
            }
        }
    }
    maps::count(counter::UDP_SENDMSG);
    1
}

/// sock_release: runs in inet_release() before the socket is unhashed, so
/// a flow recorded here is in the map before sock_diag stops finding the
/// socket: the daemon's "map, sock_diag, map again" lookup cannot miss.
pub fn released(ctx: &SockContext) -> i32 {
    let sk = ctx.sock;
    // SAFETY: helpers allowed for cgroup sock programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the kernel passes a valid bpf_sock context; the dst_* fields
    // are readable in every cgroup sock program.
    unsafe {
        if (*sk).protocol as u8 == PROTO_UDP && maps::judged(cookie) {
            maps::judged_socket_closed(cookie);
            return 1;
        }
        let dport = u16::from_be((*sk).dst_port);
        if (*sk).protocol as u8 == PROTO_UDP && dport != 0 {
            if let Some(mut owner) = maps::socket_owner(cookie) {
                if let Some(key) = released_flow(ctx, dport) {
                    owner.hook = hook::UDP_RELEASE;
                    // The daemon trusts a UDP record only while it is fresh;
                    // the connect may be long past, but a datagram the socket
                    // sent can only be in flight from now on.
                    owner.ktime_ns = owner::now();
                    if !maps::flow_opened(&key, &owner, true) {
                        warn!(
                            ctx,
                            "appfw: flow map update failed (udp close pid {})", owner.pid
                        );
                    }
                    debug!(
                        ctx,
                        "appfw: connected udp closed pid {} sport {} dport {}",
                        owner.pid,
                        key.sport,
                        dport
                    );
                    maps::count(counter::UDP_RELEASE);
                }
            }
        }
    }
    maps::socket_closed(cookie);
    1
}

/// The verifier lets sock_release read a socket's destination but not its
/// source (those fields are for post_bind only), so the source is read from
/// the head of `struct sock_common`, whose layout has not changed since
/// Linux 2.6: skc_daddr, skc_rcv_saddr, skc_hash, skc_dport, skc_num (the
/// local port, host order) at byte 14. The IPv6 source address lies at no
/// fixed offset; it is recorded unspecified and matched as a wildcard.
///
/// # Safety
/// `ctx` must be this program's context.
unsafe fn released_flow(ctx: &SockContext, dport: u16) -> Option<FlowKey> {
    let sk = ctx.sock;
    let mut head = [0u8; 16];
    // SAFETY: the context of a cgroup sock program is the kernel's struct
    // sock; the helper checks the read.
    if unsafe { bpf_probe_read_kernel_buf(ctx.as_ptr() as *const u8, &mut head) }.is_err() {
        return None;
    }
    let sport = u16::from_ne_bytes([head[14], head[15]]);
    // SAFETY: as in `released`.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: as in `released`.
    unsafe {
        match (*sk).family as u8 {
            AF_INET => Some(FlowKey::v4(
                netns,
                PROTO_UDP,
                [head[4], head[5], head[6], head[7]],
                sport,
                ip4_from_word((*sk).dst_ip4),
                dport,
            )),
            AF_INET6 => Some(FlowKey::v6(
                netns,
                PROTO_UDP,
                [0; 16],
                sport,
                ip6_from_words((*sk).dst_ip6),
                dport,
            )),
            _ => None,
        }
    }
}
