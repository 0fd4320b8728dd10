"""Time ONNX Runtime's raw forward pass at several batch sizes, as `gpucap-runtime forward-bench`
times gpucap's: same random inputs per size, one warm-up pass, the median of N timed passes.

    python scripts/peers/ort_forward.py MODEL.onnx --threads 2 --batches 1,64,1024 --iterations 20

Prints one JSON object: {"onnxruntime": VERSION, "points": [{"rows", "median_ms"}, ...]}.
"""

import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", default="1,64,1024")
    p.add_argument("--iterations", type=int, default=20)
    args = p.parse_args()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    width = session.get_inputs()[0].shape[1]
    rng = np.random.default_rng(0)
    points = []
    for rows in [int(b) for b in args.batches.split(",")]:
        x = rng.random((rows, width), dtype=np.float32)
        session.run(None, {name: x})
        times = []
        for _ in range(args.iterations):
            t = time.perf_counter()
            session.run(None, {name: x})
            times.append((time.perf_counter() - t) * 1000)
        points.append({"rows": rows, "median_ms": statistics.median(times)})
    print(json.dumps({"onnxruntime": ort.__version__, "threads": args.threads, "points": points}))


if __name__ == "__main__":
    main()
