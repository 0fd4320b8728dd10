"""Print bench-onnx.sh's results side by side.

    python scripts/peers/onnx_report.py WORK_DIR
"""

import json
import pathlib
import sys

from report import wrk

work = pathlib.Path(sys.argv[1])


def row(label, r):
    return f"| {label} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['non_2xx'] + r['socket_errors']} |"


for name in ["digits-pipeline", "digits-cnn"]:
    print(f"\n### {name}: one row per request\n")
    print("| connections | server | req/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    for c in [1, 16, 64]:
        ours = wrk(work / f"{name}-gpucap-c{c}.wrk")
        peers = {p.name.split("-mlserver-")[1].split("-c")[0]: wrk(p) for p in work.glob(f"{name}-mlserver-w*-c{c}.wrk")}
        best_workers, best = max(peers.items(), key=lambda kv: kv[1]["rps"])
        print(row(f"{c} | gpucap", ours))
        print(row(f"{c} | MLServer ({best_workers[1:]} workers)", best))
        print(f"| {c} | gpucap / MLServer | {ours['rps'] / best['rps']:.2f}x | | {ours['p99_ms'] / best['p99_ms']:.2f}x p99 | |")
    inproc = json.loads((work / f"{name}-inprocess.json").read_text())
    print(f"\nONNX Runtime {inproc['onnxruntime']} in-process (session.run in a loop, no server):")
    for p in inproc["points"]:
        print(f"  batch {p['rows']:>3}: {p['calls_per_s']:,.0f} calls/s = {p['rows_per_s']:,.0f} rows/s, p50 {p['p50_ms']:.3f} ms, p99 {p['p99_ms']:.3f} ms")

print("\n### digits MLP, same weights: native backend against ONNX Runtime, both served by gpucap\n")
print("| connections | format | req/s | p50 ms | p99 ms | errors |")
print("|---|---|---|---|---|---|")
for c in [1, 16, 64]:
    native, onnx = wrk(work / f"mlp-safetensors-c{c}.wrk"), wrk(work / f"mlp-onnx-c{c}.wrk")
    print(row(f"{c} | .safetensors (native)", native))
    print(row(f"{c} | .onnx (ONNX Runtime)", onnx))
