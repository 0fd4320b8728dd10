"""ONNX Runtime called directly in-process, the ceiling a server around it can approach: session.run
in a loop for SECONDS at each batch size (one call serves ROWS requests of one row), reporting
calls and rows per second and the p99 of a call.

    python scripts/peers/ort_inprocess.py MODEL.onnx --threads 2 --batches 1,16,64 --seconds 5

Prints one JSON object: {"onnxruntime": VERSION, "points": [{"rows", "calls_per_s", "rows_per_s", "p50_ms", "p99_ms"}]}.
"""

import argparse
import json
import time

import numpy as np
import onnxruntime as ort

TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--seconds", type=float, default=5)
    args = p.parse_args()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(args.model, opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    points = []
    for rows in [int(b) for b in args.batches.split(",")]:
        feed = {}
        for i in session.get_inputs():
            shape = [rows if axis == 0 and not isinstance(d, int) else (d if isinstance(d, int) else 1) for axis, d in enumerate(i.shape)]
            feed[i.name] = rng.random(shape).astype(TYPES[i.type])
        session.run(None, feed)
        times = []
        end = time.perf_counter() + args.seconds
        while (t := time.perf_counter()) < end:
            session.run(None, feed)
            times.append(time.perf_counter() - t)
        times.sort()
        total = sum(times)
        points.append(
            {
                "rows": rows,
                "calls_per_s": len(times) / total,
                "rows_per_s": rows * len(times) / total,
                "p50_ms": times[len(times) // 2] * 1e3,
                "p99_ms": times[int(len(times) * 0.99)] * 1e3,
            }
        )
    print(json.dumps({"onnxruntime": ort.__version__, "points": points}))


if __name__ == "__main__":
    main()
