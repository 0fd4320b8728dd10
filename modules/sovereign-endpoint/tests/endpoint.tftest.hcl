# The endpoint on a hybrid fabric: residency that follows the data's classification, checked
# before anything is planned; batching and scaling that follow the latency target; and a real
# endpoint deployed through the module that answers an inference.

variables {
  name       = "fraud"
  model_path = "../../examples/models/digits-mlp.safetensors"
}

# The fabric the endpoint runs on, applied for real (pools of this host, local driver): a
# dedicated EU base, shared EU on-demand burst capacity and a dedicated US pool.
run "fabric" {
  command = apply

  module {
    source = "../hybrid-fabric"
  }

  variables {
    name      = "sovereign"
    gpu_model = "cpu"
    base = {
      region             = "lab-1"
      jurisdiction       = "EU"
      price_per_gpu_hour = 0.4
    }
    burst = [
      { region = "eu-central-1", price_per_gpu_hour = 2.5 },
      { region = "us-east-1", tenancy = "dedicated", price_per_gpu_hour = 3.0 },
    ]
    budget_hourly_usd = 5
    idle_for          = "30s"
    drain_timeout     = "10s"
  }
}

run "pii_stays_on_the_dedicated_eu_base" {
  command = plan

  variables {
    classification = "pii"
    placement      = { pools = [run.fabric.placement.pools[0]] }
  }

  assert {
    condition     = output.allowed_jurisdictions == tolist(["EU"])
    error_message = "pii data is not held to the EU: ${jsonencode(output.allowed_jurisdictions)}"
  }
  assert {
    condition     = output.serving_regions == tolist(["lab-1"])
    error_message = "serving regions ${jsonencode(output.serving_regions)}"
  }
  assert {
    condition     = output.auth_mode == "api_key"
    error_message = "personal data is reachable without a key: auth mode ${output.auth_mode}"
  }
  assert {
    # One replica of one CPU "GPU" at $0.40 an hour, 730 hours a month.
    condition     = output.monthly_cost_usd.min == 292
    error_message = "monthly minimum ${output.monthly_cost_usd.min}, want 292"
  }
}

run "pii_cannot_burst_to_shared_hardware" {
  command = plan

  variables {
    classification = "pii"
    placement      = { burst_policy = run.fabric.burst_policy, pools = slice(run.fabric.placement.pools, 0, 2) }
  }

  expect_failures = [gpucap_inference_endpoint.this]
}

run "confidential_data_cannot_leave_its_jurisdictions" {
  command = plan

  variables {
    classification = "confidential"
    placement      = { pools = [run.fabric.placement.pools[0], run.fabric.placement.pools[2]] }
  }

  expect_failures = [gpucap_inference_endpoint.this]
}

run "other_jurisdictions_can_be_named" {
  command = plan

  variables {
    classification          = "confidential"
    sensitive_jurisdictions = ["EU", "US"]
    placement               = { pools = [run.fabric.placement.pools[0], run.fabric.placement.pools[2]] }
  }

  assert {
    condition     = output.allowed_jurisdictions == tolist(["EU", "US"])
    error_message = "allowed ${jsonencode(output.allowed_jurisdictions)}"
  }
}

run "internal_data_bursts_anywhere" {
  command = plan

  variables {
    placement = run.fabric.placement
  }

  assert {
    condition     = output.allowed_jurisdictions == null
    error_message = "internal data is held to jurisdictions it need not be"
  }
  assert {
    condition     = output.serving_regions == tolist(["lab-1", "eu-central-1", "us-east-1"])
    error_message = "serving regions ${jsonencode(output.serving_regions)}"
  }
  assert {
    condition     = output.auth_mode == "none"
    error_message = "internal data needs a key only when asked: auth mode ${output.auth_mode}"
  }
}

run "a_tight_latency_target_batches_little_and_keeps_a_replica" {
  command = plan

  variables {
    placement         = run.fabric.placement
    latency_target_ms = 20
  }

  assert {
    condition     = output.batching.max_batch_size == 8 && output.batching.max_queue_delay_us == 2000
    error_message = "batching ${jsonencode(output.batching)}"
  }
  assert {
    condition     = output.min_replicas == 1
    error_message = "a 20 ms endpoint may scale to zero"
  }
  assert {
    condition     = gpucap_inference_endpoint.this.labels["latency"] == "critical" && gpucap_inference_endpoint.this.labels["latency_slo_ms"] == "20"
    error_message = "labels ${jsonencode(gpucap_inference_endpoint.this.labels)}"
  }
}

run "a_loose_latency_target_batches_more_and_scales_to_zero" {
  command = plan

  variables {
    placement         = run.fabric.placement
    latency_target_ms = 5000
  }

  assert {
    condition     = output.batching.max_batch_size == 128 && output.batching.max_queue_delay_us == 50000
    error_message = "batching ${jsonencode(output.batching)}"
  }
  assert {
    condition     = output.min_replicas == 0 && output.batching.request_timeout_ms == 50000
    error_message = "min replicas ${output.min_replicas}, timeout ${output.batching.request_timeout_ms}"
  }
}

run "classifications_are_checked" {
  command = plan

  variables {
    placement      = run.fabric.placement
    classification = "secret"
  }

  expect_failures = [var.classification]
}

run "models_are_safetensors" {
  command = plan

  variables {
    placement  = run.fabric.placement
    model_path = "model.onnx"
  }

  expect_failures = [var.model_path]
}

run "serves_on_the_fabric" {
  command = apply

  variables {
    placement = run.fabric.placement
  }

  assert {
    condition     = startswith(output.url, "http://127.0.0.1:") && endswith(output.url, "/v2/models/fraud")
    error_message = "url ${output.url}"
  }
}

run "answers_an_inference" {
  command = apply

  module {
    source = "./tests/probe"
  }

  variables {
    url     = run.serves_on_the_fabric.url
    csv_row = split("\n", file("../../examples/models/digits-test.csv"))[0]
  }
}
