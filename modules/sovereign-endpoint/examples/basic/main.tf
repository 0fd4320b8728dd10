# A fraud model handling personal data: it may only run on the dedicated EU base pool of the
# fabric, never on its shared burst capacity, so it is placed on the base pool alone. A second,
# public model uses the whole fabric.

terraform {
  required_providers {
    gpucap = { source = "gpucap/gpucap" }
  }
}

module "fabric" {
  source = "../../../hybrid-fabric"

  name      = "sovereign"
  gpu_model = "cpu"
  base = {
    region             = "lab-1"
    jurisdiction       = "EU"
    price_per_gpu_hour = 0.40
    nodes              = 2 # one replica of each endpoint at all times
  }
  burst = [
    { region = "eu-central-1", price_per_gpu_hour = 2.50 },
  ]
  budget_hourly_usd = 5
}

module "fraud" {
  source = "../.."

  name              = "fraud"
  model_path        = "${path.module}/../../../../examples/models/digits-mlp.safetensors"
  classification    = "pii"
  latency_target_ms = 50
  placement         = { pools = [module.fabric.placement.pools[0]] }
}

module "digits" {
  source = "../.."

  name              = "digits"
  model_path        = "${path.module}/../../../../examples/models/digits-mlp.safetensors"
  classification    = "public"
  latency_target_ms = 500
  max_replicas      = 3
  placement         = module.fabric.placement
}

output "urls" {
  description = "The endpoints' Open Inference Protocol URLs."
  value       = { fraud = module.fraud.url, digits = module.digits.url }
}
