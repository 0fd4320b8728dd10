"""Build the ONNX example models on scikit-learn's bundled digits data set (no download).

Re-run from the repository root after train_digits.py (it reads digits-mlp.safetensors):

    .venv/bin/python examples/models/export_onnx.py

It writes, next to this script:
  digits-pipeline.onnx  a scikit-learn Pipeline (StandardScaler + LogisticRegression) exported with
                        skl2onnx: input "pixels" FP32 [N, 64] raw pixels 0-16; outputs "label"
                        INT64 [N] and "probabilities" FP32 [N, 10]
  digits-cnn.onnx       a small convolutional network: input "image" FP32 [N, 1, 8, 8] raw pixels,
                        8 fixed 3x3 filters, ReLU, 2x2 max pooling, a dense layer trained by
                        logistic regression on what the filters see; output "probabilities"
                        FP32 [N, 10]
  digits-mlp.onnx       digits-mlp.safetensors' exact weights as an ONNX graph (MatMul, Add, Relu,
                        Softmax), to compare the native backend with ONNX Runtime on one model
  digits-onnx-report.json  each model's accuracy on the held-out split (the one in digits-test.csv)
"""

import json
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

SEED = 0
HERE = pathlib.Path(__file__).resolve().parent
# Opsets every ONNX Runtime from 1.16 on runs.
OPSET = 17
ML_OPSET = 3
FILTERS = 8


def split():
    digits = load_digits()
    x = digits.data.astype(np.float32)
    # The same split as train_digits.py, so digits-test.csv is held out for every model.
    return train_test_split(x, digits.target, test_size=0.2, random_state=SEED, stratify=digits.target)


def pipeline(x_train, y_train, x_test, y_test):
    pipe = Pipeline([("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=2000))])
    pipe.fit(x_train, y_train)
    model = convert_sklearn(
        pipe,
        "digits-pipeline",
        initial_types=[("pixels", FloatTensorType([None, 64]))],
        # Without this, the classifier's probabilities come out as a ZipMap: a sequence of
        # {label: probability} maps, which no inference protocol carries as a tensor.
        options={id(pipe.steps[-1][1]): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
    )
    model.doc_string = "digits: StandardScaler + LogisticRegression (scikit-learn pipeline)"
    return model, float(pipe.score(x_test, y_test))


def filters():
    """Eight fixed 3x3 filters: four edge detectors and four seeded random ones."""
    edges = [
        [[-1, -1, -1], [0, 0, 0], [1, 1, 1]],
        [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]],
        [[0, 1, 1], [-1, 0, 1], [-1, -1, 0]],
        [[1, 1, 0], [1, 0, -1], [0, -1, -1]],
    ]
    rng = np.random.default_rng(SEED)
    random = rng.normal(0, 1, size=(FILTERS - len(edges), 3, 3))
    return np.concatenate([np.array(edges, dtype=np.float64), random]).astype(np.float32)


def conv_features(images, kernels, bias):
    """What the graph computes before its dense layer: conv 3x3 (valid), ReLU, 2x2 max pooling."""
    n = images.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(images, (3, 3), axis=(1, 2))  # n,6,6,3,3
    maps = np.einsum("nijab,kab->nkij", windows, kernels) + bias[None, :, None, None]
    maps = np.maximum(maps, 0)
    pooled = maps.reshape(n, FILTERS, 3, 2, 3, 2).max(axis=(3, 5))
    return pooled.reshape(n, -1)


def cnn(x_train, y_train, x_test, y_test):
    # Pixels are 0-16; the filters see them scaled to 0-1, folded into the kernels (conv is linear).
    kernels = filters() / np.float32(16.0)
    bias = np.zeros(FILTERS, dtype=np.float32)
    img = lambda x: x.reshape(-1, 8, 8)
    features_train = conv_features(img(x_train), kernels, bias)
    features_test = conv_features(img(x_test), kernels, bias)
    dense = LogisticRegression(max_iter=5000, C=10.0)
    dense.fit(features_train, y_train)
    accuracy = float(dense.score(features_test, y_test))

    weight = dense.coef_.T.astype(np.float32)  # [72, 10]
    intercept = dense.intercept_.astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "kernels", "conv_bias"], ["conv"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["conv"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
        helper.make_node("Gemm", ["features", "dense_weight", "dense_bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits-cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializer=[
            numpy_helper.from_array(kernels.reshape(FILTERS, 1, 3, 3), "kernels"),
            numpy_helper.from_array(bias, "conv_bias"),
            numpy_helper.from_array(weight, "dense_weight"),
            numpy_helper.from_array(intercept, "dense_bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gpucap-examples")
    model.ir_version = 8
    model.doc_string = "digits: conv 3x3 x8 (fixed filters), ReLU, max pool 2x2, dense (logistic regression)"
    onnx.checker.check_model(model)
    return model, accuracy


def mlp():
    """digits-mlp.safetensors' weights as an ONNX graph."""
    tensors = load_file(str(HERE / "digits-mlp.safetensors"))
    names = ["hidden1", "hidden2", "output"]
    nodes, initializers = [], []
    current = "pixels"
    for i, name in enumerate(names):
        initializers += [
            numpy_helper.from_array(tensors[f"{name}.weight"], f"{name}.weight"),
            numpy_helper.from_array(tensors[f"{name}.bias"], f"{name}.bias"),
        ]
        nodes += [
            helper.make_node("MatMul", [current, f"{name}.weight"], [f"{name}.mm"]),
            helper.make_node("Add", [f"{name}.mm", f"{name}.bias"], [f"{name}.pre"]),
        ]
        last = i == len(names) - 1
        out = "probabilities" if last else f"{name}.out"
        nodes.append(helper.make_node("Softmax" if last else "Relu", [f"{name}.pre"], [out], **({"axis": 1} if last else {})))
        current = out
    graph = helper.make_graph(
        nodes,
        "digits-mlp",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gpucap-examples")
    model.ir_version = 8
    model.doc_string = "digits-mlp.safetensors as ONNX"
    onnx.checker.check_model(model)
    return model


def main() -> None:
    x_train, x_test, y_train, y_test = split()
    report = {"seed": SEED, "test_samples": len(y_test)}
    model, report["pipeline_test_accuracy"] = pipeline(x_train, y_train, x_test, y_test)
    onnx.save(model, str(HERE / "digits-pipeline.onnx"))
    model, report["cnn_test_accuracy"] = cnn(x_train, y_train, x_test, y_test)
    onnx.save(model, str(HERE / "digits-cnn.onnx"))
    onnx.save(mlp(), str(HERE / "digits-mlp.onnx"))
    (HERE / "digits-onnx-report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
