#!/usr/bin/env python3
"""A loopback HTTP proxy in front of moto that fails on command.

moto has no switch for throttling or server errors on DescribeInstances, so
the tests put this proxy between fleetdns and moto. It forwards every request
unchanged, except requests for a region (or a service in a region) that has a
fault set:

    POST /__fault  {"region": "eu-west-1" | "*" | "sqs/us-east-1" | "sqs/*",
                    "mode": "ok" | "throttle" | "error500" | "drop" | "delay",
                    "seconds": 5}
    GET  /__stats  -> {"REGION": requests seen, "SERVICE/REGION": requests seen}

A request takes the fault of its service and region, else of its service in
any region, else of its region, else of "*". The region and the service are
read from the SigV4 credential scope in the Authorization header
(Credential=KEY/DATE/REGION/SERVICE/aws4_request). Usage:

    faultproxy.py LISTEN_PORT UPSTREAM_URL     (prints "ready PORT" when up)
"""

import json
import re
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = {}
STATS = {}
LOCK = threading.Lock()
SCOPE = re.compile(r"Credential=[^/]+/\d+/([^/]+)/([^/]+)/")

THROTTLE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
    b"<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
    b"</Error></Errors><RequestID>fault-proxy</RequestID></Response>"
)
ERROR500 = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
    b"<Code>InternalError</Code><Message>An internal error has occurred</Message>"
    b"</Error></Errors><RequestID>fault-proxy</RequestID></Response>"
)


class Handler(BaseHTTPRequestHandler):
    upstream = ""

    def log_message(self, *args):
        pass

    def _send(self, status, body, ctype="text/xml"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/__stats":
            with LOCK:
                body = json.dumps(STATS).encode()
            return self._send(200, body, "application/json")
        return self._forward(None)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if self.path == "/__fault":
            spec = json.loads(body)
            with LOCK:
                FAULTS[spec["region"]] = spec
            return self._send(200, b"{}", "application/json")
        return self._forward(body)

    def _forward(self, body):
        match = SCOPE.search(self.headers.get("Authorization", ""))
        region, service = (match.group(1), match.group(2)) if match else ("-", "-")
        with LOCK:
            STATS[region] = STATS.get(region, 0) + 1
            key = f"{service}/{region}"
            STATS[key] = STATS.get(key, 0) + 1
            fault = (
                FAULTS.get(key)
                or FAULTS.get(f"{service}/*")
                or FAULTS.get(region)
                or FAULTS.get("*")
                or {"mode": "ok"}
            )
        mode = fault.get("mode", "ok")
        if mode == "throttle":
            return self._send(503, THROTTLE)
        if mode == "error500":
            return self._send(500, ERROR500)
        if mode == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if mode == "delay":
            time.sleep(float(fault.get("seconds", 5)))
        req = urllib.request.Request(
            self.upstream + self.path,
            data=body,
            method=self.command,
            headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, data, ctype = resp.status, resp.read(), resp.headers.get("Content-Type", "text/xml")
        except urllib.error.HTTPError as e:
            status, data, ctype = e.code, e.read(), e.headers.get("Content-Type", "text/xml")
        self._send(status, data, ctype)


def main():
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    Handler.upstream = upstream
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"ready {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
