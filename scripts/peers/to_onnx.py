"""Write a gpucap-ffn model (.safetensors) as an ONNX graph with the very same weights.

Each layer becomes MatMul -> Add -> activation, so ONNX Runtime's optimiser sees the graph a
PyTorch export would give it (and fuses MatMul + Add as it does there).

    python scripts/peers/to_onnx.py MODEL.safetensors OUT.onnx
"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors import safe_open

# opset 20 has Gelu with both the exact and the tanh form.
OPSET = 20


def activation_nodes(kind: str, x: str, y: str) -> list:
    if kind == "identity":
        return [helper.make_node("Identity", [x], [y])]
    simple = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}
    if kind in simple:
        return [helper.make_node(simple[kind], [x], [y])]
    if kind == "gelu":
        return [helper.make_node("Gelu", [x], [y], approximate="none")]
    if kind == "gelu_tanh":
        return [helper.make_node("Gelu", [x], [y], approximate="tanh")]
    if kind == "softmax":
        return [helper.make_node("Softmax", [x], [y], axis=-1)]
    raise SystemExit(f"activation '{kind}' has no ONNX mapping here")


def convert(src: str, dst: str) -> None:
    with safe_open(src, "np") as f:
        meta = f.metadata()
        if meta.get("gpucap.format") != "gpucap-ffn":
            raise SystemExit(f"{src}: not a gpucap-ffn model")
        layers = meta["gpucap.layers"].split(",")
        activations = meta["gpucap.activations"].split(",")
        weights = {name: f.get_tensor(name) for name in f.keys()}
    inp, out = meta["gpucap.input"], meta["gpucap.output"]
    nodes, inits = [], []
    x = inp
    for i, (name, act) in enumerate(zip(layers, activations)):
        w = weights[f"{name}.weight"].astype(np.float32)
        b = weights[f"{name}.bias"].astype(np.float32)
        inits += [numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(b, f"{name}.bias")]
        nodes.append(helper.make_node("MatMul", [x, f"{name}.weight"], [f"{name}.mm"]))
        nodes.append(helper.make_node("Add", [f"{name}.mm", f"{name}.bias"], [f"{name}.pre"]))
        y = out if i == len(layers) - 1 else f"{name}.out"
        nodes += activation_nodes(act, f"{name}.pre", y)
        x = y
    width_in = weights[f"{layers[0]}.weight"].shape[0]
    width_out = weights[f"{layers[-1]}.weight"].shape[1]
    graph = helper.make_graph(
        nodes,
        "gpucap_ffn",
        [helper.make_tensor_value_info(inp, TensorProto.FLOAT, ["batch", width_in])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", width_out])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model)
    onnx.save(model, dst)
    print(f"wrote {dst}: {len(layers)} layers, {width_in} -> {width_out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    convert(sys.argv[1], sys.argv[2])
