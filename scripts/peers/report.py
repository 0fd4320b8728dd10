"""Print bench-peers.sh's results side by side: the raw forward pass against ONNX Runtime, and
the served figures against MLServer (its best worker setting per connection count).

    python scripts/peers/report.py WORK_DIR
"""

import json
import pathlib
import sys

work = pathlib.Path(sys.argv[1])


def wrk(path: pathlib.Path) -> dict:
    for line in path.read_text().splitlines():
        if line.startswith("WRK_JSON "):
            r = json.loads(line[len("WRK_JSON "):])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
            return r
    raise SystemExit(f"{path}: no figures from wrk")


def best(pattern: str, key: str) -> tuple[dict, dict]:
    """Per batch size, the best round median over every file matching `pattern`; and the last file."""
    found, last = {}, {}
    for path in sorted(work.glob(pattern)):
        last = json.loads(path.read_text())
        for p in last["points"]:
            found[p["rows"]] = min(found.get(p["rows"], float("inf")), p[key])
    return found, last


ours, _ = best("gpucap-forward-*.json", "median_ms")
if ours:
    theirs, ort = best("ort-forward-*.json", "median_ms")
    rounds = len(list(work.glob("ort-forward-*.json")))
    print(f"raw forward pass, {ort['threads']} threads, best of {rounds} round medians, ms (onnxruntime {ort['onnxruntime']})")
    print(f"{'rows':>6} | {'gpucap':>9} | {'onnxruntime':>11} | gpucap time / ORT time")
    for rows in sorted(theirs):
        print(f"{rows:>6} | {ours[rows]:>9.2f} | {theirs[rows]:>11.2f} | {ours[rows] / theirs[rows]:.2f}x")

served = sorted(work.glob("gpucap-c*.wrk"), key=lambda p: int(p.stem.split("-c")[1]))
if served:
    print("\nserved, one row per request (wrk); MLServer with ONNX Runtime inside, adaptive batching on")
    print(f"{'conns':>5} | {'gpucap req/s':>12} {'p50 ms':>7} {'p99 ms':>7} | {'MLServer req/s':>14} {'p50 ms':>7} {'p99 ms':>7} {'workers':>7} | speed-up")
    for path in served:
        c = int(path.stem.split("-c")[1])
        g = wrk(path)
        peers = []
        for p in work.glob(f"mlserver-w*-c{c}.wrk"):
            r = wrk(p)
            r["workers"] = p.stem.split("-w")[1].split("-")[0]
            peers.append(r)
        for r in [g] + peers:
            if r["socket_errors"] or r["non_2xx"]:
                print(f"  warning: errors in a run: {r}")
        m = max(peers, key=lambda r: r["rps"])
        print(f"{c:>5} | {g['rps']:>12.1f} {g['p50_ms']:>7.2f} {g['p99_ms']:>7.2f} | {m['rps']:>14.1f} "
              f"{m['p50_ms']:>7.2f} {m['p99_ms']:>7.2f} {m['workers']:>7} | {g['rps'] / m['rps']:.2f}x")
