#!/usr/bin/env python3
"""Reducer latency while procedures wait on a slow HTTP server (issue 24's speed figure).

Usage: bench-procedure-wait.py SERVER_URL MODULE_WASM [--waiting N] [--calls M] [--delay S] [--settle T]

Publishes MODULE_WASM (tests/fixtures/modules/features_2x.wasm for Epoch, features_2x_28.wasm
for SpacetimeDB 2.8.3) under a fresh name, measures M sequential calls of the reducer `hit`
with nothing else running, then starts N calls of the procedure `fetch_twice` against a local
HTTP server that answers after S seconds and measures M calls of `hit` again while they wait.
Prints p50 and p99 of both runs, and how many procedure calls came back with status 200.

The server must let procedures reach 127.0.0.1 (Epoch: `epoch start --procedure-http-loopback`;
the 2.8.3 build of scripts/build-spacetimedb-2.sh allows loopback for tests). Python 3 standard
library only; no timing is asserted anywhere, this only prints.
"""
import argparse
import http.server
import json
import threading
import time
import uuid

from benchlib import latencies_ms, percentile, request


class SlowHandler(http.server.BaseHTTPRequestHandler):
    delay = 5.0

    def do_GET(self):
        time.sleep(self.delay)
        body = b"slow answer"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def reducer_latencies(base, db, token, calls):
    url = f"{base}/v1/database/{db}/call/hit"
    return latencies_ms(calls, lambda i: request("POST", url, token, json.dumps([i, 1]).encode(), "application/json"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("module")
    ap.add_argument("--waiting", type=int, default=100)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--delay", type=float, default=10.0)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds between starting the procedures and measuring")
    a = ap.parse_args()
    base = a.server.rstrip("/")
    SlowHandler.delay = a.delay
    slow = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    slow_url = f"http://127.0.0.1:{slow.server_address[1]}/slow"

    token = json.loads(request("POST", f"{base}/v1/identity")[1])["token"]
    db = f"procwait-{uuid.uuid4().hex[:8]}"
    with open(a.module, "rb") as f:
        request("PUT", f"{base}/v1/database/{db}", token, f.read())
    reducer_latencies(base, db, token, 20)  # warm up
    quiet = reducer_latencies(base, db, token, a.calls)

    results = []

    def fetch():
        args = json.dumps([slow_url, 0]).encode()
        try:
            status, body = request("POST", f"{base}/v1/database/{db}/call/fetch_twice", token, args, "application/json")
            outcome = json.loads(body) if status == 200 else None
            inner = outcome.get("status") if isinstance(outcome, dict) else (outcome or [None])[0]
            results.append((status, inner))
        except Exception as e:  # noqa: BLE001 - report, do not stop the measurement
            results.append(("error", str(e)))

    waiting = [threading.Thread(target=fetch) for _ in range(a.waiting)]
    for t in waiting:
        t.start()
    time.sleep(a.settle)  # let every procedure reach its HTTP wait
    busy = reducer_latencies(base, db, token, a.calls)
    for t in waiting:
        t.join()
    ok = sum(1 for status, inner in results if status == 200 and inner == 200)
    print(json.dumps({
        "server": base,
        "reducer_ms_quiet": {"p50": round(percentile(quiet, 0.5), 2), "p99": round(percentile(quiet, 0.99), 2)},
        "reducer_ms_while_waiting": {"p50": round(percentile(busy, 0.5), 2), "p99": round(percentile(busy, 0.99), 2)},
        "procedures_waiting": a.waiting,
        "procedures_answered_200": ok,
        "slow_server_delay_s": a.delay,
    }))


if __name__ == "__main__":
    main()
