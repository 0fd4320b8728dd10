# An endpoint whose residency follows what its data is: confidential and personal data stay on
# dedicated hardware in the jurisdictions named for it, checked before the plan is made, and behind
# API keys; batching and scaling follow a latency target.

locals {
  sensitive = contains(["confidential", "pii"], var.classification)

  # Tight targets get small batches and short batching windows; loose ones trade latency for
  # throughput. The window is a tenth of the target, within 100 µs and 50 ms.
  tier           = var.latency_target_ms <= 50 ? "critical" : var.latency_target_ms <= 1000 ? "interactive" : "batch"
  max_batch_size = { critical = 8, interactive = 32, batch = 128 }[local.tier]
  queue_delay_us = floor(min(max(var.latency_target_ms * 100, 100), 50000))

  # A cold start takes seconds: only a batch endpoint may scale to zero.
  min_replicas = local.tier == "batch" ? 0 : 1

  labels = merge(var.labels, {
    latency        = local.tier
    latency_slo_ms = tostring(var.latency_target_ms)
  })

  outside     = [for p in var.placement.pools : "${p.name} (${p.jurisdiction})" if !contains(var.sensitive_jurisdictions, p.jurisdiction)]
  not_private = [for p in var.placement.pools : p.name if p.tenancy != "dedicated"]
}

resource "gpucap_inference_endpoint" "this" {
  name         = var.name
  burst_policy = var.placement.burst_policy
  pools        = var.placement.burst_policy == null ? [for p in var.placement.pools : p.name] : null

  model {
    path    = var.model_path
    version = var.model_version
  }

  batching {
    max_batch_size     = local.max_batch_size
    max_queue_delay_us = local.queue_delay_us
    # Requests waiting longer than ten targets (at least 1 s) are answered with an error.
    request_timeout_ms = floor(max(var.latency_target_ms * 10, 1000))
  }

  replicas {
    min = min(local.min_replicas, var.max_replicas)
    max = var.max_replicas
  }

  data_residency {
    classification        = var.classification
    allowed_jurisdictions = local.sensitive ? var.sensitive_jurisdictions : null
  }

  listen {
    port = var.listen_port
  }

  # Sensitive data is reached only with a key, unless the caller says otherwise.
  auth {
    mode = coalesce(var.auth_mode, local.sensitive ? "api_key" : "none")
  }

  labels = local.labels

  lifecycle {
    precondition {
      condition     = !local.sensitive || length(local.outside) == 0
      error_message = "${var.classification} data may only be processed in ${join(", ", var.sensitive_jurisdictions)}, but the endpoint can be placed on ${join(", ", local.outside)}."
    }
    precondition {
      condition     = !local.sensitive || length(local.not_private) == 0
      error_message = "${var.classification} data needs dedicated hardware, but these pools are shared: ${join(", ", local.not_private)}."
    }
  }
}
