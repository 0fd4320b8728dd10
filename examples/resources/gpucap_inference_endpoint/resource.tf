# Serves the digits model (examples/models/digits-mlp.safetensors in the gpucap repository),
# placed by the burst policy from the gpucap_burst_policy example. Its data is personal, so every
# pool the policy can ever use must be in the EU: `terraform plan` fails otherwise.
resource "gpucap_inference_endpoint" "digits" {
  name         = "digits"
  burst_policy = gpucap_burst_policy.eu.name

  model {
    path    = "${path.module}/models/digits-mlp.safetensors"
    version = "1"
  }

  batching {
    max_batch_size     = 64
    max_queue_delay_us = 2000
  }

  replicas {
    min = 1
    max = 1
  }

  data_residency {
    classification        = "pii"
    allowed_jurisdictions = ["EU"]
  }

  listen {
    host = "127.0.0.1"
    port = 0 # any free port; the url attribute tells which
  }
}

# Inference is POST {url}/infer on the Open Inference Protocol v2.
output "digits_url" {
  value = gpucap_inference_endpoint.digits.url
}
