# A fabric on this host: its devices as an owned base pool, and two burst pools standing in for
# cloud capacity (with the local driver they are this host again; their regions are labels).

terraform {
  required_providers {
    gpucap = { source = "gpucap/gpucap" }
  }
}

module "fabric" {
  source = "../.."

  name      = "lab"
  gpu_model = "cpu"
  base = {
    region             = "lab-1"
    jurisdiction       = "EU"
    price_per_gpu_hour = 0.40 # amortised hardware and power
  }
  burst = [
    { region = "eu-central-1", price_per_gpu_hour = 2.50, nodes = 2 },
    { region = "eu-west-1", capacity_type = "spot", price_per_gpu_hour = 0.90, nodes = 2 },
  ]
  budget_hourly_usd = 5
}

output "burst_policy" {
  description = "The policy endpoints name to run on the fabric."
  value       = module.fabric.burst_policy
}

output "hourly_cost_usd" {
  description = "What the fabric costs per hour: its base, and the most with bursting."
  value       = module.fabric.hourly_cost_usd
}
