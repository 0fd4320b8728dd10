# A hybrid fabric: one base pool of owned or reserved capacity, burst pools that load spills to in
# order when the base is saturated, and the burst policy that ties them together under a budget.
# Endpoints run on it by naming the policy (`burst_policy = module.NAME.burst_policy`).

locals {
  burst_names = [for i, _ in var.burst : "${var.name}-burst-${i + 1}"]
}

resource "gpucap_gpu_pool" "base" {
  name               = "${var.name}-base"
  region             = var.base.region
  jurisdiction       = var.base.jurisdiction
  capacity_type      = var.base.capacity_type
  tenancy            = var.base.tenancy
  price_per_gpu_hour = var.base.price_per_gpu_hour

  gpu {
    model    = var.gpu_model
    per_node = var.gpus_per_node
  }
  nodes {
    # The base is the baseline: all of it is kept.
    min = var.base.nodes
    max = var.base.nodes
  }
  local {
    devices = var.local_devices
  }
}

resource "gpucap_gpu_pool" "burst" {
  count = length(var.burst)

  name               = local.burst_names[count.index]
  region             = var.burst[count.index].region
  jurisdiction       = var.burst[count.index].jurisdiction
  capacity_type      = var.burst[count.index].capacity_type
  tenancy            = var.burst[count.index].tenancy
  price_per_gpu_hour = var.burst[count.index].price_per_gpu_hour

  gpu {
    model    = var.gpu_model
    per_node = var.gpus_per_node
  }
  nodes {
    # Burst capacity is held only while load needs it.
    min = 0
    max = var.burst[count.index].nodes
  }
  local {
    devices = var.local_devices
  }
}

resource "gpucap_burst_policy" "this" {
  name        = var.name
  base_pools  = [gpucap_gpu_pool.base.name]
  burst_pools = gpucap_gpu_pool.burst[*].name
  placement   = "ordered"

  scale_up {
    queue_depth = var.scale_up_queue_depth
    for         = var.scale_up_after
  }
  scale_down {
    idle_for      = var.idle_for
    drain_timeout = var.drain_timeout
  }
  budget {
    max_hourly_usd = var.budget_hourly_usd
    on_exhausted   = var.on_budget_exhausted
  }
}
