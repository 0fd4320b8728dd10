# Latency: endpoints labelled latency = "critical" must not lose capacity to spot reclaims, and
# endpoints with a latency SLO keep replicas warm against cold starts.

rule "no_spot_for_latency_critical" {
  description  = "Endpoints labelled latency = \"critical\" never run on spot capacity."
  resources    = ["gpucap_inference_endpoint"]
  enforcement  = "hard"
  when         = "resource.labels != null && 'latency' in resource.labels && resource.labels['latency'] == 'critical'"
  condition    = "pools.all(p, p.capacity_type != 'spot')"
  message_expr = "'latency-critical endpoint ' + resource.name + ' can run on spot pools: ' + pools.filter(p, p.capacity_type == 'spot').map(p, p.name).join(', ')"
  attribute    = "labels"
}

rule "warm_replicas_for_latency_slo" {
  description = "Endpoints with a latency SLO (label latency_slo_ms) keep at least one replica warm."
  resources   = ["gpucap_inference_endpoint"]
  enforcement = "advisory"
  when        = "resource.labels != null && 'latency_slo_ms' in resource.labels"
  condition   = "(resource.replicas == null || resource.replicas.min >= 1) && (policy == null || (policy.scale_down != null && policy.scale_down.min_warm_replicas >= 1))"
  message     = "An endpoint with a latency SLO can scale to zero or release every warm replica; cold starts will break the SLO."
  attribute   = "replicas.min"
}
