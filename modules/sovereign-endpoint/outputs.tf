output "url" {
  description = "The model's Open Inference Protocol v2 URL; inference is `POST {url}/infer`."
  value       = gpucap_inference_endpoint.this.url
}

output "monthly_cost_usd" {
  description = "Cost per month: `min` for the replicas kept on the cheapest base pool, `max` for the most replicas on the dearest pool, capped by the burst budget."
  value = {
    min = gpucap_inference_endpoint.this.monthly_cost_min_usd
    max = gpucap_inference_endpoint.this.monthly_cost_max_usd
  }
}

output "serving_regions" {
  description = "Every region the endpoint can run in."
  value       = gpucap_inference_endpoint.this.serving_regions
}

output "allowed_jurisdictions" {
  description = "The jurisdictions the endpoint's data is held to (null when its classification holds it to none)."
  value       = gpucap_inference_endpoint.this.data_residency.allowed_jurisdictions
}

output "batching" {
  description = "The batching the latency target chose: batch size, window in microseconds and request timeout in milliseconds."
  value = {
    max_batch_size     = local.max_batch_size
    max_queue_delay_us = local.queue_delay_us
    request_timeout_ms = gpucap_inference_endpoint.this.batching.request_timeout_ms
  }
}

output "min_replicas" {
  description = "Replicas always kept: 0 (scale to zero) only for a latency target above 1 s."
  value       = gpucap_inference_endpoint.this.replicas.min
}

output "auth_mode" {
  description = "Who may call the endpoint: `api_key` (callers need a `gpucap_api_key` of it) or `none`."
  value       = gpucap_inference_endpoint.this.auth.mode
}
