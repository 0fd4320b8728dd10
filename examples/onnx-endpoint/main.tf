# An endpoint serving an ONNX model: the scikit-learn pipeline in examples/models (StandardScaler +
# LogisticRegression on the digits data set, exported with skl2onnx), run by ONNX Runtime inside
# gpucap's runtime, batched by gpucap, on this host.
#
# The runtime loads ONNX Runtime's library at run time: `pip install onnxruntime` into the
# repository's .venv (scripts/test.sh does), or set ORT_DYLIB_PATH to libonnxruntime.so.
#
#   terraform apply
#   curl -s -d @request.json "$(terraform output -raw url)/infer"
# where request.json is an Open Inference Protocol v2 request with a [N, 64] FP32 "pixels" input;
# the answer carries "label" (INT64 [N]) and "probabilities" (FP32 [N, 10]).

terraform {
  required_providers {
    gpucap = { source = "gpucap/gpucap" }
  }
}

provider "gpucap" {
  state_dir = "${path.module}/.gpucap-state"
}

variable "model_path" {
  description = "The ONNX model to serve."
  type        = string
  default     = "../models/digits-pipeline.onnx"
}

resource "gpucap_gpu_pool" "host" {
  name               = "onnx-host"
  region             = "on-prem-lab"
  jurisdiction       = "EU"
  price_per_gpu_hour = 0.40
  gpu { model = "cpu" }
  nodes { max = 1 }
  local { devices = "cpu" }
}

resource "gpucap_burst_policy" "host_only" {
  name       = "onnx-host-only"
  base_pools = [gpucap_gpu_pool.host.name]
  budget { max_hourly_usd = 1 }
}

resource "gpucap_inference_endpoint" "pipeline" {
  name         = "digits-pipeline"
  burst_policy = gpucap_burst_policy.host_only.name

  model {
    path = var.model_path
  }

  batching {
    max_batch_size     = 64
    max_queue_delay_us = 1000
  }

  data_residency {
    classification        = "internal"
    allowed_jurisdictions = ["EU"]
  }
}

output "url" {
  description = "The model's Open Inference Protocol v2 URL; POST {url}/infer."
  value       = gpucap_inference_endpoint.pipeline.url
}

output "model_signature" {
  description = "The model's inputs and outputs, as read from the file at plan time."
  value       = gpucap_inference_endpoint.pipeline.model_signature
}
