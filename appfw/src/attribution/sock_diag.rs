//! tuple -> socket cookie through NETLINK_SOCK_DIAG, for connected UDP
//! sockets, whose local port no eBPF hook here sees in process context.
//!
//! The packet path asks for one socket (the kernel's exact lookup,
//! udp_dump_one), not a dump of all. Buffers are reused between calls.

use std::{io, net::SocketAddr, time::Duration};

use appfw_common::{flow::AF_INET, FlowKey};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET as DIAG_AF_INET, AF_INET6 as DIAG_AF_INET6, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

/// The kernel answers at once; this only bounds a broken netlink socket so
/// that a packet's verdict is never held for long.
const TIMEOUT: Duration = Duration::from_millis(50);

pub struct SockDiag {
    socket: Socket,
    send: Vec<u8>,
    recv: Vec<u8>,
    seq: u32,
}

impl SockDiag {
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        set_timeout(&socket, TIMEOUT)?;
        Ok(SockDiag {
            socket,
            send: vec![0; 256],
            recv: vec![0; 8192],
            seq: 0,
        })
    }

    /// The cookie of the UDP socket sending `key`, if it still exists.
    pub fn udp_cookie(&mut self, key: &FlowKey) -> io::Result<Option<u64>> {
        let (local, remote) = key.endpoints();
        // udp_dump_one() looks sockets up as if receiving a datagram: the
        // kernel treats idiag_src as the packet's source (our remote end)
        // and idiag_dst as its destination (our local end), unlike TCP.
        let socket_id = SocketId {
            source_port: remote.port(),
            destination_port: local.port(),
            source_address: remote.ip(),
            destination_address: local.ip(),
            interface_id: 0,
            cookie: [0xff; 8],
        };
        self.request(key.family, NLM_F_REQUEST, socket_id)?;
        self.replies(|r| Some(cookie(r.header.socket_id.cookie)))
    }

    /// The (local, remote) addresses of the UDP socket with `cookie`, by a
    /// dump of this namespace's UDP sockets of `family`. For `appfw trace`,
    /// which learns of a connected UDP socket by cookie before its port is
    /// known; not used on the packet path.
    pub fn udp_by_cookie(
        &mut self,
        family: u8,
        cookie: u64,
    ) -> io::Result<Option<(SocketAddr, SocketAddr)>> {
        let mut socket_id = if family == AF_INET {
            SocketId::new_v4()
        } else {
            SocketId::new_v6()
        };
        socket_id.cookie = [0xff; 8];
        self.request(family, NLM_F_REQUEST | NLM_F_DUMP, socket_id)?;
        self.replies(|r| {
            let id = &r.header.socket_id;
            (self::cookie(id.cookie) == cookie).then(|| {
                (
                    SocketAddr::new(id.source_address, id.source_port),
                    SocketAddr::new(id.destination_address, id.destination_port),
                )
            })
        })
    }

    fn request(&mut self, family: u8, flags: u16, socket_id: SocketId) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(
            header,
            SockDiagMessage::InetRequest(InetRequest {
                family: if family == AF_INET {
                    DIAG_AF_INET
                } else {
                    DIAG_AF_INET6
                },
                protocol: IPPROTO_UDP,
                extensions: ExtensionFlags::empty(),
                states: StateFlags::all(),
                socket_id,
            })
            .into(),
        );
        msg.finalize();
        let len = msg.buffer_len();
        if self.send.len() < len {
            self.send.resize(len, 0);
        }
        msg.serialize(&mut self.send[..len]);
        self.socket.send(&self.send[..len], 0)?;
        Ok(())
    }

    /// Reads the answers to the last request until `pick` chooses one or
    /// the kernel says it is done (an error such as ENOENT, or the end of a
    /// dump).
    fn replies<T>(
        &mut self,
        mut pick: impl FnMut(&InetResponse) -> Option<T>,
    ) -> io::Result<Option<T>> {
        let mut found = None;
        loop {
            let n = self.socket.recv(&mut &mut self.recv[..], 0)?;
            let mut offset = 0;
            while offset < n {
                let reply =
                    <NetlinkMessage<SockDiagMessage>>::deserialize(&self.recv[offset..n])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let step = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    match reply.payload {
                        NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                            if found.is_none() {
                                found = pick(&r);
                            }
                            // A single lookup has one answer and no Done.
                            if reply.header.flags & netlink_packet_core::NLM_F_MULTIPART == 0 {
                                return Ok(found);
                            }
                        }
                        NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(found),
                        _ => {}
                    }
                }
                if step == 0 {
                    break;
                }
                offset += step;
            }
        }
    }
}

fn set_timeout(socket: &Socket, t: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: valid fd and option buffer of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `idiag_cookie` is two native-endian u32 words, low word first.
fn cookie(raw: [u8; 8]) -> u64 {
    let lo = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let hi = u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
    u64::from(lo) | (u64::from(hi) << 32)
}
