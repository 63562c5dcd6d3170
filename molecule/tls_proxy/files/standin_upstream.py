#!/usr/bin/env python3
"""Stand-in upstream for the tls_proxy scenario, in place of Tomcat (NOT XNAT).

python's http.server serving the current directory (index.html: "stand-in upstream, not XNAT"),
plus two test hooks the verify step uses through the proxy:
  GET /headers  -> JSON of the request headers as the upstream received them
  POST (any)    -> reads the whole body (Content-Length or chunked) and answers JSON
                   {"bytes": N, "headers": {...}}, so a large upload is proven to arrive complete.
Usage: standin_upstream.py BIND PORT
"""
import http.server
import json
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    def _json(self, payload):
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self):
        count = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return count
                count += len(self.rfile.read(size))
                self.rfile.readline()  # CRLF after the chunk
        remaining = int(self.headers.get("Content-Length", "0"))
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                break
            count += len(chunk)
            remaining -= len(chunk)
        return count

    def do_GET(self):
        if self.path == "/headers":
            self._json({"headers": dict(self.headers.items())})
        else:
            super().do_GET()

    def do_POST(self):
        count = self._read_body()
        self._json({"bytes": count, "headers": dict(self.headers.items())})


if __name__ == "__main__":
    http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
