"""Write one Open Inference Protocol v2 request body for an ONNX model: ROWS rows of its inputs
(a dynamic first dimension is ROWS, any other dynamic dimension 1). FP32 inputs of 64 values per
row, or [1, 8, 8] images, get real digits from the held-out test set; anything else is random.

    python scripts/peers/onnx_body.py MODEL.onnx ROWS OUT.json
"""

import json
import pathlib
import sys

import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parents[2]
TYPES = {"tensor(float)": ("FP32", np.float32), "tensor(int64)": ("INT64", np.int64), "tensor(int32)": ("INT32", np.int32)}

path, rows, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
digits = np.loadtxt(ROOT / "examples/models/digits-test.csv", delimiter=",", dtype=np.float32)[:rows, 1:]
rng = np.random.default_rng(1)
inputs = []
for i in ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_inputs():
    shape = [rows if axis == 0 and not isinstance(d, int) else (d if isinstance(d, int) else 1) for axis, d in enumerate(i.shape)]
    datatype, dtype = TYPES[i.type]
    count = int(np.prod(shape))
    x = digits.ravel() if datatype == "FP32" and count == digits.size else rng.random(count).astype(dtype)
    inputs.append({"name": i.name, "shape": shape, "datatype": datatype, "data": x.astype(dtype).ravel().tolist()})
with open(out, "w") as f:
    json.dump({"inputs": inputs}, f)
