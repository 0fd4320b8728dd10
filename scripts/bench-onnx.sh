#!/usr/bin/env bash
# gpucap serving ONNX models, side by side with its peers, in one run:
#   1. the scikit-learn pipeline and the CNN (examples/models), one digit per request, wrk at 1, 16
#      and 64 connections: gpucap-runtime (ONNX Runtime inside, gpucap's batcher) against Seldon
#      MLServer hosting the same file in ONNX Runtime with its adaptive batching (its best of
#      MLSERVER_WORKERS parallel-worker settings per point), and ONNX Runtime called directly
#      in-process (session.run in a loop, batches of 1, 16 and 64 rows: the ceiling a server
#      around it approaches);
#   2. the digits MLP served by gpucap from digits-mlp.safetensors (the native backend) against
#      the same weights as digits-mlp.onnx (ONNX Runtime), same flags, same load.
# Usage: scripts/bench-onnx.sh [SECONDS_PER_POINT]   (default 8)
# Environment: THREADS (default: every core), MLSERVER_WORKERS (default "0 1 2").
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
threads=${THREADS:-$(nproc)}
source scripts/peers/serve-lib.sh
setup_peers
make_work
models=$PWD/examples/models
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads: $threads; onnxruntime $("$py" -c 'import onnxruntime; print(onnxruntime.__version__)')"

for name in digits-pipeline digits-cnn; do
  model=$models/$name.onnx
  "$py" scripts/peers/onnx_body.py "$model" 1 "$work/$name.json"
  echo "== $name: in-process ONNX Runtime"
  "$py" scripts/peers/ort_inprocess.py "$model" --threads "$threads" --batches 1,16,64 \
    --seconds "$secs" >"$work/$name-inprocess.json"
  echo "== $name: gpucap-runtime (max_batch_size 64)"
  start_gpucap "$name" "$model" "$name" --threads "$threads" --max-batch-size 64
  load "$name-gpucap" "$gpucap_url" "$name" "$work/$name.json"
  stop_last
  for workers in ${MLSERVER_WORKERS:-0 1 2}; do
    echo "== $name: MLServer, $workers parallel workers (adaptive batching, max_batch_size 64)"
    start_mlserver "$work/mlserver-$name-w$workers" "$name" "$model" "$workers" "$threads"
    load "$name-mlserver-w$workers" http://127.0.0.1:18480 "$name" "$work/$name.json"
    stop_last
  done
done

echo "== digits MLP: native backend (.safetensors) against ONNX Runtime (.onnx), same weights"
"$py" scripts/peers/onnx_body.py "$models/digits-mlp.onnx" 1 "$work/mlp.json"
for format in safetensors onnx; do
  start_gpucap "mlp-$format" "$models/digits-mlp.$format" digits-mlp --threads "$threads" --max-batch-size 64
  load "mlp-$format" "$gpucap_url" digits-mlp "$work/mlp.json"
  stop_last
done
"$py" scripts/peers/onnx_report.py "$work"
