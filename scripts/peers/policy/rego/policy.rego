# The ten rules of ../gpucap/*.hcl in Rego (v1 syntax), over the same `terraform show -json` plan,
# for regorus and OPA. `deny` holds one {rule, address, msg} per violation; `address` is gpucap's
# form, TYPE.NAME with the resource's `name` attribute, so the three engines' findings compare
# directly. bench-policy-peers.sh fails when any rule's set of addresses differs.
#
# What gpucap gives a rule, rebuilt here as a Rego author would:
# - the resources a rule judges: managed resources being created, updated, replaced or left
#   alone (not deleted, nor data reads), with their planned (`after`) object;
# - `pools`: an endpoint's pools are those its burst policy names (base_pools, then burst_pools),
#   looked up by `name` among the planned pools, or its own `pools` list when it has no burst
#   policy; a burst policy's are its own base and burst pools;
# - `cost.monthly_max_usd` and `cost.max_hourly_usd` are the computed attributes
#   monthly_cost_max_usd (endpoints) and max_hourly_cost_usd (burst policies).
# The placement of each burst policy is computed once (a complete rule, which OPA and regorus
# evaluate once per query), as thousands of endpoints share ten policies.
package gpucap

import rego.v1

# Terraform's action lists for the changes gpucap's rules judge by default.
judged_actions := {["create"], ["update"], ["no-op"], ["delete", "create"], ["create", "delete"]}

planned(type_name) := [rc.change.after |
	some rc in input.resource_changes
	rc.mode == "managed"
	rc.type == type_name
	rc.change.actions in judged_actions
]

endpoints := planned("gpucap_inference_endpoint")

burst_policies := planned("gpucap_burst_policy")

gpu_pools := planned("gpucap_gpu_pool")

pools_by_name := {p.name: p | some p in gpu_pools}

# A list attribute, or [] when it is null.
names(list) := list if is_array(list)

else := []

# Pools named in `list` that the plan has, in order.
lookup(list) := [pools_by_name[n] | some n in names(list); pools_by_name[n]]

policy_pools[pol.name] := array.concat(lookup(pol.base_pools), lookup(pol.burst_pools)) if {
	some pol in burst_policies
}

endpoint_pools(ep) := policy_pools[ep.burst_policy] if is_string(ep.burst_policy)

else := [] if is_string(ep.burst_policy)

else := lookup(ep.pools)

address(type_name, obj) := sprintf("%s.%s", [type_name, obj.name])

endpoint_address(ep) := address("gpucap_inference_endpoint", ep)

# --- residency.hcl ---

deny contains {"rule": "sensitive_data_stays_in_eu", "address": endpoint_address(ep), "msg": msg} if {
	some ep in endpoints
	ep.data_residency.classification in {"confidential", "pii"}
	outside := [sprintf("%s (%s)", [p.name, p.jurisdiction]) |
		some p in endpoint_pools(ep)
		p.jurisdiction != "EU"
	]
	count(outside) > 0
	msg := sprintf("%s endpoint %s can run outside the EU: %s", [ep.data_residency.classification, ep.name, concat(", ", outside)])
}

deny contains {"rule": "dedicated_tenancy_for_confidential", "address": endpoint_address(ep), "msg": msg} if {
	some ep in endpoints
	ep.data_residency.classification == "confidential"
	shared := [p.name | some p in endpoint_pools(ep); p.tenancy != "dedicated"]
	count(shared) > 0
	msg := sprintf("confidential endpoint %s can run on shared pools: %s", [ep.name, concat(", ", shared)])
}

# --- spend.hcl ---

deny contains {"rule": "batch_endpoint_monthly_budget", "address": endpoint_address(ep), "msg": msg} if {
	some ep in endpoints
	is_number(ep.monthly_cost_max_usd)
	ep.labels.latency == "batch"
	ep.monthly_cost_max_usd > 6000
	msg := sprintf("batch endpoint %s can cost %v USD a month; the budget is 6000", [ep.name, ep.monthly_cost_max_usd])
}

deny contains {"rule": "burst_policy_hourly_cap", "address": address("gpucap_burst_policy", pol), "msg": msg} if {
	some pol in burst_policies
	is_number(pol.max_hourly_cost_usd)
	pol.max_hourly_cost_usd > 500
	msg := "The burst policy can spend more than 500 USD an hour."
}

# --- capacity.hcl ---

replicas_ok(r) if {
	r.min <= r.max
	r.max <= 8
}

deny contains {"rule": "replicas_within_bounds", "address": endpoint_address(ep), "msg": msg} if {
	some ep in endpoints
	ep.replicas != null
	not replicas_ok(ep.replicas)
	msg := "Replica bounds are out of range (min above max, or more than 8 replicas)."
}

deny contains {"rule": "pool_size_cap", "address": address("gpucap_gpu_pool", pool), "msg": msg} if {
	some pool in gpu_pools
	gpus := pool.nodes.max * pool.gpu.per_node
	gpus > 128
	msg := sprintf("pool %s can grow to %d GPUs; the cap is 128", [pool.name, gpus])
}

deny contains {"rule": "no_spot_base_pools", "address": address("gpucap_burst_policy", pol), "msg": msg} if {
	some pol in burst_policies
	spot := [p.name | some p in policy_pools[pol.name]; p.name in pol.base_pools; p.capacity_type == "spot"]
	count(spot) > 0
	msg := sprintf("burst policy %s has spot base pools: %s", [pol.name, concat(", ", spot)])
}

supported_gpus := {"H100", "H200", "A100", "L4"}

# Helpers rather than `not x.y in set`: OPA and regorus disagree on that form when x.y is undefined
# (a null block or label map). OPA drops the expression, regorus negates it; a helper's `not` means
# "the helper did not succeed" in both.
supported_gpu(pool) if pool.gpu.model in supported_gpus

deny contains {"rule": "gpu_model_allowlist", "address": endpoint_address(ep), "msg": msg} if {
	some ep in endpoints
	unsupported := [p.name | some p in endpoint_pools(ep); not supported_gpu(p)]
	count(unsupported) > 0
	msg := sprintf("endpoint %s can run on unsupported GPUs: %s", [ep.name, concat(", ", unsupported)])
}

# --- labels.hcl ---

latency_classes := {"critical", "standard", "batch"}

known_latency(ep) if ep.labels.latency in latency_classes

deny contains {"rule": "latency_label_known", "address": endpoint_address(ep), "msg": msg} if {
	some ep in endpoints
	not known_latency(ep)
	msg := "The endpoint has no latency label, or not one of critical, standard and batch."
}

deny contains {"rule": "latency_slo_is_milliseconds", "address": endpoint_address(ep), "msg": msg} if {
	some ep in endpoints
	slo := ep.labels.latency_slo_ms
	not regex.match(`^[1-9][0-9]{0,6}$`, slo)
	msg := sprintf("latency_slo_ms of %s is %q, not a positive whole number of milliseconds", [ep.name, slo])
}
