"""PyTorch eager on the same weights and GPU: the forward-pass baseline for `gpucap-runtime forward-bench`.

Loads a gpucap-ffn `.safetensors` model (row-major [in, out] weights, activations from the file's
metadata), builds the same network from torch.nn.functional calls, and prints the median time of a
forward pass per batch size, measured two ways:
  host-to-host: numpy input -> GPU -> forward -> numpy output, synchronised (what gpucap measures);
  on-device:    input already on the GPU, CUDA events around the forward pass only.
FP32 products use no TF32 (PyTorch's default for matmul), like gpucap's FP32 path.

    python examples/bench/torch_forward.py MODEL.safetensors [--batches 1,64,1024] [--iterations 20] [--json]
"""

import argparse
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open

ACTIVATIONS = {
    "identity": lambda x: x,
    "linear": lambda x: x,
    "none": lambda x: x,
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softmax": lambda x: torch.softmax(x, dim=-1),
}


def load(path, device):
    with safe_open(path, framework="numpy") as f:
        meta = f.metadata()
        names = meta["gpucap.layers"].split(",")
        acts = meta.get("gpucap.activations", ",".join(["identity"] * len(names))).split(",")
        layers = []
        for name, act in zip(names, acts):
            w = torch.from_numpy(f.get_tensor(f"{name}.weight")).to(device)
            b = torch.from_numpy(f.get_tensor(f"{name}.bias")).to(device)
            layers.append((w, b, ACTIVATIONS[act]))
    return layers


def forward(layers, x):
    for w, b, act in layers:
        x = act(torch.addmm(b, x, w))
    return x


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--batches", default="1,64,1024")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device("cuda")
    layers = load(args.model, device)
    width = layers[0][0].shape[0]
    results = []
    with torch.inference_mode():
        for rows in (int(b) for b in args.batches.split(",")):
            host = np.random.default_rng(rows).uniform(-1, 1, (rows, width)).astype(np.float32)
            forward(layers, torch.from_numpy(host).to(device)).cpu()  # warm-up
            h2h = []
            for _ in range(args.iterations):
                t = time.perf_counter()
                forward(layers, torch.from_numpy(host).to(device)).cpu().numpy()
                h2h.append(time.perf_counter() - t)
            x = torch.from_numpy(host).to(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            dev = []
            for _ in range(args.iterations):
                start.record()
                forward(layers, x)
                end.record()
                end.synchronize()
                dev.append(start.elapsed_time(end) / 1e3)
            results.append({
                "rows": rows,
                "host_to_host_ms": statistics.median(h2h) * 1e3,
                "on_device_ms": statistics.median(dev) * 1e3,
            })
    if args.json:
        print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "points": results}))
    else:
        print(f"PyTorch {torch.__version__} eager on {torch.cuda.get_device_name()}")
        for r in results:
            print(f"batch {r['rows']:>5}: host-to-host {r['host_to_host_ms']:.3f} ms, on-device {r['on_device_ms']:.3f} ms")


if __name__ == "__main__":
    main()
