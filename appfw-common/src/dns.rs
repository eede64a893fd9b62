//! DNS answers the kernel copies for the daemon: the ingress hook puts the
//! DNS message of every UDP datagram and TCP segment from port 53 that a
//! socket of appfw's namespace receives into [`DNS`], a ring buffer; the
//! daemon parses them (never the kernel) and learns address -> names.

/// Ring buffer of [`DnsAnswer`]s.
pub const DNS: &str = "APPFW_DNS";
/// Room for about 680 answers between two drains of the queue thread.
pub const DNS_BYTES: u32 = 1 << 20;

/// Bytes of a message copied: an Ethernet MTU's worth of payload. Longer
/// messages are cut (`len < wire_len`) and give no names.
pub const DNS_CAPTURE: usize = 1504;

/// `proto` of a [`DnsAnswer`].
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// One DNS message as received. Plain integers in host byte order; `data`
/// holds the bytes as on the wire (for TCP: a segment, which starts with
/// the two-byte length when it starts a message).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DnsAnswer {
    /// The receiving socket's cookie.
    pub cookie: u64,
    /// The process that connected or created that socket (0: unknown).
    pub pid: u32,
    /// Bytes of `data` that hold the message.
    pub len: u16,
    /// [`PROTO_UDP`] or [`PROTO_TCP`].
    pub proto: u8,
    /// 4 or 6: the IP version of `saddr`.
    pub ip_version: u8,
    /// The payload's length in the packet.
    pub wire_len: u32,
    pub _pad2: u32,
    /// Who sent the answer (network byte order; IPv4 in the first four).
    pub saddr: [u8; 16],
    pub data: [u8; DNS_CAPTURE],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_has_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<DnsAnswer>(), 40 + DNS_CAPTURE);
        assert_eq!(core::mem::size_of::<DnsAnswer>() % 8, 0);
    }
}
