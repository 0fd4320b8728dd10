"""Drive a gpucap-runtime with tritonclient's HTTP client, a standard Open Inference Protocol v2
client, unchanged: JSON and binary tensors, several rows, output selection, metadata and health.

usage: triton_client_check.py HOST:PORT TEST_CSV TRAINING_REPORT_JSON
Each pass (binary tensors, then JSON) must classify exactly as many test images correctly as the
training report's test_correct, and both passes must predict the same class for every image.
Prints a line per pass and a summary; exits non-zero on any mismatch.
With GPUCAP_API_KEY set, every call carries it as `Authorization: Bearer …` (an endpoint behind
the fabric's gateway); with GPUCAP_CA_CERT set, the client speaks HTTPS and verifies the server's
certificate against that CA.
"""

import json
import os
import sys

import numpy as np
import tritonclient.http as httpclient


def main() -> None:
    if not __debug__:
        sys.exit("run without -O (or PYTHONOPTIMIZE): every check here is an assert")
    url, csv, report = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(report) as f:
        expected = int(json.load(f)["test_correct"])
    data = np.loadtxt(csv, delimiter=",", dtype=np.float32)
    labels, pixels = data[:, 0].astype(int), data[:, 1:]
    ca = os.environ.get("GPUCAP_CA_CERT")
    tls = {}
    if ca:
        import gevent.ssl

        tls = dict(
            ssl=True,
            ssl_options={"ca_certs": ca},
            ssl_context_factory=gevent.ssl.create_default_context,
        )
    client = httpclient.InferenceServerClient(url=url, **tls)
    key = os.environ.get("GPUCAP_API_KEY")

    def h() -> dict | None:
        # A fresh dict per call: tritonclient adds its own headers (the binary header's
        # length) to the one it is given.
        return {"Authorization": f"Bearer {key}"} if key else None

    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits")
    meta = client.get_model_metadata("digits", headers=h())
    assert meta["inputs"][0]["name"] == "pixels", meta
    assert meta["inputs"][0]["shape"] == [-1, 64], meta

    passes = {}
    for binary in (True, False):
        got = []
        for start in range(0, len(pixels), 32):
            batch = pixels[start : start + 32]
            inp = httpclient.InferInput("pixels", list(batch.shape), "FP32")
            inp.set_data_from_numpy(batch, binary_data=binary)
            out = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
            result = client.infer(
                "digits", [inp], outputs=[out], request_id=f"r{start}", headers=h()
            )
            probs = result.as_numpy("probabilities")
            assert probs.shape == (len(batch), 10), probs.shape
            assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
            assert result.get_response()["id"] == f"r{start}"
            # The server answered in the form asked for: binary data, or JSON numbers.
            answered = result.get_output("probabilities")
            if binary:
                assert answered["parameters"]["binary_data_size"] == probs.nbytes, answered
            else:
                assert "data" in answered and "parameters" not in answered, answered
            got.append(probs.argmax(axis=1))
        predictions = np.concatenate(got)
        correct = int((predictions == labels).sum())
        print(f"binary={binary}: {correct}/{len(labels)} correct")
        assert correct == expected, f"binary={binary}: {correct} correct, expected {expected}"
        passes[binary] = predictions
    differ = int((passes[True] != passes[False]).sum())
    assert differ == 0, f"binary and JSON tensors gave different classes for {differ} images"

    # No outputs named: the server returns all outputs.
    inp = httpclient.InferInput("pixels", [1, 64], "FP64")
    inp.set_data_from_numpy(pixels[:1].astype(np.float64))
    result = client.infer("digits", [inp], headers=h())
    assert result.as_numpy("probabilities").shape == (1, 10)

    # An error reaches the client as an exception with the server's message.
    bad = httpclient.InferInput("pixels", [1, 63], "FP32")
    bad.set_data_from_numpy(pixels[:1, :63])
    try:
        client.infer("digits", [bad], headers=h())
    except Exception as e:  # tritonclient raises InferenceServerException
        assert "inputs[0].shape" in str(e), str(e)
    else:
        raise AssertionError("a wrong shape was accepted")
    print(f"tritonclient ok: {expected} correct with binary tensors and with JSON")


if __name__ == "__main__":
    main()
