# Baseline load runs on the on-prem pool; when its queue backs up, load spills to the cloud pool
# (both from the gpucap_gpu_pool example), and burst spend stays within the budget.
resource "gpucap_burst_policy" "eu" {
  name          = "eu-burst"
  base_pools    = [gpucap_gpu_pool.local.name]
  burst_pools   = [gpucap_gpu_pool.eu_central.name]
  placement     = "cheapest"
  spot_fallback = "none"

  scale_up {
    queue_depth    = 32
    p99_latency_ms = 250
    for            = "2m"
  }

  scale_down {
    idle_for          = "15m"
    min_warm_replicas = 0
    drain_timeout     = "30s"
  }

  budget {
    max_hourly_usd = 40
    on_exhausted   = "queue"
  }
}

output "max_hourly_cost_usd" {
  value = gpucap_burst_policy.eu.max_hourly_cost_usd
}
