# gpucap quickstart: this host as a GPU pool (its CPU when it has no GPU), a burst policy, and an
# inference endpoint serving the example digits classifier over the Open Inference Protocol v2.
#
# Run it with scripts/quickstart.sh from the repository root; tear it down with
# scripts/quickstart.sh destroy.

terraform {
  required_providers {
    gpucap = { source = "gpucap/gpucap" }
  }
}

provider "gpucap" {
  # Keep the runtime's config, pid and logs next to this configuration.
  state_dir = "${path.module}/.gpucap-state"
}

resource "gpucap_gpu_pool" "this_host" {
  name         = "this-host"
  region       = "on-prem-lab"
  jurisdiction = "EU" # an on-prem site: say where it is, the region table cannot know

  capacity_type      = "on_prem"
  price_per_gpu_hour = 0.40 # amortised hardware and power

  gpu {
    model = "cpu" # "auto" devices below use the GPUs when there are any
  }
  nodes {
    max = 1
  }
  local {
    devices = "auto"
  }
}

resource "gpucap_burst_policy" "default" {
  name       = "default"
  base_pools = [gpucap_gpu_pool.this_host.name]

  scale_down {
    drain_timeout = "10s"
  }
}

resource "gpucap_inference_endpoint" "digits" {
  name         = "digits"
  burst_policy = gpucap_burst_policy.default.name

  model {
    path = "${path.module}/../models/digits-mlp.safetensors"
  }

  batching {
    max_batch_size     = 32
    max_queue_delay_us = 1000
  }

  data_residency {
    classification        = "internal"
    allowed_jurisdictions = ["EU"]
  }
}

output "url" {
  description = "The model's Open Inference Protocol v2 URL; POST {url}/infer."
  value       = gpucap_inference_endpoint.digits.url
}

output "monthly_cost_usd" {
  value = gpucap_inference_endpoint.digits.monthly_cost_min_usd
}
