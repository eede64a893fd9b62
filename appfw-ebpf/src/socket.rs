//! Every socket's owner from the moment it exists: `sock_create` runs in
//! the creating process for TCP, UDP, ICMP and raw sockets alike, so a
//! packet of any protocol can be judged by its socket's creator. A socket
//! of a process the daemon has judged gets that verdict here.

use appfw_common::{maps::counter, owner::hook};
use aya_ebpf::programs::SockContext;

use crate::{maps, owner};

pub fn created(ctx: &SockContext) -> i32 {
    if let Some((_, cookie)) = owner::socket_of(ctx) {
        let owner = owner::current(cookie, hook::CREATE);
        maps::socket_connected(&owner);
        maps::socket_created(&owner);
        maps::count(counter::SOCKET_CREATED);
    }
    // 1 lets the socket be created.
    1
}
