#!/usr/bin/env python3
"""A replica that misbehaves, for the router's fault tests: it starts like gpucap-runtime
(`serve --config FILE`, writes its address file, answers health and metrics) but fails every
inference — with a 500 (`GPUCAP_BROKEN=500`, the default) or with bytes that are not HTTP
(`GPUCAP_BROKEN=garbage`). `GPUCAP_BROKEN=hang` never becomes ready at all;
`GPUCAP_BROKEN=slow` answers every inference, half a second late."""
import http.server
import os
import sys
import time
import tomllib

MODE = os.environ.get("GPUCAP_BROKEN", "500")
METRICS = (
    b"# TYPE gpucap_queue_depth gauge\ngpucap_queue_depth 0\n"
    b"# TYPE gpucap_backend_busy_seconds counter\ngpucap_backend_busy_seconds_total 0\n"
)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body, kind="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/metrics":
            self.reply(200, METRICS, "text/plain")
        else:
            self.reply(200, b"{}")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if MODE == "slow":
            time.sleep(0.5)
            self.reply(200, b'{"model_name": "digits", "outputs": []}')
        elif MODE == "garbage":
            self.wfile.write(b"this is not HTTP\r\n\r\n")
            self.wfile.flush()
            self.close_connection = True
        else:
            self.reply(500, b'{"error": "broken replica"}')


def main():
    if MODE == "hang":
        while True:
            time.sleep(3600)
    config = tomllib.load(open(sys.argv[sys.argv.index("--config") + 1], "rb"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    address = "127.0.0.1:%d" % server.server_address[1]
    tmp = config["server"]["address_file"] + ".tmp"
    with open(tmp, "w") as f:
        f.write(address)
    os.replace(tmp, config["server"]["address_file"])
    server.serve_forever()


if __name__ == "__main__":
    main()
