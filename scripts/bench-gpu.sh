#!/usr/bin/env bash
# GPU benchmarks of gpucap-runtime, each comparison side by side in one run (needs an NVIDIA GPU):
#   1. raw forward pass at batch 1, 64 and 1024 on the CPU and on cuda:0 (FP32, FP16, BF16), with
#      the time the same matrix products take in cuBLAS alone, and the accuracy of FP16/BF16;
#   2. PyTorch eager on the same weights and GPU (when PyTorch is installed);
#   3. server throughput and p99 at 64 clients, CUDA backend against CPU backend.
# Usage: scripts/bench-gpu.sh [SECONDS_PER_SERVER_RUN]   (default 15)
# With GPUCAP_RUNTIME_BIN set, uses that binary instead of building (a GPU host without cargo).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-15}
if [ -n "${GPUCAP_RUNTIME_BIN:-}" ]; then
  bin=$GPUCAP_RUNTIME_BIN
else
  cargo build --release -q -p gpucap-runtime
  bin=$PWD/target/release/gpucap-runtime
fi
python=${PYTHON:-python3}
model=examples/bench/bench-ffn.safetensors
[ -f "$model" ] || "$python" examples/bench/make_bench_model.py "$model"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

echo "== 1. forward pass: CPU vs cuda:0"
"$bin" forward-bench --model "$model" --devices cpu,cuda:0 --precisions fp32,fp16,bf16 \
  --batches 1,64,1024 --iterations 30

echo "== 2. PyTorch eager, same weights and GPU"
if "$python" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  "$python" examples/bench/torch_forward.py "$model" --batches 1,64,1024 --iterations 30
else
  echo "PyTorch with CUDA is not installed for $python: not measured"
fi

echo "== 3. server: 64 clients, ${secs}s, CUDA vs CPU backend"
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for device in cuda:0 cpu; do
  rm -f "$work/addr"
  "$bin" serve --model "$model" --name bench --device "$device" --max-batch-size 64 \
    --listen 127.0.0.1:0 --address-file "$work/addr" --log-level warn 2>"$work/serve.log" &
  pid=$!
  for _ in $(seq 600); do [ -s "$work/addr" ] && break; sleep 0.1; done
  [ -s "$work/addr" ] || { cat "$work/serve.log"; echo "the runtime did not start on $device" >&2; exit 1; }
  url="http://$(cat "$work/addr")"
  "$bin" bench --url "$url" --model bench -c 8 --duration 3s >/dev/null
  "$bin" bench --url "$url" --model bench -c 64 --duration "${secs}s" --json >"$work/${device/:/}.json"
  kill -TERM "$pid"; wait "$pid" || true; pid=
done
"$python" - "$work" <<'PY'
import json, sys
w = sys.argv[1]
g, c = (json.load(open(f"{w}/{d}.json")) for d in ("cuda0", "cpu"))
for name, r in (("cuda:0", g), ("cpu", c)):
    print(f"{name:>7}: {r['throughput_rps']:>9.1f} req/s, p99 {r['latency']['p99_ms']:.1f} ms, errors {r['errors_by_status']}")
print(f"CUDA / CPU throughput: {g['throughput_rps'] / c['throughput_rps']:.1f}x")
PY
