output "burst_policy" {
  description = "The burst policy's name: set it as an endpoint's `burst_policy`."
  value       = gpucap_burst_policy.this.name
}

output "pools" {
  description = "The pools' names in the order load goes to them: the base, then the burst pools."
  value       = concat([gpucap_gpu_pool.base.name], gpucap_gpu_pool.burst[*].name)
}

output "placement" {
  description = "Where an endpoint on this fabric can run, as the `sovereign-endpoint` module's `placement` takes it: the burst policy and every pool with its region, jurisdiction, tenancy and capacity type."
  value = {
    burst_policy = gpucap_burst_policy.this.name
    pools = [
      for p in concat([gpucap_gpu_pool.base], gpucap_gpu_pool.burst) : {
        name          = p.name
        region        = p.region
        jurisdiction  = p.jurisdiction
        tenancy       = p.tenancy
        capacity_type = p.capacity_type
      }
    ]
  }
}

output "hourly_cost_usd" {
  description = "Cost bounds per hour, known at plan time: `base` is the base pool kept at its size; `max` is the most the fabric can cost, the base plus bursting capped by the budget. Null where a pool has no price."
  value = {
    base = gpucap_gpu_pool.base.hourly_cost_min_usd
    max  = gpucap_burst_policy.this.max_hourly_cost_usd
  }
}
