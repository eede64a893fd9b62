# The receiving end of the enforcement tests, in the server namespace: it
# records every payload that reaches it, so a test can assert that a blocked
# program got not one byte out. TCP and UDP on port 9000 (dual-stack), and
# ICMP/ICMPv6 echo requests (the kernel answers them; this only records).
# Each line: "<proto> <source address> <payload, repr>".
import socket
import sys
import threading

log_path = sys.argv[1]
lock = threading.Lock()


def record(proto, addr, data):
    with lock, open(log_path, "a") as f:
        f.write("%s %s %r\n" % (proto, addr, data))


def tcp_conn(c, addr):
    with c:
        while True:
            data = c.recv(65536)
            if not data:
                return
            record("tcp", addr[0], data)


def tcp(s):
    while True:
        c, addr = s.accept()
        threading.Thread(target=tcp_conn, args=(c, addr), daemon=True).start()


def udp(s):
    while True:
        data, addr = s.recvfrom(65536)
        record("udp", addr[0], data)


def udplite(s):
    while True:
        data, addr = s.recvfrom(65536)
        record("udplite", addr[0], data)


def icmp(s, v6):
    while True:
        data, addr = s.recvfrom(65536)
        if v6:
            # Raw ICMPv6 sockets get the ICMPv6 message; 128 is an echo request.
            if data and data[0] == 128:
                record("icmp6", addr[0], data[8:])
        else:
            # Raw ICMP sockets get the IP header too; type 8 is an echo request.
            ihl = (data[0] & 0x0F) * 4
            if len(data) > ihl and data[ihl] == 8:
                record("icmp", addr[0], data[ihl + 8:])


t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("::", 9000))
t.listen(128)
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
u.bind(("::", 9000))
# UDP-Lite: a protocol an unprivileged program may use that is neither TCP
# nor UDP.
ul = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDPLITE)
ul.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
ul.bind(("::", 9000))
i4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
i6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
for target, args in [(tcp, (t,)), (udp, (u,)), (udplite, (ul,)), (icmp, (i4, False)), (icmp, (i6, True))]:
    threading.Thread(target=target, args=args, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
