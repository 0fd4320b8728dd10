"""Drive gpucap-runtime serving ONNX models with tritonclient's HTTP client, unchanged, and compare
every answer with ONNX Runtime's Python API run on the same model and inputs.

usage: onnx_client_check.py MODELS_DIR TEST_CSV ONNX_REPORT PIPELINE_URL MULTI_URL CNN_URL NOBATCH_URL TYPES_URL

Floating-point outputs must agree with onnxruntime's to within 1e-5 (absolute and relative): the
same library computes both, but a batch of many requests may take other kernels' paths than one
request alone. Integer, boolean and string outputs must be identical. Prints one line per check;
exits non-zero on the first mismatch.
"""

import json
import pathlib
import sys

import ml_dtypes
import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

TOLERANCE = 1e-5
ROOT = pathlib.Path(__file__).resolve().parents[3]


def client(url):
    c = httpclient.InferenceServerClient(url=url, concurrency=8)
    assert c.is_server_live() and c.is_server_ready()
    return c


def infer(c, model, inputs, binary, outputs=None):
    """Send `inputs` {name: array}; return {output name: array} and the raw response."""
    tensors = []
    for name, array in inputs.items():
        t = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        t.set_data_from_numpy(array, binary_data=binary)
        tensors.append(t)
    requested = None if outputs is None else [httpclient.InferRequestedOutput(n, binary_data=binary) for n in outputs]
    result = c.infer(model, tensors, outputs=requested)
    response = result.get_response()
    return {o["name"]: result.as_numpy(o["name"]) for o in response["outputs"]}, response


def same(name, got, want):
    assert got.shape == want.shape, f"{name}: shape {got.shape}, onnxruntime {want.shape}"
    if want.dtype.kind == "f":
        assert np.allclose(got.astype(np.float64), want.astype(np.float64), atol=TOLERANCE, rtol=TOLERANCE), f"{name}: {got} vs {want}"
    elif want.dtype == object:
        assert [bytes(g) if not isinstance(g, str) else g.encode() for g in got.ravel()] == [w.encode() if isinstance(w, str) else bytes(w) for w in want.ravel()], f"{name}: {got} vs {want}"
    else:
        assert np.array_equal(got, want), f"{name}: {got} vs {want}"


def reference(path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda inputs: dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))


def check_pipeline(url, csv, report):
    c = client(url)
    meta = c.get_model_metadata("digits-pipeline")
    assert meta["platform"] == "onnxruntime_onnx", meta
    assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}], meta
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [("label", "INT64", [-1]), ("probabilities", "FP32", [-1, 10])], meta
    data = np.loadtxt(csv, delimiter=",", dtype=np.float32)
    labels, pixels = data[:, 0].astype(np.int64), data[:, 1:]
    want = reference(ROOT / "examples/models/digits-pipeline.onnx")({"pixels": pixels})
    for binary in (True, False):
        got = {"label": [], "probabilities": []}
        for start in range(0, len(pixels), 40):
            out, _ = infer(c, "digits-pipeline", {"pixels": pixels[start : start + 40]}, binary)
            for k in got:
                got[k].append(out[k])
        for k in got:
            same(f"pipeline {k}", np.concatenate(got[k]), want[k])
        correct = int((np.concatenate(got["label"]) == labels).sum())
        expected = round(report["pipeline_test_accuracy"] * len(labels))
        assert correct == expected, f"{correct} correct, the export's report says {expected}"
        print(f"pipeline: {correct}/{len(labels)} correct, outputs agree with onnxruntime ({'binary' if binary else 'JSON'})")


def check_multi(url, models):
    c = client(url)
    want = reference(models / "multi.onnx")
    inputs = {
        "x": np.array([[1.5, -2, 3], [0.25, 0, 7]], dtype=np.float32),
        "ids": np.array([41, -9_000_000_000_000], dtype=np.int64),
        "tag": np.array([b"alpha", "b\u00e9ta".encode()], dtype=np.object_),
    }
    expected = want({"x": inputs["x"], "ids": inputs["ids"], "tag": np.array(["alpha", "b\u00e9ta"], dtype=object)})
    for binary in (True, False):
        out, response = infer(c, "multi", inputs, binary)
        assert [o["name"] for o in response["outputs"]] == ["y", "total", "next_ids", "upper"], response
        for name in expected:
            same(f"multi {name}", out[name], expected[name])
        # Only the outputs asked for, each in the form asked for.
        out, response = infer(c, "multi", inputs, binary, outputs=["upper", "next_ids"])
        assert [o["name"] for o in response["outputs"]] == ["upper", "next_ids"], response
        same("multi next_ids", out["next_ids"], expected["next_ids"])
        print(f"multi: four outputs of three datatypes from three inputs agree; output selection honoured ({'binary' if binary else 'JSON'})")
    return c, want


