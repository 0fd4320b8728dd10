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
python3 - "$work" "$n" <<'PY'
import json, os, sys
work, n = sys.argv[1], int(sys.argv[2])
changes = []
def rc(t, name, after):
    changes.append({"address": f"{t}.{name}", "mode": "managed", "type": t,
                    "change": {"actions": ["create"], "before": None, "after": after}})
regions = [("eu-central-1", "EU"), ("us-east-1", "US"), ("eu-west-2", "UK")]
for i in range(30):
    r, j = regions[i % 3]
    rc("gpucap_gpu_pool", f"p{i}", {"name": f"p{i}", "region": r, "jurisdiction": j,
       "capacity_type": ["on_prem", "reserved", "on_demand", "spot"][i % 4],
       "tenancy": ["dedicated", "shared"][i % 2], "gpu": {"model": "H100", "per_node": 8},
       "nodes": {"min": 1, "max": 4}, "hourly_cost_min_usd": 55.0, "hourly_cost_max_usd": 220.0})
for i in range(10):
    rc("gpucap_burst_policy", f"b{i}", {"name": f"b{i}", "base_pools": [f"p{i}", f"p{i+10}"],
       "burst_pools": [f"p{i+20}"], "budget": {"max_hourly_usd": 100 + 30 * i},
       "scale_down": {"min_warm_replicas": i % 2}})
for i in range(n):
    rc("gpucap_inference_endpoint", f"e{i}", {"name": f"e{i}", "burst_policy": f"b{i % 10}",
       "labels": {"latency": ["critical", "batch"][i % 2], "latency_slo_ms": "200"},
       "replicas": {"min": i % 3, "max": 4},
       "data_residency": {"classification": ["public", "internal", "confidential", "pii"][i % 4]},
       "monthly_cost_min_usd": 1000.0 + i, "monthly_cost_max_usd": 5000.0 + i})
json.dump({"format_version": "1.2", "resource_changes": changes}, open(os.path.join(work, "plan.json"), "w"))
os.makedirs(os.path.join(work, "policies"))
rules = []
for i in range(45):
    rules.append(f'''rule "generated_{i}" {{
  resources   = ["gpucap_inference_endpoint"]
  enforcement = "advisory"
  when        = "resource.replicas != null && resource.replicas.max >= {i % 5}"
  condition   = "pools.all(p, p.region.startsWith('eu') || p.jurisdiction != 'XX{i}') && cost.monthly_max_usd < {10000 + i}.0"
  message     = "generated rule {i}"
}}
''')
open(os.path.join(work, "policies", "generated.hcl"), "w").write("\n".join(rules))
PY
cp examples/policies/*.hcl "$work/policies/"
rules=$(grep -c '^rule ' "$work"/policies/*.hcl | awk -F: '{s+=$2} END {print s}')
echo "plan: $n endpoints, 30 pools, 10 burst policies ($(du -h "$work/plan.json" | cut -f1)); $rules rules"
/usr/bin/time -f "wall %e s, peak RSS %M KiB, CPU user %U s sys %S s" \
  target/release/gpucap-policy check --plan "$work/plan.json" --policies "$work/policies" --format json \
  --output "$work/report.json" || true
python3 -c "import json,sys; s=json.load(open(sys.argv[1]))['summary']; print('findings summary:', s)" "$work/report.json"
