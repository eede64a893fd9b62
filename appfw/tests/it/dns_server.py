# The test bed's DNS server, in the server namespace: answers A and AAAA
# questions for the names it is given, over UDP and TCP on port 53 (IPv4
# and IPv6), and records each question's name in a log.
# argv: LOG TABLE, TABLE being JSON {name: {"a": [...], "aaaa": [...],
# "ttl": N}} or {name: {"bad": "truncated" | "loop"}} for a malformed
# answer. Other names get NXDOMAIN. Built by hand on purpose: a test tool
# must be able to send what no real server would.
import json
import socket
import struct
import sys
import threading

log_path, table = sys.argv[1], json.loads(sys.argv[2])
lock = threading.Lock()


def question(data):
    """(name, qtype, end offset) of the first question."""
    labels, i = [], 12
    while i < len(data) and data[i]:
        labels.append(data[i + 1:i + 1 + data[i]].decode(errors="replace"))
        i += 1 + data[i]
    qtype = struct.unpack("!H", data[i + 1:i + 3])[0]
    return ".".join(labels), qtype, i + 5


def answer(data):
    name, qtype, end = question(data)
    with lock, open(log_path, "a") as f:
        f.write(name + "\n")
    entry = table.get(name.lower())
    qid = data[:2]
    if entry is None:
        return qid + struct.pack("!HHHHH", 0x8183, 1, 0, 0, 0) + data[12:end]
    bad = entry.get("bad")
    if bad == "loop":
        # The answer's name points at itself: a compression loop.
        head = qid + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + data[12:end]
        here = len(head)
        rr = struct.pack("!HHHIH", 0xC000 | here, 1, 1, 60, 4) + bytes([198, 51, 100, 66])
        return head + rr
    addrs = []
    if qtype == 1:
        addrs = [socket.inet_pton(socket.AF_INET, a) for a in entry.get("a", [])]
        rtype = 1
    elif qtype == 28:
        addrs = [socket.inet_pton(socket.AF_INET6, a) for a in entry.get("aaaa", [])]
        rtype = 28
    msg = qid + struct.pack("!HHHHH", 0x8180, 1, len(addrs), 0, 0) + data[12:end]
    for raw in addrs:
        msg += struct.pack("!HHHIH", 0xC00C, rtype, 1, entry.get("ttl", 60), len(raw)) + raw
    if bad == "truncated":
        # Cut inside the last record, the header still counting it.
        msg = msg[:-3]
    return msg


def udp(s):
    while True:
        data, addr = s.recvfrom(2048)
        try:
            s.sendto(answer(data), addr)
        except Exception as e:
            print("udp:", e, file=sys.stderr)


def tcp_conn(c):
    with c:
        while True:
            head = c.recv(2)
            if len(head) < 2:
                return
            (n,) = struct.unpack("!H", head)
            data = b""
            while len(data) < n:
                more = c.recv(n - len(data))
                if not more:
                    return
                data += more
            reply = answer(data)
            c.sendall(struct.pack("!H", len(reply)) + reply)


def tcp(s):
    while True:
        c, _ = s.accept()
        threading.Thread(target=tcp_conn, args=(c,), daemon=True).start()


for fam, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    u = socket.socket(fam, socket.SOCK_DGRAM)
    t = socket.socket(fam, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    u.bind((any_addr, 53))
    t.bind((any_addr, 53))
    t.listen(16)
    threading.Thread(target=udp, args=(u,), daemon=True).start()
    threading.Thread(target=tcp, args=(t,), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
