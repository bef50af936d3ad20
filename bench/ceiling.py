"""The ceiling: the fastest a ThreadingHTTPServer handler can answer with our bytes.

    python bench/ceiling.py PORT BODY_FILE [PROCESSES]

A bare `BaseHTTPRequestHandler` tuned the way MediTrack's server is (HTTP/1.1
keep-alive, TCP_NODELAY, one write per response, no logging) that answers every GET
with the same bytes a patient read returns — and does nothing else: no routing, no
authentication, no store. Every MediTrack figure in `make bench` is a ratio to this.

With PROCESSES > 1 it binds once and forks that many processes serving the one socket,
as `--workers` does (web/workers/prefork.py), so a workers row compares like with like.
"""

import os
import signal
import socket
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
    processes = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    with open(body_file, "rb") as file:
        CeilingHandler.body = file.read()
    server = CeilingServer(("127.0.0.1", port), CeilingHandler, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.create_server(("127.0.0.1", port), backlog=CeilingServer.request_queue_size)
    children = []
    for _ in range(processes - 1):
        child = os.fork()
        if child == 0:
            children = None  # a child serves; the parent forks the rest, then serves too
            break
        children.append(child)
    if children:
        def stop(signum, frame):  # the bench stops the parent: the children go with it
            for child in children:
                os.kill(child, signal.SIGTERM)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
    server.serve_forever()
