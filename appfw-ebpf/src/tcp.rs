//! TCP: the flow of every connect, with its local port.

use appfw_common::{
    flow::{ip4_from_word, ip6_from_words, AF_INET, AF_INET6, PROTO_TCP},
    maps::counter,
    owner::hook,
    FlowKey,
};
use aya_ebpf::{bindings::BPF_SOCK_OPS_TCP_CONNECT_CB, programs::SockOpsContext};

use aya_log_ebpf::{debug, warn};

use crate::{maps, owner};

/// `BPF_SOCK_OPS_TCP_CONNECT_CB` runs in tcp_connect(), after the local
/// port is chosen and before the SYN is built: the flow key is complete and
/// the caller is still the connecting task.
pub fn sock_ops(ctx: &SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_TCP_CONNECT_CB {
        return 1;
    }
    let Some((netns, cookie)) = owner::socket_of(ctx) else {
        return 1;
    };
    // TCP Fast Open can connect without connect(): a verdict made for
    // another destination goes here too.
    maps::socket_connects(cookie);
    if maps::judged(cookie) {
        // Decided in the kernel: the daemon needs no record.
        maps::count(counter::TCP_CONNECT);
        return 1;
    }
    // sock_ops only sees the socket; connect4/6 already recorded who
    // called connect(). TCP Fast Open via sendto() may skip that hook.
    let owner = match maps::socket_owner(cookie) {
        Some(mut o) => {
            o.hook = hook::TCP_CONNECT;
            o
        }
        None => {
            maps::count(counter::TCP_WITHOUT_CONNECT);
            owner::current(cookie, hook::TCP_CONNECT)
        }
    };
    // remote_port holds the network-order port in its upper half on
    // little-endian machines, so a 32-bit byte swap yields it.
    let dport = u32::from_be(ctx.remote_port()) as u16;
    let sport = ctx.local_port() as u16;
    let key = match ctx.family() as u8 {
        AF_INET => FlowKey::v4(
            netns,
            PROTO_TCP,
            ip4_from_word(ctx.local_ip4()),
            sport,
            ip4_from_word(ctx.remote_ip4()),
            dport,
        ),
        AF_INET6 => FlowKey::v6(
            netns,
            PROTO_TCP,
            ip6_from_words(ctx.local_ip6()),
            sport,
            ip6_from_words(ctx.remote_ip6()),
            dport,
        ),
        _ => return 1,
    };
    if maps::flow_opened(&key, &owner, true) {
        debug!(
            ctx,
            "appfw: tcp connect pid {} sport {} dport {}", owner.pid, sport, dport
        );
    } else {
        warn!(ctx, "appfw: flow map update failed (tcp pid {})", owner.pid);
    }
    maps::count(counter::TCP_CONNECT);
    1
}