def check_bad_requests(c):
    x = np.zeros((1, 3), dtype=np.float32)
    cases = [
        ({"x": x.astype(np.float64), "ids": np.zeros(1, np.int64), "tag": np.array([b"a"], dtype=np.object_)}, "'x'.datatype: FP64, but this input is FP32"),
        ({"x": np.zeros((1, 4), np.float32), "ids": np.zeros(1, np.int64), "tag": np.array([b"a"], dtype=np.object_)}, "'x'.shape: [1, 4] does not fit; expected [-1, 3]"),
        ({"x": x, "ids": np.zeros(1, np.int64)}, "inputs: missing tag BYTES [-1]"),
        ({"x": x, "idz": np.zeros(1, np.int64), "tag": np.array([b"a"], dtype=np.object_)}, "unknown input 'idz'"),
        ({"x": x, "ids": np.zeros(2, np.int64), "tag": np.array([b"a"], dtype=np.object_)}, "inputs 'ids': 2 rows, but 'x' has 1"),
    ]
    for inputs, message in cases:
        try:
            infer(c, "multi", inputs, True)
        except InferenceServerException as e:
            assert e.status() == "400", (e.status(), e.message())
            assert message in e.message(), (message, e.message())
        else:
            raise AssertionError(f"accepted: {message}")
    print(f"bad requests: {len(cases)} refused with 400, each naming the tensor and what was expected")


def check_concurrent_batches(url, models, clients=64, per_client=12):
    """Requests from many clients are batched together; each must get exactly what it would alone."""
    rng = np.random.default_rng(7)
    c = httpclient.InferenceServerClient(url=url, concurrency=clients)
    want = reference(models / "multi.onnx")
    work = []
    for i in range(clients * per_client):
        rows = int(rng.integers(1, 4))
        work.append(
            {
                "x": rng.normal(size=(rows, 3)).astype(np.float32),
                "ids": rng.integers(-1000, 1000, size=rows).astype(np.int64),
                "tag": np.array([f"r{i}-{j}".encode() for j in range(rows)], dtype=np.object_),
            }
        )

    # tritonclient's HTTP client is gevent-based: concurrency comes from async_infer over its
    # connection pool, not from threads.
    pending = []
    for inputs in work:
        tensors = []
        for name, array in inputs.items():
            t = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            t.set_data_from_numpy(array, binary_data=True)
            tensors.append(t)
        pending.append(c.async_infer("multi", tensors))
    for inputs, request in zip(work, pending):
        result = request.get_result()
        alone = want({"x": inputs["x"], "ids": inputs["ids"], "tag": np.array([t.decode() for t in inputs["tag"]], dtype=object)})
        for name in alone:
            same(f"batched {name}", result.as_numpy(name), alone[name])
    print(f"concurrency: {len(work)} requests from {clients} clients each got its own rows back, as onnxruntime computes them alone")


def check_cnn(url, csv):
    c = client(url)
    data = np.loadtxt(csv, delimiter=",", dtype=np.float32)
    images = data[:, 1:].reshape(-1, 1, 8, 8)
    want = reference(ROOT / "examples/models/digits-cnn.onnx")({"image": images})
    out, _ = infer(c, "digits-cnn", {"image": images[:100]}, True)
    same("cnn probabilities", out["probabilities"], want["probabilities"][:100])
    print("cnn: [100, 1, 8, 8] images agree with onnxruntime")


def check_nobatch(url, models):
    c = client(url)
    v = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    out, _ = infer(c, "nobatch", {"v": v}, False)
    same("nobatch w", out["w"], reference(models / "nobatch.onnx")({"v": v})["w"])
    print("nobatch: a graph without a batch dimension is served one request at a time")


def check_types(url, models):
    c = client(url)
    inputs = {
        "u8": np.array([[0, 255], [7, 8]], np.uint8),
        "i8": np.array([[-128, 127], [0, 1]], np.int8),
        "i32": np.array([[-(2**31), 2**31 - 1], [0, 5]], np.int32),
        "f16": np.array([[1.5, -0.25], [65504, 0]], np.float16),
        "bf16": np.array([[1.5, -2], [0.375, 256]], ml_dtypes.bfloat16),
        "f64": np.array([[1e300, -1e-300], [0.1, 2]], np.float64),
        "flag": np.array([[True, False], [False, True]]),
    }
    for binary in (True, False):
        tensors = []
        for name, array in inputs.items():
            t = httpclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            # tritonclient sends BF16 only as binary data.
            t.set_data_from_numpy(array, binary_data=binary or name == "bf16")
            tensors.append(t)
        outputs = [httpclient.InferRequestedOutput(f"{n}_out", binary_data=binary or n == "bf16") for n in inputs]
        result = c.infer("types", tensors, outputs=outputs)
        for name, array in inputs.items():
            got = result.as_numpy(f"{name}_out")
            assert result.get_output(f"{name}_out")["datatype"] == np_to_triton_dtype(array.dtype)
            same(f"types {name}", got.astype(np.float64) if name == "bf16" else got, array.astype(np.float64) if name == "bf16" else array)
        print(f"types: UINT8, INT8, INT32, FP16, BF16, FP64 and BOOL round-trip ({'binary' if binary else 'JSON'})")


def main() -> None:
    if not __debug__:
        sys.exit("run without -O (or PYTHONOPTIMIZE): every check here is an assert")
    models, csv, report = pathlib.Path(sys.argv[1]), sys.argv[2], json.loads(pathlib.Path(sys.argv[3]).read_text())
    pipeline_url, multi_url, cnn_url, nobatch_url, types_url = sys.argv[4:9]
    check_pipeline(pipeline_url, csv, report)
    c, _ = check_multi(multi_url, models)
    check_bad_requests(c)
    check_concurrent_batches(multi_url, models)
    check_cnn(cnn_url, csv)
    check_nobatch(nobatch_url, models)
    check_types(types_url, models)
    print("all ONNX checks passed")


if __name__ == "__main__":
    main()
