#!/usr/bin/env python3
"""Writes a Terraform plan as `terraform show -json` would for a large gpucap configuration.

The plan has N inference endpoints (default 10,000) on 10 burst policies over 30 GPU pools, every
one a `create`. Each object carries every attribute of its resource schema, read from
policy/schema/gpucap.json (the schema the provider generates), so the plan is as large as a real
one (25.5 MiB for 10,000 endpoints: each object is written twice, in planned_values and
resource_changes, with its unknown and sensitive marks) and a policy engine reads real shapes: null
single blocks, maps of labels, lists of names, numbers written as Terraform writes them. The
endpoints come from one block with for_each, so Terraform's address of endpoint e42 is
`gpucap_inference_endpoint.endpoint["e42"]`, while gpucap names it by its `name` attribute,
`gpucap_inference_endpoint.e42`; pools and burst policies are a block each.

The values are deterministic (no randomness, no clock) so that two runs, and two engines, see the
same plan. The meaningful fields follow the patterns bench-policy.sh has always used (regions and
jurisdictions, capacity types, tenancy, replicas, classifications, monthly costs, latency labels);
the burst policies combine the pools so that residency, tenancy, spot and model rules each pass
for some endpoints and fail for others. Cost attributes of pools and burst policies follow the cost
model (docs/guides/policy-cost-model.md) with the price catalog gpucap ships.

    policy_plan.py [--endpoints N] --output plan.json [--generated-rules FILE]

--generated-rules also writes the 45 generated advisory rules that scripts/bench-policy.sh adds to
the starter pack, so that script and bench-policy-peers.sh measure the same 50-rule set.
"""

import argparse
import hashlib
import json
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "policy" / "schema" / "gpucap.json"
CATALOG = ROOT / "policy" / "catalog" / "prices.toml"
PROVIDER = "registry.terraform.io/gpucap/gpucap"
TERRAFORM_VERSION = "1.9.8"
# A fixed time keeps the output byte-for-byte reproducible.
TIMESTAMP = "2026-11-23T12:00:00Z"

POOLS = 30
POLICIES = 10

# (region, jurisdiction): eu-west-2 (London) starts with "eu" but is UK, not EU, which rules must
# not confuse.
REGIONS = [("eu-central-1", "EU"), ("us-east-1", "US"), ("eu-west-2", "UK")]
CAPACITY = ["on_prem", "reserved", "on_demand", "spot"]
TENANCY = ["dedicated", "shared"]
# (model, GiB per GPU, GPUs per node); A10G is the one a model allowlist leaves out.
GPUS = [("H100", 80, 8), ("A100", 80, 8), ("L4", 24, 4), ("H200", 141, 8), ("A10G", 24, 4)]
# Prices for what the catalog does not list (A100, H200, and reserved or on-prem L4 and A10G): the
# pool states them, as an operator would, and its price_source then says so.
STATED_PRICES = {
    "A100": {"on_prem": 1.1, "reserved": 2.6, "on_demand": 4.1, "spot": 1.6},
    "H200": {"on_prem": 2.3, "reserved": 6.1, "on_demand": 9.4, "spot": 3.8},
    "L4": {"on_prem": 0.21, "reserved": 0.52},
    "A10G": {"on_prem": 0.26, "reserved": 0.65},
}
CLASSIFICATION = ["public", "internal", "confidential", "pii"]
LATENCY = ["critical", "batch"]

# Burst policies by hand, pool indices (base, burst). Endpoint i uses policy i % 10, so even
# policies carry the latency-critical public and confidential endpoints, odd ones the batch
# internal and pii endpoints. With pool i in REGIONS[i % 3], CAPACITY[i % 4], TENANCY[i % 2] and
# GPUS[i % 5], the comments say what each combination is for.
POLICY_POOLS = [
    ([0, 12], [6]),        # b0: EU, dedicated, no spot: a clean placement
    ([9, 21], [3]),        # b1: EU but shared (pii fails tenancy), A10G base
    ([18, 24], [1]),       # b2: bursts to the US on shared capacity
    ([3], [15]),           # b3: EU, shared, spot as the base pool
    ([2, 14], [26]),       # b4: all UK (eu-west-2): not the EU
    ([5, 11], [17, 23]),   # b5: UK, shared, spot base
    ([0, 6], [12, 18]),    # b6: EU, dedicated, clean
    ([1, 13], [25]),       # b7: all US, shared
    ([24], [27, 4]),       # b8: EU dedicated base, spot and US bursts
    ([9], [21, 15]),       # b9: EU, shared, spot burst
]


