//! The fallback: tuple -> socket inode (/proc/net/*) -> pid (/proc/*/fd).
//!
//! What the tool appfw replaces did for every packet. It reads every
//! process's file descriptors, and it is wrong or empty when the process
//! exited before the scan, so appfw only uses it when the kernel records
//! have nothing, and counts each use.

use std::{
    cell::RefCell,
    fs,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use appfw_common::{
    flow::{PROTO_TCP, PROTO_UDP},
    FlowKey,
};
use procfs::process::FDTarget;

use super::deadline;

/// A socket found in /proc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub pid: u32,
    pub uid: u32,
    pub inode: u64,
}

/// The scan reads every process's fd directory: on a busy machine it can
/// take a while, and a user can stall parts of it.
const SCAN_DEADLINE: Duration = Duration::from_millis(250);

thread_local! {
    static SCAN: RefCell<deadline::Pool> =
        const { RefCell::new(deadline::Pool::new("scanning /proc for a socket", 2)) };
}

/// Finds the process owning the socket of `key` in this network namespace,
/// on a worker thread; `None` also when the scan missed its deadline.
pub fn find_owner(key: &FlowKey) -> Option<Found> {
    let key = *key;
    // The worker must read the socket tables of this thread's namespace.
    let netns = fs::File::open("/proc/thread-self/ns/net").ok()?;
    deadline::run(&SCAN, SCAN_DEADLINE, move || {
        enter_netns(&netns)?;
        find_owner_now(&key)
    })
    .flatten()
}

/// Moves the calling (worker) thread into the network namespace `ns`
/// unless it is there already.
fn enter_netns(ns: &fs::File) -> Option<()> {
    use std::os::{fd::AsRawFd, unix::fs::MetadataExt};
    let want = ns.metadata().ok()?.ino();
    if fs::metadata("/proc/thread-self/ns/net").ok()?.ino() == want {
        return Some(());
    }
    // SAFETY: a valid namespace descriptor; setns affects only this thread.
    (unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0).then_some(())
}

fn find_owner_now(key: &FlowKey) -> Option<Found> {
    let (local, remote) = key.endpoints();
    let (inode, uid) = find_socket(key.proto, local, remote)?;
    let pid = pid_of_inode(inode)?;
    Some(Found { pid, uid, inode })
}

/// The socket tables of the calling thread's network namespace
/// (/proc/net is the thread-group leader's, which may differ).
fn table(name: &str) -> Vec<(SocketAddr, SocketAddr, u64, u32)> {
    use procfs::{
        net::{TcpNetEntries, UdpNetEntries},
        FromReadSI,
    };
    let path = format!("/proc/thread-self/net/{name}");
    let si = procfs::current_system_info();
    if name.starts_with("tcp") {
        TcpNetEntries::from_file(&path, si)
            .map(|t| {
                t.0.into_iter()
                    .map(|e| (e.local_address, e.remote_address, e.inode, e.uid))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        UdpNetEntries::from_file(&path, si)
            .map(|t| {
                t.0.into_iter()
                    .map(|e| (e.local_address, e.remote_address, e.inode, e.uid))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn find_socket(proto: u8, local: SocketAddr, remote: SocketAddr) -> Option<(u64, u32)> {
    let name = match proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => return None,
    };
    // IPv4 flows may come from dual-stack IPv6 sockets (listed in the *6
    // tables with v4-mapped addresses), so both tables are read for them.
    let mut rows = Vec::new();
    if local.is_ipv4() {
        rows.extend(table(name));
    }
    rows.extend(table(&format!("{name}6")));
    best_match(proto, local, remote, &rows)
}

/// The row for this flow: an exact match wins; for UDP an unconnected
/// socket bound to the source port (any or the same address) will do.
pub fn best_match(
    proto: u8,
    local: SocketAddr,
    remote: SocketAddr,
    rows: &[(SocketAddr, SocketAddr, u64, u32)],
) -> Option<(u64, u32)> {
    let exact = rows
        .iter()
        .find(|(l, r, inode, _)| *inode != 0 && same(l, &local) && same(r, &remote));
    if let Some((_, _, inode, uid)) = exact {
        return Some((*inode, *uid));
    }
    if proto != PROTO_UDP {
        return None;
    }
    rows.iter()
        .find(|(l, r, inode, _)| {
            *inode != 0
                && l.port() == local.port()
                && (unmapped(l.ip()).is_unspecified() || unmapped(l.ip()) == unmapped(local.ip()))
                && unmapped(r.ip()).is_unspecified()
                && r.port() == 0
        })
        .map(|(_, _, inode, uid)| (*inode, *uid))
}

fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn same(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port() && unmapped(a.ip()) == unmapped(b.ip())
}

/// Scans /proc/*/fd for `socket:[inode]`.
fn pid_of_inode(inode: u64) -> Option<u32> {
    for proc in procfs::process::all_processes().ok()?.flatten() {
        let Ok(fds) = proc.fd() else { continue };
        for fd in fds.flatten() {
            if let FDTarget::Socket(i) = fd.target {
                if i == inode {
                    return u32::try_from(proc.pid).ok();
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn exact_connected_socket_wins_over_wildcard() {
        let rows = vec![
            (sa("0.0.0.0:5000"), sa("0.0.0.0:0"), 11, 0),
            (sa("198.51.100.1:5000"), sa("198.51.100.2:53"), 22, 1000),
        ];
        let got = best_match(
            PROTO_UDP,
            sa("198.51.100.1:5000"),
            sa("198.51.100.2:53"),
            &rows,
        );
        assert_eq!(got, Some((22, 1000)));
    }

    #[test]
    fn unconnected_udp_socket_matches_by_port() {
        let rows = vec![(sa("0.0.0.0:5000"), sa("0.0.0.0:0"), 11, 0)];
        let got = best_match(
            PROTO_UDP,
            sa("198.51.100.1:5000"),
            sa("198.51.100.2:53"),
            &rows,
        );
        assert_eq!(got, Some((11, 0)));
        assert_eq!(
            best_match(
                PROTO_TCP,
                sa("198.51.100.1:5000"),
                sa("198.51.100.2:53"),
                &rows
            ),
            None
        );
    }

    #[test]
    fn v4_mapped_rows_match_v4_flows() {
        let rows = vec![(
            sa("[::ffff:198.51.100.1]:5000"),
            sa("[::ffff:198.51.100.2]:80"),
            33,
            0,
        )];
        let got = best_match(
            PROTO_TCP,
            sa("198.51.100.1:5000"),
            sa("198.51.100.2:80"),
            &rows,
        );
        assert_eq!(got, Some((33, 0)));
    }
}
