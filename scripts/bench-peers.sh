#!/usr/bin/env bash
# gpucap-runtime side by side with its peers, on one model whose weights are identical in both
# formats (the outputs are checked to agree first):
#   1. raw forward pass: `gpucap-runtime forward-bench` against ONNX Runtime in-process, same
#      threads, batches of 1, 64 and 1024 rows;
#   2. served: `gpucap-runtime serve` against Seldon MLServer hosting the same graph in ONNX
#      Runtime with adaptive batching, one wrk load generator for both, 1/16/64 connections,
#      one row per request. MLServer runs with each of MLSERVER_WORKERS parallel workers and its
#      best is reported.
# Usage: scripts/bench-peers.sh [SECONDS_PER_POINT]   (default 10)
# Environment: MODEL (a gpucap-ffn .safetensors; default the 25 M-parameter benchmark model),
#              THREADS (default: every core), MLSERVER_WORKERS (default "0 1 2"), ROUNDS of the
#              forward comparison (default 5),
#              SKIP_FORWARD=1 or SKIP_SERVED=1 to measure only the other comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
threads=${THREADS:-$(nproc)}
source scripts/peers/serve-lib.sh
setup_peers
model=${MODEL:-examples/bench/bench-ffn.safetensors}
[ -f "$model" ] || "$py" examples/bench/make_bench_model.py "$model"
model=$(realpath "$model")

make_work
"$py" scripts/peers/to_onnx.py "$model" "$work/model.onnx"
"$py" scripts/peers/body.py "$model" 1 "$work/body.json"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads: $threads"

if [ -z "${SKIP_FORWARD:-}" ]; then
  # Alternating rounds, each engine's best round median reported: a shared machine's noise only
  # ever adds time, and alternating spreads it over both engines alike.
  rounds=${ROUNDS:-5}
  echo "== 1. raw forward pass: $rounds alternating rounds of 10 passes per batch size"
  for round in $(seq "$rounds"); do
    "$bin" forward-bench --model "$model" --threads "$threads" --batches 1,64,1024 --iterations 10 \
      --json >"$work/gpucap-forward-$round.json"
    "$py" scripts/peers/ort_forward.py "$work/model.onnx" --threads "$threads" --batches 1,64,1024 \
      --iterations 10 >"$work/ort-forward-$round.json"
  done
fi

export GPUCAP_BODY=$work/body.json

if [ -n "${SKIP_SERVED:-}" ]; then "$py" scripts/peers/report.py "$work"; exit 0; fi
echo "== 2. served: gpucap-runtime (max_batch_size 64) vs MLServer (adaptive batching, max_batch_size 64)"
start_gpucap gpucap "$model" bench --threads "$threads" --max-batch-size 64

for workers in ${MLSERVER_WORKERS:-0 1 2}; do
  start_mlserver "$work/mlserver-w$workers" bench "$work/model.onnx" "$workers" "$threads"
  if [ ! -f "$work/agreed" ]; then
    echo "outputs of the same 8 rows against a float64 NumPy forward pass:"
    "$py" scripts/peers/agree.py "$model" "$work/model.onnx" \
      --server "gpucap=$gpucap_url" --server "mlserver=http://127.0.0.1:18480"
    touch "$work/agreed"
  fi
  load "mlserver-w$workers" http://127.0.0.1:18480 bench "$work/body.json"
  stop_last
done
load gpucap "$gpucap_url" bench "$work/body.json"
"$py" scripts/peers/report.py "$work"
