#!/usr/bin/env bash
# Benchmarks `gpucap-policy check` on a generated plan: N endpoints (default 10000) with their
# pools and burst policies, against the starter pack plus generated rules (50 in all). Prints the
# wall time and peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-10000}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo build -q --release -p gpucap-policy
mkdir "$work/policies"
# The plan (every attribute of each resource schema, as `terraform show -json` writes it) and the
# 45 generated rules come from the generator bench-policy-peers.sh shares, so both measure one plan.
python3 scripts/peers/policy_plan.py --endpoints "$n" --output "$work/plan.json" \
  --generated-rules "$work/policies/generated.hcl"
cp modules/policy-pack/policies/*.hcl "$work/policies/"
rules=$(grep -c '^rule ' "$work"/policies/*.hcl | awk -F: '{s+=$2} END {print s}')
echo "plan: $n endpoints, 30 pools, 10 burst policies ($(du -h "$work/plan.json" | cut -f1)); $rules rules"
/usr/bin/time -f "wall %e s, peak RSS %M KiB, CPU user %U s sys %S s" \
  target/release/gpucap-policy check --plan "$work/plan.json" --policies "$work/policies" --format json \
  --output "$work/report.json" || true
python3 -c "import json,sys; s=json.load(open(sys.argv[1]))['summary']; print('findings summary:', s)" "$work/report.json"
