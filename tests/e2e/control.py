#!/usr/bin/env python3
"""The e2e's control channel from the VM to the host: the guest cannot stop the host's
kube-apiserver itself, so it asks here.

Serves on 127.0.0.1 only (the VM reaches it as 10.0.2.2 through qemu's user-mode network):
  GET /apiserver/stop    tests/e2e/cluster.sh apiserver-stop
  GET /apiserver/start   tests/e2e/cluster.sh apiserver-start (returns once /readyz answers)
Anything else is 404. Each answer is the command's exit code and output.

Usage: control.py PORT
"""

import http.server
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
COMMANDS = {
    "/apiserver/stop": ["bash", os.path.join(HERE, "cluster.sh"), "apiserver-stop"],
    "/apiserver/start": ["bash", os.path.join(HERE, "cluster.sh"), "apiserver-start"],
}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        command = COMMANDS.get(self.path)
        if command is None:
            self.send_error(404)
            return
        done = subprocess.run(command, capture_output=True, text=True, timeout=180)
        body = f"exit {done.returncode}\n{done.stdout}{done.stderr}".encode()
        self.send_response(200 if done.returncode == 0 else 500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("control.py: " + (fmt % args) + "\n")


if __name__ == "__main__":
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
