"""Write the ONNX graphs the runtime's ONNX tests serve, built here from the onnx and skl2onnx
packages (nothing is downloaded):

  multi.onnx     inputs x FP32 [N, 3], ids INT64 [N], tag STRING [N]; outputs y = 2x FP32 [N, 3],
                 total = row sums FP32 [N], next_ids = ids + 1 INT64 [N], upper = tag upper-cased
                 STRING [N]
  types.onnx     one identity per datatype: UINT8, INT8, INT32, FP16, BF16, FP64, BOOL, each [N, 2]
  nobatch.onnx   v FP32 [3] -> w = 2v FP32 [3]: no batch dimension
  fixed.onnx     x FP32 [1, 4] -> relu FP32 [1, 4]: a batch dimension fixed to 1
  zipmap.onnx    a scikit-learn classifier exported with its default ZipMap output
  gather.onnx    idx INT64 [N] -> value = table[idx] FP32 [N] over a table of 10: an index out of
                 range is the request's error, which ONNX Runtime reports as an invalid argument
  refused.onnx   a well-formed file whose graph uses an operator that does not exist
  truncated.onnx the first half of digits-pipeline.onnx
  not-onnx.onnx  a text file

Usage: onnx_models.py OUTPUT_DIR
"""

import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression

OPSET = 17
ROOT = pathlib.Path(__file__).resolve().parents[3]


def model(nodes, inputs, outputs, initializers=(), check=True):
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=list(initializers))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gpucap-tests")
    m.ir_version = 8
    if check:
        onnx.checker.check_model(m, full_check=True)
    return m


def value(name, elem_type, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


def multi():
    return model(
        [
            helper.make_node("Mul", ["x", "two"], ["y"]),
            helper.make_node("ReduceSum", ["x", "axis1"], ["total"], keepdims=0),
            helper.make_node("Add", ["ids", "one"], ["next_ids"]),
            helper.make_node("StringNormalizer", ["tag"], ["upper"], case_change_action="UPPER", locale="C"),
        ],
        [value("x", TensorProto.FLOAT, ["N", 3]), value("ids", TensorProto.INT64, ["N"]), value("tag", TensorProto.STRING, ["N"])],
        [
            value("y", TensorProto.FLOAT, ["N", 3]),
            value("total", TensorProto.FLOAT, ["N"]),
            value("next_ids", TensorProto.INT64, ["N"]),
            value("upper", TensorProto.STRING, ["N"]),
        ],
        [
            numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
            numpy_helper.from_array(np.array(1, dtype=np.int64), "one"),
        ],
    )


TYPES = {
    "u8": TensorProto.UINT8,
    "i8": TensorProto.INT8,
    "i32": TensorProto.INT32,
    "f16": TensorProto.FLOAT16,
    "bf16": TensorProto.BFLOAT16,
    "f64": TensorProto.DOUBLE,
    "flag": TensorProto.BOOL,
}


def types():
    return model(
        [helper.make_node("Identity", [name], [f"{name}_out"]) for name in TYPES],
        [value(name, t, ["N", 2]) for name, t in TYPES.items()],
        [value(f"{name}_out", t, ["N", 2]) for name, t in TYPES.items()],
    )


def nobatch():
    return model(
        [helper.make_node("Mul", ["v", "two"], ["w"])],
        [value("v", TensorProto.FLOAT, [3])],
        [value("w", TensorProto.FLOAT, [3])],
        [numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")],
    )


def fixed():
    return model(
        [helper.make_node("Relu", ["x"], ["relu"])],
        [value("x", TensorProto.FLOAT, [1, 4])],
        [value("relu", TensorProto.FLOAT, [1, 4])],
    )


def zipmap():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    clf = LogisticRegression().fit(x, y)
    return convert_sklearn(clf, "zipmap", initial_types=[("features", FloatTensorType([None, 4]))], target_opset=OPSET)


def gather():
    return model(
        [helper.make_node("Gather", ["table", "idx"], ["value"], axis=0)],
        [value("idx", TensorProto.INT64, ["N"])],
        [value("value", TensorProto.FLOAT, ["N"])],
        [numpy_helper.from_array(np.arange(10, dtype=np.float32) * 1.5, "table")],
    )


def refused():
    return model(
        [helper.make_node("NoSuchOperator", ["x"], ["y"])],
        [value("x", TensorProto.FLOAT, ["N", 2])],
        [value("y", TensorProto.FLOAT, ["N", 2])],
        check=False,
    )


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name, build in [("multi", multi), ("types", types), ("nobatch", nobatch), ("fixed", fixed), ("zipmap", zipmap), ("gather", gather), ("refused", refused)]:
        onnx.save(build(), str(out / f"{name}.onnx"))
    pipeline = (ROOT / "examples/models/digits-pipeline.onnx").read_bytes()
    (out / "truncated.onnx").write_bytes(pipeline[: len(pipeline) // 2])
    (out / "not-onnx.onnx").write_text("this is a text file, not a model\n")


if __name__ == "__main__":
    main()
