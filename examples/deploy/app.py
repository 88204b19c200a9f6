#!/usr/bin/env python3
"""A tiny web service for takt's deployment example.

It listens on $PORT (given by takt's process driver), answers /healthz with 200, and / with
"hello from <version>". Setting BROKEN = True below makes / answer 500 while /healthz stays
healthy: the kind of bug that only real traffic finds, which a canary analysis catches.
"""
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BROKEN = False
VERSION = os.environ.get("TAKT_ARTIFACT_VERSION", "dev")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart

    def do_GET(self):
        if self.path == "/healthz":
            self.reply(200, "ok\n")
        elif BROKEN:
            self.reply(500, f"broken {VERSION}\n")
        else:
            self.reply(200, f"hello from {VERSION}\n")

    def reply(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    server.serve_forever()
