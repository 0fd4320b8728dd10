# This host's devices (its GPUs, or its CPU when it has none) as on-prem capacity. An on-prem
# site is not in the region table, so the pool states its jurisdiction.
resource "gpucap_gpu_pool" "local" {
  name               = "local"
  region             = "fra-dc1"
  jurisdiction       = "EU"
  capacity_type      = "on_prem"
  price_per_gpu_hour = 1.10

  gpu {
    model    = "L4"
    per_node = 1
  }

  nodes {
    min = 1
    max = 1
  }

  local {
    devices = "auto"
  }

  labels = {
    team = "ml-platform"
  }
}

# Cloud capacity to burst to. The jurisdiction (EU) is derived from the region.
resource "gpucap_gpu_pool" "eu_central" {
  name               = "eu-central"
  region             = "eu-central-1"
  capacity_type      = "on_demand"
  price_per_gpu_hour = 4.10

  gpu {
    model      = "H100"
    per_node   = 8
    memory_gib = 80
  }

  nodes {
    min = 0
    max = 2
  }

  local {}
}

output "local_devices" {
  value = gpucap_gpu_pool.local.devices
}
