case "latency_critical_on_spot_fails" {
  rule          = "no_spot_for_latency_critical"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "ads", labels = { latency = "critical" } }
  pools         = [{ name = "base", capacity_type = "reserved" }, { name = "cheap", capacity_type = "spot" }]
  expect        = "fail"
  message       = "can run on spot pools: cheap"
}

case "latency_critical_on_reserved_and_on_demand_passes" {
  rule          = "no_spot_for_latency_critical"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "ads", labels = { latency = "critical" } }
  pools         = [{ name = "base", capacity_type = "reserved" }, { name = "burst", capacity_type = "on_demand" }]
  expect        = "pass"
}

case "batch_endpoints_may_use_spot" {
  rule          = "no_spot_for_latency_critical"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "nightly", labels = { latency = "batch" } }
  pools         = [{ name = "cheap", capacity_type = "spot" }]
  expect        = "pass"
}

case "unlabelled_endpoints_are_not_latency_critical" {
  rule          = "no_spot_for_latency_critical"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "nightly" }
  pools         = [{ name = "cheap", capacity_type = "spot" }]
  expect        = "pass"
}

case "slo_endpoint_that_scales_to_zero_warns" {
  rule          = "warm_replicas_for_latency_slo"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "chat", labels = { latency_slo_ms = "200" }, replicas = { min = 0, max = 4 } }
  expect        = "warn"
}

case "slo_endpoint_whose_policy_keeps_none_warm_warns" {
  rule          = "warm_replicas_for_latency_slo"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "chat", labels = { latency_slo_ms = "200" }, replicas = { min = 1, max = 4 } }
  policy        = { name = "spill", scale_down = { min_warm_replicas = 0 } }
  expect        = "warn"
}

case "slo_endpoint_with_warm_replicas_passes" {
  rule          = "warm_replicas_for_latency_slo"
  resource_type = "gpucap_inference_endpoint"
  resource      = { name = "chat", labels = { latency_slo_ms = "200" }, replicas = { min = 1, max = 4 } }
  policy        = { name = "spill", scale_down = { min_warm_replicas = 1 } }
  expect        = "pass"
}
