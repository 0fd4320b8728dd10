# The endpoint docs/guides/fabric-simulate.md simulates: an on-prem base pool in Frankfurt, spot and
# on-demand burst pools in eu-central-1, a burst policy with a budget, and an EU-only endpoint.
# `terraform plan -out plan.bin && terraform show -json plan.bin > plan.json`, then
# `gpucap-fabric simulate --plan plan.json --endpoint assistant --trace …` simulates it without
# applying anything. The pools use the local driver so the plan also applies on one host.

terraform {
  required_providers {
    gpucap = { source = "gpucap/gpucap" }
  }
}

provider "gpucap" {
  state_dir = "${path.module}/.gpucap-state"
}

resource "gpucap_gpu_pool" "onprem" {
  name               = "onprem-frankfurt"
  region             = "onprem-fra"
  jurisdiction       = "EU"
  capacity_type      = "on_prem"
  price_per_gpu_hour = 1.10 # amortised hardware, power and space

  gpu { model = "cpu" }
  nodes { max = 2 }
  local { devices = "auto" }
}

resource "gpucap_gpu_pool" "spot" {
  name               = "spot-eu"
  region             = "eu-central-1"
  capacity_type      = "spot"
  price_per_gpu_hour = 1.45

  gpu { model = "cpu" }
  nodes { max = 6 }
  local { devices = "auto" }
}

resource "gpucap_gpu_pool" "ondemand" {
  name               = "ondemand-eu"
  region             = "eu-central-1"
  capacity_type      = "on_demand"
  price_per_gpu_hour = 4.10

  gpu { model = "cpu" }
  nodes { max = 6 }
  local { devices = "auto" }
}

resource "gpucap_burst_policy" "eu" {
  name          = "eu-burst"
  base_pools    = [gpucap_gpu_pool.onprem.name]
  burst_pools   = [gpucap_gpu_pool.spot.name, gpucap_gpu_pool.ondemand.name]
  spot_fallback = "on_demand"

  scale_up {
    gpu_utilization = 0.8
    for             = "15s"
  }
  scale_down {
    idle_for      = "2m"
    drain_timeout = "30s"
  }
  budget {
    max_hourly_usd = 25
  }
}

resource "gpucap_inference_endpoint" "assistant" {
  name         = "assistant"
  burst_policy = gpucap_burst_policy.eu.name

  model {
    path = "${path.module}/../models/digits-mlp.safetensors"
  }
  batching {
    max_batch_size     = 32
    max_queue_delay_us = 2000
    queue_capacity     = 512
    request_timeout_ms = 2000
  }
  replicas {
    min = 1
    max = 12
  }
  data_residency {
    allowed_jurisdictions = ["EU"]
  }
}
