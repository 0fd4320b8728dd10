#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/seeds/TARGET/) from the project's fixtures: the
starter rule pack, the example model, configs and traces, and requests and values shaped as the
tests send them. Only the standard library: the msgpack and protobuf encodings are written here.

Run from the repository root: python3 fuzz/make_seeds.py
"""
import json
import os
import shutil
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")


def put(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def mp(v):
    """msgpack, as Terraform writes DynamicValues (unknown values are extension type 0)."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, Unknown):
        return b"\xd4\x00\x00"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        return (bytes([0xA0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b
    if isinstance(v, list):
        return bytes([0x90 | len(v)]) + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        return bytes([0x80 | len(v)]) + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(v)


class Unknown:
    pass


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def field(number, payload):
    """A protobuf length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def dynamic(value):
    return mp(value)


POOL = {"name": "eu", "region": "eu-central-1", "jurisdiction": "EU", "capacity_type": "on_prem",
        "tenancy": "dedicated", "gpu": {"model": "H100", "per_node": 8}, "nodes": {"min": 1, "max": 2},
        "driver": "local", "labels": {"team": "ml"}, "price_per_gpu_hour": 2.5}
POLICY = {"name": "burst", "base_pools": ["eu"], "burst_pools": ["spot"], "placement": "ordered",
          "budget": {"max_hourly_usd": 120.0}, "scale_down": {"min_warm_replicas": 1}}
ENDPOINT = {"name": "fraud", "burst_policy": "burst", "model": {"path": "model.safetensors", "version": "1"},
            "replicas": {"min": 1, "max": 4}, "labels": {"latency": "critical"},
            "data_residency": {"classification": "pii"}, "url": Unknown()}


def main():
    shutil.rmtree(SEEDS, ignore_errors=True)
    # msgpack_dynamic_value: the first byte picks the type (resources, data sources, provider).
    for pick, value in enumerate([POLICY, ENDPOINT, POOL, {"regions": None}, {"devices": None},
                                  {"state_dir": "/tmp/s", "policy_paths": ["p"]}, [1, "a", None]]):
        put("msgpack_dynamic_value", f"value-{pick}", bytes([pick]) + mp(value))
    # tfplugin5_request: the first byte picks the RPC; type_name is field 1, values follow.
    for pick, name, value in [(0, "gpucap_gpu_pool", POOL), (1, "gpucap_burst_policy", POLICY),
                              (2, "gpucap_inference_endpoint", ENDPOINT), (3, "gpucap_gpu_pool", POOL),
                              (4, "gpucap_regions", {"jurisdiction": "EU"}),
                              (7, "gpucap_local_devices", {})]:
        body = field(1, name.encode()) + field(2, field(1, dynamic(value)))
        put("tfplugin5_request", f"rpc-{pick}", bytes([pick]) + body)
    for pick in (5, 6):
        put("tfplugin5_request", f"rpc-{pick}", bytes([pick]) + field(2 if pick == 5 else 1, field(1, dynamic({"state_dir": "/tmp/x"}))))
    raw = json.dumps({"name": "eu", "region": "eu-central-1"}).encode()
    put("tfplugin5_request", "rpc-upgrade", bytes([8]) + field(1, b"gpucap_gpu_pool") + field(3, field(1, raw)))
    # oip_json and oip_binary: requests as the inference clients send them.
    row = [round(i * 0.1, 1) for i in range(64)]
    put("oip_json", "one-row", json.dumps({"id": "1", "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]}))
    put("oip_json", "two-rows-nested", json.dumps({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP64", "data": [row, row]}],
                                                   "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}))
    put("oip_json", "int-types", json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "INT8", "data": [1] * 64}], "parameters": {"binary_data_output": False}}))
    header = json.dumps({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}]}).encode()
    put("oip_binary", "binary-fp32", struct.pack("<H", len(header)) + header + struct.pack("<8f", *range(8)))
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP16", "parameters": {"binary_data_size": 8}}]}).encode()
    put("oip_binary", "binary-fp16", struct.pack("<H", len(header)) + header + struct.pack("<4e", 1, 2, 3, 4))
    # inference_rows: a u16 (0: no inference-header-content-length; n: it says n - 1) and a body,
    # JSON or the binary extension's JSON header and tensor bytes.
    put("inference_rows", "json", struct.pack("<H", 0) + json.dumps({"id": "1", "inputs": [{"name": "input", "shape": [3, 64], "datatype": "FP32", "data": [row] * 3}]}).encode())
    put("inference_rows", "shape-last", struct.pack("<H", 0) + json.dumps({"inputs": [{"data": [[1, 2]], "parameters": {"shape": [5]}, "shape": [1, 2]}]}).encode())
    header = json.dumps({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "parameters": {"binary_data_size": 32}}]}).encode()
    put("inference_rows", "binary", struct.pack("<H", len(header) + 1) + header + struct.pack("<8f", *range(8)))
    # front_head: request heads, as clients send them and as the loop leaves them to hyper.
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [row]}]}).encode()
    put("front_head", "inference", b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: router\r\nAuthorization: Bearer gpk_0123\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    put("front_head", "versioned", b"POST /v2/models/digits/versions/1/infer?trace=1 HTTP/1.1\r\nhost: r\r\ninference-header-content-length: 9\r\nconnection: keep-alive, close\r\ncontent-length: 0\r\n\r\n")
    put("front_head", "chunked", b"POST /v2/models/digits/infer HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    put("front_head", "health", b"GET /v2/health/ready HTTP/1.1\r\nhost: r\r\n\r\n")
    # onnx_model: the example ONNX graphs.
    for name in ["digits-pipeline", "digits-cnn", "digits-mlp"]:
        with open(os.path.join(ROOT, f"examples/models/{name}.onnx"), "rb") as f:
            put("onnx_model", name, f.read())
    # oip_tensors: requests to a model of several inputs (two length bytes: 0xFFFF for plain JSON).
    tensors = {"id": "t", "inputs": [
        {"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]},
        {"name": "ids", "shape": [2], "datatype": "INT64", "data": [7, -8]},
        {"name": "tag", "shape": [2], "datatype": "BYTES", "data": ["a", "b\u00e9"]},
        {"name": "flag", "shape": [2, 2], "datatype": "BOOL", "data": [True, False, False, True]}],
        "outputs": [{"name": "upper", "parameters": {"binary_data": True}}, {"name": "y"}]}
    put("oip_tensors", "json", struct.pack("<H", 0xFFFF) + json.dumps(tensors).encode())
    tensors["inputs"][1] = {"name": "ids", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}}
    tensors["inputs"][2] = {"name": "tag", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 11}}
    header = json.dumps(tensors).encode()
    binary = struct.pack("<2q", 7, -8) + struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"bb"
    put("oip_tensors", "binary", struct.pack("<H", len(header)) + header + binary)
    # safetensors_model: the example model.
    with open(os.path.join(ROOT, "examples/models/digits-mlp.safetensors"), "rb") as f:
        put("safetensors_model", "digits-mlp", f.read())
    # policy_rules: the starter pack, the benchmark's rules and the rule tests.
    for d in ["modules/policy-pack/policies", "modules/policy-pack/policies/tests", "scripts/peers/policy/gpucap"]:
        for name in sorted(os.listdir(os.path.join(ROOT, d))):
            if name.endswith(".hcl"):
                with open(os.path.join(ROOT, d, name)) as f:
                    put("policy_rules", d.replace("/", "-") + "-" + name, f.read())
    # plan_json: small plans in the shape `terraform show -json` writes.
    for n in (1, 3):
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts/peers/policy_plan.py"), "--endpoints", str(n),
                        "--output", os.path.join(SEEDS, f"plan-{n}.json")], check=True)
        os.makedirs(os.path.join(SEEDS, "plan_json"), exist_ok=True)
        os.replace(os.path.join(SEEDS, f"plan-{n}.json"), os.path.join(SEEDS, "plan_json", f"plan-{n}.json"))
    put("plan_json", "delete-and-data", json.dumps({"format_version": "1.2", "resource_changes": [
        {"address": "gpucap_gpu_pool.a", "mode": "managed", "type": "gpucap_gpu_pool",
         "change": {"actions": ["delete"], "before": POOL, "after": None}},
        {"address": "data.gpucap_regions.r", "mode": "data", "type": "gpucap_regions", "change": {"actions": ["read"]}},
        {"address": "gpucap_inference_endpoint.e", "mode": "managed", "type": "gpucap_inference_endpoint",
         "change": {"actions": ["delete", "create"], "before": {"name": "e"}, "after": dict(ENDPOINT, url=None)}}]}))
    # fabric_config: the simulator's example config.
    with open(os.path.join(ROOT, "examples/simulate/fabric.toml")) as f:
        put("fabric_config", "simulate-example", f.read())
    # admin_api_body: the simulator's example config as the provider sends it (JSON), and one
    # with an unknown key.
    import tomllib
    with open(os.path.join(ROOT, "examples/simulate/fabric.toml"), "rb") as f:
        config = tomllib.load(f)
    put("admin_api_body", "simulate-example", json.dumps(config))
    put("admin_api_body", "unknown-key", json.dumps(dict(config, replicaz={"min": 1})))
    # gateway_config: a keys file (first byte 0), an [auth] table (1) and a [tls] table (2).
    keys = {"keys": [{"name": "team-a", "sha256": "ab" * 32, "expires_at": "2027-06-30T00:00:00Z",
                      "rate_limit": {"requests_per_second": 50, "rows_per_second": 400, "burst": 10},
                      "monthly_request_quota": 100000},
                     {"name": "team-b", "sha256": "cd" * 32}]}
    put("gateway_config", "keys", b"\x00" + json.dumps(keys).encode())
    put("gateway_config", "auth", b"\x01" + b'mode = "api_key"\nkeys_file = "/var/lib/gpucap/keys.json"\n')
    put("gateway_config", "tls", b"\x02" + b'cert_file = "c.pem"\nkey_file = "k.pem"\nclient_ca_file = "ca.pem"\n')
    # replica_metrics: two scrapes of a runtime's /metrics, a 0xFF byte and the gap between them in
    # tenths of a second (one byte) apart: busy, idle, and a restarted replica (its counter lower).
    def scrape(queue, cpu, gpu):
        return ("# HELP gpucap_queue_depth Requests waiting.\n# TYPE gpucap_queue_depth gauge\n"
                f"gpucap_queue_depth{{model=\"m\"}} {queue}\ngpucap_backend_busy_seconds_total{{backend=\"cpu\"}} {cpu}\n"
                f"gpucap_backend_busy_seconds_total{{backend=\"cuda:0\"}} {gpu}\ngpucap_healthy_backends 2\n").encode()
    for name, gap, later in [("busy", 10, scrape(7, 13.1, "1.004e2")), ("idle", 20, scrape(0, 12.5, "1e2")),
                             ("restarted", 5, scrape(1, 0.2, 0))]:
        put("replica_metrics", name, scrape(3, 12.5, "1e2") + b"\xff" + bytes([gap]) + later)
    # simulate_trace: the head of the example trace, and a trace with comments and blank lines.
    with open(os.path.join(ROOT, "examples/traces/diurnal-week.csv")) as f:
        put("simulate_trace", "diurnal-head", "".join(f.readlines()[:50]))
    put("simulate_trace", "small", "# a comment\nsecond,requests_per_second\n0,10\n\n60,12.5\n120,0\n")


if __name__ == "__main__":
    main()
