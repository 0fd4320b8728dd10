#!/usr/bin/env bash
# Quickstart: builds gpucap-runtime, serves the example digits model on a free local port, sends one
# real digit from the held-out test set over the Open Inference Protocol v2 and prints the
# prediction, then shuts the server down (SIGTERM: it drains and exits).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p gpucap-runtime
bin=target/release/gpucap-runtime
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" serve --model examples/models/digits-mlp.safetensors --name digits \
  --listen 127.0.0.1:0 --address-file "$work/addr" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do [ -s "$work/addr" ] && break; sleep 0.1; done
[ -s "$work/addr" ] || { cat "$work/log"; echo "the runtime did not start" >&2; exit 1; }
url="http://$(cat "$work/addr")"
echo "gpucap-runtime serving digits at $url"
row=$(head -n 1 examples/models/digits-test.csv)
label=${row%%,*}
pixels=${row#*,}
body="{\"id\":\"quickstart\",\"inputs\":[{\"name\":\"pixels\",\"shape\":[1,64],\"datatype\":\"FP32\",\"data\":[$pixels]}]}"
resp=$(curl -sf -H 'Content-Type: application/json' -d "$body" "$url/v2/models/digits/infer")
python3 - "$resp" "$label" <<'PY'
import json, sys
resp, label = json.loads(sys.argv[1]), sys.argv[2]
probs = resp["outputs"][0]["data"]
best = max(range(len(probs)), key=probs.__getitem__)
print(f"predicted digit {best} (p={probs[best]:.3f}); true label {label}")
PY
kill -TERM "$pid"; wait "$pid" || true
echo "server drained and stopped"
