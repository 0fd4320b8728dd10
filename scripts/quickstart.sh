#!/usr/bin/env bash
# Quickstart: builds the provider, the fabric and the runtime, points Terraform at the build
# (dev_overrides), runs `terraform apply` on examples/quickstart — which deploys a real inference
# endpoint on this host: its router and a base replica — and sends it one real digit from the
# held-out test set.
#   scripts/quickstart.sh           deploy and predict
#   scripts/quickstart.sh destroy   tear the endpoint down
set -euo pipefail
cd "$(dirname "$0")/.."
command -v terraform >/dev/null || { echo "terraform is not on PATH; install Terraform >= 1.5" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is required" >&2; exit 1; }
cargo build --release -q -p gpucap-provider -p gpucap-fabric -p gpucap-runtime

# Terraform loads the provider from the build instead of the registry: no `terraform init`
# (tests/install.rs installs it from a release package instead, as users do).
export TF_CLI_CONFIG_FILE="$PWD/examples/quickstart/.dev.tfrc"
scripts/dev-tfrc.sh "$TF_CLI_CONFIG_FILE" "$PWD/target/release"
tf() { terraform -chdir=examples/quickstart "$@"; }

# The fabric is a local module: `get` installs it (the provider needs no install).
tf get -no-color >/dev/null

if [ "${1:-}" = destroy ]; then
  tf destroy -auto-approve -input=false
  exit 0
fi

start=$(date +%s.%N)
tf apply -auto-approve -input=false
end=$(date +%s.%N)
url=$(tf output -raw url)
echo
echo "terraform apply took $(python3 -c "print(f'{$end - $start:.1f}')") s; endpoint: $url"

row=$(head -n 1 examples/models/digits-test.csv)
label=${row%%,*}
pixels=${row#*,}
body="{\"id\":\"quickstart\",\"inputs\":[{\"name\":\"pixels\",\"shape\":[1,64],\"datatype\":\"FP32\",\"data\":[$pixels]}]}"
resp=$(curl -sf -H 'Content-Type: application/json' -d "$body" "$url/infer")
python3 - "$resp" "$label" <<'PY'
import json, sys
resp, label = json.loads(sys.argv[1]), sys.argv[2]
probs = resp["outputs"][0]["data"]
best = max(range(len(probs)), key=probs.__getitem__)
print(f"predicted digit {best} (p={probs[best]:.3f}); true label {label}")
PY
base=${url%%/v2/*}
echo
echo "The endpoint keeps running. Watch it spill to the burst pool under load, and drain back"
echo "30 s after the load stops:"
echo "  target/release/gpucap-runtime bench --url $base --model digits -c 64 --duration 20s"
echo "  target/release/gpucap-fabric status $base"
echo "Tear it down with: scripts/quickstart.sh destroy"