def load_schemas():
    doc = json.loads(SCHEMA.read_text())
    provider = doc["provider_schemas"][PROVIDER]
    return {name: s["block"] for name, s in provider["resource_schemas"].items()}


def load_catalog():
    catalog = tomllib.loads(CATALOG.read_text())
    return {(p["gpu"].lower(), p["capacity_type"]): p for p in catalog["price"]}


def complete(block, given, unknown=()):
    """The object Terraform plans for `block`: every attribute and single block of the schema,
    with `given` values, null where unset. Names in `unknown` are left out, as `terraform show
    -json` leaves out values not known until apply (after_unknown marks them)."""
    out = {}
    for name in sorted(block.get("attributes", {})):
        if name not in unknown:
            out[name] = given.get(name)
    for name, nested in sorted(block.get("block_types", {}).items()):
        assert nested["nesting_mode"] == "single", name  # gpucap has only single blocks
        value = given.get(name)
        out[name] = None if value is None else complete(nested["block"], value)
    extra = set(given) - set(out) - set(unknown)
    assert not extra, f"not in the schema: {sorted(extra)}"
    return out


def shape_of(value, leaf):
    """Terraform's sensitive/unknown marks: the value's structure with `leaf` for primitives
    inside lists, primitives of objects left out, maps and objects as objects."""
    if isinstance(value, dict):
        return {k: shape_of(v, leaf) for k, v in value.items() if isinstance(v, (dict, list))}
    if isinstance(value, list):
        return [shape_of(v, leaf) if isinstance(v, (dict, list)) else leaf for v in value]
    return leaf


def expressions(block, given, refs):
    """The configuration's expressions for the attributes written in the .tf file: constants, or
    references (`refs`: attribute -> the addresses it refers to, as Terraform lists them)."""
    out = {}
    for name, attr in sorted(block.get("attributes", {}).items()):
        if name in refs:
            out[name] = {"references": refs[name]}
        elif given.get(name) is not None and not (attr.get("computed") and not attr.get("optional")):
            out[name] = {"constant_value": given[name]}
    for name, nested in sorted(block.get("block_types", {}).items()):
        if given.get(name) is not None:
            out[name] = expressions(nested["block"], given[name], {})
    return out


def digest(*parts):
    return hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()


def cents(x):
    return round(x * 100) / 100


class Plan:
    def __init__(self):
        self.schemas = load_schemas()
        self.planned, self.changes, self.config = [], [], []

    def add(self, type_name, name, given, unknown, refs, key=None):
        """One planned resource: `TYPE.NAME`, or the instance `TYPE.NAME["KEY"]` of a block with
        for_each (its configuration is written once, by `for_each_block`)."""
        block = self.schemas[type_name]
        after = complete(block, given, unknown)
        address = f"{type_name}.{name}"
        where = {"address": address, "mode": "managed", "type": type_name, "name": name}
        if key is not None:
            where = {**where, "address": f'{address}["{key}"]', "index": key}
        sensitive = shape_of(after, False)
        self.planned.append({
            **where, "provider_name": PROVIDER, "schema_version": 0,
            "values": after, "sensitive_values": sensitive,
        })
        after_unknown = shape_of(after, False)
        after_unknown.update({k: True for k in unknown})
        self.changes.append({
            **where, "provider_name": PROVIDER,
            "change": {
                "actions": ["create"], "before": None, "after": after,
                "after_unknown": after_unknown, "before_sensitive": False,
                "after_sensitive": sensitive,
            },
        })
        if key is None:
            self.config.append({
                "address": address, "mode": "managed", "type": type_name, "name": name,
                "provider_config_key": "gpucap",
                "expressions": expressions(block, given, refs), "schema_version": 0,
            })

    def for_each_block(self, type_name, name, exprs, for_each):
        """The configuration of a block with for_each: expressions over `each`."""
        self.config.append({
            "address": f"{type_name}.{name}", "mode": "managed", "type": type_name, "name": name,
            "provider_config_key": "gpucap", "expressions": exprs, "schema_version": 0,
            "for_each_expression": {"references": [for_each]},
        })

    def document(self):
        return {
            "format_version": "1.2",
            "terraform_version": TERRAFORM_VERSION,
            "planned_values": {"root_module": {"resources": self.planned}},
            "resource_changes": self.changes,
            "configuration": {
                "provider_config": {"gpucap": {
                    "name": "gpucap", "full_name": PROVIDER,
                    "version_constraint": "~> 0.1",
                    "expressions": {"policy_paths": {"constant_value": ["policies"]}},
                }},
                "root_module": {"resources": self.config},
            },
            "timestamp": TIMESTAMP,
            "applyable": True,
            "complete": True,
            "errored": False,
        }


