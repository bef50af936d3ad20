"""The ceiling: the fastest a ThreadingHTTPServer handler can answer with our bytes.

    python bench/ceiling.py PORT BODY_FILE

A bare `BaseHTTPRequestHandler` tuned the way MediTrack's server is (HTTP/1.1
keep-alive, TCP_NODELAY, one write per response, no logging) that answers every GET
with the same bytes a patient read returns — and does nothing else: no routing, no
authentication, no store. Every MediTrack figure in `make bench` is a ratio to this.
"""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer


class CeilingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    body = b""

    def do_GET(self):
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(self.body), self.body))

    def log_message(self, format, *args):
        pass


class CeilingServer(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True

    def server_bind(self):
        TCPServer.server_bind(self)  # no getfqdn() look-up
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        pass  # wrk resets its connections at the end of every run: not worth a traceback


if __name__ == "__main__":
    port, body_file = int(sys.argv[1]), sys.argv[2]
    with open(body_file, "rb") as file:
        CeilingHandler.body = file.read()
    CeilingServer(("127.0.0.1", port), CeilingHandler).serve_forever()
