"""Helpers the benchmark scripts share: HTTP requests with the standard library, percentiles."""
import time
import urllib.request


def request(method, url, token=None, body=None, content_type=None, timeout=600):
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if content_type:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read()


def percentile(samples, p):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def latencies_ms(calls, one_call):
    """Runs `one_call(i)` for i in 0..calls, one at a time; the time each took, in milliseconds."""
    out = []
    for i in range(calls):
        start = time.perf_counter()
        one_call(i)
        out.append((time.perf_counter() - start) * 1000)
    return out