def pools(plan, catalog):
    out = []
    for i in range(POOLS):
        region, jurisdiction = REGIONS[i % 3]
        capacity = CAPACITY[i % 4]
        model, memory, per_node = GPUS[i % 5]
        nodes = {"min": 0 if capacity == "spot" else 1, "max": 4 * (1 + i % 6)}
        stated = STATED_PRICES.get(model, {}).get(capacity)
        entry = catalog.get((model.lower(), capacity))
        price = stated if stated is not None else entry["usd_per_gpu_hour"]
        source = "stated on the pool" if stated is not None else f"catalog: {entry['source']}"
        gpus_min, gpus_max = nodes["min"] * per_node, nodes["max"] * per_node
        given = {
            "name": f"p{i}", "region": region, "jurisdiction": jurisdiction,
            "capacity_type": capacity, "tenancy": TENANCY[i % 2],
            "gpu": {"model": model, "memory_gib": memory, "per_node": per_node},
            "nodes": nodes,
            "labels": {"team": "platform", "tier": ["gold", "silver", "bronze"][i % 3],
                       "site": f"{region}-{chr(ord('a') + i % 3)}"},
            "price_per_gpu_hour": stated, "effective_price_per_gpu_hour": price,
            "price_source": source, "gpus_min": gpus_min, "gpus_max": gpus_max,
            "hourly_cost_min_usd": cents(price * gpus_min),
            "hourly_cost_max_usd": cents(price * gpus_max),
            # Only on-prem pools are this host's devices (the `local` driver); which devices it
            # finds is known at apply.
            "local": {"devices": "auto"} if capacity == "on_prem" else None,
        }
        unknown = ("id", "devices") if capacity == "on_prem" else ("id",)
        plan.add("gpucap_gpu_pool", f"p{i}", given, unknown, {})
        out.append(given)
    return out


def policies(plan, pool_objs):
    out = []
    for i, (base, burst) in enumerate(POLICY_POOLS):
        base_pools = [pool_objs[k] for k in base]
        burst_pools = [pool_objs[k] for k in burst]
        placement = "cheapest" if i % 3 == 2 else "ordered"
        if placement == "cheapest":
            burst_pools = sorted(burst_pools, key=lambda p: p["effective_price_per_gpu_hour"])
        budget = 100 + 30 * i
        burst_max = sum(p["hourly_cost_max_usd"] for p in burst_pools)
        given = {
            "name": f"b{i}",
            "base_pools": [p["name"] for p in base_pools],
            "burst_pools": [pool_objs[k]["name"] for k in burst],
            "budget": {"max_hourly_usd": budget, "on_exhausted": ["queue", "reject"][i % 2]},
            "scale_up": {"for": "1m", "gpu_utilization": 0.8, "p99_latency_ms": 250 + 50 * i,
                         "queue_depth": 8},
            "scale_down": {"min_warm_replicas": i % 2, "idle_for": "10m", "drain_timeout": "30s"},
            "placement": placement,
            "predictive": i % 4 == 0,
            "spot_fallback": "on_demand" if any(p["capacity_type"] == "spot" for p in burst_pools) else "none",
            "max_hourly_cost_usd": cents(sum(p["hourly_cost_max_usd"] for p in base_pools) + min(burst_max, budget)),
        }
        refs = {
            "base_pools": [f"gpucap_gpu_pool.p{k}.name" for k in base] + [f"gpucap_gpu_pool.p{k}" for k in base],
            "burst_pools": [f"gpucap_gpu_pool.p{k}.name" for k in burst] + [f"gpucap_gpu_pool.p{k}" for k in burst],
        }
        plan.add("gpucap_burst_policy", f"b{i}", given, ("id",), refs)
        out.append((given, base_pools, burst_pools))
    return out


