# Test servers for appfw's integration tests, in the server namespace:
# HTTP on TCP port 8080 and a UDP echo on port 5353, both dual-stack. Each
# UDP datagram received is appended to the file given as argument, so a
# test can tell whether a blocked datagram arrived.
import http.server
import socket
import socketserver
import sys
import threading

log_path = sys.argv[1]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"appfw-test-ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def udp(s):
    while True:
        data, addr = s.recvfrom(2048)
        with open(log_path, "a") as f:
            f.write("%s %d %s\n" % (addr[0], addr[1], data.decode(errors="replace")))
        s.sendto(data, addr)


udp_sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
udp_sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
udp_sock.bind(("::", 5353))
httpd = Server(("::", 8080), Handler)
threading.Thread(target=udp, args=(udp_sock,), daemon=True).start()
print("ready", flush=True)
httpd.serve_forever()
