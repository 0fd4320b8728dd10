# Capacity: replica bounds, pool sizes, spot capacity and the GPU models the platform supports.

rule "replicas_within_bounds" {
  description = "Endpoints keep replicas.min at most replicas.max, and replicas.max at most 8."
  resources   = ["gpucap_inference_endpoint"]
  enforcement = "advisory"
  when        = "resource.replicas != null"
  condition   = "resource.replicas.min <= resource.replicas.max && resource.replicas.max <= 8"
  message     = "Replica bounds are out of range (min above max, or more than 8 replicas)."
  attribute   = "replicas.max"
}

rule "pool_size_cap" {
  description  = "A pool has at most 128 GPUs at its maximum size."
  resources    = ["gpucap_gpu_pool"]
  enforcement  = "soft"
  condition    = "resource.nodes.max * resource.gpu.per_node <= 128"
  message      = "The pool can grow past 128 GPUs."
  message_expr = "'pool ' + resource.name + ' can grow to ' + string(resource.nodes.max * resource.gpu.per_node) + ' GPUs; the cap is 128'"
  attribute    = "nodes.max"
}

rule "no_spot_base_pools" {
  description  = "Burst policies never carry their baseline on spot capacity, which can be reclaimed."
  resources    = ["gpucap_burst_policy"]
  enforcement  = "hard"
  condition    = "!pools.exists(p, p.name in resource.base_pools && p.capacity_type == 'spot')"
  message      = "A base pool of the burst policy is spot capacity."
  message_expr = "'burst policy ' + resource.name + ' has spot base pools: ' + pools.filter(p, p.name in resource.base_pools && p.capacity_type == 'spot').map(p, p.name).join(', ')"
  attribute    = "base_pools"
}

rule "gpu_model_allowlist" {
  description  = "Endpoints run only on GPU models the platform supports."
  resources    = ["gpucap_inference_endpoint"]
  enforcement  = "advisory"
  condition    = "pools.all(p, p.gpu != null && p.gpu.model in ['H100', 'H200', 'A100', 'L4'])"
  message      = "The endpoint can run on an unsupported GPU model."
  message_expr = "'endpoint ' + resource.name + ' can run on unsupported GPUs: ' + pools.filter(p, p.gpu == null || !(p.gpu.model in ['H100', 'H200', 'A100', 'L4'])).map(p, p.name).join(', ')"
  attribute    = "burst_policy"
}
