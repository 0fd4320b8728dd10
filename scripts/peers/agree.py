"""Check that every engine computes the same function: the same random rows through gpucap's server,
MLServer's server and ONNX Runtime in-process, each compared with a float64 NumPy forward pass of
the safetensors weights. Exits non-zero when any differs by more than the tolerance.

    python scripts/peers/agree.py MODEL.safetensors MODEL.onnx --server gpucap=URL --server mlserver=URL
"""

import argparse
import json
import sys
import urllib.request

import numpy as np
import onnxruntime as ort
from safetensors import safe_open

ROWS = 8


def reference(path: str, x: np.ndarray) -> np.ndarray:
    with safe_open(path, "np") as f:
        meta = f.metadata()
        layers = meta["gpucap.layers"].split(",")
        acts = meta["gpucap.activations"].split(",")
        y = x.astype(np.float64)
        for name, act in zip(layers, acts):
            y = y @ f.get_tensor(f"{name}.weight").astype(np.float64) + f.get_tensor(f"{name}.bias")
            if act == "relu":
                y = np.maximum(y, 0)
            elif act == "tanh":
                y = np.tanh(y)
            elif act == "sigmoid":
                y = 1 / (1 + np.exp(-y))
            elif act == "softmax":
                y = np.exp(y - y.max(axis=1, keepdims=True))
                y /= y.sum(axis=1, keepdims=True)
            elif act != "identity":
                raise SystemExit(f"agree.py has no reference for activation '{act}'")
    return y


def input_of(path: str) -> tuple[str, int]:
    """The model's input name and row width."""
    with safe_open(path, "np") as f:
        meta = f.metadata()
        first = meta["gpucap.layers"].split(",")[0]
        return meta["gpucap.input"], f.get_slice(f"{first}.weight").get_shape()[0]


def served(url: str, model: str, name: str, x: np.ndarray) -> np.ndarray:
    body = {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    req = urllib.request.Request(
        f"{url}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        out = json.load(resp)["outputs"][0]
    return np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("safetensors")
    p.add_argument("onnx")
    p.add_argument("--server", action="append", default=[], help="NAME=URL of a server serving model 'bench'")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest |difference| / (1 + max |output|)")
    args = p.parse_args()

    input_name, width = input_of(args.safetensors)
    x = np.random.default_rng(7).random((ROWS, width), dtype=np.float32)
    want = reference(args.safetensors, x)
    scale = 1 + np.abs(want).max()
    session = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    got = {"onnxruntime": session.run(None, {input_name: x})[0]}
    for spec in args.server:
        name, url = spec.split("=", 1)
        got[name] = served(url, "bench", input_name, x)
    worst = 0.0
    for name, y in got.items():
        diff = float(np.abs(y - want).max())
        worst = max(worst, diff / scale)
        print(f"  {name:<12} max |y - float64 reference| = {diff:.2e} over {ROWS} rows (outputs up to {scale - 1:.2f})")
    if worst > args.tolerance:
        sys.exit(f"engines disagree: relative difference {worst:.2e} > {args.tolerance:.0e}")


if __name__ == "__main__":
    main()
