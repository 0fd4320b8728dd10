"""Write one Open Inference Protocol v2 request body with ROWS random rows for a gpucap-ffn model.

    python scripts/peers/body.py MODEL.safetensors ROWS OUT.json
"""

import json
import sys

import numpy as np

from agree import input_of

path, rows, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
name, width = input_of(path)
x = np.random.default_rng(1).random((rows, width), dtype=np.float32)
body = {"inputs": [{"name": name, "shape": [rows, width], "datatype": "FP32", "data": x.ravel().tolist()}]}
with open(out, "w") as f:
    json.dump(body, f)
