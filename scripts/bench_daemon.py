#!/usr/bin/env python3
"""Benchmarks of `gpucap-fabric daemon`, printed side by side in one run (scripts/bench-daemon.sh
builds the release binaries and runs this):

- the admin API: p50 and p99 of a GET of an endpoint and of an unchanged (idempotent) PUT, over one
  kept-alive loopback connection;
- memory: the daemon's resident set, and each hosted endpoint's (its router; its replicas apart);
- restarts with N endpoints: the daemon killed with SIGKILL and started again (routers adopted),
  and the daemon stopped with SIGTERM (every endpoint drained) and started again (routers and
  replicas started afresh), each until all N endpoints answer a prediction;
- `terraform apply` then `destroy` of one endpoint: through a daemon already running (a fabric
  block) against the embedded mode (the provider starts a daemon on this host).

Only the standard library. Usage: python3 scripts/bench_daemon.py [--endpoints N] [--calls N]
"""
import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
MODEL = os.path.join(ROOT, "examples", "models", "digits-mlp.safetensors")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digit():
    with open(os.path.join(ROOT, "examples", "models", "digits-test.csv")) as f:
        row = f.readline().strip().split(",")
    return json.dumps({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32",
                                   "data": [float(v) for v in row[1:]]}]})


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Daemon:
    def __init__(self, work, endpoints):
        self.work = work
        self.port = free_port()
        self.state = os.path.join(work, "state")
        hash_file = os.path.join(work, "token.sha256")
        out = subprocess.run([os.path.join(BIN, "gpucap-fabric"), "token", "--hash-file", hash_file],
                             check=True, capture_output=True, text=True)
        self.token = out.stdout.strip()
        self.config = os.path.join(work, "daemon.toml")
        with open(self.config, "w") as f:
            f.write(f'listen = "127.0.0.1:{self.port}"\nregion = "lab-1"\njurisdiction = "EU"\n'
                    f'state_dir = "{self.state}"\ntoken_sha256_file = "{hash_file}"\n')
        self.proc = None
        self.endpoints = endpoints

    def start(self):
        log = open(os.path.join(self.work, "daemon.log"), "a")
        self.proc = subprocess.Popen([os.path.join(BIN, "gpucap-fabric"), "daemon", "--config", self.config],
                                     stdout=log, stderr=log, start_new_session=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if self.call("GET", "/v1/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.01)
        sys.exit("the daemon did not start; see " + os.path.join(self.work, "daemon.log"))

    def call(self, method, path, body=None, conn=None):
        c = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        if conn is None:
            c.close()
        return r.status, data

    def stop(self, sig):
        self.proc.send_signal(sig)
        self.proc.wait()


def endpoint_config(name, slots):
    return json.dumps({
        "endpoint": {"name": name, "listen": "127.0.0.1:0"},
        "model": {"path": MODEL},
        "replicas": {"min": 1, "max": 1},
        "pools": [{"name": "lab", "region": "lab-1", "jurisdiction": "EU", "gpus_max": slots,
                   "local": {"devices": "cpu"}}],
        "runtime": {"path": os.path.join(BIN, "gpucap-runtime")},
        "state": {"dir": "/unused"},
    })


def answers(url, body):
    host, rest = url[len("http://"):].split("/", 1)
    h, p = host.split(":")
    try:
        c = http.client.HTTPConnection(h, int(p), timeout=5)
        c.request("POST", "/" + rest + "/infer", body=body, headers={"Content-Type": "application/json"})
        ok = c.getresponse().status == 200
        c.close()
        return ok
    except OSError:
        return False


def until_all_answer(urls, body, limit=120):
    start = time.perf_counter()
    pending = set(urls)
    while pending:
        pending = {u for u in pending if not answers(u, body)}
        if time.perf_counter() - start > limit:
            sys.exit(f"{len(pending)} endpoints did not answer within {limit} s")
        if pending:
            time.sleep(0.01)
    return time.perf_counter() - start


def percentiles(samples):
    s = sorted(samples)
    return statistics.median(s) * 1000, s[int(len(s) * 0.99) - 1] * 1000


def bench_api_and_restarts(n, calls):
    body = digit()
    with tempfile.TemporaryDirectory() as work:
        d = Daemon(work, n)
        d.start()
        base_rss = rss_mib(d.proc.pid)
        urls = {}
        creates = []
        for i in range(n):
            name = f"e{i}"
            t = time.perf_counter()
            status, data = d.call("PUT", f"/v1/endpoints/{name}", endpoint_config(name, n))
            creates.append(time.perf_counter() - t)
            if status != 201:
                sys.exit(f"PUT {name}: {status} {data[:300]}")
            urls[name] = json.loads(data)["url"]
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
        gets, puts = [], []
        for _ in range(calls):
            t = time.perf_counter()
            status, _ = d.call("GET", "/v1/endpoints/e0", conn=conn)
            gets.append(time.perf_counter() - t)
            assert status == 200
        for _ in range(calls):
            t = time.perf_counter()
            status, _ = d.call("PUT", "/v1/endpoints/e0", endpoint_config("e0", n), conn=conn)
            puts.append(time.perf_counter() - t)
            assert status == 200
        conn.close()
        status, data = d.call("GET", "/v1/endpoints")
        views = json.loads(data)["endpoints"]
        routers = [v["router"]["pid"] for v in views]
        replicas = [r["pid"] for v in views for r in v["status"]["replicas"]]
        mem = {
            "daemon": rss_mib(d.proc.pid),
            "daemon_at_start": base_rss,
            "router": statistics.mean(rss_mib(p) for p in routers),
            "replica": statistics.mean(rss_mib(p) for p in replicas),
        }
        until_all_answer(urls.values(), body)

        d.stop(signal.SIGKILL)
        t = time.perf_counter()
        d.start()
        status, data = d.call("GET", "/v1/endpoints")
        serving = sum(1 for v in json.loads(data)["endpoints"] if v["state"] == "serving")
        kill_listed = time.perf_counter() - t
        kill_answer = kill_listed + until_all_answer(urls.values(), body)
        adopted = sorted(v["router"]["pid"] for v in json.loads(data)["endpoints"]) == sorted(routers)

        d.stop(signal.SIGTERM)
        t = time.perf_counter()
        d.start()
        term_answer = (time.perf_counter() - t) + until_all_answer(urls.values(), body)
        d.stop(signal.SIGTERM)
    return {
        "create": percentiles(creates), "get": percentiles(gets), "put": percentiles(puts),
        "mem": mem, "kill_listed": kill_listed, "kill_answer": kill_answer, "serving": serving,
        "adopted": adopted, "term_answer": term_answer,
    }


TF_CONFIG = """
terraform {{
  required_providers {{
    gpucap = {{ source = "gpucap/gpucap" }}
  }}
}}
provider "gpucap" {{
  state_dir    = "{state}"
  runtime_path = "{bin}/gpucap-runtime"
  fabric_path  = "{bin}/gpucap-fabric"
{fabric}}}
resource "gpucap_gpu_pool" "lab" {{
  name         = "lab"
  region       = "lab-1"
  jurisdiction = "EU"
  gpu {{ model = "cpu" }}
  nodes {{ max = 1 }}
  local {{ devices = "cpu" }}
}}
resource "gpucap_inference_endpoint" "digits" {{
  name  = "digits"
  pools = [gpucap_gpu_pool.lab.name]
  model {{ path = "{model}" }}
}}
"""


def timed_terraform(work, fabric, runs):
    os.makedirs(work, exist_ok=True)
    rc = os.path.join(work, "cli.tfrc")
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "dev-tfrc.sh"), rc, BIN], check=True)
    env = dict(os.environ, TF_CLI_CONFIG_FILE=rc, TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1")
    applies, destroys = [], []
    for i in range(runs):
        state = os.path.join(work, f"state-{i}")
        with open(os.path.join(work, "main.tf"), "w") as f:
            f.write(TF_CONFIG.format(state=state, bin=BIN, fabric=fabric, model=MODEL))
        for kind, out in (("apply", applies), ("destroy", destroys)):
            t = time.perf_counter()
            subprocess.run(["terraform", kind, "-auto-approve", "-input=false", "-no-color"],
                           cwd=work, env=env, check=True, capture_output=True)
            out.append(time.perf_counter() - t)
    return statistics.median(applies), statistics.median(destroys)


def bench_terraform(runs):
    with tempfile.TemporaryDirectory() as work:
        d = Daemon(work, 1)
        d.start()
        fabric = (f'  fabric {{\n    region  = "lab-1"\n    address = "http://127.0.0.1:{d.port}"\n'
                  f'    token   = "{d.token}"\n  }}\n')
        remote = timed_terraform(os.path.join(work, "remote"), fabric, runs)
        embedded = timed_terraform(os.path.join(work, "embedded"), "", runs)
        d.stop(signal.SIGTERM)
    return remote, embedded


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--terraform-runs", type=int, default=3)
    args = ap.parse_args()
    r = bench_api_and_restarts(args.endpoints, args.calls)
    n = args.endpoints
    print(f"gpucap-fabric daemon, {n} endpoints of digits (1 CPU replica each), loopback HTTP\n")
    print(f"{'admin API call':<34} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'PUT, create (router + replica up)':<34} {r['create'][0]:>8.1f} {r['create'][1]:>8.1f}")
    print(f"{'PUT, unchanged config':<34} {r['put'][0]:>8.2f} {r['put'][1]:>8.2f}")
    print(f"{'GET one endpoint':<34} {r['get'][0]:>8.2f} {r['get'][1]:>8.2f}")
    m = r["mem"]
    print(f"\n{'resident memory':<34} {'MiB':>8}")
    print(f"{'daemon, empty':<34} {m['daemon_at_start']:>8.1f}")
    print(f"{'daemon, hosting ' + str(n):<34} {m['daemon']:>8.1f}")
    print(f"{'per endpoint: its router':<34} {m['router']:>8.1f}")
    print(f"{'per endpoint: each replica':<34} {m['replica']:>8.1f}")
    print(f"\n{'daemon restart':<50} {'seconds':>8}")
    print(f"{'SIGKILL, start: all listed serving':<50} {r['kill_listed']:>8.3f}  ({r['serving']}/{n}, routers adopted: {r['adopted']})")
    print(f"{'SIGKILL, start: all answering a prediction':<50} {r['kill_answer']:>8.3f}")
    print(f"{'SIGTERM (drain all), start: all answering':<50} {r['term_answer']:>8.3f}")
    remote, embedded = bench_terraform(args.terraform_runs)
    print(f"\n{'terraform, one endpoint (median of ' + str(args.terraform_runs) + ')':<50} {'apply s':>8} {'destroy s':>10}")
    print(f"{'through a running daemon (fabric block)':<50} {remote[0]:>8.2f} {remote[1]:>10.2f}")
    print(f"{'embedded mode (provider starts the daemon)':<50} {embedded[0]:>8.2f} {embedded[1]:>10.2f}")


if __name__ == "__main__":
    main()
