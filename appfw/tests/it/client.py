# Test client for appfw's integration tests: opens one outbound socket the
# way a scenario asks, prints what it did as JSON, then waits for stdin to
# close (or exits at once for the "exit" scenarios).
import json
import os
import socket
import sys
import threading
import time

SO_NETNS_COOKIE = 71
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
sport = int(sys.argv[4]) if len(sys.argv) > 4 else 0
fam = socket.AF_INET6 if ":" in host else socket.AF_INET


def cookie(s):
    return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")


def report(s, proto, pid=None, **extra):
    laddr, lport = s.getsockname()[:2]
    out = {"pid": pid or os.getpid(), "netns": cookie(s), "proto": proto,
           "laddr": laddr, "lport": lport, "raddr": host, "rport": port}
    out.update(extra)
    print(json.dumps(out), flush=True)


def tcp():
    s = socket.socket(fam, socket.SOCK_STREAM)
    if sport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", sport))
    s.connect((host, port))
    return s


def udp_sendto():
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.sendto(b"appfw-test", (host, port))
    return s


def udp_connected():
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.connect((host, port))
    s.send(b"appfw-test")
    return s


keep = []
if mode == "tcp":
    s = tcp(); keep.append(s); report(s, "tcp")
elif mode == "udp-sendto":
    s = udp_sendto(); keep.append(s); report(s, "udp")
elif mode == "udp-connected":
    s = udp_connected(); keep.append(s); report(s, "udp")
elif mode == "udp-sendto-exit":
    s = udp_sendto(); report(s, "udp"); os._exit(0)
elif mode == "udp-connected-exit":
    s = udp_connected(); report(s, "udp"); s.close(); os._exit(0)
elif mode in ("udp-connected-late-exit", "udp-connected-late-close"):
    # Connected long before the one datagram, then closed at once: by exit,
    # or by close() in a process that lives on.
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.connect((host, port))
    time.sleep(2.5)
    s.send(b"appfw-test")
    report(s, "udp")
    if mode.endswith("-exit"):
        os._exit(0)
    s.close()
elif mode == "tcp-fork":
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        s = tcp()
        report(s, "tcp", parent=os.getppid())
        os.read(r, 1)  # wait for the parent to end
        os._exit(0)
    sys.stdin.read()
    os.write(w, b"x")
    os.waitpid(pid, 0)
    sys.exit(0)
elif mode == "tcp-thread":
    done = threading.Event()

    def worker():
        s = tcp(); keep.append(s); report(s, "tcp", tid=threading.get_native_id())
        done.set()
    threading.Thread(target=worker, daemon=True).start()
    done.wait()
else:
    sys.exit("unknown mode " + mode)
sys.stdin.read()