def endpoints(plan, policy_objs, n):
    for i in range(n):
        policy, base, burst = policy_objs[i % POLICIES]
        spill = base + burst
        jurisdictions = sorted({p["jurisdiction"] for p in spill})
        classification = CLASSIFICATION[i % 4]
        latency = LATENCY[i % 2]
        labels = {
            "latency": latency,
            "latency_slo_ms": "200" if latency == "critical" else "5000",
            "team": f"team-{i % 17:02d}",
        }
        # A few endpoints break the labelling conventions the label rules check.
        if i % 37 == 5:
            labels["latency"] = "urgent"
        if i % 53 == 7:
            labels["latency_slo_ms"] = "200ms"
        if i % 97 == 11:
            labels["latency_slo_ms"] = "0"
        if i % 101 == 13:
            labels = None
        regions = list(dict.fromkeys(p["region"] for p in spill))
        given = {
            "name": f"e{i}",
            "burst_policy": policy["name"],
            "labels": labels,
            "model": {"path": f"models/model-{i % 50:02d}.safetensors", "version": str(1 + i % 3)},
            "model_sha256": digest("model", i % 50),
            "replicas": {"min": i % 3, "max": 12 if i % 23 == 3 else 4},
            "batching": {"max_batch_size": [64, 32, 128][i % 3], "max_queue_delay_us": 2000,
                         "queue_capacity": 256, "request_timeout_ms": 10000},
            "listen": {"host": "127.0.0.1", "port": 0},
            "data_residency": {
                "classification": classification,
                # The provider's own residency check would refuse pools outside these, so the
                # plan states what its pools already satisfy.
                "allowed_jurisdictions": jurisdictions if classification in ("confidential", "pii") else None,
                "allowed_regions": None,
            },
            "monthly_cost_min_usd": 1000.0 + i,
            "monthly_cost_max_usd": 5000.0 + i,
            "placement_digest": digest("placement", policy["name"], *(p["name"] for p in spill)),
            "router_region": base[0]["region"],
            "serving_regions": regions,
            "spill_order": [p["name"] for p in spill],
        }
        plan.add("gpucap_inference_endpoint", "endpoint", given, ("id", "url", "replicas_status"),
                 {}, key=given["name"])


def endpoint_block(plan):
    """The endpoints' configuration: one block with for_each over a local map, as thousands of
    endpoints would be written; each attribute reads its entry (`each.value.…`)."""
    each = lambda path: {"references": [f"each.value.{path}", "each.value"]}
    exprs = {
        "name": {"references": ["each.key"]},
        "burst_policy": {"references": ["each.value.policy", "each.value"]},
        "labels": each("labels"),
        "model": {"path": each("model"), "version": each("model_version")},
        "replicas": {"min": each("replicas.min"), "max": each("replicas.max")},
        "batching": {"max_batch_size": each("batch"), "max_queue_delay_us": {"constant_value": 2000},
                     "queue_capacity": {"constant_value": 256},
                     "request_timeout_ms": {"constant_value": 10000}},
        "listen": {"host": {"constant_value": "127.0.0.1"}, "port": {"constant_value": 0}},
        "data_residency": {"classification": each("classification"),
                           "allowed_jurisdictions": each("jurisdictions")},
    }
    plan.for_each_block("gpucap_inference_endpoint", "endpoint", exprs, "local.endpoints")


GENERATED_RULE = '''rule "generated_{i}" {{
  resources   = ["gpucap_inference_endpoint"]
  enforcement = "advisory"
  when        = "resource.replicas != null && resource.replicas.max >= {m}"
  condition   = "pools.all(p, p.region.startsWith('eu') || p.jurisdiction != 'XX{i}') && cost.monthly_max_usd < {limit}.0"
  message     = "generated rule {i}"
}}
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--endpoints", type=int, default=10000)
    ap.add_argument("--output", required=True)
    ap.add_argument("--generated-rules", metavar="FILE")
    args = ap.parse_args()
    plan = Plan()
    catalog = load_catalog()
    pool_objs = pools(plan, catalog)
    policy_objs = policies(plan, pool_objs)
    endpoint_block(plan)
    endpoints(plan, policy_objs, args.endpoints)
    with open(args.output, "w") as f:
        # Compact, as terraform show -json writes it.
        json.dump(plan.document(), f, separators=(",", ":"))
    if args.generated_rules:
        rules = [GENERATED_RULE.format(i=i, m=i % 5, limit=10000 + i) for i in range(45)]
        Path(args.generated_rules).write_text("\n".join(rules))
    return 0


if __name__ == "__main__":
    sys.exit(main())
