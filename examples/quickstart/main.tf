# gpucap quickstart: this host as a base pool (its CPU when it has no GPU), a second pool on the
# same host standing in for burst capacity in the cloud, a burst policy that spills to it under
# load and drains back when the load is gone, and an endpoint serving the example digits
# classifier over the Open Inference Protocol v2 — one URL, served by the endpoint's router.
#
# The fabric is the modules/hybrid-fabric module. Run it with scripts/quickstart.sh from the
# repository root; tear it down with scripts/quickstart.sh destroy.

terraform {
  required_providers {
    gpucap = { source = "gpucap/gpucap" }
  }
}

provider "gpucap" {
  # Keep the runtime's config, pid and logs next to this configuration.
  state_dir = "${path.module}/.gpucap-state"
}

# This host as the base pool, and a burst pool that load spills to (with the local driver it is
# this host again; its region is a label, so the quickstart runs anywhere — a cloud pool would
# name a cloud region). The burst policy spills after a queue of 4 per replica held for 2 s, and
# releases a burst replica idle for 30 s.
module "fabric" {
  source = "../../modules/hybrid-fabric"

  name      = "default"
  gpu_model = "cpu" # local devices = "auto" uses this host's GPUs when there are any
  base = {
    region             = "on-prem-lab"
    jurisdiction       = "EU" # an on-prem site: say where it is, the region table cannot know
    price_per_gpu_hour = 0.40 # amortised hardware and power
  }
  burst = [
    { region = "on-prem-lab-2", jurisdiction = "EU", price_per_gpu_hour = 2.50, nodes = 2 },
  ]
  budget_hourly_usd    = 5 # two burst replicas at $2.50/h
  scale_up_queue_depth = 4
  scale_up_after       = "2s"
  idle_for             = "30s"
  drain_timeout        = "10s"
}

resource "gpucap_inference_endpoint" "digits" {
  name         = "digits"
  burst_policy = module.fabric.burst_policy

  model {
    path = "${path.module}/../models/digits-mlp.safetensors"
  }

  batching {
    max_batch_size     = 32
    max_queue_delay_us = 1000
  }

  replicas {
    min = 1 # always one on this host
    max = 3 # up to two more on the burst pool
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
  description = "The baseline's cost per month, and the most bursting can add within the budget."
  value = {
    min = gpucap_inference_endpoint.digits.monthly_cost_min_usd
    max = gpucap_inference_endpoint.digits.monthly_cost_max_usd
  }
}

output "replicas" {
  description = "Replicas ready by pool, as last read."
  value       = gpucap_inference_endpoint.digits.replicas_status
}
