#!/usr/bin/env python3
"""What a view costs a reducer when many callers' views are materialized (issue 24's speed line).

Usage: bench-views.py SERVER_URL MODULE_WASM [--callers N] [--calls M]

Publishes MODULE_WASM (tests/fixtures/modules/features_2x.wasm for Epoch, features_2x_28.wasm
for SpacetimeDB 2.8.3) twice under fresh names. In the first database nobody has read a view;
in the second, N callers each add a secret and read their own `my_secrets` view through SQL,
which materializes one instance per caller. Then one caller adds M more secrets, one call at a
time, in each database: `my_secrets` reads `secret` by its `owner` index, so a server that
tracks what each view read re-runs only that caller's instance, and the call costs about the
same with N instances as with none. Prints p50 and p99 of both runs. Python 3 standard library
only; nothing is asserted, this only prints.
"""
import argparse
import json
import uuid

from benchlib import latencies_ms, percentile, request


def identity(base):
    return json.loads(request("POST", f"{base}/v1/identity")[1])["token"]


def publish(base, token, module):
    db = f"views-{uuid.uuid4().hex[:8]}"
    with open(module, "rb") as f:
        request("PUT", f"{base}/v1/database/{db}", token, f.read())
    return db


def call(base, db, token, reducer, args):
    request("POST", f"{base}/v1/database/{db}/call/{reducer}", token, json.dumps(args).encode(), "application/json")


def put_latencies(base, db, token, first_id, calls):
    return latencies_ms(calls, lambda i: call(base, db, token, "put_secret", [first_id + i, f"more {i}"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("module")
    ap.add_argument("--callers", type=int, default=500)
    ap.add_argument("--calls", type=int, default=300)
    a = ap.parse_args()
    base = a.server.rstrip("/")
    owner = identity(base)
    bare, busy = publish(base, owner, a.module), publish(base, owner, a.module)
    for n in range(a.callers):
        token = identity(base)
        call(base, busy, token, "put_secret", [n, f"secret {n}"])
        status, _ = request("POST", f"{base}/v1/database/{busy}/sql", token, b"SELECT * FROM my_secrets")
        assert status == 200
    writer = identity(base)
    put_latencies(base, bare, writer, 1_000_000, 20)  # warm up
    put_latencies(base, busy, writer, 1_000_000, 20)
    quiet = put_latencies(base, bare, writer, 2_000_000, a.calls)
    many = put_latencies(base, busy, writer, 2_000_000, a.calls)
    print(json.dumps({
        "server": base,
        "views_materialized": a.callers,
        "put_secret_ms_no_views": {"p50": round(percentile(quiet, 0.5), 2), "p99": round(percentile(quiet, 0.99), 2)},
        "put_secret_ms_with_views": {"p50": round(percentile(many, 0.5), 2), "p99": round(percentile(many, 0.99), 2)},
    }))


if __name__ == "__main__":
    main()
