#!/usr/bin/env python3
"""`opa eval -d POLICY -i INPUT 'data.QUERY'` through OPA's own Go engine, for hosts without Go.

No `opa` binary can be installed here (it is on none of the package registries this project
uses), so this drives the OPA Go library (github.com/open-policy-agent/opa/v1/rego) that the PyPI
package opa-golib-python-bindings ships as a c-shared library. The input file's bytes go to Go
untouched, and Go parses them, as `opa eval --input` does: Python neither parses nor re-encodes the
plan. Python's part is starting the interpreter, loading the library and writing the result.

    opa_eval.py --policy policy.rego --input plan.json --query gpucap.deny --output result.json

The result file is the bridge's envelope, `{"result": [{"expressions": [{"value": ...}]}]}` (the
shape of `opa eval --format json`), written as Go produced it. Phase times go to stderr.
"""

import argparse
import ctypes
import json
import sys
import time

# The package's ctypes layer: its public OpaEngine.eval_document takes a Python object and
# re-encodes it with json.dumps, which would make Python parse and re-serialise the whole plan.
from opa_bindings import _native


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--query", required=True, help="document path below data, e.g. gpucap.deny")
    ap.add_argument("--output", required=True)
    args = ap.parse_args()

    t0 = time.perf_counter()
    lib = _native.load()
    handle = lib.OpaNew()
    t1 = time.perf_counter()

    def call(fn, *fn_args):
        ptr = fn(handle, *fn_args)
        if not ptr:
            sys.exit("opa_eval: the OPA bridge returned NULL")
        try:
            raw = ctypes.string_at(ptr)
        finally:
            lib.OpaFreeString(ptr)
        return raw

    with open(args.policy, "rb") as f:
        policy = f.read()
    envelope = json.loads(call(lib.OpaAddPolicy, args.policy.encode(), policy))
    if envelope.get("error"):
        sys.exit(f"opa_eval: {envelope['error']}")
    t2 = time.perf_counter()
    with open(args.input, "rb") as f:
        plan = f.read()
    t3 = time.perf_counter()
    raw = call(lib.OpaEvalDocument, args.query.encode(), plan, 0, 0)
    t4 = time.perf_counter()
    # Errors are reported in a small envelope; a result is not parsed here, only written.
    if raw.startswith(b'{"error"') or b'"error":{' in raw[:200]:
        sys.exit(f"opa_eval: {raw[:2000].decode(errors='replace')}")
    with open(args.output, "wb") as f:
        f.write(raw)
    t5 = time.perf_counter()
    lib.OpaDestroy(handle)
    ms = lambda a, b: f"{(b - a) * 1000:.1f} ms"
    print(
        f"opa_eval: load library {ms(t0, t1)}, add policy {ms(t1, t2)}, read input {ms(t2, t3)}, "
        f"parse input + compile + evaluate {ms(t3, t4)}, write result {ms(t4, t5)}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
